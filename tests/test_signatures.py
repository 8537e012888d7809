"""Signatures bound to their direction and path (``app.signing``'s v2), with v1 kept for
the transition and for the payment webhook's public contract.

The audit's case: a request Provisor sent to an http endpoint, captured and replayed to
``/api/v1/operations/<id>/callback``, was accepted (same secret, same scheme both ways).
"""

import pytest

from app import signing
from tests.support import ENDPOINT_SECRET, WEBHOOK_SECRET, signed


def _pending_open(api, http_endpoint, **config):
    http_endpoint.script = ["pending"]
    _, _, tariff, client = api.catalog("http", http_endpoint.config(**config))
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    return api.wait_operation(paid["operation_id"], ("waiting_callback",))


def _callback(client, op_id, raw, header):
    response = client.post(
        f"/api/v1/operations/{op_id}/callback",
        data=raw,
        headers={"Content-Type": "application/json", signing.HEADER: header},
    )
    return response.status_code, response.get_json()


DONE = {"status": "done", "remote_id": "acct-9", "details": {"username": "u9"}}


def test_a_request_provisor_sent_replayed_as_a_callback_is_refused(api, client, http_endpoint):
    op = _pending_open(api, http_endpoint)
    raw, header = http_endpoint.received[-1]  # what an eavesdropper captured
    assert "v1=" in header and "v2=" in header  # the transition: both
    status, body = _callback(client, op["id"], raw, header)
    assert status == 401 and "v2: signed for another direction or path" in body["error"]["message"]
    v1_only = ",".join(p for p in header.split(",") if not p.startswith("v2="))
    status, body = _callback(client, op["id"], raw, v1_only)
    assert status == 401, body
    assert body["error"]["message"] == (
        "a request Provisor sent cannot be a callback (sign callbacks with v2)"
    )
    assert api.ok("get", f"/operations/{op['id']}")["status"] == "waiting_callback"
    # an old endpoint's own callback, signed v1, still works during the transition
    raw, headers = signed(DONE, ENDPOINT_SECRET)
    status, body = _callback(client, op["id"], raw, headers[signing.HEADER])
    assert status == 200 and body["status"] == "done", body


def test_v2_only_binds_requests_and_callbacks_to_their_direction_and_path(
    api, client, http_endpoint
):
    http_endpoint.v2_only = True  # the endpoint verifies v2 (direction request) alone
    op = _pending_open(api, http_endpoint, signatures="v2")
    raw, header = http_endpoint.received[-1]
    assert "v1=" not in header and "v2=" in header
    path = f"/api/v1/operations/{op['id']}/callback"
    raw, headers = signed(DONE, ENDPOINT_SECRET)  # v1 alone: refused now
    status, body = _callback(client, op["id"], raw, headers[signing.HEADER])
    assert status == 401 and "a v2 signature is required" in body["error"]["message"]
    for wrong in (
        {"direction": "request", "path": path},  # the other direction
        {"direction": "callback", "path": "/api/v1/operations/999/callback"},  # elsewhere
    ):
        raw, headers = signed(DONE, ENDPOINT_SECRET, v1=False, **wrong)
        status, body = _callback(client, op["id"], raw, headers[signing.HEADER])
        assert status == 401, (wrong, body)
    raw, headers = signed(DONE, ENDPOINT_SECRET, v1=False, direction="callback", path=path)
    status, body = _callback(client, op["id"], raw, headers[signing.HEADER])
    assert status == 200 and body["status"] == "done", body


@pytest.mark.parametrize(
    "v2, expected",
    [
        ({}, 200),  # v1: the public contract
        ({"direction": "payment", "path": "/api/v1/webhooks/payment"}, 200),
        ({"direction": "payment", "path": "/api/v1/webhooks/payment", "v1": False}, 200),
        ({"direction": "callback", "path": "/api/v1/webhooks/payment", "v1": False}, 401),
        ({"direction": "payment", "path": "/elsewhere", "v1": False}, 401),
    ],
)
def test_the_payment_webhook_takes_v1_and_v2_bound_to_it(api, client, v2, expected):
    _, _, tariff, customer = api.catalog()
    order = api.order(customer["id"], tariff["id"])
    body = {
        "payment_id": "pay-1",
        "order_id": order["id"],
        "amount": order["amount"],
        "currency": order["currency"],
    }
    raw, headers = signed(body, WEBHOOK_SECRET, **v2)
    response = client.post("/api/v1/webhooks/payment", data=raw, headers=headers)
    assert response.status_code == expected, response.get_json()


@pytest.mark.parametrize(
    "header",
    ["t=1,v1=é", "t=1,v1=\u00ff" * 3, "t=9999999999,v2=zz", "t=,v1=", "v1=ab"],
)
def test_malformed_signature_headers_are_401_never_500(api, client, header):
    response = client.post(
        "/api/v1/webhooks/payment",
        data=b"{}",
        headers={"Content-Type": "application/json", signing.HEADER: header},
    )
    assert response.status_code == 401, response.data
    assert response.get_json()["error"]["code"] == "bad_signature"


def test_malformed_signature_headers_on_a_callback_are_401_never_500(api, client, http_endpoint):
    """The audit's non-ASCII ``v1`` (a 500 once) on the callback route too: each refused
    with 401, the operation still waiting for its callback."""
    op = _pending_open(api, http_endpoint)
    raw = b'{"status": "done"}'
    headers = ["t=1,v1=é", "t=1,v1=\u00ff" * 3, "t=9999999999,v2=zz", "t=,v1=", "v1=ab"]
    for header in [*headers, "t=1,v1=" + "é" * 64, "t=1,v2=" + "\u00e9" * 64]:
        status, body = _callback(client, op["id"], raw, header)
        assert status == 401, (header, body)
        assert body["error"]["code"] == "bad_signature", (header, body)
    assert api.ok("get", f"/operations/{op['id']}")["status"] == "waiting_callback"
