"""The browser UI through Flask's test client: pages by role, forms, htmx partials, flows."""

import re

import pytest

import modules
from app.models import Client, Department, Item, Operation, Order, ProcessingModule, Service, Task
from modules.base import ModuleType, Result
from tests.support import (
    ADMIN,
    HTMX,
    db,
    html,
    login,
    make_client_login,
    make_staff,
    paid_service,
    wait_for,
)

# --- access -----------------------------------------------------------------------------


PROTECTED = [
    "/",
    "/dashboard",
    "/operations",
    "/operations/1",
    "/tasks",
    "/tasks/1",
    "/services",
    "/services/1",
    "/orders",
    "/clients",
    "/clients/new",
    "/clients/1",
    "/outbox",
    "/catalog/tariffs",
    "/catalog/modules",
    "/catalog/product-types",
    "/catalog/departments",
    "/my",
    "/my/order",
    "/my/orders",
    "/my/services/1",
]


@pytest.mark.parametrize("path", PROTECTED)
def test_anonymous_visitor_is_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login"), location
    if path != "/":
        assert "next=" in location


def test_anonymous_htmx_request_gets_hx_redirect(client):
    response = client.get("/operations", headers={**HTMX, "HX-Target": "operations-live"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login?next=")


def test_login_page_renders_a_form_with_csrf_field(client):
    response = client.get("/login")
    assert response.status_code == 200
    body = html(response)
    assert 'name="csrf_token"' in body
    assert 'name="email"' in body and 'name="password"' in body
    assert 'hx-headers=\'{"X-CSRFToken": ' in body
    assert "/static/vendor/htmx-2.0.11/htmx.min.js" in body


def test_bad_credentials_show_a_form_error(client, api):
    response = client.post("/login", data={"email": ADMIN[0], "password": "wrong"})
    assert response.status_code == 422
    assert "Wrong email or password." in html(response)
    assert client.get("/operations").status_code == 302  # still anonymous
    response = client.post("/login", data={})
    assert response.status_code == 422


def test_login_honours_only_local_next(client, api):
    response = client.post("/login?next=/services", data={"email": ADMIN[0], "password": ADMIN[1]})
    assert response.headers["Location"] == "/services"
    client.post("/logout")
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = client.post(
            "/login", data={"email": ADMIN[0], "password": ADMIN[1], "next": evil}
        )
        assert response.status_code == 302
        assert response.headers["Location"] == "/", evil
        client.post("/logout")


def test_logout_needs_post_and_logs_out(client, admin):
    assert client.get("/logout").status_code == 405
    response = client.post("/logout")
    assert response.status_code == 302
    assert client.get("/operations").status_code == 302


def test_home_sends_each_role_to_its_start(app, client, admin):
    assert client.get("/").headers["Location"] == "/dashboard"
    client.post("/logout")
    make_client_login(app)
    login(client, "carol@example.com", "carol-password")
    assert client.get("/").headers["Location"] == "/my"


def test_roles_are_enforced(app, client, api):
    make_client_login(app)
    login(client, "carol@example.com", "carol-password")
    for path in ("/operations", "/tasks", "/services", "/catalog/tariffs", "/outbox"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "Not allowed" in html(response)
    client.post("/logout")
    make_staff(app, "sam@example.com")
    login(client, "sam@example.com", "staff-password")
    assert client.get("/operations").status_code == 200
    for path in ("/catalog/tariffs", "/catalog/modules/new", "/clients/new", "/my"):
        assert client.get(path).status_code == 403, path


def test_error_pages_use_the_layout(client, admin):
    response = client.get("/services/999999")
    assert response.status_code == 404
    body = html(response)
    assert "Provisor" in body and 'class="mainnav"' in body
    assert "service 999999 not found" in body.lower()
    assert "Traceback" not in body
    assert client.get("/no-such-page").status_code == 404


# --- staff pages ------------------------------------------------------------------------


def test_every_staff_page_renders_for_an_admin(app, client, admin):
    ids = paid_service(admin)
    email_id = wait_for(lambda: admin.ok("get", "/emails")["emails"])[0]["id"]
    with db(app):
        department_id = Department.select().first().id
    pages = {
        "/operations": "Current operations",
        f"/operations/{ids['operation_id']}": f"Operation #{ids['operation_id']}",
        "/services": "Alice Client",
        f"/services/{ids['service_id']}": "Why this module",
        "/orders": f"#{ids['order']['id']}",
        "/clients": "Alice Client",
        "/clients/new": "New client",
        "/outbox": "Your VPS S is ready",
        f"/outbox/{email_id}": "Thank you for choosing us.",
        "/tasks": "No open tasks",
        "/catalog/tariffs": "VPS S",
        "/catalog/tariffs/new": "New tariff",
        f"/catalog/tariffs/{ids['tariff']['id']}/edit": "Edit tariff VPS S",
        "/catalog/modules": ids["module"]["name"],
        "/catalog/modules/new": "Choose a module type",
        f"/catalog/modules/{ids['module']['id']}/edit": "Latency (ms)",
        "/catalog/product-types": "Virtual private server",
        "/catalog/product-types/2/edit": "hostname | Hostname | hostname | required",
        "/catalog/departments": "New department",
    }
    for path, text in pages.items():
        response = client.get(path)
        assert response.status_code == 200, (path, html(response)[:300])
        body = html(response)
        assert text in body, (path, text)
        assert body.lstrip().lower().startswith("<!doctype html>"), path
    assert department_id


def test_operations_page_or_partial(app, client, admin):
    ids = paid_service(admin)
    page = client.get("/operations?status=done")
    assert page.status_code == 200
    body = html(page)
    assert body.lstrip().lower().startswith("<!doctype html>")
    assert 'id="operations-live"' in body
    assert 'hx-trigger="every 1s"' in body
    assert 'hx-include="#operation-filters, #operations-page"' in body
    assert f'id="operation-{ids["operation_id"]}"' in body
    partial = client.get(
        "/operations?status=done", headers={**HTMX, "HX-Target": "operations-live"}
    )
    assert partial.status_code == 200
    part = html(partial)
    assert "<html" not in part and "<table" in part
    assert f'id="operation-{ids["operation_id"]}"' in part
    assert "Vary" in partial.headers and "HX-Request" in partial.headers["Vary"]
    # htmx aimed at another target gets the page
    other = client.get("/operations", headers={**HTMX, "HX-Target": "something-else"})
    assert "<!doctype html>" in html(other).lower()


def test_operations_filters_and_empty_state(app, client, admin):
    ids = paid_service(admin)
    op_id = ids["operation_id"]
    open_list = html(client.get("/operations"))
    assert f'id="operation-{op_id}"' not in open_list  # done: not in the open list
    assert "No operations in progress" in open_list
    assert f'id="operation-{op_id}"' in html(client.get(f"/operations?status=done&q=%23{op_id}"))
    by_service = html(client.get(f"/operations?status=done&q={ids['service_id']}"))
    assert f'id="operation-{op_id}"' in by_service
    none = html(client.get("/operations?status=done&kind=suspend"))
    assert "No operations match these filters." in none
    # nonsense filters are ignored, never a crash
    response = client.get("/operations?module=abc&status=bogus&kind=zzz&page=x")
    assert response.status_code == 200
    huge = 2**64
    for path in (f"/operations?module={huge}", f"/tasks?department={huge}", f"/operations/{huge}"):
        assert client.get(path).status_code in (200, 404), path
    assert client.get("/operations?module=²").status_code == 200
    module_filtered = html(
        client.get(f"/operations?status=done&module={ids['module']['id']}&kind=open")
    )
    assert f'id="operation-{op_id}"' in module_filtered


def test_operation_status_partial_polls_only_while_open(app, client, admin, sandbox_hold):
    sandbox_hold.hold("open")  # the attempt stays at the panel until released
    ids = paid_service(admin, wait=None)
    op_id = ids["operation_id"]
    admin.wait_operation(op_id, ("running",))
    headers = {**HTMX, "HX-Target": "operation-status"}
    running = html(client.get(f"/operations/{op_id}", headers=headers))
    assert running.lstrip().startswith("{#") is False
    assert 'id="operation-status"' in running and "<html" not in running
    assert 'hx-trigger="every 1s"' in running
    assert 'data-status="running"' in running
    sandbox_hold.release()
    admin.wait_operation(op_id, ("done",))
    done = html(client.get(f"/operations/{op_id}", headers=headers))
    assert 'data-status="done"' in done
    assert "hx-trigger" not in done
    assert "sandbox: created account" in done  # the module's log in the attempt
    page = html(client.get(f"/operations/{op_id}"))
    assert "<pre" in page and "Attempts" in page


def test_live_list_shows_attempts_errors_and_actions(app, client, admin):
    ids = paid_service(
        admin,
        config={"fail_first": 1, "permanent_failures": True},
        wait=("manual",),
    )
    op_id = ids["operation_id"]
    with db(app):
        task = Task.get(Task.operation == op_id)
    body = html(client.get("/operations", headers={**HTMX, "HX-Target": "operations-live"}))
    row = re.search(rf'<tr id="operation-{op_id}".*?</tr>', body, re.S).group(0)
    assert 'data-status="manual"' in row
    assert "1 / 3" in row
    assert "simulated failure of attempt 1" in row
    assert "Run now" in row and "Cancel" in row
    assert f"/tasks/{task.id}" in row and "Set up manually" in row
    # the detail page links to the task too
    assert f"/tasks/{task.id}" in html(client.get(f"/operations/{op_id}"))
    # cancel, then cancelling again is a conflict shown as a flash message
    response = client.post(f"/operations/{op_id}/cancel", data={"next": "/operations"})
    assert response.status_code == 302 and response.headers["Location"] == "/operations"
    with db(app):
        assert Operation.get_by_id(op_id).status == "cancelled"
        assert Task.get_by_id(task.id).status == "cancelled"
    response = client.post(f"/operations/{op_id}/cancel", follow_redirects=True)
    assert response.status_code == 200
    assert "can be cancelled" in html(response)
    # run now from cancelled: queued again, fails permanently again → manual
    response = client.post(f"/operations/{op_id}/restart", follow_redirects=True)
    assert f"Operation #{op_id} queued to run now." in html(response)
    admin.wait_operation(op_id, ("manual", "done"))
    # an unsafe next is ignored
    response = client.post(f"/operations/{op_id}/cancel", data={"next": "https://evil.example/"})
    assert response.headers["Location"] == f"/operations/{op_id}"


def test_manual_operation_without_a_task_says_so(app, client, admin):
    ids = paid_service(
        admin, config={"fail_first": 1, "permanent_failures": True}, wait=("manual",)
    )
    with db(app):
        Task.delete().where(Task.operation == ids["operation_id"]).execute()
    body = html(client.get("/operations"))
    assert "No task exists" in body


def test_services_list_search_and_detail(app, client, admin):
    ids = paid_service(admin)
    service_id = ids["service_id"]
    listing = html(client.get(f"/services?q={ids['client']['email']}"))
    assert f'id="service-{service_id}"' in listing
    assert f'id="service-{service_id}"' in html(client.get(f"/services?q=%23{service_id}"))
    assert "No services match this search." in html(client.get("/services?q=nobody-at-all"))
    partial = client.get("/services?q=VPS", headers={**HTMX, "HX-Target": "services-list"})
    assert "<html" not in html(partial) and f'id="service-{service_id}"' in html(partial)
    assert f'id="service-{service_id}"' in html(
        client.get(f"/services?client_id={ids['client']['id']}")
    )
    detail = html(client.get(f"/services/{service_id}"))
    with db(app):
        service = Service.get_by_id(service_id)
    assert service.details["hostname"] in detail
    # the root password is secret: behind a <details> reveal, not plain in the facts
    assert re.search(
        r'<details class="secret">.*?' + re.escape(service.details["password"]), detail, re.S
    )
    assert ids["module"]["name"] in detail and "chosen" in detail  # why this module
    assert "Your VPS S is ready" in detail  # its welcome email
    assert "hx-trigger" not in detail  # nothing open: no polling
    assert "Suspend" in detail and "Close service" in detail


def test_service_actions_and_their_errors(app, client, admin):
    ids = paid_service(admin)
    service_id = ids["service_id"]
    with db(app):
        before = Operation.select().where(Operation.service == service_id).count()
    # change tariff without a tariff: a field error, nothing queued
    response = client.post(f"/services/{service_id}/change_tariff", data={"tariff_id": ""})
    assert response.status_code == 422
    assert "Choose an existing tariff." in html(response)
    with db(app):
        assert Operation.select().where(Operation.service == service_id).count() == before
    # suspend → live timeline while it runs → suspended
    response = client.post(f"/services/{service_id}/suspend")
    assert response.status_code == 302
    wait_for(lambda: admin.ok("get", f"/services/{service_id}")["status"] == "suspended")
    detail = html(client.get(f"/services/{service_id}"))
    assert "Resume" in detail and "Suspend</button>" not in detail
    # suspending a suspended service is a conflict shown as a flash message
    response = client.post(f"/services/{service_id}/suspend", follow_redirects=True)
    assert response.status_code == 200
    assert "suspend needs it to be active" in html(response)
    assert client.post(f"/services/{service_id}/explode").status_code == 404


def test_service_timeline_polls_while_an_operation_is_open(app, client, admin, sandbox_hold):
    sandbox_hold.hold("open")  # the attempt stays at the panel until released
    ids = paid_service(admin, wait=("running",))
    headers = {**HTMX, "HX-Target": "service-live"}
    live = html(client.get(f"/services/{ids['service_id']}", headers=headers))
    assert 'id="service-live"' in live and 'hx-trigger="every 1s"' in live
    sandbox_hold.release()
    admin.wait_operation(ids["operation_id"])
    settled = html(client.get(f"/services/{ids['service_id']}", headers=headers))
    assert "hx-trigger" not in settled and 'data-status="active"' in settled


def test_service_page_lists_its_operations_a_page_at_a_time(app, client, admin):
    """A service with years of operations: its page lists the newest 50 (joined with their
    module, not one query each) with links to the older ones; it still refreshes itself
    while an operation is open, even one on a later page."""
    from datetime import timedelta

    from app.models import utcnow

    ids = paid_service(admin)
    service_id = ids["service_id"]
    now = utcnow()
    with db(app):
        first = Operation.get_by_id(ids["operation_id"])
        Operation.update(created_at=now - timedelta(days=400)).where(
            Operation.id == first.id
        ).execute()
        # the oldest one still open (people set it up by hand), then 59 done renewals
        stuck = Operation.create(
            kind="change_password",
            service=service_id,
            module=first.module_id,
            status="manual",
            created_at=now - timedelta(days=399),
        )
        renewals = [
            Operation.create(
                kind="renew",
                service=service_id,
                module=first.module_id,
                status="done",
                created_at=now - timedelta(days=60 - i),
                finished_at=now - timedelta(days=60 - i),
            ).id
            for i in range(59)
        ]
    page = html(client.get(f"/services/{service_id}"))
    shown = re.findall(r'<tr id="operation-(\d+)"', page)
    assert shown == [str(i) for i in reversed(renewals[9:])]
    assert "1–50 of 61" in page and f"/services/{service_id}?page=2" in page
    assert 'hx-trigger="every 1s"' in page  # the open operation is on page 2
    older = html(client.get(f"/services/{service_id}?page=2"))
    shown = re.findall(r'<tr id="operation-(\d+)"', older)
    expected = [*reversed(renewals[:9]), stuck.id, first.id]
    assert shown == [str(i) for i in expected]
    assert "51–61 of 61" in older and f"/services/{service_id}?page=1" in older
    assert f'hx-get="/services/{service_id}?page=2"' in older
    # past the last page: the last one, not an error
    assert "51–61 of 61" in html(client.get(f"/services/{service_id}?page=99"))


def test_orders_mark_paid(app, client, admin):
    _, _, tariff, customer = admin.catalog("sandbox")
    order = admin.order(customer["id"], tariff["id"])
    body = html(client.get("/orders?status=unpaid"))
    assert f'id="order-{order["id"]}"' in body and "Mark paid" in body
    response = client.post(f"/orders/{order['id']}/pay", follow_redirects=True)
    assert f"Order #{order['id']} marked paid" in html(response)
    with db(app):
        paid = Order.get_by_id(order["id"])
        assert paid.status == "paid" and paid.paid_by == ADMIN[0]
    response = client.post(f"/orders/{order['id']}/pay", follow_redirects=True)
    assert "already paid" in html(response)
    assert "No orders match this filter." in html(client.get("/orders?status=cancelled"))


def test_new_client_form(app, client, admin):
    response = client.post("/clients/new", data={"name": "", "email": "not-an-email"})
    assert response.status_code == 422
    body = html(response)
    assert "This field is required." in body and "Must be an email address." in body
    assert 'value="not-an-email"' in body
    with db(app):
        assert Client.select().count() == 0
    response = client.post(
        "/clients/new", data={"name": "Dave", "email": "dave@example.com", "password": ""}
    )
    assert response.status_code == 302
    listing = html(client.get("/clients?q=dave"))
    assert "dave@example.com" in listing
    assert "No clients match" in html(client.get("/clients?q=zzzz"))
    response = client.post("/clients/new", data={"name": "Dave", "email": "dave@example.com"})
    assert response.status_code == 422 and "An account with this email exists." in html(response)


def test_lists_are_paginated_and_keep_their_filters(app, client, admin):
    app.config["PAGE_SIZE"] = 2
    for n in range(3):
        admin.ok("post", "/clients", {"name": f"Pat {n}", "email": f"pat{n}@example.com"})
    first = html(client.get("/clients?q=pat"))
    assert "1–2 of 3 clients" in first
    assert 'href="/clients?q=pat&amp;page=2"' in first
    second = html(client.get("/clients?q=pat&page=2"))
    assert "3–3 of 3 clients" in second and "pat0@example.com" in second
    assert "Page 2 of 2" in second
    assert "1–2 of 3 clients" in html(client.get("/clients?q=pat&page=nonsense"))


@pytest.mark.parametrize(
    "path, target", [("/services", "services-list"), ("/clients", "clients-list")]
)
def test_a_search_too_long_is_said_by_the_search_field(app, client, admin, path, target):
    """SQLite refused the LIKE pattern of a 60,000-character search (a 500) once there were
    rows; a search is at most 200 characters, said by the field, nothing listed."""
    paid_service(admin)
    for q in ("x" * 201, "x" * 60_000):
        response = client.get(f"{path}?q={q}")
        body = html(response)
        assert response.status_code == 422
        assert re.search(r'<p class="field-error" id="err-q">At most 200 characters.</p>', body)
        assert 'maxlength="200"' in body and "This search cannot run." in body
        assert "<tbody>" not in body
        # the live search swaps the rows partial, which says it too (htmx swaps a 200)
        partial = client.get(f"{path}?q={q}", headers={**HTMX, "HX-Target": target})
        assert partial.status_code == 200 and "<html" not in html(partial)
        assert "This search cannot run." in html(partial)
        assert "At most 200 characters." in html(partial)
    response = client.get(f"{path}?q={'x' * 200}")
    assert response.status_code == 200 and "err-q" not in html(response)


def test_outbox_filter(app, client, admin):
    paid_service(admin)
    wait_for(lambda: admin.ok("get", "/emails?status=outbox")["emails"])
    assert "Your VPS S is ready" in html(client.get("/outbox?status=outbox"))
    assert "No emails match this filter." in html(client.get("/outbox?status=sent"))
    assert client.get("/outbox/424242").status_code == 404


# --- catalog ----------------------------------------------------------------------------


def test_tariff_form_errors_change_nothing_then_create_and_edit(app, client, admin):
    _, module, _, _ = admin.catalog("sandbox")
    with db(app):
        count = Service.select().count(), len(admin.ok("get", "/tariffs")["tariffs"])
    response = client.post(
        "/catalog/tariffs/new",
        data={"name": "", "product_type": "nope", "price": "-3", "internal_name": "bad name!"},
    )
    assert response.status_code == 422
    body = html(response)
    assert "This field is required." in body
    assert "Must be a non-negative amount such as 9.99." in body
    assert "Letters, digits, &#39;.&#39;, &#39;_&#39; and &#39;-&#39; only." in body
    assert 'aria-invalid="true"' in body
    assert len(admin.ok("get", "/tariffs")["tariffs"]) == count[1]
    response = client.post(
        "/catalog/tariffs/new",
        data={
            "name": "Web M",
            "product_type": "hosting",
            "price": "4.50",
            "currency": "usd",
            "period": "month",
            "internal_name": "web-m",
            "module_ids": [str(module["id"])],
        },
    )
    assert response.status_code == 302, html(response)
    tariffs = admin.ok("get", "/tariffs")["tariffs"]
    web = next(t for t in tariffs if t["name"] == "Web M")
    assert web["module_ids"] == [module["id"]] and web["orderable"] is True
    edit = html(client.get(f"/catalog/tariffs/{web['id']}/edit"))
    assert 'value="web-m"' in edit and "checked" in edit
    response = client.post(
        f"/catalog/tariffs/{web['id']}/edit",
        data={"name": "Web L", "product_type": "hosting", "price": "7", "internal_name": "web-m"},
    )
    assert response.status_code == 302
    web = admin.ok("get", f"/tariffs/{web['id']}")
    assert web["name"] == "Web L" and web["module_ids"] == [] and web["orderable"] is False
    listing = html(client.get("/catalog/tariffs"))
    assert "Web L" in listing


class HandMadeItems(ModuleType):
    """A module type whose items a person must create (like a dedicated server)."""

    id = "handmade-web-test"
    name = "Hand-made (test)"
    operations = {"open", "ensure_item"}
    creates_items = False

    def open(self, ctx):
        return Result.done("hm-1", {})


def test_item_that_cannot_be_created_shows_and_can_be_marked_ready(app, client, admin, monkeypatch):
    modules.types()  # load the registry, then add the test type for this test only
    monkeypatch.setitem(modules._registry, HandMadeItems.id, HandMadeItems)
    _, module, tariff, _ = admin.catalog(HandMadeItems.id)
    assert admin.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "manual"
    body = html(client.get("/catalog/tariffs"))
    assert "Cannot be created automatically, create it by hand" in body
    assert "Mark item ready" in body
    with db(app):
        item = Item.get(Item.module == module["id"])
    response = client.post(f"/catalog/items/{item.id}/ready", data={"remote_id": "pkg-7"})
    assert response.status_code == 302
    with db(app):
        # (the remote id typed here is lost: catalog.mark_item_ready's completion of the
        # ensure_item operation writes remote_id=None over it; reported to the services owner)
        assert Item.get_by_id(item.id).status == "ready"
    body = html(client.get("/catalog/tariffs"))
    assert "create it by hand" not in body and "Mark item ready" not in body
    assert client.post("/catalog/items/999999/ready").status_code == 404


def test_a_setting_naming_another_module_offers_those_of_its_capability(app, client, admin):
    """acme's dns_module_id lists the modules that can publish dns-01 records (powerdns),
    not the others, and keeps the chosen one selected."""
    pdns = admin.ok(
        "post",
        "/modules",
        {
            "name": "Our DNS",
            "type": "powerdns",
            "config": {
                "api_url": "http://127.0.0.1:9",
                "api_key": "k" * 16,
                "nameservers": "ns1.example.net",
            },
        },
        status=201,
    )
    admin.ok("post", "/modules", {"name": "Sandbox panel", "type": "sandbox"}, status=201)
    fieldset = html(client.get("/catalog/modules/config-fields?type=acme"))
    picker = re.search(r'<select[^>]*name="config.dns_module_id".*?</select>', fieldset, re.S)
    assert picker is not None, fieldset
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', picker.group(0))
    assert options == [("", "None"), (str(pdns["id"]), f"Our DNS (#{pdns['id']}, powerdns)")]
    described = {t["id"]: t for t in admin.ok("get", "/module-types")["module_types"]}
    fields = {f["name"]: f for f in described["acme"]["config_fields"]}
    assert fields["dns_module_id"]["module_with"] == "dns_challenges"
    assert fields["email"]["module_with"] is None


def test_module_form_config_fields_errors_and_secrets(app, client, admin):
    # the settings fieldset follows the chosen type (htmx swaps it in)
    fieldset = html(client.get("/catalog/modules/config-fields?type=http"))
    assert 'id="config-fields"' in fieldset and "Endpoint URL" in fieldset
    assert 'type="password"' in fieldset and 'name="config.secret"' in fieldset
    assert "Choose a module type" in html(client.get("/catalog/modules/config-fields?type="))
    new_form = html(client.get("/catalog/modules/new"))
    assert 'hx-get="/catalog/modules/config-fields"' in new_form
    assert 'hx-target="#config-fields"' in new_form
    with db(app):
        before = ProcessingModule.select().count()
    response = client.post(
        "/catalog/modules/new",
        data={
            "name": "Panel",
            "type": "http",
            "config.url": "ftp://nope",
            "config.secret": "",
            "config.timeout": "abc",
            "retry_delay": "0",
            "enabled": "1",
        },
    )
    assert response.status_code == 422
    body = html(response)
    assert "Must be an http:// or https:// URL." in body
    assert 'id="err-config-secret"' in body and "This field is required." in body
    assert "Must be a number." in body
    assert "Must be between 1 and 604800." in body
    with db(app):
        assert ProcessingModule.select().count() == before
    response = client.post(
        "/catalog/modules/new",
        data={
            "name": "Panel",
            "type": "http",
            "config.url": "https://panel.example.net/hook",
            "config.secret": "top-secret-value",
            "config.timeout": "5",
            "retry_delay": "60",
            "max_attempts": "4",
            "enabled": "1",
        },
    )
    assert response.status_code == 302, html(response)
    with db(app):
        module = ProcessingModule.get(ProcessingModule.name == "Panel")
    edit = html(client.get(f"/catalog/modules/{module.id}/edit"))
    assert "top-secret-value" not in edit
    assert "leave blank to keep it" in edit
    # a blank secret keeps the stored one; an unchecked box disables the module
    response = client.post(
        f"/catalog/modules/{module.id}/edit",
        data={
            "name": "Panel 2",
            "config.url": "https://panel.example.net/hook2",
            "config.secret": "",
            "config.timeout": "5",
            "retry_delay": "60",
            "max_attempts": "4",
        },
    )
    assert response.status_code == 302, html(response)
    with db(app):
        module = ProcessingModule.get_by_id(module.id)
        assert module.name == "Panel 2" and module.enabled is False
        assert module.config["secret"] == "top-secret-value"
        assert module.config["url"].endswith("/hook2")
    assert "Panel 2" in html(client.get("/catalog/modules"))


def test_sandbox_bool_setting_round_trips(app, client, admin):
    response = client.post(
        "/catalog/modules/new",
        data={
            "name": "Sbx",
            "type": "sandbox",
            "config.latency_ms": "5",
            "config.permanent_failures": "1",
            "enabled": "1",
        },
    )
    assert response.status_code == 302, html(response)
    with db(app):
        module = ProcessingModule.get(ProcessingModule.name == "Sbx")
        assert module.config["permanent_failures"] is True and module.enabled is True
    edit = html(client.get(f"/catalog/modules/{module.id}/edit"))
    assert re.search(r'name="config.permanent_failures"[^>]*checked', edit)


def test_product_type_form(app, client, admin):
    response = client.post(
        "/catalog/product-types/2/edit",
        data={
            "name": "VPS",
            "detail_fields": "Bad Name | x\nip | IP",
            "welcome_subject": "Hi {{",
            "welcome_template": "ok",
        },
    )
    assert response.status_code == 422
    body = html(response)
    assert "is not a field name" in body and "Template error" in body
    assert "Virtual private server" in html(client.get("/catalog/product-types"))
    response = client.post(
        "/catalog/product-types/2/edit",
        data={
            "name": "VPS server",
            "detail_fields": "hostname | Hostname | required\nip | IP | required\n"
            "password | Root password | required | secret",
            "welcome_subject": "Ready: {{ tariff.name }}",
            "welcome_template": "Hello {{ client.name }}",
        },
    )
    assert response.status_code == 302
    body = html(client.get("/catalog/product-types"))
    assert "VPS server" in body and "Root password" in body
    assert client.get("/catalog/product-types/999/edit").status_code == 404


def test_departments_form(app, client, admin):
    response = client.post("/catalog/departments", data={"name": "Billing"})
    assert response.status_code == 302
    response = client.post("/catalog/departments", data={"name": "Billing", "notify_email": "x"})
    assert response.status_code == 422
    body = html(response)
    assert "A department with this name exists." in body and "Must be an email address." in body
    with db(app):
        assert Department.select().where(Department.name == "Billing").count() == 1


# --- tasks ------------------------------------------------------------------------------


def test_task_assign_close_and_errors(app, client, admin):
    ids = paid_service(
        admin, config={"fail_first": 1, "permanent_failures": True}, wait=("manual",)
    )
    with db(app):
        task = Task.get(Task.operation == ids["operation_id"])
    listing = html(client.get("/tasks"))
    assert f'id="task-{task.id}"' in listing
    assert 'hx-trigger="every 2s"' in listing
    partial = html(client.get("/tasks", headers={**HTMX, "HX-Target": "tasks-live"}))
    assert "<html" not in partial and f'id="task-{task.id}"' in partial
    mine = html(client.get("/tasks?mine=1"))
    assert "No tasks match these filters." in mine
    detail = html(client.get(f"/tasks/{task.id}"))
    assert f"Set up service #{ids['service_id']} manually" in detail
    assert "simulated failure of attempt 1" in detail  # the operation's failed attempt
    assert "Assign to me" in detail and "Run the operation again now" in detail
    assert 'name="field.hostname"' in detail and "Root password" in detail
    # another staff member of the department cannot take it once it is mine
    response = client.post(f"/tasks/{task.id}/assign", follow_redirects=True)
    assert "The task is yours." in html(response)
    assert f'id="task-{task.id}"' in html(client.get("/tasks?mine=1"))
    client.post("/logout")
    make_staff(app, "bob@example.com", [ids["department"]["id"]])
    login(client, "bob@example.com", "staff-password")
    response = client.post(f"/tasks/{task.id}/assign", follow_redirects=True)
    assert "already assigned to Admin" in html(response)
    client.post("/logout")
    # staff of another department may not open it
    make_staff(app, "eve@example.com")
    login(client, "eve@example.com", "staff-password")
    assert client.get(f"/tasks/{task.id}").status_code == 403
    assert f'id="task-{task.id}"' not in html(client.get("/tasks"))
    client.post("/logout")
    login(client, *ADMIN)
    # missing required fields: messages by the fields, nothing changes
    response = client.post(
        f"/tasks/{task.id}/close", data={"field.hostname": "vps1.example.net", "field.ip": ""}
    )
    assert response.status_code == 422
    body = html(response)
    assert "IP address is required." in body and "Root password is required." in body
    assert 'value="vps1.example.net"' in body
    with db(app):
        assert Task.get_by_id(task.id).status == "in_work"
        assert Service.get_by_id(ids["service_id"]).status == "processing"
    response = client.post(
        f"/tasks/{task.id}/close",
        data={
            "field.hostname": "vps1.example.net",
            "field.ip": "203.0.113.5",
            "field.username": "root",
            "field.password": "pw-123456",
            "field.panel_url": "",
            "comment": "Set up by hand.",
        },
    )
    assert response.status_code == 302
    with db(app):
        service = Service.get_by_id(ids["service_id"])
        assert service.status == "active" and service.details["ip"] == "203.0.113.5"
        assert Operation.get_by_id(ids["operation_id"]).status == "done"
    detail = html(client.get(f"/tasks/{task.id}"))
    assert "Set up by hand." in detail and "Close the task" not in detail
    response = client.post(f"/tasks/{task.id}/close", data={}, follow_redirects=True)
    assert "already closed" in html(response)


def test_task_run_again(app, client, admin):
    ids = paid_service(
        admin, config={"fail_first": 1, "permanent_failures": True}, wait=("manual",)
    )
    with db(app):
        task = Task.get(Task.operation == ids["operation_id"])
    response = client.post(f"/tasks/{task.id}/restart", follow_redirects=True)
    assert f"Operation #{ids['operation_id']} queued to run now." in html(response)
    # attempt 2 succeeds (fail_first=1): the operation is done and the task closed
    admin.wait_operation(ids["operation_id"])
    with db(app):
        assert Task.get_by_id(task.id).status == "closed"


# --- the client area --------------------------------------------------------------------


def test_register_order_pay_in_sandbox_until_active(app, client, admin):
    app.config["SANDBOX_PAYMENTS"] = True
    _, _, tariff, _ = admin.catalog("sandbox")
    client.post("/logout")
    response = client.post(
        "/register", data={"name": "Nina", "email": "nina@example.com", "password": "short"}
    )
    assert response.status_code == 422 and "At least 8 characters." in html(response)
    response = client.post(
        "/register", data={"name": "Nina", "email": "nina@example.com", "password": "nina-pass-1"}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/my"
    assert "You have no services yet." in html(client.get("/my"))
    order_page = html(client.get("/my/order"))
    assert "VPS S" in order_page and "9.99" in order_page
    response = client.post("/my/order", data={"tariff_id": "999999"})
    assert response.status_code == 422 and "Choose an existing tariff." in html(response)
    response = client.post("/my/order", data={"tariff_id": str(tariff["id"])})
    assert response.status_code == 302 and response.headers["Location"] == "/my/orders"
    with db(app):
        order = Order.select().join(Client).where(Client.email == "nina@example.com").get()
    orders_page = html(client.get("/my/orders"))
    assert "Pay now (sandbox)" in orders_page and f"/my/orders/{order.id}/pay" in orders_page
    my = html(client.get("/my"))
    assert "awaiting payment" in my and 'hx-trigger="every 2s"' in my
    # the htmx payment answers with the order's row
    response = client.post(f"/my/orders/{order.id}/pay", headers={**HTMX, "HX-Target": "x"})
    assert response.status_code == 200
    row = html(response)
    assert row.strip().startswith("<tr") and 'data-status="paid"' in row
    wait_for(
        lambda: admin.ok("get", f"/services/{order.service_id}")["status"] == "active",
        message="service active",
    )
    my = html(client.get("/my"))
    assert 'data-status="active"' in my and "hx-trigger" not in my
    service_page = html(client.get(f"/my/services/{order.service_id}"))
    assert "Access details" in service_page and "hx-trigger" not in service_page
    with db(app):
        details = Service.get_by_id(order.service_id).details
    assert details["ip"] in service_page
    # paying twice is a conflict, shown in the row
    again = html(client.post(f"/my/orders/{order.id}/pay", headers=HTMX))
    assert "already paid" in again


def test_my_service_polls_only_while_being_set_up(app, client, admin, sandbox_hold):
    app.config["SANDBOX_PAYMENTS"] = True
    _, _, tariff, _ = admin.catalog("sandbox")
    sandbox_hold.hold("open")  # the service stays in setup until released
    client.post("/logout")
    make_client_login(app)
    login(client, "carol@example.com", "carol-password")
    client.post("/my/order", data={"tariff_id": str(tariff["id"])})
    with db(app):
        order = Order.select().order_by(Order.id.desc()).get()
    client.post(f"/my/orders/{order.id}/pay")
    headers = {**HTMX, "HX-Target": "my-services"}
    live = html(client.get("/my", headers=headers))
    assert "<html" not in live and 'hx-trigger="every 2s"' in live
    assert 'data-status="processing"' in live
    page = html(client.get(f"/my/services/{order.service_id}"))
    assert "Your service is being set up." in page and 'hx-trigger="every 2s"' in page
    sandbox_hold.release()
    wait_for(lambda: 'data-status="active"' in html(client.get("/my", headers=headers)))
    assert "hx-trigger" not in html(client.get("/my", headers=headers))


def test_without_sandbox_payments_payment_is_awaited(app, client, admin):
    _, _, tariff, customer = admin.catalog("sandbox")
    client.post("/logout")
    make_client_login(app)
    login(client, "carol@example.com", "carol-password")
    client.post("/my/order", data={"tariff_id": str(tariff["id"])})
    with db(app):
        order = Order.select().order_by(Order.id.desc()).get()
    body = html(client.get("/my/orders"))
    assert "Payment awaited." in body and "Pay now" not in body
    assert client.post(f"/my/orders/{order.id}/pay").status_code == 404
    with db(app):
        assert Order.get_by_id(order.id).status == "unpaid"


def test_a_client_sees_only_their_own(app, client, admin):
    app.config["SANDBOX_PAYMENTS"] = True
    ids = paid_service(admin)  # Alice's service (she has no login)
    _, _, tariff, _ = admin.catalog("sandbox")
    other_order = admin.order(ids["client"]["id"], tariff["id"])
    client.post("/logout")
    make_client_login(app)
    login(client, "carol@example.com", "carol-password")
    assert client.get(f"/my/services/{ids['service_id']}").status_code == 404
    assert client.post(f"/my/orders/{other_order['id']}/pay").status_code == 404
    with db(app):
        assert Order.get_by_id(other_order["id"]).status == "unpaid"
    assert "Alice" not in html(client.get("/my")) and "You have no services yet." in html(
        client.get("/my")
    )
    assert f"#{other_order['id']}<" not in html(client.get("/my/orders"))


def test_registration_can_be_turned_off(app, client):
    app.config["ALLOW_REGISTRATION"] = False
    assert client.get("/register").status_code == 404
    assert "Create a client account" not in html(client.get("/login"))


def test_register_validation_changes_nothing(app, client):
    response = client.post("/register", data={"name": "", "email": "x", "password": ""})
    assert response.status_code == 422
    body = html(response)
    assert "This field is required." in body and "Must be an email address." in body
    with db(app):
        assert Client.select().count() == 0


def test_an_order_fields_error_shows_on_the_card_that_was_sent_only(app, client, admin):
    """Two database tariffs share the order field 'prefix': a bad one typed on the first
    card shows its message and value there, not on the second."""
    _, module, first, _ = admin.catalog("sandbox", product_type="database")
    second = admin.ok(
        "post",
        "/tariffs",
        {"name": "DB L", "product_type": "database", "price": "4", "internal_name": "db-l",
         "module_ids": [module["id"]]},
    )  # fmt: skip
    client.post("/logout")
    make_client_login(app, "dora@example.com", "Dora", "dora-password")
    login(client, "dora@example.com", "dora-password")
    response = client.post(
        "/my/order", data={"tariff_id": str(first["id"]), "params.prefix": "Shop's"}
    )
    assert response.status_code == 422
    page = html(response)
    cards = {
        tariff["id"]: re.search(rf'<form[^>]*id="tariff-{tariff["id"]}".*?</form>', page, re.S)[0]
        for tariff in (first, second)
    }
    assert "field-error" in cards[first["id"]] and "Shop&#39;s" in cards[first["id"]]
    assert "field-error" not in cards[second["id"]] and "Shop" not in cards[second["id"]]
