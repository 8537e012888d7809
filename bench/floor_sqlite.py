"""The floor of the embedded default: ``bench.floor_actors``'s activation on SQLite.

The same rows in the same tables, hand-written with the standard library's ``sqlite3`` on
the file Provisor uses (its pragmas: WAL, ``synchronous = normal``, foreign keys): the
claim and its attempt in one write transaction, the simulated panel's account on its own,
the result (operation, attempt, service, welcome email) in one write transaction. SQLite
has no data-modifying ``WITH``, so a transaction holds several statements; they go
through one connection per thread and its statement cache. ``bench.activation --mode
embedded --floor`` registers :func:`activate` as an actor on the embedded StubBroker, so
it pays the same per-message cost (the project's middleware) as the no-op it is compared
with.
"""

import datetime as dt
import json
import sqlite3
import threading

from bench.floor_common import WORKER, account, attempt_log, welcome

DB_PATH = None  # set by the benchmark before the first message

_local = threading.local()


def _connection():
    conn = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "path", None) != DB_PATH:
        conn = sqlite3.connect(DB_PATH, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = wal",
            "busy_timeout = 15000",
            "foreign_keys = 1",
            "synchronous = normal",
        ):
            conn.execute(f"PRAGMA {pragma}")
        _local.conn, _local.path = conn, DB_PATH
    return conn


def _now():
    return str(dt.datetime.now(dt.UTC).replace(tzinfo=None))


def activate(operation_id):
    """One activation's state changes; a duplicate message finds nothing to claim."""
    conn = _connection()
    now = _now()
    lease = str(dt.datetime.fromisoformat(now) + dt.timedelta(seconds=120))
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "UPDATE operation SET status = 'running', attempts = attempts + 1, "
            "redispatches = 0, lease_until = ?, updated_at = ? "
            "WHERE id = ? AND status = 'queued' RETURNING service_id, attempts",
            (lease, now, operation_id),
        ).fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            return
        service_id, number = row
        attempt_id = conn.execute(
            "INSERT INTO attempt (operation_id, number, worker, started_at, log) "
            "VALUES (?, ?, ?, ?, '')",
            (operation_id, number, WORKER, now),
        ).lastrowid
        client_name, client_email, tariff = conn.execute(
            "SELECT cl.name, cl.email, t.name FROM service s JOIN tariff t ON t.id = s.tariff_id "
            "JOIN client cl ON cl.id = s.client_id WHERE s.id = ?",
            (service_id,),
        ).fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    key, remote_id, details = account(operation_id, service_id)
    details_json = json.dumps(details)
    conn.execute(
        "INSERT INTO sandbox_resource (operation_key, kind, remote_id, details, service_id, "
        "status, created_at) VALUES (?, 'account', ?, ?, ?, 'active', ?) "
        "ON CONFLICT (operation_key) DO NOTHING",
        (key, remote_id, details_json, service_id, now),
    )
    done = _now()
    subject, body = welcome(service_id, client_name, tariff, details)
    conn.execute("BEGIN IMMEDIATE")
    try:
        ended = conn.execute(
            "UPDATE operation SET status = 'done', lease_until = NULL, next_run_at = NULL, "
            "updated_at = ?, "
            "finished_at = ? WHERE id = ? AND status = 'running'",
            (done, done, operation_id),
        ).rowcount
        if ended != 1:
            conn.execute("ROLLBACK")
            return
        conn.execute(
            "UPDATE attempt SET log = ?, finished_at = ?, outcome = 'done' WHERE id = ?",
            (attempt_log(key, number, remote_id), done, attempt_id),
        )
        conn.execute(
            "UPDATE service SET status = 'active', remote_id = ?, details = ?, "
            "module_data = ?, activated_at = ?, updated_at = ? WHERE id = ?",
            (
                remote_id,
                details_json,
                json.dumps({"sandbox_account": remote_id}),
                done,
                done,
                service_id,
            ),
        )
        conn.execute(
            'INSERT INTO email (kind, status, attempts, created_at, "to", subject, body, '
            "service_id, next_try_at) VALUES ('welcome', 'outbox', 0, ?, ?, ?, ?, ?, ?)",
            (
                done,
                client_email,
                subject,
                body,
                service_id,
                done,
            ),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
