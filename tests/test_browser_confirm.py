"""A real browser (chromium driven by Playwright): destructive actions on an operation ask
first. "Cancel" and "Set up manually" show the browser's confirmation (htmx's hx-confirm on
a boosted form); dismissing it changes nothing, accepting it does the action and shows the
page a plain post would (the flash, the task assigned to whoever clicked it)."""

import pytest
from playwright.sync_api import expect

from app.db import database
from tests import support

pytestmark = pytest.mark.browser

ADMIN = ("admin@example.com", "admin-password")
RETRYING = {"fail_first": 5}  # temporary failures: the operation waits to retry


def _api(app):
    from app.services import accounts

    with app.app_context(), database.connection_context():
        accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        )
        token = accounts.create_token(ADMIN[0])
    return support.Api(app.test_client(), token)


def _status(app, model, row_id):
    with app.app_context(), database.connection_context():
        return model.get_by_id(row_id).status


def test_cancel_and_set_up_manually_ask_for_confirmation(live_app, chromium):
    from app.models import Operation, Service, Task

    base_url = live_app.config["BASE_URL"]
    api = _api(live_app)
    fields = {"retry_delay": 300, "max_attempts": 9}
    first = support.paid_service(api, config=RETRYING, module_fields=fields, wait=("retry_wait",))
    second = support.paid_service(api, config=RETRYING, module_fields=fields, wait=("retry_wait",))
    errors, questions = [], []
    page = chromium.new_context(base_url=base_url).new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto("/login")
    page.fill("#f-email", ADMIN[0])
    page.fill("#f-password", ADMIN[1])
    page.click("button:has-text('Log in')")

    # Cancel, dismissed: nothing happens
    op_id = first["operation_id"]
    page.goto(f"/operations/{op_id}")
    expect(page.locator("h1")).to_contain_text(f"Operation #{op_id} · Set up")

    def dismiss(dialog):
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("#operation-status button:has-text('Cancel')")
    page.wait_for_timeout(500)
    assert questions and questions[0].startswith(f"Cancel operation #{op_id} (Set up)?")
    assert "setup stops" in questions[0]
    assert _status(live_app, Operation, op_id) == "retry_wait"
    expect(page).to_have_url(f"{base_url}/operations/{op_id}")

    # Cancel, accepted: cancelled, the page says so, the service's setup is cancelled
    def accept(dialog):
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#operation-status button:has-text('Cancel')")
    expect(page.locator(".alert-success")).to_contain_text(f"Operation #{op_id} cancelled.")
    expect(page.locator("#operation-status")).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#operation-status")).to_contain_text("Cancelled by")
    assert _status(live_app, Service, first["service_id"]) == "setup_cancelled"

    # Set up manually from Current operations: asked first, then the task is mine
    other = second["operation_id"]
    page.goto("/operations")
    row = page.locator(f"#operation-{other}")
    page.once("dialog", dismiss)
    row.locator("button:has-text('Set up manually')").click()
    page.wait_for_timeout(500)
    assert questions[-1].startswith(f"Set up operation #{other} (Set up) manually?")
    assert _status(live_app, Operation, other) == "retry_wait"
    page.once("dialog", accept)
    page.locator(f"#operation-{other} button:has-text('Set up manually')").click()
    expect(page.locator(".page-head")).to_contain_text("assigned to you")
    with live_app.app_context(), database.connection_context():
        task = Task.get(Task.operation == other)
        assert task.assignee.email == ADMIN[0]
    expect(page).to_have_url(f"{base_url}/tasks/{task.id}")
    assert _status(live_app, Operation, other) == "manual"
    assert errors == []
