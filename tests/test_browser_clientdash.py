"""In a real browser (Debian's chromium): the main menu on a phone and a tablet, the client
record (contact details, a note, viewing the client area as the client) and the staff
dashboard, under the strict Content-Security-Policy.

With ``PROVISOR_SCREENSHOTS=<folder>`` the dashboard, a client page and a service page are
also photographed at 1366 and 390 px wide (``dashboard-1366.png``...), to look at.
"""

import os

import pytest
from playwright.sync_api import expect

from app.db import database
from tests import support
from tests.support import ADMIN

pytestmark = pytest.mark.browser

CLIENT = ("carol@example.com", "carol-password")
RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""
STAFF_LINKS = [
    ("Dashboard", "/dashboard"),
    ("Operations", "/operations"),
    ("Tasks", "/tasks"),
    ("Services", "/services"),
    ("Orders", "/orders"),
    ("Clients", "/clients"),
    ("Outbox", "/outbox"),
    ("Catalog", "/catalog/tariffs"),
    ("Staff", "/staff"),
    ("Proxy", "/proxy"),
    ("Webhooks", "/webhooks"),
]


def _admin(app):
    from app.services import accounts

    with app.app_context(), database.connection_context():
        accounts.create_user({"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, "admin")


def _catalog(app):
    """Support, a sandbox module, VPS S and Carol (a client with a login)."""
    from app.models import Item
    from app.services import accounts, catalog

    with app.app_context(), database.connection_context():
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
        client = accounts.create_client(
            {"name": "Carol Client", "email": CLIENT[0], "password": CLIENT[1]}, with_login=True
        )

    def item_ready():
        with app.app_context(), database.connection_context():
            return Item.get(Item.module == module.id).status == "ready"

    support.wait_for(item_ready, timeout=10, message="the sandbox item")
    return client.id, tariff.id


def _active_service(app, client_id, tariff_id):
    """An order of VPS S for the client, paid: its service, once active."""
    from app.models import Service
    from app.services import orders

    with app.app_context(), database.connection_context():
        order = orders.create({"client_id": client_id, "tariff_id": tariff_id, "params": {}})
        orders.mark_paid(order.id, by="test")

    def active():
        with app.app_context(), database.connection_context():
            return Service.get_by_id(order.service_id).status == "active"

    support.wait_for(active, timeout=15, message="the service set up")
    return order.service_id


def _page(browser, base, width, height=900):
    context = browser.new_context(base_url=base, viewport={"width": width, "height": height})
    context.add_init_script(RECORDER)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    return page, errors


def _log_in(page, email, password):
    page.goto("/login")
    page.fill("#f-email", email)
    page.fill("#f-password", password)
    page.click("button:has-text('Log in')")


def _no_horizontal_overflow(page):
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    if widths[0] > widths[1]:
        wide = page.evaluate(
            """(limit) => [...document.querySelectorAll('body *')]
                .filter((e) => e.getBoundingClientRect().right > limit)
                .slice(0, 5).map((e) => e.tagName + '.' + e.className)""",
            widths[1],
        )
        raise AssertionError(f"{page.url} is {widths[0]} px wide in {widths[1]} px: {wide}")


@pytest.mark.parametrize("width", [390, 768])
def test_every_menu_link_is_reachable_on_phones_and_tablets(live_app, chromium, width):
    base = live_app.config["BASE_URL"]
    _admin(live_app)
    page, errors = _page(chromium, base, width)
    _log_in(page, *ADMIN)
    expect(page).to_have_url(f"{base}/dashboard")
    toggle = page.locator("button.nav-toggle")
    nav = page.locator("nav.mainnav")
    for label, path in STAFF_LINKS:
        _no_horizontal_overflow(page)
        expect(nav).to_be_hidden()  # folded away until asked for
        expect(toggle).to_have_attribute("aria-expanded", "false")
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        link = nav.get_by_role("link", name=label, exact=True)
        expect(link).to_be_visible()
        assert link.bounding_box()["x"] + link.bounding_box()["width"] <= width
        _no_horizontal_overflow(page)
        link.click()
        expect(page).to_have_url(f"{base}{path}")
    # the account part is in the menu too, and Escape folds it
    toggle.click()
    expect(page.locator(".account button:has-text('Log out')")).to_be_visible()
    page.keyboard.press("Escape")
    expect(nav).to_be_hidden()
    assert page.evaluate("window.__csp") == [] and errors == []


def test_the_menu_is_open_on_a_wide_screen_and_for_clients_on_a_phone(live_app, chromium):
    base = live_app.config["BASE_URL"]
    _admin(live_app)
    wide, errors = _page(chromium, base, 1366)
    _log_in(wide, *ADMIN)
    expect(wide.locator("button.nav-toggle")).to_be_hidden()
    for label, _ in STAFF_LINKS:
        expect(
            wide.locator("nav.mainnav").get_by_role("link", name=label, exact=True)
        ).to_be_visible()
    _no_horizontal_overflow(wide)
    client_id, _ = _catalog(live_app)
    phone, more = _page(chromium, base, 390)
    _log_in(phone, *CLIENT)
    expect(phone).to_have_url(f"{base}/my")
    phone.click("button.nav-toggle")
    phone.locator("nav.mainnav").get_by_role("link", name="My orders").click()
    expect(phone).to_have_url(f"{base}/my/orders")
    _no_horizontal_overflow(phone)
    assert errors == [] and more == [] and client_id


def test_the_client_page_flow(live_app, chromium):
    base = live_app.config["BASE_URL"]
    _admin(live_app)
    client_id, tariff_id = _catalog(live_app)
    service_id = _active_service(live_app, client_id, tariff_id)
    page, errors = _page(chromium, base, 1366)
    _log_in(page, *ADMIN)
    page.click("nav.mainnav >> text=Clients")
    page.click("#clients-list >> text=Carol Client")
    expect(page).to_have_url(f"{base}/clients/{client_id}")
    expect(page.locator("#client-services")).to_contain_text(f"#{service_id}")

    # a bad email: said by the field, nothing saved; then a good one
    page.fill("#f-email", "carol-at-example")
    page.fill("#f-phone", "+1 555 0100")
    page.click("button:has-text('Save contact details')")
    expect(page.locator("#err-email")).to_have_text("Must be an email address.")
    expect(page.locator("#f-email")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-phone")).to_have_value("+1 555 0100")
    page.fill("#f-email", "carol@new.example")
    page.click("button:has-text('Save contact details')")
    expect(page.locator(".alert-success")).to_contain_text("Contact details of Carol Client saved")
    expect(page.locator("#f-email")).to_have_value("carol@new.example")
    expect(page.locator("#f-phone")).to_have_value("+1 555 0100")

    # a note, with its author
    page.fill("#f-text", "Asked for an invoice copy.")
    page.click("button:has-text('Add note')")
    expect(page.locator(".client-notes li").first).to_contain_text("Asked for an invoice copy.")
    expect(page.locator(".client-notes li").first).to_contain_text(ADMIN[0])

    # the client area as Carol: the banner, her service, and a POST refused
    page.click("button:has-text('View client area as this client')")
    expect(page).to_have_url(f"{base}/my")
    expect(page.locator("#viewing-as")).to_contain_text("viewing the client area as Carol Client")
    expect(page.locator(".service-card")).to_have_count(1)
    page.click("nav.mainnav >> text=Order a service")
    page.click("button:has-text('Order VPS S')")
    expect(page.locator(".error-page")).to_contain_text("read-only")
    page.go_back()
    page.click("#viewing-as button:has-text('Back to the client record')")
    expect(page).to_have_url(f"{base}/clients/{client_id}")
    expect(page.locator("#viewing-as")).to_have_count(0)
    expect(page.locator("#impersonations")).to_contain_text(ADMIN[0])
    expect(page.locator("#client-orders li")).to_have_count(1)  # the refused order is not there
    assert page.evaluate("window.__csp") == [] and errors == []


def test_the_dashboard_counts_link_to_lists_and_the_checklist_goes(live_app, chromium):
    base = live_app.config["BASE_URL"]
    _admin(live_app)
    page, errors = _page(chromium, base, 1366)
    _log_in(page, *ADMIN)
    expect(page).to_have_url(f"{base}/dashboard")
    steps = page.locator("#first-run li")
    expect(steps).to_have_count(4)
    expect(page.locator("#first-run li[data-done='yes']")).to_have_count(0)
    folder = os.environ.get("PROVISOR_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, "dashboard-first-run-1366.png"), full_page=True)
    page.click("#first-run a:has-text('Add a department')")
    expect(page).to_have_url(f"{base}/catalog/departments")
    page.goto("/dashboard")
    page.click("#count-manual")
    expect(page).to_have_url(f"{base}/operations?status=manual")
    page.goto("/dashboard")
    page.click("#count-emails")
    expect(page).to_have_url(f"{base}/outbox?status=retry_wait")
    page.goto("/dashboard")
    page.click("#count-stuck")
    expect(page).to_have_url(f"{base}/services?stuck=1")
    expect(page.locator(".page-head")).to_contain_text("Stuck in setup")
    page.goto("/dashboard")
    page.click("#count-tasks")
    expect(page).to_have_url(f"{base}/tasks")

    client_id, tariff_id = _catalog(live_app)  # department, module, tariff
    page.goto("/dashboard")
    expect(page.locator("#first-run li[data-done='yes']")).to_have_count(3)
    expect(page.locator("#first-run li[data-done='no']")).to_contain_text("Place a test order")
    service_id = _active_service(live_app, client_id, tariff_id)
    page.goto("/dashboard")
    expect(page.locator("#first-run")).to_have_count(0)
    expect(page.locator("#count-manual .tile-count")).to_have_text("0")
    assert page.evaluate("window.__csp") == [] and errors == []

    # the dashboard, the client page and a service page fit a phone (and a wide screen)
    _look_at_pages(chromium, base, folder, client_id, service_id)


def _look_at_pages(browser, base, folder, client_id, service_id):
    """The dashboard, the client page and a service page, wide and on a phone: nothing
    wider than the screen; photographed into ``folder`` when given."""
    if folder:
        os.makedirs(folder, exist_ok=True)
    pages = {
        "dashboard": "/dashboard",
        "client": f"/clients/{client_id}",
        "service": f"/services/{service_id}",
    }
    for width in (1366, 390):
        page, _ = _page(browser, base, width, 900 if width > 400 else 844)
        _log_in(page, *ADMIN)
        for name, path in pages.items():
            page.goto(path)
            _no_horizontal_overflow(page)
            if folder:
                page.screenshot(path=os.path.join(folder, f"{name}-{width}.png"), full_page=True)
        # the client area as the client, with the banner
        page.goto(pages["client"])
        page.click("button:has-text('View client area as this client')")
        expect(page.locator("#viewing-as")).to_be_visible()
        _no_horizontal_overflow(page)
        if folder:
            page.screenshot(path=os.path.join(folder, f"viewing-as-{width}.png"), full_page=True)
        page.click("#viewing-as button:has-text('Back to the client record')")
        if width == 390 and folder:
            page.click("button.nav-toggle")
            page.screenshot(path=os.path.join(folder, "menu-open-390.png"))
        page.context.close()


def test_without_javascript_the_menu_wraps_on_a_phone(live_app, chromium):
    base = live_app.config["BASE_URL"]
    _admin(live_app)
    context = chromium.new_context(
        base_url=base, viewport={"width": 390, "height": 844}, java_script_enabled=False
    )
    page = context.new_page()
    _log_in(page, *ADMIN)
    expect(page).to_have_url(f"{base}/dashboard")
    expect(page.locator("button.nav-toggle")).to_be_hidden()
    for label, _ in STAFF_LINKS:
        link = page.locator("nav.mainnav").get_by_role("link", name=label, exact=True)
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, label
    _no_horizontal_overflow(page)
    page.locator("nav.mainnav").get_by_role("link", name="Proxy", exact=True).click()
    expect(page).to_have_url(f"{base}/proxy")
    context.close()
