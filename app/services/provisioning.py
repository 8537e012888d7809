"""Services and their life: ordered → processing → active ⇄ suspended → deleted.

Which operation a service action becomes, which module runs it (SPEC flow 4) and what a
finished operation does to the service. The statuses, and which operation kind may start
from which status and where it leads, are declared in ``app.states`` (``SERVICE``,
``KINDS``).
"""

import logging
from datetime import timedelta

from flask import current_app
from peewee import JOIN, Value, fn

import modules
from app import guards, secrets_box
from app.db import cached_query_rows, write_transaction
from app.messages import Reason, kind_label
from app.models import (
    Attempt,
    Item,
    Operation,
    ProcessingModule,
    Service,
    ServiceEvent,
    Tariff,
    TariffModule,
    parse_id,
    search_term,
    sorted_by,
    utcnow,
)
from app.services import mail
from app.services.errors import Conflict, NotFound, ValidationError
from app.states import CLIENT_REQUESTABLE, KINDS, NOTIFIED, REQUESTABLE, SERVICE
from modules.base import NEW_PASSWORD_KEY, NEW_PASSWORD_PURPOSE, mask, new_password

log = logging.getLogger(__name__)

FAILED_OUTCOMES = ("temporary_error", "permanent_error", "interrupted")


def get(service_id):
    service = Service.get_or_none_by_id(service_id)
    if service is None:
        raise NotFound(f"service {service_id} not found")
    return service


# --- module choice ----------------------------------------------------------------------


def join_modules_of_tariff(query):
    """``query`` (a SELECT that joins a ``Tariff``) also reads that tariff's enabled
    modules, each with its item for the tariff's internal name: one row per module
    (attribute ``module_of_tariff`` of the tariff, its item as ``item_for_tariff``, None
    if it has none), one row with None when it has no module; :func:`modules_in_rows`
    takes them out. A caller that reads the tariff anyway before :func:`start_open` gives
    it those, and the payment needs no SELECT of its own for them. Adds one placeholder,
    True, after the query's own select list."""
    in_tariff = TariffModule.select(TariffModule.module).where(TariffModule.tariff == Tariff.id)
    return (
        query.select_extend(ProcessingModule, Item)
        .switch(Tariff)
        .join(
            ProcessingModule,
            JOIN.LEFT_OUTER,
            on=(ProcessingModule.enabled == True)  # noqa: E712
            & ProcessingModule.id.in_(in_tariff),
            attr="module_of_tariff",
        )
        .join(
            Item,
            JOIN.LEFT_OUTER,
            on=(Item.module == ProcessingModule.id) & (Item.internal_name == Tariff.internal_name),
            attr="item_for_tariff",
        )
    )


def modules_in_rows(tariffs):
    """The modules :func:`join_modules_of_tariff` read, from the tariff of each row."""
    return [t.module_of_tariff for t in tariffs if t.module_of_tariff is not None]


def _modules_of_tariff_query():
    """A tariff's enabled modules with their items (:func:`join_modules_of_tariff`), by
    the tariff's id, built with placeholder values."""
    return join_modules_of_tariff(Tariff.select(Tariff.id)).where(Tariff.id == 0), [True, 0]


def rank_modules(service, kind="open", candidates=None):
    """All enabled modules of the service's tariff, best first, with the reasons.

    Order (SPEC flow 4): items usable first, then modules without recent errors, then
    those under their ``max_running`` limit, then the module the service is already on,
    then priority (lower first), then the lowest id. ``candidates``: those modules (each
    with ``item_for_tariff``) read already in this transaction
    (:func:`join_modules_of_tariff`).
    """
    tariff = service.tariff
    if candidates is None:
        candidates = modules_in_rows(
            cached_query_rows(
                "provisioning.modules_of_tariff", _modules_of_tariff_query, (True, tariff.id)
            )
        )
    candidates = [
        m for m in candidates if (t := modules.get_type(m.type)) is not None and t.supports(kind)
    ]
    if not candidates:
        return []
    if len(candidates) == 1 and not candidates[0].max_running:
        # one module: nothing to rank (spares two queries on every payment); its item is
        # still looked up, so that the page says what is true of it ("ready")
        m = candidates[0]
        item = m.item_for_tariff  # joined above
        return [
            (
                m,
                {
                    "module_id": m.id,
                    "module": m.name,
                    "item": item.status if item is not None else "not needed",
                    "item_blocked": item is not None and item.status in ("failed", "manual"),
                    "recent_errors": False,
                    "over_limit": False,
                    "running": None,
                    "current": m.id == service.module_id,
                    "priority": m.priority,
                    "only_candidate": True,
                },
            )
        ]
    ids = [m.id for m in candidates]
    since = utcnow() - timedelta(seconds=current_app.config["RECENT_ERROR_WINDOW"])
    errored = {
        row.module_id
        for row in Operation.select(Operation.module)
        .join(Attempt)
        .where(
            Operation.module.in_(ids)
            & (Attempt.finished_at >= since)
            & Attempt.outcome.in_(FAILED_OUTCOMES)
        )
        .distinct()
    }
    running = dict(
        Operation.select(Operation.module, fn.COUNT(Operation.id))
        .where(Operation.module.in_(ids) & (Operation.status == "running"))
        .group_by(Operation.module)
        .tuples()
    )
    ranked = []
    for m in candidates:
        item_status = m.item_for_tariff.status if m.item_for_tariff is not None else None
        facts = {
            "module_id": m.id,
            "module": m.name,
            "item": item_status or "not needed",
            "item_blocked": item_status in ("failed", "manual"),
            "recent_errors": m.id in errored,
            "over_limit": bool(m.max_running) and running.get(m.id, 0) >= m.max_running,
            "running": running.get(m.id, 0),
            "current": m.id == service.module_id,
            "priority": m.priority,
        }
        key = (
            facts["item_blocked"],
            facts["recent_errors"],
            facts["over_limit"],
            not facts["current"],
            m.priority,
            m.id,
        )
        ranked.append((key, m, facts))
    ranked.sort(key=lambda row: row[0])
    return [(m, facts) for _, m, facts in ranked]


def choose_module(service, kind="open", candidates=None):
    """The module for a new operation of ``service``, or None; also the explanation
    (``candidates``: see :func:`rank_modules`)."""
    ranked = rank_modules(service, kind, candidates)
    explanation = {
        "chosen": None,
        "at": utcnow().isoformat(timespec="seconds"),
        "candidates": [facts for _, facts in ranked],
    }
    if not ranked:
        explanation["reason"] = "no enabled module serves this tariff"
        return None, explanation
    module, facts = ranked[0]
    explanation["chosen"] = module.id
    return module, explanation


# --- starting operations ----------------------------------------------------------------


def start_open(service, now, candidates=None, operation_id=None):
    """Payment arrived: the service goes ``processing`` and an ``open`` operation is queued.

    Inside the caller's transaction. If no module fits, the operation goes straight to a
    manual setup task instead of failing. ``candidates``: see :func:`rank_modules`.
    ``operation_id``: the id the caller took for the operation (``operations.create``).
    """
    from app.services import operations

    module, explanation = choose_module(service, "open", candidates)
    SERVICE.move(service, "pay")
    service.module = module
    service.module_choice = explanation
    service.updated_at = now
    service.save(later=True)  # goes with the operation's INSERT (one round trip)
    if module is None:
        op = operations.create(
            "open", module=None, service=service, status="queued", pk=operation_id
        )
        operations.escalate(op, Reason("no_module_for_tariff"), now)
        return op
    op = operations.create("open", module=module, service=service, pk=operation_id)
    from app.services import dispatch

    dispatch.operation(op.id)
    return op


def cancel_setup(op, reason, now):
    """The ``open`` operation ``op`` was cancelled (by hand, or with its task): its service
    stops being set up, status ``setup_cancelled``, and keeps ``reason`` (inside the
    caller's transaction). Nothing for any other operation or a service not in setup."""
    if op.kind != "open" or not op.service_id:
        return
    service = get_for_update_or_404(op.service_id)
    if not SERVICE.allows("cancel_setup", service.status):
        return
    SERVICE.move(service, "cancel_setup")
    service.setup_cancelled_reason = (reason or "").strip() or None
    service.updated_at = now
    service.save()


def setup_resumed(op, now):
    """A cancelled ``open`` operation runs again or comes back to people: its service is
    being set up again (inside the caller's transaction)."""
    if op.kind != "open" or not op.service_id:
        return
    service = get_for_update_or_404(op.service_id)
    if SERVICE.allows("retry_setup", service.status):
        SERVICE.move(service, "retry_setup")
        service.setup_cancelled_reason = None
        service.updated_at = now
        service.save()


def retry_setup(service_id, actor):
    """Staff "Retry setup" of a service whose setup was cancelled: a new ``open``
    operation is queued (on the best module now) and the service is ``processing`` again.
    Conflict unless the service is ``setup_cancelled`` and has no operation open."""
    from app.services import dispatch, operations

    now = utcnow()
    with write_transaction():
        service = get_for_update_or_404(service_id)
        if not SERVICE.allows("retry_setup", service.status):
            raise Conflict(
                f"service #{service.id} is {service.status.replace('_', ' ')}; only a service "
                "whose setup was cancelled can have its setup retried"
            )
        busy = _busy(service)
        if busy is not None:
            raise Conflict(
                f"service #{service.id} already has operation #{busy.id} ({kind_label(busy.kind)}, "
                f"{busy.status}); finish or cancel it first",
                code="operation_in_progress",
            )
        module, explanation = choose_module(service, "open")
        SERVICE.move(service, "retry_setup")
        service.setup_cancelled_reason = None
        service.module = module
        service.module_choice = explanation
        service.updated_at = now
        service.save()
        op = operations.create("open", module=module, service=service)
        op.params = {**(op.params or {}), "requested_by": actor}
        op.save()
        if module is None:
            operations.escalate(op, Reason("no_module_for_tariff"), now)
        else:
            dispatch.operation(op.id)
    return op


# the operation making a service's item (``ensure_item``) is the item's: it does not keep
# the service from getting another operation
ITEM_KIND = "ensure_item"


def _own(kinds_open):
    """Of :func:`open_kinds`, the service's own operations (not its item's)."""
    return [kind for kind in kinds_open if kind != ITEM_KIND]


def _busy(service):
    """The service's open operation (not an item's), if any: one at a time."""
    return (
        Operation.select()
        .where(
            (Operation.service == service.id)
            & Operation.status.in_(Operation.OPEN_STATUSES)
            & (Operation.kind != ITEM_KIND)
        )
        .first()
    )


MAX_REASON = 500
PASSWORD_LENGTH = (12, 128)
PASSWORD_MESSAGE = (
    f"A password of {PASSWORD_LENGTH[0]} to {PASSWORD_LENGTH[1]} characters: letters, digits "
    "and punctuation, no spaces (or leave it empty: Provisor generates one)."
)


def _options(kind, params):
    """The optional parameters of ``kind`` checked (a suspension's reason; a new password,
    taken out of ``params``: it is never stored in clear). Returns ``(params, state)``:
    the operation's parameters and its initial state."""
    errors, state = {}, None
    if "reason" in KINDS[kind].options:
        reason = params.pop("reason", None)
        if reason is not None and not isinstance(reason, str):
            errors["reason"] = "Must be text."
        elif reason and reason.strip():
            reason = " ".join(reason.split())
            if len(reason) > MAX_REASON:
                errors["reason"] = f"At most {MAX_REASON} characters."
            else:
                params["reason"] = reason
    if "password" in KINDS[kind].options:
        password = params.pop("password", None)
        if password is None or password == "":
            password = new_password()
        elif (
            not isinstance(password, str)
            or not PASSWORD_LENGTH[0] <= len(password) <= PASSWORD_LENGTH[1]
            or not all(33 <= ord(c) <= 126 for c in password)
        ):
            errors["password"] = PASSWORD_MESSAGE
        if not errors:
            state = {NEW_PASSWORD_KEY: secrets_box.encrypt(password, NEW_PASSWORD_PURPOSE)}
    if errors:
        raise ValidationError(errors)
    return params, state


def request(service_id, kind, actor, params=None):
    """Staff (the API, the scheduler) ask for an operation of a requestable kind."""
    from app.services import dispatch, operations

    if kind not in REQUESTABLE:
        raise ValidationError({"operation": f"unknown operation {kind!r}"})
    label = kind.replace("_", " ")
    params, state = _options(kind, dict(params or {}))
    now = utcnow()
    with write_transaction():
        service = get_for_update_or_404(service_id)
        module = service.module
        if module is None or not module.enabled:
            module, _ = choose_module(service, kind)
        cls = modules.get_type(module.type) if module is not None else None
        if module is not None and (cls is None or not cls.supports(kind)):
            raise Conflict(
                f"module {module.name} ({module.type}) does not do {label}; "
                f"service #{service.id} cannot be asked to"
            )
        if not SERVICE.allows(f"request_{kind}", service.status):
            raise Conflict(
                f"service #{service.id} is {service.status}; {label} needs "
                f"it to be {' or '.join(KINDS[kind].starts_from)}"
            )
        busy = _busy(service)
        if busy is not None:
            raise Conflict(
                f"service #{service.id} already has operation #{busy.id} ({kind_label(busy.kind)}, "
                f"{busy.status}); finish or cancel it first",
                code="operation_in_progress",
            )
        if kind == "change_tariff":
            new = Tariff.get_or_none_by_id(params.get("tariff_id"))
            if new is None:
                raise ValidationError({"tariff_id": "Choose an existing tariff."})
            if new.id == service.tariff_id:
                raise ValidationError({"tariff_id": "The service is already on this tariff."})
            if new.product_type_id != service.tariff.product_type_id:
                raise ValidationError(
                    {"tariff_id": "The new tariff must be of the same product type."}
                )
            problem = _cannot_move_to(service, module, new)
            if problem:
                raise ValidationError({"tariff_id": problem})
            params["tariff_id"] = new.id
        op = operations.create(kind, module=module, service=service, params=params)
        op.params = {**params, "requested_by": actor}
        op.state = state
        op.save()
        if module is None:
            operations.escalate(op, Reason("no_module_for_tariff"), now)
        else:
            dispatch.operation(op.id)
    return op


def get_for_update_or_404(service_id):
    from app.db import get_for_update

    service = get_for_update(Service, parse_id(service_id)) if parse_id(service_id) else None
    if service is None:
        raise NotFound(f"service {service_id} not found")
    return service


def queue_renewals(now, limit=200):
    """Queue ``renew`` for services whose module renews them N days before they expire.

    Once per expiry: the service remembers the expiry its renew was queued for, so a
    second scheduler, a repeated sweep or a cancelled renew queue nothing more. Each
    module and each service on its own: one that fails is logged and the others are
    still renewed.
    Returns ``{"queued": n, "errors": n}``.
    """
    from app.services import sweeps

    counts = {"queued": 0, "errors": 0}
    enabled = ProcessingModule.select(ProcessingModule.id).where(
        ProcessingModule.enabled == True  # noqa: E712
    )
    failed = sweeps.each(
        "module", [m.id for m in enabled], lambda mid: _renewals_of(mid, now, limit, counts)
    )
    counts["errors"] += failed  # after each(): the services' failures are counted inside
    return counts


def _renewals_of(module_id, now, limit, counts):
    """Queue the renewals of one module's services (each on its own)."""
    from app.services import sweeps

    module = ProcessingModule.get_by_id(module_id)
    cls = modules.get_type(module.type)
    if cls is None or not cls.supports("renew"):
        return
    days = cls(module.config or {}).renew_days_before()
    if not days:
        return
    ids = [
        row.id
        for row in Service.select(Service.id)
        .where(
            (Service.module == module.id)
            & Service.status.in_(KINDS["renew"].starts_from)
            & Service.expires_at.is_null(False)
            & (Service.expires_at <= now + timedelta(days=days))
            & (
                Service.renewal_queued_for.is_null()
                | (Service.renewal_queued_for != Service.expires_at)
            )
        )
        .limit(limit)
    ]
    failed = sweeps.each("service", ids, lambda sid: _queue_renewal(sid, counts))
    counts["errors"] += failed


def _queue_renewal(service_id, counts):
    try:
        with write_transaction():
            service = get_for_update_or_404(service_id)
            if service.renewal_queued_for == service.expires_at:
                return  # another scheduler was first
            request(service.id, "renew", "scheduler")
            Service.update(renewal_queued_for=service.expires_at).where(
                Service.id == service.id
            ).execute()
        counts["queued"] += 1
    except (Conflict, ValidationError) as exc:
        log.info("renewal of service %s waits: %s", service_id, exc.message)


# --- finishing operations ---------------------------------------------------------------


def apply_done(
    op,
    now,
    remote_id=None,
    details=None,
    data=None,
    expires_at=None,
    known_service=None,
    service=None,
):
    """What a finished operation does to its service (inside the operation's transaction).

    ``service``: the service row as read in this transaction (with the locked operation),
    else it is read here (it is saved whole); ``known_service``, the same service as the
    attempt read it earlier, lends its tariff, product type and client (rows this only
    reads) when they are still the ones the service points to."""
    if service is None or service.id != op.service_id:
        service = Service.get_by_id(op.service_id)
    if known_service is not None and known_service.id == service.id:
        for name in ("tariff", "client"):
            related = known_service.__rel__.get(name)
            if related is not None and related.id == service.__data__.get(name):
                service.__rel__[name] = related
    old_tariff = service.tariff
    if op.kind == "change_tariff":
        new_tariff = op.params.get("tariff_id")
        if new_tariff:
            service.tariff = new_tariff
    password = None
    if op.kind == "change_password":
        password = new_password_of(op)
        if password is not None:
            details = {**(details or {}), password_field(old_tariff.product_type): password}
    if remote_id:
        service.remote_id = remote_id
    if details:
        service.details = {**(service.details or {}), **details}
    if data:
        service.module_data = {**(service.module_data or {}), **data}
    if expires_at is not None:
        service.expires_at = expires_at
    if op.module_id and service.module_id != op.module_id and op.kind == "open":
        service.module = op.module_id
    became_active = op.kind == "open" and service.status != "active"
    action = f"done_{op.kind}"
    moved = SERVICE.allows(action, service.status)
    if moved:
        SERVICE.move(service, action)
    else:
        log.warning(
            "service %s is %s: operation %s (%s) done, its status stays",
            service.id,
            service.status,
            op.id,
            op.kind,
        )
        became_active = False
    if became_active:
        service.activated_at = now
    service.updated_at = now
    service.save(later=True)  # goes with the next statement (the email's INSERT) or the COMMIT
    if became_active:
        mail.queue_welcome(service)
    elif op.kind in NOTIFIED and moved:  # the client hears of what happened, once
        mail.queue_notice(
            service,
            op.kind,
            reason=(op.params or {}).get("reason") or "",
            old_tariff=old_tariff,
            password=password or "",
        )


def new_password_of(op):
    """The new password a change_password operation set (stored encrypted with it)."""
    token = (op.state or {}).get(NEW_PASSWORD_KEY)
    if not token:
        return None
    try:
        return secrets_box.decrypt(token, NEW_PASSWORD_PURPOSE).decode()
    except secrets_box.Undecryptable:
        log.warning("operation %s: its new password cannot be decrypted", op.id)
        return None


def password_field(product_type):
    """The detail field that holds a service's password: the product type's field named
    ``password``, else its first secret field, else ``password``."""
    fields = product_type.detail_fields or []
    names = [f["name"] for f in fields]
    if "password" in names:
        return "password"
    secret = [f["name"] for f in fields if f.get("secret")]
    return secret[0] if secret else "password"


def correct_details(service_id, details, now):
    """People correct the detail fields of a service (no module is called)."""
    service = Service.get_by_id(service_id)
    service.details = {**(service.details or {}), **details}
    service.updated_at = now
    service.save()


def timeline(service):
    """The service's operations, newest first (all of them: the API's answer)."""
    return list(operations_of(service)[0])


def operations_of(service):
    """The service's operations with their module's row (one query, to page), newest
    first, and the same rows without the join (to count them)."""
    rows = (
        Operation.select(Operation, ProcessingModule)
        .join(ProcessingModule, JOIN.LEFT_OUTER, on=(Operation.module == ProcessingModule.id))
        .where(Operation.service == service.id)
        .order_by(Operation.created_at.desc(), Operation.id.desc())
    )
    return rows, Operation.select(Operation.id).where(Operation.service == service.id)


def open_kinds(service_id):
    """The kinds of the service's operations not finished (an item's included), in one
    query for a page: it refreshes while there is one, and offers no action while one of
    the service's own is open (``allowed_actions(service, kinds_open)``). A page reads
    this before the service: see :func:`client_view`."""
    if parse_id(service_id) is None:
        return []  # no such service (get / get_for_client say so)
    rows = Operation.select(Operation.kind).where(
        (Operation.service == service_id) & Operation.status.in_(Operation.OPEN_STATUSES)
    )
    return [kind for (kind,) in rows.tuples()]


def service_sorts():
    """The columns the services list sorts by."""
    from app.models import Client

    return {
        "id": Service.id,
        "client": Client.name,
        "tariff": Tariff.name,
        "status": Service.status,
        "remote_id": Service.remote_id,
        "created": Service.created_at,
        "activated": Service.activated_at,
    }


def list_services(
    status=None, client_id=None, search=None, sort="id", descending=True, unchanged_since=None
):
    """Services with their client and tariff (one query); ``search``: the client's name
    or email, the tariff, the remote id, a domain (or any value) in the order's params
    or the details, or ``#id``; ``sort`` a key of :func:`service_sorts`;
    ``unchanged_since``: only those not changed since then (with ``status`` "processing":
    stuck in setup)."""
    from app.models import Client

    query = Service.select(Service, Tariff, Client).join(Tariff).switch(Service).join(Client)
    if status:
        query = query.where(Service.status == status)
    if unchanged_since is not None:
        query = query.where(Service.updated_at < unchanged_since)
    if client_id:
        query = query.where(Service.client == client_id)
    term = search_term(search)
    if term:
        # the JSON text as it is (a JSON field would encode the pattern as JSON)
        like = Value(f"%{term}%", converter=False)
        cond = (
            (Client.name.contains(term))
            | (Client.email.contains(term))
            | (Tariff.name.contains(term))
            | (Service.remote_id.contains(term))
            # params and details are JSON text: a domain is found wherever it is
            | (Service.params**like)
            | (Service.details**like)
        )
        number = parse_id(term.lstrip("#"))
        if number is not None:
            cond = cond | (Service.id == number)
        query = query.where(cond)
    sorts = service_sorts()
    return sorted_by(query, sorts, sort if sort in sorts else "id", descending, Service.id)


def get_for_client(service_id, client_id):
    """A service of this client; any other service is "not found" (client isolation)."""
    service = Service.get_or_none_by_id(service_id)
    if service is None or service.client_id != client_id:
        raise NotFound(f"service {service_id} not found")
    return service


def allowed_actions(service, kinds_open=None):
    """The kinds ``request`` would accept for the service now (none while busy), in the
    order of the kinds table: never one its module does not implement. ``kinds_open``:
    :func:`open_kinds` of the service where the caller has read them (else read here)."""
    busy = _busy(service) is not None if kinds_open is None else bool(_own(kinds_open))
    if busy:
        return []
    cls = modules.get_type(service.module.type) if service.module_id else None
    return [
        kind
        for kind in REQUESTABLE
        if SERVICE.allows(f"request_{kind}", service.status)
        and (cls.supports(kind) if cls is not None else True)
    ]


def client_actions(service, kinds_open=None):
    """The kinds the client may ask for on their own service now (``clients_may_request``
    in the kinds table; none while busy; never one its module does not implement)."""
    return [kind for kind in allowed_actions(service, kinds_open) if kind in CLIENT_REQUESTABLE]


def request_by_client(service_id, client_id, kind):
    """The client asks for an operation on their own service (a new password)."""
    service = get_for_client(service_id, client_id)
    if kind not in CLIENT_REQUESTABLE:
        raise NotFound(f"no such action {kind!r}")
    return request(service.id, kind, f"client {service.client.email}")


def suspension_reason(service):
    """Why the service is suspended (the reason staff gave its last suspension; "" when
    none was given), or None when it is not suspended."""
    if service.status != "suspended":
        return None
    op = (
        Operation.select(Operation.params)
        .where(
            (Operation.service == service.id)
            & (Operation.kind == "suspend")
            & (Operation.status == "done")
        )
        .order_by(Operation.finished_at.desc(), Operation.id.desc())
        .first()
    )
    return ((op.params or {}).get("reason") or "") if op is not None else ""


def client_view(service_id, client_id):
    """The client's page of one of their services: ``(service, for_client(...))``.

    The open operation is read before the service. Read the other way round, an operation
    ending between the two reads left the page with the details from before it (a new
    password not shown) and nothing in progress, so nothing to poll for: the page stayed
    so. This way a page that shows nothing in progress shows what the last operation
    wrote, and one that shows work in progress polls until it ends."""
    kinds_open = open_kinds(service_id)
    service = get_for_client(service_id, client_id)
    return service, for_client(service, kinds_open)


def for_client(service, kinds_open):
    """What the client area shows beyond the service itself: the kind of the operation in
    progress (``kinds_open``: :func:`open_kinds`, read before ``service``; an item's is not
    the service's) and the module data the module type lets clients see
    (``client_data``)."""
    own = _own(kinds_open)
    kind = KINDS.get(own[0]) if own else None
    cls = modules.get_type(service.module.type) if service.module_id else None
    shown = cls.client_data if cls is not None else ()
    data = {k: v for k, v in (service.module_data or {}).items() if k in shown}
    return {
        "in_progress": kind if kind is not None and kind.clients_see else None,
        "data": data,
        "suspension_reason": suspension_reason(service),
        "actions": client_actions(service, kinds_open),
    }


def _cannot_move_to(service, module, tariff):
    """Why ``service`` on ``module`` cannot move to ``tariff`` (None: it can): the module
    must serve that tariff too (its panel knows no other's plans), and the tariff's item on
    it must not have failed (being made is fine: the change waits for it)."""
    if module is None:
        return None
    if (
        not TariffModule.select()
        .where((TariffModule.tariff == tariff.id) & (TariffModule.module == module.id))
        .exists()
    ):
        return (
            f"The tariff {tariff.name} is not served by {module.name}, the module of this "
            "service: choose one of its tariffs, or link the tariff to it first."
        )
    item = Item.get_or_none(
        (Item.module == module.id) & (Item.internal_name == tariff.internal_name)
    )
    if item is not None and item.status in ("failed", "manual"):
        return (
            f"The tariff {tariff.name} is not ready on {module.name}: its item "
            f"{item.internal_name} is {item.status}"
            + (f" ({item.error})" if item.error else "")
            + "."
        )
    return None


def tariff_choices(service):
    """The tariffs the service could move to: same product type, not archived, not its
    own, served by its module (and ready there)."""
    candidates = (
        Tariff.select()
        .where(
            (Tariff.product_type == service.tariff.product_type_id)
            & (Tariff.id != service.tariff_id)
            & (Tariff.is_archived == False)  # noqa: E712
        )
        .order_by(Tariff.price, Tariff.id)
    )
    module = service.module if service.module_id else None
    return [t for t in candidates if _cannot_move_to(service, module, t) is None]


# --- details: staff edit them; a deleted service's secrets are hidden --------------------

MAX_REMOTE_ID = 255


def secret_names(service):
    """The names of the service's secret detail fields (passwords)."""
    declared = service.tariff.product_type.detail_fields or []
    return {f["name"] for f in declared if f.get("secret")}


def secrets_hidden(service):
    """Once a service is deleted its secret details (passwords) are no longer shown: not
    to its client (the client area, the reseller API), and to staff only on an explicit
    reveal, which the service's history records."""
    return service.status == "deleted" and bool(secret_names(service) & set(service.details or {}))


def visible_details(service, reveal=False):
    """The service's details as they may be shown: a deleted service's secret ones are
    left out unless ``reveal`` (staff who asked)."""
    details = dict(service.details or {})
    if reveal or service.status != "deleted":
        return details
    hidden = secret_names(service)
    return {k: v for k, v in details.items() if k not in hidden}


def hidden_in(text, service):
    """``text`` (an email's body) with a deleted service's secret detail values masked."""
    if service is None or not secrets_hidden(service):
        return text
    values = [str(v) for k, v in (service.details or {}).items() if k in secret_names(service)]
    return mask(text, [v for v in values if v])


def reveal_secrets(service_id, actor):
    """Staff ask to see a deleted service's secret details: recorded in its history."""
    service = get(service_id)
    if secrets_hidden(service):
        with write_transaction():
            record_event(service, "secrets_revealed", actor, "Secret details revealed.")
    return service


def clean_remote_id(value, errors, required=False):
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors["remote_id"] = "Give the account's id on the panel."
        return None
    if not isinstance(value, str):
        errors["remote_id"] = "Must be text."
        return None
    value = value.strip()
    if len(value) > MAX_REMOTE_ID or guards.has_control_characters(value):
        errors["remote_id"] = f"One line of at most {MAX_REMOTE_ID} characters."
        return None
    return value


def bound_service(module_id, remote_id, excluding=None):
    """The live (not deleted) service of this module already bound to ``remote_id``."""
    if not module_id or not remote_id:
        return None
    query = Service.select().where(
        (Service.module == module_id)
        & (Service.remote_id == remote_id)
        & (Service.status != "deleted")
    )
    if excluding is not None:
        query = query.where(Service.id != excluding)
    return query.first()


def refuse_bound(module, remote_id, excluding=None):
    other = bound_service(module.id if module is not None else None, remote_id, excluding)
    if other is not None:
        raise Conflict(
            f"remote id {remote_id!r} on module {module.name} is already bound to service "
            f"#{other.id} ({other.status}); one account serves one service",
            code="remote_id_bound",
        )


def edit_details(service_id, data, actor):
    """Staff correct a service's detail fields and remote id (no module is called).

    ``data``: ``{"details": {name: value}, "remote_id": "..."}``; a detail given blank or
    null is cleared, one not given is unchanged. Values are checked by their fields' kinds;
    names the product type does not declare are refused. The change is recorded in the
    service's history (the names changed, never a value)."""
    from app.services import detail_fields

    if not isinstance(data, dict):
        raise ValidationError({"details": "Give the details as an object."})
    errors = {}
    details = data.get("details", {})
    if details is None:
        details = {}
    if not isinstance(details, dict):
        errors["details"] = "Give the details as an object."
        details = {}
    remote_given = "remote_id" in data
    remote_id = clean_remote_id(data.get("remote_id"), errors)
    service = get(service_id)
    declared = service.tariff.product_type.detail_fields or []
    try:
        cleaned = detail_fields.clean(declared, details, unknown="refuse")
    except ValidationError as exc:
        errors.update({f"details.{k}": v for k, v in exc.fields.items()})
        cleaned = {}
    if errors:
        raise ValidationError(errors)
    cleared = {k for k, v in details.items() if detail_fields.blank(v)}
    now = utcnow()
    with write_transaction():
        service = get_for_update_or_404(service_id)
        if remote_given and remote_id:
            refuse_bound(service.module, remote_id, excluding=service.id)
        current = dict(service.details or {})
        new = {k: v for k, v in {**current, **cleaned}.items() if k not in cleared}
        changed = sorted(k for k in set(current) | set(new) if current.get(k) != new.get(k))
        remote_changed = remote_given and remote_id != service.remote_id
        if not changed and not remote_changed:
            return service
        service.details = new
        if remote_changed:
            service.remote_id = remote_id
        service.updated_at = now
        service.save()
        what = [f"details: {', '.join(changed)}"] if changed else []
        if remote_changed:
            what.append("remote id")
        record_event(service, "details_edited", actor, "Changed " + "; ".join(what) + ".", now)
    return service


def record_event(service, kind, actor, text, now=None):
    """Add to the service's history (inside the caller's transaction)."""
    return ServiceEvent.create(
        service=service.id,
        kind=kind,
        actor=actor or "system",
        text=text,
        created_at=now or utcnow(),
    )


def history(service):
    """What people did to the service outside operations, newest first."""
    return list(
        ServiceEvent.select()
        .where(ServiceEvent.service == service.id)
        .order_by(ServiceEvent.created_at.desc(), ServiceEvent.id.desc())
    )
