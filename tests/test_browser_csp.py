"""The pages under their Content-Security-Policy in a real browser (Debian's chromium):
every page of staff, admins and clients loads and its htmx parts work (live lists,
filters, "Test connection", the sandbox payment) with no CSP violation reported, while an
injected inline script is blocked (the policy is really enforced)."""

import re

import pytest

from app.db import database
from tests import support
from tests.support import ADMIN

pytestmark = pytest.mark.browser

# reports every violation into window.__csp (and the console), before any page script runs
RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


def _catalog(app):
    from app.services import accounts, catalog

    with app.app_context(), database.connection_context():
        accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        )
        department = catalog.create_department({"name": "Support"})
        module = catalog.create_module(
            {
                "name": "Sandbox panel",
                "type": "sandbox",
                "config": {},
                "department_id": department.id,
                "retry_delay": 1,
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
        return module.id


class Watched:
    """A page whose CSP violations and console errors are collected."""

    def __init__(self, browser, base):
        self.context = browser.new_context(base_url=base)
        self.context.add_init_script(RECORDER)
        self.page = self.context.new_page()
        self.console = []
        self.page.on(
            "console",
            lambda msg: (
                self.console.append(msg.text)
                if msg.type == "error" or "Content Security Policy" in msg.text
                else None
            ),
        )
        self.page.on("pageerror", lambda exc: self.console.append(str(exc)))

    def violations(self):
        return self.page.evaluate("window.__csp")

    def visit(self, path):
        from playwright.sync_api import expect

        response = self.page.goto(path)
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        expect(self.page.locator("h1").first).to_be_visible()
        self.assert_clean(path)

    def assert_clean(self, where):
        assert self.violations() == [], where
        assert self.console == [], where
        # htmx inserted no <style> of its own (includeIndicatorStyles is off)
        assert self.page.evaluate("document.querySelectorAll('style').length") == 0, where


def test_every_page_works_under_the_policy(live_app, chromium):
    from playwright.sync_api import expect

    base = live_app.config["BASE_URL"]
    module_id = _catalog(live_app)
    staff = Watched(chromium, base)
    page = staff.page
    page.goto("/login")
    page.fill("#f-email", ADMIN[0])
    page.fill("#f-password", ADMIN[1])
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    staff.assert_clean("login")

    for path in (
        "/dashboard",
        "/operations",
        "/tasks",
        "/services",
        "/orders",
        "/clients",
        "/outbox",
        "/catalog/tariffs",
        "/catalog/modules",
        "/catalog/departments",
        "/catalog/product-types",
        "/staff",
        "/proxy",
        "/account",
    ):
        staff.visit(path)

    # htmx under the policy: a filter typed in swaps the list in place (no reload)
    staff.visit("/clients")
    page.evaluate("window.__marker = 'same page'")
    page.locator("#f-q").press_sequentially("nobody-matches-this")
    expect(page).to_have_url(re.compile(r"q=nobody-matches-this"), timeout=5_000)
    assert page.evaluate("window.__marker") == "same page"
    staff.assert_clean("clients search")

    # an htmx POST with the CSRF header and an out-of-band swap: "Test connection"
    staff.visit(f"/catalog/modules/{module_id}/edit")
    page.click("button:has-text('Test connection')")
    expect(page.locator("#check-result")).to_contain_text("✓", timeout=10_000)
    staff.assert_clean("test connection")

    # a client: registers, orders, pays with the sandbox button (htmx), watches it live
    shopper = Watched(chromium, base)
    shop = shopper.page
    shop.goto("/register")
    shop.fill("#f-name", "Nina Browser")
    shop.fill("#f-email", "nina@example.com")
    shop.fill("#f-password", "nina-password")
    shop.click("button:has-text('Create account')")
    expect(shop).to_have_url(f"{base}/my")
    shop.click("nav.mainnav >> text=Order a service")
    shop.click("button:has-text('Order VPS S')")
    expect(shop).to_have_url(f"{base}/my/orders")
    shop.click("button:has-text('Pay now (sandbox)')")
    expect(shop.locator("tr[data-status]").first).to_have_attribute("data-status", "paid")
    shop.click("nav.mainnav >> text=My services")
    expect(shop.locator("[id^=my-service-]").first).to_have_attribute(
        "data-status", "active", timeout=15_000
    )
    shopper.assert_clean("client area")

    # the staff's live operations page kept polling without a violation meanwhile
    staff.visit("/operations")
    page.select_option("#f-status", "done")
    expect(page.locator("#operations-live tr[data-status='done']").first).to_be_visible(
        timeout=10_000
    )
    staff.assert_clean("operations filter")

    # logging out works (a form POST, then the login page)
    page.click("button:has-text('Log out')")
    expect(page).to_have_url(re.compile(r"/login"))
    staff.assert_clean("logout")


def test_an_injected_inline_script_is_blocked(live_app, chromium):
    """The recorder sees violations, and the policy really forbids inline code."""
    watched = Watched(chromium, live_app.config["BASE_URL"])
    watched.page.goto("/login")
    ran = watched.page.evaluate(
        """() => {
            const s = document.createElement('script');
            s.textContent = 'window.__ran = true';
            document.body.appendChild(s);
            const b = document.createElement('b');
            b.setAttribute('onclick', 'window.__ran = true');
            document.body.appendChild(b);
            b.click();
            return window.__ran === true;
        }"""
    )
    assert ran is False
    support.wait_for(lambda: len(watched.violations()) >= 2, timeout=5, message="violations")
    assert any(v.startswith("script-src") for v in watched.violations())
