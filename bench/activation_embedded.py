"""Benchmark 1, the embedded default (``python -m bench.activation --mode embedded``).

What ``provisor serve`` runs, in this one process: SQLite (a file in a temp dir, the
project's pragmas), the in-process StubBroker with the project's middleware, the embedded
worker (``app.embedded.start_worker``, ``--threads`` threads) and the scheduler thread.
Per run, on a fresh database:

1. the worker creates the sandbox tariff's item (it proves it is up), then is paused
   (``Worker.pause``);
2. N orders are created and paid (``orders.mark_paid``, one transaction each) while it is
   paused, so their messages wait in the StubBroker's queue (prequeued: nothing competes);
3. the worker resumes; activations/s = N / (last ``operation.finished_at`` − the moment
   it resumed), read from the database once every service is active and every welcome
   email is in the outbox;
4. raw: a no-op actor on the same StubBroker and middleware (an app context and a
   database connect/close per message, as for every actor), M messages sent while the
   worker is paused, then timed from resume until ``broker.join``.

CPU: this process's CPU seconds (``time.process_time``: worker threads, scheduler and the
0.2 s polling of this script) over the drained span, per activation / per message.
``--instrument`` counts SQL statements and commits per message (``bench.sqlcount``).
"""

import atexit
import os
import shutil
import statistics
import tempfile
import time

from bench import common


def _setup(threads):
    tmp = tempfile.mkdtemp(prefix="provisor-bench-embedded-")
    atexit.register(shutil.rmtree, tmp, True)  # the runs' SQLite files
    url = f"sqlite:///{tmp}/provisor.db"
    common.bench_env(url, redis_url=None, WORKER_THREADS=threads)
    return tmp, url


def main(args):
    tmp, url = _setup(args.threads)
    import dramatiq

    import actors
    from app import create_app, embedded, scheduler, schema
    from app.db import database

    if args.instrument:
        from bench import instrumented_actors  # noqa: F401  (adds its middleware)

    @dramatiq.actor(queue_name="bench_noop", max_retries=0)
    def noop(n):
        """Does nothing."""

    from bench import floor_sqlite

    floor = dramatiq.actor(floor_sqlite.activate, queue_name="bench_floor", max_retries=0)

    runs = []
    print(
        f"Provisor activation benchmark, embedded (SQLite, StubBroker, in-process worker x "
        f"{args.threads} threads, scheduler on): {args.orders} orders, {args.runs} run(s)"
    )
    for run_no in range(1, args.runs + 1):
        path = os.path.join(tmp, f"run{run_no}.db")
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
        app = create_app()
        with app.app_context():
            schema.upgrade()
        worker = embedded.start_worker(app, threads=args.threads)
        sweeper = scheduler.Scheduler(app)
        sweeper.start()
        try:
            runs.append(_run(args, app, worker, actors.broker, noop, run_no, database))
        finally:
            sweeper.stop()
            embedded.stop_worker()
            if not database.is_closed():
                database.close()
        if args.floor:
            floor_sqlite.DB_PATH = os.path.join(tmp, f"floor{run_no}.db")
            os.environ["DATABASE_URL"] = f"sqlite:///{floor_sqlite.DB_PATH}"
            app = create_app()
            with app.app_context():
                schema.upgrade()
            worker = embedded.start_worker(app, threads=args.threads)
            try:
                runs[-1].update(_floor_run(args, app, worker, actors.broker, floor, database))
            finally:
                embedded.stop_worker()
                if not database.is_closed():
                    database.close()
    _report(args, runs)


def _catalog(app, database):
    """A sandbox module at zero latency, a VPS tariff and 50 clients (as
    ``bench.activation`` makes them); the worker creates the tariff's item first."""
    _, tariff, clients = common.sandbox_catalog(app)
    return tariff, clients


def _count(database, sql):
    with database.connection_context():
        return database.execute_sql(sql).fetchone()


def _run(args, app, worker, broker, noop, run_no, database):
    from datetime import datetime

    from app.services import orders

    tariff, clients = _catalog(app, database)
    worker.pause()
    ids = common.create_orders(app, tariff, clients, args.orders)
    t0 = time.monotonic()
    with app.app_context(), database.connection_context():
        for order_id in ids:
            if args.instrument:
                from bench import sqlcount

                with sqlcount.measure("mark_paid (bench thread)"):
                    orders.mark_paid(order_id, by="bench")
            else:
                orders.mark_paid(order_id, by="bench")
    pay_s = time.monotonic() - t0
    spy = None
    if args.profile:  # py-spy on this process while the worker drains (idle threads left out)
        import subprocess

        out = os.path.join(common.RESULTS, "profiles", f"activation-embedded-run{run_no}.txt")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        spy = subprocess.Popen(
            [f"{common.BIN}/py-spy", "record", "--pid", str(os.getpid()), "--rate", "250"]
            + ["--format", "raw", "--output", out, "--nonblocking"]
            + (["--gil"] if args.profile_gil else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attaches
    cpu0 = time.process_time()
    resumed = datetime.utcnow()
    m0 = time.monotonic()
    worker.resume()
    n = args.orders

    def done():
        active, outbox = _count(
            database,
            "SELECT (SELECT count(*) FROM service WHERE status = 'active'), "
            "(SELECT count(*) FROM email WHERE status = 'outbox' AND kind = 'welcome')",
        )
        return active >= n and outbox >= n

    common.wait_until(done, timeout=args.timeout, interval=0.2, message="every activation")
    cpu = time.process_time() - cpu0
    if spy is not None:
        import signal

        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
        print(f"  profile: {out}")
    (last,) = _count(database, "SELECT max(finished_at) FROM operation WHERE kind = 'open'")
    last = datetime.fromisoformat(str(last))
    span = (last - resumed).total_seconds()
    attempts, ops = _count(
        database,
        "SELECT (SELECT count(*) FROM attempt a JOIN operation o ON o.id = a.operation_id "
        "WHERE o.kind = 'open'), (SELECT count(*) FROM operation WHERE kind = 'open')",
    )
    instrumented = None
    if args.instrument:
        from bench import sqlcount

        instrumented = sqlcount.snapshot()
        print(sqlcount.report(instrumented))
        sqlcount.reset()
    result = {
        "run": run_no,
        "activations": n,
        "pay_loop_s": round(pay_s, 3),
        "span_s": span,
        "wall_until_seen_s": round(time.monotonic() - m0, 3),
        "activations_per_s": n / span,
        "cpu_ms_per_activation": cpu * 1000 / n,
        "attempts": attempts,
        "operations": ops,
        "load": os.getloadavg(),
        "instrumented": instrumented,
    }
    print(
        f"  run {run_no}: {result['activations_per_s']:.1f} activations/s (span {span:.2f} s, "
        f"attempts {attempts}/{ops}, CPU {result['cpu_ms_per_activation']:.2f} ms/act, "
        f"load {result['load'][0]:.2f})"
    )
    if not args.no_noop:
        worker.pause()
        for i in range(args.noop_messages):
            noop.send(i)
        _, elapsed, cpu = _drain(args, worker, broker, "bench_noop")
        result["noop_msgs_per_s"] = args.noop_messages / elapsed
        result["noop_cpu_ms_per_msg"] = cpu * 1000 / args.noop_messages
        result["ratio"] = result["activations_per_s"] / result["noop_msgs_per_s"]
        print(
            f"  run {run_no}: no-op (same StubBroker and middleware) "
            f"{result['noop_msgs_per_s']:.1f} msgs/s, CPU {result['noop_cpu_ms_per_msg']:.3f} "
            f"ms/msg -> ratio {result['ratio']:.3f}"
        )
    return result


def _drain(args, worker, broker, queue):
    """Resume the paused worker and wait until it has done every message of ``queue``:
    ``(when it resumed (UTC), seconds, CPU seconds of this process)``."""
    from datetime import datetime

    cpu0 = time.process_time()
    resumed = datetime.utcnow()
    t0 = time.monotonic()
    worker.resume()
    broker.join(queue, timeout=int(args.timeout * 1000))
    worker.join()
    return resumed, time.monotonic() - t0, time.process_time() - cpu0


def _floor_run(args, app, worker, broker, floor, database):
    """``bench/floor_sqlite.py``: the same rows hand-written, drained as ``_run`` drains
    the project's messages (queued while the worker is paused, timed from its resume)."""
    from datetime import datetime

    from app.services import orders

    tariff, clients = _catalog(app, database)
    worker.pause()
    ids = common.create_orders(app, tariff, clients, args.orders)
    with app.app_context(), database.connection_context():
        for order_id in ids:
            orders.mark_paid(order_id, by="bench")
        op_ids = [
            r[0]
            for r in database.execute_sql(
                "SELECT id FROM operation WHERE kind = 'open' AND status = 'queued'"
            ).fetchall()
        ]
    broker.flush_all()  # the payments' run_operation messages: the floor runs them instead
    for op_id in op_ids:
        floor.send(op_id)
    resumed, _, cpu = _drain(args, worker, broker, "bench_floor")
    n = args.orders
    (last,) = _count(database, "SELECT max(finished_at) FROM operation WHERE kind = 'open'")
    span = (datetime.fromisoformat(str(last)) - resumed).total_seconds()
    active, emails, attempts, accounts = _count(
        database,
        "SELECT (SELECT count(*) FROM service WHERE status = 'active'), "
        "(SELECT count(*) FROM email WHERE status = 'outbox' AND kind = 'welcome'), "
        "(SELECT count(*) FROM attempt), "
        "(SELECT count(*) FROM sandbox_resource WHERE kind = 'account')",
    )
    result = {
        "floor_activations_per_s": n / span,
        "floor_cpu_ms_per_activation": cpu * 1000 / n,
        "floor_checks": {
            "active": active,
            "emails": emails,
            "attempts": attempts,
            "accounts": accounts,
        },
    }
    print(
        f"  floor: {result['floor_activations_per_s']:.1f} activations/s, CPU "
        f"{result['floor_cpu_ms_per_activation']:.2f} ms/act ({active} active, {emails} "
        f"emails, {attempts} attempts, {accounts} accounts)",
        flush=True,
    )
    return result


def _report(args, runs):
    def med(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    for r in runs:
        if r.get("floor_activations_per_s") and r.get("noop_msgs_per_s"):
            r["floor_ratio"] = r["floor_activations_per_s"] / r["noop_msgs_per_s"]
            r["project_vs_floor"] = r["activations_per_s"] / r["floor_activations_per_s"]
    headers = ["run", "act/s", "CPU ms/act", "no-op msg/s", "no-op CPU ms", "ratio", "load 1m"]
    headers += ["floor act/s", "floor CPU ms", "floor ratio", "Provisor / floor"]
    rows = [
        [
            r["run"],
            f"{r['activations_per_s']:.1f}",
            f"{r['cpu_ms_per_activation']:.2f}",
            f"{r.get('noop_msgs_per_s', 0):.0f}",
            f"{r.get('noop_cpu_ms_per_msg', 0):.3f}",
            f"{r.get('ratio', 0):.3f}",
            f"{r['load'][0]:.2f}",
            f"{r.get('floor_activations_per_s', 0):.1f}",
            f"{r.get('floor_cpu_ms_per_activation', 0):.2f}",
            f"{r.get('floor_ratio', 0):.3f}",
            f"{r.get('project_vs_floor', 0):.3f}",
        ]
        for r in runs
    ]
    print()
    print(common.table(rows, headers))
    summary = {
        "activations_per_s_median": med("activations_per_s"),
        "noop_msgs_per_s_median": med("noop_msgs_per_s"),
        "ratio_median": med("ratio"),
        "cpu_ms_per_activation_median": med("cpu_ms_per_activation"),
        "floor_activations_per_s_median": med("floor_activations_per_s"),
        "floor_cpu_ms_per_activation_median": med("floor_cpu_ms_per_activation"),
        "floor_ratio_median": med("floor_ratio"),
        "project_vs_floor_median": med("project_vs_floor"),
    }
    for key, value in summary.items():
        print(f"  {key}: {value:.3f}" if value is not None else f"  {key}: -")
    path = common.write_result(
        f"activation-embedded-t{args.threads}{'-instr' if args.instrument else ''}",
        {
            "args": vars(args),
            "machine": common.machine_info(),
            "git": common.git_revision(),
            "runs": runs,
            "summary": summary,
        },
    )
    print(f"\nresults: {path}")
