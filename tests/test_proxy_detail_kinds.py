"""The tasks proxy and detail kinds: the form a sender forwards carries each field's kind;
a close carrying a value that is not of its kind is refused like a missing required field
— pushed: the documented 422 naming the field ("Not an IP address."), nothing changes
but a note; pulled: the task stays open and the peer is told with a comment."""

import base64

from app.models import ProxyClientSide, ProxyInbound, Service, Task, TaskEvent, utcnow
from tests.support import db, wait_for

DETAILS = {
    "hostname": "vps7.upstream.example",
    "ip": "198.51.100.7",
    "username": "root",
    "password": "upstream-pw",
}
FORM = [
    {"name": "ip", "label": "IP address", "required": True, "kind": "ip"},
    {"name": "panel_url", "label": "Panel", "kind": "url"},
    {"name": "note", "label": "Note", "kind": "hologram"},  # unknown to this side: text
]


def _server_side(app):
    from app.services import accounts, catalog, proxy

    with db(app):
        accounts.create_user(
            {"email": "root@example.com", "name": "Root", "password": "root-password"},
            role="admin",
        )
        department = catalog.create_department({"name": "DC"})
        proxy.create_server_side(
            {"login": "reseller-1", "password": "peer-password-1", "department_id": department.id}
        )
    token = base64.b64encode(b"reseller-1:peer-password-1").decode()
    return department.id, {"Authorization": f"Basic {token}"}


def test_a_pushed_close_with_a_value_not_of_its_kind_is_a_422_naming_the_field(app):
    department_id, headers = _server_side(app)
    peer = app.test_client()
    body = {"sender_task_id": 1, "department_id": department_id, "title": "Set up", "form": FORM}
    response = peer.post("/proxy/v1/tasks", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    task_id = response.get_json()["task_id"]
    with db(app):
        kinds = [(f["name"], f["kind"]) for f in ProxyInbound.get().form]
    assert kinds == [("ip", "ip"), ("panel_url", "url"), ("note", "text")]

    def close(event_id, fields):
        return peer.post(
            "/proxy/v1/tasks/1/events",
            json={"event_id": event_id, "kind": "closed", "fields": fields},
            headers=headers,
        )

    response = close("c1", {"ip": "999.999.1.1", "panel_url": "javascript:alert(3)"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"] == {
        "ip": "Not an IP address.",
        "panel_url": "Not a web address (http:// or https://).",
    }
    assert error["message"] == (
        "the task cannot be closed here: ip: Not an IP address.; "
        "panel_url: Not a web address (http:// or https://)"
    )
    with db(app):
        task = Task.get_by_id(task_id)
        assert task.status == "new" and not task.fields
        notes = [e.text for e in TaskEvent.select().where(TaskEvent.task == task_id)]
    assert any(
        "cannot be closed here: ip: Not an IP address.; panel_url" in (n or "") for n in notes
    )

    # missing and invalid at once: both said
    response = close("c1", {"panel_url": "ftp://x.example"})
    assert response.get_json()["error"]["message"] == (
        "the task cannot be closed here: missing ip; "
        "panel_url: Not a web address (http:// or https://)"
    )
    # a refusal used nothing up: the same event id, corrected, is applied
    response = close("c1", {"ip": "198.51.100.1", "panel_url": "https://panel.example/"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "closed"


def test_a_pulled_close_with_a_bad_value_stays_open_and_the_peer_is_told(
    app, admin, runner, scripted_peer
):
    from app.services import proxy

    department, _, tariff, customer = admin.catalog("manual")
    with db(app):
        side = proxy.create_client_side(
            {
                "url": scripted_peer.url,
                "login": "reseller-1",
                "password": "peer-pässword",
                "remote_department_id": 1,
                "department_id": department["id"],
            }
        )
        ProxyClientSide.update(last_pull_at=utcnow()).where(ProxyClientSide.id == side.id).execute()
    order = admin.order(customer["id"], tariff["id"])
    _, paid = admin.pay(order)
    admin.wait_operation(paid["operation_id"], ("waiting_task",))
    with db(app):
        task_id = Task.get(Task.operation == paid["operation_id"]).id
    wait_for(lambda: scripted_peer.sent("/tasks", "POST"), message="the task sent")
    form = scripted_peer.sent("/tasks", "POST")[0]["json"]["form"]
    assert {f["name"]: f["kind"] for f in form}["ip"] == "ip"  # the sender says the kinds

    scripted_peer.events = [
        {
            "id": 1,
            "sender_task_id": task_id,
            "kind": "closed",
            "actor": "them",
            "text": "",
            "fields": {**DETAILS, "ip": "999.999.1.1"},
            "created_at": "2026-12-06T00:00:00Z",
        }
    ]
    result = runner.invoke(args=["remotetaskctl", "--command", "checkevent"])
    assert result.exit_code == 1, result.output
    assert (
        f"task #{task_id} was closed remotely but not here: ip: Not an IP address" in result.output
    )
    with db(app):
        assert Task.get_by_id(task_id).status in Task.OPEN_STATUSES
        service = Service.get_by_id(order["service_id"])
        assert service.status == "processing" and service.details == {}
    wait_for(
        lambda: any(
            "sender: ip: Not an IP address. Please correct them."
            in (r["json"] or {}).get("text", "")
            for r in scripted_peer.sent(f"/tasks/{task_id}/events", "POST")
        ),
        message="the comment to the peer",
    )


def test_a_form_received_without_kinds_takes_values_as_long_as_the_protocol_allows(app):
    department_id, headers = _server_side(app)
    peer = app.test_client()
    form = [{"name": "notes", "label": "Notes", "required": True}]  # an older peer: no kind
    body = {"sender_task_id": 5, "department_id": department_id, "title": "Do", "form": form}
    assert peer.post("/proxy/v1/tasks", json=body, headers=headers).status_code == 201
    with db(app):  # as a form stored before kinds existed
        ProxyInbound.update(form=form).execute()
    response = peer.post(
        "/proxy/v1/tasks/5/events",
        json={"event_id": "c1", "kind": "closed", "fields": {"notes": "n" * 1500}},
        headers=headers,
    )
    assert response.status_code == 200, response.get_json()
