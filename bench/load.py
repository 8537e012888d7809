"""Benchmark: many clients, each with several keep-alive connections, against a real Provisor.

    .venv/bin/python -m bench.load [--clients 50] [--connections 2] [--duration 60]
                                   [--warmup 15] [--runs 3] [--targets embedded,gunicorn]
                                   [--think 1.0] [--poll 1.0] [--serve-arg=--threads=16]

Each **client** is a staff member at a browser: ``--connections`` keep-alive connections
(one ``requests.Session`` each, one connection per session), sharing one login cookie.

- The first connection does **actions**, one after another, with an exponential think time
  of mean ``--think`` seconds (0: none, a closed loop) between them; by weight:
  a full **page** (``/operations``, ``/services``, ``/tasks``, ``/orders``, ``/clients``)
  4; an **order** through the API (bearer token, as a billing system would) followed by
  its **pay**ment through the signed payment webhook (the service is then set up by the
  worker: a sandbox module at zero latency) 2; the **service** page of one of its orders 2.
  Every 50th action it logs in again on the same connection with a fresh cookie jar (as
  another browser would; **login**: the real form, CSRF token, argon2 at the deployed
  cost).
- Every other connection **polls** the Current operations partial as the page's
  ``#operations-live`` element does (``HX-Request``, ``HX-Target: operations-live``),
  every ``--poll`` seconds (0: back to back).

Clients log in during the warm-up (started over its first 5 seconds); requests started in
the ``--duration`` seconds after it are counted. An error is a timeout (30 s), a refused or
reset connection, or an unexpected status (a 503 at the connection limit included).
Reported per run: requests/s, p50/p95/p99 latency (the whole answer read), errors by
kind, the same per request kind, and the server's CPU and memory.

Targets (each run on a fresh instance; with several, they take turns within each run):

- **embedded**: ``provisor serve`` (``tests.support.Instance``: waitress, in-process worker
  and scheduler, SQLite), settings at their defaults (argon2 as deployed) except the
  ``--serve-arg`` options; ``--code DIR`` runs another checkout's code (e.g. the release
  before the connection limit was a setting, to compare in the same run).
- **gunicorn**: the scaled mode on PostgreSQL (``provisor_bench_load``) and Redis (db 12):
  ``gunicorn --workers 4 --threads 4 --keep-alive 60`` (gunicorn's default keep-alive of
  2 s closes idle connections just as a client reuses them), one ``dramatiq actors
  --processes 1 --threads 8``, one ``provisor scheduler``.

Set-up, not measured: a department, a sandbox module, a tariff, a billing client and a
staff member per client, and ``--prefill`` paid orders (their services active). Writes
``bench/results/load-<stamp>.json``; everything lives in temp dirs (and the PostgreSQL
database) removed at the end (``BENCH_KEEP_LOGS=1`` keeps the logs).
"""

import argparse
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import requests
from requests.adapters import HTTPAdapter

from bench import common
from tests.support import WEBHOOK_SECRET, Instance, free_port, signed, wait_for

PG_DB = os.environ.get("BENCH_LOAD_PG_DB", "provisor_bench_load")
PAGES = ["/operations", "/services", "/tasks", "/orders", "/clients"]
POLL_PATH = "/operations?status=&module=&kind=&q=&page=1"
POLL_HEADERS = {
    "HX-Request": "true",
    "HX-Target": "operations-live",
    "HX-Trigger": "operations-live",
    "HX-Current-URL": "/operations",
}
ACTIONS = [("page", 4), ("order", 2), ("service", 2)]
RELOGIN_EVERY = 50
TIMEOUT = 30
STAFF_PASSWORD = "load-staff-password"
# the settings Instance sets for the tests, back to their defaults: a benchmark measures
# Provisor as deployed
DEFAULTS = {
    "SWEEP_INTERVAL": None,
    "SWEEP_GRACE": None,
    "PROXY_RETRY_DELAY": None,
    "PROXY_PULL_INTERVAL": None,
    "PROXY_TIMEOUT": None,
    "ARGON2_TIME_COST": None,
    "ARGON2_MEMORY_COST": None,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--connections", type=int, default=2, help="per client (≥ 1)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--targets",
        default="embedded",
        help="embedded, gunicorn, embedded:DIR (another checkout's code), comma-separated",
    )
    parser.add_argument("--think", type=float, default=1.0, help="mean s between actions")
    parser.add_argument("--poll", type=float, default=1.0, help="s between partial polls")
    parser.add_argument("--prefill", type=int, default=200, help="paid orders made first")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an option for provisor serve, e.g. --serve-arg=--threads=16",
    )
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--gunicorn-threads", type=int, default=4)
    parser.add_argument(
        "--gunicorn-keep-alive",
        type=int,
        default=60,
        help="s an idle connection stays open (gunicorn's default, 2, closes it under a "
        "client about to reuse it: a reset the client would retry, counted as an error)",
    )
    return parser.parse_args(argv)


# --- one client -------------------------------------------------------------------------------


def csrf_token(html):
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    return match.group(1) if match else ""


def one_connection_session(cookies=None):
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("http://", adapter)
    if cookies is not None:
        session.cookies = cookies
    return session


class Recorder:
    """Every request: (start, kind, seconds, outcome) with start relative to the run's t0."""

    def __init__(self, t0):
        self.t0 = t0
        self.rows = []
        self.lock = threading.Lock()

    def call(self, kind, session, method, url, expect, **kw):
        start = time.perf_counter()
        outcome, response = "ok", None
        try:
            response = session.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kw)
            _ = response.content
            if response.status_code not in expect:
                outcome = f"status {response.status_code}"
        except requests.Timeout:
            outcome = "timeout"
        except requests.ConnectionError as exc:
            outcome = "connection error: " + exc.__class__.__name__
        except requests.RequestException as exc:
            outcome = exc.__class__.__name__
        elapsed = time.perf_counter() - start
        with self.lock:
            self.rows.append((start - self.t0, kind, elapsed, outcome))
        return response if outcome == "ok" else None


class Client:
    """One staff member at a browser: ``actions`` on the first connection, ``poll`` on
    each other one (a thread each); a service page before any order is an order."""

    def __init__(self, n, target, setup, recorder, args, stop):
        self.n = n
        self.base = target.url
        self.setup = setup
        self.rec = recorder
        self.args = args
        self.stop = stop
        self.email = setup["staff"][n]
        self.client_id = setup["clients"][n]
        self.rng = random.Random(n)
        self.sessions = [one_connection_session()]
        for _ in range(args.connections - 1):
            self.sessions.append(one_connection_session(self.sessions[0].cookies))
        self.bearer = {"Authorization": f"Bearer {setup['token']}"}
        self.services = []
        self.logged_in = threading.Event()  # the pollers start once the cookie is there

    def login(self, fresh=False):
        """The login form; ``fresh``: with a cookie jar of its own (the connection's
        other users keep theirs)."""
        session = self.sessions[0]
        kept = session.cookies
        if fresh:
            session.cookies = requests.cookies.RequestsCookieJar()
        try:
            page = self.rec.call("login_page", session, "GET", self.base + "/login", (200,))
            token = csrf_token(page.text) if page is not None else ""
            self.rec.call(
                "login",
                session,
                "POST",
                self.base + "/login",
                (302, 303),
                data={"email": self.email, "password": STAFF_PASSWORD, "csrf_token": token},
            )
        finally:
            session.cookies = kept

    def sleep(self, mean, rng=None):
        if mean > 0:
            self.stop.wait((rng or self.rng).expovariate(1.0 / mean))

    def actions(self, start_at):
        self.stop.wait(max(0.0, start_at - time.monotonic()))
        self.login()
        self.logged_in.set()
        done = 0
        names = [a for a, _ in ACTIONS]
        weights = [w for _, w in ACTIONS]
        session = self.sessions[0]
        while not self.stop.is_set():
            self.sleep(self.args.think)
            if self.stop.is_set():
                break
            done += 1
            if done % RELOGIN_EVERY == 0:
                self.login(fresh=True)
                continue
            action = self.rng.choices(names, weights)[0]
            if action == "page":
                path = self.rng.choice(PAGES)
                self.rec.call("page", session, "GET", self.base + path, (200,))
            elif action == "service" and self.services:
                sid = self.rng.choice(self.services[-20:])
                self.rec.call("service", session, "GET", f"{self.base}/services/{sid}", (200,))
            else:
                self.order_and_pay(session)

    def order_and_pay(self, session):
        order = self.rec.call(
            "order",
            session,
            "POST",
            self.base + "/api/v1/orders",
            (201,),
            json={
                "client_id": self.client_id,
                "tariff_id": self.setup["tariff_id"],
                "params": {"domain": f"c{self.n}-{uuid.uuid4().hex[:8]}.example.com"},
            },
            headers=self.bearer,
        )
        if order is None:
            return
        data = order.json()
        raw, headers = signed(
            {
                "payment_id": f"load-{uuid.uuid4().hex}",
                "order_id": data["id"],
                "amount": data["amount"],
                "currency": data["currency"],
            },
            WEBHOOK_SECRET,
        )
        paid = self.rec.call(
            "pay", session, "POST", self.base + "/api/v1/webhooks/payment", (200,), data=raw,
            headers=headers,
        )  # fmt: skip
        if paid is not None:
            self.services.append(data["service_id"])

    def poll(self, index):
        while not (self.logged_in.wait(0.5) or self.stop.is_set()):
            pass
        session = self.sessions[index]
        rng = random.Random(f"{self.n}-{index}")
        while not self.stop.is_set():
            self.rec.call(
                "poll", session, "GET", self.base + POLL_PATH, (200,), headers=POLL_HEADERS
            )
            self.sleep(self.args.poll, rng)

    def close(self):
        for session in self.sessions:
            session.close()


# --- targets ----------------------------------------------------------------------------------


class Embedded:
    """``provisor serve`` on SQLite (tests.support.Instance), settings at their defaults."""

    name = "embedded"

    def __init__(self, args, tmp, code=""):
        self.args = args
        self.instance = Instance(tmp, f"load-{uuid.uuid4().hex[:6]}")
        for key in DEFAULTS:
            self.instance.env.pop(key, None)
        self.instance.env["PROVISOR_LOG_LEVEL"] = "WARNING"
        if code:
            self.instance.env["PYTHONPATH"] = os.path.abspath(code)
            self.serve_args = []  # another release may not take this one's options
        else:
            self.serve_args = args.serve_arg
        self.url = self.instance.url

    def start(self):
        serve_args = []
        for arg in self.serve_args:
            serve_args.extend(arg.split("=", 1) if arg.startswith("--") else [arg])
        self.instance.start(*serve_args)
        self.token = self.instance.token
        self.pids = [self.instance.proc.pid]

    def log(self):
        return self.instance.log()

    def stop(self):
        self.instance.stop()


class Gunicorn:
    """The scaled mode: gunicorn on PostgreSQL, a dramatiq worker and the scheduler."""

    name = "gunicorn"

    def __init__(self, args, tmp):
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.namespace = f"provisor-bench-load-{uuid.uuid4().hex[:8]}"
        self.env = common.bench_env(
            common.database_url(PG_DB),
            namespace=self.namespace,
            PAYMENT_WEBHOOK_SECRET=WEBHOOK_SECRET,
            PYTHONPATH=common.ROOT,
        )
        self.procs = common.Procs(self.env)

    def cli(self, *argv):
        result = subprocess.run(
            [f"{common.BIN}/provisor", *argv],
            env=self.env,
            cwd=common.ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"provisor {argv[0]}: {result.stderr}")
        return result.stdout

    def start(self):
        common.recreate_database(PG_DB)
        self.cli("db", "upgrade")
        self.cli("users", "create-admin", "--email", "admin@bench.example", "--password", "x" * 12)
        self.token = self.cli("tokens", "create", "--email", "admin@bench.example").strip()
        web = self.procs.start(
            "gunicorn",
            [
                f"{common.BIN}/gunicorn",
                "--workers",
                str(self.args.gunicorn_workers),
                "--threads",
                str(self.args.gunicorn_threads),
                "--keep-alive",
                str(self.args.gunicorn_keep_alive),
                "--bind",
                f"127.0.0.1:{self.port}",
                "app:create_app()",
            ],
        )
        self.procs.start(
            "worker",
            [f"{common.BIN}/dramatiq", "actors", "--processes", "1", "--threads", "8"],
        )
        self.procs.start("scheduler", [f"{common.BIN}/provisor", "scheduler"])

        def up():
            try:
                return requests.get(self.url + "/api/v1/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        common.wait_until(up, 60, interval=0.2, message="gunicorn")
        self.pids = [web.pid, *common.descendants(web.pid)]

    def log(self):
        return "\n".join(self.procs.log_text(n) for n in ("gunicorn", "worker", "scheduler"))

    def stop(self):
        self.procs.stop_all()
        common.clean_namespace(self.namespace)
        common.drop_database(PG_DB)


# --- set-up and one run -----------------------------------------------------------------------


def set_up(target, args):
    """Catalog, billing clients, staff members, and the prefilled paid orders."""
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {target.token}"

    def call(method, path, body=None):
        response = api.request(method, f"{target.url}/api/v1{path}", json=body, timeout=60)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    department = call("POST", "/departments", {"name": "Support"})
    module = call(
        "POST",
        "/modules",
        {
            "name": "Sandbox",
            "type": "sandbox",
            "config": {"latency_ms": 0},
            "department_id": department["id"],
        },
    )
    tariff = call(
        "POST",
        "/tariffs",
        {
            "name": "Web S",
            "product_type": "hosting",
            "price": "3.50",
            "internal_name": "web-s",
            "module_ids": [module["id"]],
        },
    )
    wait_for(
        lambda: call("GET", f"/tariffs/{tariff['id']}")["orderable"],
        timeout=60,
        message="the tariff's item",
    )
    clients, staff = [], []
    for n in range(args.clients):
        client = call("POST", "/clients", {"name": f"Client {n}", "email": f"c{n}@example.com"})
        clients.append(client["id"])
        email = f"staff{n}@example.com"
        call(
            "POST",
            "/staff",
            {
                "email": email,
                "name": f"Staff {n}",
                "password": STAFF_PASSWORD,
                "department_ids": [department["id"]],
            },
        )
        staff.append(email)
    service_ids = []
    for n in range(args.prefill):
        order = call(
            "POST",
            "/orders",
            {
                "client_id": clients[n % len(clients)],
                "tariff_id": tariff["id"],
                "params": {"domain": f"prefill{n}.example.com"},
            },
        )
        raw, headers = signed(
            {
                "payment_id": f"prefill-{n}",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            },
            WEBHOOK_SECRET,
        )
        paid = api.post(f"{target.url}/api/v1/webhooks/payment", data=raw, headers=headers)
        if paid.status_code != 200:
            raise RuntimeError(f"prefill payment: {paid.status_code} {paid.text[:300]}")
        service_ids.append(order["service_id"])
    if service_ids:
        wait_for(
            lambda: call("GET", "/services?status=active&limit=0")["total"] >= len(service_ids),
            timeout=300,
            interval=0.5,
            message="the prefilled services to be active",
        )
    return {
        "token": target.token,
        "tariff_id": tariff["id"],
        "clients": clients,
        "staff": staff,
    }


def cpu_of(pids):
    return sum(common.cpu_seconds(p) for p in pids)


def run_once(target, args):
    target.start()
    try:
        setup = set_up(target, args)
        stop = threading.Event()
        t0 = time.perf_counter()
        recorder = Recorder(t0)
        clients = [Client(n, target, setup, recorder, args, stop) for n in range(args.clients)]
        begin = time.monotonic()
        threads = []
        ramp = min(5.0, args.warmup / 2)
        for n, client in enumerate(clients):
            start_at = begin + ramp * n / max(1, len(clients))
            threads.append(threading.Thread(target=client.actions, args=(start_at,), daemon=True))
            for index in range(1, args.connections):
                threads.append(threading.Thread(target=client.poll, args=(index,), daemon=True))
        for thread in threads:
            thread.start()
        time.sleep(args.warmup)
        cpu_before, machine_before = cpu_of(target.pids), common.machine_cpu()
        time.sleep(args.duration)
        cpu_after, machine_after = cpu_of(target.pids), common.machine_cpu()
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT + 5)
        for client in clients:
            client.close()
        rss = max((common.status_kb(p, "VmHWM") or 0) for p in target.pids)
        log = target.log()
        summary = summarise(recorder.rows, args)
        summary["server_cpu_s_per_s"] = round((cpu_after - cpu_before) / args.duration, 3)
        busy = machine_after[0] - machine_before[0]
        total = machine_after[1] - machine_before[1]
        summary["machine_busy"] = round(busy / total, 3) if total else None
        summary["server_peak_rss_mb"] = round(rss, 1)
        summary["server_log_warnings"] = [
            line for line in log.splitlines() if " WARNING " in line or "Traceback" in line
        ][:20]
        summary["loadavg"] = common.machine_info().get("loadavg")
        return summary
    finally:
        target.stop()


def summarise(rows, args):
    window = [r for r in rows if args.warmup <= r[0] < args.warmup + args.duration]
    done = [r for r in window if r[3] == "ok"]
    errors = {}
    for r in window:
        if r[3] != "ok":
            errors[r[3]] = errors.get(r[3], 0) + 1

    def stats(selected):
        ms = [r[2] * 1000 for r in selected]
        return {
            "count": len(selected),
            "p50_ms": round(common.percentile(ms, 50), 1) if ms else None,
            "p95_ms": round(common.percentile(ms, 95), 1) if ms else None,
            "p99_ms": round(common.percentile(ms, 99), 1) if ms else None,
            "max_ms": round(max(ms), 1) if ms else None,
        }

    kinds = sorted({r[1] for r in window})
    return {
        "requests": len(window),
        "requests_per_s": round(len(done) / args.duration, 1),
        **{k: v for k, v in stats(window).items() if k != "count"},
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "by_kind": {k: stats([r for r in window if r[1] == k]) for k in kinds},
        "warmup_logins": stats([r for r in rows if r[0] < args.warmup and r[1] == "login"]),
    }


def main(argv=None):
    args = parse_args(argv)
    if args.connections < 1:
        print("--connections must be at least 1", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONPATH", common.ROOT)  # the children run this checkout
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="provisor-bench-load-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    targets = args.targets.split(",")
    runs = {name: [] for name in targets}
    try:
        for n in range(args.runs):  # the targets take turns: their figures share each run
            for name in targets:
                kind, _, code = name.partition(":")
                target = Gunicorn(args, tmp) if kind == "gunicorn" else Embedded(args, tmp, code)
                summary = run_once(target, args)
                runs[name].append(summary)
                print(
                    f"{name} run {n + 1}: {summary['requests_per_s']} req/s, p50/p95/p99 "
                    f"{summary['p50_ms']} / {summary['p95_ms']} / {summary['p99_ms']} ms, "
                    f"errors {summary['errors']} {summary['errors_by_kind'] or ''} "
                    f"(load {summary['loadavg']})",
                    flush=True,
                )
    finally:
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(tmp, ignore_errors=True)
    results = {name: {"runs": r, "median": medians(r)} for name, r in runs.items() if r}
    rows = []
    for name, result in results.items():
        for n, run in enumerate(result["runs"], 1):
            rows.append(row(f"{name} {n}", run))
        rows.append(row(f"{name} median", result["median"]))
    print()
    print(
        common.table(
            rows,
            ["run", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "server CPU", "RSS MB"],
        )
    )
    for name, result in results.items():
        print(f"\n{name}, per kind (median run's figures are per run; here run 1):")
        kinds = result["runs"][0]["by_kind"]
        print(
            common.table(
                [[k, v["count"], v["p50_ms"], v["p95_ms"], v["p99_ms"]] for k, v in kinds.items()],
                ["kind", "count", "p50 ms", "p95 ms", "p99 ms"],
            )
        )
    path = common.write_result(
        "load",
        {"args": vars(args), "results": results, "machine": common.machine_info()},
    )
    print(f"\nwritten to {path}")
    return 0


def medians(runs):
    keys = ["requests_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "server_cpu_s_per_s"]
    out = {k: common.median([r[k] for r in runs]) for k in keys}
    out["server_peak_rss_mb"] = max(r["server_peak_rss_mb"] for r in runs)
    kinds = runs[0]["by_kind"].keys()
    out["by_kind"] = {
        k: {
            s: common.median([r["by_kind"].get(k, {}).get(s) for r in runs])
            for s in ("count", "p50_ms", "p95_ms", "p99_ms")
        }
        for k in kinds
    }
    return out


def row(name, run):
    return [
        name,
        run["requests_per_s"],
        run["p50_ms"],
        run["p95_ms"],
        run["p99_ms"],
        run["errors"],
        run["server_cpu_s_per_s"],
        run["server_peak_rss_mb"],
    ]


if __name__ == "__main__":
    sys.exit(main())
