"""Benchmark: one worker's memory over 10,000 activations (issue 14, part 6).

    .venv/bin/python -m bench.memory [--orders 10000] [--step 1000] [--threads 8]
                                     [--tracemalloc]

One ``dramatiq actors --processes 1 --threads 8`` worker (as ``bench.activation``: the
project's Redis broker and middleware, PostgreSQL in a database of its own, a Redis db
and namespace of its own, all removed after), a sandbox module at zero latency, a VPS
tariff and ``--orders`` unpaid orders made through the services layer. Then the orders
are paid ``--step`` at a time (``orders.mark_paid``, as the payment webhook does) and
after each step the benchmark waits until every paid service is active and its welcome
email is in the outbox, waits 1 s, and reads the worker child's ``VmRSS`` and ``VmHWM``
from ``/proc``. Target: RSS after 10,000 activations within 10 % of RSS after 1,000.

``--tracemalloc`` runs ``bench.traced_actors`` instead (the same actors with tracemalloc
on: slower, for finding a growth, not for figures) and prints the allocation sites that
grew most between the snapshots after the first step and after the last.
"""

import argparse
import os
import sys
import tempfile
import time

PID = os.getpid()
os.environ.setdefault("BENCH_PG_DB", f"provisor_bench_memory_{PID}")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

from bench import common  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--orders", type=int, default=10_000)
    p.add_argument("--step", type=int, default=1000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--tracemalloc", action="store_true")
    p.add_argument("--timeout", type=float, default=900.0)
    return p.parse_args()


ARGS = parse_args()
NAMESPACE = f"provisor-bench-memory-{PID}"
TRACE_DIR = tempfile.mkdtemp(prefix="provisor-bench-trace-")
ENV = common.bench_env(common.database_url(), namespace=NAMESPACE, BENCH_TRACE_DIR=TRACE_DIR)

from app import create_app, schema  # noqa: E402
from app.db import database  # noqa: E402


def count(sql):
    import psycopg2

    conn = psycopg2.connect(common.database_url())
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def setup_catalog(app):
    _, tariff, clients = common.sandbox_catalog(app, timeout=120, interval=0.2)
    return tariff, clients


def snapshot_request(name):
    request = os.path.join(TRACE_DIR, f"{name}.req")
    open(request, "w").close()  # noqa: SIM115
    snap = os.path.join(TRACE_DIR, f"{name}.snap")
    common.wait_until(lambda: os.path.exists(snap), 300, interval=0.2, message="a snapshot")
    return snap


def main():
    from app.services import orders

    info = common.machine_info()
    print(f"Worker memory over {ARGS.orders} activations (load {os.getloadavg()})", flush=True)
    app = create_app({"DATABASE_URL": common.database_url()})
    common.recreate_database()
    common.clean_namespace(NAMESPACE)
    with app.app_context(), database.connection_context():
        schema.upgrade()
    procs = common.Procs(ENV)
    module = "bench.traced_actors" if ARGS.tracemalloc else "actors"
    steps, growth = [], None
    try:
        argv = [f"{common.BIN}/dramatiq", module, "--processes", "1", "--threads"]
        worker = procs.start("worker", [*argv, str(ARGS.threads)])
        child = common.worker_child(worker.pid)
        tariff, clients = setup_catalog(app)
        t = time.monotonic()
        with app.app_context(), database.connection_context(), database.atomic():
            order_ids = [
                orders.create({"client_id": clients[i % 50].id, "tariff_id": tariff.id}).id
                for i in range(ARGS.orders)
            ]
        print(f"  {ARGS.orders} orders made in {time.monotonic() - t:.1f} s", flush=True)
        time.sleep(1)
        idle = common.status_kb(child, "VmRSS")
        print(f"  worker idle: RSS {idle} MB", flush=True)
        snaps = []
        t0 = time.monotonic()
        for start in range(0, ARGS.orders, ARGS.step):
            batch = order_ids[start : start + ARGS.step]
            t = time.monotonic()
            with app.app_context(), database.connection_context():
                for order_id in batch:
                    orders.mark_paid(order_id, by="bench")
            paid = start + len(batch)
            common.wait_until(
                lambda paid=paid: (
                    count("SELECT count(*) FROM service WHERE status = 'active'") >= paid
                    and count("SELECT count(*) FROM email WHERE status = 'outbox'") >= paid
                ),
                ARGS.timeout,
                interval=0.2,
                message=f"{paid} services active",
            )
            wall = time.monotonic() - t
            time.sleep(1)
            row = {
                "activations": paid,
                "rss_mb": common.status_kb(child, "VmRSS"),
                "hwm_mb": common.status_kb(child, "VmHWM"),
                "step_s": round(wall, 1),
                "per_s": round(len(batch) / wall, 1),
                "load": os.getloadavg()[0],
            }
            steps.append(row)
            print(
                f"  {paid:>6} activations: RSS {row['rss_mb']} MB, peak {row['hwm_mb']} MB "
                f"({row['per_s']}/s, load {row['load']:.1f})",
                flush=True,
            )
            if ARGS.tracemalloc and (paid == ARGS.step or paid == ARGS.orders):
                snaps.append(snapshot_request(f"after-{paid}"))
        total_s = time.monotonic() - t0
        ops = count("SELECT count(*) FROM operation WHERE kind = 'open' AND status = 'done'")
        attempts = count("SELECT count(*) FROM attempt")
        if len(snaps) == 2:
            import tracemalloc

            first = tracemalloc.Snapshot.load(snaps[0])
            last = tracemalloc.Snapshot.load(snaps[1])
            growth = []
            for stat in last.compare_to(first, "lineno")[:15]:
                growth.append(str(stat))
                print("   ", stat)
    finally:
        procs.stop_all()
        common.drop_database()
        common.clean_namespace(NAMESPACE)
    first = next(s for s in steps if s["activations"] >= min(1000, ARGS.orders))
    last = steps[-1]
    ratio = last["rss_mb"] / first["rss_mb"]
    print()
    print(
        common.table(
            [[s["activations"], s["rss_mb"], s["hwm_mb"], s["per_s"], s["load"]] for s in steps],
            ["activations", "RSS MB", "peak MB", "activations/s", "load"],
        )
    )
    print(
        f"\nRSS after {last['activations']}: {last['rss_mb']} MB, after {first['activations']}: "
        f"{first['rss_mb']} MB -> {ratio:.3f} (target <= 1.10: "
        f"{'met' if ratio <= 1.10 else 'NOT met'}); idle {idle} MB; {ops} open operations "
        f"done, {attempts} attempts, {total_s:.0f} s"
    )
    path = common.write_result(
        "memory",
        {
            "args": vars(ARGS),
            "machine": info,
            "idle_mb": idle,
            "steps": steps,
            "ratio_last_first": round(ratio, 4),
            "operations_done": ops,
            "attempts": attempts,
            "tracemalloc_growth": growth,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    sys.exit(main())
