"""Rows read by id, saved and created through ``BaseModel``'s statements whose SQL text is
made once (``app.db.statement_text``) behave exactly as peewee's own queries: every kind
of field round-trips, defaults apply, ``only`` limits the columns, the new id is set, a
missing row is ``DoesNotExist`` / None, and the row is locked on PostgreSQL."""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from peewee import JOIN

from app.db import (
    cached_query_rows,
    database,
    execute_statement,
    get_for_update,
    write_transaction,
)
from app.models import Client, Email, ProductType, Tariff


def _peewee_row(model, pk):
    """The same row read the way peewee builds the query (the reference)."""
    return model.select().where(model._meta.primary_key == pk).get()


def test_a_created_row_reads_back_as_peewee_reads_it(any_app):
    with any_app.app_context():
        product_type = ProductType.create(
            name="Hosting",
            code="hosting-stmt",
            detail_fields=[{"name": "password", "secret": True}],
        )
        tariff = Tariff.create(
            name="Small", product_type=product_type, price=Decimal("9.90"), internal_name="small"
        )
        assert isinstance(tariff.id, int) and tariff.id > 0
        assert tariff._dirty == set()
        mine = Tariff.get_by_id(tariff.id)
        reference = _peewee_row(Tariff, tariff.id)
        assert mine.__data__ == reference.__data__
        assert mine.price == Decimal("9.90")
        assert mine.currency == "USD" and mine.period == "month"  # defaults applied
        assert mine.is_archived is False
        assert isinstance(mine.created_at, dt.datetime)
        assert mine.product_type.detail_fields == [{"name": "password", "secret": True}]
        assert ProductType.get_by_id(product_type.id).__data__ == (
            _peewee_row(ProductType, product_type.id).__data__
        )


def test_save_writes_every_loaded_field_or_only_the_named_ones(any_app):
    with any_app.app_context():
        client = Client.create(name="Ann", email="ann-stmt@example.test")
        email = Email.create(to=client.email, subject="Hello", body="Body", service=None)
        email.status = "sent"
        email.sent_at = dt.datetime(2026, 12, 6, 12, 0, 0)
        email.attempts = 2
        assert email.save() == 1
        assert email._dirty == set()
        again = _peewee_row(Email, email.id)
        assert (again.status, again.sent_at, again.attempts) == (
            "sent",
            dt.datetime(2026, 12, 6, 12, 0, 0),
            2,
        )
        email.subject = "Changed"
        email.last_error = "not saved"
        assert email.save(only=[Email.subject]) == 1
        again = _peewee_row(Email, email.id)
        assert again.subject == "Changed" and again.last_error is None
        assert email._dirty == {"last_error"}
        email.last_error = None
        email.service = None
        assert Email.get_by_id(email.id).__data__ == _peewee_row(Email, email.id).__data__


def test_saving_a_row_that_is_gone_changes_nothing_and_says_so(any_app):
    with any_app.app_context():
        client = Client.create(name="Bob", email="bob-stmt@example.test")
        Client.delete().where(Client.id == client.id).execute()
        client.name = "Robert"
        assert client.save() == 0
        assert Client.get_or_none_by_id(client.id) is None
        with pytest.raises(Client.DoesNotExist):
            Client.get_by_id(client.id)
        assert Client.fetch_by_id(client.id) is None
        assert Client.get_or_none_by_id("not an id") is None


def test_a_row_with_a_given_id_is_inserted_with_it(any_app):
    with any_app.app_context():
        taken = Client.create(name="Cy", email="cy-stmt@example.test")
        chosen = taken.id + 1000
        client = Client(id=chosen, name="Dee", email="dee-stmt@example.test")
        client.save(force_insert=True)
        assert client.id == chosen
        assert _peewee_row(Client, chosen).name == "Dee"


def test_a_row_inserted_later_is_stored_with_the_transaction(any_app):
    """``save(later=True)`` of a new row: on PostgreSQL its INSERT goes with the
    transaction's next statement or its COMMIT, the id unknown here; on SQLite it is
    inserted at once. Either way the row stored is the one ``create`` would store, and a
    transaction that fails stores none."""
    from app.db import is_sqlite

    def queued(subject):
        return Email(to="a@example.com", subject=subject, body="Hi", status="outbox")

    with any_app.app_context():
        with write_transaction():
            email = queued("later")
            assert email.save(force_insert=True, later=True) in (None, 1)
            assert (email.id is None) != is_sqlite()
            assert email._dirty == set()
        reference = Email.create(to="a@example.com", subject="now", body="Hi", status="outbox")
        stored = Email.get(Email.subject == "later")
        for field in Email._meta.sorted_fields:
            if field.name not in ("id", "subject", "created_at"):
                assert getattr(stored, field.name) == getattr(reference, field.name), field.name
        assert stored.created_at is not None
        with pytest.raises(RuntimeError), write_transaction():
            queued("rolled back").save(force_insert=True, later=True)
            raise RuntimeError("the transaction fails")
        assert not Email.select().where(Email.subject == "rolled back").exists()


def test_get_for_update_locks_the_row_on_postgresql(pg_app):
    """A second transaction's FOR UPDATE waits until the first commits."""
    with pg_app.app_context():
        client = Client.create(name="Eve", email="eve-stmt@example.test")
    order = []
    locked = threading.Event()
    release = threading.Event()

    def first():
        with pg_app.app_context(), write_transaction():
            row = get_for_update(Client, client.id)
            order.append(("first has", row.name))
            locked.set()
            release.wait(10)
            row.name = "Eve (first)"
            row.save()
            order.append(("first commits", None))
        database.close()

    def second():
        locked.wait(10)
        with pg_app.app_context(), write_transaction():
            row = get_for_update(Client, client.id)
            order.append(("second has", row.name))
        database.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    locked.wait(10)
    # the second is blocked on the lock: it has not read the row while the first holds it
    threads[1].join(0.5)
    assert ("second has", "Eve") not in order and threads[1].is_alive()
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == [
        ("first has", "Eve"),
        ("first commits", None),
        ("second has", "Eve (first)"),
    ]


def _product_type_and_a_tariff(pk):
    """A LEFT JOIN: the product type ``pk`` and one of its tariffs, if any."""
    return (
        ProductType.select(ProductType, Tariff)
        .join(Tariff, JOIN.LEFT_OUTER, on=(Tariff.product_type == ProductType.id), attr="a_tariff")
        .where(ProductType.id == pk)
    )


def _product_type_with_a_tariff():
    """The same for ``cached_query_rows``: built with 0 for the id."""
    return _product_type_and_a_tariff(0), [0]


def _as_peewee_reads(pk):
    return list(_product_type_and_a_tariff(pk))


@pytest.mark.parametrize("first", ["joined row first", "empty join first"])
def test_cached_query_rows_make_the_rows_peewee_makes(any_app, first):
    """Whatever row the column layout was worked out from, later rows — with or without
    their LEFT JOIN's row, or none at all — come out as peewee's own query makes them."""
    with any_app.app_context():
        with_tariff = ProductType.create(name="VPS", code=f"vps-{first[:5]}")
        Tariff.create(
            name="Tiny", product_type=with_tariff, price=Decimal("1.00"), internal_name="tiny"
        )
        without = ProductType.create(name="Empty", code=f"empty-{first[:5]}")
        order = [with_tariff, without] if first == "joined row first" else [without, with_tariff]
        key = f"test.product_type_with_a_tariff.{first}"
        for product_type in order + order:
            rows = cached_query_rows(key, _product_type_with_a_tariff, (product_type.id,))
            reference = _as_peewee_reads(product_type.id)
            assert len(rows) == len(reference) == 1
            assert rows[0].__data__ == reference[0].__data__
            if product_type.id == with_tariff.id:
                assert rows[0].a_tariff.__data__ == reference[0].a_tariff.__data__
                assert rows[0].a_tariff.name == "Tiny"
            else:
                assert rows[0].a_tariff is None and reference[0].a_tariff is None
        assert cached_query_rows(key, _product_type_with_a_tariff, (without.id + 1000,)) == []


def test_a_query_whose_placeholders_do_not_match_is_refused(app):
    with app.app_context(), pytest.raises(RuntimeError, match="parameters"):
        cached_query_rows(
            "test.wrong_placeholders", lambda: _product_type_with_a_tariff()[:1] + ([1],), (1,)
        )


def test_prepared_statements_survive_new_connections(pg_app):
    """On PostgreSQL the texts run as prepared statements of each connection: a new
    connection (the pool's were closed) prepares them again; a text with another ``%``
    runs as it is."""
    with pg_app.app_context():
        client = Client.create(name="Fay", email="fay-stmt@example.test")
        assert Client.get_by_id(client.id).name == "Fay"
        database.close()
        database.obj.close_all()
        assert Client.get_by_id(client.id).name == "Fay"
        client.name = "Fay 100%"
        client.save()
        rows = execute_statement(
            "SELECT name FROM client WHERE id = %s AND name LIKE '%%100%%'", (client.id,)
        ).fetchall()
        assert rows == [("Fay 100%",)]
        prepared = database.execute_sql("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert prepared[0] >= 2  # the SELECT by id and the UPDATE of this connection


def test_ids_beyond_postgresql_integer_find_nothing(any_app):
    """An id from outside up to 2^63 - 1 (what ``parse_id`` lets through) finds no row:
    not an "integer out of range" error from a statement prepared for an integer id."""
    with any_app.app_context(), write_transaction():
        assert Client.get_or_none_by_id(2**63 - 1) is None
        assert Client.fetch_by_id(2**31, lock=True) is None
        assert cached_query_rows("test.big_ids", _product_type_with_a_tariff, (2**40,)) == []
        Client.create(name="Gus", email="gus-stmt@example.test")  # the transaction goes on


def test_prepared_statements_can_be_turned_off(app, postgres_url):
    """``PROVISOR_DB_PREPARED_STATEMENTS=false`` (behind a pooler that shares connections
    between transactions): the same statements run as plain text, none is prepared."""
    from app import create_app, schema

    plain = create_app(
        {**app.config, "DATABASE_URL": postgres_url, "DB_PREPARED_STATEMENTS": False}
    )
    try:
        with plain.app_context():
            schema.upgrade()
            client = Client.create(name="Hal", email="hal-stmt@example.test")
            client.name = "Hal 2"
            client.save()
            assert Client.get_by_id(client.id).name == "Hal 2"
            prepared = database.execute_sql("SELECT count(*) FROM pg_prepared_statements")
            assert prepared.fetchone()[0] == 0
    finally:
        if not database.is_closed():
            database.close()
        database.obj.close_all()
        create_app(dict(app.config))  # the app's own database (and setting) again


def test_a_claim_starts_its_attempt_and_a_lost_claim_starts_none(any_app):
    """The claim's UPDATE and the attempt's INSERT (one statement on PostgreSQL): the
    attempt returned is the row stored. On SQLite a claim from a stale read changes
    nothing; on PostgreSQL the claim's read locks the operation until its COMMIT, so no
    other transaction can change it in between (nor claim it: it waits, then reads it
    running), and the attempt's id comes with that read."""
    import psycopg2

    from app.db import is_sqlite
    from app.models import Attempt, Operation, ProcessingModule
    from app.services import operations

    with any_app.app_context():
        module = ProcessingModule.create(name="Claims", type="sandbox", config={})
        op = Operation.create(kind="ensure_item", module=module.id, status="queued")
        stale = Operation.get_by_id(op.id)
        now = dt.datetime(2026, 12, 6, 15, 0, 0, 123456)
        lease = now + dt.timedelta(minutes=5)
        with write_transaction():
            loaded = operations._load_for_attempt(op.id)
            if not is_sqlite():
                other = psycopg2.connect(any_app.config["DATABASE_URL"])
                try:
                    with (
                        other.cursor() as cur,
                        pytest.raises(psycopg2.errors.LockNotAvailable),
                    ):
                        cur.execute(
                            "SELECT id FROM operation WHERE id = %s FOR UPDATE NOWAIT", (op.id,)
                        )
                finally:
                    other.close()
            attempt = operations._claim_row(loaded, "running", lease, now)
        assert isinstance(attempt.id, int)
        stored = Attempt.select().where(Attempt.id == attempt.id).get()
        fields = Attempt._meta.sorted_fields
        assert {f.name: getattr(attempt, f.name) for f in fields} == {
            f.name: getattr(stored, f.name) for f in fields
        }
        assert attempt._dirty == set()
        assert (stored.operation_id, stored.number, stored.started_at) == (op.id, 1, now)
        assert stored.worker == operations.WORKER_NAME and stored.log == ""
        claimed = Operation.select().where(Operation.id == op.id).get()
        assert (claimed.status, claimed.attempts, claimed.lease_until) == ("running", 1, lease)
        assert claimed.updated_at == now
        if is_sqlite():
            # a second worker that read the operation before the claim: no claim, no attempt
            with write_transaction():
                assert operations._claim_row(stale, "running", lease, now) is None
        else:
            # a second worker reads it (locked) once the claim committed: running, not due
            with write_transaction():
                assert operations._load_for_attempt(op.id).status == "running"
            assert operations._claim(op.id) is None
        assert Attempt.select().where(Attempt.operation == op.id).count() == 1
        assert Operation.select().where(Operation.id == op.id).get().attempts == 1
        # the attempt is saved as peewee would (its finish written by id)
        attempt.outcome, attempt.finished_at = "done", now
        attempt.save(only=[Attempt.outcome, Attempt.finished_at])
        assert Attempt.get_by_id(attempt.id).outcome == "done"


def test_two_rows_saved_together_are_both_written(any_app):
    """``save_together``: an attempt's end and its operation in one statement on
    PostgreSQL, one after the other on SQLite; both rows as ``save`` would leave them."""
    from app.models import Attempt, Operation, ProcessingModule, save_together
    from app.services.operations import ATTEMPT_END

    with any_app.app_context():
        module = ProcessingModule.create(name="Together", type="sandbox", config={})
        op = Operation.create(kind="ensure_item", module=module.id, status="running", attempts=1)
        attempt = Attempt.create(operation=op.id, number=1, worker="w", log="")
        now = dt.datetime(2026, 12, 6, 16, 0, 0, 5)
        attempt.finished_at, attempt.outcome, attempt.log = now, "done", "called; done"
        attempt.worker = "not saved: not in ATTEMPT_END"
        op.status, op.finished_at, op.state = "done", now, {"a": [1, "é"]}
        with write_transaction():
            assert save_together(attempt, ATTEMPT_END, op) == 1
        assert attempt._dirty == {"worker"} and op._dirty == set()
        stored = Attempt.select().where(Attempt.id == attempt.id).get()
        assert (stored.finished_at, stored.outcome, stored.log, stored.worker) == (
            now,
            "done",
            "called; done",
            "w",
        )
        stored_op = Operation.select().where(Operation.id == op.id).get()
        assert {f.name: stored_op.__data__.get(f.name) for f in Operation._meta.sorted_fields} == {
            f.name: op.__data__.get(f.name) for f in Operation._meta.sorted_fields
        }
        # a rolled-back transaction leaves neither
        with pytest.raises(RuntimeError), write_transaction():
            attempt.outcome, op.status = "interrupted", "queued"
            save_together(attempt, ATTEMPT_END, op)
            raise RuntimeError("roll back")
        assert Attempt.get_by_id(attempt.id).outcome == "done"
        assert Operation.get_by_id(op.id).status == "done"


def test_the_sandbox_lookup_stays_on_its_indexes_as_its_table_grows(pg_app):
    """The simulated panel's lookup, prepared while its table is empty, still reads by its
    indexes once the table holds 2,000 rows (as one ``OR`` it read the whole table)."""
    from modules.sandbox import _find_account_query

    def lookup(n):
        key = f"op-{n}"
        return cached_query_rows(
            "sandbox.find_account", _find_account_query, (key, n, "account", "deleted", key)
        )

    with pg_app.app_context():
        for n in range(8):  # planned on an empty table (a generic plan after five)
            assert lookup(n) == []
        database.execute_sql(
            "INSERT INTO sandbox_resource (operation_key, kind, remote_id, details, service_id,"
            " status, created_at) SELECT 'op-' || i, 'account', 'r-' || i, '{}', i, 'active',"
            " now() FROM generate_series(1, 2000) i"
        )
        database.execute_sql(
            "INSERT INTO sandbox_resource (operation_key, kind, remote_id, details, service_id,"
            " status, created_at) VALUES ('other-op', 'account', 'r-x', '{}', 1500, 'active',"
            " now())"
        )
        count = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'sandbox_resource'"
        with database.atomic():  # this backend's counts, not yet flushed: read before, after
            (before,) = database.execute_sql(count).fetchone()
            rows = lookup(1500)
            (after,) = database.execute_sql(count).fetchone()
        seq_scans = after - before
        # this operation's row first, then the service's other account; each once
        assert [r.operation_key for r in rows] == ["op-1500", "other-op"]
        assert seq_scans == 0


def _sandbox_context(op_id, service_id, state=None):
    from types import SimpleNamespace

    from modules.base import OperationContext

    operation = SimpleNamespace(id=op_id, kind="open")
    return OperationContext(operation, 1, service=SimpleNamespace(id=service_id), state=state)


def _sandbox_account(ctx):
    from modules.sandbox import SandboxModule

    return SandboxModule({})._create(ctx, "account", lambda digest: {"username": digest[:6]})


def test_the_sandbox_panel_finds_takes_over_or_creates_an_account(any_app):
    """The simulated panel (one statement on PostgreSQL, a lookup then an INSERT on
    SQLite): an operation's account is created once, found again by the same operation,
    taken over by another operation of the same service (the oldest live one), never
    taken over once deleted."""
    from app.models import SandboxResource

    with any_app.app_context():
        first = _sandbox_context(9001, 77)
        made = _sandbox_account(first)
        assert isinstance(made.id, int) and made._dirty == set()
        assert (made.operation_key, made.kind, made.service_id, made.status) == (
            "9001",
            "account",
            77,
            "active",
        )
        assert made.remote_id.startswith("sbx-account-") and made.details["username"]
        assert "sandbox: created account" in first.log_text
        stored = SandboxResource.get(SandboxResource.operation_key == "9001")
        assert {f.name: getattr(stored, f.name) for f in SandboxResource._meta.sorted_fields} == {
            f.name: getattr(made, f.name) for f in SandboxResource._meta.sorted_fields
        }

        again = _sandbox_context(9001, 77, state={"checks_left": 1})
        assert _sandbox_account(again).id == made.id
        assert f"checking account {made.remote_id}" in again.log_text

        other = _sandbox_context(9002, 77)
        assert _sandbox_account(other).id == made.id  # the service's account, taken over
        assert "already exists: taking it over" in other.log_text
        assert not SandboxResource.select().where(SandboxResource.operation_key == "9002").exists()

        SandboxResource.update(status="deleted").where(SandboxResource.id == made.id).execute()
        fresh = _sandbox_account(_sandbox_context(9003, 77))
        assert fresh.id != made.id and fresh.operation_key == "9003"
        assert SandboxResource.select().where(SandboxResource.service_id == 77).count() == 2


def test_the_sandbox_panel_adopts_the_row_another_attempt_inserts_meanwhile(pg_app):
    """Two attempts of one operation at once: the row the other inserts while this one's
    statement runs (not visible to its lookup, its INSERT waits on the key, then does
    nothing) is the one returned; still one row for the operation."""
    import psycopg2

    from app.models import SandboxResource

    other = psycopg2.connect(pg_app.config["DATABASE_URL"])
    try:
        with other.cursor() as cur:
            cur.execute(
                "INSERT INTO sandbox_resource (operation_key, kind, remote_id, details,"
                " service_id, status, created_at) VALUES ('9100', 'account', 'theirs', '{}',"
                " 78, 'active', now())"
            )
        timer = threading.Timer(0.5, other.commit)
        timer.start()
        with pg_app.app_context():
            ctx = _sandbox_context(9100, 78)
            row = _sandbox_account(ctx)
            assert row.remote_id == "theirs"
            assert (
                SandboxResource.select().where(SandboxResource.operation_key == "9100").count() == 1
            )
        timer.join()
    finally:
        other.close()


def test_a_claim_reads_its_operation_by_id_on_a_table_without_statistics(pg_app):
    """The claim's guard on the status is no index's: PostgreSQL's generic plan, made
    before the table's first ANALYZE, read every queued operation through the status
    index to claim one (``app.db.unindexed``)."""
    from app.models import Operation, ProcessingModule
    from app.services import operations

    with pg_app.app_context():
        module = ProcessingModule.create(name="Claims", type="sandbox", config={})
        database.execute_sql(
            "INSERT INTO operation (kind, module_id, status, params, attempts, failures,"
            " redispatches, created_at, updated_at, next_run_at) SELECT 'ensure_item', %s,"
            " 'queued', '{}', 0, 0, 0, now(), now(), now() FROM generate_series(1, 2000)",
            (module.id,),
        )
        ids = [op.id for op in Operation.select(Operation.id).order_by(Operation.id)]
        now = dt.datetime(2026, 12, 6, 17, 0, 0)
        count = "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'operation'"
        with write_transaction():
            for op_id in ids[:8]:  # a generic plan after five
                op = operations._load_for_attempt(op_id)
                assert operations._claim_row(op, "running", now, now) is not None
            op = operations._load_for_attempt(ids[1500])
            (before,) = database.execute_sql(count).fetchone()
            assert operations._claim_row(op, "running", now, now) is not None
            (after,) = database.execute_sql(count).fetchone()
        assert after - before <= 2  # the operation's row (was: every queued operation)


def _shape(instance, seen=None):
    """Everything peewee keeps of a model instance it made from a row, its joined
    instances' too: its data, its dirty fields, its known related rows (and absent ones)
    and any other attribute a column set."""
    seen = set() if seen is None else seen
    if instance is None or id(instance) in seen:
        return instance if instance is None else ("seen", type(instance).__name__)
    seen.add(id(instance))
    extra = {
        k: _shape(v, seen) if hasattr(v, "__data__") else v
        for k, v in vars(instance).items()
        if k not in ("__data__", "_dirty", "__rel__")
    }
    return (
        type(instance).__name__,
        dict(instance.__data__),
        set(instance._dirty),
        {k: _shape(v, seen) for k, v in instance.__rel__.items()},
        extra,
    )


def _as_peewee_makes(query, params):
    """The rows of ``query`` run with ``params``, made by peewee's own cursor wrapper."""
    from app.db import database

    text, _ = query.sql()
    return list(query._get_cursor_wrapper(database.execute_sql(text, params)))


def test_the_attempt_load_makes_the_instances_peewee_makes(any_app):
    """An attempt's 7-table load (``cached_query_rows``: its instances made straight from
    the rows once peewee has worked out their layout) gives what peewee's own rows give —
    the same data, related rows, absent joins and extra columns — for an operation on a
    service with its item, one whose item is not there, and one with no service at all."""
    from app.db import is_sqlite
    from app.models import Item, Operation, ProcessingModule, Service
    from app.services import operations

    with any_app.app_context():
        module = ProcessingModule.create(
            name="Loads", type="sandbox", config={"latency_ms": 0, "panel_host": "p.test"}
        )
        product_type = ProductType.create(name="Hosting", code="hosting-loads")
        tariffs = [
            Tariff.create(
                name=name,
                product_type=product_type,
                price=Decimal("2.50"),
                internal_name=name.lower(),
            )
            for name in ("Small", "Large")
        ]
        Item.create(module=module, internal_name="small", remote_id="item-1", status="ready")
        client = Client.create(name="Loader", email="loader@example.com", language="ru")
        ops = [Operation.create(kind="ensure_item", module=module.id, status="queued")]
        for tariff in tariffs:
            service = Service.create(client=client, tariff=tariff, details={"login": "x"})
            ops.append(
                Operation.create(
                    kind="open",
                    module=module.id,
                    service=service,
                    status="queued",
                    params={"domain": "example.com"},
                )
            )
        query, _ = operations._attempt_load_query()
        for op in ops + ops[::-1] + ops:
            with write_transaction():
                made = operations._load_for_attempt(op.id)
                made.__dict__.pop("_items", None)  # set by _load_for_attempt after the load
                reference = _as_peewee_makes(query, [op.id])
            assert len(reference) == 1
            if not is_sqlite():  # each read takes an id of the sequence
                assert made.next_attempt_id < reference[0].next_attempt_id
                del made.next_attempt_id, reference[0].next_attempt_id
            assert _shape(made) == _shape(reference[0])
        from app import db

        layout = db._layouts[(type(db.database.obj), "operations.attempt_load")]
        assert isinstance(layout, db._RowMaker)  # the rows compared were the maker's
        with write_transaction():
            loaded = operations._load_for_attempt(ops[1].id)
        assert loaded.service.tariff.item_of_module.remote_id == "item-1"
        assert loaded.service.client.email == "loader@example.com"
        assert loaded.module.config["panel_host"] == "p.test"
        with write_transaction():
            assert operations._load_for_attempt(ops[2].id).service.tariff.item_of_module is None
            assert operations._load_for_attempt(ops[0].id).service is None


@pytest.mark.parametrize(
    "value",
    [{}, [], {"b": 1, "a": [1, 2.5, None, True]}, "x", 0, {"é": "ü\n\x00"}, [{}], {"": {}}],
)
def test_a_json_field_stores_the_text_json_dumps_gives(value):
    """A JSON field's text is ``json.dumps(value, sort_keys=True)`` (its encoder is made
    once; an empty mapping is written without it) and reads back as ``json.loads``."""
    import json

    from app.models import JSONField

    field = JSONField()
    text = field.db_value(value)
    assert text == json.dumps(value, sort_keys=True)
    assert field.python_value(text) == json.loads(text) == value
    assert field.db_value(None) is None and field.python_value(None) is None
    assert field.python_value("{}") is not field.python_value("{}")  # a new mapping each time


def test_only_plain_fields_skip_their_converter_for_values_they_keep():
    """``kept_as_they_are``: the driver's values a peewee field of a plain type gives back
    unchanged (so the row makers need not call it); nothing for a subclass with its own
    conversion, another kind of field, or a converter that is not a field's."""
    import datetime

    import peewee

    from app.db import kept_as_they_are
    from app.models import JSONField, Operation

    assert kept_as_they_are(peewee.CharField().python_value) == (type(None), str)
    assert kept_as_they_are(peewee.DateTimeField().python_value) == (
        type(None),
        datetime.datetime,
    )
    assert kept_as_they_are(Operation.service.python_value) == (type(None), int)  # a key
    for converter in (JSONField().python_value, peewee.DecimalField().python_value, int, None):
        assert kept_as_they_are(converter) == ()
    for field, value in ((peewee.CharField(), "x"), (peewee.IntegerField(), 7)):
        assert type(value) in kept_as_they_are(field.python_value)
        assert field.python_value(value) is value


def test_utcnow_is_the_naive_utc_time_of_the_system_clock():
    """``utcnow`` (the epoch plus the clock's microseconds) reads what
    ``datetime.now(UTC)`` reads: naive, with microseconds, between two readings of it."""
    from app.models import utcnow

    for _ in range(1000):
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        now = utcnow()
        after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        assert now.tzinfo is None and type(now) is dt.datetime
        assert before <= now <= after
    assert len({utcnow().microsecond for _ in range(50)}) > 1  # not rounded to a second
