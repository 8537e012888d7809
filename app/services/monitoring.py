"""Is the system working? ``/api/v1/health`` and ``/metrics`` read it from here.

The health check asks the real things: the database (a query), the broker (a Redis PING
when ``REDIS_URL`` is set), the scheduler's heartbeat (``app.services.sweeps``: a sweep
older than twice ``SWEEP_INTERVAL``, a sweep that failed as a whole or left rows it could
not handle) and the operations due for longer than twice ``SWEEP_INTERVAL`` (no worker
takes them). Anything wrong makes it ``degraded``, with the reasons in words. It is
public: the reasons name exception classes, never messages, hosts or secrets.
"""

import functools
import hmac
import ipaddress
import json
from datetime import timedelta

from peewee import JOIN, fn

from app.db import database
from app.models import Email, EventDelivery, Operation, ProxyOutgoing, utcnow
from app.services import sweeps
from app.states import OPERATION

VERSION = "0.1.0"
FAILED_OUTCOMES = ("temporary_error", "permanent_error", "interrupted")
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


# --- /metrics -----------------------------------------------------------------------------


def metrics_enabled(config):
    """/metrics (and the workers' metrics port) answer only when a token or allowed
    networks are set: numbers about the business are not for everyone."""
    return bool(config.get("METRICS_TOKEN") or config.get("METRICS_ALLOW"))


def metrics_refusal(config, authorization, address):
    """Why a scrape is refused — ``(status, code, message)`` — or None when it may read.

    ``METRICS_TOKEN`` set: ``Authorization: Bearer <token>`` is required (401).
    ``METRICS_ALLOW`` set: the address must be in one of its networks (403). Both set:
    both hold. Neither: the metrics are off (404).
    """
    if not metrics_enabled(config):
        return (
            404,
            "not_found",
            "metrics are off: set METRICS_TOKEN or METRICS_ALLOW to turn them on",
        )
    allowed = config.get("METRICS_ALLOW")
    if allowed:
        try:
            ip = ipaddress.ip_address((address or "").split("%")[0])
        except ValueError:
            ip = None
        if getattr(ip, "ipv4_mapped", None) is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 is 10.1.2.3
        if ip is None or not any(ip in network for network in allowed):
            return 403, "forbidden", "this address may not read the metrics (METRICS_ALLOW)"
    token = config.get("METRICS_TOKEN")
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return 401, "unauthorized", "a valid bearer token is required (METRICS_TOKEN)"
    return None


def error_body(code, message):
    """The JSON error body (bytes) for a server that is not Flask (the workers' port)."""
    from app.services.errors import envelope

    return json.dumps(envelope(code, message, None)).encode()


class Collector:
    """A prometheus_client collector whose numbers come from the database at scrape time:
    the same on every web process, whatever process did the work."""

    def __init__(self, config):
        self.config = config

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = utcnow()
        up = GaugeMetricFamily("provisor_database_up", "1 if the database answers a query.")
        try:
            database.execute_sql("SELECT 1")
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        if self.config.get("REDIS_URL"):
            broker = GaugeMetricFamily("provisor_broker_up", "1 if Redis answers a PING.")
            try:
                broker.add_metric([], 1 if _redis(self.config["REDIS_URL"]).ping() else 0)
            except Exception:
                broker.add_metric([], 0)
            yield broker

        family = GaugeMetricFamily(
            "provisor_operations",
            "Operations by status and module (done and cancelled included).",
            labels=["status", "module"],
        )
        for (status, module), n in sorted(operation_counts().items()):
            family.add_metric([status, module], n)
        yield family

        attempts = CounterMetricFamily(
            "provisor_attempts",
            "Finished attempts by module and outcome.",
            labels=["module", "outcome"],
        )
        failures = CounterMetricFamily(
            "provisor_attempt_failures",
            "Failed attempts by module (temporary or permanent error, interrupted).",
            labels=["module"],
        )
        failed = {}
        for (module, outcome), n in sorted(attempt_counts().items()):
            attempts.add_metric([module, outcome], n)
            if outcome in FAILED_OUTCOMES:
                failed[module] = failed.get(module, 0) + n
        for module, n in sorted(failed.items()):
            failures.add_metric([module], n)
        yield attempts
        yield failures

        oldest = GaugeMetricFamily(
            "provisor_oldest_due_operation_age_seconds",
            "Seconds the operation due the longest has been due (0: none is due).",
        )
        oldest.add_metric([], oldest_due_age(now))
        yield oldest
        interval = self.config["SWEEP_INTERVAL"]
        overdue = GaugeMetricFamily(
            "provisor_overdue_operations",
            "Operations due for longer than twice SWEEP_INTERVAL (no worker took them).",
        )
        overdue.add_metric([], overdue_operations(now, timedelta(seconds=2 * interval)))
        yield overdue

        emails = GaugeMetricFamily(
            "provisor_emails", "Stored emails by status (the outbox).", labels=["status"]
        )
        counted = email_counts()
        for status in Email.STATUSES:
            emails.add_metric([status], counted.get(status, 0))
        yield emails

        deliveries = GaugeMetricFamily(
            "provisor_event_deliveries",
            "Outgoing events to webhook endpoints by delivery status.",
            labels=["status"],
        )
        counted = event_delivery_counts()
        for status in EventDelivery.STATUSES:
            deliveries.add_metric([status], counted.get(status, 0))
        yield deliveries

        backlog = GaugeMetricFamily(
            "provisor_proxy_pending_changes",
            "Task changes waiting to be pushed to a peer, by client side.",
            labels=["client_side"],
        )
        for side_id, n in sorted(proxy_backlog().items()):
            backlog.add_metric([str(side_id)], n)
        yield backlog

        yield from _sweep_families(now)


def _sweep_families(now):
    from prometheus_client.core import GaugeMetricFamily

    age = GaugeMetricFamily(
        "provisor_sweep_age_seconds", "Seconds since each sweep last ran.", labels=["sweep"]
    )
    failing = GaugeMetricFamily(
        "provisor_sweep_failed", "1 if the sweep's last run failed as a whole.", labels=["sweep"]
    )
    rows = GaugeMetricFamily(
        "provisor_sweep_failed_rows",
        "Rows the sweep's last run could not handle.",
        labels=["sweep"],
    )
    duration = GaugeMetricFamily(
        "provisor_sweep_duration_seconds", "How long the sweep's last run took.", labels=["sweep"]
    )
    for name, run in sorted(sweeps.last_runs().items()):
        age.add_metric([name], max((now - run.last_run_at).total_seconds(), 0.0))
        failing.add_metric([name], 1 if run.last_error else 0)
        rows.add_metric([name], run.failed_rows)
        duration.add_metric([name], run.duration)
    yield from (age, failing, rows, duration)


def metrics_text(config, extra_registry=None):
    """The exposition text of ``/metrics``: the database's numbers, and the embedded
    worker's counts when it runs in this process (``extra_registry``)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(config))
    text = generate_latest(registry)
    if extra_registry is not None:
        text += generate_latest(extra_registry)
    return text


# --- numbers for /metrics ---------------------------------------------------------------


def operation_counts():
    """``{(status, module name): n}`` for every operation (done ones included)."""
    from app.models import ProcessingModule

    rows = (
        Operation.select(Operation.status, ProcessingModule.name, fn.COUNT(Operation.id))
        .join(
            ProcessingModule,
            on=(Operation.module == ProcessingModule.id),
            join_type=JOIN.LEFT_OUTER,
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
            ProcessingModule,
            on=(Operation.module == ProcessingModule.id),
            join_type=JOIN.LEFT_OUTER,
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


def event_delivery_counts():
    """``{status: n}`` of the deliveries of outgoing events."""
    rows = (
        EventDelivery.select(EventDelivery.status, fn.COUNT(EventDelivery.id))
        .group_by(EventDelivery.status)
        .tuples()
    )
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
