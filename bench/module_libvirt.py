"""Benchmark: 100 VPS on libvirt's test driver through one worker process (embedded).

    .venv/bin/python -m bench.module_libvirt [--services 100] [--threads 8]
                                             [--poll-interval 2] [--disk-mode overlay]

Needs libvirtd (Debian ``libvirt-daemon``) and libvirt-python (``pip install -e
'.[libvirt]'``). Embedded mode, as ``provisor serve`` runs: the app on a fresh SQLite file
and the in-process Dramatiq worker (one process, ``--threads`` threads) in this process;
a libvirtd of its own (``tests/support.py: LibvirtDaemon``: unprivileged, its sockets and state
in a temp folder) whose test driver is the host.

One libvirt module (Test connection on), one tariff (1 vCPU, 1 GiB, 10 GiB disk over the
base image; its item checked first), N unpaid orders made beforehand. Then all N are paid
in a tight loop (signed payment webhook through the Flask test client) and the clock runs
until every service is ``active``. Each ``open`` defines its domain, makes its disk and
starts it, then returns ``Result.poll`` (the boot: the root password through the guest
agent and the DHCP lease are checked ``--poll-interval`` seconds later); the check
finishes it.

Reported: time from the first payment to the last service active; open attempts
(poll + done) and their durations; and how busy the worker threads were, sampled every
5 ms from ``app.inflight`` (the attempts running in this process): the average number of
threads inside an attempt over the whole run, the peak, and the thread-seconds spent in
attempts against what holding a thread through each boot wait would have cost
(threads × wall time if every service kept one for its poll interval).

At the end (also on failure or Ctrl-C) the worker is stopped, every domain and volume is
removed, the daemon stopped and the temp folders removed. The JSON goes to
``bench/results/``.
"""

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

log = logging.getLogger("bench.module_libvirt")
PREFIX = "bench-"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--services", type=int, default=100)
    p.add_argument("--threads", type=int, default=8, help="embedded worker threads")
    p.add_argument("--poll-interval", type=float, default=2.0, help="seconds between checks")
    p.add_argument("--disk-mode", choices=("overlay", "copy"), default="overlay")
    p.add_argument("--timeout", type=float, default=300.0, help="for all services, seconds")
    return p.parse_args()


class Sampler:
    """How many threads of this process are inside an attempt, every ``interval`` s."""

    def __init__(self, interval=0.005):
        self.interval = interval
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from app import inflight

        while not self.stop.is_set():
            self.samples.append((time.perf_counter(), len(inflight.running())))
            time.sleep(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def between(self, start, end):
        return [n for t, n in self.samples if start <= t <= end]


def main():
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    log.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    folder = tempfile.mkdtemp(prefix="provisor-bench-lv-")
    os.environ["PROVISOR_INSTANCE_PATH"] = os.path.join(folder, "instance")
    for name in ("DATABASE_URL", "REDIS_URL", "PROVISOR_DATABASE_URL", "PROVISOR_REDIS_URL"):
        os.environ.pop(name, None)

    from tests.support import LIBVIRT_BASE_IMAGE as BASE_IMAGE
    from tests.support import LIBVIRT_NETWORK as NETWORK
    from tests.support import LIBVIRT_POOL as POOL
    from tests.support import LibvirtDaemon

    if not LibvirtDaemon.available():
        sys.exit("needs libvirtd (apt-get install libvirt-daemon) and libvirt-python")

    from app import create_app, embedded, schema
    from app.db import database
    from app.models import Attempt, Operation, Service
    from tests.support import WEBHOOK_SECRET, Api

    undo = [("temp folder", lambda: shutil.rmtree(folder, ignore_errors=True))]
    try:
        daemon = LibvirtDaemon()
        undo.append(("libvirtd", daemon.stop))
        daemon.start()
        undo.append(("domains and volumes", lambda: daemon.cleanup(PREFIX)))
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
        embedded.start_worker(app, threads=args.threads)
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
        module = api.ok(
            "post",
            "/modules",
            {
                "name": "kvm1",
                "type": "libvirt",
                "config": {
                    "uri": daemon.uri,
                    "pool": POOL,
                    "network": NETWORK,
                    "base_image": BASE_IMAGE,
                    "name_prefix": PREFIX,
                    "poll_interval": args.poll_interval,
                    "disk_mode": args.disk_mode,
                },
                "test_connection": True,
                "max_wait": 3600,
            },
        )
        tariff = api.ok(
            "post",
            "/tariffs",
            {
                "name": "VPS 1",
                "product_type": "vps",
                "price": "5",
                "internal_name": "vps-bench",
                "module_ids": [module["id"]],
                "item_settings": {str(module["id"]): {"vcpus": 1, "memory_mib": 1024}},
            },
        )
        deadline = time.monotonic() + 30
        while api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] != "ready":
            if time.monotonic() > deadline:
                sys.exit("the tariff's item is not ready")
            time.sleep(0.05)
        orders = [
            api.order(client["id"], tariff["id"], {"hostname": f"vm{n}.example.com"})
            for n in range(args.services)
        ]
        log.info("%d orders; paying them all", len(orders))
        ids = [order["service_id"] for order in orders]
        with Sampler() as sampler:
            start = time.perf_counter()
            for order in orders:
                code, body = api.pay(order)
                assert code == 200, body
            paid = time.perf_counter()
            limit = time.monotonic() + args.timeout
            with app.app_context(), database.connection_context():
                while True:
                    active = (
                        Service.select()
                        .where(Service.id.in_(ids) & (Service.status == "active"))
                        .count()
                    )
                    if active == len(ids):
                        break
                    stuck = (
                        Operation.select()
                        .where(Operation.service.in_(ids) & (Operation.status == "manual"))
                        .first()
                    )
                    if stuck is not None:
                        sys.exit(f"operation {stuck.id} went to people: {stuck.last_error}")
                    if time.monotonic() > limit:
                        sys.exit(f"only {active} of {len(ids)} active after {args.timeout} s")
                    time.sleep(0.01)
            end = time.perf_counter()
        busy = sampler.between(start, end)
        with app.app_context(), database.connection_context():
            attempts = list(
                Attempt.select()
                .join(Operation)
                .where((Operation.kind == "open") & (Operation.service.in_(ids)))
            )
        durations = [(a.finished_at - a.started_at).total_seconds() for a in attempts]
        outcomes = {}
        for a in attempts:
            outcomes[a.outcome] = outcomes.get(a.outcome, 0) + 1
        domains = daemon.domains(PREFIX)
        assert len(domains) == args.services, len(domains)
        wall = end - start
        thread_seconds = sum(durations)
        result = {
            "benchmark": "module_libvirt",
            "mode": f"embedded (one process, in-process worker × {args.threads} threads, "
            "SQLite), libvirt test driver in a libvirtd of its own",
            "services": args.services,
            "poll_interval_s": args.poll_interval,
            "disk_mode": args.disk_mode,
            "payment_loop_s": round(paid - start, 2),
            "all_active_s": round(wall, 2),
            "open_attempts": outcomes,
            "attempt_ms": {
                "median": round(statistics.median(durations) * 1000, 1),
                "max": round(max(durations) * 1000, 1),
            },
            "threads_in_attempts": {
                "average": round(statistics.mean(busy), 2) if busy else 0,
                "peak": max(busy) if busy else 0,
                "of": args.threads,
                "samples": len(busy),
            },
            "thread_seconds_in_attempts": round(thread_seconds, 2),
            "thread_seconds_if_waits_held_threads": round(
                thread_seconds + args.services * args.poll_interval, 2
            ),
            "domains": len(domains),
            "at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load": os.getloadavg(),
        }
        print(json.dumps(result, indent=2))
        out = os.path.join(ROOT, "bench", "results")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"module_libvirt-{int(time.time())}.json"), "w") as fh:
            json.dump(result, fh, indent=2)
    finally:
        for what, action in reversed(undo):
            try:
                action()
            except Exception:  # noqa: BLE001 - undo the rest all the same
                log.exception("cleaning up the %s failed", what)
            else:
                log.info("cleaned up: %s", what)


if __name__ == "__main__":
    main()
