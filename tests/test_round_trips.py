"""Round trips to PostgreSQL (issue 14): what goes to the server, in how many messages.
``support.counting_cursor`` records every text a connection sends; each text is one
message (one round trip), however many statements it holds."""

import pytest

from tests import support


def test_the_pool_hands_out_a_connection_without_a_round_trip_and_never_a_dead_one(
    postgres_url,
):
    """peewee's pool asked the server ``SELECT 1`` at every checkout (two round trips per
    activation); ``app.db.PostgresqlPool`` polls the socket instead. A connection the
    server ended while it was in the pool (pg_terminate_backend, as a restart does) is
    not handed out: the next checkout gets a new one and the query works."""
    import psycopg2

    from app.db import make_database

    sent = []
    db = make_database(postgres_url, pool_size=2)
    db.connect_params["cursor_factory"] = support.counting_cursor(sent)
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
    from peewee import IntegrityError

    from app.db import make_database

    sent = []
    db = make_database(postgres_url, pool_size=2)
    db.connect_params["cursor_factory"] = support.counting_cursor(sent)
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


def test_a_write_sent_later_goes_with_the_next_statement_or_the_commit(pg_app):
    """``save(later=True)`` (the service's UPDATE in the payment and in the result of an
    attempt): inside a transaction the UPDATE goes with the transaction's next statement,
    which sees it, or with its COMMIT; a value with quotes, ``%``, ``%s`` and ``%(x)s``
    arrives as it was (the texts are joined and all their parameters bound at once); one
    that fails fails the transaction, all of it undone; one in a transaction rolled back
    is never sent; outside a transaction it runs at once."""
    import psycopg2
    from peewee import IntegrityError

    from app.db import database, write_transaction
    from app.models import Client

    sent = []
    database.obj.close_all()
    database.obj.connect_params["cursor_factory"] = support.counting_cursor(sent)
    other = psycopg2.connect(pg_app.config["DATABASE_URL"])
    other.autocommit = True

    def stored(client_id):
        with other.cursor() as cur:
            cur.execute("SELECT name, phone FROM client WHERE id = %s", (client_id,))
            return cur.fetchone()

    try:
        with pg_app.app_context(), database.connection_context():
            ann = Client.create(name="Ann", email="ann@example.com")
            bob = Client.create(name="Bob", email="bob@example.com")
            ann.save(later=True)  # outside a transaction: at once (and prepared)
            Client.get_by_id(ann.id)
            sent.clear()

            with write_transaction():
                ann.name = "100% O'Brien %s"
                assert ann.save(later=True) is None
                assert sent == []  # not sent yet
                assert Client.get_by_id(ann.id).name == "100% O'Brien %s"  # the next one sees it
                assert len(sent) == 1 and sent[0].startswith("BEGIN; EXECUTE provisor_")
                assert sent[0].count("EXECUTE provisor_") == 2
                assert stored(ann.id)[0] == "Ann"  # not committed yet
                ann.phone = "+1 555 %(x)s %%"
                ann.save(later=True)  # the last write: with the COMMIT
            assert len(sent) == 2 and sent[1].startswith("EXECUTE provisor_")
            assert sent[1].endswith("; COMMIT")
            assert stored(ann.id) == ("100% O'Brien %s", "+1 555 %(x)s %%")

            sent.clear()
            with pytest.raises(IntegrityError), write_transaction():
                bob.name = "Robert"
                bob.save()
                ann.email = "bob@example.com"  # taken: the UPDATE fails at the COMMIT
                ann.save(later=True)
            assert stored(bob.id)[0] == "Bob" and stored(ann.id)[0] == "100% O'Brien %s"
            assert sent[-1] == "ROLLBACK"

            sent.clear()
            with pytest.raises(ValueError), write_transaction():
                ann.name = "never"
                ann.save(later=True)
                raise ValueError("rolled back")
            assert sent == []  # nothing was sent: no BEGIN, no UPDATE, no ROLLBACK
            assert Client.get_by_id(ann.id).name == "100% O'Brien %s"  # the connection works
    finally:
        other.close()
        database.obj.connect_params.pop("cursor_factory", None)
        database.obj.close_all()


def test_a_payment_locks_its_order_and_is_two_round_trips(pg_api):
    """Paying an order on PostgreSQL: the first message reads the order locked (``FOR
    UPDATE OF order``) with what the payment ranks and the id its operation will have;
    the second carries the order's UPDATE, the service's, the operation's INSERT with that
    id, and the COMMIT. A second payment then reads it paid and changes nothing."""
    import threading

    import psycopg2

    from app.db import database, write_transaction
    from app.models import Operation, Order, Service
    from app.services import orders
    from app.services.errors import Conflict

    api, app = pg_api, pg_api.app
    _, _, tariff, client = api.catalog("sandbox")
    warm, order = (api.order(client["id"], tariff["id"]) for _ in range(2))
    sent = []
    database.obj.close_all()
    database.obj.connect_params["cursor_factory"] = support.counting_cursor(
        sent, threading.get_ident()
    )
    other = psycopg2.connect(app.config["DATABASE_URL"])
    try:
        with app.app_context(), database.connection_context():
            with write_transaction():
                read, _ = orders._order_to_pay(order["id"])
                assert read.status == "unpaid" and read.next_operation_id > 0
                with other.cursor() as cur, pytest.raises(psycopg2.errors.LockNotAvailable):
                    cur.execute(
                        'SELECT id FROM "order" WHERE id = %s FOR UPDATE NOWAIT', (read.id,)
                    )
                other.rollback()
                taken = read.next_operation_id
            orders.mark_paid(warm["id"], by="staff")  # its statements prepared on first use
            sent.clear()
            paid, op = orders.mark_paid(order["id"], by="staff")
            assert len(sent) == 2, sent
            assert sent[0].startswith("BEGIN; EXECUTE provisor_")
            assert sent[1].count("EXECUTE provisor_") == 3 and sent[1].endswith("; COMMIT")
            # the id taken by the read above was not used: the payment took the next one
            assert op.id > taken
            stored = Operation.get_by_id(op.id)
            assert (stored.kind, stored.service_id) == ("open", order["service_id"])
            assert Order.get_by_id(order["id"]).status == "paid" == paid.status
            # processing, or further already: the embedded worker runs the operation
            assert Service.get_by_id(order["service_id"]).status in ("processing", "active")
            sent.clear()
            with pytest.raises(Conflict, match="already paid"):
                orders.mark_paid(order["id"], by="staff")
            assert sent[-1] == "ROLLBACK" and len(sent) == 2
            assert Operation.select().where(Operation.service == order["service_id"]).count() == 1
    finally:
        other.close()
        database.obj.connect_params.pop("cursor_factory", None)
        database.obj.close_all()
