"""Benchmark: a million operations (issue 14, part 5).

    .venv/bin/python -m bench.million [--done 1000000] [--open 10000] [--requests 200]
                                      [--backends postgres,sqlite] [--keep]

For each backend (PostgreSQL: its own database ``provisor_bench_million``, dropped after;
SQLite: a file in a temp dir) the schema is made by the migrations, a small catalog and
1,000 clients through the ORM, then the bulk of the rows with one ``INSERT ... SELECT``
per table over a number series (``generate_series`` on PostgreSQL, a recursive CTE on
SQLite), not through the engine:

- ``--done`` done operations (kinds in turn), each with its attempt: the first 1,000
  belong to service #1 (the service page measured below), the others to 250,000 active
  services (4 each), each with a sent welcome email;
- ``--open`` open operations, one per service in setup: 40 % queued, 25 % retry_wait
  (both due in a day), 10 % running, 10 % waiting_callback (leases for a day), 15 % manual
  with a task; none due, so a sweep has nothing to do;

then ANALYZE. Measured, in this process (Flask's test client, logged in as staff through
the real login form), each after warm-up:

1. the Current operations partial as its polling element asks for it
   (``GET /operations?status=&module=&kind=&q=&page=1``, ``HX-Request``), ``--requests``
   times: p50 / p95 / p99 (target p95 < 50 ms);
2. the service page of service #1 (1,000 operations), ``GET /services/1``, 50 times
   (target < 50 ms);
3. one sweep with nothing due: ``operations.sweep()`` and the scheduler's whole
   ``sweep_all()`` (operations, mail, proxy, events), 30 times each (target < 50 ms);
4. all ``--open`` operations made due (queued / retry_wait, ``next_run_at`` and
   ``dispatched_at`` an hour ago), then one ``operations.sweep()`` with the project's Redis
   broker (its own Redis db and namespace, cleaned after): the time of that sweep and the
   messages it left in Redis (counted there, per queue), and how many sweeps and seconds
   it takes until every due operation was re-sent (target: all 10,000 in < 2 s).

Each statement of 1-3 is recorded (text and parameters) and, on PostgreSQL, its plan
printed with ``EXPLAIN (ANALYZE, BUFFERS)`` for the slowest ones (SQLite: ``EXPLAIN
QUERY PLAN``), into the JSON result in ``bench/results/``.
"""

import argparse
import atexit
import contextlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from datetime import timedelta

from bench import common

PG_DB = f"provisor_bench_million_{os.getpid()}"
REDIS_URL = os.environ.get("BENCH_MILLION_REDIS_URL", "redis://127.0.0.1:6379/13")
NAMESPACE = f"provisor-bench-million-{os.getpid()}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--done", type=int, default=1_000_000)
    p.add_argument("--open", type=int, default=10_000)
    p.add_argument("--services", type=int, default=250_000, help="active services")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--page-requests", type=int, default=50)
    p.add_argument("--sweeps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--backends", default="postgres,sqlite")
    p.add_argument("--keep", action="store_true", help="keep the databases (for EXPLAIN)")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else parse_args([])
TMP = tempfile.mkdtemp(prefix="provisor-bench-million-")
atexit.register(shutil.rmtree, TMP, True) if not ARGS.keep else None
SQLITE_URL = f"sqlite:///{TMP}/provisor.sqlite3"
STAFF_EMAIL, STAFF_PASSWORD = "staff@bench.example", "bench-password"
POLL_PATH = "/operations?status=&module=&kind=&q=&page=1"
POLL_HEADERS = {
    "HX-Request": "true",
    "HX-Target": "operations-live",
    "HX-Trigger": "operations-live",
    "HX-Current-URL": "http://127.0.0.1/operations",
}
BIG_SERVICE_OPS = 1000

common.bench_env(common.database_url(PG_DB), redis_url=REDIS_URL, namespace=NAMESPACE)

from app import create_app, schema  # noqa: E402
from app.db import database, init_db, is_sqlite  # noqa: E402

# --- recording the statements ------------------------------------------------------------

_rec = threading.local()


def _install_recorder():
    import peewee

    original = peewee.Database.execute_sql

    def execute_sql(self, sql, params=None, *args, **kwargs):
        rows = getattr(_rec, "rows", None)
        if rows is None:
            return original(self, sql, params, *args, **kwargs)
        t = time.perf_counter()
        try:
            return original(self, sql, params, *args, **kwargs)
        finally:
            rows.append((time.perf_counter() - t, sql, tuple(params or ())))

    peewee.Database.execute_sql = execute_sql


_install_recorder()


@contextlib.contextmanager
def recording():
    _rec.rows = rows = []
    try:
        yield rows
    finally:
        _rec.rows = None


def explain(statements, top=6):
    """Plans of the slowest distinct statements (by their text)."""
    seen, out = {}, []
    for t, sql, params in statements:
        if sql not in seen or seen[sql][0] < t:
            seen[sql] = (t, params)
    slow = sorted(seen.items(), key=lambda kv: -kv[1][0])[:top]
    for sql, (t, params) in slow:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        prefix = "EXPLAIN QUERY PLAN " if is_sqlite() else "EXPLAIN (ANALYZE, BUFFERS) "
        cur = database.execute_sql(prefix + sql, params)
        plan = [" ".join(str(c) for c in row) for row in cur.fetchall()]
        out.append(
            {"ms": round(t * 1000, 2), "sql": sql, "params": list(map(str, params)), "plan": plan}
        )
    return out


def statement_summary(statements, requests):
    total = sum(t for t, _, _ in statements)
    return {
        "statements_per_request": round(len(statements) / requests, 1),
        "sql_ms_per_request": round(total * 1000 / requests, 2),
    }


# --- filling ------------------------------------------------------------------------------


def series(n):
    if is_sqlite():
        return (
            f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {int(n)}) "
            "SELECT i FROM s) AS s"
        )
    return f"generate_series(1, {int(n)}) AS s(i)"


def ts(base_param):
    """A timestamp parameter (given as text: naive UTC, as the app stores them)."""
    return base_param if is_sqlite() else f"CAST({base_param} AS timestamp)"


def at(base_param, seconds_expr):
    """A timestamp ``seconds_expr`` seconds after the parameter (naive UTC, as the app)."""
    if is_sqlite():
        return f"datetime({base_param}, '+' || ({seconds_expr}) || ' seconds')"
    return f"(CAST({base_param} AS timestamp) + ({seconds_expr}) * interval '1 second')"


def populate(n_done, n_open, n_services):
    """The rows (inside an app context with the database bound); returns timings."""
    from app.models import (
        Client,
        Department,
        ProcessingModule,
        ProductType,
        Tariff,
        TariffModule,
        utcnow,
    )
    from app.services import accounts

    p = database.param
    now = utcnow().replace(microsecond=0)
    year_ago = now - timedelta(days=365)
    timings = {}
    t0 = time.monotonic()
    with database.atomic():
        dept = Department.create(name="Bench")
        vps = ProductType.get(ProductType.code == "vps")
        modules = [
            ProcessingModule.create(
                name=f"sandbox-{i}", type="sandbox", config={"latency_ms": 0}, department=dept
            )
            for i in range(3)
        ]
        tariffs = []
        for i, m in enumerate(modules):
            t = Tariff.create(
                name=f"VPS {i}", product_type=vps, price=5 + i, internal_name=f"vps-{i}"
            )
            TariffModule.create(tariff=t, module=m)
            tariffs.append(t)
        Client.insert_many(
            [
                {"name": f"Client {i}", "email": f"c{i}@bench.example", "created_at": now}
                for i in range(1000)
            ]
        ).execute()
        first_client = Client.select(Client.id).order_by(Client.id).first().id
    accounts.create_user(
        {
            "email": STAFF_EMAIL,
            "name": "Bench staff",
            "password": STAFF_PASSWORD,
            "department_ids": [dept.id],
        }
    )
    m0, t_0 = modules[0].id, tariffs[0].id  # ids are consecutive: + (i % 3)
    details = (
        '{"hostname": "srv.sandbox.test", "ip": "192.0.2.10", "panel_url": '
        '"https://panel.sandbox.test/", "password": "secret-password", "username": "u1"}'
    )
    kinds = ("open", "renew", "suspend", "resume", "change_password", "renew", "renew")
    kind_case = (
        "CASE (s.i % 7) " + " ".join(f"WHEN {k} THEN '{v}'" for k, v in enumerate(kinds)) + " END"
    )
    done_step = max(1, int(365 * 86400 / max(1, n_done)))  # seconds between done operations
    svc_step = max(1, int(365 * 86400 / max(1, n_services + 1)))
    # services: #1 the one with BIG_SERVICE_OPS operations, then n_services active ones,
    # then n_open in setup
    n_svc_total = 1 + n_services + n_open
    open_status = f"CASE WHEN s.i > 1 + {n_services} THEN 'processing' ELSE 'active' END"
    steps = [
        (
            "service",
            f'INSERT INTO "service" (id, client_id, tariff_id, module_id, status, remote_id, '
            f"details, params, module_choice, created_at, activated_at, updated_at, module_data) "
            f"SELECT s.i, {first_client} + (s.i % 1000), {t_0} + (s.i % 3), {m0} + (s.i % 3), "
            f"{open_status}, CASE WHEN s.i > 1 + {n_services} THEN NULL ELSE "
            f"'sbx-' || s.i END, CASE WHEN s.i > 1 + {n_services} THEN '{{}}' ELSE {p} END, "
            f"'{{}}', NULL, {at(p, f's.i * {svc_step}')}, {at(p, f's.i * {svc_step} + 1')}, "
            f"{at(p, f's.i * {svc_step} + 1')}, '{{}}' FROM {series(n_svc_total)}",
            [details, year_ago, year_ago, year_ago],
        ),
        (
            "operation (done)",
            f'INSERT INTO "operation" (id, kind, service_id, module_id, status, params, attempts, '
            f"failures, redispatches, dispatched_at, created_at, updated_at, finished_at) "
            f"SELECT s.i, {kind_case}, CASE WHEN s.i <= {BIG_SERVICE_OPS} THEN 1 ELSE "
            f"2 + (s.i % {n_services}) END, {m0} + (s.i % 3), 'done', '{{}}', 1, 0, 0, "
            f"{at(p, f's.i * {done_step}')}, {at(p, f's.i * {done_step}')}, "
            f"{at(p, f's.i * {done_step} + 1')}, {at(p, f's.i * {done_step} + 1')} "
            f"FROM {series(n_done)}",
            [year_ago] * 4,
        ),
        (
            "attempt (done)",
            'INSERT INTO "attempt" (operation_id, number, worker, started_at, finished_at, '
            f"outcome, log) SELECT s.i, 1, 'bench-host:1234', {at(p, f's.i * {done_step}')}, "
            f"{at(p, f's.i * {done_step}')}, 'done', 'sandbox: open key=' || s.i "
            f"FROM {series(n_done)}",
            [year_ago] * 2,
        ),
        (
            "email (sent)",
            'INSERT INTO "email" ("to", subject, body, kind, service_id, status, attempts, '
            "created_at, sent_at) SELECT 'client@bench.example', 'Your VPS is ready', "
            "'Hello, your service is ready.', 'welcome', s.i, 'sent', 1, "
            f"{at(p, f's.i * {svc_step}')}, {at(p, f's.i * {svc_step} + 2')} "
            f"FROM {series(1 + n_services)}",
            [year_ago] * 2,
        ),
    ]
    # open operations: one per service in setup, created in the last hours
    status_case = (
        "CASE WHEN s.i % 20 < 8 THEN 'queued' WHEN s.i % 20 < 10 THEN 'running' "
        "WHEN s.i % 20 < 15 THEN 'retry_wait' WHEN s.i % 20 < 18 THEN 'manual' "
        "ELSE 'waiting_callback' END"
    )
    recent = now - timedelta(seconds=3 * n_open)
    day = now + timedelta(days=1)
    steps.append(
        (
            "operation (open)",
            'INSERT INTO "operation" (id, kind, service_id, module_id, status, params, attempts, '
            "failures, redispatches, next_run_at, dispatched_at, lease_until, last_error, "
            "created_at, updated_at) "
            f"SELECT {n_done} + s.i, 'open', {1 + n_services} + s.i, {m0} + (s.i % 3), "
            f"{status_case}, '{{}}', CASE WHEN s.i % 20 < 8 THEN 0 ELSE 1 END, "
            "CASE WHEN s.i % 20 >= 10 AND s.i % 20 < 18 THEN 1 ELSE 0 END, 0, "
            f"CASE WHEN s.i % 20 < 8 OR (s.i % 20 >= 10 AND s.i % 20 < 15) THEN {ts(p)} END, "
            f"{at(p, 's.i * 3')}, "
            f"CASE WHEN (s.i % 20 >= 8 AND s.i % 20 < 10) OR s.i % 20 >= 18 THEN {ts(p)} END, "
            "CASE WHEN s.i % 20 >= 10 AND s.i % 20 < 18 THEN "
            "'sandbox: simulated failure of attempt 1' END, "
            f"{at(p, 's.i * 3')}, {at(p, 's.i * 3')} FROM {series(n_open)}",
            [day, recent, day, recent, recent],
        )
    )
    steps.append(
        (
            "attempt (open)",
            'INSERT INTO "attempt" (operation_id, number, worker, started_at, finished_at, '
            "outcome, error, log) SELECT o.id, 1, 'bench-host:1234', o.created_at, "
            "CASE WHEN o.status = 'running' THEN NULL ELSE o.created_at END, "
            "CASE o.status WHEN 'running' THEN NULL WHEN 'waiting_callback' THEN 'pending' "
            "ELSE 'temporary_error' END, o.last_error, 'sandbox: open' "
            f"FROM \"operation\" o WHERE o.id > {n_done} AND o.status <> 'queued'",
            [],
        )
    )
    steps.append(
        (
            "task (manual)",
            'INSERT INTO "task" (department_id, service_id, operation_id, title, status, '
            "fields, created_at, updated_at, priority) SELECT "
            f"{dept.id}, o.service_id, o.id, 'Set up service #' || o.service_id || ' manually', "
            "'new', '{}', o.created_at, o.created_at, 'normal' "
            f"FROM \"operation\" o WHERE o.id > {n_done} AND o.status = 'manual'",
            [],
        )
    )
    for name, sql, params in steps:
        t = time.monotonic()
        with database.atomic():
            if not is_sqlite():  # psycopg2's placeholders are %s: the modulo is %%
                sql = sql.replace(" % ", " %% ")
            database.execute_sql(sql, [text_ts(v) for v in params])
        timings[name] = round(time.monotonic() - t, 1)
        print(f"    {name}: {timings[name]} s", flush=True)
    t = time.monotonic()
    if not is_sqlite():
        for table in ("service", "operation", "attempt", "email", "task", "client"):
            database.execute_sql(
                f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                f'(SELECT coalesce(max(id), 1) FROM "{table}"))'
            )
        database.execute_sql("VACUUM ANALYZE")
    else:
        database.execute_sql("ANALYZE")
    timings["analyze"] = round(time.monotonic() - t, 1)
    timings["total"] = round(time.monotonic() - t0, 1)
    counts = {
        t: database.execute_sql(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        for t in ("service", "operation", "attempt", "email", "task")
    }
    return {"seconds": timings, "rows": counts}


def text_ts(value):
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else value


# --- measuring ----------------------------------------------------------------------------


def csrf_token(html):
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    return m.group(1) if m else None


def stats_ms(samples):
    ms = [s * 1000 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": round(common.percentile(ms, 50), 2),
        "p95_ms": round(common.percentile(ms, 95), 2),
        "p99_ms": round(common.percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


def timed(fn, n, warmup):
    for _ in range(warmup):
        fn()
    samples, cpu = [], []
    for _ in range(n):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    out = stats_ms(samples)
    out["cpu_p50_ms"] = round(common.percentile([x * 1000 for x in cpu], 50), 2)
    return out


def login(app):
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    resp = client.post(
        "/login", data={"email": STAFF_EMAIL, "password": STAFF_PASSWORD, "csrf_token": token or ""}
    )
    if resp.status_code not in (302, 303):
        raise RuntimeError(f"login failed: {resp.status_code}")
    return client


def get_ok(client, path, headers=None, must=None):
    r = client.get(path, headers=headers or {})
    body = r.get_data(as_text=True)
    if r.status_code != 200 or (must and must not in body):
        raise RuntimeError(f"GET {path}: {r.status_code} {body[:300]!r}")
    return body


def measure_pages(app):
    client = login(app)
    out = {}

    def partial():
        body = get_ok(client, POLL_PATH, POLL_HEADERS, must='id="operation-')
        if "<html" in body.lower():
            raise RuntimeError("not the rows partial")

    out["partial"] = timed(partial, ARGS.requests, ARGS.warmup)
    with app.app_context(), database.connection_context(), recording() as rows:
        for _ in range(3):
            partial()
    out["partial"].update(statement_summary(rows, 3))
    out["partial"]["explain"] = _explain(app, rows)

    def service_page():
        body = get_ok(client, "/services/1", must='id="service-live"')
        if body.count('id="operation-') < BIG_SERVICE_OPS and "page" not in body:
            raise RuntimeError("the service page does not list its operations")

    out["service_page"] = timed(service_page, ARGS.page_requests, 3)
    with recording() as rows:
        service_page()
    out["service_page"].update(statement_summary(rows, 1))
    out["service_page"]["explain"] = _explain(app, rows)
    out["service_page"]["bytes"] = len(get_ok(client, "/services/1"))
    return out


def _explain(app, rows):
    with app.app_context(), database.connection_context():
        return explain(rows)


def measure_idle_sweeps(app):
    from app import scheduler
    from app.services import operations

    out = {}
    with app.app_context(), database.connection_context():
        before = redis_messages()
        out["operations_sweep"] = timed(operations.sweep, ARGS.sweeps, 3)
        with recording() as rows:
            counts = operations.sweep()
        out["operations_sweep"].update(statement_summary(rows, 1))
        out["operations_sweep"]["counts"] = counts
        out["operations_sweep"]["explain"] = explain(rows)
        out["sweep_all"] = timed(scheduler.sweep_all, ARGS.sweeps, 3)
        with recording() as rows:
            counts, errors = scheduler.sweep_all()
        out["sweep_all"].update(statement_summary(rows, 1))
        out["sweep_all"]["counts"] = counts
        out["sweep_all"]["errors"] = errors
        out["sweep_all"]["explain"] = explain(rows)
        out["messages_sent"] = redis_messages() - before
    return out


def redis_messages():
    """Messages waiting in our namespace's queues (the hashes of message bodies)."""
    client = common.redis_client(REDIS_URL)
    return sum(client.hlen(k) for k in client.scan_iter(match=f"{NAMESPACE}:*.msgs", count=1000))


def measure_due_sweep(app):
    from app.models import Operation, utcnow
    from app.services import operations

    out = {}
    with app.app_context(), database.connection_context():
        hour_ago = utcnow() - timedelta(hours=1)
        with database.atomic():
            made_due = (
                Operation.update(
                    status="queued",
                    next_run_at=hour_ago,
                    dispatched_at=hour_ago,
                    redispatches=0,
                    lease_until=None,
                )
                .where(Operation.id > ARGS.done, Operation.status != "retry_wait")
                .execute()
            )
            made_due += (
                Operation.update(next_run_at=hour_ago, dispatched_at=hour_ago, redispatches=0)
                .where(Operation.id > ARGS.done, Operation.status == "retry_wait")
                .execute()
            )
        out["due"] = made_due
        common.clean_namespace(NAMESPACE, REDIS_URL)
        t0 = time.perf_counter()
        with recording() as rows:
            first = operations.sweep()
        out["first_sweep_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        out["first_sweep_resent"] = first["resent"]
        out["first_sweep_messages_in_redis"] = redis_messages()
        out["first_sweep"] = statement_summary(rows, 1)
        resent, sweeps = first["resent"], 1
        while resent < made_due and sweeps < 100:
            n = operations.sweep()["resent"]
            if not n:
                break
            resent += n
            sweeps += 1
        out["all_resent_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        out["sweeps_to_resend_all"] = sweeps
        out["resent_total"] = resent
        out["messages_in_redis"] = redis_messages()
        client = common.redis_client(REDIS_URL)
        out["messages_by_queue"] = {
            k.decode().rsplit(":", 1)[-1]: client.hlen(k)
            for k in client.scan_iter(match=f"{NAMESPACE}:*.msgs", count=1000)
        }
        common.clean_namespace(NAMESPACE, REDIS_URL)
    return out


def run_backend(backend):
    url = common.database_url(PG_DB) if backend == "postgres" else SQLITE_URL
    os.environ["DATABASE_URL"] = url
    if backend == "postgres":
        common.recreate_database(PG_DB)
    app = create_app({"DATABASE_URL": url})
    init_db(url)
    result = {"backend": backend, "load_before": os.getloadavg()}
    with app.app_context(), database.connection_context():
        schema.upgrade()
        print(f"  {backend}: filling", flush=True)
        result["populate"] = populate(ARGS.done, ARGS.open, ARGS.services)
    print(f"  {backend}: rows {result['populate']['rows']}", flush=True)
    result["pages"] = measure_pages(app)
    pp, sp = result["pages"]["partial"], result["pages"]["service_page"]
    print(
        f"  {backend} partial p50/p95/p99 {pp['p50_ms']}/{pp['p95_ms']}/{pp['p99_ms']} ms, "
        f"{pp['statements_per_request']} statements, SQL {pp['sql_ms_per_request']} ms",
        flush=True,
    )
    print(
        f"  {backend} service page p50/p95 {sp['p50_ms']}/{sp['p95_ms']} ms, "
        f"{sp['statements_per_request']} statements, SQL {sp['sql_ms_per_request']} ms, "
        f"{sp['bytes']} bytes",
        flush=True,
    )
    result["idle_sweeps"] = measure_idle_sweeps(app)
    ops, alls = result["idle_sweeps"]["operations_sweep"], result["idle_sweeps"]["sweep_all"]
    print(
        f"  {backend} sweep, nothing due: operations p50/p95 {ops['p50_ms']}/{ops['p95_ms']} ms "
        f"({ops['statements_per_request']} statements); all sweeps "
        f"{alls['p50_ms']}/{alls['p95_ms']} ms; messages sent {result['idle_sweeps']['messages_sent']}",
        flush=True,
    )
    result["due_sweep"] = measure_due_sweep(app)
    d = result["due_sweep"]
    print(
        f"  {backend} sweep, {d['due']} due: first sweep {d['first_sweep_ms']} ms re-sent "
        f"{d['first_sweep_resent']} (Redis: {d['first_sweep_messages_in_redis']}); all "
        f"{d['resent_total']} in {d['all_resent_ms']} ms over {d['sweeps_to_resend_all']} "
        f"sweeps (Redis: {d['messages_in_redis']})",
        flush=True,
    )
    result["load_after"] = os.getloadavg()
    if database.obj is not None and not database.is_closed():
        database.close()
    return result


def main():
    info = common.machine_info()
    print(
        f"A million operations: {ARGS.done} done + {ARGS.open} open operations "
        f"(load {os.getloadavg()})",
        flush=True,
    )
    results = []
    try:
        for backend in ARGS.backends.split(","):
            results.append(run_backend(backend.strip()))
    finally:
        common.clean_namespace(NAMESPACE, REDIS_URL)
        if not ARGS.keep:
            if "postgres" in ARGS.backends:
                common.drop_database(PG_DB)
            shutil.rmtree(TMP, ignore_errors=True)
    rows = []
    for r in results:
        pp, sp = r["pages"]["partial"], r["pages"]["service_page"]
        ops, alls = r["idle_sweeps"]["operations_sweep"], r["idle_sweeps"]["sweep_all"]
        d = r["due_sweep"]
        rows += [
            [r["backend"], "partial p50 / p95 ms", f"{pp['p50_ms']} / {pp['p95_ms']}", "< 50"],
            [r["backend"], "service page p50 / p95 ms", f"{sp['p50_ms']} / {sp['p95_ms']}", "< 50"],
            [
                r["backend"],
                "operations sweep, none due p50 / p95 ms",
                f"{ops['p50_ms']} / {ops['p95_ms']}",
                "< 50",
            ],
            [
                r["backend"],
                "all sweeps, none due p50 / p95 ms",
                f"{alls['p50_ms']} / {alls['p95_ms']}",
                "< 50",
            ],
            [
                r["backend"],
                f"{d['due']} due: re-sent, ms, sweeps",
                f"{d['resent_total']}, {d['all_resent_ms']}, {d['sweeps_to_resend_all']}",
                "< 2000",
            ],
        ]
    print()
    print(common.table(rows, ["backend", "measure", "value", "target"]))
    path = common.write_result("million", {"args": vars(ARGS), "machine": info, "results": results})
    print(f"\nresults: {path}")
    if ARGS.keep:
        print(f"kept: PostgreSQL database {PG_DB}, SQLite {SQLITE_URL} (remove them by hand)")


if __name__ == "__main__":
    sys.exit(main())
