"""Resellers paying on account (``/api/v1/reseller``): what another Provisor's
``provisor`` module calls. Rights, idempotency, payment on account, the CLI."""

from app.db import database
from app.models import Order, Payment, ResellerRequest
from tests.support import Api


def make_reseller(api, runner=None, email="shop@example.com"):
    client = api.ok("post", "/clients", {"name": "Shop", "email": email}, status=201)
    if runner is not None:
        result = runner.invoke(args=["clients", "reseller", "--client-id", str(client["id"])])
        assert result.exit_code == 0, result.output
        token = result.output.strip()
    else:
        token = api.ok("post", f"/clients/{client['id']}/reseller", status=201)["token"]
    assert token.startswith("pv_")
    return client, Api(api.client, token)


def test_a_reseller_orders_paid_on_account_once_per_key(app, api, runner):
    _, _, tariff, _ = api.catalog("sandbox")
    client, shop = make_reseller(api, runner)
    listed = shop.ok("get", "/reseller/tariffs")["tariffs"]
    assert [t["id"] for t in listed] == [tariff["id"]]
    assert {f["name"] for f in listed[0]["detail_fields"]} >= {"ip", "password"}

    body = {"tariff_id": tariff["id"], "params": {"hostname": "a.example.com"}}
    code, first = shop.post("/reseller/orders", {**body, "idempotency_key": "op-1"})
    assert code == 201, first
    assert first["status"] == "paid" and first["replayed"] is False
    code, again = shop.post("/reseller/orders", {**body, "idempotency_key": "op-1"})
    assert code == 200 and again["replayed"] is True
    assert again["order_id"] == first["order_id"] and again["service_id"] == first["service_id"]
    with app.app_context(), database.connection_context():
        assert Order.select().where(Order.client == client["id"]).count() == 1
        payment = Payment.get(Payment.order == first["order_id"])
        assert payment.result["provider"] == "account"

    # the worker sets it up; the reseller sees its details, secret ones included
    api.wait_operation(first["operation_id"])
    service = shop.ok("get", f"/reseller/services/{first['service_id']}")
    assert service["status"] == "active" and service["details"]["password"]
    assert service["operation"]["kind"] == "open" and service["operation"]["status"] == "done"

    code, op = shop.post(
        f"/reseller/services/{first['service_id']}/suspend", {"idempotency_key": "op-2"}
    )
    assert code == 202 and op["kind"] == "suspend", op
    code, same = shop.post(
        f"/reseller/services/{first['service_id']}/suspend", {"idempotency_key": "op-2"}
    )
    assert code == 200 and same["id"] == op["id"]
    api.wait_operation(op["id"])
    assert shop.ok("get", f"/reseller/operations/{op['id']}")["status"] == "done"
    # a key used for one request cannot name another
    code, body = shop.post(
        f"/reseller/services/{first['service_id']}/resume", {"idempotency_key": "op-2"}
    )
    assert code == 409 and "idempotency key" in body["error"]["message"]
    code, body = shop.post(
        "/reseller/orders", {"tariff_id": tariff["id"], "idempotency_key": "op-2"}
    )
    assert code == 409
    with app.app_context(), database.connection_context():
        assert ResellerRequest.select().count() == 2


def test_a_reseller_token_reaches_its_own_services_only(app, api):
    _, _, tariff, other_client = api.catalog("sandbox")
    _, shop = make_reseller(api)
    # someone else's service
    order = api.order(other_client["id"], tariff["id"])
    assert shop.get(f"/reseller/services/{order['service_id']}")[0] == 404
    code, _ = shop.post(
        f"/reseller/services/{order['service_id']}/close", {"idempotency_key": "k1"}
    )
    assert code == 404
    # no staff route: not the orders, services, tariffs or clients of staff
    for method, path in (
        ("get", f"/services/{order['service_id']}"),
        ("get", "/tariffs"),
        ("post", "/orders"),
        ("get", "/clients"),
        ("get", "/operations"),
    ):
        code, body = getattr(shop, method)(path)
        assert code == 403, (path, body)
    # staff have no reseller account
    assert api.get("/reseller/tariffs")[0] == 403


def test_no_longer_a_reseller_and_bad_input(app, api, runner):
    _, _, tariff, _ = api.catalog("sandbox")
    client, shop = make_reseller(api)
    code, body = shop.post("/reseller/orders", {"tariff_id": tariff["id"]})
    assert code == 422 and "idempotency_key" in body["error"]["fields"]
    code, body = shop.post(
        "/reseller/orders", {"tariff_id": tariff["id"], "idempotency_key": "bad key!"}
    )
    assert code == 422
    code, body = shop.post("/reseller/orders", {"tariff_id": tariff["id"], "idempotency_key": 7})
    assert code == 422 and "idempotency_key" in body["error"]["fields"]
    code, body = shop.post("/reseller/orders", {"tariff_id": 999, "idempotency_key": "k"})
    assert code == 422 and "tariff_id" in body["error"]["fields"]
    result = runner.invoke(args=["clients", "reseller", "--client-id", "4242"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not found" in lines[0], result.output
    result = runner.invoke(
        args=["clients", "reseller", "--client-id", str(client["id"]), "--disable"]
    )
    assert result.exit_code == 0, result.output
    assert shop.get("/reseller/tariffs")[0] == 401


def test_admins_make_and_end_resellers_on_the_clients_page(app, admin, client):
    from tests.support import html

    shop = admin.ok("post", "/clients", {"name": "Shop", "email": "shop@example.com"}, status=201)
    page = html(client.get("/clients"))
    assert "Make reseller" in page
    response = client.post(f"/clients/{shop['id']}/reseller")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    token = html(response).split('<code id="reseller-token">', 1)[1].split("<", 1)[0]
    assert Api(client, token).ok("get", "/reseller/tariffs") == {"tariffs": []}
    assert "Reseller on account" in html(client.get("/clients"))
    response = client.post(f"/clients/{shop['id']}/reseller/end")
    assert response.status_code == 302
    assert Api(client, token).get("/reseller/tariffs")[0] == 401
    assert client.post("/clients/9999/reseller").status_code == 404


def test_a_reseller_suspends_with_a_reason_and_gets_a_new_password(app, api):
    _, _, tariff, _ = api.catalog("sandbox")
    _, shop = make_reseller(api)
    code, order = shop.post(
        "/reseller/orders",
        {
            "tariff_id": tariff["id"],
            "params": {"hostname": "b.example.com"},
            "idempotency_key": "o",
        },
    )
    assert code == 201, order
    api.wait_operation(order["operation_id"])
    service_id = order["service_id"]
    before = shop.ok("get", f"/reseller/services/{service_id}")["details"]["password"]
    # a password of the reseller's own choosing is not taken: Provisor generates it
    code, body = shop.post(
        f"/reseller/services/{service_id}/change_password",
        {"idempotency_key": "p0", "password": "Mine-own-password-1"},
    )
    assert code == 422 and body["error"]["fields"] == {"password": "Unknown field."}
    code, op = shop.post(
        f"/reseller/services/{service_id}/change_password", {"idempotency_key": "p1"}
    )
    assert code == 202, op
    api.wait_operation(op["id"])
    after = shop.ok("get", f"/reseller/services/{service_id}")["details"]["password"]
    assert after and after != before

    code, body = shop.post(
        f"/reseller/services/{service_id}/resume", {"idempotency_key": "r0", "reason": "x"}
    )
    assert code == 422 and body["error"]["fields"] == {"reason": "Unknown field."}
    code, op = shop.post(
        f"/reseller/services/{service_id}/suspend",
        {"idempotency_key": "s1", "reason": "Their client did not pay"},
    )
    assert code == 202, op
    api.wait_operation(op["id"])
    assert api.ok("get", f"/operations/{op['id']}")["params"]["reason"] == (
        "Their client did not pay"
    )
