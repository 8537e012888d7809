"""Benchmark 2: the Current operations partial with 100,000 done and 1,000 open operations.

    .venv/bin/python -m bench.operations_page [--done 100000] [--open 1000] [--requests 200]
                                              [--backends postgres,sqlite] [--servers client,gunicorn]

For each backend (PostgreSQL: database ``provisor_bench_ops``; SQLite: a file in a temp
dir) the data is bulk-inserted with peewee ``insert_many`` inside transactions: clients,
a catalog of 3 sandbox modules, one service per operation, the operations (done ones with
their attempt row and a welcome email; open ones spread over queued / running /
retry_wait / manual (+ task) / waiting_callback, with attempts and errors), then ANALYZE.

Then, logged in as a staff user (the real login form, CSRF token included), it requests
the partial exactly as the page's polling element ``#operations-live`` does:
``GET /operations?status=&module=&kind=&q=&page=1`` with ``HX-Request: true``,
``HX-Target: operations-live``, ``HX-Trigger: operations-live``, and times 200 requests
(after 10 warm-up ones), (a) through Flask's test client in this process and (b) against
gunicorn (2 workers x 4 threads, as in tests/test_scaled.py) over loopback with requests.
It also counts the SQL statements one partial request makes.
"""

import argparse
import atexit
import os
import random
import re
import shutil
import sys
import tempfile
import time
from datetime import timedelta

from bench import common

PG_DB = "provisor_bench_ops"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--done", type=int, default=100_000)
    p.add_argument("--open", type=int, default=1000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--backends", default="postgres,sqlite")
    p.add_argument("--servers", default="client,gunicorn")
    p.add_argument("--gunicorn-workers", type=int, default=2)
    p.add_argument("--gunicorn-threads", type=int, default=4)
    p.add_argument("--keep", action="store_true", help="keep the databases (for EXPLAIN)")
    return p.parse_args(argv)


# imported (not run): defaults, not the importer's arguments
ARGS = parse_args() if __name__ == "__main__" else parse_args([])
TMP = tempfile.mkdtemp(prefix="provisor-bench-ops-")
if __name__ != "__main__":  # imported: the folder is not used
    atexit.register(shutil.rmtree, TMP, True)
SQLITE_URL = f"sqlite:///{TMP}/provisor.sqlite3"
STAFF_EMAIL, STAFF_PASSWORD = "staff@bench.example", "bench-password"
POLL_PATH = "/operations?status=&module=&kind=&q=&page=1"
POLL_HEADERS = {
    "HX-Request": "true",
    "HX-Target": "operations-live",
    "HX-Trigger": "operations-live",
    "HX-Current-URL": "http://127.0.0.1/operations",
}

# the bench process needs no broker: the in-process one is fine (nothing is queued)
common.bench_env(common.database_url(PG_DB), redis_url=None)

from app import create_app, schema  # noqa: E402
from app.db import database, init_db  # noqa: E402


def chunks(rows, size):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def populate(n_done, n_open):
    """Bulk-insert realistic data (inside an app context with the database bound)."""
    from app.models import (
        Attempt,
        Client,
        Department,
        Email,
        Operation,
        ProcessingModule,
        ProductType,
        Service,
        Tariff,
        TariffModule,
        Task,
        TaskEvent,
        utcnow,
    )
    from app.services import accounts

    rnd = random.Random(42)
    now = utcnow()
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
        client_ids = [c.id for c in Client.select(Client.id)]
    accounts.create_user(
        {
            "email": STAFF_EMAIL,
            "name": "Bench staff",
            "password": STAFF_PASSWORD,
            "department_ids": [dept.id],
        }
    )
    total = n_done + n_open
    open_statuses = (
        ["queued"] * 40
        + ["running"] * 10
        + ["retry_wait"] * 25
        + ["manual"] * 15
        + ["waiting_callback"] * 10
    )
    services, ops, attempts, emails, tasks, events = [], [], [], [], [], []
    start = now - timedelta(days=365)
    step = (timedelta(days=365) - timedelta(hours=1)) / max(1, n_done)
    details = {
        "hostname": "srv.sandbox.test",
        "ip": "192.0.2.10",
        "username": "u1",
        "password": "secret-password",
        "panel_url": "https://panel.sandbox.test/",
    }
    for i in range(1, total + 1):
        k = rnd.randrange(3)
        is_open = i > n_done
        created = start + step * i if not is_open else now - timedelta(seconds=(total - i) * 3)
        status = rnd.choice(open_statuses) if is_open else "done"
        services.append(
            {
                "id": i,
                "client": rnd.choice(client_ids),
                "tariff": tariffs[k].id,
                "module": modules[k].id,
                "status": "processing" if is_open else "active",
                "remote_id": None if is_open else f"sbx-account-{i:08x}",
                "details": {} if is_open else details,
                "params": {},
                "created_at": created,
                "updated_at": created,
                "activated_at": None if is_open else created + timedelta(seconds=1),
            }
        )
        n_att = {
            "queued": 0,
            "running": 1,
            "retry_wait": rnd.randint(1, 2),
            "manual": 3,
            "waiting_callback": 1,
            "done": 1,
        }[status]
        error = (
            "sandbox: simulated failure of attempt 1"
            if status in ("retry_wait", "manual")
            else None
        )
        ops.append(
            {
                "id": i,
                "kind": "open",
                "service": i,
                "module": modules[k].id,
                "status": status,
                "params": {},
                "attempts": n_att,
                "next_run_at": created + timedelta(minutes=5)
                if status in ("queued", "retry_wait")
                else None,
                "dispatched_at": created,
                "lease_until": created + timedelta(seconds=90)
                if status in ("running", "waiting_callback")
                else None,
                "last_error": error,
                "completed_by": None,
                "created_at": created,
                "updated_at": created,
                "finished_at": created + timedelta(seconds=1) if status == "done" else None,
            }
        )
        for n in range(1, n_att + 1):
            ok = status == "done" or (status == "waiting_callback")
            attempts.append(
                {
                    "operation": i,
                    "number": n,
                    "worker": "bench-host:1234",
                    "started_at": created,
                    "finished_at": None
                    if status == "running"
                    else created + timedelta(milliseconds=40),
                    "outcome": (
                        None
                        if status == "running"
                        else "done"
                        if status == "done"
                        else "pending"
                        if status == "waiting_callback"
                        else "temporary_error"
                    ),
                    "error": None if ok or status == "running" else error,
                    "log": f"sandbox: open key={i} attempt={n}\nsandbox: created account sbx-account-{i:08x}",
                }
            )
        if status == "done":
            emails.append(
                {
                    "to": "client@bench.example",
                    "subject": "Your VPS is ready",
                    "body": "Hello,\nyour service is ready.\n"
                    + "\n".join(f"{a}: {b}" for a, b in details.items()),
                    "kind": "welcome",
                    "service": i,
                    "status": "outbox",
                    "created_at": created,
                }
            )
        if status == "manual":
            tasks.append(
                {
                    "department": dept.id,
                    "service": i,
                    "operation": i,
                    "title": f"Set up service #{i} manually",
                    "status": "new",
                    "fields": {},
                    "created_at": created,
                    "updated_at": created,
                }
            )
    t_gen = time.monotonic() - t0
    counts = {}
    for model, rows in (
        (Service, services),
        (Operation, ops),
        (Attempt, attempts),
        (Email, emails),
        (Task, tasks),
    ):
        t = time.monotonic()
        with database.atomic():
            for chunk in chunks(rows, 500 if common_is_sqlite() else 2000):
                model.insert_many(chunk).execute()
        counts[model.__name__] = {"rows": len(rows), "s": round(time.monotonic() - t, 2)}
    with database.atomic():
        for task in Task.select(Task.id):
            events.append(
                {
                    "task": task.id,
                    "kind": "created",
                    "actor": "system",
                    "text": "Operation: failed 3 attempts.",
                    "created_at": now,
                }
            )
        for chunk in chunks(events, 500):
            TaskEvent.insert_many(chunk).execute()
    if not common_is_sqlite():
        for table in ("service", "operation", "attempt", "email", "task", "task_event", "client"):
            database.execute_sql(
                f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                f'(SELECT coalesce(max(id), 1) FROM "{table}"))'
            )
        database.execute_sql("VACUUM ANALYZE")
    else:
        database.execute_sql("ANALYZE")
    return {
        "generate_s": round(t_gen, 2),
        "tables": counts,
        "open_by_status": {
            s: sum(1 for o in ops if o["status"] == s)
            for s in ("queued", "running", "retry_wait", "manual", "waiting_callback")
        },
    }


def common_is_sqlite():
    from app.db import is_sqlite

    return is_sqlite()


def csrf_token(html):
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    return m.group(1) if m else None


def check_partial(status, body):
    if status != 200:
        raise RuntimeError(f"partial answered {status}: {body[:300]!r}")
    if "<html" in body.lower() or 'id="operation-' not in body:
        raise RuntimeError(f"not the rows partial: {body[:300]!r}")


def stats_ms(samples):
    ms = [s * 1000 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": round(common.percentile(ms, 50), 2),
        "p95_ms": round(common.percentile(ms, 95), 2),
        "p99_ms": round(common.percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(sum(ms) / len(ms), 2),
    }


def bench_test_client(app):
    client = app.test_client()
    page = client.get("/login")
    token = csrf_token(page.get_data(as_text=True))
    resp = client.post(
        "/login", data={"email": STAFF_EMAIL, "password": STAFF_PASSWORD, "csrf_token": token or ""}
    )
    if resp.status_code not in (302, 303):
        raise RuntimeError(f"login failed: {resp.status_code}")
    for _ in range(ARGS.warmup):
        r = client.get(POLL_PATH, headers=POLL_HEADERS)
        check_partial(r.status_code, r.get_data(as_text=True))
    samples, cpu = [], []
    size = 0
    for _ in range(ARGS.requests):
        c = time.process_time()
        t = time.perf_counter()
        r = client.get(POLL_PATH, headers=POLL_HEADERS)
        body = r.get_data()
        samples.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        size = len(body)
    # SQL statements of one partial request
    from bench import sqlcount

    sqlcount.reset()
    for _ in range(5):
        with sqlcount.measure("GET /operations partial"):
            r = client.get(POLL_PATH, headers=POLL_HEADERS)
    counted = sqlcount.snapshot()
    full = []
    for _ in range(20):
        t = time.perf_counter()
        r = client.get("/operations")
        full.append(time.perf_counter() - t)
    return {
        **stats_ms(samples),
        "bytes": size,
        "sql": counted,
        "python_cpu_ms_p50": round(common.percentile([x * 1000 for x in cpu], 50), 2),
        "sql_report": sqlcount.report(counted),
        "full_page": stats_ms(full),
    }


def bench_gunicorn(env):
    import requests

    port = free_port()
    procs = common.Procs(env)
    base = f"http://127.0.0.1:{port}"
    try:
        procs.start(
            "gunicorn",
            [
                f"{common.BIN}/gunicorn",
                "--workers",
                str(ARGS.gunicorn_workers),
                "--threads",
                str(ARGS.gunicorn_threads),
                "--bind",
                f"127.0.0.1:{port}",
                "app:create_app()",
            ],
        )

        def up():
            try:
                return requests.get(base + "/api/v1/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        common.wait_until(up, 60, interval=0.2, message="gunicorn")
        s = requests.Session()
        token = csrf_token(s.get(base + "/login", timeout=10).text)
        r = s.post(
            base + "/login",
            data={"email": STAFF_EMAIL, "password": STAFF_PASSWORD, "csrf_token": token or ""},
            allow_redirects=False,
            timeout=10,
        )
        if r.status_code not in (302, 303):
            raise RuntimeError(f"login failed: {r.status_code} {r.text[:200]}")
        for _ in range(ARGS.warmup * ARGS.gunicorn_workers):
            r = s.get(base + POLL_PATH, headers=POLL_HEADERS, timeout=30)
            check_partial(r.status_code, r.text)
        samples = []
        for _ in range(ARGS.requests):
            t = time.perf_counter()
            r = s.get(base + POLL_PATH, headers=POLL_HEADERS, timeout=30)
            _ = r.content
            samples.append(time.perf_counter() - t)
        return stats_ms(samples)
    finally:
        procs.stop_all()


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def explain_pg():
    """Plans of the partial's two main statements on PostgreSQL."""
    import psycopg2

    conn = psycopg2.connect(common.database_url(PG_DB))
    out = {}
    statuses = "('queued','running','retry_wait','waiting_callback','waiting_task','manual')"
    queries = {
        "count": f'SELECT COUNT(1) FROM (SELECT 1 FROM "operation" AS "t1" WHERE ("t1"."status" IN {statuses})) AS "_wrapped"',
        "page": (
            'SELECT "t1".*, "t2".* FROM "operation" AS "t1" LEFT OUTER JOIN "processing_module" AS "t2" '
            f'ON ("t1"."module_id" = "t2"."id") WHERE ("t1"."status" IN {statuses}) '
            'ORDER BY "t1"."created_at" DESC, "t1"."id" DESC LIMIT 25 OFFSET 0'
        ),
        "counts_by_status": (
            'SELECT "t1"."status", COUNT("t1"."id") AS "n" FROM "operation" AS "t1" '
            f'WHERE ("t1"."status" IN {statuses}) GROUP BY "t1"."status"'
        ),
    }
    with conn.cursor() as cur:
        for name, sql in queries.items():
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            out[name] = [r[0] for r in cur.fetchall()]
    conn.close()
    return out


def run_backend(backend):
    url = common.database_url(PG_DB) if backend == "postgres" else SQLITE_URL
    env = dict(os.environ)
    env["DATABASE_URL"] = url
    os.environ["DATABASE_URL"] = url
    if backend == "postgres":
        common.recreate_database(PG_DB)
    app = create_app({"DATABASE_URL": url})
    init_db(url)
    result = {"backend": backend, "database_url": url}
    with app.app_context(), database.connection_context():
        schema.upgrade()
        t = time.monotonic()
        result["populate"] = populate(ARGS.done, ARGS.open)
        result["populate"]["total_s"] = round(time.monotonic() - t, 1)
    print(f"  {backend}: data in {result['populate']['total_s']} s", flush=True)
    if "client" in ARGS.servers:
        result["test_client"] = bench_test_client(app)
        tc = result["test_client"]
        print(
            f"  {backend} test client: p50 {tc['p50_ms']} p95 {tc['p95_ms']} p99 {tc['p99_ms']} ms"
            f" (CPU of this process per request, p50: {tc['python_cpu_ms_p50']} ms)",
            flush=True,
        )
    if backend == "postgres":
        result["explain"] = explain_pg()
    if "gunicorn" in ARGS.servers:
        result["gunicorn"] = bench_gunicorn(env)
        g = result["gunicorn"]
        print(
            f"  {backend} gunicorn: p50 {g['p50_ms']} p95 {g['p95_ms']} p99 {g['p99_ms']} ms",
            flush=True,
        )
    if database.obj is not None and not database.is_closed():
        database.close()
    return result


def main():
    info = common.machine_info()
    print(
        f"Current operations partial: {ARGS.done} done + {ARGS.open} open operations, "
        f"{ARGS.requests} requests each",
        flush=True,
    )
    results = []
    try:
        for backend in ARGS.backends.split(","):
            results.append(run_backend(backend.strip()))
    finally:
        if not ARGS.keep:
            common.drop_database(PG_DB)
            shutil.rmtree(TMP, ignore_errors=True)
    rows = []
    for r in results:
        for server in ("test_client", "gunicorn"):
            if server in r:
                s = r[server]
                rows.append(
                    [
                        r["backend"],
                        server,
                        s["n"],
                        s["p50_ms"],
                        s["p95_ms"],
                        s["p99_ms"],
                        s["max_ms"],
                        "yes" if s["p95_ms"] < 50 else "NO",
                    ]
                )
    print()
    print(
        common.table(
            rows,
            [
                "backend",
                "server",
                "requests",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "p95 < 50 ms",
            ],
        )
    )
    for r in results:
        if "test_client" in r:
            print(f"\nSQL per partial request ({r['backend']}):\n{r['test_client']['sql_report']}")
            fp = r["test_client"]["full_page"]
            print(
                f"full page GET /operations ({r['backend']}, test client, 20 requests): "
                f"p50 {fp['p50_ms']} p95 {fp['p95_ms']} ms"
            )
    path = common.write_result(
        "operations-page", {"args": vars(ARGS), "machine": info, "results": results}
    )
    print(f"\nresults: {path}")
    if ARGS.keep:
        print(f"kept: PostgreSQL database {PG_DB}, SQLite {SQLITE_URL} (remove them by hand)")


if __name__ == "__main__":
    sys.exit(main())
