"""Benchmark: payment → active for the mariadb and postgresql modules (median of N), embedded.

    .venv/bin/python -m bench.module_databases [--types mariadb,postgresql] [--services 20]
                                               [--threads 4] [--postgres machine|cluster]

Embedded mode, as ``provisor serve`` runs out of the box: the app on a fresh SQLite file,
the in-process Dramatiq worker (StubBroker) in this process, and the real database servers
of this machine: MariaDB on 127.0.0.1:3306 (root without password) and PostgreSQL on
127.0.0.1:5432 (user ``postgres``, trusting loopback logins), or with ``--postgres
cluster`` a private PostgreSQL server started here (``tests.support.PostgresCluster``:
initdb in a temp folder, SCRAM passwords, fsync off). On each server the benchmark is a
tenant (``tests.support.MariaDBTenant`` / ``PostgresTenant``): an admin of its own, made
as the tests make it (MariaDB: ALL PRIVILEGES ON *.* WITH GRANT OPTION; PostgreSQL:
CREATEDB CREATEROLE, not a superuser), and its own name prefix and owner tag.

Per server type: one module (Test connection on), one tariff with a connection limit of 5
(its item is checked before timing: ``ensure_item`` creates a trial database and user
and drops them), N orders made beforehand. Then, one service after another (latency, not
throughput): the signed payment webhook is posted (Flask test client) and the clock runs
until the service is ``active`` (the database polled every 2 ms). Reported per type:
median / p90 / min / max of that time, of the module's own part (the attempt of ``open``:
its Attempt row, from the start of the claim to the start of recording the result) and of
the rest (payment → active minus that attempt: the webhook, queueing, recording the result,
the welcome email, the 2 ms polling).

Where the attempt's time goes (medians), timed per operation by wrapping a few functions
in this process while it runs (the worker threads run here; :class:`Split`): in
``app.services.operations`` the claim (``_claim``: a write transaction; the attempt's
clock starts at its beginning), the context (``_context``: service, tariff, client,
item) and ``_save_state`` (the password's encrypted copy, stored before anything is
created: a write transaction); in ``modules.databases.Session`` connecting as the admin
(``__enter__``) and the statements (``run``, the driver's round trip and the log line);
``module_python`` is what is left (password, hashes, names). Per kind of statement
(``CREATE DATABASE <name>``...), the durations the attempt log gives (whole ms per call).

At the end (also on failure or Ctrl-C) the worker is stopped and each tenant's
``cleanup()`` drops every database and user with its prefix and its admin; the private
cluster is stopped and the temp folder removed. The JSON goes to ``bench/results/``.
"""

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TYPES = ("mariadb", "postgresql")
CONNECTION_LIMIT = 5
CALL_START = re.compile(r"^> (\S+) (.*)$")
CALL_END = re.compile(r"^< .* \((\d+) ms\)$")

log = logging.getLogger("bench.module_databases")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--types", default=",".join(TYPES), help="comma-separated: mariadb,postgresql")
    p.add_argument("--services", type=int, default=20, help="per server type")
    p.add_argument("--threads", type=int, default=4, help="embedded worker threads")
    p.add_argument("--timeout", type=float, default=30.0, help="per service, seconds")
    p.add_argument(
        "--postgres",
        choices=("machine", "cluster"),
        default="machine",
        help="the machine's server on 127.0.0.1:5432, or a private one started here",
    )
    args = p.parse_args()
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    unknown = set(args.types) - set(TYPES)
    if unknown or not args.types:
        p.error(f"--types: one or more of {', '.join(TYPES)}")
    return args


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def reachable(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def statement_kind(sql):
    """A statement without its names and values: ``CREATE DATABASE <name>``,
    ``SELECT … FROM mysql.global_priv``."""
    words = sql.split()
    if words and words[0].upper() == "SELECT":
        found = re.search(r"\bFROM\s+([\w.]+)", sql)
        return f"SELECT … FROM {found.group(1)}" if found else " ".join(words[:2])
    kept = []
    for word in words[:4]:
        if word[0] in "`\"'":
            kept.append("<name>")
            break
        kept.append(word.rstrip(";"))
    return " ".join(kept)


def remote_calls(text):
    """``[(method, target, ms), ...]`` from an attempt log."""
    calls, pending = [], None
    for line in text.splitlines():
        start = CALL_START.match(line)
        if start:
            pending = start.groups()
            continue
        end = CALL_END.match(line)
        if end and pending:
            calls.append((pending[0], pending[1], int(end.group(1))))
            pending = None
    return calls


def _operation_of(session):
    operation = getattr(session.ctx, "operation", None)  # None: Test connection
    return getattr(operation, "id", None)


class Split:
    """Milliseconds spent per operation id in a few functions, wrapped while the benchmark
    runs (the worker threads run in this process): (module, owner, function, label, the
    operation id from the arguments)."""

    TARGETS = (
        ("app.services.operations", None, "_claim", "claim", lambda a: a[0]),
        ("app.services.operations", None, "_context", "context", lambda a: a[0].id),
        ("app.services.operations", None, "_save_state", "save_state", lambda a: a[0]),
        ("modules.databases", "Session", "__enter__", "connect", lambda a: _operation_of(a[0])),
        ("modules.databases", "Session", "run", "statements", lambda a: _operation_of(a[0])),
    )
    LABELS = tuple(target[3] for target in TARGETS)

    def __init__(self):
        self.ms = defaultdict(lambda: defaultdict(float))
        self.originals = []

    def install(self):
        import importlib

        for module_name, owner_name, name, label, key in self.TARGETS:
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name) if owner_name else module
            original = getattr(owner, name)
            self.originals.append((owner, name, original))
            setattr(owner, name, self._timed(label, original, key))

    def _timed(self, label, original, key):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.ms[key(args)][label] += (time.perf_counter() - start) * 1000

        return timed

    def remove(self):
        for owner, name, original in reversed(self.originals):
            setattr(owner, name, original)
        self.originals = []


def start_servers(types, postgres, stack):
    """The tenants (with their admins) of the servers measured; ``stack`` collects what
    must be undone, newest first."""
    from tests.support import MARIADB, MariaDBTenant, PostgresCluster, PostgresTenant

    tenants = {}
    if "mariadb" in types:
        if not reachable(MARIADB["host"], MARIADB["port"]):
            sys.exit("MariaDB is not reachable on 127.0.0.1:3306")
        tenant = MariaDBTenant()
        stack.append(("MariaDB tenant", tenant.cleanup))
        tenant.make_admin()
        log.info("MariaDB: admin %s, names %s*", tenant.admin_user, tenant.prefix)
        tenants["mariadb"] = tenant
    if "postgresql" in types:
        cluster = None
        if postgres == "cluster":
            if not PostgresCluster.available():
                sys.exit("PostgreSQL's initdb is not installed (apt-get install postgresql)")
            # a folder of its own in /tmp: the postgres user cannot enter ``folder``
            pg_folder = tempfile.mkdtemp(prefix="provisor-bench-pg-")
            stack.append(("PostgreSQL folder", lambda: shutil.rmtree(pg_folder, True)))
            cluster = PostgresCluster(pg_folder)
            stack.append(("PostgreSQL cluster", cluster.stop))
            cluster.start()
        elif not reachable("127.0.0.1", 5432):
            sys.exit("PostgreSQL is not reachable on 127.0.0.1:5432 (or use --postgres cluster)")
        tenant = PostgresTenant(cluster)
        stack.append(("PostgreSQL tenant", tenant.cleanup))
        tenant.make_admin()
        log.info("PostgreSQL: admin %s, names %s*", tenant.admin_user, tenant.prefix)
        tenants["postgresql"] = tenant
    return tenants


def server_version(tenant):
    if tenant.type_id == "mariadb":
        return "MariaDB " + tenant.sql("SELECT VERSION()")[0][0].split("-MariaDB")[0]
    return "PostgreSQL " + tenant.sql("SHOW server_version")[0][0].split()[0]


def main():
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    log.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    folder = tempfile.mkdtemp(prefix="provisor-bench-db-")
    os.environ["PROVISOR_INSTANCE_PATH"] = os.path.join(folder, "instance")
    for name in ("DATABASE_URL", "REDIS_URL", "PROVISOR_DATABASE_URL", "PROVISOR_REDIS_URL"):
        os.environ.pop(name, None)

    from app import create_app, embedded, schema
    from app.db import database
    from app.models import Attempt, Operation, Service
    from tests.support import WEBHOOK_SECRET, Api

    undo = [("temp folder", lambda: shutil.rmtree(folder, ignore_errors=True))]
    try:
        tenants = start_servers(args.types, args.postgres, undo)
        app = create_app(
            {
                "DATABASE_URL": f"sqlite:///{folder}/provisor.sqlite3",
                "SECRET_KEY": "bench-secret",
                "PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "ARGON2_TIME_COST": 1,
                "ARGON2_MEMORY_COST": 1024,
            }
        )
        with app.app_context():
            schema.upgrade()
        split = Split()
        split.install()
        undo.append(("wrapped functions", split.remove))
        embedded.start_worker(app, threads=args.threads)
        # stopped before the tenants drop what the operations made
        undo.append(("worker", embedded.stop_worker))
        with app.app_context(), database.connection_context():
            from app.services import accounts

            accounts.create_user(
                {"email": "bench@example.com", "name": "Bench", "password": "bench-password"},
                role="admin",
            )
            token = accounts.create_token("bench@example.com")
        api = Api(app.test_client(), token)
        client = api.ok("post", "/clients", {"name": "Bench", "email": "client@example.com"})

        results = {}
        for type_id, tenant in tenants.items():
            module = api.ok(
                "post",
                "/modules",
                {
                    "name": type_id,
                    "type": type_id,
                    "config": tenant.config(),
                    "test_connection": True,
                },
            )
            tariff = api.ok(
                "post",
                "/tariffs",
                {
                    "name": f"Database {type_id}",
                    "product_type": "database",
                    "price": "3",
                    "internal_name": f"db-bench-{type_id}",
                    "module_ids": [module["id"]],
                    "item_settings": {str(module["id"]): {"connection_limit": CONNECTION_LIMIT}},
                },
            )
            deadline = time.monotonic() + 30
            while True:
                item = api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]
                if item["status"] == "ready":
                    break
                if item["status"] in ("failed", "manual") or time.monotonic() > deadline:
                    sys.exit(f"{type_id}: the tariff's item is {item['status']}: {item}")
                time.sleep(0.05)
            log.info(
                "%s: module %s, item ready; timing %d services",
                type_id,
                module["id"],
                args.services,
            )
            orders = [api.order(client["id"], tariff["id"], {}) for _ in range(args.services)]

            totals, module_times, logs, parts_timed = [], [], [], []
            for order in orders:
                start = time.perf_counter()
                code, body = api.pay(order)
                assert code == 200, body
                limit = time.monotonic() + args.timeout
                with app.app_context(), database.connection_context():
                    while Service.get_by_id(order["service_id"]).status != "active":
                        if time.monotonic() > limit:
                            sys.exit(f"service {order['service_id']} not active: {body}")
                        time.sleep(0.002)
                    totals.append(time.perf_counter() - start)
                    attempt = (
                        Attempt.select()
                        .join(Operation)
                        .where(Operation.id == body["operation_id"])
                        .get()
                    )
                    module_times.append((attempt.finished_at - attempt.started_at).total_seconds())
                    logs.append(attempt.log)
                    parts_timed.append(dict(split.ms[body["operation_id"]]))
            databases, users = tenant.names()
            assert len(databases) == args.services, databases
            assert len(users) == args.services, users
            results[type_id] = {
                "server": server_version(tenant)
                + (" (private cluster)" if getattr(tenant, "cluster", None) else ""),
                "payment_to_active_ms": summary(totals),
                "module_open_ms": summary(module_times),
                "outside_attempt_ms": summary(
                    [t - m for t, m in zip(totals, module_times, strict=True)]
                ),
                "module_breakdown": breakdown(module_times, logs, parts_timed),
            }
        result = {
            "benchmark": "module_databases",
            "mode": f"embedded (in-process worker, {args.threads} threads, SQLite)",
            "services": args.services,
            "connection_limit": CONNECTION_LIMIT,
            "types": results,
            "at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load": os.getloadavg(),
        }
        print(json.dumps(result, indent=2))
        out = os.path.join(ROOT, "bench", "results")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"module_databases-{int(time.time())}.json"), "w") as fh:
            json.dump(result, fh, indent=2)
    finally:
        for what, action in reversed(undo):
            try:
                action()
            except Exception:  # noqa: BLE001 - undo the rest all the same
                log.exception("cleaning up the %s failed", what)
            else:
                log.info("cleaned up: %s", what)


def summary(seconds):
    ms = [s * 1000 for s in seconds]
    return {
        "median": round(statistics.median(ms), 1),
        "p90": round(percentile(ms, 0.9), 1),
        "min": round(min(ms), 1),
        "max": round(max(ms), 1),
    }


def breakdown(module_times, logs, parts_timed):
    """Where the ``open`` attempt's time goes, medians over the services (ms): the
    engine's claim, context and ``save_state``, connecting, the statements (timed by
    :class:`Split`), and the rest: the module's own Python. Per kind of statement, from
    the attempt log (whole milliseconds per call)."""
    parts = defaultdict(list)
    kinds = defaultdict(list)
    for seconds, text, timed in zip(module_times, logs, parts_timed, strict=True):
        sql = [
            (statement_kind(target), ms)
            for method, target, ms in remote_calls(text)
            if method == "SQL"
        ]
        parts["statements_count"].append(len(sql))
        for label in Split.LABELS:
            parts[label].append(timed.get(label, 0.0))
        parts["module_python"].append(seconds * 1000 - sum(timed.values()))
        for kind, ms in sql:
            kinds[kind].append(ms)
    found = {name: round(statistics.median(values), 1) for name, values in parts.items()}
    found["per_statement_log_ms"] = {
        kind: {"median": statistics.median(ms), "max": max(ms)} for kind, ms in kinds.items()
    }
    return found


if __name__ == "__main__":
    main()
