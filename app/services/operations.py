"""Running operations: claim an attempt, call the module, record what it answered.

The statuses and every allowed transition are declared once in ``app.states.OPERATION``;
this module drives that machine:

``queued``           due at ``next_run_at``; a worker may claim it.
``running``          claimed by a worker until ``lease_until``; the sweep reclaims it after.
``retry_wait``       a temporary error; due again at ``next_run_at`` (exactly retry_delay later).
``polling``          the module said "not finished, check again in N s" (``Result.poll``); its
                     ``state`` is kept with the operation, a check is not a failed attempt,
                     and the module's ``max_wait`` bounds the whole wait.
``waiting_callback`` the module answered "pending"; a callback completes it.
``waiting_task``     a person does it through a task (manual setup module).
``manual``           automation gave up; a task was created. Run now or close the task.
``done``, ``cancelled``  final.

Claiming is one conditional UPDATE, so a duplicate message, a re-sent message after a
Redis restart or two workers never run the same attempt twice. Module calls carry the
operation id as the idempotency key, so a reclaimed attempt never creates twice.
"""

import datetime as dt
import json
import logging
import os
import socket
import time
from datetime import timedelta

from flask import current_app
from peewee import JOIN, SQL, Cast, Column, DatabaseError, Select, Value, fn

import modules
from app import guards, inflight, logs, messages
from app.db import (
    cached_query_rows,
    cached_write,
    execute_statement,
    get_for_update,
    is_sqlite,
    next_id_column,
    release_connection,
    statement_text,
    unindexed,
    write_transaction,
)
from app.messages import Reason
from app.models import (
    Attempt,
    Client,
    Item,
    Operation,
    ProcessingModule,
    ProductType,
    Service,
    Tariff,
    Task,
    WebhookEndpoint,
    parse_id,
    save_together,
    search_term,
    sorted_by,
    utcnow,
)
from app.objects.inputs import OperationCancelInput
from app.services import accounts, detail_fields, dispatch, events, provisioning, sweeps, tasks
from app.services.errors import BadSignature, Conflict, NotFound, PermissionDenied
from app.states import ITEM, OPERATION
from app.watchdog import Deadline, DeadlineExceeded
from modules.base import (
    RESULT_STATUSES,
    ModuleError,
    OperationContext,
    PermanentError,
    TemporaryError,
    mask,
    secret_values,
)

log = logging.getLogger(__name__)

ITEM_WAIT = timedelta(seconds=2)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"

RUNNABLE = OPERATION.sources("claim")
RESTARTABLE = OPERATION.sources("restart")
CANCELLABLE = OPERATION.sources("cancel")


def _setting(name):
    return current_app.config[name]


def create(kind, *, module, service=None, item=None, params=None, status="queued", pk=None):
    """Create an operation (inside the caller's transaction) and return it.

    The caller sends it with :func:`dispatch.operations` after the transaction commits.
    ``pk``: the id the caller took for it (``app.db.next_id_column``): its INSERT then needs
    no answer and goes with the transaction's next statement or its COMMIT (PostgreSQL).
    """
    now = utcnow()
    op = Operation(
        id=pk,
        kind=kind,
        module=module,
        service=service,
        item=item,
        params=params or {},
        status=status,
        next_run_at=now if status == "queued" else None,
        dispatched_at=now if status == "queued" else None,
        created_at=now,
        updated_at=now,
    )
    op.save(force_insert=True, later=pk is not None)
    events.created("operation", op)
    return op


def get(operation_id, lock=False):
    """The operation, or NotFound; ``lock`` holds it for this transaction (FOR UPDATE)."""
    pk = parse_id(operation_id)
    op = None
    if pk is not None:
        op = get_for_update(Operation, pk) if lock else Operation.get_or_none_by_id(pk)
    if op is None:
        raise NotFound(f"operation {operation_id} not found")
    return op


def module_type(module):
    """The module type class of a configured module (None: unknown type or no module)."""
    return modules.get_type(module.type) if module is not None else None


def module_instance(module):
    cls = module_type(module)
    if cls is None:
        return None
    return cls(module.config or {})


# --- running ----------------------------------------------------------------------------


def run(operation_id):
    """Run one attempt of an operation if it is due; do nothing otherwise (idempotent).

    The attempt is registered with :mod:`app.inflight` while it runs, so that a worker
    asked to stop can hand it back (:func:`hand_back`) instead of leaving it ``running``
    until its lease expires.
    """
    claimed = _claim(operation_id)
    if claimed is None:
        return None
    op, attempt, instance = claimed
    with (
        logs.context(operation=op.id, attempt=attempt.number),
        inflight.attempt(op.id, attempt.number) as current,
    ):
        try:
            return _attempt(op, attempt, instance, current)
        except inflight.Shutdown:
            if not current.ended:
                raise
            log.info("attempt %s handed back: this worker is stopping", attempt.number)
            return None


def _attempt(op, attempt, instance, current):
    ctx = _context(op, attempt.number, instance)
    # the claim is committed: the call to the panel holds no pooled connection, so that a
    # worker may run more calls at once than its pool has connections (PROVISOR_DB_POOL_SIZE
    # bounds the threads in the database, not the ones waiting on panels)
    release_connection()
    try:
        # the call ends by the module's timeout, well before the lease (see _claim)
        with current.calling(), Deadline(instance.timeout()):
            result = instance.run(ctx)
    except DeadlineExceeded:
        message = str(Reason("deadline", seconds=f"{instance.timeout():g}"))
        ctx.log(f"stopped: {message}")
        return _record_failure(op, attempt, message, False, ctx.log_text)
    except ModuleError as exc:
        message = mask(str(exc), ctx.secrets)
        return _record_failure(op, attempt, message, exc.permanent, ctx.log_text)
    except Exception as exc:  # a bug in a module must not lose the operation
        log.exception("module %s crashed on operation %s", op.module_id, op.id)
        message = mask(f"module error: {exc.__class__.__name__}: {exc}", ctx.secrets)
        return _record_failure(op, attempt, message, False, ctx.log_text)
    problem, permanent = _result_problem(result)
    if not problem:
        problem, permanent = _details_problem(op, result), True
    if problem:
        return _record_failure(op, attempt, problem, permanent, ctx.log_text)
    _mask_details(ctx, result)
    return _record_result(op, attempt, result, ctx.log_text)


def hand_back(grace=0.0):
    """A stopping worker: give the attempts this process still runs ``grace`` seconds to
    finish, then hand back those still waiting on their module.

    Each is recorded as ``interrupted`` ("the worker was stopped"), its operation is
    queued again at once — not counted as a failure: the panel did nothing wrong, so
    ``max_attempts`` is not used up by a deploy — and its call is ended
    (:func:`inflight.end`) before another worker is woken for it, so the two never
    overlap. Returns the ids of the operations handed back.
    """
    deadline = time.monotonic() + grace
    while inflight.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    handed = []
    for current in inflight.running():
        if not current.in_call:
            continue  # claiming or recording its result: a moment, let it finish
        with logs.context(operation=current.operation_id, attempt=current.number):
            try:
                if _hand_back_one(current):
                    handed.append(current)
            except Exception:
                log.exception("cannot hand the attempt back; the sweep will reclaim it")
    for current in handed:
        inflight.end(current)
    if handed:
        dispatch.operations([current.operation_id for current in handed])
        log.info(
            "handed back the attempts of operations %s: this worker is stopping",
            ", ".join(str(current.operation_id) for current in handed),
        )
    return [current.operation_id for current in handed]


def _hand_back_one(current):
    now = utcnow()
    with write_transaction():
        op = get_for_update(Operation, current.operation_id)
        if op is None or op.status != "running" or op.attempts != current.number:
            return False  # it finished meanwhile, or the sweep took it over
        Attempt.update(
            finished_at=now,
            outcome="interrupted",
            error="handed back: the worker was stopped (shutdown) during this attempt",
        ).where((Attempt.operation == op.id) & (Attempt.number == current.number)).execute()
        OPERATION.move(op, "hand_back")
        op.next_run_at = now
        op.dispatched_at = now
        op.lease_until = None
        op.updated_at = now
        op.save()
    return True


def _result_problem(result):
    """Why a module's return value cannot be recorded, and whether that is permanent
    (``(None, False)``: it can). A NUL character in what goes on to the service (its
    remote id, details, data) is refused: PostgreSQL cannot store it in text, and it has
    no business in a password or a host name; the same reply would come again."""
    if result is None or getattr(result, "status", None) not in RESULT_STATUSES:
        return "module returned no result", False
    for name in ("details", "data", "state"):
        try:
            json.dumps(getattr(result, name))
        except (TypeError, ValueError):
            return f"module returned {name} that cannot be stored as JSON", False
    for name in ("remote_id", "details", "data"):
        where = guards.nul_in(getattr(result, name), name)
        if where is not None:
            return f"module returned a NUL character in {where}: not recorded", True
    return None, False


def _details_problem(op, result):
    """Why a module's details cannot go to the service: a value not of its field's kind
    (``999.999.1.1`` as an IP address) is not stored; the attempt fails permanently with
    the reason (the same reply would come again) and people get a task. None: they can.
    The values themselves stay out of the message (one may be a password)."""
    if result.status != "done" or not result.details or op.service_id is None:
        return None
    if op.kind == "ensure_item":
        return None
    declared = op.service.tariff.product_type.detail_fields or []
    bad = detail_fields.problems(declared, result.details)
    if not bad:
        return None
    return "module returned invalid details, not recorded: " + "; ".join(
        f"{name}: {message}" for name, message in sorted(bad.items())
    )


def _mask_details(ctx, result):
    """Secret detail fields (the product type's, and any key named like a secret) never
    appear in the attempt log."""
    if result.details:
        ctx.secrets_in(result.details)


def _attempt_load_query():
    """The SELECT of :func:`_load_for_attempt`, with 0 in place of the id."""
    query = (
        Operation.select(
            Operation,
            ProcessingModule,
            Service,
            Tariff,
            ProductType,
            Client,
            Item,
            events.enabled_count_column(),
        )
        .join(ProcessingModule, JOIN.LEFT_OUTER, on=(Operation.module == ProcessingModule.id))
        .switch(Operation)
        .join(Service, JOIN.LEFT_OUTER, on=(Operation.service == Service.id))
        .join(Tariff, JOIN.LEFT_OUTER, on=(Service.tariff == Tariff.id))
        .join(ProductType, JOIN.LEFT_OUTER, on=(Tariff.product_type == ProductType.id))
        .switch(Service)
        .join(Client, JOIN.LEFT_OUTER, on=(Service.client == Client.id))
        .switch(Tariff)
        .join(
            Item,
            JOIN.LEFT_OUTER,
            on=(Item.module == Operation.module) & (Item.internal_name == Tariff.internal_name),
            attr="item_of_module",
        )
        .where(Operation.id == 0)  # its primary key: one row at most
    )
    if not is_sqlite():  # SQLite's write transactions are serialised already
        # the operation locked for its claim, and the id its attempt will have (see
        # _claim_row: the claim then needs no answer, and goes with the COMMIT)
        query = query.select_extend(
            next_id_column(Attempt, "next_attempt_id"),
            # the row versions the result checks (_record_done_unread): the operation's
            # once the claim committed (the id of this transaction, which writes it) and
            # the service's as read here
            SQL("pg_current_xact_id()::xid::text").alias("version_claimed"),
            Cast(Column(Service._meta.table, "xmin"), "text").alias("service_version"),
        ).for_update(of=Operation)
    return query, [0]


def _load_for_attempt(operation_id):
    """The operation with what an attempt reads of it — its module, service, tariff,
    product type, client and the module's item for that tariff — in one joined SELECT
    (None: no such operation). The attempt reuses these rows through its context and its
    result (read-only there: the rows it changes are read again, locked, by
    :func:`_record_result`). The same SELECT counts the enabled webhook endpoints: with
    none, the transaction's events need not read them (``events.known_enabled_count``).

    Its SQL text is generated once (``app.db.cached_query_rows``): peewee generating the
    text of this 7-table SELECT was 9 % of a worker's CPU (bench/README.md, issue 14).

    On PostgreSQL it locks the operation's row (``FOR UPDATE OF operation``) until the
    claim's transaction ends, and takes the id of the attempt a claim would start
    (``next_attempt_id``; a duplicate that claims nothing leaves a gap in the ids)."""
    pk = parse_id(operation_id)
    if pk is None:
        return None
    rows = cached_query_rows("operations.attempt_load", _attempt_load_query, (pk,))
    op = rows[0] if rows else None
    if op is None:
        return None
    events.known_enabled_count(op.enabled_endpoints)
    if op.service_id is not None:
        # the item of this module for the service's tariff (see _item_of)
        tariff = op.service.tariff
        op.__dict__["_items"] = {tariff.internal_name: tariff.item_of_module}
    return op


def _claim(operation_id):
    now = utcnow()
    with write_transaction():
        op = _load_for_attempt(operation_id)
        if op is None or op.status not in RUNNABLE:
            return None  # most duplicates stop here, before any lock
        if op.next_run_at and op.next_run_at > now:
            # an early message (brokers may deliver delayed messages a little early):
            # wait for the rest of the delay, so that retries are never early
            dispatch.operation(op.id, delay=(op.next_run_at - now).total_seconds())
            return None
        module = op.module
        instance = module_instance(module)
        if instance is None:
            reason = (
                Reason("no_module") if module is None else Reason("unknown_type", type=module.type)
            )
            escalate(op, reason, now)
            return None
        if not module.enabled:
            escalate(op, Reason("module_disabled", module=module.name), now)
            return None
        if not instance.supports(op.kind):
            escalate(op, Reason("unsupported", module=module.name, kind=op.kind), now)
            return None
        if _waits_for_item(op):
            Operation.update(next_run_at=now + ITEM_WAIT, dispatched_at=now, updated_at=now).where(
                Operation.id == op.id
            ).execute()
            dispatch.operation(op.id, delay=ITEM_WAIT.total_seconds())
            return None
        # the attempt's deadline, plus the one blocking read it may be in when stopped
        lease = now + timedelta(
            seconds=instance.timeout() + instance.io_timeout() + _setting("LEASE_GRACE")
        )
        attempt = _claim_row(op, OPERATION.target("claim", op.status), lease, now)
        if attempt is None:
            return None
        # the operation as the claim stored it
        op.attempts += 1
        OPERATION.move(op, "claim")
        op.lease_until, op.redispatches, op.updated_at = lease, 0, now
        return op, attempt, instance


_LEASE, _NOW = dt.datetime(2000, 1, 1), dt.datetime(2000, 1, 2)


def _claim_query():
    """The claim's UPDATE (see :func:`_claim_row`) built with placeholder values, and
    them in the order peewee binds them (checked when its text is made)."""
    query = Operation.update(
        status="new status",
        attempts=Operation.attempts + 1,
        lease_until=_LEASE,
        redispatches=0,
        updated_at=_NOW,
    ).where(
        (Operation.id == 10**12)
        & (unindexed(Operation.status) == "old status")  # the row found by its id: see unindexed
        & (Operation.attempts == -1)
    )
    placeholders = [
        "new status",
        1,
        0,
        Operation.lease_until.db_value(_LEASE),
        Operation.updated_at.db_value(_NOW),
        10**12,
        "old status",
        -1,
    ]
    return query, placeholders


def _claim_with_attempt_query():
    """PostgreSQL: the claim's UPDATE and the attempt's INSERT in one statement — the
    INSERT takes its row from what the UPDATE returns, so an operation not claimed gets no
    attempt — with placeholders as :func:`_claim_query`'s, then the attempt's id, worker
    and log. The attempt starts at the claim's ``updated_at`` (the same ``now``)."""
    update, placeholders = _claim_query()
    claimed = update.returning(Operation.id, Operation.attempts, Operation.updated_at).cte(
        "claimed"
    )
    query = Attempt.insert_from(
        Select(
            [claimed],
            [
                Value(-7),
                claimed.c.id,
                claimed.c.attempts,
                Value("worker"),
                claimed.c.updated_at,
                Value("log"),
            ],
        ),
        fields=[
            Attempt.id,
            Attempt.operation,
            Attempt.number,
            Attempt.worker,
            Attempt.started_at,
            Attempt.log,
        ],
    ).with_cte(claimed)
    return query, [*placeholders, -7, "worker", "log"]


def _claim_row(op, status, lease, now):
    """``op`` (as read) claimed: ``status`` (running), one attempt more, leased until
    ``lease`` — if nobody changed its status or attempts since it was read — and its
    attempt started; returns the attempt (None: not claimed). Both texts made once.

    On SQLite the claim's UPDATE, then the attempt's INSERT if it claimed. On PostgreSQL
    ``op`` comes from :func:`_load_for_attempt` in this transaction, which locked its row
    and took the attempt's id (``next_attempt_id``): nobody can change it before the
    COMMIT, so the claim cannot be lost and nobody needs its answer — one statement
    (:func:`_claim_with_attempt_query`) that goes to the server with the COMMIT, one round
    trip for both (``execute_statement(later=True)``). Its conditions on status and
    attempts stay, as a guard; a failure fails the COMMIT, and so the claim."""
    params = [
        status,
        1,
        0,
        Operation.lease_until.db_value(lease),
        Operation.updated_at.db_value(now),
        op.id,
        op.status,
        op.attempts,
    ]
    number = op.attempts + 1
    if is_sqlite():
        if cached_write("operations.claim", _claim_query, params) != 1:
            return None
        return Attempt.create(operation=op.id, number=number, worker=WORKER_NAME, started_at=now)
    attempt_id = op.next_attempt_id
    cached_write(
        "operations.claim_with_attempt",
        _claim_with_attempt_query,
        [*params, attempt_id, WORKER_NAME, ""],
        later=True,
    )
    attempt = Attempt(
        id=attempt_id,
        operation=op.id,
        number=number,
        worker=WORKER_NAME,
        started_at=now,
        finished_at=None,
        outcome=None,
        error=None,
        log="",
    )
    attempt._dirty.clear()  # as stored
    return attempt


def _waits_for_item(op):
    """An operation on a service waits while its module's item is still being created."""
    if op.kind == "ensure_item" or op.service_id is None:
        return False
    item = _item_of(op, op.service.tariff.internal_name)
    return item is not None and item.status == "creating"


def _item_of(op, internal_name):
    """The item of ``op``'s module named ``internal_name`` (None: there is none), read once
    per attempt: the claim and the attempt's context both need it."""
    known = op.__dict__.setdefault("_items", {})
    if internal_name not in known:
        known[internal_name] = Item.get_or_none(
            (Item.module == op.module_id) & (Item.internal_name == internal_name)
        )
    return known[internal_name]


def _context(op, attempt_number, instance):
    service = op.service if op.service_id else None
    tariff = client = product_type = None
    secrets = list(instance.secret_values())
    if service is not None:
        tariff = service.tariff
        client = service.client
        product_type = tariff.product_type
        secret_fields = _secret_fields(product_type)
        secrets += [(service.details or {}).get(name) for name in secret_fields]
    else:
        secret_fields = _secret_fields(None)
    params = dict(op.params or {})
    if op.kind == "change_tariff" and service is not None:
        new = Tariff.get_or_none_by_id(params.get("tariff_id"))
        if new is not None:
            params["tariff_internal_name"] = new.internal_name
    if service is not None:
        params = {**(service.params or {}), **params}
    item = op.item if op.item_id else None
    item_settings = item.settings if item is not None else None
    if item is None and service is not None and instance.item_fields:
        # the item of the tariff this operation is for (change_tariff: the new one)
        internal = params.get("tariff_internal_name") or tariff.internal_name
        found = _item_of(op, internal)
        item_settings = found.settings if found is not None else None
    return OperationContext(
        op,
        attempt_number,
        service=service,
        tariff=tariff,
        client=client,
        item=item,
        product_type=product_type,
        params=params,
        item_settings=item_settings,
        state=op.state,
        secrets=secrets,
        save_state=lambda state: _save_state(op.id, attempt_number, state),
        secret_keys=secret_fields,
    )


def _secret_fields(product_type):
    """The names of the secret detail fields of ``product_type`` (None: of every one)."""
    types = [product_type] if product_type is not None else ProductType.select()
    return sorted({f["name"] for pt in types for f in (pt.detail_fields or []) if f.get("secret")})


def _save_state(op_id, attempt_number, state):
    """``ctx.save_state``: keep the module's state now, while this attempt still owns it."""
    with write_transaction():
        Operation.update(state=state, updated_at=utcnow()).where(
            (Operation.id == op_id)
            & (Operation.status == "running")
            & (Operation.attempts == attempt_number)
        ).execute()


#: what :func:`_finish_attempt` writes of an attempt
ATTEMPT_END = (Attempt.finished_at, Attempt.outcome, Attempt.error, Attempt.log)


def _finish_attempt(attempt, outcome, error, log_text, now, save=True):
    """Record how an attempt ended, unless a callback or the sweep already did (their
    notes stay in the log after the module's own lines). ``save=False``: the caller
    saves it (with the operation: ``_complete(finished_attempt=...)``)."""
    attempt.log = guards.storable(log_text) + ("\n" + attempt.log if attempt.log else "")
    attempt.error = attempt.error if attempt.outcome else guards.storable(error)
    attempt.finished_at = attempt.finished_at or now
    attempt.outcome = attempt.outcome or outcome
    if save:
        attempt.save(only=ATTEMPT_END)


def _result_lock_query():
    """The SELECT of :func:`_locked_after_attempt`, with 0 in place of the id."""
    open_tasks = Task.select(fn.COUNT(Task.id)).where(
        (Task.operation == Operation.id) & Task.status.in_(Task.OPEN_STATUSES)
    )
    query = (
        Operation.select(
            Operation,
            Service,
            open_tasks.alias("open_tasks"),
            events.enabled_count_column(),
        )
        .join(Service, JOIN.LEFT_OUTER, on=(Operation.service == Service.id))
        .where(Operation.id == 0)
    )
    if not is_sqlite():  # SQLite's write transactions are serialised already
        query = query.for_update(of=Operation)
    return query, [*Task.OPEN_STATUSES, 0]


def _locked_after_attempt(claimed, attempt):
    """``claimed`` (the operation as its claim read it) read again and locked for
    recording how ``attempt`` ended, and whether the attempt is still the operation's
    current one. Its module is the claim's (read-only here).

    One SELECT reads, with the operation, its service (which a result saves), whether it
    has an open task (``open_tasks``: none to close then) and the count of enabled
    webhook endpoints (none: its events read none)."""
    op = cached_query_rows(
        "operations.result_lock", _result_lock_query, (*Task.OPEN_STATUSES, claimed.id)
    )[0]
    events.known_enabled_count(op.enabled_endpoints)
    if op.module_id == claimed.module_id:
        op.__rel__["module"] = claimed.module
    return op, op.status == "running" and op.attempts == attempt.number


def _attempt_row(attempt, current):
    """The attempt's row as it is now. While it is the operation's current attempt
    (running, not handed back, reclaimed or answered by a callback) nobody else writes
    it, so the row the claim inserted is it; otherwise it is read again."""
    return attempt if current else Attempt.get_by_id(attempt.id)


def _unchanged_since_claim_text():
    """The check :func:`_record_done_unread` sends first: ``provisor_expect`` (migration
    0022) raises unless the operation's row is the one its claim wrote (and locks it), the
    service's the one the claim read, the operation has no open task and as many webhook
    endpoints are enabled as the claim counted."""
    open_marks = ", ".join(["%s"] * len(Task.OPEN_STATUSES))
    return (
        "SELECT provisor_expect("
        f'(SELECT xmin::text FROM "{Operation._meta.table_name}" WHERE id = %s FOR UPDATE) = %s'
        f' AND (SELECT xmin::text FROM "{Service._meta.table_name}" WHERE id = %s) = %s'
        f' AND NOT EXISTS (SELECT 1 FROM "{Task._meta.table_name}"'
        f" WHERE {Task.operation.column_name} = %s AND status IN ({open_marks}))"
        f' AND (SELECT count(*) FROM "{WebhookEndpoint._meta.table_name}" WHERE enabled) = %s,'
        " %s)"
    )


def _writes_without_reading(claimed, result):
    """Whether the result of ``claimed``'s attempt may be written without reading the
    operation again (:func:`_record_done_unread`): PostgreSQL (row versions), a ``done``
    result of an operation on a service, as nearly every attempt ends."""
    return (
        result.status == "done"
        and getattr(claimed, "version_claimed", None) is not None
        and claimed.kind != "ensure_item"
        and claimed.service_id is not None
        and claimed.__rel__.get("service") is not None
    )


def _record_done_unread(claimed, attempt, result, log_text):
    """A ``done`` result written in one round trip: the operation as its claim left it
    (``claimed``) done, its attempt ended, its service (as the claim read it) set up,
    the welcome email queued, all sent with the COMMIT after one check
    (:func:`_unchanged_since_claim_text`) that nothing of it changed meanwhile — a
    callback, a reclaim, the module's state saved, a change to the service, an open task,
    an endpoint enabled. If something did, the check stops the transaction before its COMMIT, the rows
    are put back as they were and the result goes the usual way (:func:`_record_result`,
    which reads them again, locked); returns None then."""
    service = claimed.service
    rows = (claimed, service, attempt)
    kept = [(row, dict(row.__data__), set(row._dirty), dict(row.__rel__)) for row in rows]
    now = utcnow()
    check = statement_text("operations.unchanged_since_claim", _unchanged_since_claim_text)
    params = [
        claimed.id,
        claimed.version_claimed,
        service.id,
        claimed.service_version,
        claimed.id,
        *Task.OPEN_STATUSES,
        claimed.enabled_endpoints,
        "changed since its claim",
    ]
    try:
        with write_transaction():
            execute_statement(check, params, later=True)
            events.known_enabled_count(claimed.enabled_endpoints)
            claimed.open_tasks = 0
            _finish_attempt(attempt, "done", None, log_text, now, save=False)
            if result.state is not None:
                claimed.state = result.state
            _complete_with(
                claimed,
                now,
                result,
                known_service=service,
                locked=True,
                finished_attempt=attempt,
            )
    except DatabaseError as exc:
        driver_error = exc.__cause__ or exc.__context__  # peewee's is raised from it
        if getattr(driver_error, "pgcode", None) != "PV001":
            raise
        for row, data, dirty, related in kept:
            row.__data__, row._dirty, row.__rel__ = data, dirty, related
        log.info("attempt %s: the operation changed during the call", attempt.number)
        return None
    log.info("%s, attempt %s: done", claimed.kind, attempt.number)
    return claimed


def _record_result(claimed, attempt, result, log_text):
    if _writes_without_reading(claimed, result):
        op = _record_done_unread(claimed, attempt, result, log_text)
        if op is not None:
            return op
    now = utcnow()
    with write_transaction():
        op, current = _locked_after_attempt(claimed, attempt)
        attempt = _attempt_row(attempt, current)
        # done, as nearly every attempt ends: the attempt's row is saved with the
        # operation's (one statement on PostgreSQL)
        finishing = result.status == "done" and op.is_open
        _finish_attempt(attempt, result.status, None, log_text, now, save=not finishing)
        log.info("%s, attempt %s: %s", op.kind, attempt.number, result.status)
        if result.status == "pending":
            if current:
                OPERATION.move(op, "pending")
                op.lease_until = now + timedelta(seconds=_setting("CALLBACK_TIMEOUT"))
                op.updated_at = now
                op.save()
            return op
        if result.status == "task":
            if current:
                OPERATION.move(op, "to_people")
                op.lease_until = None
                op.next_run_at = None
                op.updated_at = now
                op.save()
                tasks.open_for_operation(op, Reason("people_do_it"), now)
            return op
        if result.status == "poll":
            if current:
                _wait_for_next_check(op, result, now)
            return op
        if not op.is_open:
            return op  # already done or cancelled: this late result changes nothing
        if result.state is not None:
            op.state = result.state
        _complete_with(
            op,
            now,
            result,
            known_service=claimed.service if op.service_id else None,
            locked=True,
            finished_attempt=attempt,
        )
    return op


def _wait_for_next_check(op, result, now):
    """``Result.poll``: keep the state, check again after ``after`` seconds, unless the
    module's ``max_wait`` has run out (then people get a task)."""
    if result.state is not None:
        op.state = result.state
    max_wait = op.module.max_wait if op.module_id else 3600
    if op.deadline_at is None:
        op.deadline_at = now + timedelta(seconds=max_wait)
    if now >= op.deadline_at:
        op.last_error = str(Reason("max_wait", seconds=max_wait))
        escalate(op, Reason("max_wait", seconds=max_wait), now)
        return
    OPERATION.move(op, "poll")
    op.next_run_at = min(now + timedelta(seconds=result.after), op.deadline_at)
    op.dispatched_at = now
    op.lease_until = None
    op.updated_at = now
    op.save()
    dispatch.operation(op.id, delay=(op.next_run_at - now).total_seconds())


def _complete(
    op,
    now,
    by=None,
    remote_id=None,
    details=None,
    data=None,
    expires_at=None,
    known_service=None,
    locked=False,
    finished_attempt=None,
):
    """Mark ``op`` done and apply it to its service or item (inside a transaction).
    ``known_service``: the service as read earlier by the attempt, whose tariff, product
    type and client may be reused (see ``provisioning.apply_done``). ``locked``: ``op``
    comes from :func:`_locked_after_attempt` in this transaction, with its service and
    the count of its open tasks. ``finished_attempt``: the attempt that ended, not saved
    yet (see :func:`_finish_attempt`), saved with ``op``."""
    OPERATION.move(op, "complete" if by else "done")
    op.finished_at = now
    op.updated_at = now
    op.lease_until = None
    op.next_run_at = None
    op.deadline_at = None
    op.completed_by = by
    # nobody reads the UPDATE's count: it goes with the next statement (the service's,
    # the email's) or the COMMIT
    if finished_attempt is not None:
        save_together(finished_attempt, ATTEMPT_END, op, later=True)
    else:
        op.save(later=True)
    if op.kind == "ensure_item" and op.item_id:
        item = Item.get_by_id(op.item_id)
        ITEM.move(item, "ready")
        item.error = None
        item.updated_at = now
        if remote_id is not None:  # a person closing the task may not know one
            item.remote_id = remote_id
        item.save()
        _wake_waiting_on_item(item)
    elif op.service_id:
        provisioning.apply_done(
            op,
            now,
            remote_id=remote_id,
            details=details or {},
            data=data,
            expires_at=expires_at,
            known_service=known_service,
            service=op.service if locked else None,
        )
    if not locked or op.open_tasks:
        tasks.close_for_operation(op, now, by=by)


def _complete_with(op, now, result, known_service=None, locked=False, finished_attempt=None):
    """``_complete`` with what a module's ``Result.done`` carries."""
    _complete(
        op,
        now,
        remote_id=result.remote_id,
        details=result.details,
        data=result.data,
        expires_at=result.expires_at,
        known_service=known_service,
        locked=locked,
        finished_attempt=finished_attempt,
    )


def _wake_waiting_on_item(item):
    """Operations that waited for this item to be created may run now."""
    ids = [
        row.id
        for row in Operation.select(Operation.id)
        .join(Service)
        .join(Tariff)
        .where(
            (Operation.module == item.module_id)
            & (Operation.status == "queued")
            & (Tariff.internal_name == item.internal_name)
        )
    ]
    if ids:
        now = utcnow()
        Operation.update(next_run_at=now, dispatched_at=now).where(Operation.id.in_(ids)).execute()
        dispatch.operations(ids)


def _record_failure(claimed, attempt, message, permanent, log_text):
    now = utcnow()
    message = guards.storable(message)
    outcome = "permanent_error" if permanent else "temporary_error"
    with write_transaction():
        op, current = _locked_after_attempt(claimed, attempt)
        attempt = _attempt_row(attempt, current)
        _finish_attempt(attempt, outcome, message, log_text, now)
        log.warning("%s, attempt %s: %s: %s", op.kind, attempt.number, outcome, message)
        if not current:
            return op  # the sweep took this attempt over meanwhile
        op.last_error = message
        _after_failure(op, permanent, now)
    return op


def _max_attempts(op):
    return op.module.max_attempts if op.module is not None else 1


def _after_failure(op, permanent, now):
    """Decide retry or escalation for a failed attempt (inside a transaction)."""
    op.failures += 1
    if permanent or op.failures >= _max_attempts(op):
        escalate(
            op,
            Reason("permanent_error") if permanent else messages.failed_attempts(op.failures),
            now,
        )
        return
    delay = op.module.retry_delay
    OPERATION.move(op, "retry")
    op.next_run_at = now + timedelta(seconds=delay)
    op.dispatched_at = now
    op.lease_until = None
    op.updated_at = now
    op.save()
    dispatch.operation(op.id, delay=delay)


def escalate(op, reason, now):
    """Give the operation to people: status ``manual`` and a task in the module's
    department (inside the caller's transaction). ``reason`` is a :class:`Reason`."""
    OPERATION.move(op, "escalate")
    op.lease_until = None
    op.next_run_at = None
    op.updated_at = now
    if not op.last_error:
        op.last_error = str(reason)
    op.save()
    if op.kind == "ensure_item" and op.item_id:
        item = Item.get_by_id(op.item_id)
        if ITEM.allows("fail", item.status):
            ITEM.move(item, "fail")
            item.error = op.last_error
            item.updated_at = now
            item.save()
    tasks.open_for_operation(op, reason, now)


# --- people acting on operations --------------------------------------------------------


def restart(operation_id, actor="staff"):
    """Run now: queue the operation for an immediate attempt (one more if it gave up)."""
    now = utcnow()
    with write_transaction():
        op = get(operation_id, lock=True)
        # from manual: one more attempt; if it fails too, the operation is manual again
        previous = OPERATION.move(op, "restart")
        if previous == "cancelled":
            op.completed_by = None
            provisioning.setup_resumed(op, now)
        op.deadline_at = None  # a polling operation gets its whole max_wait again
        _queue_now(op, now)
        tasks.note_for_operation(op, now, actor, "ran_again", {"actor": actor})
    return op


def _queue_now(op, now):
    """Due at once, and a worker woken for it (after the transaction commits)."""
    op.next_run_at = now
    op.dispatched_at = now
    op.lease_until = None
    op.finished_at = None
    op.updated_at = now
    op.save()
    dispatch.operation(op.id)


def cancel(operation_id, actor="staff", reason=""):
    """Cancel an operation that is not running; its open tasks are cancelled too. A
    service's setup (``open``) cancelled this way is ``setup_cancelled`` with ``reason``."""
    reason = OperationCancelInput.parse({"reason": reason or ""})["reason"] or ""
    now = utcnow()
    with write_transaction():
        op = get(operation_id, lock=True)
        cancel_locked(op, actor, now, reason)
    return op


def cancel_locked(op, actor, now, reason=""):
    """Cancel ``op`` (locked by the caller's transaction)."""
    OPERATION.move(op, "cancel")
    op.finished_at = now
    op.updated_at = now
    op.next_run_at = None
    op.lease_until = None
    op.completed_by = actor
    op.save()
    tasks.cancel_for_operation(op, now, actor)
    provisioning.cancel_setup(op, reason, now)


def bring_back(op, actor, now):
    """A cancelled operation comes back for people to finish (its task was reopened)."""
    cls = module_type(op.module)
    OPERATION.move(
        op, "bring_back_to_people" if cls is not None and cls.people_do_it else "bring_back"
    )
    op.finished_at = None
    op.completed_by = None
    op.updated_at = now
    op.save()
    provisioning.setup_resumed(op, now)


def take_over(operation_id, actor, user=None):
    """ "Set up manually": people take the operation over; returns its task (made if none),
    assigned to ``user`` (who clicked it) when nobody has it yet.

    Automatic retries stop (the operation becomes ``manual``); "Run now" still works.
    """
    now = utcnow()
    with write_transaction():
        op = get(operation_id, lock=True)
        if not op.is_open:
            raise Conflict(f"operation {op.id} is {op.status}; there is nothing to take over")
        if op.status == "running":
            raise Conflict(f"operation {op.id} is running an attempt; try again shortly")
        OPERATION.move(op, "take_over")
        op.next_run_at = None
        op.lease_until = None
        op.updated_at = now
        op.save()
        task = tasks.open_for_operation(op, Reason("taken_over", actor=actor), now)
        if user is not None:
            tasks.assign_locked(task, user, now)
    return task


def complete_manually(op, details, actor, now):
    """A person did the work (closing its task): the operation is done. Inside a txn."""
    if not op.is_open:
        raise Conflict(f"operation {op.id} is already {op.status}")
    if op.status == "running":
        raise Conflict(f"operation {op.id} is running an attempt right now; try again shortly")
    _complete(op, now, by=actor, details=details)


def verify_callback(operation_id, body, headers, path=None):
    """A module's endpoint calls back: the module instance if its type accepts callbacks
    (``accepts_callbacks``) and its ``verify_callback`` finds the request authentic
    (``path``: where it was sent, for signatures bound to it)."""
    op = Operation.get_or_none_by_id(operation_id)
    cls = module_type(op.module) if op is not None else None
    if cls is None or not cls.accepts_callbacks:
        raise NotFound(f"operation {operation_id} not found")
    instance = cls(op.module.config or {})
    reason = instance.verify_callback(
        body, headers, _setting("PAYMENT_WEBHOOK_TOLERANCE"), path=path
    )
    if reason:
        raise BadSignature(reason)
    return instance


def callback(operation_id, data, instance):
    """Apply a verified callback (its body parsed by the type's ``parse_callback``)."""
    now = utcnow()
    with write_transaction():
        op = get(operation_id, lock=True)
        if op.status == "done":
            return op  # a repeated callback
        # "running": the endpoint called back before its "pending" answer was recorded
        if op.status not in ("waiting_callback", "running"):
            raise Conflict(f"operation {op.id} is {op.status}, not waiting for a callback")
        attempt = (
            Attempt.select()
            .where(Attempt.operation == op.id)
            .order_by(Attempt.number.desc())
            .first()
        )
        log_so_far = attempt.log if attempt is not None else ""
        attempt_id = attempt.id if attempt is not None else None
        try:
            result = instance.parse_callback(data)
            problem, permanent = _result_problem(result)
            if not problem:
                problem, permanent = _details_problem(op, result), True
            if problem:
                raise (PermanentError if permanent else TemporaryError)(problem)
        except ModuleError as exc:
            hidden = [*instance.secret_values(), *secret_values(data, _secret_fields(None))]
            message = guards.storable(mask(f"callback: {exc}", hidden))
            Attempt.update(
                outcome="permanent_error" if exc.permanent else "temporary_error",
                error=message,
                finished_at=now,
                log=guards.storable(mask(log_so_far + f"\n< callback {data}", hidden))[:20000],
            ).where(Attempt.id == attempt_id).execute()
            op.last_error = message
            _after_failure(op, exc.permanent, now)
        else:
            if result.status != "done":
                return op
            Attempt.update(outcome="done", log=(log_so_far + "\n< callback: done")).where(
                Attempt.id == attempt_id
            ).execute()
            _complete_with(op, now, result)
    return op


# --- the sweep --------------------------------------------------------------------------


def sweep(limit=1000, max_resent=50_000):
    """Recover what messages lost: re-send due operations, reclaim stale running ones.

    Run every few seconds by the scheduler (and by ``provisor ops sweep``). Each
    operation is handled on its own (:func:`sweeps.each`): one that fails is logged, its
    ``last_error`` says why, and the others are still reclaimed and re-sent. Returns
    counts (``errors``: the operations that failed). ``limit``: rows per query (the due
    operations are re-sent ``limit`` at a time, each batch committed before its messages,
    up to ``max_resent`` in one sweep).
    """
    now = utcnow()
    counts = {"reclaimed": 0, "callback_timeouts": 0, "resent": 0, "errors": 0}
    stale = [
        row.id
        for row in Operation.select(Operation.id)
        .where((Operation.status == "running") & (Operation.lease_until < now))
        .limit(limit)
    ]
    failed = sweeps.each(
        "operation", stale, lambda op_id: _reclaim(op_id, now, counts), _note_sweep_error
    )
    counts["errors"] += failed
    waiting = [
        row.id
        for row in Operation.select(Operation.id)
        .where((Operation.status == "waiting_callback") & (Operation.lease_until < now))
        .limit(limit)
    ]
    failed = sweeps.each(
        "operation",
        waiting,
        lambda op_id: _time_out_callback(op_id, now, counts),
        _note_sweep_error,
    )
    counts["errors"] += failed
    counts["resent"] = _resend_due(now, limit, max_resent)
    renewals = provisioning.queue_renewals(now)
    counts["renewals"] = renewals["queued"]
    counts["errors"] += renewals["errors"]
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts


def _resend_due(now, limit, max_resent):
    """Send ``run_operation`` again for the operations due since ``SWEEP_GRACE`` whose last
    message is as old (and still due when their row is written); returns how many. In
    batches of ``limit`` (by ``next_run_at``, ``id``: each query goes on after the last row
    of the one before, so rows skipped for their backoff are not read again), each batch's
    ``dispatched_at`` committed before its messages are sent."""
    grace = timedelta(seconds=_setting("SWEEP_GRACE"))
    due = (
        Operation.status.in_(RUNNABLE)
        & (Operation.next_run_at <= now - grace)
        & (Operation.dispatched_at.is_null() | (Operation.dispatched_at <= now - grace))
    )
    resent, after = 0, None
    while resent < max_resent:
        query = Operation.select(
            Operation.id, Operation.next_run_at, Operation.dispatched_at, Operation.redispatches
        ).where(due)
        if after is not None:
            query = query.where(
                (Operation.next_run_at > after.next_run_at)
                | ((Operation.next_run_at == after.next_run_at) & (Operation.id > after.id))
            )
        rows = list(query.order_by(Operation.next_run_at, Operation.id).limit(limit))
        # a backlog is not a loss: each further re-send of the same operation waits twice
        # as long (grace, 2 x grace, 4 x grace ... up to 64 x), so a busy worker is not
        # flooded
        ids = [
            row.id
            for row in rows
            if row.dispatched_at is None
            or row.dispatched_at <= now - grace * 2 ** min(row.redispatches, 6)
        ][: max_resent - resent]
        if ids:
            with write_transaction():
                # still due when written: an operation claimed (or finished) since it was
                # read keeps its row as its worker wrote it, and gets no message
                updated = (
                    Operation.update(dispatched_at=now, redispatches=Operation.redispatches + 1)
                    .where(Operation.id.in_(ids) & due)
                    .returning(Operation.id)
                )
                kept = {row.id for row in updated.execute()}
                ids = [op_id for op_id in ids if op_id in kept]
                if ids:
                    dispatch.operations(ids)
            resent += len(ids)
        if len(rows) < limit:
            break
        after = rows[-1]
    return resent


def _reclaim(op_id, now, counts):
    """The worker of a running attempt stopped (its lease expired): the attempt is
    interrupted, the operation runs again (or goes to people after max_attempts)."""
    with write_transaction():
        op = get_for_update(Operation, op_id)
        if op.status != "running" or op.lease_until >= now:
            return
        Attempt.update(
            finished_at=now,
            outcome="interrupted",
            error="the worker stopped during this attempt (lease expired)",
        ).where((Attempt.operation == op.id) & Attempt.finished_at.is_null()).execute()
        op.last_error = "the worker stopped during the attempt"
        op.failures += 1
        if op.failures >= _max_attempts(op):
            escalate(op, Reason("interrupted", n=op.attempts), now)
        else:
            OPERATION.move(op, "reclaim")
            _queue_now(op, now)
        counts["reclaimed"] += 1


def _time_out_callback(op_id, now, counts):
    """A pending http operation waited longer than CALLBACK_TIMEOUT for its callback."""
    with write_transaction():
        op = get_for_update(Operation, op_id)
        if op.status != "waiting_callback" or op.lease_until >= now:
            return
        message = "no callback came from the endpoint in time"
        Attempt.update(outcome="temporary_error", error=message, finished_at=now).where(
            (Attempt.operation == op.id) & (Attempt.number == op.attempts)
        ).execute()
        op.last_error = message
        _after_failure(op, False, now)
        counts["callback_timeouts"] += 1


def _note_sweep_error(op_id, message):
    """Why the sweep could not handle this operation: its last error, on its page."""
    Operation.update(last_error=message, updated_at=utcnow()).where(Operation.id == op_id).execute()


# --- queries for pages and the API ------------------------------------------------------


def operation_sorts():
    """The columns the Current operations list sorts by."""
    from app.models import Client

    return {
        "id": Operation.id,
        "created": Operation.created_at,
        "status": Operation.status,
        "kind": Operation.kind,
        "module": ProcessingModule.name,
        "client": Client.name,
        "tariff": Tariff.name,
        "attempts": Operation.attempts,
        "next_run": Operation.next_run_at,
    }


def open_operations(
    status=None,
    module_id=None,
    kind=None,
    search=None,
    with_module=True,
    sort="created",
    descending=True,
):
    """Operations not finished (or of ``status``), newest first; ``with_module`` joins
    the module's, item's, service's, client's and tariff's rows (for names, one query)
    — leave it out to count. ``search``: ``#id`` (the operation's or its service's) or
    the client's name or email; ``sort`` a key of :func:`operation_sorts`."""
    from app.models import Client

    term = search_term(search)
    number = parse_id(term.lstrip("#")) if term else None
    by_client = bool(term) and number is None
    sorts = operation_sorts()
    sort = sort if sort in sorts else "created"
    if with_module:
        query = (
            Operation.select(Operation, ProcessingModule, Item, Service, Client, Tariff)
            .join(ProcessingModule, JOIN.LEFT_OUTER)
            .switch(Operation)
            .join(Item, JOIN.LEFT_OUTER)
            .switch(Operation)
            .join(Service, JOIN.LEFT_OUTER)
            .join(Client, JOIN.LEFT_OUTER)
            .switch(Service)
            .join(Tariff, JOIN.LEFT_OUTER)
            .switch(Operation)
        )
    else:
        query = Operation.select(Operation.id)
        if by_client:
            query = query.join(Service, JOIN.LEFT_OUTER).join(Client, JOIN.LEFT_OUTER)
    if status:
        query = query.where(Operation.status == status)
    else:
        query = query.where(Operation.status.in_(Operation.OPEN_STATUSES))
    if module_id:
        query = query.where(Operation.module == module_id)
    if kind:
        query = query.where(Operation.kind == kind)
    if number is not None:
        query = query.where((Operation.id == number) | (Operation.service == number))
    elif by_client:
        query = query.where(Client.name.contains(term) | Client.email.contains(term))
    if not with_module:
        return query
    if sort == "created":
        ordering = [Operation.created_at, Operation.id]
        return query.order_by(*[f.desc() if descending else f.asc() for f in ordering])
    return sorted_by(query, sorts, sort, descending, Operation.id)


MAX_BULK = 500
"""The most operations one bulk action applies to."""


def act_on_many(operation_ids, action, user):
    """Run now (``restart``) or cancel each of ``operation_ids`` as ``user``, one at a
    time through :func:`restart` / :func:`cancel` (each its own transaction: one refusal
    stops nothing else). Returns ``(done, refused)``: the operations acted on, and
    ``(operation id, why)`` for each one refused."""
    from app.services.errors import ServiceError, ValidationError

    if action not in ("restart", "cancel"):
        raise ValidationError({"action": "Choose Run now or Cancel."})
    ids = []
    for raw in operation_ids:
        number = parse_id(raw)
        if number is None:
            raise ValidationError({"ids": "Choose operations by their ids."})
        if number not in ids:
            ids.append(number)
    if not ids:
        raise ValidationError({"ids": "Select at least one operation."})
    if len(ids) > MAX_BULK:
        raise ValidationError({"ids": f"At most {MAX_BULK} operations at once."})
    done, refused = [], []
    act = restart if action == "restart" else cancel
    for number in ids:
        try:
            get_to_act(number, user)
            done.append(act(number, actor=user.email))
        except ServiceError as exc:
            refused.append((number, exc.message))
    log.info("%s by %s: %d done, %d refused", action, user.email, len(done), len(refused))
    return done, refused


def attempts_of(op):
    return list(Attempt.select().where(Attempt.operation == op.id).order_by(Attempt.number))


def open_tasks_by_operation(ops):
    """The open task of each of these operations, by operation id (one query for a page
    of rows, instead of one per row: :func:`may_act` needs it for every row)."""
    ids = [op.id for op in ops]
    if not ids:
        return {}
    rows = Task.select().where(Task.operation.in_(ids) & Task.status.in_(Task.OPEN_STATUSES))
    return {task.operation_id: task for task in rows}


_UNKNOWN = object()


def department_of(op, task=_UNKNOWN):
    """The department whose staff act on ``op``: its open task's, else its module's (the
    department its tasks go to); None for an operation with neither (admins only).
    ``task``: its open task (or None), when the caller has looked it up already."""
    if task is _UNKNOWN:
        task = open_task_of(op)
    if task is not None and task.department_id is not None:
        return task.department_id
    return op.module.department_id if op.module_id is not None else None


def may_act(user, op, departments=None, task=_UNKNOWN):
    """Whether ``user`` may run, cancel or take over ``op``: admins always, staff when it
    is their department's (the same fence as its tasks). ``departments``: the user's
    department ids, when the caller has them already (a page of rows); ``task``: the
    operation's open task or None, likewise (:func:`open_tasks_by_operation`)."""
    if user.is_admin:
        return True
    if not user.is_staff:
        return False
    department = department_of(op, task)
    if departments is None:
        departments = accounts.department_ids_of(user)
    return department is not None and department in departments


def get_to_act(operation_id, user):
    """The operation ``user`` is about to run, cancel or take over, or NotFound /
    PermissionDenied (the same answer on the pages and the API)."""
    op = get(operation_id)
    if not may_act(user, op):
        raise PermissionDenied(
            f"operation #{op.id} belongs to a department you are not in: its staff or an "
            "admin act on it"
        )
    return op


def open_task_of(op):
    return (
        Task.select().where((Task.operation == op.id) & Task.status.in_(Task.OPEN_STATUSES)).first()
    )


def counts_by_status(module_id=None, kind=None, search=None):
    """Open operations by status, with the same module, kind and search filters as the
    rows of :func:`open_operations` (so that a chip and the rows it leads to agree)."""
    from peewee import fn

    # the rows' own query (its joins only when the search needs them), grouped: not
    # ``id IN (that query)``, which PostgreSQL ran as a join against every operation
    # (84 ms with a million done ones, bench/million.py)
    rows = (
        open_operations(None, module_id, kind, search, with_module=False)
        .select(Operation.status, fn.COUNT(Operation.id).alias("n"))
        .order_by()
        .group_by(Operation.status)
    )
    return {row.status: row.n for row in rows}


def available_actions(op):
    """What a person may do with ``op`` now: ``"restart"``, ``"cancel"``, ``"take_over"``."""
    actions = [action for action in ("restart", "cancel") if OPERATION.allows(action, op.status)]
    if op.is_open and op.status != "running":
        actions.append("take_over")
    return actions
