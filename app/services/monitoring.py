"""Is the system working? ``/api/v1/health`` and ``/metrics`` read it from here.

The health check asks the real things: the database (a query), the broker (a Redis PING
when ``REDIS_URL`` is set), the scheduler's heartbeat (``app.services.sweeps``: a sweep
older than twice ``SWEEP_INTERVAL``, a sweep that failed as a whole or left rows it could
not handle) and the operations due for longer than twice ``SWEEP_INTERVAL`` (no worker
takes them). Anything wrong makes it ``degraded``, with the reasons in words. It is
public: the reasons name exception classes, never messages, hosts or secrets.
"""

import functools
from datetime import timedelta

from peewee import fn

from app.db import database
from app.models import Email, Operation, ProxyOutgoing, utcnow
from app.services import sweeps
from app.states import OPERATION

VERSION = "0.1.0"
RUNNABLE = OPERATION.sources("claim")
PING_TIMEOUT = 1.0  # seconds: a health check must answer quickly, even when Redis hangs


@functools.lru_cache(maxsize=4)
def _redis(url):
    import redis

    return redis.Redis.from_url(
        url, socket_timeout=PING_TIMEOUT, socket_connect_timeout=PING_TIMEOUT
    )


def _error(exc):
    return f"error: {exc.__class__.__name__}"


def overdue_operations(now, older_than):
    """Operations a worker should have taken more than ``older_than`` ago: due (queued,
    retry_wait, polling) since before then, or running on a lease that ran out then."""
    limit = now - older_than
    return (
        Operation.select()
        .where(
            (Operation.status.in_(RUNNABLE) & (Operation.next_run_at < limit))
            | ((Operation.status == "running") & (Operation.lease_until < limit))
        )
        .count()
    )


def health(config, scope="system"):
    """The health report (a dict, see ``app.objects.outputs.Health``).

    ``scope="web"`` checks only what this process needs to serve requests (the database
    and the broker), for a load balancer; ``"system"`` adds the scheduler and workers.
    """
    now = utcnow()
    problems = []
    redis_url = config.get("REDIS_URL")
    report = {
        "status": "ok",
        "database": "ok",
        "broker": "redis" if redis_url else "embedded",
        "redis": None,
        "last_sweep_at": None,
        "last_sweep_age": None,
        "overdue_operations": None,
        "problems": problems,
        "version": VERSION,
    }
    try:
        database.execute_sql("SELECT 1")
    except Exception as exc:
        report["database"] = _error(exc)
        problems.append(f"the database does not answer ({exc.__class__.__name__})")
    if redis_url:
        try:
            _redis(redis_url).ping()
            report["redis"] = "ok"
        except Exception as exc:
            report["redis"] = _error(exc)
            problems.append(f"the broker (Redis) does not answer a PING ({exc.__class__.__name__})")
    if scope == "system" and report["database"] == "ok":
        try:
            _scheduler_and_workers(config, now, report, problems)
        except Exception as exc:
            problems.append(f"cannot read the scheduler's heartbeat ({exc.__class__.__name__})")
    report["status"] = "degraded" if problems else "ok"
    return report


def _scheduler_and_workers(config, now, report, problems):
    interval = config["SWEEP_INTERVAL"]
    late = timedelta(seconds=2 * interval)
    runs = sweeps.last_runs()
    if not runs:
        problems.append("no sweep has run yet: is the scheduler running?")
    else:
        last = max(run.last_run_at for run in runs.values())
        age = (now - last).total_seconds()
        report["last_sweep_at"] = last
        report["last_sweep_age"] = round(max(age, 0.0), 1)
        if age > late.total_seconds():
            problems.append(
                f"the last sweep ran {age:.0f} s ago (SWEEP_INTERVAL is {interval} s): "
                "is the scheduler running?"
            )
        for name in sweeps.NAMES:
            run = runs.get(name)
            if run is None:
                continue
            if run.last_error:
                kind = run.last_error.split(":", 1)[0]
                problems.append(f"the {name} sweep failed ({kind}); see the scheduler's log")
            elif run.failed_rows:
                problems.append(
                    f"the {name} sweep could not handle {run.failed_rows} rows; "
                    "their last error says why"
                )
    overdue = overdue_operations(now, late)
    report["overdue_operations"] = overdue
    if overdue:
        problems.append(
            f"{overdue} operations have been due for more than {2 * interval} s: "
            "are the workers running?"
        )


# --- numbers for /metrics ---------------------------------------------------------------


def operation_counts():
    """``{(status, module name): n}`` for every operation (done ones included)."""
    from app.models import ProcessingModule

    rows = (
        Operation.select(Operation.status, ProcessingModule.name, fn.COUNT(Operation.id))
        .join(
            ProcessingModule, on=(Operation.module == ProcessingModule.id), join_type="LEFT OUTER"
        )
        .group_by(Operation.status, ProcessingModule.name)
        .tuples()
    )
    return {(status, module or ""): n for status, module, n in rows}


def attempt_counts():
    """``{(module name, outcome): n}`` for every finished attempt."""
    from app.models import Attempt, ProcessingModule

    rows = (
        Attempt.select(ProcessingModule.name, Attempt.outcome, fn.COUNT(Attempt.id))
        .join(Operation)
        .join(
            ProcessingModule, on=(Operation.module == ProcessingModule.id), join_type="LEFT OUTER"
        )
        .where(Attempt.outcome.is_null(False))
        .group_by(ProcessingModule.name, Attempt.outcome)
        .tuples()
    )
    return {(module or "", outcome): n for module, outcome, n in rows}


def oldest_due_age(now):
    """Seconds since the operation due the longest became due (0: none is due)."""
    oldest = (
        Operation.select(fn.MIN(Operation.next_run_at))
        .where(Operation.status.in_(RUNNABLE) & (Operation.next_run_at <= now))
        .scalar()
    )
    return max((now - oldest).total_seconds(), 0.0) if oldest else 0.0


def email_counts():
    """``{status: n}`` of the stored emails."""
    rows = Email.select(Email.status, fn.COUNT(Email.id)).group_by(Email.status).tuples()
    return dict(rows)


def proxy_backlog():
    """``{client side id: n}``: task changes waiting to be pushed to each peer."""
    rows = (
        ProxyOutgoing.select(ProxyOutgoing.client_side, fn.COUNT(ProxyOutgoing.id))
        .where(ProxyOutgoing.status == "pending")
        .group_by(ProxyOutgoing.client_side)
        .tuples()
    )
    return dict(rows)
