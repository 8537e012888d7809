"""Secrets never reach an attempt log, an error or an API answer about them: the module's
secret settings, the product type's secret detail fields, and any value a remote sends
under a key named like a secret (password, token, api_key...), whatever the answer was.

The audit's case: the http module's log showed the endpoint's full reply, with the
client's password, to any staff member.
"""

import json
import logging

import pytest

from app.db import database
from app.models import Attempt, Operation
from tests.support import ENDPOINT_SECRET, signed

LEAKS = {"password": "leak-pw-123456", "root_password": "leak-root-456", "api_token": "tok-7890"}


def _texts(app, api, client, op_id, caplog):
    """Everything staff could read about the operation: logs, errors, the API's answer,
    its page, and what the processes logged meanwhile."""
    with app.app_context(), database.connection_context():
        attempts = list(Attempt.select().where(Attempt.operation == op_id))
        op = Operation.get_by_id(op_id)
    shown = json.dumps(api.ok("get", f"/operations/{op_id}"))
    page = client.get(f"/operations/{op_id}")
    assert page.status_code == 200
    return (
        [a.log or "" for a in attempts]
        + [a.error or "" for a in attempts]
        + [
            op.last_error or "",
            shown,
            page.get_data(as_text=True),
            caplog.text,
        ]
    )


@pytest.mark.parametrize("status", [400, 500, 200])
def test_a_reply_with_secrets_is_logged_without_them(
    app, admin, client, http_endpoint, status, caplog
):
    """A refusal (4xx), a failure (5xx) or a malformed success, each carrying secrets."""
    http_endpoint.script = ["raw"]
    http_endpoint.raw_status = status
    body = {"error": "refused", "details": LEAKS, "account": {"token": LEAKS["api_token"]}}
    if status == 200:
        body = {"status": "done", "details": ["not", "an", "object", LEAKS]}
    http_endpoint.raw_reply = json.dumps(body).encode()
    caplog.set_level(logging.INFO)
    api = admin  # logged in to the pages too
    _, _, tariff, customer = api.catalog("http", http_endpoint.config(), max_attempts=1)
    order = api.order(customer["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"], ("manual",))
    texts = _texts(app, api, client, paid["operation_id"], caplog)
    assert any("********" in t for t in texts)  # the reply is there, masked
    for secret in [*LEAKS.values(), ENDPOINT_SECRET]:
        assert not any(secret in t for t in texts), secret


def test_an_error_callback_with_secrets_is_logged_without_them(
    app, admin, client, http_endpoint, caplog
):
    caplog.set_level(logging.INFO)
    api = admin
    http_endpoint.script = ["pending"]
    _, _, tariff, customer = api.catalog("http", http_endpoint.config(), max_attempts=1)
    order = api.order(customer["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("waiting_callback",))
    raw, headers = signed(
        {"status": "error", "message": "quota", "permanent": True, "details": LEAKS},
        ENDPOINT_SECRET,
    )
    response = client.post(f"/api/v1/operations/{op['id']}/callback", data=raw, headers=headers)
    assert response.status_code == 200, response.get_json()
    texts = _texts(app, api, client, op["id"], caplog)
    assert any("quota" in t for t in texts)
    for secret in LEAKS.values():
        assert not any(secret in t for t in texts), secret
