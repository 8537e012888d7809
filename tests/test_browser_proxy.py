"""The tasks proxy in a real browser between two real instances (each a `provisor serve`
process with its own database): the provider's staff close a received task through its
page; the reseller's admin clicks "Check now" and sees the local task closed and the
service active — every step through pages.
"""

import re

import pytest

from tests.support import PEER_PASSWORD, Instance, connect_peers, wait_for

pytestmark = pytest.mark.browser

DETAILS = {
    "hostname": "ded42.upstream.example",
    "ip": "198.51.100.42",
    "username": "root",
    "password": "upstream-pw",
}


@pytest.fixture
def pair(tmp_path):
    """The reseller (sends tasks) and the provider (receives them), connected by the CLI."""
    started = []
    try:
        reseller = Instance(tmp_path, "reseller").start()
        started.append(reseller)
        provider = Instance(tmp_path, "provider").start()
        started.append(provider)
        yield reseller, provider
    finally:
        for instance in started:
            instance.stop()


def first_admin(instance):
    """The admin login `provisor serve` printed on its first start."""
    found = re.search(r"email:\s+(\S+)\s*\n\s*password:\s+(\S+)", instance.log())
    assert found, instance.log()
    return found.group(1), found.group(2)


def watch(page, errors):
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))


def log_in(browser, instance, errors):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    watch(page, errors)
    email, password = first_admin(instance)
    page.goto(instance.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".who")).to_be_visible()
    return page


def test_closed_at_the_provider_comes_back_with_check_now(pair, chromium):
    from playwright.sync_api import expect

    reseller, provider = pair
    upstream = reseller.department("Upstream DC")
    dc = provider.department("DC")
    connect_peers(reseller, provider, upstream, dc, "reseller-1")
    # the scheduler's first pull of a new client side runs at once; after it, nothing comes
    # back for an hour (PROXY_PULL_INTERVAL) unless someone checks now
    wait_for(
        lambda: "last pull never" not in reseller.cli("proxy", "list").stdout,
        message="the first scheduled pull",
    )
    order, _ = reseller.order_manual_service(upstream["id"])
    local = wait_for(lambda: reseller.tasks(upstream["id"]), message="the local task")[0]
    remote = wait_for(
        lambda: provider.tasks(dc["id"]), timeout=15, message="the task at the provider"
    )[0]
    errors = []

    # the reseller's admin watches the proxy page of the sending instance
    at_reseller = log_in(chromium, reseller, errors)
    at_reseller.get_by_role("link", name="Proxy", exact=True).click()
    expect(at_reseller.get_by_role("heading", name="Tasks proxy")).to_be_visible()
    row = at_reseller.locator("#client-side-list tbody tr").first
    expect(row).to_contain_text(provider.url)
    expect(row).to_contain_text("DC")
    expect(row).to_have_attribute("data-state", "ok")
    # the "Load remote departments" step of a new client side (htmx, with the CSRF token)
    new = at_reseller.locator("#new-client-side")
    new.get_by_label("Remote Provisor URL").fill(provider.url)
    new.get_by_label("Login").fill("reseller-1")
    new.get_by_label("Password").fill("wrong-password")
    new.get_by_role("button", name="Load remote departments").click()
    expect(new.locator("#remote-error")).to_have_text(
        f"{provider.url} refused the login 'reseller-1': wrong login or password"
    )
    new.get_by_label("Password").fill(PEER_PASSWORD)
    new.get_by_role("button", name="Load remote departments").click()
    expect(new.get_by_label("Remote department")).to_have_value(str(dc["id"]))
    expect(new.locator("#remote-error")).to_have_count(0)

    # the provider's staff take the received task and close it with the details
    at_provider = log_in(chromium, provider, errors)
    at_provider.goto(f"{provider.url}/tasks/{remote['id']}")
    received = at_provider.locator("#task-proxy")
    expect(received).to_contain_text(f"Received from reseller-1 (their task #{local['id']}).")
    expect(received).to_contain_text(f"Service #{order['service_id']}: Dedicated L")
    at_provider.get_by_role("button", name="Assign to me").click()
    expect(at_provider.locator("#flashes")).to_contain_text("The task is yours.")
    form = at_provider.locator("#close-task")
    form.get_by_label("Hostname").fill(DETAILS["hostname"])
    form.get_by_label("IP address").fill(DETAILS["ip"])
    form.get_by_label("Username").fill(DETAILS["username"])
    form.get_by_label("Root password").fill(DETAILS["password"])
    form.get_by_label("Comment").fill("Racked in row 4.")
    form.get_by_role("button", name="Close task").click()
    expect(at_provider.locator("#flashes")).to_contain_text(f"Task #{remote['id']} closed.")

    # nothing came back by itself: the reseller's task is still open...
    at_reseller.goto(f"{reseller.url}/tasks/{local['id']}")
    expect(at_reseller.locator("#task-facts .badge").first).to_have_text("new")
    forwarded = at_reseller.locator("#task-proxy")
    expect(forwarded).to_contain_text(
        f"Forwarded to {provider.url} (DC), remote task #{remote['id']}, last sync"
    )
    # ...until the admin checks now, from the task page
    forwarded.get_by_role("button", name="Check now").click()
    expect(at_reseller.locator("#flashes")).to_contain_text(
        re.compile(rf"\d+ changes brought back from {re.escape(provider.url)}\.")
    )
    assert at_reseller.url == f"{reseller.url}/tasks/{local['id']}"
    expect(at_reseller.locator("#task-facts .badge").first).to_have_text("closed")
    expect(at_reseller.locator("#task-result")).to_contain_text(DETAILS["hostname"])
    expect(at_reseller.locator("#comments")).to_contain_text("Racked in row 4.")
    at_reseller.get_by_role("link", name=f"Service #{order['service_id']}").click()
    expect(at_reseller.get_by_role("heading", name=re.compile(r"^Service #"))).to_be_visible()
    expect(at_reseller.locator("#service-live")).to_have_attribute("data-status", "active")
    expect(at_reseller.locator("#service-live h2 .badge").first).to_have_text("active")
    expect(at_reseller.get_by_text(DETAILS["ip"]).first).to_be_visible()
    # and the proxy page says the peer is fine; checking all again brings nothing new
    at_reseller.get_by_role("link", name="Proxy", exact=True).click()
    at_reseller.get_by_role("button", name="Check all now").click()
    expect(at_reseller.locator("#flashes")).to_have_text(
        f"0 changes brought back from {provider.url}."
    )
    expect(at_reseller.locator("#client-side-list tbody tr").first).to_have_attribute(
        "data-state", "ok"
    )
    assert errors == []
