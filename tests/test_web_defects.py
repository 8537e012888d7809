"""What a provider's staff and clients expect (issue 12, defects) through Flask's test
client: a cancelled setup (``setup_cancelled``, its reason, "Retry setup"), modules'
departments, "Set up manually" assigns its task, the live service heading, the count
chips, tariff prices and currencies, the cancel reason's limit and the wording of kinds,
attempts, who cancelled, times and module ranks."""

import re

from app.models import Operation, ProcessingModule, Service, Task
from tests.support import (
    HTMX,
    db,
    html,
    login,
    make_client_login,
    paid_service,
)


def manual_setup(api, client_id=None):
    """A paid service on the manual setup module, its open operation waiting for a task."""
    department, module, tariff, customer = api.catalog("manual")
    order = api.order(client_id or customer["id"], tariff["id"])
    status, body = api.pay(order)
    assert status == 200, body
    api.wait_operation(body["operation_id"], ("waiting_task",))
    with db(api.client.application):
        task_id = Task.get(Task.operation == body["operation_id"]).id
    return {
        "department": department,
        "module": module,
        "tariff": tariff,
        "service_id": order["service_id"],
        "operation_id": body["operation_id"],
        "task_id": task_id,
    }


def service_status(app, service_id):
    with db(app):
        service = Service.get_by_id(service_id)
        return service.status, service.setup_cancelled_reason


# --- a cancelled setup --------------------------------------------------------------------


def test_cancelling_the_setup_task_leaves_the_service_setup_cancelled_with_its_reason(
    app, client, admin
):
    carol = make_client_login(app)
    ids = manual_setup(admin, client_id=carol)
    response = client.post(
        f"/tasks/{ids['task_id']}/cancel", data={"reason": "The rack is full until March"}
    )
    assert response.status_code == 302
    assert service_status(app, ids["service_id"]) == (
        "setup_cancelled",
        "The rack is full until March",
    )
    page = html(client.get(f"/services/{ids['service_id']}"))
    assert "Setup cancelled:" in page and "The rack is full until March" in page
    assert "Retry setup" in page

    # the client reads it, and the page no longer polls
    carol_browser = app.test_client()
    login(carol_browser, "carol@example.com", "carol-password")
    mine = html(carol_browser.get(f"/my/services/{ids['service_id']}"))
    assert "Setup cancelled: The rack is full until March" in mine
    assert "being set up" not in mine and "hx-trigger" not in mine
    listing = html(carol_browser.get("/my"))
    assert "setup cancelled" in listing and "The rack is full until March" in listing

    # staff retry it: a new open operation, the service is being set up again
    response = client.post(f"/services/{ids['service_id']}/retry-setup")
    assert response.status_code == 302
    assert service_status(app, ids["service_id"]) == ("processing", None)
    with db(app):
        ops = list(Operation.select().where(Operation.service == ids["service_id"]))
    retried = [op for op in ops if op.id != ids["operation_id"]]
    assert len(retried) == 1 and retried[0].kind == "open"
    assert retried[0].params["requested_by"] == "admin@example.com"
    admin.wait_operation(retried[0].id, ("waiting_task",))
    assert "being set up" in html(carol_browser.get(f"/my/services/{ids['service_id']}"))
    # a second retry is refused: the service is not setup_cancelled any more
    client.post(f"/services/{ids['service_id']}/retry-setup")
    assert "only a service whose setup was cancelled" in html(
        client.get(f"/services/{ids['service_id']}")
    )


def test_api_cancel_operation_with_a_reason_and_retry_setup(app, admin):
    ids = manual_setup(admin)
    code, body = admin.post(f"/operations/{ids['operation_id']}/cancel", {"reason": "x" * 1001})
    assert code == 422 and "1,000" in body["error"]["fields"]["reason"]
    assert service_status(app, ids["service_id"])[0] == "processing"
    admin.ok("post", f"/operations/{ids['operation_id']}/cancel", {"reason": "Out of stock"})
    service = admin.ok("get", f"/services/{ids['service_id']}")
    assert service["status"] == "setup_cancelled"
    assert service["setup_cancelled_reason"] == "Out of stock"

    op = admin.ok("post", f"/services/{ids['service_id']}/retry-setup", status=202)
    assert op["kind"] == "open" and op["id"] != ids["operation_id"]
    service = admin.ok("get", f"/services/{ids['service_id']}")
    assert service["status"] == "processing" and service["setup_cancelled_reason"] is None
    # the state machine's moves are the billing system's events (app.services.events)
    assert "service.setup_cancelled" in str(admin.ok("get", "/event-types"))
    code, body = admin.post(f"/services/{ids['service_id']}/retry-setup")
    assert code == 409, body
    code, _ = admin.post("/services/999999/retry-setup")
    assert code == 404


def test_running_a_cancelled_setup_again_sets_the_service_up_again(app, client, admin):
    ids = manual_setup(admin)
    admin.ok("post", f"/operations/{ids['operation_id']}/cancel")
    assert service_status(app, ids["service_id"]) == ("setup_cancelled", None)
    page = html(client.get(f"/services/{ids['service_id']}"))
    assert "no reason was given" in page
    # "Run now" on the cancelled operation: the setup goes on
    admin.ok("post", f"/operations/{ids['operation_id']}/restart")
    assert service_status(app, ids["service_id"]) == ("processing", None)


def test_cancelling_another_operation_leaves_the_service_as_it_is(app, admin):
    ids = manual_setup(admin)
    admin.ok(
        "post",
        f"/tasks/{ids['task_id']}/close",
        {
            "fields": {
                "hostname": "h.example.net",
                "ip": "203.0.113.5",
                "username": "root",
                "password": "pw-123456",
            }
        },
    )
    op = admin.ok("post", f"/services/{ids['service_id']}/suspend", status=202)
    admin.wait_operation(op["id"], ("waiting_task",))
    admin.ok("post", f"/operations/{op['id']}/cancel", {"reason": "not now"})
    assert service_status(app, ids["service_id"]) == ("active", None)


# --- modules' departments -----------------------------------------------------------------


def test_a_module_needs_a_department_on_the_form_and_the_api(app, client, admin):
    code, body = admin.post(
        "/modules", {"name": "No dept", "type": "sandbox", "department_id": None}
    )
    assert code == 422, body
    assert "every module needs one" in body["error"]["fields"]["department_id"]
    # not given: the default department, Support, made when there is none
    module = admin.ok("post", "/modules", {"name": "Defaulted", "type": "sandbox"}, status=201)
    support = [d for d in admin.ok("get", "/departments")["departments"] if d["name"] == "Support"]
    assert len(support) == 1 and module["department_id"] == support[0]["id"]
    again = admin.ok("post", "/modules", {"name": "Defaulted 2", "type": "sandbox"}, status=201)
    assert again["department_id"] == support[0]["id"]
    # a PUT without it keeps the module's department
    billing = admin.ok("post", "/departments", {"name": "Billing"})
    admin.ok(
        "put", f"/modules/{module['id']}", {"name": "Defaulted", "department_id": billing["id"]}
    )
    kept = admin.ok("put", f"/modules/{module['id']}", {"name": "Renamed"})
    assert kept["department_id"] == billing["id"]

    form = html(client.get("/catalog/modules/new"))
    assert "every module needs one" in form and "put in Support" in form
    assert "No department" not in form
    before = len(admin.ok("get", "/modules")["modules"])
    response = client.post(
        "/catalog/modules/new",
        data={"name": "Web no dept", "type": "sandbox", "department_id": "", "enabled": "1"},
    )
    assert response.status_code == 422
    assert "every module needs one, or its tasks would reach nobody" in html(response)
    assert len(admin.ok("get", "/modules")["modules"]) == before


def test_migration_0011_gives_modules_without_a_department_the_default_one(app):
    import importlib

    from playhouse.migrate import SchemaMigrator

    from app.db import database
    from app.models import Department

    with db(app):
        lone = ProcessingModule.create(name="Old", type="sandbox", config={}, department=None)
        migration = importlib.import_module("app.migrations.0011_setup_cancelled")
        db_ = database.obj if hasattr(database, "obj") else database

        class Again(SchemaMigrator.from_database(db_).__class__):
            def add_column(self, *args, **kwargs):  # the column is there already
                return []

            def migrate(self, *operations):
                return None

        migration.up(Again(db_), db_)
        support = Department.get(Department.name == "Support")
        assert ProcessingModule.get_by_id(lone.id).department_id == support.id


# --- set up manually ------------------------------------------------------------------------


def test_set_up_manually_assigns_the_task_to_whoever_clicked_it(app, client, admin):
    ids = paid_service(
        admin, config={"fail_first": 5}, module_fields={"retry_delay": 300}, wait=("retry_wait",)
    )
    response = client.post(f"/operations/{ids['operation_id']}/take-over")
    assert response.status_code == 302
    with db(app):
        task = Task.get(Task.operation == ids["operation_id"])
        assert task.assignee.email == "admin@example.com" and task.status == "in_work"
    assert "assigned to you" in html(client.get(f"/tasks/{task.id}"))
    # through the API too
    other = paid_service(
        admin, config={"fail_first": 5}, module_fields={"retry_delay": 300}, wait=("retry_wait",)
    )
    task = admin.ok("post", f"/operations/{other['operation_id']}/take-over")
    assert task["assignee_id"] is not None and task["status"] == "in_work"


# --- the live service heading ---------------------------------------------------------------


def test_the_service_heading_shows_the_new_tariff_after_a_change(app, client, admin):
    ids = manual_setup(admin)
    admin.ok(
        "post",
        f"/tasks/{ids['task_id']}/close",
        {"fields": {"hostname": "h", "ip": "203.0.113.5", "username": "u", "password": "pw-1234"}},
    )
    bigger = admin.ok(
        "post",
        "/tariffs",
        {
            "name": "VPS XL",
            "product_type": "vps",
            "price": "19.99",
            "internal_name": ids["tariff"]["internal_name"] + "-xl",
            "module_ids": [ids["module"]["id"]],
        },
    )
    op = admin.ok(
        "post",
        f"/services/{ids['service_id']}/change_tariff",
        {"tariff_id": bigger["id"]},
        status=202,
    )
    admin.wait_operation(op["id"], ("waiting_task",))
    live = {**HTMX, "HX-Target": "service-live"}
    heading = re.compile(r'<h1 id="service-heading">([^<]*)</h1>')
    before = html(client.get(f"/services/{ids['service_id']}", headers=live))
    assert heading.search(before).group(1) == f"Service #{ids['service_id']} · VPS S"
    with db(app):
        task_id = Task.get(Task.operation == op["id"]).id
    admin.ok("post", f"/tasks/{task_id}/close", {})
    # the live refresh (what the page polls) and the page carry the new tariff's name
    after = html(client.get(f"/services/{ids['service_id']}", headers=live))
    assert heading.search(after).group(1) == f"Service #{ids['service_id']} · VPS XL"
    page = html(client.get(f"/services/{ids['service_id']}"))
    assert page.count("<h1") == 1 and "VPS XL</h1>" in page


# --- count chips ------------------------------------------------------------------------------


def chips(body):
    return {s: int(n) for s, n in re.findall(r'data-count="(\w+)">(\d+)<', body)}


def test_count_chips_agree_with_the_rows_they_are_refreshed_with(app, client, admin):
    first = manual_setup(admin)
    second = manual_setup(admin)
    live = {**HTMX, "HX-Target": "operations-live"}
    body = html(client.get("/operations", headers=live))
    assert chips(body)["waiting_task"] == 2
    # filtered by module: the chips count what the rows show
    body = html(client.get(f"/operations?module={first['module']['id']}&status=", headers=live))
    rows = re.findall(r'<tr id="operation-(\d+)"', body)
    assert rows == [str(first["operation_id"])]
    assert chips(body)["waiting_task"] == 1
    # a refresh after a change: chips and rows change together
    admin.ok("post", f"/operations/{second['operation_id']}/cancel")
    body = html(client.get("/operations", headers=live))
    assert re.findall(r'<tr id="operation-(\d+)"', body) == [str(first["operation_id"])]
    assert chips(body)["waiting_task"] == 1


# --- prices, currencies and the cancel reason ------------------------------------------------


def tariff_body(**changes):
    return {
        "name": "T",
        "product_type": "vps",
        "price": "9.99",
        "internal_name": "t-defects",
        **changes,
    }


def test_a_price_has_at_most_two_decimals_and_a_currency_is_iso_4217(app, client, admin):
    before = len(admin.ok("get", "/tariffs?archived=1")["tariffs"])
    for price in ("0.001", "9.999", 1.005):
        code, body = admin.post("/tariffs", tariff_body(price=price))
        assert code == 422, (price, body)
        assert body["error"]["fields"]["price"].startswith("At most 2 decimal places")
    for currency in ("EURO", "XYZ", "US", "12$", 5, "XXX"):
        code, body = admin.post("/tariffs", tariff_body(currency=currency))
        assert code == 422, (currency, body)
        assert "ISO 4217" in body["error"]["fields"]["currency"]
    assert len(admin.ok("get", "/tariffs?archived=1")["tariffs"]) == before
    made = admin.ok("post", "/tariffs", tariff_body(price="9.990", currency="eur"), status=201)
    assert made["price"] == "9.99" and made["currency"] == "EUR"

    form = html(client.get("/catalog/tariffs/new"))
    assert "At most 2 decimal places." in form and "ISO 4217" in form
    assert 'maxlength="3"' not in form  # the browser no longer cuts "EURO" to "EUR"
    response = client.post(
        "/catalog/tariffs/new",
        data={
            "name": "W",
            "product_type": "vps",
            "price": "0.001",
            "currency": "EURO",
            "period": "month",
            "internal_name": "w-defects",
        },
    )
    assert response.status_code == 422
    page = html(response)
    assert "At most 2 decimal places, such as 9.99" in page
    assert "Not an ISO 4217 currency code" in page
    assert len(admin.ok("get", "/tariffs?archived=1")["tariffs"]) == before + 1


def test_the_task_cancel_reason_is_limited_and_says_so(app, client, admin):
    ids = manual_setup(admin)
    page = html(client.get(f"/tasks/{ids['task_id']}"))
    assert "at most 1,000 characters" in page
    response = client.post(f"/tasks/{ids['task_id']}/cancel", data={"reason": "r" * 1001})
    assert response.status_code == 422
    assert "At most 1,000 characters." in html(response)
    with db(app):
        assert Task.get_by_id(ids["task_id"]).status == "new"
    code, body = admin.post(f"/tasks/{ids['task_id']}/cancel", {"reason": "r" * 1001})
    assert code == 422 and body["error"]["fields"]["reason"] == "At most 1,000 characters."
    admin.ok("post", f"/tasks/{ids['task_id']}/cancel", {"reason": "r" * 1000})


# --- wording -------------------------------------------------------------------------------


def test_kinds_read_as_their_label_and_cancelled_says_cancelled(app, client, admin):
    ids = manual_setup(admin)
    op_id = ids["operation_id"]
    page = html(client.get(f"/operations/{op_id}"))
    assert f"Operation #{op_id} · Set up · Service #{ids['service_id']}" in page
    assert "· open ·" not in page
    assert f"Operation #{op_id} (Set up)" in html(client.get(f"/tasks/{ids['task_id']}"))
    rows = html(client.get("/operations", headers={**HTMX, "HX-Target": "operations-live"}))
    row = re.search(rf'<tr id="operation-{op_id}".*?</tr>', rows, re.S).group(0)
    assert "<td>Set up" in row and "<td>open" not in row
    assert "<td>Set up</td>" in html(client.get(f"/services/{ids['service_id']}"))
    admin.ok("post", f"/operations/{op_id}/cancel")
    page = html(client.get(f"/operations/{op_id}"))
    assert "<dt>Cancelled by</dt><dd>admin@example.com</dd>" in page
    assert "Completed by" not in page


def test_attempts_past_the_maximum_read_truthfully(app, client, admin):
    ids = paid_service(
        admin,
        config={"fail_first": 9, "permanent_failures": True},
        module_fields={"max_attempts": 1, "retry_delay": 1},
        wait=("manual",),
    )
    op_id = ids["operation_id"]
    admin.ok("post", f"/operations/{op_id}/restart")
    admin.wait_operation(op_id, ("manual",))
    with db(app):
        assert Operation.get_by_id(op_id).attempts == 2
    page = html(client.get(f"/operations/{op_id}"))
    assert "2 / 1" not in page
    assert re.search(r"2 attempts\s*<span class=\"muted small\">\(max 1\)</span>", page)


def test_why_this_module_formats_its_time_and_says_what_is_true_of_the_item(app, client, admin):
    ids = paid_service(admin)
    page = html(client.get(f"/services/{ids['service_id']}"))
    section = page[page.index("Why this module") :]
    assert "not ranked" not in section
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d UTC", section) is None  # no raw ISO
    assert re.search(
        r"<time datetime=\"[^\"]+\"[^>]*>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>", section
    )
    with db(app):
        service = Service.get_by_id(ids["service_id"])
        assert service.module_choice["candidates"][0]["item"] in ("ready", "not needed")
    assert "<td>" + service.module_choice["candidates"][0]["item"] + "</td>" in section
