"""A real browser (chromium driven by Playwright): staff suspend a service giving a reason,
the client reads it in the client area; once resumed the client asks for a new password
and sees it when the operation is done. CSRF is on; the page runs without script errors
under the strict Content-Security-Policy."""

import pytest
from playwright.sync_api import expect

from app.db import database
from tests import support

pytestmark = pytest.mark.browser

ADMIN = ("admin@example.com", "admin-password")
CLIENT = ("carol@example.com", "carol-password")


def _active_service(app):
    """Carol's active sandbox service (and an admin); its id and first password."""
    from app.models import Item, Service
    from app.services import accounts, catalog, orders

    with app.app_context(), database.connection_context():
        accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        )
        carol = accounts.create_client(
            {"name": "Carol Client", "email": CLIENT[0], "password": CLIENT[1]}, with_login=True
        )
        department = catalog.create_department({"name": "Support"})
        module = catalog.create_module(
            {"name": "Sandbox panel", "type": "sandbox", "department_id": department.id}
        )
        tariff = catalog.create_tariff(
            {
                "name": "VPS S",
                "product_type": "vps",
                "price": "9.99",
                "internal_name": "vps-s",
                "module_ids": [module.id],
            }
        )

    def item_ready():
        with app.app_context(), database.connection_context():
            return Item.get(Item.module == module.id).status == "ready"

    support.wait_for(item_ready, timeout=10, message="the sandbox item")
    with app.app_context(), database.connection_context():
        order = orders.create({"client_id": carol.id, "tariff_id": tariff.id, "params": {}})
        orders.mark_paid(order.id, by="test")
        service_id = order.service_id

    def active():
        with app.app_context(), database.connection_context():
            service = Service.get_by_id(service_id)
            return service if service.status == "active" else None

    service = support.wait_for(active, timeout=15, message="the service to be active")
    return service_id, service.details["password"]


def _wait_status(app, service_id, status):
    from app.models import Service

    def reached():
        with app.app_context(), database.connection_context():
            return Service.get_by_id(service_id).status == status

    support.wait_for(reached, timeout=30, message=f"the service to be {status}")


def _watch(page, errors):
    def on_console(msg):
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))


def _log_in(page, path, email, password):
    page.goto(path)
    page.fill("#f-email", email)
    page.fill("#f-password", password)
    page.click("button:has-text('Log in')")


def test_suspend_with_a_reason_then_the_client_gets_a_new_password(live_app, chromium):
    base_url = live_app.config["BASE_URL"]
    service_id, first_password = _active_service(live_app)
    errors = []

    staff = chromium.new_context(base_url=base_url).new_page()
    _watch(staff, errors)
    _log_in(staff, f"/services/{service_id}", *ADMIN)
    expect(staff).to_have_url(f"{base_url}/services/{service_id}")
    staff.fill("#suspend-form #f-reason", "Invoice #42 is unpaid")
    staff.click("#suspend-form button:has-text('Suspend')")
    _wait_status(live_app, service_id, "suspended")
    staff.goto(f"/services/{service_id}")  # (a loaded machine may not follow the redirect soon)
    expect(staff.locator("#service-live")).to_have_attribute("data-status", "suspended")
    expect(staff.locator("#suspension-reason")).to_have_text(
        "Invoice #42 is unpaid", timeout=20_000
    )

    client = chromium.new_context(base_url=base_url).new_page()
    _watch(client, errors)
    _log_in(client, "/login", *CLIENT)
    client.goto(f"/my/services/{service_id}")
    expect(client.locator("#suspension-reason")).to_have_text(
        "Suspended: Invoice #42 is unpaid", timeout=20_000
    )
    expect(client.locator("#action-change_password")).to_have_count(0)

    staff.click("button:has-text('Resume')")
    _wait_status(live_app, service_id, "active")

    client.reload()
    expect(client.locator("#suspension-reason")).to_have_count(0)
    client.click("#action-change_password summary")
    client.click("#action-change_password button:has-text('Yes, change the password')")
    expect(client.locator(".alert-success")).to_contain_text("Change password: requested")
    # the page follows the operation by itself until the new password is there
    secret = client.locator(".secret-value").first
    support.wait_for(
        lambda: (secret.text_content() or first_password) != first_password,
        timeout=30,
        message="the new password on the client's page",
    )
    new_password = secret.text_content()
    assert len(new_password) == 24
    client.locator("details.secret summary").first.click()
    expect(secret).to_be_visible()
    with live_app.app_context(), database.connection_context():
        from app.models import Email

        notices = [e.kind for e in Email.select().where(Email.service == service_id)]
    assert sorted(notices) == [
        "notice_change_password",
        "notice_resume",
        "notice_suspend",
        "welcome",
    ]
    assert errors == []
