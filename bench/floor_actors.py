"""The floor: the fewest round trips one activation's state changes can be made in.

Not Provisor: a hand-written actor on a BARE Redis broker (Dramatiq's default middleware,
as ``bench.noop_bare``) that makes, for an operation the payment queued, the same rows
Provisor makes in the same tables — the claim with its attempt, the simulated panel's
account, the operation and attempt ended, the service active with its details, the
welcome email in the outbox — in three statements, each its own durable transaction
(autocommit), with prepared statements and plain ``psycopg2`` (no ORM, no app context,
no template engine, no choice of module, no retry policy, no events). The claim is
committed before the panel is called and the result before the email can go: the same
order of effects Provisor keeps. What it leaves out is everything that makes Provisor a
product (errors, retries, tasks, polling, takeover of an earlier attempt's account, other
modules, webhooks, locales): it is the cost of the state changes themselves, the
"limit" issue 14 names, measured on the same machine in the same run.

Run: ``dramatiq bench.floor_actors:broker --processes 1 --threads N`` with ``DATABASE_URL``
(a ``postgresql://`` URL) and ``REDIS_URL`` set; ``bench.activation --floor`` does this.
"""

import datetime as dt
import json
import os
import threading

import dramatiq
import psycopg2
from dramatiq.brokers.redis import RedisBroker

from bench.floor_common import WORKER, account, attempt_log, welcome

QUEUE = "bench_floor"
NAMESPACE = os.environ.get("REDIS_NAMESPACE", "provisor") + "-floor"

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=NAMESPACE)

# 1. the claim: the operation queued -> running with its attempt row, and what the panel
#    and the welcome email need, in one statement
CLAIM = """
WITH claimed AS (
    UPDATE operation SET status = 'running', attempts = attempts + 1, redispatches = 0,
        lease_until = $2, updated_at = $3
    WHERE id = $1 AND status || '' = 'queued'
    RETURNING id, service_id, module_id, attempts, updated_at
), att AS (
    INSERT INTO attempt (operation_id, number, worker, started_at, log)
    SELECT id, attempts, $4, updated_at, '' FROM claimed
    RETURNING id
)
SELECT att.id, c.attempts, c.service_id, cl.name, cl.email, t.name
FROM claimed c CROSS JOIN att
JOIN service s ON s.id = c.service_id
JOIN tariff t ON t.id = s.tariff_id
JOIN client cl ON cl.id = s.client_id
"""

# 2. the panel's account (the simulated panel keeps it in its own table), keyed by the
#    operation: an earlier attempt's row is left as it is
PANEL = """
INSERT INTO sandbox_resource (operation_key, kind, remote_id, details, service_id, status,
    created_at)
VALUES ($1, 'account', $2, $3, $4, 'active', $5)
ON CONFLICT (operation_key) DO NOTHING
"""

# 3. the result: attempt and operation ended, the service active with its details, the
#    welcome email in the outbox; nothing if the operation is no longer running
RESULT = """
WITH op AS (
    UPDATE operation SET status = 'done', lease_until = NULL, next_run_at = NULL,
        updated_at = $2, finished_at = $2
    WHERE id = $1 AND status || '' = 'running'
    RETURNING id, service_id
), att AS (
    UPDATE attempt SET log = $3, finished_at = $2, outcome = 'done'
    FROM op WHERE attempt.id = $4
), svc AS (
    UPDATE service SET status = 'active', remote_id = $5, details = $6, module_data = $7,
        activated_at = $2, updated_at = $2
    FROM op WHERE service.id = op.service_id
    RETURNING service.id
)
INSERT INTO email (kind, status, attempts, created_at, "to", subject, body, service_id,
    next_try_at)
SELECT 'welcome', 'outbox', 0, $2, $8, $9, $10, svc.id, $2 FROM svc
"""

STATEMENTS = {
    "claim": (CLAIM, "bigint, timestamp, timestamp, text"),
    "panel": (PANEL, "text, text, text, bigint, timestamp"),
    "result": (RESULT, "bigint, timestamp, text, bigint, text, text, text, text, text, text"),
}

_local = threading.local()


def _cursor():
    """This thread's connection (autocommit: each statement its own transaction), with
    the three statements prepared once."""
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg2.connect(os.environ["DATABASE_URL"])
        conn.autocommit = True
        with conn.cursor() as cur:
            for name, (sql, types) in STATEMENTS.items():
                cur.execute(f"PREPARE floor_{name} ({types}) AS {sql}")
        _local.conn = conn
    return conn.cursor()


@dramatiq.actor(queue_name=QUEUE, max_retries=0, broker=broker)
def activate(operation_id):
    """One activation's state changes; a duplicate message finds nothing to claim."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with _cursor() as cur:
        cur.execute(
            "EXECUTE floor_claim (%s, %s, %s, %s)",
            (operation_id, now + dt.timedelta(seconds=120), now, WORKER),
        )
        row = cur.fetchone()
        if row is None:
            return
        attempt_id, number, service_id, client_name, client_email, tariff = row
        key, remote_id, details = account(operation_id, service_id)
        details_json = json.dumps(details)
        cur.execute(
            "EXECUTE floor_panel (%s, %s, %s, %s, %s)",
            (key, remote_id, details_json, service_id, now),
        )
        done = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        subject, body = welcome(service_id, client_name, tariff, details)
        cur.execute(
            "EXECUTE floor_result (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                operation_id,
                done,
                attempt_log(key, number, remote_id),
                attempt_id,
                remote_id,
                details_json,
                json.dumps({"sandbox_account": remote_id}),
                client_email,
                subject,
                body,
            ),
        )
