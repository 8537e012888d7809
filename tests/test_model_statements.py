"""Rows read by id, saved and created through ``BaseModel``'s statements whose SQL text is
made once (``app.db.statement_text``) behave exactly as peewee's own queries: every kind
of field round-trips, defaults apply, ``only`` limits the columns, the new id is set, a
missing row is ``DoesNotExist`` / None, and the row is locked on PostgreSQL."""

import datetime as dt
import threading
from decimal import Decimal

import pytest

from app.db import database, get_for_update, write_transaction
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
