"""Services and their life: ordered → processing → active ⇄ suspended → deleted.

Which operation a service action becomes, which module runs it (SPEC flow 4) and what a
finished operation does to the service.
"""

import logging
from datetime import timedelta

from flask import current_app
from peewee import fn

import modules
from app.db import write_transaction
from app.models import (
    Attempt,
    Item,
    Operation,
    ProcessingModule,
    Service,
    Tariff,
    TariffModule,
    parse_id,
    utcnow,
)
from app.services import mail
from app.services.errors import Conflict, NotFound, ValidationError

log = logging.getLogger(__name__)

# the status a service gets when an operation of that kind is done
STATUS_AFTER = {"open": "active", "suspend": "suspended", "resume": "active", "close": "deleted"}
# the statuses a service must be in for staff to request an operation
ALLOWED_FROM = {
    "suspend": ("active",),
    "resume": ("suspended",),
    "close": ("active", "suspended", "processing"),
    "change_tariff": ("active", "suspended"),
}
FAILED_OUTCOMES = ("temporary_error", "permanent_error", "interrupted")


def get(service_id):
    service = Service.get_or_none_by_id(service_id)
    if service is None:
        raise NotFound(f"service {service_id} not found")
    return service


# --- module choice ----------------------------------------------------------------------


def rank_modules(service, kind="open"):
    """All enabled modules of the service's tariff, best first, with the reasons.

    Order (SPEC flow 4): items usable first, then modules without recent errors, then
    those under their ``max_running`` limit, then the module the service is already on,
    then priority (lower first), then the lowest id.
    """
    tariff = service.tariff
    candidates = list(
        ProcessingModule.select()
        .join(TariffModule)
        .where((TariffModule.tariff == tariff.id) & (ProcessingModule.enabled == True))  # noqa: E712
    )
    candidates = [
        m
        for m in candidates
        if (t := modules.get_type(m.type)) is not None and kind in t.operations
    ]
    if not candidates:
        return []
    if len(candidates) == 1 and not candidates[0].max_running:
        # one module: nothing to rank (spares three queries on every payment)
        m = candidates[0]
        return [
            (
                m,
                {
                    "module_id": m.id,
                    "module": m.name,
                    "item": "not ranked",
                    "item_blocked": False,
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
    items = {
        row.module_id: row.status
        for row in Item.select().where(
            Item.module.in_(ids) & (Item.internal_name == tariff.internal_name)
        )
    }
    ranked = []
    for m in candidates:
        item_status = items.get(m.id)
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


def choose_module(service, kind="open"):
    """The module for a new operation of ``service``, or None; also the explanation."""
    ranked = rank_modules(service, kind)
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


def start_open(service, now):
    """Payment arrived: the service goes ``processing`` and an ``open`` operation is queued.

    Inside the caller's transaction. If no module fits, the operation goes straight to a
    manual setup task instead of failing.
    """
    from app.services import operations

    module, explanation = choose_module(service, "open")
    service.status = "processing"
    service.module = module
    service.module_choice = explanation
    service.updated_at = now
    service.save()
    if module is None:
        op = operations.create("open", module=None, service=service, status="queued")
        operations._escalate(op, explanation["reason"], now)
        return op
    op = operations.create("open", module=module, service=service)
    from app.services import dispatch

    dispatch.operation(op.id)
    return op


def request(service_id, kind, actor, params=None):
    """Staff (or the API) asks for suspend / resume / close / change_tariff."""
    from app.services import dispatch, operations

    if kind not in ALLOWED_FROM:
        raise ValidationError({"operation": f"unknown operation {kind!r}"})
    params = dict(params or {})
    now = utcnow()
    with write_transaction():
        service = get(service_id)
        if service.status not in ALLOWED_FROM[kind]:
            raise Conflict(
                f"service #{service.id} is {service.status}; {kind.replace('_', ' ')} needs "
                f"it to be {' or '.join(ALLOWED_FROM[kind])}"
            )
        busy = (
            Operation.select()
            .where(
                (Operation.service == service.id)
                & Operation.status.in_(Operation.OPEN_STATUSES)
                & (Operation.kind != "ensure_item")
            )
            .first()
        )
        if busy is not None:
            raise Conflict(
                f"service #{service.id} already has operation #{busy.id} ({busy.kind}, "
                f"{busy.status}); finish or cancel it first"
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
            params["tariff_id"] = new.id
        module = service.module
        if module is None or not module.enabled:
            module, _ = choose_module(service, kind)
        op = operations.create(kind, module=module, service=service, params=params)
        op.params = {**params, "requested_by": actor}
        op.save()
        if module is None:
            operations._escalate(op, "no enabled module serves this tariff", now)
        else:
            dispatch.operation(op.id)
    return op


# --- finishing operations ---------------------------------------------------------------


def apply_done(op, remote_id, details, now):
    """What a finished operation does to its service (inside the operation's transaction)."""
    service = Service.get_by_id(op.service_id)
    if op.kind == "change_tariff":
        new_tariff = op.params.get("tariff_id")
        if new_tariff:
            service.tariff = new_tariff
    if remote_id:
        service.remote_id = remote_id
    if details:
        service.details = {**(service.details or {}), **details}
    if op.module_id and service.module_id != op.module_id and op.kind == "open":
        service.module = op.module_id
    new_status = STATUS_AFTER.get(op.kind)
    became_active = op.kind == "open" and service.status != "active"
    if new_status:
        service.status = new_status
    if became_active:
        service.activated_at = now
    service.updated_at = now
    service.save()
    if became_active:
        mail.queue_welcome(service)


def correct_details(service_id, details, now):
    """People correct the detail fields of a service (no module is called)."""
    service = Service.get_by_id(service_id)
    service.details = {**(service.details or {}), **details}
    service.updated_at = now
    service.save()


def timeline(service):
    """The service's operations, newest first."""
    return list(
        Operation.select()
        .where(Operation.service == service.id)
        .order_by(Operation.created_at.desc(), Operation.id.desc())
    )


def list_services(status=None, client_id=None, search=None):
    from app.models import Client

    query = Service.select(Service, Tariff, Client).join(Tariff).switch(Service).join(Client)
    if status:
        query = query.where(Service.status == status)
    if client_id:
        query = query.where(Service.client == client_id)
    if search:
        term = str(search).strip()
        cond = (
            (Client.name.contains(term))
            | (Client.email.contains(term))
            | (Tariff.name.contains(term))
            | (Service.remote_id.contains(term))
        )
        number = parse_id(term.lstrip("#"))
        if number is not None:
            cond = cond | (Service.id == number)
        query = query.where(cond)
    return query.order_by(Service.id.desc())


def get_for_client(service_id, client_id):
    """A service of this client; any other service is "not found" (client isolation)."""
    service = Service.get_or_none_by_id(service_id)
    if service is None or service.client_id != client_id:
        raise NotFound(f"service {service_id} not found")
    return service


def allowed_actions(service):
    """The staff actions ``request`` would accept for the service now (none while busy)."""
    busy = (
        Operation.select()
        .where(
            (Operation.service == service.id)
            & Operation.status.in_(Operation.OPEN_STATUSES)
            & (Operation.kind != "ensure_item")
        )
        .exists()
    )
    if busy:
        return []
    return [kind for kind, statuses in ALLOWED_FROM.items() if service.status in statuses]


def tariff_choices(service):
    """The tariffs the service could move to: same product type, not archived, not its own."""
    return list(
        Tariff.select()
        .where(
            (Tariff.product_type == service.tariff.product_type_id)
            & (Tariff.id != service.tariff_id)
            & (Tariff.is_archived == False)  # noqa: E712
        )
        .order_by(Tariff.price, Tariff.id)
    )
