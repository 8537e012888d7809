"""Benchmark: the acme module, from payment to an active certificate service.

    .venv/bin/python -m bench.module_acme [--orders 20] [--poll-interval 0.2] [--names 2]
                                          [--key-type ec256|rsa2048]

One real ``provisor serve`` (``tests.support.Instance``: embedded worker and scheduler,
its own SQLite database and instance folder) listens on the port pebble's http-01 checks
connect to; pebble (``tests.support.Pebble``: Debian's Let's Encrypt test CA with a TLS
certificate made for the run, pebble-challtestsrv answering every name with 127.0.0.1,
no random validation delay) issues the certificates. Through the public API: an acme
module (``poll_interval`` as given), a certificate tariff (its item: the CA account is
registered before anything is measured), one client; then ``--orders`` orders of
``--names`` names each, paid one at a time through the signed payment webhook, each
waited for until the service is active (GET /api/v1/services/<id> every 20 ms).

Payment → active is ``service.activated_at - order.paid_at`` from the database (same
clock). Split, from the open operation's attempts:

- **CA requests**: the time of every HTTP request to the CA (the attempt log has each
  remote call with its duration: directory, nonce, order, authorizations, challenges,
  finalize, certificate);
- **waiting for the CA between checks**: the operation in ``polling`` (from one attempt's
  end to the next one's start): the CA validating the challenges and issuing, seen
  through ``poll_interval``;
- **Provisor**: the rest (queueing, database, key and CSR generation, storing, the
  welcome email).

"Share waiting on the CA" = (CA requests + waiting between checks) / payment → active.
Writes ``bench/results/module_acme-<stamp>.json``; everything lives in a temp dir removed
at the end (``BENCH_KEEP_LOGS=1`` keeps it).
"""

import argparse
import datetime as dt
import os
import pathlib
import re
import shutil
import sqlite3
import sys
import tempfile
import time

import requests

from bench import common
from tests.support import Instance, Pebble, signed, wait_for

CALL = re.compile(r"^< .* \((\d+) ms\)$")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--names", type=int, default=2)
    parser.add_argument("--key-type", choices=("ec256", "rsa2048"), default="ec256")
    return parser.parse_args(argv)


def _when(text):
    return dt.datetime.fromisoformat(text) if text else None


def measure(db_path, service_ids):
    """Per service: payment → active and its split, from the instance's database."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    rows = []
    try:
        for service_id in service_ids:
            paid_at, activated_at = conn.execute(
                'SELECT o.paid_at, s.activated_at FROM "order" o JOIN service s '
                "ON s.id = o.service_id WHERE s.id = ?",
                (service_id,),
            ).fetchone()
            (op_id,) = conn.execute(
                "SELECT id FROM operation WHERE service_id = ? AND kind = 'open'", (service_id,)
            ).fetchone()
            attempts = conn.execute(
                "SELECT started_at, finished_at, log FROM attempt WHERE operation_id = ? "
                "ORDER BY number",
                (op_id,),
            ).fetchall()
            total = (_when(activated_at) - _when(paid_at)).total_seconds()
            ca = sum(
                int(m.group(1)) / 1000
                for _, _, log in attempts
                for line in (log or "").splitlines()
                if (m := CALL.match(line.strip()))
            )
            waiting = sum(
                (_when(nxt[0]) - _when(prev[1])).total_seconds()
                for prev, nxt in zip(attempts, attempts[1:], strict=False)
            )
            rows.append(
                {
                    "service_id": service_id,
                    "total_s": total,
                    "ca_requests_s": ca,
                    "waiting_between_checks_s": waiting,
                    "provisor_s": total - ca - waiting,
                    "attempts": len(attempts),
                    "requests": sum(
                        1
                        for _, _, log in attempts
                        for line in (log or "").splitlines()
                        if CALL.match(line.strip())
                    ),
                }
            )
    finally:
        conn.close()
    return rows


def run(args, tmp):
    instance = Instance(tmp, "provisor")
    pebble = Pebble(tmp / "pebble", instance.port).start()
    try:
        instance.start()
        department = instance.call("POST", "/departments", {"name": "Certificates"})
        module = instance.call(
            "POST",
            "/modules",
            {
                "name": "Pebble",
                "type": "acme",
                "department_id": department["id"],
                "config": pebble.config(poll_interval=args.poll_interval, key_type=args.key_type),
                "retry_delay": 1,
                "test_connection": True,
            },
        )
        tariff = instance.call(
            "POST",
            "/tariffs",
            {
                "name": "TLS certificate",
                "product_type": "certificate",
                "price": "0",
                "internal_name": "tls-dv",
                "module_ids": [module["id"]],
            },
        )
        wait_for(
            lambda: (
                instance.call("GET", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "ready"
            ),
            timeout=30,
            message="the CA account",
        )
        client = instance.call("POST", "/clients", {"name": "Bench", "email": "b@example.com"})
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {instance.token}"
        service_ids, walls = [], []
        stamp = time.monotonic_ns() % 10**8
        for i in range(args.orders):
            names = [f"{'www.' * k}b{stamp}-{i}.example.com" for k in range(args.names)]
            order = instance.call(
                "POST",
                "/orders",
                {
                    "client_id": client["id"],
                    "tariff_id": tariff["id"],
                    "params": {"domains": names},
                },
            )
            raw, headers = signed(
                {
                    "payment_id": f"bench-{stamp}-{i}",
                    "order_id": order["id"],
                    "amount": order["amount"],
                    "currency": order["currency"],
                }
            )
            start = time.monotonic()
            paid = session.post(
                f"{instance.url}/api/v1/webhooks/payment", data=raw, headers=headers, timeout=10
            )
            assert paid.status_code == 200, paid.text
            url = f"{instance.url}/api/v1/services/{order['service_id']}"

            def active(url=url):
                status = session.get(url, timeout=10).json()["status"]
                assert status in ("processing", "active"), status
                return status == "active"

            wait_for(active, timeout=120, interval=0.02, message=f"service {order['service_id']}")
            walls.append(time.monotonic() - start)
            service_ids.append(order["service_id"])
        time.sleep(0.2)  # let the last attempt's row be written
        rows = measure(instance.dir / "instance" / "provisor.sqlite3", service_ids)
        for row, wall in zip(rows, walls, strict=True):
            row["wall_s"] = wall
        return rows
    finally:
        instance.stop()
        pebble.stop()


def summarise(rows):
    def med(key):
        return common.median([r[key] for r in rows])

    total = med("total_s")
    shares = [(r["ca_requests_s"] + r["waiting_between_checks_s"]) / r["total_s"] for r in rows]
    return {
        "orders": len(rows),
        "payment_to_active_median_s": total,
        "payment_to_active_p90_s": common.percentile([r["total_s"] for r in rows], 90),
        "payment_to_active_min_s": min(r["total_s"] for r in rows),
        "payment_to_active_max_s": max(r["total_s"] for r in rows),
        "client_seen_median_s": med("wall_s"),
        "ca_requests_median_s": med("ca_requests_s"),
        "waiting_between_checks_median_s": med("waiting_between_checks_s"),
        "provisor_median_s": med("provisor_s"),
        "share_waiting_on_ca_median": common.median(shares),
        "share_ca_requests_median": common.median(
            [r["ca_requests_s"] / r["total_s"] for r in rows]
        ),
        "attempts_median": med("attempts"),
        "ca_requests_per_certificate_median": med("requests"),
    }


def main(argv=None):
    args = parse_args(argv)
    if not Pebble.available():
        print("pebble is not installed (apt-get install pebble)", file=sys.stderr)
        return 2
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="provisor-bench-acme-"))
    try:
        rows = run(args, tmp)
    finally:
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarise(rows)
    print(
        common.table(
            [[k, f"{v:.3f}" if isinstance(v, float) else v] for k, v in summary.items()],
            ["acme: payment → active", "value"],
        )
    )
    path = common.write_result(
        "module_acme",
        {
            "args": vars(args),
            "summary": summary,
            "services": rows,
            "machine": common.machine_info(),
            "git": common.git_revision(),
        },
    )
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
