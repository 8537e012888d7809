"""What others write is shown as text, never run as markup (the audit's XSS probes).

A client (its name, company and address, set through self-service and the API), a module
endpoint (the details and the error it answers with) and staff (the names of what they
create) each put the same probe into every field they can; every page showing those
fields, to staff and in the client area, shows the probe escaped and never as markup.
(The Content-Security-Policy forbids inline script besides: tests/test_browser_csp.py.)
"""

import json

from app.db import database
from app.models import Client, Task
from tests.support import html, login, make_client_login

PROBE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"


def assert_escaped(page, response, shown=True):
    assert response.status_code == 200, (page, response.status_code)
    body = html(response)
    assert "<script>alert(1)" not in body, page
    assert "<img src=x" not in body, page
    if shown:  # the probe is there, as text
        assert ESCAPED in body, page


def test_every_displayed_field_is_escaped(app, client, admin, http_endpoint):
    api = admin
    done = {"status": "done", "remote_id": "acct-1", "details": {"username": PROBE}}
    http_endpoint.script = ["raw", "raw"]
    http_endpoint.raw_reply = json.dumps(done).encode()
    _, module, tariff, _ = api.catalog("http", http_endpoint.config(), max_attempts=1)
    api.ok(
        "put",
        f"/tariffs/{tariff['id']}",
        {
            "name": f"VPS {PROBE}",
            "product_type": "vps",
            "price": "9.99",
            "internal_name": tariff["internal_name"],
            "module_ids": [module["id"]],
        },
    )
    customer_id = make_client_login(app, email="carol@example.com", name=PROBE)
    api.ok(
        "put",
        f"/clients/{customer_id}",
        {"company": PROBE, "address": f"1 Main St\n{PROBE}"},
    )
    order = api.order(customer_id, tariff["id"])
    _, paid = api.pay(order)
    active = api.wait_operation(paid["operation_id"], ("done",))
    service_id = order["service_id"]

    # a second service, whose endpoint refuses it in words of its own: a task for staff
    http_endpoint.raw_status = 400
    http_endpoint.raw_reply = json.dumps({"error": f"refused: {PROBE}"}).encode()
    second = api.order(customer_id, tariff["id"])
    _, paid = api.pay(second)
    failed = api.wait_operation(paid["operation_id"], ("manual",))
    assert PROBE in failed["last_error"]  # kept as said: escaping is the page's job
    with app.app_context(), database.connection_context():
        (task,) = Task.select().where(Task.operation == failed["id"])
        assert Client.get_by_id(customer_id).name == PROBE

    staff_pages = {
        "/clients": True,
        f"/clients/{customer_id}": True,
        "/services": True,
        f"/services/{service_id}": True,
        f"/services/{second['service_id']}": True,
        "/orders": True,
        "/operations": True,
        f"/operations/{active['id']}": True,
        f"/operations/{failed['id']}": True,
        "/tasks": True,
        f"/tasks/{task.id}": True,
        "/catalog/tariffs": True,
        f"/catalog/tariffs/{tariff['id']}/edit": True,
        "/dashboard": False,
    }
    for page, shown in staff_pages.items():
        assert_escaped(page, client.get(page), shown)

    client.post("/logout")
    login(client, "carol@example.com", "carol-password")
    for page in ("/my", f"/my/services/{service_id}"):
        assert_escaped(page, client.get(page))
