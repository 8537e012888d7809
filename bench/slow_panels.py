"""Benchmark 3 + 4 of issue 14: slow panels at full concurrency, and scale-out.

    .venv/bin/python -m bench.slow_panels                          # 1 worker process x 64 threads
    .venv/bin/python -m bench.slow_panels --threads 128
    .venv/bin/python -m bench.slow_panels --worker gevent          # dramatiq-gevent, 64 greenlets
    .venv/bin/python -m bench.slow_panels --worker gevent --psycogreen
    .venv/bin/python -m bench.slow_panels --workers 2              # 2 `dramatiq` commands ("2 machines")

Per run, on a fresh database ``provisor_bench`` and a fresh Redis namespace (db 12):

1. ``--workers`` separate ``dramatiq actors --processes 1 --threads C`` commands (or
   ``dramatiq-gevent``: C greenlets), each its own Redis consumer as on two machines, and
   ``provisor scheduler`` start as real processes;
2. a sandbox module with ``latency_ms`` 2,000 (every module call sleeps 2 s), a VPS tariff
   (its item is created by the workers first) and 1,000 unpaid orders are made through
   the services layer (not measured);
3. the workers are stopped (SIGSTOP), all orders are paid (``orders.mark_paid``, one
   transaction each, as the payment webhook does), the workers are continued (SIGCONT);
4. time = last ``operation.finished_at`` - SIGCONT, read from the database, against the
   ideal ``orders x latency / (C x workers)``; the run also waits for every welcome email;
5. peak RSS (VmHWM) of each worker process, the most PostgreSQL connections of the
   benchmark database seen at once (pg_stat_activity, sampled every 0.2 s), and the
   most attempts in flight at once (from the attempts' own start and end times);
6. exactly-once counts: attempts per operation (and their outcomes), sandbox resources
   per service (the simulated panel's rows: one per creation), welcome emails per
   service, and how many attempts each worker process ran (``attempt.worker``).

Each figure comes with the load average at the start and at the end of the run.
"""

import argparse
import os
import signal
import sys
import threading
import time

from bench import common


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--orders", type=int, default=1000)
    p.add_argument("--latency-ms", type=int, default=2000)
    p.add_argument("--threads", type=int, default=64, help="C: threads (greenlets) per process")
    p.add_argument("--workers", type=int, default=1, help="worker commands (Redis consumers)")
    p.add_argument("--worker", choices=("threads", "gevent"), default="threads")
    p.add_argument("--psycogreen", action="store_true", help="gevent: make psycopg2 cooperative")
    p.add_argument("--pool-size", type=int, default=None, help="PROVISOR_DB_POOL_SIZE")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--tag", default="", help="a label stored with the results")
    return p.parse_args()


ARGS = parse_args()
NAMESPACE = f"provisor-bench-slow-{os.getpid()}"
_extra = {"PROVISOR_DB_POOL_SIZE": ARGS.pool_size} if ARGS.pool_size else {}
ENV = common.bench_env(common.database_url(), namespace=NAMESPACE, **_extra)

from app import create_app, schema  # noqa: E402
from app.db import database  # noqa: E402


def loadavg():
    with open("/proc/loadavg") as fh:
        return " / ".join(fh.read().split()[:3])


class Sampler(threading.Thread):
    """Every 0.2 s: each worker's VmRSS, and the connections to the benchmark database."""

    def __init__(self, pids, interval=0.2):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.max_rss = dict.fromkeys(pids, 0.0)
        self.max_conns = 0
        self.stopping = threading.Event()

    def run(self):
        import psycopg2

        conn = psycopg2.connect(common.database_url())
        conn.autocommit = True
        try:
            while not self.stopping.is_set():
                for pid in self.pids:
                    self.max_rss[pid] = max(self.max_rss[pid], common.status_kb(pid, "VmRSS") or 0)
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()"
                    )
                    self.max_conns = max(self.max_conns, cur.fetchone()[0])
                self.stopping.wait(self.interval)
        finally:
            conn.close()

    def stop(self):
        self.stopping.set()
        self.join()


_poll = None


def q(sql, *params, all_rows=False):
    global _poll
    import psycopg2

    if _poll is None or _poll.closed:
        _poll = psycopg2.connect(common.database_url())
        _poll.autocommit = True
    with _poll.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if all_rows else cur.fetchone()


def start_workers(procs):
    if ARGS.worker == "gevent":
        exe = f"{common.BIN}/dramatiq-gevent"
        target = "bench.gevent_actors" if ARGS.psycogreen else "actors"
    else:
        exe, target = f"{common.BIN}/dramatiq", "actors"
    children = []
    for i in range(ARGS.workers):
        argv = [exe, target, "--processes", "1", "--threads", str(ARGS.threads)]
        proc = procs.start(f"worker{i}", argv)
        children.append(common.worker_child(proc.pid))
    return children


def setup(app):
    from app.services import orders

    _, tariff, clients = common.sandbox_catalog(
        app, latency_ms=ARGS.latency_ms, module_name="sandbox-slow", timeout=120
    )
    ids = []
    with app.app_context(), database.connection_context(), database.atomic():
        for i in range(ARGS.orders):
            order = orders.create(
                {"client_id": clients[i % len(clients)].id, "tariff_id": tariff.id}
            )
            ids.append(order.id)
    return ids


def max_in_flight():
    """The most `open` attempts running at the same moment (from their start/end times)."""
    rows = q(
        "SELECT a.started_at, a.finished_at FROM attempt a JOIN operation o "
        "ON o.id = a.operation_id WHERE o.kind = 'open' AND a.finished_at IS NOT NULL",
        all_rows=True,
    )
    events = [(s, 1) for s, _ in rows] + [(f, -1) for _, f in rows]
    events.sort(key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def attempt_times(span):
    """Attempt durations (claim to result, the 2 s call included) and the mean number of
    attempts in flight over the run (sum of their durations / the run's span)."""
    rows = q(
        "SELECT extract(epoch FROM a.finished_at - a.started_at) FROM attempt a "
        "JOIN operation o ON o.id = a.operation_id WHERE o.kind = 'open' "
        "AND a.finished_at IS NOT NULL",
        all_rows=True,
    )
    durations = [float(r[0]) for r in rows]
    lat = [
        float(r[0])
        for r in q(
            "SELECT extract(epoch FROM finished_at - created_at) FROM operation "
            "WHERE kind = 'open' AND finished_at IS NOT NULL",
            all_rows=True,
        )
    ]
    return {
        "attempt_s_p50": round(common.percentile(durations, 50), 3),
        "attempt_s_p95": round(common.percentile(durations, 95), 3),
        "attempt_s_max": round(max(durations), 3),
        "mean_attempts_in_flight": round(sum(durations) / span, 1),
        "operation_created_to_done_p50_s": round(common.percentile(lat, 50), 2),
    }


def exactly_once():
    ops, multi, max_att = q(
        "SELECT count(*), count(*) FILTER (WHERE n > 1), max(n) FROM ("
        "SELECT o.id, count(a.id) AS n FROM operation o LEFT JOIN attempt a "
        "ON a.operation_id = o.id WHERE o.kind = 'open' GROUP BY o.id) t"
    )
    outcomes = dict(
        q(
            "SELECT coalesce(a.outcome, 'running'), count(*) FROM attempt a JOIN operation o "
            "ON o.id = a.operation_id WHERE o.kind = 'open' GROUP BY 1",
            all_rows=True,
        )
    )
    services, res_once, res_other, res_max = q(
        "SELECT count(*), count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n <> 1), "
        "max(n) FROM (SELECT s.id, count(r.id) AS n FROM service s LEFT JOIN sandbox_resource r "
        "ON r.service_id = s.id AND r.kind = 'account' GROUP BY s.id) t"
    )
    resources = q("SELECT count(*) FROM sandbox_resource WHERE kind = 'account'")[0]
    mails_once, mails_other = q(
        "SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n <> 1) FROM ("
        "SELECT s.id, count(e.id) AS n FROM service s JOIN client c ON c.id = s.client_id "
        "LEFT JOIN email e ON e.service_id = s.id GROUP BY s.id) t"
    )
    taken_over = q(
        "SELECT count(*) FROM attempt a JOIN operation o ON o.id = a.operation_id "
        "WHERE o.kind = 'open' AND a.log LIKE '%%already exists: taking it over%%'"
    )[0]
    per_worker = dict(
        q(
            "SELECT a.worker, count(*) FROM attempt a JOIN operation o ON o.id = a.operation_id "
            "WHERE o.kind = 'open' GROUP BY 1 ORDER BY 1",
            all_rows=True,
        )
    )
    return {
        "open_operations": ops,
        "operations_with_more_than_one_attempt": multi,
        "max_attempts_per_operation": max_att,
        "attempt_outcomes": outcomes,
        "services": services,
        "services_with_one_sandbox_resource": res_once,
        "services_with_other_count": res_other,
        "max_sandbox_resources_per_service": res_max,
        "sandbox_open_resources": resources,
        "services_with_one_welcome_email": mails_once,
        "services_with_other_email_count": mails_other,
        "attempts_that_found_the_account_made": taken_over,
        "attempts_per_worker": per_worker,
    }


def run(app, run_no):
    from app.services import orders

    global _poll
    if _poll is not None:
        _poll.close()
        _poll = None
    common.recreate_database()
    common.clean_namespace(NAMESPACE)
    with app.app_context(), database.connection_context():
        schema.upgrade()
    procs = common.Procs(ENV)
    result = {"run": run_no, "load_start": loadavg()}
    try:
        children = start_workers(procs)
        sched = procs.start(
            "scheduler", [f"{common.BIN}/provisor", "scheduler"], PROVISOR_LOG_LEVEL="INFO"
        )
        order_ids = setup(app)
        time.sleep(1.0)
        result["worker_rss_idle_mb"] = [common.status_kb(c, "VmRSS") for c in children]
        cpu0 = {c: common.cpu_seconds(c) for c in children}
        pg0 = common.postgres_cpu()
        for c in children:
            os.kill(c, signal.SIGSTOP)
        with app.app_context(), database.connection_context():
            for order_id in order_ids:
                orders.mark_paid(order_id, by="bench")
        sampler = Sampler(children)
        sampler.start()
        t_cont = time.time()
        for c in children:
            os.kill(c, signal.SIGCONT)
        n = ARGS.orders
        common.wait_until(
            lambda: q("SELECT count(*) FROM service WHERE status = 'active'")[0] >= n,
            ARGS.timeout,
            interval=0.1,
            message="all services active",
        )
        common.wait_until(
            lambda: q("SELECT count(*) FROM email WHERE status = 'outbox'")[0] >= n,
            ARGS.timeout,
            interval=0.1,
            message="all welcome emails",
        )
        time.sleep(0.5)
        sampler.stop()
        import datetime as dt

        last = q("SELECT max(finished_at) FROM operation WHERE kind = 'open'")[0]
        cont = dt.datetime.fromtimestamp(t_cont, dt.UTC).replace(tzinfo=None)
        span = (last - cont).total_seconds()
        ideal = n * ARGS.latency_ms / 1000.0 / (ARGS.threads * ARGS.workers)
        result.update(
            {
                "span_s": round(span, 2),
                "ideal_s": round(ideal, 2),
                "ratio_to_ideal": round(span / ideal, 3),
                "activations_per_s": round(n / span, 2),
                "max_attempts_in_flight": max_in_flight(),
                **attempt_times(span),
                "max_pg_connections": sampler.max_conns,
                "worker_rss_peak_sampled_mb": [round(sampler.max_rss[c], 1) for c in children],
                "worker_rss_hwm_mb": [common.status_kb(c, "VmHWM") for c in children],
                "worker_rss_final_mb": [common.status_kb(c, "VmRSS") for c in children],
                "worker_os_threads": [len(os.listdir(f"/proc/{c}/task")) for c in children],
                "worker_cpu_ms_per_activation": round(
                    sum(common.cpu_seconds(c) - cpu0[c] for c in children) * 1000 / n, 2
                ),
                "postgres_cpu_ms_per_activation": round(
                    (common.postgres_cpu() - pg0) * 1000 / n, 2
                ),
                "exactly_once": exactly_once(),
                "load_end": loadavg(),
            }
        )
        import re

        log = procs.log_text("scheduler")
        result["sweep_resent_operations"] = sum(int(x) for x in re.findall(r"'resent': (\d+)", log))
        result["sweep_reclaimed_operations"] = sum(
            int(x) for x in re.findall(r"'reclaimed': (\d+)", log)
        )
        errors = [
            ln
            for name in procs.procs
            for ln in procs.log_text(name).splitlines()
            if "Traceback" in ln or " ERROR " in ln
        ]
        result["error_lines"] = len(errors)
        result["error_sample"] = errors[:5]
        del sched
    finally:
        procs.stop_all()
    return result


def main():
    app = create_app()
    info = common.machine_info()
    print(
        f"slow panels: {ARGS.orders} orders, latency {ARGS.latency_ms} ms, {ARGS.workers} worker "
        f"command(s) x 1 process x {ARGS.threads} {ARGS.worker}"
        f"{' + psycogreen' if ARGS.psycogreen else ''}, pool "
        f"{ARGS.pool_size or 'default'}",
        flush=True,
    )
    runs = []
    try:
        for run_no in range(1, ARGS.runs + 1):
            r = run(app, run_no)
            runs.append(r)
            eo = r["exactly_once"]
            print(
                f"  run {run_no}: {r['span_s']:.2f} s (ideal {r['ideal_s']:.2f} s, ratio "
                f"{r['ratio_to_ideal']:.3f}), {r['activations_per_s']:.1f}/s, in flight max "
                f"{r['max_attempts_in_flight']} (mean {r['mean_attempts_in_flight']}), attempt p50/p95 "
                f"{r['attempt_s_p50']}/{r['attempt_s_p95']} s, PG connections max {r['max_pg_connections']}, "
                f"RSS peak {r['worker_rss_hwm_mb']} MB, worker CPU "
                f"{r['worker_cpu_ms_per_activation']} ms/act, PG CPU "
                f"{r['postgres_cpu_ms_per_activation']} ms/act, load {r['load_start']} -> "
                f"{r['load_end']}",
                flush=True,
            )
            print(
                f"    ops {eo['open_operations']}, >1 attempt {eo['operations_with_more_than_one_attempt']}"
                f", outcomes {eo['attempt_outcomes']}, sandbox resources {eo['sandbox_open_resources']}"
                f" (services with exactly one: {eo['services_with_one_sandbox_resource']}, other: "
                f"{eo['services_with_other_count']}), one welcome email: "
                f"{eo['services_with_one_welcome_email']} (other {eo['services_with_other_email_count']})"
                f", took over {eo['attempts_that_found_the_account_made']}, per worker {eo['attempts_per_worker']}, sweep re-sent "
                f"{r['sweep_resent_operations']}, reclaimed {r['sweep_reclaimed_operations']}, "
                f"error lines {r['error_lines']}",
                flush=True,
            )
            for line in r["error_sample"]:
                print(f"    log: {line[:200]}")
    finally:
        if _poll is not None:
            _poll.close()
        common.drop_database()
        common.clean_namespace(NAMESPACE)
    spans = [r["span_s"] for r in runs]
    summary = {"span_s_median": common.median(spans), "ideal_s": runs[0]["ideal_s"]}
    summary["ratio_median"] = round(summary["span_s_median"] / summary["ideal_s"], 3)
    print(f"\n  median {summary['span_s_median']} s, ratio to ideal {summary['ratio_median']}")
    tag = f"slow-{ARGS.worker}{'-pg' if ARGS.psycogreen else ''}-c{ARGS.threads}-w{ARGS.workers}"
    path = common.write_result(
        tag, {"args": vars(ARGS), "machine": info, "summary": summary, "runs": runs}
    )
    print(f"results: {path}")


if __name__ == "__main__":
    sys.exit(main())
