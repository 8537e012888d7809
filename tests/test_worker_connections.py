"""A worker's module calls hold no database connection while they wait on their panel, so
one process runs more calls at once than its pool has connections (issue 14, slow panels:
``bench/slow_panels.py`` measures it; these tests check the mechanism, not the time)."""

import threading

import pytest

from app.db import database
from modules.sandbox import SandboxModule
from tests import support

WORKER_THREADS = 4  # the embedded worker of the tests (conftest ``worker``)


def test_calls_in_flight_exceed_the_pool_and_hold_no_connection(pg_api_pool_of_2, monkeypatch):
    """Pool of 2, 4 worker threads: all 4 `open` calls are in the panel at the same time
    (a barrier of 4 inside the call; with a connection held through the call the third and
    fourth would wait for one and the barrier would break), none holding a connection, and
    each operation ends with one attempt and one account at the panel."""
    api = pg_api_pool_of_2
    barrier = threading.Barrier(WORKER_THREADS, timeout=30)
    seen = []
    simulate = SandboxModule._simulate

    def in_call(self, ctx, failures=True):
        if ctx.kind == "open":
            held = not database.is_closed()
            try:
                barrier.wait()
                seen.append(("met", held))
            except threading.BrokenBarrierError:
                seen.append(("barrier broken", held))
        return simulate(self, ctx, failures)

    monkeypatch.setattr(SandboxModule, "_simulate", in_call)
    department, module, tariff, client = api.catalog("sandbox")
    op_ids = []
    for _ in range(WORKER_THREADS):
        order = api.order(client["id"], tariff["id"])
        status, body = api.pay(order)
        assert status == 200, body
        op_ids.append(body["operation_id"])
    for op_id in op_ids:
        api.wait_operation(op_id, ("done",), timeout=60)

    assert seen == [("met", False)] * WORKER_THREADS
    with api.app.app_context(), database.connection_context():
        from app.models import Attempt, SandboxResource

        for op_id in op_ids:
            attempts = list(Attempt.select().where(Attempt.operation == op_id))
            assert [a.outcome for a in attempts] == ["done"]
        accounts = SandboxResource.select().where(SandboxResource.kind == "account")
        assert len({r.service_id for r in accounts}) == accounts.count() == WORKER_THREADS


def test_a_call_on_sqlite_keeps_its_connection(api, monkeypatch):
    """SQLite has no pool (a connection per thread): nothing is handed back there."""
    seen = []
    simulate = SandboxModule._simulate

    def in_call(self, ctx, failures=True):
        if ctx.kind == "open":
            seen.append(not database.is_closed())
        return simulate(self, ctx, failures)

    monkeypatch.setattr(SandboxModule, "_simulate", in_call)
    support.paid_service(api)
    assert seen == [True]


def test_the_pool_hands_out_a_connection_without_a_round_trip_and_never_a_dead_one(
    postgres_url,
):
    """peewee's pool asked the server ``SELECT 1`` at every checkout (two round trips per
    activation); ``app.db.PostgresqlPool`` polls the socket instead. A connection the
    server ended while it was in the pool (pg_terminate_backend, as a restart does) is
    not handed out: the next checkout gets a new one and the query works."""
    import psycopg2
    import psycopg2.extensions

    from app.db import make_database

    sent = []

    class Counted(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            sent.append(query if isinstance(query, str) else query.decode())
            return super().execute(query, vars)

    db = make_database(postgres_url, pool_size=2)
    db.connect_params["cursor_factory"] = Counted
    try:
        with db.connection_context():
            first = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        for _ in range(5):
            with db.connection_context():
                assert db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] == first
        assert sent == ["SELECT pg_backend_pid()"] * 6  # the query only: no SELECT 1

        admin = psycopg2.connect(postgres_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (first,))
            assert cur.fetchone()[0] is True
            support.wait_for(
                lambda: (
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (first,))
                    or cur.fetchone()[0] == 0
                ),
                timeout=10,
                message="the backend to end",
            )
        admin.close()
        with db.connection_context():
            again = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        assert again != first
    finally:
        db.close_all()


def test_a_transactions_begin_goes_to_the_server_with_its_first_statement(postgres_url):
    """``app.db.PostgresqlPool`` sends a transaction's BEGIN with its first statement (one
    round trip); the transaction is the same: not seen by another connection before its
    COMMIT, all of it undone by a failure, its savepoints as before; one with no
    statement sends nothing."""
    import psycopg2
    import psycopg2.extensions
    from peewee import IntegrityError

    from app.db import make_database

    sent = []

    class Counted(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            sent.append(query if isinstance(query, str) else query.decode())
            return super().execute(query, vars)

    db = make_database(postgres_url, pool_size=2)
    db.connect_params["cursor_factory"] = Counted
    other = psycopg2.connect(postgres_url)
    other.autocommit = True

    def seen_elsewhere():
        with other.cursor() as cur:
            cur.execute("SELECT n FROM t ORDER BY n")
            return [n for (n,) in cur.fetchall()]

    try:
        with db.connection_context():
            db.execute_sql("CREATE TABLE t (n int PRIMARY KEY)")
            sent.clear()
            with db.atomic():
                db.execute_sql("INSERT INTO t VALUES (%s)", (1,))
                assert seen_elsewhere() == []  # inside a transaction: not committed yet
                db.execute_sql("INSERT INTO t VALUES (%s)", (2,))
            assert sent == [
                "BEGIN; INSERT INTO t VALUES (%s)",
                "INSERT INTO t VALUES (%s)",
                "COMMIT",
            ]
            assert seen_elsewhere() == [1, 2]

            sent.clear()
            with db.atomic():
                pass
            assert sent == []

            sent.clear()
            with pytest.raises(IntegrityError), db.atomic():
                db.execute_sql("INSERT INTO t VALUES (%s)", (1,))  # the first statement fails
            assert sent == ["BEGIN; INSERT INTO t VALUES (%s)", "ROLLBACK"]
            with pytest.raises(ValueError), db.atomic():
                db.execute_sql("INSERT INTO t VALUES (%s)", (3,))
                raise ValueError("undone")
            assert seen_elsewhere() == [1, 2]

            with db.atomic():
                db.execute_sql("INSERT INTO t VALUES (%s)", (5,))
                with pytest.raises(IntegrityError), db.atomic():  # a savepoint
                    db.execute_sql("INSERT INTO t VALUES (%s)", (1,))
                db.execute_sql("INSERT INTO t VALUES (%s)", (6,))
            assert seen_elsewhere() == [1, 2, 5, 6]
            assert db.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 4
    finally:
        other.close()
        db.close_all()
