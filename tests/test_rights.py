"""Who may do what in the browser UI: a rights matrix, and CSRF.

Every page (GET) and every form action (POST) of the UI is tried as each of five people:
an anonymous visitor, a client, staff of the task's department, staff of another
department, and an admin. Each is logged in through ``/login`` with the test client, and
CSRF is on (as in production), so every form carries the token it got from a page.

One app serves this whole module (the catalog and the people are made once). A GET runs
against a shared world; an allowed POST changes things, so it gets a fresh world of its own
(services, tasks, orders...); a refused request must change nothing at all.
"""

import itertools
import re
import time
from urllib.parse import urlsplit

import pytest

from app import create_app, schema
from app.db import database
from app.models import (
    Client,
    ClientNote,
    Department,
    Email,
    Impersonation,
    Item,
    Operation,
    Order,
    PasswordReset,
    ProcessingModule,
    Service,
    Tariff,
    Task,
    TaskEvent,
    User,
)
from tests import support

ROLES = ("anonymous", "client", "staff_in", "staff_out", "admin")
PASSWORD = "a-good-password"
EMAILS = {
    "client": "carol@example.com",
    "staff_in": "sam@example.com",  # in Support, the department of the tasks
    "staff_out": "eve@example.com",  # in Billing only
    "admin": "admin@example.com",
}
START = {"anonymous": "/login", "client": "/my", "staff_in": "/tasks", "staff_out": "/tasks"}
START["admin"] = "/tasks"
VPS_FIELDS = {
    "field.hostname": "vps1.example.net",
    "field.ip": "203.0.113.5",
    "field.username": "root",
    "field.password": "pw-123456",
}

# --- expectations -----------------------------------------------------------------------
# an int is the status code; LOGIN a redirect to the login form; any other string a
# redirect to exactly that place ("{task}" and the like are ids of the world)
LOGIN = "login"


def everyone(expected):
    return dict.fromkeys(ROLES, expected)


def staff_page(ok=200):
    """Staff pages: all staff and admins; clients are refused, visitors sent to log in."""
    return {"anonymous": LOGIN, "client": 403, "staff_in": ok, "staff_out": ok, "admin": ok}


def admin_only(ok=200):
    return {"anonymous": LOGIN, "client": 403, "staff_in": 403, "staff_out": 403, "admin": ok}


def task_rights(ok=200, staff_in=None):
    """A task: its department's staff and admins; another department gets 403."""
    staff_in = ok if staff_in is None else staff_in
    return {"anonymous": LOGIN, "client": 403, "staff_in": staff_in, "staff_out": 403, "admin": ok}


def client_only(ok=200):
    return {"anonymous": LOGIN, "client": ok, "staff_in": 403, "staff_out": 403, "admin": 403}


def public(anonymous, others):
    return {"anonymous": anonymous, **dict.fromkeys(ROLES[1:], others)}


# (method, path, form data, expected by role); paths and data are formatted with the world
MATRIX = [
    # logging in and out, registering
    ("GET", "/login", None, public(200, "/")),
    ("POST", "/login", {"email": "carol@example.com", "password": "wrong"}, everyone(422)),
    ("GET", "/register", None, public(200, "/")),
    (
        "POST",
        "/register",
        {"name": "Reg", "email": "reg{n}@example.com", "password": PASSWORD},
        public("/my", "/"),
    ),
    ("POST", "/logout", {}, public(LOGIN, "/login")),
    # one's own account: everyone logged in (the same password again changes nothing)
    ("GET", "/account", None, public(LOGIN, 200)),
    (
        "POST",
        "/account",
        {"current_password": PASSWORD, "password": PASSWORD, "password_repeat": PASSWORD},
        public(LOGIN, "/account"),
    ),
    # a client's language (the client area and their emails)
    ("POST", "/account/language", {"language": "en"}, client_only("/account")),
    (
        "GET",
        "/",
        None,
        {
            "anonymous": LOGIN,
            "client": "/my",
            "staff_in": "/dashboard",
            "staff_out": "/dashboard",
            "admin": "/dashboard",
        },
    ),
    ("GET", "/dashboard", None, staff_page()),
    # forgotten passwords: anyone (an unknown or used link is not found)
    ("GET", "/forgot-password", None, everyone(200)),
    ("POST", "/forgot-password", {"email": "nobody{n}@example.com"}, everyone("/login")),
    ("GET", "/reset-password/no-such-token", None, everyone(404)),
    ("POST", "/reset-password/no-such-token", {"password": PASSWORD}, everyone(404)),
    # Current operations
    ("GET", "/operations", None, staff_page()),
    ("GET", "/operations/{op}", None, staff_page()),
    # acting on an operation: its department's staff (as its tasks), admins
    ("POST", "/operations/{op}/restart", {}, task_rights("/operations/{op}")),
    ("POST", "/operations/{op}/cancel", {}, task_rights("/operations/{op}")),
    ("POST", "/operations/{op}/take-over", {}, task_rights("/tasks/{task}")),
    # a bulk action: each operation is fenced as its own button (refusals are in the answer)
    ("POST", "/operations/bulk", {"action": "restart", "ids": "{op}"}, staff_page("/operations")),
    ("GET", "/operations/export.csv", None, staff_page()),
    # services, orders, clients, outbox
    ("GET", "/services", None, staff_page()),
    ("GET", "/services/{active}", None, staff_page()),
    ("POST", "/services/{active}/suspend", {}, staff_page("/services/{active}")),
    ("POST", "/services/{active}/resume", {}, staff_page("/services/{active}")),
    ("POST", "/services/{active}/close", {}, staff_page("/services/{active}")),
    # not setup_cancelled: refused (a flash), nothing changes
    ("POST", "/services/{active}/retry-setup", {}, staff_page("/services/{active}")),
    (
        "POST",
        "/services/{active}/change_tariff",
        {"tariff_id": "{bigger_tariff}"},
        staff_page("/services/{active}"),
    ),
    (
        "POST",
        "/services/{active}/details",
        {"remote_id": "moved-{n}"},
        staff_page("/services/{active}"),
    ),
    ("POST", "/services/{active}/reveal", {}, staff_page()),
    ("GET", "/services/import", None, staff_page()),
    (
        "POST",
        "/services/import",
        {"tariff_id": "{ok_tariff}", "client_id": "{alice}", "remote_id": ""},
        staff_page(422),
    ),
    ("GET", "/orders", None, staff_page()),
    ("GET", "/orders/export.csv", None, staff_page()),
    ("GET", "/services/export.csv", None, staff_page()),
    ("GET", "/clients/export.csv", None, staff_page()),
    ("GET", "/outbox/export.csv", None, staff_page()),
    ("GET", "/tasks/export.csv", None, staff_page()),
    ("POST", "/orders/{order}/pay", {}, staff_page("/orders")),
    ("GET", "/clients", None, staff_page()),
    ("GET", "/clients/new", None, admin_only()),
    (
        "POST",
        "/clients/new",
        {"name": "New", "email": "new{n}@example.com"},
        admin_only("/clients"),
    ),
    # a reseller paying on account (the client has a login: only its token is new)
    ("POST", "/clients/{carol}/reseller", {}, admin_only(200)),
    ("POST", "/clients/{carol}/reseller/end", {}, admin_only("/clients")),
    # a client's record (Carol keeps her name and email; Dave has no services)
    ("GET", "/clients/{carol}", None, staff_page()),
    (
        "POST",
        "/clients/{carol}/contact",
        {"name": "Carol", "email": EMAILS["client"], "phone": "+1 555 0100"},
        staff_page("/clients/{carol}"),
    ),
    ("POST", "/clients/{carol}/notes", {"text": "hi"}, staff_page("/clients/{carol}#notes")),
    ("POST", "/clients/{carol}/password/reset", {}, staff_page("/clients/{carol}#password")),
    (
        "POST",
        "/clients/{carol}/password",
        {"password": PASSWORD, "password_repeat": PASSWORD},
        admin_only("/clients/{carol}#password"),
    ),
    ("POST", "/clients/{dave}/services/suspend", {}, staff_page("/clients/{dave}")),
    ("POST", "/clients/{dave}/services/close", {}, staff_page("/clients/{dave}")),
    ("POST", "/clients/{carol}/view-as", {}, staff_page("/my")),
    ("POST", "/view-as/stop", {}, staff_page("/clients")),
    ("GET", "/outbox", None, staff_page()),
    ("GET", "/outbox/{email}", None, staff_page()),
    # the catalog
    ("GET", "/catalog", None, admin_only("/catalog/tariffs")),
    ("GET", "/catalog/tariffs", None, admin_only()),
    ("GET", "/catalog/tariffs/new", None, admin_only()),
    (
        "POST",
        "/catalog/tariffs/new",
        {"name": "T{n}", "product_type": "vps", "price": "1", "internal_name": "t-{n}"},
        admin_only("/catalog/tariffs"),
    ),
    ("GET", "/catalog/tariffs/{spare_tariff}/edit", None, admin_only()),
    (
        "POST",
        "/catalog/tariffs/{spare_tariff}/edit",
        {"name": "T{n}", "product_type": "vps", "price": "2", "internal_name": "t-{n}"},
        admin_only("/catalog/tariffs"),
    ),
    ("POST", "/catalog/items/{item}/ready", {}, admin_only("/catalog/tariffs")),
    ("GET", "/catalog/modules", None, admin_only()),
    ("GET", "/catalog/modules/new", None, admin_only()),
    (
        "POST",
        "/catalog/modules/new",
        {"name": "M{n}", "type": "manual", "enabled": "1"},
        admin_only("/catalog/modules"),
    ),
    ("GET", "/catalog/modules/{spare_module}/edit", None, admin_only()),
    (
        "POST",
        "/catalog/modules/{spare_module}/edit",
        {"name": "M{n}", "enabled": "1"},
        admin_only("/catalog/modules"),
    ),
    ("GET", "/catalog/modules/config-fields?type=manual", None, admin_only()),
    ("POST", "/catalog/modules/check", {"type": "sandbox", "name": "M{n}"}, admin_only()),
    ("POST", "/catalog/modules/{spare_module}/check", {"name": "M{n}"}, admin_only()),
    ("GET", "/catalog/product-types", None, admin_only()),
    ("GET", "/catalog/product-types/{product_type}/edit", None, admin_only()),
    (
        "POST",
        "/catalog/product-types/{product_type}/edit",
        "{product_type_form}",
        admin_only("/catalog/product-types"),
    ),
    ("GET", "/catalog/departments", None, admin_only()),
    ("POST", "/catalog/departments", {"name": "D{n}"}, admin_only("/catalog/departments")),
    ("GET", "/catalog/departments/{spare_department}/edit", None, admin_only()),
    (
        "POST",
        "/catalog/departments/{spare_department}/edit",
        {"name": "D{n}", "notify_email": "d{n}@example.com"},
        admin_only("/catalog/departments"),
    ),
    # staff management
    ("GET", "/staff", None, admin_only()),
    ("GET", "/staff/new", None, admin_only()),
    (
        "POST",
        "/staff/new",
        {"email": "s{n}@example.com", "name": "S", "password": PASSWORD, "role": "staff"},
        admin_only("/staff"),
    ),
    ("GET", "/staff/{spare_staff}/edit", None, admin_only()),
    (
        "POST",
        "/staff/{spare_staff}/edit",
        {"name": "S{n}", "role": "staff", "is_active": "1"},
        admin_only("/staff"),
    ),
    # the tasks proxy (its forms: see OWN_RIGHTS_TESTS)
    ("GET", "/proxy", None, admin_only()),
    # tasks
    ("GET", "/tasks", None, staff_page()),
    ("GET", "/tasks/{task}", None, task_rights()),
    ("POST", "/tasks/{task}/assign", {}, task_rights("/tasks/{task}")),
    ("POST", "/tasks/{task}/plan", {"priority": "high"}, task_rights("/tasks/{task}")),
    ("POST", "/tasks/{task}/close", VPS_FIELDS, task_rights("/tasks")),
    ("POST", "/tasks/{task}/comment", {"text": "hello"}, task_rights("/tasks/{task}#comments")),
    ("POST", "/tasks/{task}/cancel", {"reason": "no"}, task_rights("/tasks/{task}")),
    ("POST", "/tasks/{closed_task}/reopen", {}, task_rights("/tasks/{closed_task}", staff_in=403)),
    ("POST", "/tasks/{task}/restart", {}, task_rights("/tasks/{task}")),
    # the client area: only their own
    ("GET", "/my", None, client_only()),
    ("GET", "/my/order", None, client_only()),
    ("GET", "/my/order/{ok_tariff}/availability/domain", None, client_only()),
    ("POST", "/my/order", {"tariff_id": "{ok_tariff}"}, client_only("/my/orders")),
    ("GET", "/my/orders", None, client_only()),
    ("GET", "/my/services/{carol_service}", None, client_only()),
    ("GET", "/my/services/{active}", None, client_only(404)),  # another client's
    (
        "POST",
        "/my/services/{carol_service}/change_password",
        {},
        client_only("/my/services/{carol_service}"),
    ),
    ("POST", "/my/services/{active}/change_password", {}, client_only(404)),  # another's
    ("POST", "/my/services/{carol_service}/suspend", {}, client_only(404)),  # staff only
    ("POST", "/my/orders/{carol_order}/pay", {}, client_only("/my/orders")),
    ("POST", "/my/orders/{order}/pay", {}, client_only(404)),  # another client's
    # certificates (acme): none in this world, so even their owner finds nothing here; the
    # downloads themselves are tried in tests/modules/test_acme.py against a real CA
    ("GET", "/.well-known/acme-challenge/no-such-token", None, everyone(404)),
    ("GET", "/my/services/{carol_service}/certificate/key.pem", None, client_only(404)),
    ("GET", "/my/services/{active}/certificate/fullchain.pem", None, client_only(404)),
    ("GET", "/services/{active}/certificate/fullchain.pem", None, staff_page(404)),
]

# UI areas whose forms have rights tests of their own (their rows need a live peer)
OWN_RIGHTS_TESTS = {
    "proxy_ui": "tests/test_web_proxy.py::test_proxy_page_is_for_admins",
    "metrics": "tests/test_metrics.py (a token or an allowed address, not a login)",
    "webhooks": "tests/test_events.py::test_the_webhooks_pages_are_for_admins",
}

CASES = [
    pytest.param(method, path, data, role, expected[role], id=f"{method} {path} as {role}")
    for method, path, data, expected in MATRIX
    for role in ROLES
]
_counter = itertools.count(1)


# --- the app and its worlds -------------------------------------------------------------


@pytest.fixture(scope="module")
def rights_app(tmp_path_factory, worker):
    """The app with CSRF on, sandbox payments and registration; the shared world made once."""
    import actors
    from actors.middleware import AppContextMiddleware

    actors.broker.flush_all()
    path = tmp_path_factory.mktemp("rights")
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{path}/provisor.sqlite3",
            "SECRET_KEY": "rights-test-secret",
            "PAYMENT_WEBHOOK_SECRET": support.WEBHOOK_SECRET,
            "WTF_CSRF_ENABLED": True,
            "SANDBOX_PAYMENTS": True,
            "ALLOW_REGISTRATION": True,
            "LEASE_GRACE": 2,
            "SWEEP_GRACE": 0,
            "MAIL_RETRY_DELAY": 1,
            "ARGON2_TIME_COST": 1,
            "ARGON2_MEMORY_COST": 1024,
        }
    )
    schema.upgrade()
    AppContextMiddleware.app = app
    app.extensions["rights_catalog"] = _catalog(app)
    app.extensions["rights_world"] = _world(app)
    yield app
    actors.broker.flush_all()
    time.sleep(0.05)
    if not database.is_closed():
        database.close()


def _catalog(app):
    """People, departments, a module that gives up at once and one that works, tariffs."""
    from app.services import accounts, catalog

    with app.app_context(), database.connection_context():
        support_dept = catalog.create_department({"name": "Support"})
        billing = catalog.create_department({"name": "Billing"})
        accounts.create_user(
            {"email": EMAILS["admin"], "name": "Admin", "password": PASSWORD}, role="admin"
        )
        for role, departments in (("staff_in", [support_dept.id]), ("staff_out", [billing.id])):
            accounts.create_user(
                {"email": EMAILS[role], "password": PASSWORD, "department_ids": departments}
            )
        carol = accounts.create_client(
            {"name": "Carol", "email": EMAILS["client"], "password": PASSWORD}, with_login=True
        )
        alice = accounts.create_client({"name": "Alice", "email": "alice@example.com"})
        dave = accounts.create_client({"name": "Dave", "email": "dave@example.com"})

        def module(name, config):
            return catalog.create_module(
                {
                    "name": name,
                    "type": "sandbox",
                    "config": config,
                    "department_id": support_dept.id,
                    "retry_delay": 300,
                }
            )

        failing = module("Gives up", {"fail_first": 1, "permanent_failures": True})
        working = module("Works", {})
        tariffs = {
            key: catalog.create_tariff(
                {
                    "name": name,
                    "product_type": "vps",
                    "price": "5",
                    "internal_name": key,
                    "module_ids": [mod.id],
                }
            ).id
            for key, name, mod in (
                ("failing_tariff", "VPS fail", failing),
                ("ok_tariff", "VPS ok", working),
                ("bigger_tariff", "VPS bigger", working),  # a change of tariff's target
            )
        }
        pt = catalog.product_type_by("vps")
        product_type_form = {
            "name": pt.name,
            "detail_fields": catalog.format_detail_fields(pt.detail_fields),
            "welcome_subject": pt.welcome_subject,
            "welcome_template": pt.welcome_template,
        }

    def items_ready():
        with app.app_context(), database.connection_context():
            return all(i.status == "ready" for i in Item.select()) and Item.select().count() == 3

    support.wait_for(items_ready, message="the sandbox items")
    with app.app_context(), database.connection_context():
        item = Item.get((Item.module == working.id) & (Item.internal_name == "ok_tariff")).id
    ids = {
        "alice": alice.id,
        "carol": carol.id,
        "dave": dave.id,
        "item": item,
        "product_type": pt.id,
        "product_type_form": product_type_form,
        **tariffs,
    }
    with app.app_context(), database.connection_context():
        carol_service = _paid(app, carol.id, tariffs["ok_tariff"], ("done",))
        email = Email.get(Email.service == carol_service.id)  # the welcome email
    ids["carol_service"] = carol_service.id
    ids["email"] = email.id
    return ids


def _paid(app, client_id, tariff_id, until):
    """Order and pay (inside an app context); wait until its operation is in ``until``."""
    from app.services import orders

    order = orders.create({"client_id": client_id, "tariff_id": tariff_id})
    _, op = orders.mark_paid(order.id, by="test")
    support.wait_for(
        lambda: Operation.get_by_id(op.id).status in until, message=f"operation in {until}"
    )
    return Service.get_by_id(order.service_id)


def _world(app):
    """What the requests act on, all new: an escalated task (and its operation), a
    cancelled task, an active service, unpaid orders, a spare tariff, module, department
    and staff member. Returns their ids for the paths."""
    from app.services import accounts, catalog, orders, tasks

    base = app.extensions.get("rights_catalog")
    n = next(_counter)
    with app.app_context(), database.connection_context():
        escalated = _paid(app, base["alice"], base["failing_tariff"], ("manual",))
        cancelled = _paid(app, base["alice"], base["failing_tariff"], ("manual",))
        active = _paid(app, base["alice"], base["ok_tariff"], ("done",))
        task = Task.get(Task.service == escalated.id)
        closed_task = Task.get(Task.service == cancelled.id)
        admin = User.get(User.email == EMAILS["admin"])
        tasks.cancel(closed_task.id, admin, "for the reopen case")
        order = orders.create({"client_id": base["alice"], "tariff_id": base["ok_tariff"]})
        carol_order = orders.create({"client_id": base["carol"], "tariff_id": base["ok_tariff"]})
        spare_tariff = catalog.create_tariff(
            {
                "name": f"Spare {n}",
                "product_type": "vps",
                "price": "1",
                "internal_name": f"spare-{n}",
            }
        )
        spare_module = catalog.create_module({"name": f"Spare {n}", "type": "manual"})
        spare_department = catalog.create_department({"name": f"Spare {n}"})
        spare_staff = accounts.create_user(
            {
                "email": f"spare{n}@example.com",
                "password": PASSWORD,
                "department_ids": [spare_department.id],
            }
        )
    return {
        **base,
        "task": task.id,
        "op": task.operation_id,
        "closed_task": closed_task.id,
        "active": active.id,
        "order": order.id,
        "carol_order": carol_order.id,
        "spare_tariff": spare_tariff.id,
        "spare_module": spare_module.id,
        "spare_department": spare_department.id,
        "spare_staff": spare_staff.id,
    }


def snapshot(app, world):
    """Everything a request could change in ``world`` (a refused one must change nothing)."""
    with app.app_context(), database.connection_context():
        ops = Operation.select().where(
            Operation.service.in_([Task.get_by_id(world["task"]).service_id, world["active"]])
        )
        return {
            "tasks": [
                (t.id, t.status, t.assignee_id, t.fields)
                for t in Task.select().where(Task.id.in_([world["task"], world["closed_task"]]))
            ],
            "events": TaskEvent.select()
            .where(TaskEvent.task.in_([world["task"], world["closed_task"]]))
            .count(),
            "operations": sorted((o.id, o.status, o.attempts) for o in ops),
            "services": [
                (s.id, s.status, s.tariff_id)
                for s in Service.select().where(Service.id == world["active"])
            ],
            "orders": [(o.id, o.status) for o in Order.select().order_by(Order.id)],
            "counts": [
                m.select().count()
                for m in (Client, User, Department, Tariff, ProcessingModule, Service)
            ]
            + [
                m.select().count()
                for m in (ClientNote, Impersonation, PasswordReset)  # the client records
            ],
            "spares": (
                User.get_by_id(world["spare_staff"]).name,
                Department.get_by_id(world["spare_department"]).name,
                ProcessingModule.get_by_id(world["spare_module"]).name,
                Tariff.get_by_id(world["spare_tariff"]).name,
                Item.get_by_id(world["item"]).status,
            ),
        }


# --- logging in with CSRF on ------------------------------------------------------------


def token_of(response):
    """The CSRF token a page carries (its forms' field and the htmx header on <body>)."""
    body = response.get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', body)
    assert match, body[:300]
    assert f'"X-CSRFToken": "{match.group(1)}"' in body
    return match.group(1)


def browser_as(app, role):
    """A test client logged in through /login as ``role``; returns (client, csrf token)."""
    client = app.test_client()
    token = token_of(client.get("/login"))
    if role != "anonymous":
        response = client.post(
            "/login", data={"email": EMAILS[role], "password": PASSWORD, "csrf_token": token}
        )
        assert response.status_code == 302, response.get_data(as_text=True)[:300]
        token = token_of(client.get(START[role]))
    return client, token


def fill(value, world, n):
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in world:
            inner = world[value[1:-1]]
            return inner if isinstance(inner, dict) else str(inner)
        return value.format(**world, n=n)
    if isinstance(value, dict):
        return {k: fill(v, world, n) for k, v in value.items()}
    return value


# --- the matrix -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "data", "role", "expected"), CASES)
def test_rights(rights_app, method, path, data, role, expected):
    changes = method == "POST" and isinstance(expected, str) and expected != LOGIN
    world = _world(rights_app) if changes else rights_app.extensions["rights_world"]
    n = next(_counter)
    url = fill(path, world, n)
    client, token = browser_as(rights_app, role)
    before = None if changes else snapshot(rights_app, world)
    if method == "GET":
        response = client.get(url)
    else:
        response = client.post(url, data={**fill(data, world, n), "csrf_token": token})
    body = response.get_data(as_text=True)
    if expected == LOGIN:
        assert response.status_code == 302, (response.status_code, body[:300])
        assert urlsplit(response.headers["Location"]).path == "/login"
    elif isinstance(expected, str):
        assert response.status_code == 302, (response.status_code, body[:500])
        assert response.headers["Location"] == fill(expected, world, n)
    else:
        assert response.status_code == expected, (response.status_code, body[:500])
        assert "Traceback" not in body
        if expected in (403, 404):
            assert ("Not allowed" if expected == 403 else "Not found") in body
            assert "alice@example.com" not in body  # nothing of the other's data leaks
    if before is not None:
        assert snapshot(rights_app, world) == before, "a refused request changed something"


def test_the_matrix_covers_every_page_and_form_of_the_ui(rights_app):
    """Each GET/POST rule of the UI's blueprints has a row (new pages must be added),
    except in the areas of OWN_RIGHTS_TESTS."""
    adapter = rights_app.url_map.bind("localhost")
    world = rights_app.extensions["rights_world"]
    covered = set()
    for method, path, _, _ in MATRIX:
        endpoint, _ = adapter.match(urlsplit(fill(path, world, 0)).path, method=method)
        covered.add((endpoint, method))
    wanted = {
        (rule.endpoint, method)
        for rule in rights_app.url_map.iter_rules()
        if not rule.endpoint.startswith(("api.", "proxy.", "static"))
        and rule.endpoint.partition(".")[0] not in OWN_RIGHTS_TESTS
        for method in rule.methods & {"GET", "POST"}
    }
    assert wanted - covered == set()


# --- CSRF -------------------------------------------------------------------------------


def test_a_form_without_the_token_is_refused_and_changes_nothing(rights_app):
    client, token = browser_as(rights_app, "admin")
    count = lambda: _count(rights_app, Department)  # noqa: E731
    before = count()
    for data in ({"name": "No token"}, {"name": "No token", "csrf_token": "forged"}):
        response = client.post("/catalog/departments", data=data)
        assert response.status_code == 400
        assert "Bad request" in response.get_data(as_text=True)
        assert count() == before
    response = client.post("/catalog/departments", data={"name": "With token", "csrf_token": token})
    assert response.status_code == 302
    assert count() == before + 1


def test_a_task_action_without_the_token_is_refused(rights_app):
    world = _world(rights_app)
    client, token = browser_as(rights_app, "staff_in")
    before = snapshot(rights_app, world)
    for action, data in (("comment", {"text": "hi"}), ("assign", {}), ("cancel", {})):
        response = client.post(f"/tasks/{world['task']}/{action}", data=data)
        assert response.status_code == 400, action
    assert snapshot(rights_app, world) == before
    response = client.post(
        f"/tasks/{world['task']}/comment", data={"text": "hi", "csrf_token": token}
    )
    assert response.status_code == 302
    assert snapshot(rights_app, world)["events"] == before["events"] + 1


def test_an_htmx_post_without_the_csrf_header_is_refused(rights_app):
    world = _world(rights_app)
    client, token = browser_as(rights_app, "client")
    url = f"/my/orders/{world['carol_order']}/pay"
    response = client.post(url, headers={"HX-Request": "true", "HX-Target": "order"})
    assert response.status_code == 400
    response = client.post(url, headers={"HX-Request": "true", "X-CSRFToken": "forged"})
    assert response.status_code == 400
    assert _order_status(rights_app, world["carol_order"]) == "unpaid"
    response = client.post(url, headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 200
    assert 'data-status="paid"' in response.get_data(as_text=True)
    assert _order_status(rights_app, world["carol_order"]) == "paid"


def test_logging_in_without_the_token_is_refused(rights_app):
    client = rights_app.test_client()
    response = client.post("/login", data={"email": EMAILS["admin"], "password": PASSWORD})
    assert response.status_code == 400
    assert urlsplit(client.get("/tasks").headers["Location"]).path == "/login"


def _count(app, model):
    with app.app_context(), database.connection_context():
        return model.select().count()


def _order_status(app, order_id):
    with app.app_context(), database.connection_context():
        return Order.get_by_id(order_id).status


@pytest.mark.parametrize("action", ["restart", "cancel", "take-over"])
def test_the_api_fences_operations_as_the_pages_do(rights_app, action):
    """Run now, cancel and take over: the operation's department's staff and admins, on
    the API as on the pages; another department's staff get 403 and nothing changes."""
    from app.services import accounts

    world = _world(rights_app)
    before = snapshot(rights_app, world)
    with rights_app.app_context(), database.connection_context():
        tokens = {role: accounts.create_token(EMAILS[role]) for role in ("staff_out", "staff_in")}
    client = rights_app.test_client()
    path = f"/api/v1/operations/{world['op']}/{action}"
    refused = client.post(path, headers={"Authorization": f"Bearer {tokens['staff_out']}"})
    assert refused.status_code == 403, refused.get_json()
    assert refused.get_json()["error"]["message"].startswith(
        f"operation #{world['op']} belongs to a department you are not in"
    )
    assert snapshot(rights_app, world) == before
    allowed = client.post(path, headers={"Authorization": f"Bearer {tokens['staff_in']}"})
    assert allowed.status_code in (200, 202), allowed.get_json()
