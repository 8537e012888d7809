"""The Webhooks pages in a real browser (Debian's chromium) under the Content-Security-
Policy: an admin adds an endpoint with the form, sends a test event, and removes it after
the confirmation (htmx's hx-confirm), with no CSP violation or console error."""

import re

import pytest

from app.db import database
from tests.support import ADMIN

pytestmark = pytest.mark.browser


def test_an_admin_adds_tests_and_removes_an_endpoint(live_app, chromium, event_receiver):
    from playwright.sync_api import expect

    from app.services import accounts

    with live_app.app_context(), database.connection_context():
        accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        )
    context = chromium.new_context(base_url=live_app.config["BASE_URL"])
    page = context.new_page()
    problems = []
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" or "Content Security Policy" in msg.text
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto("/login")
    page.fill("#f-email", ADMIN[0])
    page.fill("#f-password", ADMIN[1])
    page.click("button:has-text('Log in')")
    page.click("nav.mainnav >> text=Webhooks")
    page.click("text=New endpoint")
    page.fill("#f-url", event_receiver.url)
    page.fill("#f-secret", "short")
    page.check("input[name=event_types][value='service.active']")
    page.click("button:has-text('Add endpoint')")
    expect(page.locator("#err-secret")).to_have_text("From 16 to 200 characters.")
    page.fill("#f-secret", event_receiver.secret)
    page.click("button:has-text('Add endpoint')")
    expect(page).to_have_url(re.compile(r"/webhooks/\d+$"))
    page.click("button:has-text('Send a test event')")
    expect(page.locator("#deliveries")).to_contain_text("delivered")
    expect(page.locator("#deliveries")).to_contain_text("200")
    assert event_receiver.received()[0]["verified"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Remove')")
    expect(page).to_have_url(re.compile(r"/webhooks$"))
    expect(page.locator("main")).to_contain_text("No webhook endpoints yet.")
    # the form answered 422 with the field's message: chromium logs that status, nothing else
    assert [p for p in problems if "status of 422" not in p] == []
