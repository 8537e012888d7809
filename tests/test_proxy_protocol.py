"""Tasks proxy protocol 1 (docs/proxy-protocol.md): each defect the independent peer found,
against a scripted peer on loopback (the client side) or through /proxy/v1 (the server
side). Each test failed before its fix."""

import base64
import datetime as dt
import json
import re
import time

import pytest

from app.models import ProxyClientSide, ProxyOutgoing, Service, Task, TaskEvent, utcnow
from tests.support import db, html, wait_for

DETAILS = {
    "hostname": "vps7.upstream.example",
    "ip": "198.51.100.7",
    "username": "root",
    "password": "upstream-pw",
}
REFUSED = {"error": {"code": "validation_error", "message": "not here", "fields": {}}}


def forwarding(app, admin, peer, password="peer-pässword"):
    """A manual module whose department forwards its tasks to ``peer``."""
    from app.services import proxy

    department, _, tariff, customer = admin.catalog("manual")
    with db(app):
        side = proxy.create_client_side(
            {
                "url": peer.url,
                "login": "reseller-1",
                "password": password,
                "remote_department_id": 1,
                "department_id": department["id"],
            }
        )
        # pulled just now: the scheduler's first pull of a new client side stays out of
        # the tests that count the peer's requests
        ProxyClientSide.update(last_pull_at=utcnow()).where(ProxyClientSide.id == side.id).execute()
    return side.id, tariff, customer


def forwarded_task(app, admin, tariff, customer):
    """A paid order whose setup became a task (forwarded by its department)."""
    order = admin.order(customer["id"], tariff["id"])
    status, paid = admin.pay(order)
    assert status == 200, paid
    admin.wait_operation(paid["operation_id"], ("waiting_task",))
    with db(app):
        return Task.get(Task.operation == paid["operation_id"]).id, order["service_id"]


def side_row(app, side_id):
    with db(app):
        return ProxyClientSide.get_by_id(side_id)


# --- one retry schedule per client side ------------------------------------------------------


def test_a_failing_peer_gets_one_attempt_per_due_time_with_a_capped_backoff(
    app, client, admin, scripted_peer
):
    from app.services import proxy

    app.config.update(PROXY_RETRY_DELAY=30, PROXY_RETRY_MAX=100)
    side_id, tariff, customer = forwarding(app, admin, scripted_peer)
    down = {"error": {"code": "unavailable", "message": "maintenance", "fields": {}}}
    scripted_peer.answer = lambda r: (503, down) if r["method"] == "POST" else None
    forwarded_task(app, admin, tariff, customer)
    wait_for(lambda: scripted_peer.sent("/tasks", "POST"), message="the first push")
    wait_for(lambda: side_row(app, side_id).next_push_at is not None, message="the backoff")
    side = side_row(app, side_id)
    assert side.push_failures == 1
    assert dt.timedelta(seconds=25) < side.next_push_at - utcnow() <= dt.timedelta(seconds=30)

    # more messages and sweeps before the due time add no call (they used to start a loop each)
    with db(app):
        for _ in range(5):
            assert proxy.push(side_id) == 0
        for _ in range(3):
            proxy.sweep()
    time.sleep(1.0)  # what the sweeps queued has run by now
    assert len(scripted_peer.sent("/tasks", "POST")) == 1

    # the due time comes: one more attempt, and the wait doubles
    with db(app):
        ProxyClientSide.update(next_push_at=utcnow() - dt.timedelta(seconds=1)).execute()
        proxy.sweep()
        proxy.push(side_id)
    wait_for(lambda: side_row(app, side_id).push_failures == 2, message="the second failure")
    time.sleep(0.5)
    assert len(scripted_peer.sent("/tasks", "POST")) == 2
    wait = side_row(app, side_id).next_push_at - utcnow()
    assert dt.timedelta(seconds=55) < wait <= dt.timedelta(seconds=60)
    with app.app_context():
        assert [proxy.backoff(n) for n in (1, 2, 3, 4, 40)] == [30, 60, 100, 100, 100]

    # the Proxy page says when, and "Retry now" sends at once once the peer is back
    body = html(client.get("/proxy"))
    assert re.search(r"Sending failed 2 times in a row: next try <strong><time[^>]*>in 5\d s", body)
    assert "push: http://127.0.0.1" in body and "maintenance" in body
    page = client.post(f"/proxy/client-sides/{side_id}/push", follow_redirects=True)
    assert f"Sending to {scripted_peer.url} failed: push: {scripted_peer.url}" in html(page)
    assert side_row(app, side_id).push_failures == 3
    scripted_peer.answer = lambda r: None
    page = client.post(f"/proxy/client-sides/{side_id}/push", follow_redirects=True)
    assert f"1 change sent to {scripted_peer.url}." in html(page)
    side = side_row(app, side_id)
    assert (side.push_failures, side.next_push_at, side.last_error) == (0, None, None)
    assert len(scripted_peer.sent("/tasks", "POST")) == 4


def test_a_new_change_during_the_backoff_waits_for_the_due_time(app, admin, scripted_peer):
    app.config.update(PROXY_RETRY_DELAY=60)
    side_id, tariff, customer = forwarding(app, admin, scripted_peer)
    scripted_peer.answer = lambda r: (
        (502, b"<html>bad gateway</html>") if r["method"] == "POST" else None
    )
    task_id, _ = forwarded_task(app, admin, tariff, customer)
    wait_for(lambda: side_row(app, side_id).push_failures == 1, message="the first failure")
    assert "answered 502 without JSON" in side_row(app, side_id).last_error
    for n in range(3):
        admin.ok("post", f"/tasks/{task_id}/comment", {"text": f"note {n}"})
    time.sleep(1.0)
    assert len(scripted_peer.sent(method="POST")) == 1
    with db(app):
        pending = ProxyOutgoing.select().where(ProxyOutgoing.status == "pending").count()
    assert pending == 4  # the task and three comments, in order, none lost


def test_a_failing_push_does_not_hold_back_the_pulls_from_that_peer(app, admin, scripted_peer):
    """A peer whose push side fails (its POSTs answer 503) while its events answer: the
    scheduled pull still comes once the pull interval has passed and brings the peer's
    changes back (each failed push used to set the error time the sweep's pull waited on:
    a peer that kept failing pushes was not pulled while it failed). A failed *pull* still
    waits a full interval."""
    from app.services import proxy

    app.config.update(PROXY_RETRY_DELAY=30, PROXY_PULL_INTERVAL=60)
    side_id, tariff, customer = forwarding(app, admin, scripted_peer)
    down = {"error": {"code": "unavailable", "message": "maintenance", "fields": {}}}
    scripted_peer.answer = lambda r: (503, down) if r["method"] == "POST" else None
    task_id, _ = forwarded_task(app, admin, tariff, customer)
    wait_for(lambda: side_row(app, side_id).push_failures == 1, message="the failed push")
    scripted_peer.events = [_event(1, task_id, "comment", text="racking it now")]
    a_while_ago = utcnow() - dt.timedelta(seconds=61)
    with db(app):  # the last pull was a full interval ago, the push failed just now
        ProxyClientSide.update(last_pull_at=a_while_ago).where(
            ProxyClientSide.id == side_id
        ).execute()
        assert proxy.sweep()["proxy_pulls"] == 1
    wait_for(lambda: side_row(app, side_id).cursor == 1, message="the scheduled pull")
    with db(app):
        comments = TaskEvent.select().where(
            (TaskEvent.task == task_id) & (TaskEvent.kind == "comment")
        )
        assert [e.text for e in comments] == ["racking it now"]  # once

    # a pull that fails waits a full interval before the sweep pulls again
    scripted_peer.answer = lambda r: (503, down)
    with db(app):
        ProxyClientSide.update(last_pull_at=a_while_ago).where(
            ProxyClientSide.id == side_id
        ).execute()
        with pytest.raises(proxy.PeerError):
            proxy.pull(side_id)
        assert proxy.sweep()["proxy_pulls"] == 0
        ProxyClientSide.update(pull_failed_at=a_while_ago).where(
            ProxyClientSide.id == side_id
        ).execute()
        assert proxy.sweep()["proxy_pulls"] == 1


# --- pulls: bounded, validated -------------------------------------------------------------


def _event(event_id, task_id=999999, kind="comment", **extra):
    return {
        "id": event_id,
        "sender_task_id": task_id,
        "kind": kind,
        "actor": "them",
        "text": f"event {event_id}",
        "fields": {},
        "created_at": "2026-12-06T00:00:00Z",
        **extra,
    }


def test_a_peer_that_ignores_the_cursor_does_not_loop(app, admin, scripted_peer):
    from app.services import proxy

    side_id, _, _ = forwarding(app, admin, scripted_peer)
    page = {"events": [_event(n) for n in range(1, 501)], "next": 10**9}
    scripted_peer.answer = lambda r: (200, page) if r["path"].endswith("/events") else None
    with db(app):
        assert proxy.pull(side_id) == 500
        assert proxy.pull(side_id) == 0
    gets = scripted_peer.sent("/events")
    assert len(gets) == 3  # 500 new, then the same page twice: nothing newer, stop
    assert [g["query"]["after"] for g in gets] == ["0", "500", "500"]
    assert side_row(app, side_id).cursor == 500


def test_an_endless_stream_is_read_a_bounded_number_of_pages_per_pull(app, admin, scripted_peer):
    from app.services import proxy

    app.config.update(PROXY_PULL_MAX_PAGES=3)
    side_id, _, _ = forwarding(app, admin, scripted_peer)

    def endless(record):
        if not record["path"].endswith("/events"):
            return None
        after = int(record["query"]["after"])
        return 200, {"events": [_event(after + n) for n in range(1, 501)], "next": after + 500}

    scripted_peer.answer = endless
    with db(app):
        assert proxy.pull(side_id) == 1500
    assert len(scripted_peer.sent("/events")) == 3
    assert side_row(app, side_id).cursor == 1500


def test_event_ids_up_to_18_digits_are_a_cursor_on_either_database(any_app, scripted_peer):
    """The protocol lets event ids (the cursor) take up to 18 digits, as ``after`` does: the
    cursor holds them on PostgreSQL too (its column was an ``integer``, and every pull
    stopped at the first id beyond 2,147,483,647), and an event about a sender task id no
    task here can have (beyond 2^31 - 1, even beyond 64 bits) is skipped like any event
    about a task not sent from here, instead of failing the pull on SQLite."""
    from app.services import catalog, proxy

    with db(any_app):
        department = catalog.create_department({"name": "Forwarded"})
        side_id = proxy.create_client_side(
            {
                "url": scripted_peer.url,
                "login": "reseller-1",
                "password": "peer-pässword",
                "remote_department_id": 1,
                "department_id": department.id,
            }
        ).id
    scripted_peer.events = [
        _event(3_000_000_000, task_id=7),
        _event(3_000_000_001, task_id=2**31),
        _event(3_000_000_002, task_id=2**64),
        _event(10**18 - 1, task_id=8),
    ]
    with db(any_app):
        assert proxy.pull(side_id) == 4
        assert proxy.pull(side_id) == 0
    side = side_row(any_app, side_id)
    assert (side.cursor, side.last_error) == (10**18 - 1, None)
    assert [g["query"]["after"] for g in scripted_peer.sent("/events")] == ["0", str(10**18 - 1)]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"events": {"1": {}}, "next": 1}, "'events' is not a list"),
        ({"events": [{"kind": "comment"}], "next": 1}, "event 0 has no whole-number id"),
        ({"events": [_event("7")], "next": 7}, "event 0 has no whole-number id"),
        ({"events": [_event(True)], "next": 1}, "event 0 has no whole-number id"),
        ({"events": [_event(3, task_id="x")], "next": 3}, "no whole-number sender_task_id"),
        ({"events": [_event(3, fields=[])], "next": 3}, "fields is not an object"),
        ({"events": [], "next": "12"}, "'next' is not a whole number"),
        ({"events": [_event(10**18)], "next": 1}, "event 0: its id is beyond"),
        ({"events": [_event(2**64)], "next": 1}, "event 0: its id is beyond"),
        ({"events": [], "next": 2**64}, "'next' is not a whole number"),
        ({"events": [_event(3)]}, "'next' is not a whole number"),
        (["not", "an", "object"], "without JSON"),
        (b"\x00garbage", "without JSON"),
    ],
)
def test_a_malformed_page_is_an_error_on_the_client_side_and_one_cli_line(
    app, client, admin, runner, scripted_peer, answer, reason
):
    from app.services import proxy
    from app.services.errors import ServiceError

    side_id, _, _ = forwarding(app, admin, scripted_peer)
    scripted_peer.answer = lambda r: (200, answer) if r["path"].endswith("/events") else None
    with db(app), pytest.raises(ServiceError) as caught:
        proxy.pull(side_id)
    assert reason in caught.value.message
    side = side_row(app, side_id)
    assert reason in side.last_error and side.cursor == 0
    body = html(client.get("/proxy"))
    assert f'id="client-side-{side_id}" data-state="failing"' in body
    assert "error: none" not in body and reason.replace("'", "&#39;") in body

    result = runner.invoke(args=["remotetaskctl", "--command", "checkevent"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in result.output
    result = runner.invoke(args=["proxy", "list"])
    assert result.exit_code == 0 and reason in result.output


# --- the server side: never a 500, limits, event ids, closes ------------------------------------


class PeerServer:
    """Provisor's server side on SQLite or PostgreSQL: a server side (login
    ``reseller-1``) into a department, the app's test client and the Basic auth header."""

    def __init__(self, app):
        from app.services import accounts, catalog, proxy

        self.app = app
        self.client = app.test_client()
        with db(app):
            accounts.create_user(
                {"email": "root@example.com", "name": "Root", "password": "root-password"},
                role="admin",
            )
            department = catalog.create_department({"name": "DC"})
            proxy.create_server_side(
                {
                    "login": "reseller-1",
                    "password": "peer-password-1",
                    "department_id": department.id,
                }
            )
        self.department_id = department.id
        token = base64.b64encode(b"reseller-1:peer-password-1").decode()
        self.headers = {"Authorization": f"Basic {token}"}


@pytest.fixture
def peer_server(any_app):
    return PeerServer(any_app)


def send_task(server, sender_task_id, form=(), **extra):
    body = {
        "sender_task_id": sender_task_id,
        "department_id": server.department_id,
        "title": f"Set up #{sender_task_id}",
        "form": list(form),
        **extra,
    }
    response = server.client.post("/proxy/v1/tasks", json=body, headers=server.headers)
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()["task_id"]


def send_event(server, sender_task_id, event_id, kind="comment", **body):
    return server.client.post(
        f"/proxy/v1/tasks/{sender_task_id}/events",
        json={"event_id": event_id, "kind": kind, **body},
        headers=server.headers,
    )


def test_every_answer_names_the_protocol_and_the_challenge_says_utf8(peer_server):
    response = peer_server.client.get("/proxy/v1/departments", headers=peer_server.headers)
    assert response.status_code == 200
    assert response.headers["Provisor-Proxy-Protocol"] == "1"
    response = peer_server.client.get("/proxy/v1/departments")
    assert response.status_code == 401
    assert response.headers["Provisor-Proxy-Protocol"] == "1"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="provisor-proxy", charset="UTF-8"'
    assert peer_server.client.get("/proxy/v1/nothing").headers["Provisor-Proxy-Protocol"] == "1"


@pytest.mark.parametrize(
    "sender_task_id", ["0", "2147483648", "18446744073709551616", "9" * 40, "-1"]
)
def test_sender_task_ids_beyond_range_are_a_404_not_a_500(peer_server, sender_task_id):
    response = send_event(peer_server, 1, "e1", text="hi")  # nothing received yet: 404 too
    assert response.status_code == 404
    response = peer_server.client.post(
        f"/proxy/v1/tasks/{sender_task_id}/events",
        json={"event_id": "e1", "kind": "comment", "text": "hi"},
        headers=peer_server.headers,
    )
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_deep_json_and_wrong_types_are_4xx_errors(peer_server):
    send_task(peer_server, 1)
    deep = "[" * 5000 + "]" * 5000
    response = peer_server.client.post(
        "/proxy/v1/tasks/1/events",
        data=deep,
        content_type="application/json",
        headers=peer_server.headers,
    )
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_json"
    for body, field in [
        ({"fields": []}, "fields"),
        ({"fields": {"ip": ["198.51.100.1"]}}, "fields"),
        ({"fields": {"ip": {"v": 4}}}, "fields"),
        ({"fields": {"up": True}}, "fields"),
        ({"text": 5}, "text"),
        ({"actor": {"name": "x"}}, "actor"),
    ]:
        response = send_event(peer_server, 1, "e-types", **body)
        assert response.status_code == 422, body
        assert field in response.get_json()["error"]["fields"], body
    response = peer_server.client.post(
        "/proxy/v1/tasks",
        json={
            "sender_task_id": 2,
            "department_id": peer_server.department_id,
            "title": "x",
            "fields": [],
        },
        headers=peer_server.headers,
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {
        "fields": "Must be an object of detail fields."
    }


def test_size_limits_on_the_body_and_on_every_field(peer_server):
    headers, department_id = peer_server.headers, peer_server.department_id
    huge = "x" * (12 * 1024 * 1024)
    response = peer_server.client.post(
        "/proxy/v1/tasks",
        json={
            "sender_task_id": 1,
            "department_id": department_id,
            "title": "t",
            "description": huge,
        },
        headers=headers,
    )
    assert response.status_code == 413 and "error" in response.get_json()
    cases = [
        ({"description": "d" * 10001}, "description", "At most 10,000 characters."),
        ({"fields": {"ip": "1" * 2001}}, "fields", "ip: at most 2,000 characters."),
        ({"fields": {f"f{n}": "v" for n in range(101)}}, "fields", "At most 100 detail fields."),
        ({"fields": {"n" * 101: "v"}}, "fields", "Each name must be 1 to 100 characters."),
        ({"form": [{"name": f"f{n}"} for n in range(101)]}, "form", "At most 100 fields."),
        ({"form": [{"name": "ip", "label": "L" * 201}]}, "form", None),
        ({"title": "T" * 251}, "title", "At most 250 characters."),
    ]
    for extra, field, message in cases:
        body = {"sender_task_id": 5, "department_id": department_id, "title": "t", **extra}
        response = peer_server.client.post("/proxy/v1/tasks", json=body, headers=headers)
        assert response.status_code == 422, extra
        errors = response.get_json()["error"]["fields"]
        assert field in errors and (message is None or errors[field] == message), errors
    send_task(peer_server, 1)
    response = send_event(peer_server, 1, "long", text="c" * 10001)
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"text": "At most 10,000 characters."}
    response = send_event(peer_server, 1, "i" * 101, text="hi")
    assert response.status_code == 422 and "event_id" in response.get_json()["error"]["fields"]
    with db(peer_server.app):
        assert Task.select().count() == 1  # none of the refused ones left anything
        assert not TaskEvent.select().where(TaskEvent.kind == "comment").exists()


def test_event_ids_a_replay_is_a_replay_a_reuse_is_refused_never_dropped(peer_server):
    first, second = send_task(peer_server, 1), send_task(peer_server, 2)
    response = send_event(peer_server, 1, "e1", text="on the first")
    assert response.status_code == 200 and response.get_json()["applied"] is True
    response = send_event(peer_server, 1, "e1", text="on the first")
    assert response.status_code == 200 and response.get_json()["applied"] is False
    for sender_task_id, text in [(2, "on the first"), (2, "on the second"), (1, "other text")]:
        response = send_event(peer_server, sender_task_id, "e1", text=text)
        assert response.status_code == 409, (sender_task_id, text)
        error = response.get_json()["error"]
        assert error["code"] == "event_id_reused"
        assert "already used for task 1" in error["message"]
    with db(peer_server.app):
        comments = {
            e.task_id: e.text for e in TaskEvent.select().where(TaskEvent.kind == "comment")
        }
    assert comments == {first: "on the first"}
    assert second not in comments


def test_old_kind_names_are_taken_as_the_new_ones(peer_server):
    task_id = send_task(peer_server, 1)
    response = send_event(peer_server, 1, "c1", kind="cancel", text="not needed")
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    response = send_event(peer_server, 1, "c2", kind="cancelled")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "task_not_open"
    with db(peer_server.app):
        assert Task.get_by_id(task_id).status == "cancelled"


def test_a_pushed_close_keeps_unknown_fields_and_refuses_a_missing_required_one(peer_server):
    form = [{"name": "ip", "label": "IP address", "required": True}, {"name": "note"}]
    task_id = send_task(peer_server, 1, form=form)
    response = send_event(peer_server, 1, "close-1", kind="closed", fields={"rack": "R1"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["fields"] == {"ip": "IP address is required."}
    assert "cannot be closed here: missing ip" in error["message"]
    with db(peer_server.app):
        task = Task.get_by_id(task_id)
        assert task.status == "new" and "rack" not in (task.fields or {})
        notes = [e.text for e in TaskEvent.select().where(TaskEvent.task == task_id)]
    assert any("cannot be closed here: ip missing" in (n or "") for n in notes), notes

    # the same event id may come again once it can be applied (a refusal used nothing up)
    response = send_event(
        peer_server, 1, "close-1", kind="closed", fields={"ip": "198.51.100.1", "rack": "R1"}
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "closed"
    with db(peer_server.app):
        assert Task.get_by_id(task_id).fields == {"ip": "198.51.100.1", "rack": "R1"}
    response = send_event(peer_server, 1, "close-2", kind="closed", fields={"ip": "x"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "task_not_open"


def test_a_cursor_never_passes_an_event_still_being_written(pg_api):
    """Events of one server side are written one at a time: on PostgreSQL an id is handed
    out before its transaction commits, so without that a reader could move past an id
    that shows up later, and lose the event. Writers comment on received tasks from
    several threads while a reader pages with its cursor; it sees each event once."""
    import threading

    server = PeerServer(pg_api.app)
    staff = [send_task(server, n) for n in range(1, 5)]
    done = threading.Event()
    seen = []

    def write(task_id):
        client = pg_api.app.test_client()
        headers = pg_api.headers
        for n in range(15):
            response = client.post(
                f"/api/v1/tasks/{task_id}/comment", json={"text": f"c{n}"}, headers=headers
            )
            assert response.status_code == 200, response.get_json()

    def read():
        client = pg_api.app.test_client()
        cursor = 0
        while True:
            finished = done.is_set()
            page = client.get(f"/proxy/v1/events?after={cursor}", headers=server.headers).get_json()
            seen.extend(e["id"] for e in page["events"])
            cursor = page["next"]
            if finished and not page["events"]:
                return

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(task_id,)) for task_id in staff]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    done.set()
    reader.join(30)
    from app.models import ProxyEvent

    with db(pg_api.app):
        written = [e.id for e in ProxyEvent.select().order_by(ProxyEvent.id)]
    assert len(written) == 60
    assert seen == written  # every event, once, in order


# --- the client side: refusals park, closes that cannot be applied say so ----------------------


def test_a_refused_change_is_parked_and_the_rest_flows(app, client, admin, scripted_peer):
    side_id, tariff, customer = forwarding(app, admin, scripted_peer)
    first, _ = forwarded_task(app, admin, tariff, customer)
    second, _ = forwarded_task(app, admin, tariff, customer)
    wait_for(lambda: len(scripted_peer.sent("/tasks", "POST")) == 2, message="both tasks sent")

    def refuse_first_task_comments(record):
        if record["path"] == f"/proxy/v1/tasks/{first}/events":
            return 422, REFUSED
        return None

    scripted_peer.answer = refuse_first_task_comments
    admin.ok("post", f"/tasks/{first}/comment", {"text": "first A"})
    admin.ok("post", f"/tasks/{first}/comment", {"text": "second A"})
    admin.ok("post", f"/tasks/{second}/comment", {"text": "only B"})
    wait_for(
        lambda: scripted_peer.sent(f"/tasks/{second}/events"), message="the other task's change"
    )
    time.sleep(0.5)
    texts = [r["json"]["text"] for r in scripted_peer.sent("/events", "POST")]
    assert texts == ["first A", "only B"]  # the second of A waits behind the parked one

    def rows():
        with db(app):
            return {
                r.payload["text"]: r.status
                for r in ProxyOutgoing.select().where(ProxyOutgoing.kind == "comment")
            }

    # "only B" is recorded sent once the peer's answer is back: a moment after the peer has it
    expected = {"first A": "parked", "second A": "pending", "only B": "sent"}
    wait_for(lambda: rows() == expected, message=f"the rows {expected}")
    with db(app):
        parked = ProxyOutgoing.get(ProxyOutgoing.status == "parked")
    assert "answered 422: not here" in parked.last_error
    side = side_row(app, side_id)
    assert side.next_push_at is None and side.push_failures == 0  # not a failing peer

    body = html(client.get("/proxy"))
    assert "1 refused" in body and f'id="proxy-change-{parked.id}"' in body
    body = html(client.get(f"/tasks/{first}"))
    assert f'id="proxy-change-{parked.id}"' in body and "not here" in body
    assert "Yes, skip it" in body

    # Retry while the peer still refuses: parked again; once it takes it, the rest follows
    response = client.post(f"/proxy/changes/{parked.id}/retry")
    assert response.status_code == 302, html(response)
    wait_for(lambda: len(scripted_peer.sent("/events", "POST")) == 3, message="the retry")
    wait_for(lambda: change_status(app, parked.id) == "parked", message="parked again")
    scripted_peer.answer = lambda r: None
    page = client.post(
        f"/proxy/changes/{parked.id}/retry", data={"next": f"/tasks/{first}"}, follow_redirects=True
    )
    assert page.request.path == f"/tasks/{first}"
    wait_for(lambda: len(scripted_peer.sent("/events", "POST")) == 5, message="both of A")
    texts = [r["json"]["text"] for r in scripted_peer.sent("/events", "POST")]
    assert texts == ["first A", "only B", "first A", "first A", "second A"]
    wait_for(lambda: statuses(app) == {"sent"}, message="every change sent")
    # a retry of what is not parked is refused plainly
    response = client.post(f"/proxy/changes/{parked.id}/skip")
    assert response.status_code == 409


def statuses(app):
    with db(app):
        return {r.status for r in ProxyOutgoing.select()}


def change_status(app, change_id):
    with db(app):
        return ProxyOutgoing.get_by_id(change_id).status


def test_a_skipped_change_lets_the_task_go_on(app, client, admin, scripted_peer):
    _, tariff, customer = forwarding(app, admin, scripted_peer)
    task_id, _ = forwarded_task(app, admin, tariff, customer)
    wait_for(lambda: scripted_peer.sent("/tasks", "POST"), message="the task sent")
    scripted_peer.answer = lambda r: (
        (409, {"error": {"code": "task_not_open", "message": "frozen", "fields": {}}})
        if r["json"] and r["json"].get("text") == "refused"
        else None
    )
    admin.ok("post", f"/tasks/{task_id}/comment", {"text": "refused"})
    admin.ok("post", f"/tasks/{task_id}/comment", {"text": "after it"})
    wait_for(lambda: "parked" in statuses(app), message="the refusal parked")
    with db(app):
        parked = ProxyOutgoing.get(ProxyOutgoing.status == "parked")
    client.post(f"/proxy/changes/{parked.id}/skip")
    wait_for(lambda: len(scripted_peer.sent("/events", "POST")) == 2, message="the next one")
    assert scripted_peer.sent("/events", "POST")[1]["json"]["text"] == "after it"
    with db(app):
        assert ProxyOutgoing.get_by_id(parked.id).status == "skipped"


def test_a_pulled_close_keeps_extra_fields_or_says_it_could_not_be_applied(
    app, admin, runner, scripted_peer
):
    from app.services import proxy

    side_id, tariff, customer = forwarding(app, admin, scripted_peer)
    task_a, service_a = forwarded_task(app, admin, tariff, customer)
    task_b, service_b = forwarded_task(app, admin, tariff, customer)
    wait_for(lambda: len(scripted_peer.sent("/tasks", "POST")) == 2, message="both sent")
    scripted_peer.events = [
        _event(1, task_a, "closed", fields={**DETAILS, "rack": "R7"}),
        _event(2, task_b, "closed", fields={"hostname": "b.example", "rack": "R8"}),
    ]
    result = runner.invoke(args=["remotetaskctl", "--command", "checkevent"])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    assert (
        f"task #{task_b} was closed remotely but not here: missing ip, password, username" in line
    )
    with db(app):
        a, b = Task.get_by_id(task_a), Task.get_by_id(task_b)
        assert a.status == "closed" and a.fields == {**DETAILS, "rack": "R7"}
        assert Service.get_by_id(service_a).status == "active"
        assert Service.get_by_id(service_a).details == DETAILS  # the extra stays on the task
        assert b.status in Task.OPEN_STATUSES and b.fields["rack"] == "R8"
        assert Service.get_by_id(service_b).status == "processing"
        notes = [e.args for e in TaskEvent.select().where(TaskEvent.task == task_b)]
        assert {"missing": "ip, password, username"} in notes
        assert proxy.link_of(b) is not None
    assert side_row(app, side_id).cursor == 2
    # the peer is told, on its task, with a comment
    wait_for(
        lambda: any(
            "cannot be closed at the sender" in (r["json"] or {}).get("text", "")
            for r in scripted_peer.sent(f"/tasks/{task_b}/events", "POST")
        ),
        message="the comment to the peer",
    )


def test_a_close_without_fields_is_pushed_as_a_cancel(app, admin, scripted_peer):
    """An operation completed another way (automatically, or on its page) closes its task
    with no detail fields: the peer is told its task is no longer needed (a close without
    the required fields would be refused there)."""
    from app.db import write_transaction
    from app.services import tasks

    _, tariff, customer = forwarding(app, admin, scripted_peer)
    task_id, _ = forwarded_task(app, admin, tariff, customer)
    wait_for(lambda: scripted_peer.sent("/tasks", "POST"), message="the task sent")
    with db(app), write_transaction():
        tasks.close_for_operation(Task.get_by_id(task_id).operation, utcnow())
    wait_for(lambda: scripted_peer.sent("/events", "POST"), message="the change pushed")
    sent = scripted_peer.sent("/events", "POST")[0]["json"]
    assert (sent["kind"], sent["fields"]) == ("cancelled", {})
    assert sent["text"] == "No longer needed: done at the sender without this task."


# --- credentials ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "пароль-секрет",  # Cyrillic
        "κωδικός-μυστικός",  # Greek
        "密码密码密码密码",  # CJK
        "كلمة-السر-سرية",  # Arabic
        "पासवर्ड-गुप्त",  # Devanagari
        "🔑🔑🔑🔑-key",  # beyond the BMP
        "pässwörd€£",  # Latin-1 and beyond
    ],
)
def test_non_ascii_passwords_log_in_between_two_instances(app, scripted_peer, password):
    from app.services import accounts, catalog, proxy

    with db(app):
        accounts.create_user(
            {"email": "root@example.com", "name": "Root", "password": "root-password"},
            role="admin",
        )
        department = catalog.create_department({"name": "DC"})
        proxy.create_server_side(
            {"login": "rés-1", "password": password, "department_id": department.id}
        )
    from tests.support import serve_wsgi

    server, port = serve_wsgi(app)
    try:
        with db(app):
            offered = proxy.remote_departments(
                {"url": f"http://127.0.0.1:{port}", "login": "rés-1", "password": password}
            )
        assert offered == [{"id": department.id, "name": "DC"}]
        # what goes on the wire is UTF-8 (the scripted peer decodes it so)
        with db(app):
            proxy.remote_departments(
                {"url": scripted_peer.url, "login": "rés-1", "password": password}
            )
        assert scripted_peer.requests[-1]["password"] == password
    finally:
        server.shutdown()


def test_a_password_that_is_not_text_is_one_cli_line(app, runner):
    result = runner.invoke(
        args=[
            "proxy",
            "client-side",
            "--url",
            "http://127.0.0.1:9",
            "--login",
            "x",
            "--password",
            "bad\udcffbytes",
            "--remote-department-id",
            "1",
            "--department-id",
            "1",
        ]
    )
    assert result.exit_code != 0
    assert "Traceback" not in result.output and "UTF-8" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bodies_go_out_as_utf8_not_escaped(app, admin, scripted_peer):
    _, tariff, customer = forwarding(app, admin, scripted_peer)
    task_id, _ = forwarded_task(app, admin, tariff, customer)
    wait_for(lambda: scripted_peer.sent("/tasks", "POST"), message="the task sent")
    admin.ok("post", f"/tasks/{task_id}/comment", {"text": "Привет, мир"})
    wait_for(lambda: scripted_peer.sent("/events", "POST"), message="the comment")
    record = scripted_peer.sent("/events", "POST")[0]
    assert "Привет, мир".encode() in record["raw"]
    assert record["headers"]["Provisor-Proxy-Protocol"] == "1"
    assert json.loads(record["raw"])["kind"] == "comment"
