"""Soak: the audit's fault scenarios one after another, for as long as you like, while
orders keep coming; then the invariants counted over every order.

    .venv/bin/python -m bench.soak [--duration 900] [--rate 2] [--phase 40] [--only a,b]
                                   [--smtp-down 60] [--pg-down 10] [--redis-down 5]
                                   [--endpoint-fault 20] [--workers 2] [--settle 300]

The long version of ``tests/test_faults.py`` (which runs each scenario once, on 6-12
orders, in CI). One scaled-out Provisor (``tests.support.System``: gunicorn 2 × 4, a
``dramatiq actors`` worker of ``--workers`` processes × 4 threads, ``provisor scheduler``)
on a PostgreSQL server started here (``PostgresCluster``, initdb in a temp dir: it gets
stopped and restarted, so it cannot be the machine's), a Redis server started here (killed
with its data), an SMTP server (aiosmtpd) and one http-module panel
(``ModuleEndpoint``, ``--endpoint-delay`` s per call, one creation per idempotency key).
Settings as in the tests: a lease of the module's 2 s timeout + ``LEASE_GRACE`` 2 s, a
sweep every second, mail retries from 1 s (doubling, up to 64 s), the module's retry
delay 1 s and ``max_attempts`` 50 (a long endpoint fault must not send services to people).

A fault of the database or the processes waits (up to 10 s) for a call to the panel in
flight, so that it lands in the middle of an attempt. A thread places ``--rate`` orders a
second (a client of its own each, so that each
welcome email has its own address), retrying while the web answers 503 or nothing, as a
payment provider retries its webhook. Meanwhile the phases, each ``--phase`` s (the SMTP
one ``--smtp-down`` + 15 s), in this order and again until ``--duration`` is over:

 1 ``pg_restart``       PostgreSQL crashes (pg_ctl stop -m immediate) and starts again
 2 ``pg_stop``          PostgreSQL stopped for ``--pg-down`` s, then started
 3 ``redis_kill``       Redis killed (SIGKILL, nothing persisted), started empty after
                        ``--redis-down`` s
 4 ``workers_kill``     the worker processes SIGKILLed 3 times in the phase, a new
                        worker started each time
 5 ``scheduler_kill``   the scheduler SIGKILLed, then the worker too (a new one started);
                        a new scheduler only after 10 s
 6 ``two_schedulers``   a second scheduler for the phase; the worker SIGKILLed mid-phase
 7 ``endpoint_hang``    the panel answers nothing for ``--endpoint-fault`` s
 8 ``endpoint_trickle`` ... one byte every 0.25 s (each read quick, the call endless)
 9 ``endpoint_garbage`` ... bytes that are not JSON
10 ``endpoint_invalid_json`` ... JSON cut short
11 ``smtp_down``        the SMTP server stopped for ``--smtp-down`` s

Then ordering stops and the run waits (up to ``--settle`` s) for every service to be
active. Printed, over all orders and per phase (orders placed while it ran): the
invariants' counts (``System.facts``: services active, ``open`` operations done,
operations left unfinished, services created once / twice / never at the panel, clients
emailed once / twice / never), requests retried after a 503 or a refused connection, and
payment → active latency. Writes ``bench/results/soak-<stamp>.json``; the servers and temp
dirs are removed at the end (``BENCH_KEEP_LOGS=1`` keeps the processes' logs).
"""

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import threading
import time

from bench import common
from tests.support import (
    ModuleEndpoint,
    PostgresCluster,
    RedisServer,
    System,
    all_well,
    free_port,
    start_smtp,
)

PHASES = (
    "pg_restart",
    "pg_stop",
    "redis_kill",
    "workers_kill",
    "scheduler_kill",
    "two_schedulers",
    "endpoint_hang",
    "endpoint_trickle",
    "endpoint_garbage",
    "endpoint_invalid_json",
    "smtp_down",
)
SETTINGS = {
    "LEASE_GRACE": "2",
    "SWEEP_INTERVAL": "1",
    "SWEEP_GRACE": "1",
    "MAIL_RETRY_DELAY": "1",
    "MAIL_TIMEOUT": "2",
    "PROVISOR_LOG_LEVEL": "INFO",
}


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


class Soak:
    def __init__(self, args, folder):
        self.args = args
        self.folder = folder
        self.placed = []  # {"client", "order", "operation_id", "phase"}
        self.refused = []  # orders the web refused (not a 503): (phase, message)
        self.phase = "set-up"
        self.stopping = threading.Event()
        self.names = {"worker": 0, "scheduler": 0}
        self.history = []  # (phase, started, ended)

    # --- set-up ---

    def up(self):
        pg_dir = tempfile.mkdtemp(prefix="provisor-soak-pg-")
        self.pg_dir = pg_dir
        self.pg = PostgresCluster(pg_dir).start()
        self.redis = RedisServer(self.folder).start()
        self.smtp_port = free_port()
        self.smtp_controller, self.smtp = start_smtp(self.smtp_port)
        self.endpoint = ModuleEndpoint(delay=self.args.endpoint_delay)
        self.endpoint.start()
        url = self.pg.create_database("provisor_soak")
        self.system = System(
            pathlib.Path(self.folder), url, self.redis.url, {**SETTINGS, "SMTP_URL": self.smtp.url}
        )
        self.system.up()
        self.system.stop("worker")
        self.worker = self.new_worker()
        self.scheduler = "scheduler"
        _, _, self.tariff, _ = self.system.setup_catalog(
            "http", self.endpoint.config(), retry_delay=1, max_attempts=50
        )

    def new_worker(self):
        self.names["worker"] += 1
        name = f"worker{self.names['worker']}"
        self.system.start_worker(name, processes=self.args.workers)
        return name

    def new_scheduler(self):
        self.names["scheduler"] += 1
        name = f"scheduler{self.names['scheduler']}"
        self.system.start_scheduler(name)
        return name

    def kill_worker(self):
        self.system.stop(self.worker, signal.SIGKILL)
        self.worker = self.new_worker()

    def down(self):
        with contextlib.suppress(Exception):
            self.system.down()
        for stop in (self.endpoint.stop, self.smtp_controller.stop, self.redis.kill):
            with contextlib.suppress(Exception):
                stop()
        with contextlib.suppress(Exception):
            self.pg.stop()
        shutil.rmtree(self.pg_dir, ignore_errors=True)

    # --- orders ---

    def ordering(self):
        interval = 1.0 / self.args.rate
        next_at = time.monotonic()
        while not self.stopping.is_set():
            phase = self.phase
            try:
                placed = self.system.place_order(self.tariff, patience=300)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                self.refused.append((phase, f"{exc.__class__.__name__}: {exc}"[:300]))
                log("order refused:", self.refused[-1])
            else:
                placed["phase"] = phase
                self.placed.append(placed)
            next_at = max(next_at + interval, time.monotonic() - 1)
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    # --- the phases ---

    def pause(self, seconds):
        self.stopping.wait(seconds)

    def calls_in_flight(self, timeout=10):
        """Wait (a while) until the panel is answering a call, so that a fault of the
        processes or the database hits an attempt in the middle of it."""
        deadline = time.monotonic() + timeout
        while self.endpoint.busy == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.endpoint.busy

    def run_phase(self, name):
        a, phase = self.args, self.args.phase
        started = time.monotonic()
        self.phase = name
        if not name.startswith(("endpoint_", "smtp_")):
            self.calls_in_flight()
        log(f"phase {name} ({self.endpoint.busy} calls in flight)")
        if name == "pg_restart":
            self.pg.restart()
        elif name == "pg_stop":
            self.pg.stop()
            self.pause(a.pg_down)
            self.pg.run()
        elif name == "redis_kill":
            self.redis.kill()
            self.pause(a.redis_down)
            self.redis.start()
        elif name == "workers_kill":
            for kill in range(3):
                if kill:
                    self.pause(phase / 4)
                    self.calls_in_flight()
                self.kill_worker()
        elif name == "scheduler_kill":
            self.system.stop(self.scheduler, signal.SIGKILL)
            self.pause(2)
            self.calls_in_flight()
            self.kill_worker()
            self.pause(8)
            self.scheduler = self.new_scheduler()
        elif name == "two_schedulers":
            second = self.new_scheduler()
            self.pause(phase / 2)
            self.calls_in_flight()
            self.kill_worker()
            self.pause(max(0.0, phase - (time.monotonic() - started)))
            self.system.stop(second)
        elif name.startswith("endpoint_"):
            fault = name.removeprefix("endpoint_")
            if fault in ("garbage", "invalid_json"):
                self.endpoint.raw_reply = (
                    b"\x00\x9f<html>garbage\xff"
                    if fault == "garbage"
                    else b'{"status": "done", "remote_id": "acct-'
                )
                fault = "raw"
            self.endpoint.fallback = fault
            self.pause(a.endpoint_fault)
            self.endpoint.fallback = "done"
        elif name == "smtp_down":
            self.smtp_controller.stop()
            self.pause(a.smtp_down)
            self.smtp_controller, _ = start_smtp(self.smtp_port, self.smtp)
            phase = a.smtp_down + 15
        self.pause(max(0.0, phase - (time.monotonic() - started)))
        self.history.append((name, started, time.monotonic()))

    # --- figures ---

    def latencies(self, placed):
        """Payment → active, seconds, from the database (the service's created_at is the
        order's time; the payment follows at once)."""
        import psycopg2

        ids = [p["order"]["service_id"] for p in placed]
        conn = psycopg2.connect(self.system.env["DATABASE_URL"])
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT extract(epoch FROM activated_at - created_at) FROM service "
                "WHERE id = ANY(%s) AND activated_at IS NOT NULL",
                (ids,),
            )
            values = sorted(float(r[0]) for r in cursor.fetchall())
        conn.close()
        return values

    def attempts(self):
        import psycopg2

        conn = psycopg2.connect(self.system.env["DATABASE_URL"])
        with conn.cursor() as cursor:
            cursor.execute("SELECT outcome, count(*) FROM attempt GROUP BY outcome")
            outcomes = dict(cursor.fetchall())
            cursor.execute("SELECT status, count(*) FROM email GROUP BY status")
            emails = dict(cursor.fetchall())
        conn.close()
        return outcomes, emails


def percentile(values, q):
    if not values:
        return None
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=900, help="seconds of faults")
    parser.add_argument("--rate", type=float, default=2.0, help="orders a second")
    parser.add_argument("--phase", type=float, default=40, help="seconds per phase")
    parser.add_argument("--only", default="", help="phases to run (comma-separated)")
    parser.add_argument("--smtp-down", type=float, default=60)
    parser.add_argument("--pg-down", type=float, default=10)
    parser.add_argument("--redis-down", type=float, default=5)
    parser.add_argument("--endpoint-fault", type=float, default=20)
    parser.add_argument("--endpoint-delay", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--settle", type=float, default=300)
    args = parser.parse_args()
    phases = [p for p in args.only.split(",") if p] or list(PHASES)
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    for key in ("DATABASE_URL", "REDIS_URL", "REDIS_NAMESPACE", "SMTP_URL"):
        os.environ.pop(key, None)
        os.environ.pop(f"PROVISOR_{key}", None)
    os.environ["PROVISOR_OUTBOUND_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    if not PostgresCluster.available() or not RedisServer.available():
        sys.exit("needs PostgreSQL's initdb (Debian postgresql) and redis-server")

    folder = tempfile.mkdtemp(prefix="provisor-soak-")
    soak = Soak(args, folder)
    began = time.time()
    try:
        soak.up()
        log(f"up: PostgreSQL :{soak.pg.port}, Redis :{soak.redis.port}, web {soak.system.base}")
        orderer = threading.Thread(target=soak.ordering, daemon=True)
        orderer.start()
        soak.phase = "warm-up"
        soak.pause(10)  # some orders before the first fault
        ends = time.monotonic() + args.duration
        i = 0
        while time.monotonic() < ends:
            soak.run_phase(phases[i % len(phases)])
            i += 1
        soak.phase = "after"
        soak.pause(5)
        soak.stopping.set()
        orderer.join(320)
        log(f"ordering stopped: {len(soak.placed)} orders; settling (up to {args.settle:g} s)")
        settle_start = time.monotonic()
        facts = soak.system.settle(soak.placed, [soak.endpoint], soak.smtp, timeout=args.settle)
        settled_in = time.monotonic() - settle_start
        report(soak, facts, settled_in, began)
        return 0 if all_well(facts) and not soak.refused else 1
    finally:
        soak.down()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print("logs kept in", folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def report(soak, facts, settled_in, began):
    outcomes, emails = soak.attempts()
    by_phase = {}
    for p in soak.placed:
        by_phase.setdefault(p["phase"], []).append(p)
    rows = []
    for phase in ["warm-up", *PHASES, "after"]:
        placed = by_phase.get(phase)
        if not placed:
            continue
        f = soak.system.facts(placed, [soak.endpoint], soak.smtp)
        lat = soak.latencies(placed)
        rows.append(
            {
                "phase": phase,
                "runs": sum(1 for h in soak.history if h[0] == phase),
                **{k: v for k, v in f.items() if k != "unfinished"},
                "latency_p50": percentile(lat, 0.5),
                "latency_p95": percentile(lat, 0.95),
                "latency_max": lat[-1] if lat else None,
            }
        )
    lat = soak.latencies(soak.placed)
    summary = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(began)),
        "minutes": round((time.time() - began) / 60, 1),
        "args": vars(soak.args),
        "facts": facts,
        "all_well": all_well(facts),
        "orders_refused": soak.refused,
        "requests_retried": getattr(soak.system, "retried", 0),
        "settled_in_s": round(settled_in, 1),
        "attempt_outcomes": outcomes,
        "emails": emails,
        "panel_calls": len(soak.endpoint.calls("open")),
        "latency_p50": percentile(lat, 0.5),
        "latency_p95": percentile(lat, 0.95),
        "latency_max": lat[-1] if lat else None,
        "phases": rows,
        "load": os.getloadavg(),
    }
    header = (
        f"{'phase':<22} {'runs':>4} {'orders':>6} {'active':>6} {'done':>5} {'once':>5} "
        f"{'twice':>5} {'never':>5} {'mail1':>5} {'mail2+':>6} {'mail0':>5} "
        f"{'p50 s':>6} {'p95 s':>6} {'max s':>6}"
    )
    print()
    print(header)
    print("-" * len(header))

    def fmt(v):
        return "-" if v is None else f"{v:.1f}"

    for r in rows:
        print(
            f"{r['phase']:<22} {r['runs']:>4} {r['orders']:>6} {r['active']:>6} {r['done']:>5} "
            f"{r['created_once']:>5} {r['created_twice']:>5} {r['not_created']:>5} "
            f"{r['emailed_once']:>5} {r['emailed_twice']:>6} {r['not_emailed']:>5} "
            f"{fmt(r['latency_p50']):>6} {fmt(r['latency_p95']):>6} {fmt(r['latency_max']):>6}"
        )
    print("-" * len(header))
    print(
        f"all: {facts['orders']} orders, {facts['active']} active, {facts['done']} open "
        f"operations done, {facts['unfinished']} operations unfinished, "
        f"{facts['created_once']} created once / {facts['created_twice']} twice / "
        f"{facts['not_created']} never, {facts['emailed_once']} emailed once / "
        f"{facts['emailed_twice']} twice / {facts['not_emailed']} never"
    )
    print(
        f"orders refused: {len(soak.refused)}; requests retried after a 503 or no answer: "
        f"{summary['requests_retried']}; panel calls (open): {summary['panel_calls']}; "
        f"settled {summary['settled_in_s']} s after the last order"
    )
    print(f"attempts by outcome: {outcomes}; emails: {emails}")
    print(
        f"payment → active: p50 {fmt(summary['latency_p50'])} s, "
        f"p95 {fmt(summary['latency_p95'])} s, max {fmt(summary['latency_max'])} s"
    )
    print("ALL WELL" if summary["all_well"] else "NOT ALL WELL")
    os.makedirs(common.RESULTS, exist_ok=True)
    path = os.path.join(common.RESULTS, f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    print("results:", path)


if __name__ == "__main__":
    sys.exit(main())
