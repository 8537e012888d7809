"""Two requests creating the same thing at the same moment: the database's unique
constraint decides, and the loser gets a clear 422 (or 409), never a 500.

The app is served on a real loopback port (werkzeug, threaded) on SQLite and on
PostgreSQL; the requests are real HTTP requests released together by a barrier.
"""

import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from app import create_app, schema
from app.db import database, write_transaction
from app.states import KINDS
from tests.support import WEBHOOK_SECRET, free_port

N = 8
CREATES = {
    "departments": ({"name": "Support"}, "name"),
    "modules": ({"name": "Panel", "type": "sandbox", "config": {}}, "name"),
    "clients": ({"name": "Bob", "email": "bob@example.com"}, "email"),
    "staff": ({"email": "eve@example.com", "password": "eve-password"}, "email"),
}


class Served:
    """The app on a loopback port, with an admin's bearer token."""

    def __init__(self, database_url):
        self.app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": database_url,
                "SECRET_KEY": "test-secret-key",
                "PAYMENT_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "ARGON2_TIME_COST": 1,
                "ARGON2_MEMORY_COST": 1024,
            }
        )
        schema.upgrade()
        with self.app.app_context(), database.connection_context():
            from app.services import accounts

            accounts.create_user(
                {"email": "admin@example.com", "name": "Admin", "password": "admin-password"},
                role="admin",
            )
            token = accounts.create_token("admin@example.com")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.server = make_server("127.0.0.1", free_port(), self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.count("/departments")  # the token's first use is noted: not during a test

    def post(self, path, body):
        response = requests.post(self.url + path, json=body, headers=self.headers, timeout=60)
        return response.status_code, response.json()

    def count(self, path):
        response = requests.get(self.url + path, headers=self.headers, timeout=30)
        data = response.json()
        return data["total"] if "total" in data else len(data[path.strip("/")])

    def stop(self):
        self.server.shutdown()
        self.thread.join(10)
        if not database.is_closed():
            database.close()


@pytest.fixture(params=["sqlite", "postgres"])
def served(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path}/provisor.sqlite3"
    served = Served(url)
    yield served
    served.stop()


@pytest.fixture
def constraint_hits(monkeypatch):
    """How many times a refused unique constraint was turned into an answer."""
    from app.services import errors

    hits = []
    original = errors.from_integrity_error

    def counting(exc, messages=None):
        hits.append(exc)
        return original(exc, messages)

    monkeypatch.setattr(errors, "from_integrity_error", counting)
    return hits


def assert_refused(status, data, field):
    assert status in (409, 422), (status, data)
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message", "fields"}
    assert data["error"]["message"]
    if status == 422:
        assert data["error"]["code"] == "validation_error"
        assert field in data["error"]["fields"], data
    else:
        assert data["error"]["code"] == "conflict"


def _sandbox_order(served):
    """A sandbox module in a department, a tariff it serves, a client and an unpaid order
    of that tariff; returns the module and the order (as the API answered)."""
    _, department = served.post("/departments", {"name": "Ops"})
    _, module = served.post(
        "/modules",
        {"name": "Panel", "type": "sandbox", "config": {}, "department_id": department["id"]},
    )
    _, tariff = served.post(
        "/tariffs",
        {
            "name": "VPS",
            "product_type": "vps",
            "price": "5",
            "internal_name": "vps-c",
            "module_ids": [module["id"]],
        },
    )
    _, client = served.post("/clients", {"name": "Ann", "email": "ann@example.com"})
    _, order = served.post(
        "/orders", {"client_id": client["id"], "tariff_id": tariff["id"], "params": {}}
    )
    return module, order


def _at_once(served, path, body=None):
    """``N`` POSTs of ``body`` to ``path`` released together by a barrier; their
    ``(status, json)``."""
    barrier = threading.Barrier(N)
    results = [None] * N

    def post(i):
        barrier.wait()
        results[i] = served.post(path, body or {})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.parametrize("path", sorted(CREATES))
def test_identical_creates_at_once_make_one(served, path):
    body, field = CREATES[path]
    before = served.count(f"/{path}")
    results = _at_once(served, f"/{path}", body)
    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) == 1, results
    for status, data in results:
        if status != 201:
            assert_refused(status, data, field)
    assert served.count(f"/{path}") == before + 1


@pytest.mark.parametrize(
    "path, model, row",
    [
        ("departments", "Department", {"name": "Support"}),
        ("modules", "ProcessingModule", {"name": "Panel", "type": "sandbox", "config": {}}),
        ("clients", "Client", {"name": "Bob", "email": "bob@example.com"}),
        ("staff", "User", {"email": "eve@example.com", "name": "Eve", "role": "staff"}),
    ],
)
def test_the_constraint_decides_when_the_check_passed(served, constraint_hits, path, model, row):
    """Another transaction inserts the same row after the request's "exists?" check and
    commits while the request waits to insert: the request is told 422 with the field."""
    from app import models

    body, field = CREATES[path]
    inserted, release = threading.Event(), threading.Event()

    def hold():
        with served.app.app_context(), database.connection_context(), write_transaction():
            getattr(models, model).create(**row)
            inserted.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inserted.wait(30)
    answer = {}
    request = threading.Thread(target=lambda: answer.update(result=served.post(f"/{path}", body)))
    request.start()
    time.sleep(1.0)  # the request has checked and now waits for the insert (or the lock)
    release.set()
    holder.join(30)
    request.join(60)
    status, data = answer["result"]
    assert status == 422, data
    assert_refused(status, data, field)
    assert constraint_hits, "the unique constraint, not the service's check, refused it"
    assert served.count(f"/{path}") == (2 if path == "staff" else 1)  # staff: and the admin


def test_constraints_map_to_their_field_or_to_a_conflict(served):
    from peewee import IntegrityError

    from app.models import Department, ProcessingModule, Tariff, TariffModule
    from app.services.errors import Conflict, ValidationError, from_integrity_error

    def refused(create):
        try:
            with database.atomic():
                create()
        except IntegrityError as exc:
            return exc
        raise AssertionError("the database took a duplicate")

    with served.app.app_context(), database.connection_context():
        Department.create(name="Support")
        exc = refused(lambda: Department.create(name="Support"))
        error = from_integrity_error(exc, {"name": "A department with this name exists."})
        assert isinstance(error, ValidationError)
        assert error.fields == {"name": "A department with this name exists."}
        # a constraint the caller gave no message for: a conflict, not a field
        assert isinstance(from_integrity_error(exc), Conflict)
        module = ProcessingModule.create(name="Panel", type="sandbox", config={})
        tariff = Tariff.create(
            name="VPS", product_type=1, price="1.00", internal_name="vps", currency="USD"
        )
        TariffModule.create(tariff=tariff, module=module)
        exc = refused(lambda: TariffModule.create(tariff=tariff, module=module))
        error = from_integrity_error(exc, {"name": "taken"})
        assert isinstance(error, Conflict) and error.status == 409 and error.message


def test_a_constraint_no_service_caught_answers_409_not_500(tmp_path):
    """The safety net: an IntegrityError escaping a view is a 409 (JSON under /api/, a
    page elsewhere), never a 500."""
    from peewee import IntegrityError

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/provisor.sqlite3",
            "SECRET_KEY": "x",
            "PAYMENT_WEBHOOK_SECRET": "x",
        }
    )

    def collide():
        """A view that hits a constraint (for this test)."""
        raise IntegrityError("UNIQUE constraint failed: department.name")

    app.add_url_rule("/api/v1/test-collide", "test_collide_api", collide)
    app.add_url_rule("/test-collide", "test_collide_page", collide)
    schema.upgrade()
    client = app.test_client()
    response = client.get("/api/v1/test-collide")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"
    assert set(response.get_json()["error"]) == {"code", "message", "fields"}
    page = client.get("/test-collide")
    assert page.status_code == 409 and page.mimetype == "text/html"
    if not database.is_closed():
        database.close()


@pytest.mark.parametrize("kind", ["suspend", "close"])
def test_one_operation_of_a_kind_at_a_time_for_concurrent_requests(served, kind):
    """Eight staff requests for the same operation on one service at the same moment:
    one operation is created (and would call the module once); the others are told 409
    naming the operation in progress."""
    from app.models import Operation, Service

    module, order = _sandbox_order(served)
    with served.app.app_context(), database.connection_context():
        Service.update(status="active", module=module["id"]).where(
            Service.id == order["service_id"]
        ).execute()
    results = _at_once(served, f"/services/{order['service_id']}/{kind}")
    accepted = [data for status, data in results if status == 202]
    assert len(accepted) == 1, results
    with served.app.app_context(), database.connection_context():
        made = list(Operation.select().where(Operation.kind == kind))
    assert [op.id for op in made] == [accepted[0]["id"]]
    for status, data in results:
        if status != 202:
            assert status == 409, (status, data)
            label = KINDS[kind].label  # the kind as people read it ("Suspend")
            assert f"already has operation #{made[0].id} ({label}" in data["error"]["message"]


def test_one_payment_of_an_order_for_concurrent_requests(served):
    """Eight staff requests marking the same order paid at the same moment: one pays it
    and queues its ``open`` operation, the others are told 409 (already paid); the order,
    its service and its operations as one payment left them."""
    from app.models import Operation, Order, Service

    _, order = _sandbox_order(served)
    results = _at_once(served, f"/orders/{order['id']}/pay")
    paid = [data for status, data in results if status == 200]
    assert len(paid) == 1, results
    for status, data in results:
        if status != 200:
            assert status == 409, (status, data)
            assert data["error"]["code"] == "conflict"
            assert "already paid" in data["error"]["message"]
    with served.app.app_context(), database.connection_context():
        opened = list(
            Operation.select().where(
                (Operation.service == order["service_id"]) & (Operation.kind == "open")
            )
        )
        assert [op.id for op in opened] == [paid[0]["operation_id"]]
        assert Order.get_by_id(order["id"]).status == "paid"
        # processing, or active already: the embedded worker runs the operation
        assert Service.get_by_id(order["service_id"]).status in ("processing", "active")
