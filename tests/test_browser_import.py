"""A real browser (chromium driven by Playwright): staff import an account that already
exists on the sandbox panel — pick the tariff, pick the account from the module's list
(its details are prefilled), choose the client and import: the service page shows it
active with the open operation "imported by" them; the same account again is refused
with the reason. CSRF is on."""

import pytest
from playwright.sync_api import expect

from app.db import database
from tests import support

pytestmark = pytest.mark.browser

ADMIN = ("ada@example.com", "ada-password")
LEGACY = {
    "hostname": "old1.example.net",
    "ip": "198.51.100.20",
    "username": "root",
    "password": "legacy-pw",
}


def _catalog(app):
    from app.models import Item, SandboxResource
    from app.services import accounts, catalog

    with app.app_context(), database.connection_context():
        accounts.create_user(
            {"email": ADMIN[0], "name": "Ada Admin", "password": ADMIN[1]}, role="admin"
        )
        accounts.create_client({"name": "Carol Client", "email": "carol@example.com"})
        module = catalog.create_module({"name": "Sandbox panel", "type": "sandbox", "config": {}})
        catalog.create_tariff(
            {
                "name": "VPS S",
                "product_type": "vps",
                "price": "9.99",
                "internal_name": "vps-s",
                "module_ids": [module.id],
            }
        )
        SandboxResource.create(
            operation_key="before-provisor",
            kind="account",
            remote_id="sbx-account-old1",
            details=LEGACY,
            status="active",
        )

    def item_ready():
        with app.app_context(), database.connection_context():
            return Item.get(Item.module == module.id).status == "ready"

    support.wait_for(item_ready, timeout=10, message="the sandbox item")


def test_staff_import_an_account_from_the_panels_list(live_app, chromium):
    base_url = live_app.config["BASE_URL"]
    _catalog(live_app)
    errors = []
    page = chromium.new_context(base_url=base_url).new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.goto("/login")
    page.fill("#f-email", ADMIN[0])
    page.fill("#f-password", ADMIN[1])
    page.click("button:has-text('Log in')")

    page.goto("/services")
    page.click("#import-link")
    expect(page.locator("h1")).to_have_text("Import an existing account")
    page.select_option("#f-tariff_id", label="VPS S (Virtual private server)")
    page.click("#import-what button:has-text('Continue')")

    # the only module of the tariff is chosen and its panel's accounts are listed
    row = page.locator("#remote-accounts tr[data-remote-id='sbx-account-old1']")
    expect(row).to_contain_text("198.51.100.20")
    row.locator("a:has-text('Use this account')").click()
    expect(page.locator("#f-remote_id")).to_have_value("sbx-account-old1")
    expect(page.locator("#f-detail-ip")).to_have_value("198.51.100.20")
    expect(page.locator("#f-detail-hostname")).to_have_value("old1.example.net")

    # a typo in a detail field: the field's message, nothing imported
    page.fill("#f-detail-ip", "198.51.100.256")
    page.select_option("#f-client_id", label="Carol Client <carol@example.com>")
    page.click("button:has-text('Import as an active service')")
    expect(page.locator("#err-detail-ip")).to_have_text("Not an IP address.")
    page.fill("#f-detail-ip", "198.51.100.20")
    page.click("button:has-text('Import as an active service')")

    expect(page.locator(".alert-success")).to_contain_text("imported: active")
    expect(page.locator("#service-live")).to_have_attribute("data-status", "active")
    expect(page.locator("#service-live")).to_contain_text("sbx-account-old1")
    expect(page.locator("#service-live")).to_contain_text("imported by ada@example.com")
    expect(page.locator("#service-history")).to_contain_text("Imported: account sbx-account-old1")

    # the account is now bound: the list says to which service, a second import is refused
    page.goto("/services/import")
    page.select_option("#f-tariff_id", label="VPS S (Virtual private server)")
    page.click("#import-what button:has-text('Continue')")
    expect(row.locator("a")).to_contain_text("service #")
    page.fill("#f-remote_id", "sbx-account-old1")
    page.select_option("#f-client_id", label="Carol Client <carol@example.com>")
    page.click("button:has-text('Import as an active service')")
    expect(page.locator("#import-problem")).to_contain_text("already bound to service #")
    assert errors == []
