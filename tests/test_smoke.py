"""First end-to-end check: order → payment webhook → sandbox module → active + email."""

from tests.support import wait_for


def test_order_pay_activate_sandbox(app, api):
    _, module, tariff, client = api.catalog("sandbox")
    order = api.order(client["id"], tariff["id"])
    assert order["status"] == "unpaid"
    status, body = api.pay(order)
    assert status == 200, body
    op = api.wait_operation(body["operation_id"])
    assert op["attempts"] == 1
    service = api.ok("get", f"/services/{order['service_id']}")
    assert service["status"] == "active"
    assert service["details"]["ip"].startswith("192.0.2.")
    emails = wait_for(lambda: api.ok("get", f"/emails?service_id={service['id']}")["emails"])
    assert emails[0]["kind"] == "welcome"
    assert service["details"]["ip"] in emails[0]["body"]
