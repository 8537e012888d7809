"""Staff correct a service's details and remote id (the service page and the API),
checked by the fields' kinds and recorded in the service's history; once a service is
deleted its secret details (passwords) are hidden from its client and, without an
explicit reveal, from staff."""

import pytest

from app.models import Service, ServiceEvent
from tests.support import db, html, login, make_client_login, paid_service

CAROL = ("carol@example.com", "carol-password")


@pytest.fixture
def active(app, api):
    """An active VPS set up by the sandbox (with a root password)."""
    return paid_service(api)


def _service(app, service_id):
    with db(app):
        return Service.get_by_id(service_id)


def _history(app, service_id):
    with db(app):
        return [
            (e.kind, e.actor, e.text)
            for e in ServiceEvent.select()
            .where(ServiceEvent.service == service_id)
            .order_by(ServiceEvent.id)
        ]


def test_staff_edit_details_on_the_service_page(app, client, admin, active):
    service_id = active["service_id"]
    before = _service(app, service_id)
    page = html(client.get(f"/services/{service_id}"))
    assert f'action="/services/{service_id}/details"' in page
    assert before.details["password"] not in page.split('id="edit-details"')[1]  # never prefilled

    form = {
        "remote_id": before.remote_id,
        "detail.ip": "999.999.1.1",
        "detail.hostname": before.details["hostname"],
        "detail.username": "admin",
        "detail.password": "",
    }
    response = client.post(f"/services/{service_id}/details", data=form)
    assert response.status_code == 422
    page = html(response)
    assert 'id="err-detail-ip"' in page and "Not an IP address." in page
    assert _service(app, service_id).details == before.details  # nothing changed
    assert _history(app, service_id) == []

    form.update({"detail.ip": "2001:db8::7", "remote_id": "vm-moved-7"})
    response = client.post(f"/services/{service_id}/details", data=form)
    assert response.status_code == 302
    after = _service(app, service_id)
    assert after.details == {
        **before.details,
        "ip": "2001:db8::7",
        "username": "admin",
    }  # the blank password kept its value
    assert after.remote_id == "vm-moved-7"
    assert _history(app, service_id) == [
        (
            "details_edited",
            "admin@example.com",
            "Changed details: ip, username; remote id.",
        )
    ]
    page = html(client.get(f"/services/{service_id}"))
    assert 'id="service-history"' in page and "Changed details: ip, username; remote id." in page


def test_staff_edit_details_through_the_api(app, api, active):
    service_id = active["service_id"]
    before = _service(app, service_id)
    status, body = api.put(
        f"/services/{service_id}/details",
        {"details": {"ip": "10.0.0.300", "panel_url": "javascript:alert(3)", "rack": "R1"}},
    )
    assert status == 422, body
    assert body["error"]["fields"] == {
        "details.ip": "Not an IP address.",
        "details.panel_url": "Not a web address (http:// or https://).",
        "details.rack": "Not a detail field of this product type.",
    }
    assert _service(app, service_id).details == before.details

    status, body = api.put(
        f"/services/{service_id}/details",
        {"details": {"panel_url": "https://panel.example.net/", "password": None}},
    )
    assert status == 200, body
    assert body["details"]["panel_url"] == "https://panel.example.net/"
    assert "password" not in body["details"]  # null clears it
    assert _history(app, service_id)[-1][2] == "Changed details: panel_url, password."

    # another live service of the same module holds this remote id: refused
    other = api.ok(
        "post",
        "/orders",
        {
            "client_id": active["client"]["id"],
            "tariff_id": active["tariff"]["id"],
            "params": {"hostname": "b.example.net"},
        },
        status=201,
    )
    _, paid = api.pay(other)
    api.wait_operation(paid["operation_id"])
    taken = _service(app, other["service_id"]).remote_id
    status, body = api.put(f"/services/{service_id}/details", {"remote_id": taken})
    assert status == 409, body
    assert body["error"]["code"] == "remote_id_bound"
    assert f"already bound to service #{other['service_id']}" in body["error"]["message"]
    status, body = api.put(f"/services/{service_id}/details", {"remote_id": "x\ny"})
    assert status == 422 and "remote_id" in body["error"]["fields"]
    assert api.put("/services/999999/details", {"details": {}})[0] == 404


def test_a_deleted_services_passwords_are_hidden(app, client, admin, api):
    carol_id = make_client_login(app, *CAROL[:1], password=CAROL[1])
    _, _, tariff, _ = api.catalog("sandbox")
    order = api.order(carol_id, tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    service_id = order["service_id"]
    password = _service(app, service_id).details["password"]

    carol = app.test_client()
    login(carol, *CAROL)
    assert password in html(carol.get(f"/my/services/{service_id}"))  # active: shown
    assert password in html(client.get(f"/services/{service_id}"))

    op = api.ok("post", f"/services/{service_id}/close", {}, status=202)
    api.wait_operation(op["id"])
    assert _service(app, service_id).status == "deleted"

    # the client: gone from the client area
    page = html(carol.get(f"/my/services/{service_id}"))
    assert password not in page and "This service was closed." in page
    # staff: hidden until revealed, and the reveal is recorded
    page = html(client.get(f"/services/{service_id}"))
    assert password not in page
    assert "hidden: the service is deleted" in page and 'id="reveal-secrets"' in page
    assert _history(app, service_id) == []
    page = html(client.post(f"/services/{service_id}/reveal"))
    assert password in page
    assert _history(app, service_id) == [
        ("secrets_revealed", "admin@example.com", "Secret details revealed.")
    ]
    # the API: left out, unless asked for (recorded too)
    body = api.ok("get", f"/services/{service_id}")
    assert "password" not in body["details"] and body["details"]["username"]
    listed = api.ok("get", "/services?status=deleted")["services"]
    assert [s for s in listed if s["id"] == service_id][0]["details"].get("password") is None
    body = api.ok("get", f"/services/{service_id}?reveal=secrets")
    assert body["details"]["password"] == password
    assert len(_history(app, service_id)) == 2
    assert _service(app, service_id).details["password"] == password  # kept, only hidden
    # the welcome email held it: masked in the outbox (page and API) once deleted
    [email] = api.ok("get", f"/emails?service_id={service_id}&kind=welcome")["emails"]
    assert password not in email["body"] and "Root password:" in email["body"]
    page = html(client.get(f"/outbox/{email['id']}"))
    assert password not in page and 'id="masked-note"' in page


def test_a_reseller_no_longer_gets_a_deleted_services_password(app, api):
    """The client API (a reseller's token): the password while the service lives, not
    once it is deleted; its tariffs say each detail field's kind."""
    from tests.support import Api

    _, _, tariff, _ = api.catalog("sandbox")
    shop_client = api.ok("post", "/clients", {"name": "Shop", "email": "shop@example.com"})
    token = api.ok("post", f"/clients/{shop_client['id']}/reseller", status=201)["token"]
    shop = Api(api.client, token)
    fields = shop.ok("get", "/reseller/tariffs")["tariffs"][0]["detail_fields"]
    assert {f["name"]: f["kind"] for f in fields}["ip"] == "ip"
    body = {"tariff_id": tariff["id"], "params": {"hostname": "a.example.com"}}
    order = shop.ok("post", "/reseller/orders", {**body, "idempotency_key": "o-1"}, status=201)
    api.wait_operation(order["operation_id"])
    service_id = order["service_id"]
    assert shop.ok("get", f"/reseller/services/{service_id}")["details"]["password"]
    op = shop.ok(
        "post", f"/reseller/services/{service_id}/close", {"idempotency_key": "c-1"}, status=202
    )
    api.wait_operation(op["id"])
    service = shop.ok("get", f"/reseller/services/{service_id}")
    assert service["status"] == "deleted"
    assert "password" not in service["details"] and service["details"]["ip"]


def test_the_setup_tasks_result_hides_a_deleted_services_password(app, client, admin, api):
    """Set up and deleted by hand (the manual module): the closed setup task showed the
    root password; once the service is deleted it says it is hidden there too."""
    from app.models import Task

    _, _, tariff, customer = api.catalog("manual")
    order = api.order(customer["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"], ("waiting_task",))
    with db(app):
        setup = Task.get(Task.operation == paid["operation_id"]).id
    fields = {"hostname": "m1.example.net", "ip": "203.0.113.9", "username": "root"}
    api.ok("post", f"/tasks/{setup}/close", {"fields": {**fields, "password": "by-hand-pw"}})
    assert "by-hand-pw" in html(client.get(f"/tasks/{setup}"))

    op = api.ok("post", f"/services/{order['service_id']}/close", {}, status=202)
    api.wait_operation(op["id"], ("waiting_task",))
    with db(app):
        closing = Task.get(Task.operation == op["id"]).id
    api.ok("post", f"/tasks/{closing}/close", {})
    assert _service(app, order["service_id"]).status == "deleted"
    page = html(client.get(f"/tasks/{setup}"))
    assert "by-hand-pw" not in page and "hidden: the service is deleted" in page
    assert "203.0.113.9" in page
