"""A client orders a database in a real browser (Debian's chromium, Playwright) and gets a
real one on the machine's MariaDB: staff watch the open operation live in Current
operations (the server is down for its first attempt, so it waits and retries on the
page), the client sees the service become active with its access details, and those
details log in.
"""

import re

import pytest

from app.db import database
from tests import support
from tests.support import ADMIN

pytestmark = pytest.mark.browser


def _catalog(app, mariadb):
    """Admin, department, a mariadb module (its item ready), a database tariff."""
    from app.models import Item
    from app.services import accounts, catalog

    with app.app_context(), database.connection_context():
        accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        )
        department = catalog.create_department({"name": "Databases"})
        module_data = {
            "name": "MariaDB cluster 1",
            "type": "mariadb",
            "config": mariadb.config(),
            "department_id": department.id,
            "retry_delay": 1,
            "max_attempts": 30,
        }
        module = catalog.create_module(module_data)
        catalog.create_tariff(
            {
                "name": "MySQL 1 GB",
                "product_type": "database",
                "price": "4.00",
                "internal_name": "db-1g",
                "module_ids": [module.id],
                "item_settings": {str(module.id): {"connection_limit": 5}},
            }
        )

    def item_ready():
        with app.app_context(), database.connection_context():
            return Item.get(Item.module == module.id).status == "ready"

    support.wait_for(item_ready, timeout=10, message="the database item")
    return module.id, module_data


def _set_config(app, module_id, module_data, config):
    from app.services import catalog

    with app.app_context(), database.connection_context():
        catalog.update_module(module_id, {**module_data, "config": config})


def test_a_client_orders_a_database_and_logs_in_with_its_details(live_app, chromium, mariadb):
    from playwright.sync_api import expect

    base = live_app.config["BASE_URL"]
    module_id, module_data = _catalog(live_app, mariadb)
    errors = []

    def watch(page):
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

    staff = chromium.new_context(base_url=base).new_page()
    watch(staff)
    staff.goto("/login?next=/operations")
    staff.fill("#f-email", ADMIN[0])
    staff.fill("#f-password", ADMIN[1])
    staff.click("button:has-text('Log in')")
    expect(staff).to_have_url(f"{base}/operations")
    staff.evaluate("window.__provisorMarker = 'no reload'")

    # the database server is "down" (nothing listens where the module connects) when paid
    _set_config(
        live_app, module_id, module_data, mariadb.config(port=support.free_port(), timeout=1)
    )

    shopper = chromium.new_context(base_url=base).new_page()
    watch(shopper)
    shopper.goto("/register")
    shopper.fill("#f-name", "Dora Database")
    shopper.fill("#f-email", "dora@example.com")
    shopper.fill("#f-password", "dora-password")
    shopper.click("button:has-text('Create account')")
    expect(shopper).to_have_url(f"{base}/my")
    shopper.click("nav.mainnav >> text=Order a service")
    shopper.fill("input[name='params.prefix']", "shop")
    shopper.click("button:has-text('Order MySQL 1 GB')")
    expect(shopper).to_have_url(f"{base}/my/orders")
    shopper.click("button:has-text('Pay now (sandbox)')")
    expect(shopper.locator("tr[data-status]").first).to_have_attribute("data-status", "paid")

    from app.models import Service

    with live_app.app_context(), database.connection_context():
        service_id = Service.select().order_by(Service.id.desc()).get().id

    # staff see the open operation fail on the unreachable server, on the page as it is
    row = staff.locator(f"#operations-live tr[data-service='{service_id}']")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row).to_contain_text("Connection refused", timeout=10_000)
    # the server is back: the next attempt creates the database, the row leaves the list
    _set_config(live_app, module_id, module_data, mariadb.config())
    expect(row).to_have_count(0, timeout=15_000)
    staff.select_option("#f-status", "done")
    done = staff.locator(f"#operations-live tr[data-service='{service_id}']")
    expect(done).to_have_attribute("data-status", "done", timeout=5_000)
    assert staff.evaluate("window.__provisorMarker") == "no reload"

    # the client: active, with the access details
    shopper.click("nav.mainnav >> text=My services")
    card = shopper.locator(f"#my-service-{service_id}")
    expect(card).to_have_attribute("data-status", "active", timeout=15_000)
    card.click()
    live = shopper.locator("#service-live")
    expect(live).to_contain_text("Access details")
    name = f"{mariadb.prefix}shop_{service_id}"
    facts = live.locator("section:has(h2:has-text('Access details')) dl.facts")
    shown = dict(
        zip(
            facts.locator("dt").all_inner_texts(),
            [v.strip() for v in facts.locator("dd").all_inner_texts()],
            strict=True,
        )
    )
    assert shown["Host"] == "127.0.0.1" and shown["Port"] == "3306"
    assert shown["Database name"] == name and shown["Username"] == name
    secret = live.locator("details.secret")
    expect(secret).to_have_count(1)
    secret.locator("summary").click()
    password = secret.locator("code.secret-value").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password)
    # and they work
    conn = mariadb.login({"database": name, "username": name, "password": password})
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE orders (id INT)")
        cursor.execute("SHOW TABLES")
        assert [r[0] for r in cursor.fetchall()] == ["orders"]
    conn.close()
    assert errors == []
