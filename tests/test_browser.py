"""A real browser (Debian's chromium driven by Playwright) against the app on a real port.

The must-hold of the UI: a staff member watching Current operations sees a paid order's
operation appear, fail once, retry and finish without reloading the page, while the client
sees the service become active; CSRF is on, so forms and htmx requests carry the token.
"""

import re

import pytest

from app.db import database
from tests import support
from tests.support import ADMIN

pytestmark = pytest.mark.browser


def _catalog(app):
    """Admin, department, a slow sandbox module failing its first attempt, a tariff."""
    from app.models import Item
    from app.services import accounts, catalog

    with app.app_context(), database.connection_context():
        accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        )
        department = catalog.create_department({"name": "Support"})
        module_data = {
            "name": "Sandbox panel",
            "type": "sandbox",
            "config": {},
            "department_id": department.id,
            "retry_delay": 1,
            "max_attempts": 3,
        }
        module = catalog.create_module(module_data)
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
        # now slow and failing once, so that every status is visible in the browser
        catalog.update_module(
            module.id, {**module_data, "config": {"latency_ms": 1500, "fail_first": 1}}
        )
    return tariff.id


def _watch(page, errors):
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))


def _service_of(app, email):
    from app.models import Client, Service

    with app.app_context(), database.connection_context():
        return Service.select().join(Client).where(Client.email == email).get().id


def test_staff_sees_operation_live_while_client_pays(live_app, chromium, sandbox_hold):
    from playwright.sync_api import expect

    base = live_app.config["BASE_URL"]
    _catalog(live_app)
    errors = []

    # staff: log in and open Current operations before anything is paid
    staff = chromium.new_context(base_url=base).new_page()
    _watch(staff, errors)
    staff.goto("/operations")
    expect(staff).to_have_url(re.compile(r"/login\?next=%2Foperations|/login\?next=/operations"))
    staff.fill("#f-email", ADMIN[0])
    staff.fill("#f-password", ADMIN[1])
    staff.click("button:has-text('Log in')")
    expect(staff).to_have_url(f"{base}/operations")
    expect(staff.locator("h1")).to_have_text("Current operations")
    expect(staff.locator("#operations-live")).to_contain_text("No operations in progress")
    staff.evaluate("window.__provisorMarker = 'no reload'")

    # client: register, order, pay with the sandbox button (an htmx POST with CSRF header)
    shopper = chromium.new_context(base_url=base).new_page()
    _watch(shopper, errors)
    shopper.goto("/register")
    shopper.fill("#f-name", "Nina Browser")
    shopper.fill("#f-email", "nina@example.com")
    shopper.fill("#f-password", "nina-password")
    shopper.click("button:has-text('Create account')")
    expect(shopper).to_have_url(f"{base}/my")
    expect(shopper.locator(".alert-success")).to_contain_text("Welcome")
    shopper.click("nav.mainnav >> text=Order a service")
    shopper.click("button:has-text('Order VPS S')")
    expect(shopper).to_have_url(f"{base}/my/orders")
    service_id = _service_of(live_app, "nina@example.com")
    row = shopper.locator("tr[data-status]").first
    expect(row).to_have_attribute("data-status", "unpaid")
    # the second attempt waits at the panel until the first one's failure has been seen
    sandbox_hold.hold("open", from_attempt=2)
    shopper.click("button:has-text('Pay now (sandbox)')")
    expect(shopper.locator("tr[data-status]").first).to_have_attribute("data-status", "paid")

    # staff: the operation appears, fails once, retries and finishes, with no reload
    op_row = staff.locator(f"#operations-live tr[data-service='{service_id}']")
    expect(op_row).to_have_count(1, timeout=10_000)
    expect(op_row).to_contain_text("simulated failure of attempt 1", timeout=10_000)
    sandbox_hold.release()
    expect(op_row).to_have_count(0, timeout=15_000)  # done: it leaves the open list
    staff.select_option("#f-status", "done")  # look back: htmx swaps the table in place
    done_row = staff.locator(f"#operations-live tr[data-service='{service_id}']")
    expect(done_row).to_have_attribute("data-status", "done", timeout=5_000)
    expect(done_row).to_contain_text("2 / 3")
    assert staff.evaluate("window.__provisorMarker") == "no reload"
    assert "status=done" in staff.url  # the filter is in the address bar

    # the operation page shows both attempts and, being done, no longer polls
    staff.click(f"#operations-live tr[data-service='{service_id}'] a.id-link")
    expect(staff.locator("#operation-status")).to_have_attribute("data-status", "done")
    expect(staff.locator("#attempt-1")).to_contain_text("temporary error")
    expect(staff.locator("#attempt-2")).to_contain_text("done")
    assert staff.locator("#operation-status").get_attribute("hx-trigger") is None

    # client: My services shows the service active without a reload
    shopper.click("nav.mainnav >> text=My services")
    expect(shopper).to_have_url(f"{base}/my")
    shopper.evaluate("window.__provisorMarker = 'client'")
    card = shopper.locator(f"#my-service-{service_id}")
    expect(card).to_have_attribute("data-status", "active", timeout=15_000)
    assert shopper.evaluate("window.__provisorMarker") == "client"
    expect(shopper.locator("#my-services")).not_to_have_attribute("hx-trigger", re.compile("."))
    card.click()
    expect(shopper.locator("#service-live")).to_contain_text("Access details")
    expect(shopper.locator("details.secret")).to_have_count(1)

    assert errors == []


def test_forms_without_csrf_token_are_refused(live_app, chromium):
    """CSRF is really on in this app: a POST without the token is refused (400)."""
    from playwright.sync_api import expect

    _catalog(live_app)
    page = chromium.new_context(base_url=live_app.config["BASE_URL"]).new_page()
    page.goto("/login")
    page.evaluate("document.querySelector('input[name=csrf_token]').remove()")
    page.fill("#f-email", ADMIN[0])
    page.fill("#f-password", ADMIN[1])
    page.click("button:has-text('Log in')")
    expect(page.locator("h1")).to_have_text("Bad request")
    page.goto("/operations")
    expect(page).to_have_url(re.compile(r"/login"))
