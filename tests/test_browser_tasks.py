"""A real browser (chromium driven by Playwright): a task arrives, is taken and closed.

A staff member watching Tasks sees the task of an escalated operation appear without a
reload, assigns it to themselves, gets an error by the field they left empty, fills it in
and closes the task, while the client, on another browser context, sees the service
become active without a reload. CSRF is on: every form and htmx request carries the token.
"""

import pytest
from playwright.sync_api import expect

from app.db import database
from tests import support

pytestmark = pytest.mark.browser

STAFF = ("sam@example.com", "sam-password")
CLIENT = ("carol@example.com", "carol-password")


def _catalog(app):
    """Support (with Sam), a sandbox module whose first attempt fails for good, VPS S,
    and Carol, a client with a login."""
    from app.models import Item
    from app.services import accounts, catalog

    with app.app_context(), database.connection_context():
        department = catalog.create_department({"name": "Support"})
        accounts.create_user(
            {
                "email": STAFF[0],
                "name": "Sam Support",
                "password": STAFF[1],
                "department_ids": [department.id],
            }
        )
        accounts.create_client(
            {"name": "Carol Client", "email": CLIENT[0], "password": CLIENT[1]}, with_login=True
        )
        module = catalog.create_module(
            {
                "name": "Sandbox panel",
                "type": "sandbox",
                "config": {"fail_first": 5, "permanent_failures": True},
                "department_id": department.id,
            }
        )
        catalog.create_tariff(
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


def _watch(page, errors):
    """Collect page errors and console errors; a deliberate 422 answer logs a network
    line ("Failed to load resource"), which is not an error of the page."""

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


def test_staff_takes_and_closes_a_task_while_the_client_watches(live_app, chromium):
    base_url = live_app.config["BASE_URL"]
    _catalog(live_app)
    errors = []

    # staff: Tasks is open (and empty) before anything escalates
    staff = chromium.new_context(base_url=base_url).new_page()
    _watch(staff, errors)
    _log_in(staff, "/tasks", *STAFF)
    expect(staff).to_have_url(f"{base_url}/tasks")
    expect(staff.locator("#tasks-live")).to_contain_text("No open tasks")
    staff.evaluate("window.__provisorMarker = 'no reload'")

    # client: order VPS S and pay with the sandbox button, then watch My services
    shopper = chromium.new_context(base_url=base_url).new_page()
    _watch(shopper, errors)
    _log_in(shopper, "/login", *CLIENT)
    expect(shopper).to_have_url(f"{base_url}/my")
    shopper.click("nav.mainnav >> text=Order a service")
    shopper.click("button:has-text('Order VPS S')")
    expect(shopper).to_have_url(f"{base_url}/my/orders")
    shopper.click("button:has-text('Pay now (sandbox)')")
    expect(shopper.locator("tr[data-status]").first).to_have_attribute("data-status", "paid")
    shopper.click("nav.mainnav >> text=My services")
    expect(shopper).to_have_url(f"{base_url}/my")
    card = shopper.locator(".service-card")
    expect(card).to_have_attribute("data-status", "processing")
    shopper.evaluate("window.__provisorMarker = 'client'")

    # staff: the task of the escalated operation appears by itself
    row = staff.locator("#tasks-live tr[data-status='new']")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row).to_contain_text("Set up service #")
    expect(row).to_contain_text("Carol Client")
    assert staff.evaluate("window.__provisorMarker") == "no reload"
    row.locator("a.id-link").click()
    expect(staff.locator("#task-operation")).to_contain_text("simulated failure of attempt 1")
    expect(staff.locator("#task-operation")).to_have_attribute("data-status", "manual")

    # assign it to myself
    staff.click("button:has-text('Assign to me')")
    expect(staff.locator(".alert-success")).to_have_text("The task is yours.")
    expect(staff.locator(".page-head")).to_contain_text("assigned to you")
    expect(staff.locator("button:has-text('Assign to me')")).to_have_count(0)

    # one required field left empty: its error is shown by that field, the rest is kept
    staff.fill("#f-field-hostname", "vps1.example.net")
    staff.fill("#f-field-username", "root")
    staff.fill("#f-field-password", "pw-123456")
    staff.click("button:has-text('Close task')")
    expect(staff.locator("#err-field-ip")).to_have_text("IP address is required.")
    expect(staff.locator("#f-field-ip")).to_have_attribute("aria-invalid", "true")
    expect(staff.locator("#f-field-hostname")).to_have_value("vps1.example.net")
    expect(staff.locator("#err-field-hostname")).to_have_count(0)

    # filled in completely: the task closes, the operation completes
    staff.fill("#f-field-ip", "203.0.113.5")
    staff.fill("#f-comment", "Set up by hand on node 7.")
    staff.click("button:has-text('Close task')")
    expect(staff).to_have_url(f"{base_url}/tasks")
    expect(staff.locator(".alert-success")).to_contain_text("closed.")
    expect(staff.locator("#tasks-live")).to_contain_text("No open tasks")

    # client: the service is active without a reload, with the details typed in
    expect(card).to_have_attribute("data-status", "active", timeout=15_000)
    assert shopper.evaluate("window.__provisorMarker") == "client"
    card.click()
    expect(shopper.locator("#service-live")).to_contain_text("203.0.113.5")

    assert errors == []
