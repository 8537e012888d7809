"""What a provider's staff and clients expect (issue 12, defects) through Flask's test
client: a cancelled setup (``setup_cancelled``, its reason, "Retry setup"), modules'
departments, "Set up manually" assigns its task, the live service heading, the count
chips, tariff prices and currencies, the cancel reason's limit and the wording of kinds,
attempts, who cancelled, times and module ranks."""

import re

from app.models import Operation, ProcessingModule, Service, Task
from tests.support import (
    HTMX,
    db,
    html,
    login,
    make_client_login,
    wait_for,
)


def manual_setup(api, client_id=None):
    """A paid service on the manual setup module, its open operation waiting for a task."""
    department, module, tariff, customer = api.catalog("manual")
    order = api.order(client_id or customer["id"], tariff["id"])
    status, body = api.pay(order)
    assert status == 200, body
    api.wait_operation(body["operation_id"], ("waiting_task",))
    with db(api.client.application):
        task_id = Task.get(Task.operation == body["operation_id"]).id
    return {
        "department": department,
        "module": module,
        "tariff": tariff,
        "service_id": order["service_id"],
        "operation_id": body["operation_id"],
        "task_id": task_id,
    }


def service_status(app, service_id):
    with db(app):
        service = Service.get_by_id(service_id)
        return service.status, service.setup_cancelled_reason


# --- a cancelled setup --------------------------------------------------------------------


def test_cancelling_the_setup_task_leaves_the_service_setup_cancelled_with_its_reason(
    app, client, admin
):
    carol = make_client_login(app)
    ids = manual_setup(admin, client_id=carol)
    response = client.post(
        f"/tasks/{ids['task_id']}/cancel", data={"reason": "The rack is full until March"}
    )
    assert response.status_code == 302
    assert service_status(app, ids["service_id"]) == (
        "setup_cancelled",
        "The rack is full until March",
    )
    page = html(client.get(f"/services/{ids['service_id']}"))
    assert "Setup cancelled:" in page and "The rack is full until March" in page
    assert "Retry setup" in page

    # the client reads it, and the page no longer polls
    carol_browser = app.test_client()
    login(carol_browser, "carol@example.com", "carol-password")
    mine = html(carol_browser.get(f"/my/services/{ids['service_id']}"))
    assert "Setup cancelled: The rack is full until March" in mine
    assert "being set up" not in mine and "hx-trigger" not in mine
    listing = html(carol_browser.get("/my"))
    assert "setup cancelled" in listing and "The rack is full until March" in listing

    # staff retry it: a new open operation, the service is being set up again
    response = client.post(f"/services/{ids['service_id']}/retry-setup")
    assert response.status_code == 302
    assert service_status(app, ids["service_id"]) == ("processing", None)
    with db(app):
        ops = list(Operation.select().where(Operation.service == ids["service_id"]))
    retried = [op for op in ops if op.id != ids["operation_id"]]
    assert len(retried) == 1 and retried[0].kind == "open"
    assert retried[0].params["requested_by"] == "admin@example.com"
    admin.wait_operation(retried[0].id, ("waiting_task",))
    assert "being set up" in html(carol_browser.get(f"/my/services/{ids['service_id']}"))
    # a second retry is refused: the service is not setup_cancelled any more
    client.post(f"/services/{ids['service_id']}/retry-setup")
    assert "only a service whose setup was cancelled" in html(
        client.get(f"/services/{ids['service_id']}")
    )


def test_api_cancel_operation_with_a_reason_and_retry_setup(app, admin):
    ids = manual_setup(admin)
    code, body = admin.post(f"/operations/{ids['operation_id']}/cancel", {"reason": "x" * 1001})
    assert code == 422 and "1,000" in body["error"]["fields"]["reason"]
    assert service_status(app, ids["service_id"])[0] == "processing"
    admin.ok("post", f"/operations/{ids['operation_id']}/cancel", {"reason": "Out of stock"})
    service = admin.ok("get", f"/services/{ids['service_id']}")
    assert service["status"] == "setup_cancelled"
    assert service["setup_cancelled_reason"] == "Out of stock"

    op = admin.ok("post", f"/services/{ids['service_id']}/retry-setup", status=202)
    assert op["kind"] == "open" and op["id"] != ids["operation_id"]
    service = admin.ok("get", f"/services/{ids['service_id']}")
    assert service["status"] == "processing" and service["setup_cancelled_reason"] is None
    code, body = admin.post(f"/services/{ids['service_id']}/retry-setup")
    assert code == 409, body
    code, _ = admin.post("/services/999999/retry-setup")
    assert code == 404


def test_running_a_cancelled_setup_again_sets_the_service_up_again(app, client, admin):
    ids = manual_setup(admin)
    admin.ok("post", f"/operations/{ids['operation_id']}/cancel")
    assert service_status(app, ids["service_id"]) == ("setup_cancelled", None)
    page = html(client.get(f"/services/{ids['service_id']}"))
    assert "no reason was given" in page
    # "Run now" on the cancelled operation: the setup goes on
    admin.ok("post", f"/operations/{ids['operation_id']}/restart")
    assert service_status(app, ids["service_id"]) == ("processing", None)


def test_cancelling_another_operation_leaves_the_service_as_it_is(app, admin):
    ids = manual_setup(admin)
    admin.ok(
        "post",
        f"/tasks/{ids['task_id']}/close",
        {
            "fields": {
                "hostname": "h.example.net",
                "ip": "203.0.113.5",
                "username": "root",
                "password": "pw-123456",
            }
        },
    )
    op = admin.ok("post", f"/services/{ids['service_id']}/suspend", status=202)
    admin.wait_operation(op["id"], ("waiting_task",))
    admin.ok("post", f"/operations/{op['id']}/cancel", {"reason": "not now"})
    assert service_status(app, ids["service_id"]) == ("active", None)
