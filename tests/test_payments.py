"""The signed payment webhook: idempotent, and bad requests change nothing."""

import json
import time

import pytest

from app.db import database
from app.models import Operation, Order, Payment
from tests.support import WEBHOOK_SECRET, signed


def _counts():
    with database.connection_context():
        return Operation.select().count(), Payment.select().count()


@pytest.fixture
def unpaid(app, api):
    _, _, tariff, client = api.catalog("sandbox")
    order = api.order(client["id"], tariff["id"])
    return order


def _post(client, raw, headers):
    response = client.post("/api/v1/webhooks/payment", data=raw, headers=headers)
    return response.status_code, response.get_json(silent=True)


def _body(order, **overrides):
    return {
        "payment_id": "pay-1",
        "order_id": order["id"],
        "amount": order["amount"],
        "currency": order["currency"],
        **overrides,
    }


def test_payment_then_replay_returns_the_same_and_queues_nothing(client, api, unpaid):
    raw, headers = signed(_body(unpaid))
    status, first = _post(client, raw, headers)
    assert status == 200, first
    assert first["order_status"] == "paid" and first["replayed"] is False
    assert first["service_id"] == unpaid["service_id"]
    before = _counts()
    raw, headers = signed(_body(unpaid))  # a new timestamp, same payment
    status, again = _post(client, raw, headers)
    assert status == 200
    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {
        k: v for k, v in first.items() if k != "replayed"
    }
    assert _counts() == before
    service = api.ok("get", f"/services/{unpaid['service_id']}")
    assert service["status"] in ("processing", "active")
    assert len([op for op in service["operations"] if op["kind"] == "open"]) == 1


def test_second_payment_for_a_paid_order_is_refused(client, api, unpaid):
    _post(client, *signed(_body(unpaid)))
    before = _counts()
    status, body = _post(client, *signed(_body(unpaid, payment_id="pay-2")))
    assert status == 409
    assert body["error"]["code"] == "conflict"
    assert _counts() == before


@pytest.mark.parametrize(
    "make_headers, reason",
    [
        (lambda raw: {"Content-Type": "application/json"}, "missing"),
        (lambda raw: signed(raw, "another-secret")[1], "bad signature"),
        (lambda raw: signed(raw, WEBHOOK_SECRET, time.time() - 301)[1], "too old"),
        (lambda raw: signed(raw, WEBHOOK_SECRET, time.time() + 400)[1], "too old"),
        (lambda raw: {"X-Provisor-Signature": "t=abc,v1=00"}, "malformed"),
        (lambda raw: {"X-Provisor-Signature": "v1=00"}, "malformed"),
        (lambda raw: {"X-Provisor-Signature": f"t={int(time.time())}"}, "malformed"),
    ],
)
def test_bad_or_stale_signature_is_401_and_changes_nothing(client, unpaid, make_headers, reason):
    raw = json.dumps(_body(unpaid)).encode()
    before = _counts()
    status, body = _post(client, raw, make_headers(raw))
    assert status == 401
    assert reason in body["error"]["message"]
    assert _counts() == before
    with database.connection_context():
        assert Order.get_by_id(unpaid["id"]).status == "unpaid"


def test_signature_over_a_different_body_is_refused(client, unpaid):
    raw, headers = signed(_body(unpaid))
    tampered = raw.replace(b'"pay-1"', b'"pay-9"')
    status, _ = _post(client, tampered, headers)
    assert status == 401


@pytest.mark.parametrize(
    "body, field, status",
    [
        ({"order_id": 1, "amount": "9.99", "currency": "USD"}, "payment_id", 422),
        ({"payment_id": "p", "amount": "9.99", "currency": "USD"}, "order_id", 422),
        (
            {"payment_id": "p", "order_id": "x", "amount": "9.99", "currency": "USD"},
            "order_id",
            422,
        ),
        ({"payment_id": "p", "order_id": 1, "amount": "lots", "currency": "USD"}, "amount", 422),
        ({"payment_id": "p", "order_id": 1, "amount": "9.99"}, "currency", 422),
        ({"payment_id": "p", "order_id": 1, "amount": "1.00", "currency": "USD"}, "amount", 422),
        ({"payment_id": "p", "order_id": 1, "amount": "9.99", "currency": "EUR"}, "currency", 422),
        (
            {"payment_id": ["p"], "order_id": 1, "amount": "9.99", "currency": "USD"},
            "payment_id",
            422,
        ),
        ({"payment_id": "p", "order_id": 999, "amount": "9.99", "currency": "USD"}, None, 404),
    ],
)
def test_malformed_payment_is_refused_and_changes_nothing(client, unpaid, body, field, status):
    body = {**body}
    if body.get("order_id") == 1:
        body["order_id"] = unpaid["id"]
    before = _counts()
    got, answer = _post(client, *signed(body))
    assert got == status, answer
    if field:
        assert field in answer["error"]["fields"]
    assert _counts() == before


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"a string"'])
def test_non_object_body_is_400(client, unpaid, raw):
    before = _counts()
    status, answer = _post(client, raw, signed(raw)[1])
    assert status in (400, 422)
    assert answer["error"]["code"] in ("invalid_json", "validation_error")
    assert _counts() == before


def test_staff_can_mark_an_order_paid(api, unpaid):
    paid = api.ok("post", f"/orders/{unpaid['id']}/pay")
    assert paid["status"] == "paid"
    api.wait_operation(paid["operation_id"])
    code, body = api.post(f"/orders/{unpaid['id']}/pay")
    assert code == 409
