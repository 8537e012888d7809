"""Benchmark: payment → active for the powerdns module (median of N), embedded mode.

    .venv/bin/python -m bench.module_powerdns [--services 20] [--threads 4]

Embedded mode, as ``provisor serve`` runs out of the box: the app on a fresh SQLite file,
the in-process Dramatiq worker (StubBroker) in this process, and a real PowerDNS
(``pdns_server`` + sqlite3 backend, started here on free loopback ports with the test
suite's configuration; Debian ``pdns-server pdns-backend-sqlite3``). One powerdns module,
one tariff whose template has 6 records; its item is checked (trial zone) before timing.

For each service, one after another (latency, not throughput): the signed payment webhook
is posted (Flask test client) and the clock runs until the service is ``active`` (the
database polled every 2 ms). Reported: median / p90 / min / max of that time, and of the
module's own part (the attempt of ``open``: two API calls, GET zones?zone= and POST zones).
Afterwards every zone is deleted, PowerDNS stopped and the temp folders removed.
"""

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TEMPLATE = """@ A {ip}
www CNAME @
mail A {ip}
@ MX 10 mail.{domain}
@ TXT "v=spf1 mx -all"
@ CAA 0 issue "letsencrypt.org"
"""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--services", type=int, default=20)
    p.add_argument("--threads", type=int, default=4, help="embedded worker threads")
    p.add_argument("--timeout", type=float, default=30.0, help="per service, seconds")
    return p.parse_args()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main():
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    folder = tempfile.mkdtemp(prefix="provisor-bench-pdns-")
    os.environ["PROVISOR_INSTANCE_PATH"] = os.path.join(folder, "instance")
    for name in ("DATABASE_URL", "REDIS_URL", "PROVISOR_DATABASE_URL", "PROVISOR_REDIS_URL"):
        os.environ.pop(name, None)

    from app import create_app, embedded, schema
    from app.db import database
    from app.models import Attempt, Operation, Service
    from tests.support import WEBHOOK_SECRET, Api, PowerDNS

    if not PowerDNS.available():
        sys.exit("PowerDNS is not installed (apt-get install pdns-server pdns-backend-sqlite3)")
    pdns = PowerDNS(os.path.join(folder, "pdns")).start()
    try:
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
        with app.app_context(), database.connection_context():
            from app.services import accounts

            accounts.create_user(
                {"email": "bench@example.com", "name": "Bench", "password": "bench-password"},
                role="admin",
            )
            token = accounts.create_token("bench@example.com")
        api = Api(app.test_client(), token)
        tag = f"bench-{uuid.uuid4().hex[:6]}"
        module = api.ok(
            "post",
            "/modules",
            {
                "name": "PowerDNS",
                "type": "powerdns",
                "config": {
                    "api_url": pdns.api_url,
                    "api_key": pdns.api_key,
                    "nameservers": "ns1.example.net, ns2.example.net",
                    "owner_tag": tag,
                },
                "test_connection": True,
            },
        )
        tariff = api.ok(
            "post",
            "/tariffs",
            {
                "name": "DNS",
                "product_type": "dns",
                "price": "2",
                "internal_name": "dns-bench",
                "module_ids": [module["id"]],
                "item_settings": {str(module["id"]): {"records": TEMPLATE, "ip": "192.0.2.10"}},
            },
        )
        deadline = time.monotonic() + 30
        while api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] != "ready":
            if time.monotonic() > deadline:
                sys.exit("the tariff's item did not become ready")
            time.sleep(0.05)
        client = api.ok("post", "/clients", {"name": "Bench", "email": "client@example.com"})
        orders = [
            api.order(client["id"], tariff["id"], {"domain": f"b{i}-{tag}.example.test"})
            for i in range(args.services)
        ]

        totals, module_times = [], []
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
        zones = [z for z in pdns.api("GET", "/zones").json() if tag in (z.get("account") or "")]
        assert len(zones) == args.services, len(zones)
        result = {
            "benchmark": "module_powerdns",
            "mode": f"embedded (in-process worker, {args.threads} threads, SQLite)",
            "services": args.services,
            "payment_to_active_ms": summary(totals),
            "module_open_ms": summary(module_times),
            "powerdns": pdns.api("GET", "").json().get("version"),
            "at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load": os.getloadavg(),
        }
        print(json.dumps(result, indent=2))
        results = os.path.join(ROOT, "bench", "results")
        os.makedirs(results, exist_ok=True)
        with open(os.path.join(results, f"module_powerdns-{int(time.time())}.json"), "w") as fh:
            json.dump(result, fh, indent=2)
        for zone in zones:
            pdns.api("DELETE", f"/zones/{zone['id']}")
        embedded.stop_worker()
    finally:
        pdns.stop()
        shutil.rmtree(folder, ignore_errors=True)


def summary(seconds):
    ms = [s * 1000 for s in seconds]
    return {
        "median": round(statistics.median(ms), 1),
        "p90": round(percentile(ms, 0.9), 1),
        "min": round(min(ms), 1),
        "max": round(max(ms), 1),
    }


if __name__ == "__main__":
    main()
