"""Benchmark 1 (+3): activations per second with ONE worker process, against raw Dramatiq.

    .venv/bin/python -m bench.activation [--orders 2000] [--threads 8] [--runs 3]

Per run, on a fresh database ``provisor_bench`` (PostgreSQL) and a fresh Redis namespace
(db 12):

1. ``dramatiq actors --processes 1 --threads N`` and ``provisor scheduler`` are started as
   real processes (the scaled setup of tests/test_scaled.py);
2. a sandbox module (zero latency), a tariff and N orders are created through the services
   layer in this process (not measured); the worker creates the tariff's item first;
3. all orders are paid in a tight loop (``orders.mark_paid``, one transaction each, as a
   payment webhook would), and the run waits until every service is ``active`` and every
   welcome email is in the outbox;
   activations/s = N / (last ``operation.finished_at`` - first ``operation.created_at``),
   both read from the database;
4. worker RSS (the dramatiq worker *child* process, /proc/<pid>/status): peak (VmHWM and
   sampled VmRSS) and final;
5. raw Dramatiq: a fresh worker with the same settings runs M no-op messages sent in a
   tight loop, (a) ``bench.noop_actors`` on the project's broker and middleware, (b)
   ``bench.noop_bare`` on a bare Redis broker; msgs/s from the first send until Redis
   has acknowledged every message.

``--mode prequeued`` stops the worker (SIGSTOP) while paying / sending and measures from
SIGCONT instead: the worker's own drain rate without the producer competing for the 2 CPUs.

``--mode embedded`` measures the embedded default instead (SQLite, StubBroker, in-process
worker and scheduler, a no-op actor on the same broker): see ``bench/activation_embedded.py``.

``--floor`` (with ``--mode prequeued`` or ``--mode embedded``) also measures, in each run,
the floor: the same activations made by a hand-written actor (``bench/floor_actors.py``,
``bench/floor_sqlite.py``: the same rows in the same tables, three durable transactions,
no ORM, no app) on a fresh database, drained and timed the same way — the cost of the
state changes themselves, against which the ratios are read.

PostgreSQL's CPU is also split by process (Provisor's backends, autovacuum, the server's
own processes, processes that ended meanwhile, the benchmark's polling connection).

``--instrument`` runs ``bench.instrumented_actors`` (counts SQL statements, round trips,
commits, connections and messages per actor) and ``--profile`` records the worker with py-spy;
both slow the worker down: use them to explain, not to measure.
"""

import argparse
import os
import signal
import sys
import threading
import time

from bench import common

PROFILE_DIR = os.path.join(common.RESULTS, "profiles")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--noop-messages", type=int, default=3000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--mode",
        choices=("live", "prequeued", "embedded"),
        default="live",
        help="embedded: SQLite, StubBroker, in-process worker (bench/activation_embedded.py)",
    )
    p.add_argument("--no-scheduler", action="store_true", help="do not run `provisor scheduler`")
    p.add_argument("--no-noop", action="store_true", help="skip the raw Dramatiq measurement")
    p.add_argument(
        "--floor",
        action="store_true",
        help="prequeued: also run bench.floor_actors (the same state changes, hand-written)",
    )
    p.add_argument("--instrument", action="store_true", help="count queries per message")
    p.add_argument("--profile", action="store_true", help="py-spy record the worker")
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (Python CPU)",
    )
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--tag", default="", help="a label stored with the results")
    return p.parse_args()


ARGS = parse_args()
if ARGS.mode == "embedded":  # the embedded default: no PostgreSQL, no Redis, one process
    from bench import activation_embedded

    activation_embedded.main(ARGS)
    sys.exit(0)
NAMESPACE = f"provisor-bench-{os.getpid()}"
ENV = common.bench_env(common.database_url(), namespace=NAMESPACE)

# only now: the project reads its settings (and picks its broker) from the environment
from app import create_app, schema  # noqa: E402
from app.db import database  # noqa: E402


class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.max_rss = 0.0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            rss = common.status_kb(self.pid, "VmRSS")
            if rss:
                self.max_rss = max(self.max_rss, rss)
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join()


def start_worker(procs, name, module):
    argv = [
        f"{common.BIN}/dramatiq",
        module,
        "--processes",
        "1",
        "--threads",
        str(ARGS.threads),
    ]
    proc = procs.start(name, argv)
    return proc, common.worker_child(proc.pid)


def setup_catalog(app):
    return common.sandbox_catalog(app)


_poll_conn = None


def db_scalar(sql, *params):
    """One row from our own long-lived connection (polling must not add connections)."""
    global _poll_conn
    import psycopg2

    if _poll_conn is None or _poll_conn.closed:
        _poll_conn = psycopg2.connect(common.database_url())
        _poll_conn.autocommit = True
    try:
        with _poll_conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()
    except psycopg2.OperationalError:
        _poll_conn = None
        raise


def activation_figures(n):
    row = db_scalar(
        "SELECT count(*), min(created_at), max(finished_at) FROM operation "
        "WHERE kind = 'open' AND status = 'done'"
    )
    done, first, last = row
    span = (last - first).total_seconds() if done else None
    lat = db_scalar(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) "
        "FROM operation WHERE kind = 'open' AND status = 'done'"
    )
    att = db_scalar(
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
        "a.finished_at - a.started_at)), percentile_cont(0.95) WITHIN GROUP (ORDER BY "
        "extract(epoch FROM a.finished_at - a.started_at)) FROM attempt a "
        "JOIN operation o ON o.id = a.operation_id WHERE o.kind = 'open'"
    )
    other = db_scalar(
        "SELECT (SELECT count(*) FROM service WHERE status = 'active'), "
        "(SELECT count(*) FROM email WHERE status = 'outbox'), "
        "(SELECT count(*) FROM operation WHERE kind = 'open' AND status <> 'done')"
    )
    return {
        "activated": done,
        "first_payment_op_created": first,
        "last_finished": last,
        "span_s": span,
        "activations_per_s": (done / span) if span else None,
        "op_latency_p50_s": lat[0],
        "op_latency_p95_s": lat[1],
        "attempt_rows": att[0],
        "attempt_duration_p50_ms": att[1] * 1000 if att[1] is not None else None,
        "attempt_duration_p95_ms": att[2] * 1000 if att[2] is not None else None,
        "services_active": other[0],
        "emails_outbox": other[1],
        "open_ops_not_done": other[2],
    }


def snapshot(pids):
    snap = {
        "t": time.monotonic(),
        "postgres_cpu": common.postgres_cpu(),
        "postgres_parts": common.postgres_cpu_parts(
            own_pids={db_scalar("SELECT pg_backend_pid()")[0]}
        ),
        "redis_cpu": common.redis_cpu(),
        "bench_cpu": sum(os.times()[:2]),
        "machine": common.machine_cpu(),
        "pg": common.pg_db_stats(),
        "redis_cmds": common.redis_commands(),
    }
    for name, pid in pids.items():
        snap[f"{name}_cpu"] = common.cpu_seconds(pid, with_reaped_children=True)
    return snap


def cpu_split(before, after, n):
    """CPU seconds each part used between two snapshots, and ms per item."""
    wall = after["t"] - before["t"]
    out = {"wall_s": wall}
    for key in after:
        if key.endswith("_cpu") and after[key] is not None and before.get(key) is not None:
            sec = after[key] - before[key]
            out[key] = {"s": round(sec, 3), "ms_per_item": round(sec * 1000 / n, 3)}
    if before.get("postgres_parts") and after.get("postgres_parts"):
        parts = common.postgres_cpu_split(before["postgres_parts"], after["postgres_parts"])
        out["postgres_cpu_parts"] = {
            part: {"s": round(sec, 3), "ms_per_item": round(sec * 1000 / n, 3)}
            for part, sec in parts.items()
        }
    busy = after["machine"][0] - before["machine"][0]
    total = after["machine"][1] - before["machine"][1]
    out["machine_busy_pct"] = round(100 * busy / total, 1) if total else None
    out["machine_busy_cpu_s"] = round(busy, 2)
    pg = common.diff(after["pg"], before["pg"])
    out["pg"] = pg
    out["pg_per_item"] = {k: round(v / n, 2) for k, v in pg.items()}
    cmds = after["redis_cmds"] - before["redis_cmds"]
    out["redis_commands"] = cmds
    out["redis_commands_per_item"] = round(cmds / n, 2)
    return out


def table_stats_diff(before, after):
    """Per table: sequential scans, rows they read, index scans (only tables with work)."""
    out = {}
    for name, row in after.items():
        prev = before.get(name, {})
        d = {k: v - prev.get(k, 0) for k, v in row.items()}
        if any(d.values()):
            out[name] = d
    return out


def py_spy(pid, name):
    os.makedirs(PROFILE_DIR, exist_ok=True)
    out = os.path.join(PROFILE_DIR, f"{name}.txt")
    proc = __import__("subprocess").Popen(
        [
            f"{common.BIN}/py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            out,
            "--nonblocking",
            *(["--gil"] if ARGS.profile_gil else []),
        ],
        stdout=__import__("subprocess").DEVNULL,
        stderr=__import__("subprocess").DEVNULL,
    )
    return proc, out


def _fresh_database(app, *namespaces):
    """A new benchmark database with the schema, and the run's Redis namespaces empty."""
    global _poll_conn
    if _poll_conn is not None:
        _poll_conn.close()
        _poll_conn = None
    common.recreate_database()
    for namespace in (NAMESPACE, *namespaces):
        common.clean_namespace(namespace)
    with app.app_context(), database.connection_context():
        schema.upgrade()


def activation_run(app, run_no):
    from app.services import orders

    _fresh_database(app)
    procs = common.Procs(ENV)
    result = {"run": run_no}
    stats_path = None
    try:
        module_name = "actors"
        if ARGS.instrument:
            module_name = "bench.instrumented_actors"
            os.makedirs(common.RESULTS, exist_ok=True)  # the worker writes its counts there
            stats_path = os.path.join(common.RESULTS, f"instrumented-{os.getpid()}-{run_no}.json")
            procs.env = {**procs.env, "BENCH_STATS_PATH": stats_path}
        worker, child = start_worker(procs, "worker", module_name)
        pids = {"worker": child}
        if not ARGS.no_scheduler:
            # INFO: its "sweep: {... 'resent': N}" lines count the re-sent operations
            sched = procs.start(
                "scheduler", [f"{common.BIN}/provisor", "scheduler"], PROVISOR_LOG_LEVEL="INFO"
            )
            pids["scheduler"] = sched.pid
        t = time.monotonic()
        module, tariff, clients = setup_catalog(app)
        result["worker_boot_and_item_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        order_ids = common.create_orders(app, tariff, clients, ARGS.orders)
        result["orders_created_s"] = round(time.monotonic() - t, 2)
        time.sleep(1.0)
        result["worker_rss_idle_mb"] = common.status_kb(child, "VmRSS")
        sampler = RssSampler(child)
        sampler.start()
        spy = None
        if ARGS.profile:
            spy = py_spy(
                child,
                f"activation-t{ARGS.threads}-{ARGS.mode}{'-gil' if ARGS.profile_gil else ''}"
                f"-run{run_no}",
            )
        tables_before = common.pg_table_stats()
        before = snapshot(pids)
        if ARGS.mode == "prequeued":
            os.kill(child, signal.SIGSTOP)
        t_pay = time.monotonic()
        with app.app_context(), database.connection_context():
            if ARGS.instrument:
                from bench import sqlcount

                sqlcount.reset()
                for order_id in order_ids:
                    with sqlcount.measure("mark_paid (bench process)"):
                        orders.mark_paid(order_id, by="bench")
                result["instrumented_payments"] = sqlcount.snapshot()
            else:
                for order_id in order_ids:
                    orders.mark_paid(order_id, by="bench")
        result["payment_loop_s"] = round(time.monotonic() - t_pay, 3)
        result["payments_per_s"] = round(ARGS.orders / (time.monotonic() - t_pay), 1)
        if ARGS.mode == "prequeued":
            paid = snapshot(
                pids
            )  # the rest is the worker's part: PostgreSQL CPU without the payments
            t_cont_wall = time.time()
            os.kill(child, signal.SIGCONT)

        def all_active():
            row = db_scalar("SELECT count(*) FROM service WHERE status = 'active'")
            return row[0] >= ARGS.orders

        common.wait_until(all_active, ARGS.timeout, interval=0.1, message="all services active")
        result["wall_first_payment_to_all_active_s"] = round(time.monotonic() - t_pay, 3)
        # the welcome emails are part of the work of an activation: wait for them too
        common.wait_until(
            lambda: (
                db_scalar("SELECT count(*) FROM email WHERE status = 'outbox'")[0] >= ARGS.orders
            ),
            ARGS.timeout,
            interval=0.1,
            message="all welcome emails in the outbox",
        )
        result["wall_first_payment_to_all_emails_s"] = round(time.monotonic() - t_pay, 3)
        after = snapshot(pids)
        result["pg_tables"] = table_stats_diff(tables_before, common.pg_table_stats())
        sampler.stop()
        if spy is not None:
            spy[0].send_signal(signal.SIGINT)
            spy[0].wait(timeout=60)
            result["profile"] = spy[1]
        result.update(activation_figures(ARGS.orders))
        if ARGS.mode == "prequeued":
            import datetime as dt

            cont = dt.datetime.fromtimestamp(t_cont_wall, dt.UTC).replace(tzinfo=None)
            span = (result["last_finished"] - cont).total_seconds()
            result["span_from_sigcont_s"] = span
            result["activations_per_s_from_sigcont"] = ARGS.orders / span
        result["cpu"] = cpu_split(before, after, ARGS.orders)
        if ARGS.mode == "prequeued":
            result["cpu_after_payments"] = cpu_split(paid, after, ARGS.orders)
        result["worker_rss_peak_sampled_mb"] = round(sampler.max_rss, 1)
        result["worker_rss_hwm_mb"] = common.status_kb(child, "VmHWM")
        result["worker_rss_final_mb"] = common.status_kb(child, "VmRSS")
        result["worker_threads_os"] = len(os.listdir(f"/proc/{child}/task"))
        if not ARGS.no_scheduler:
            import re

            log = procs.log_text("scheduler")
            resent = [int(n) for n in re.findall(r"'resent': (\d+)", log)]
            reclaimed = [int(n) for n in re.findall(r"'reclaimed': (\d+)", log)]
            emails = [int(n) for n in re.findall(r"'emails_resent': (\d+)", log)]
            result["sweep_resent_operations"] = sum(resent)
            result["sweep_reclaimed_operations"] = sum(reclaimed)
            result["sweep_resent_emails"] = sum(emails)
    finally:
        if stats_path:
            time.sleep(2.5)  # the worker writes its counts every 2 s: let it write the last
        procs.stop_all()
    if stats_path and os.path.exists(stats_path):
        import json

        from bench import sqlcount

        with open(stats_path) as fh:
            result["instrumented"] = json.load(fh)
        print(sqlcount.report(result["instrumented_payments"]))
        print(sqlcount.report(result["instrumented"]["actors"]), flush=True)
    return result


def floor_run(app, run_no):
    """The floor (``bench/floor_actors.py``): the operations the payments queued, drained
    by a hand-written actor making the same rows in three statements; measured as the
    prequeued activation run (from SIGCONT to the last operation finished)."""
    from app.services import orders
    from bench import floor_actors

    _fresh_database(app, floor_actors.NAMESPACE)
    procs = common.Procs(ENV)
    result = {"run": run_no}
    try:
        # Provisor's own worker creates the tariff's item, then goes: the payments' messages
        # stay in its queue (dropped below), the floor's actor drains the operations
        start_worker(procs, "setup-worker", "actors")
        module, tariff, clients = setup_catalog(app)
        procs.stop("setup-worker")
        order_ids = common.create_orders(app, tariff, clients, ARGS.orders)
        with app.app_context(), database.connection_context():
            for order_id in order_ids:
                orders.mark_paid(order_id, by="bench")
        common.clean_namespace(NAMESPACE)
        op_ids = db_scalar(
            "SELECT array_agg(id ORDER BY id) FROM operation "
            "WHERE kind = 'open' AND status = 'queued'"
        )[0]
        worker, child = start_worker(procs, "floor", "bench.floor_actors:broker")
        floor_actors.activate.send(-1)  # warm-up: the worker consumes (nothing to claim)
        wait_drained(common.redis_client(), floor_actors.NAMESPACE, floor_actors.QUEUE, 60)
        time.sleep(0.5)
        os.kill(child, signal.SIGSTOP)
        for op_id in op_ids:
            floor_actors.activate.send(op_id)
        before = snapshot({"worker": child})
        t_cont_wall = time.time()
        os.kill(child, signal.SIGCONT)

        def all_done():
            return db_scalar(
                "SELECT (SELECT count(*) FROM service WHERE status = 'active') >= %s "
                "AND (SELECT count(*) FROM email WHERE status = 'outbox') >= %s",
                ARGS.orders,
                ARGS.orders,
            )[0]

        common.wait_until(all_done, ARGS.timeout, interval=0.1, message="floor: all active")
        after = snapshot({"worker": child})
        result.update(activation_figures(ARGS.orders))
        import datetime as dt

        cont = dt.datetime.fromtimestamp(t_cont_wall, dt.UTC).replace(tzinfo=None)
        result["span_from_sigcont_s"] = (result["last_finished"] - cont).total_seconds()
        result["activations_per_s_from_sigcont"] = ARGS.orders / result["span_from_sigcont_s"]
        result["cpu_after_payments"] = cpu_split(before, after, ARGS.orders)
        result["panel_accounts"] = db_scalar(
            "SELECT count(*) FROM sandbox_resource WHERE kind = 'account'"
        )[0]
        result["ops_with_one_attempt"] = db_scalar(
            "SELECT count(*) FROM (SELECT operation_id FROM attempt GROUP BY operation_id "
            "HAVING count(*) = 1) x"
        )[0]
    finally:
        procs.stop_all()
        common.clean_namespace(floor_actors.NAMESPACE)
    return result


def wait_drained(client, namespace, queue, timeout=600):
    key_q, key_m = f"{namespace}:{queue}", f"{namespace}:{queue}.msgs"

    def drained():
        return client.hlen(key_m) == 0 and client.llen(key_q) == 0

    common.wait_until(drained, timeout, interval=0.005, message=f"{namespace}:{queue} drained")
    return time.monotonic()


def noop_run(kind, run_no):
    """Raw throughput of a no-op actor: ``kind`` is "project" or "bare"."""
    common.clean_namespace(NAMESPACE)
    procs = common.Procs(ENV)
    client = common.redis_client()
    if kind == "project":
        from bench import noop_actors as mod

        namespace, target = NAMESPACE, "bench.noop_actors"
    else:
        from bench import noop_bare as mod

        namespace, target = mod.NAMESPACE, "bench.noop_bare:broker"
    common.clean_namespace(namespace)
    result = {"run": run_no, "kind": kind, "messages": ARGS.noop_messages}
    try:
        worker, child = start_worker(procs, f"noop-{kind}", target)
        # warm up: the worker is consuming once one message went through
        t = time.monotonic()
        mod.noop.send(-1)
        wait_drained(client, namespace, mod.QUEUE, timeout=60)
        result["worker_boot_s"] = round(time.monotonic() - t, 2)
        before = snapshot({"worker": child})
        if ARGS.mode == "prequeued":
            os.kill(child, signal.SIGSTOP)
        t0 = time.monotonic()
        for i in range(ARGS.noop_messages):
            mod.noop.send(i)
        t_sent = time.monotonic()
        if ARGS.mode == "prequeued":
            t0 = time.monotonic()
            os.kill(child, signal.SIGCONT)
        t_done = wait_drained(client, namespace, mod.QUEUE)
        after = snapshot({"worker": child})
        result["send_loop_s"] = round(t_sent - t0, 3) if ARGS.mode == "live" else None
        result["span_s"] = t_done - t0
        result["msgs_per_s"] = ARGS.noop_messages / (t_done - t0)
        result["cpu"] = cpu_split(before, after, ARGS.noop_messages)
        result["worker_rss_final_mb"] = common.status_kb(child, "VmRSS")
    finally:
        procs.stop_all()
        common.clean_namespace(namespace)
    return result


def main():
    app = create_app()
    runs = []
    info = common.machine_info()
    print(
        f"Provisor activation benchmark: {ARGS.orders} orders, 1 worker process x "
        f"{ARGS.threads} threads, mode={ARGS.mode}, scheduler={'off' if ARGS.no_scheduler else 'on'}"
        f"{', INSTRUMENTED' if ARGS.instrument else ''}{', PROFILED' if ARGS.profile else ''}",
        flush=True,
    )
    try:
        for run_no in range(1, ARGS.runs + 1):
            entry = {"run": run_no}
            act = activation_run(app, run_no)
            entry["activation"] = act
            rate = act.get("activations_per_s")
            if ARGS.mode == "prequeued":
                rate = act.get("activations_per_s_from_sigcont")
            entry["activations_per_s"] = rate
            print(
                f"  run {run_no}: {rate:.1f} activations/s "
                f"(payment loop {act['payment_loop_s']} s, span {act['span_s']:.2f} s, "
                f"attempts {act['attempt_rows']}, RSS peak {act['worker_rss_hwm_mb']:.1f} MB "
                f"final {act['worker_rss_final_mb']:.1f} MB)",
                flush=True,
            )
            if ARGS.floor:
                floor = floor_run(app, run_no)
                entry["floor"] = floor
                entry["floor_per_s"] = floor["activations_per_s_from_sigcont"]
                entry["project_vs_floor"] = rate / entry["floor_per_s"]
                cpu = floor["cpu_after_payments"]
                print(
                    f"  run {run_no}: floor {entry['floor_per_s']:.1f} activations/s "
                    f"(worker {cpu['worker_cpu']['ms_per_item']:.2f} ms, PostgreSQL "
                    f"{cpu['postgres_cpu']['ms_per_item']:.2f} ms per activation; "
                    f"{floor['attempt_rows']} attempts, {floor['panel_accounts']} accounts, "
                    f"{floor['emails_outbox']} emails) -> Provisor / floor "
                    f"{entry['project_vs_floor']:.3f}",
                    flush=True,
                )
            if not ARGS.no_noop:
                for kind in ("project", "bare"):
                    noop = noop_run(kind, run_no)
                    entry[f"noop_{kind}"] = noop
                    entry[f"raw_{kind}_msgs_per_s"] = noop["msgs_per_s"]
                    entry[f"ratio_vs_{kind}"] = rate / noop["msgs_per_s"]
                    if ARGS.floor:
                        entry[f"floor_ratio_vs_{kind}"] = entry["floor_per_s"] / noop["msgs_per_s"]
                    print(
                        f"  run {run_no}: no-op ({kind} broker) {noop['msgs_per_s']:.1f} msgs/s "
                        f"-> ratio {entry[f'ratio_vs_{kind}']:.3f}",
                        flush=True,
                    )
            runs.append(entry)
    finally:
        if _poll_conn is not None:
            _poll_conn.close()
        common.drop_database()
        common.clean_namespace(NAMESPACE)
        common.clean_namespace(NAMESPACE + "-bare")

    med = lambda key: common.median([r.get(key) for r in runs])  # noqa: E731
    summary = {
        "activations_per_s_median": med("activations_per_s"),
        "raw_project_msgs_per_s_median": med("raw_project_msgs_per_s"),
        "raw_bare_msgs_per_s_median": med("raw_bare_msgs_per_s"),
        "ratio_vs_project_median": med("ratio_vs_project"),
        "ratio_vs_bare_median": med("ratio_vs_bare"),
        "floor_per_s_median": med("floor_per_s"),
        "floor_ratio_vs_bare_median": med("floor_ratio_vs_bare"),
        "project_vs_floor_median": med("project_vs_floor"),
        "worker_rss_peak_mb_max": max(r["activation"]["worker_rss_hwm_mb"] for r in runs),
        "worker_rss_final_mb_median": common.median(
            [r["activation"]["worker_rss_final_mb"] for r in runs]
        ),
    }
    rows = []
    for r in runs:
        a = r["activation"]
        rows.append(
            [
                r["run"],
                f"{r['activations_per_s']:.1f}",
                f"{r.get('raw_project_msgs_per_s', 0):.0f}",
                f"{r.get('ratio_vs_project', 0):.3f}",
                f"{r.get('raw_bare_msgs_per_s', 0):.0f}",
                f"{r.get('ratio_vs_bare', 0):.3f}",
                f"{a['worker_rss_hwm_mb']:.1f}",
                f"{a['worker_rss_final_mb']:.1f}",
                a["attempt_rows"],
                f"{a['cpu']['worker_cpu']['ms_per_item']:.2f}",
                f"{a['cpu']['postgres_cpu']['ms_per_item']:.2f}",
                (
                    f"{a['cpu_after_payments']['postgres_cpu']['ms_per_item']:.2f}"
                    if a.get("cpu_after_payments")
                    else "-"
                ),
                f"{a['cpu']['pg_per_item'].get('xact_commit', 0):.1f}",
                f"{a['cpu']['pg_per_item'].get('sessions', 0):.2f}",
            ]
        )
    print()
    print(
        common.table(
            rows,
            [
                "run",
                "act/s",
                "raw(project)/s",
                "ratio",
                "raw(bare)/s",
                "ratio",
                "RSS peak MB",
                "RSS final MB",
                "attempts",
                "worker CPU ms/act",
                "PG CPU ms/act",
                "of it after payments",
                "commits/act",
                "PG conns/act",
            ],
        )
    )
    parts = ("provisor", "autovacuum", "ended", "server", "benchmark")
    split_rows = []
    for r in runs:
        a = r["activation"]
        for label, key in (("with payments", "cpu"), ("after payments", "cpu_after_payments")):
            found = (a.get(key) or {}).get("postgres_cpu_parts")
            if found:
                split_rows.append(
                    [r["run"], label] + [f"{found[p]['ms_per_item']:.2f}" for p in parts]
                )
    if split_rows:
        print("\nPostgreSQL CPU ms/act by process (ended: processes that ended meanwhile)")
        print(common.table(split_rows, ["run", "span", *parts]))
    print()
    for key, value in summary.items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    path = common.write_result(
        f"activation-t{ARGS.threads}-{ARGS.mode}{'-instr' if ARGS.instrument else ''}",
        {"args": vars(ARGS), "machine": info, "summary": summary, "runs": runs},
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    sys.exit(main())
