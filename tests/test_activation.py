"""Automatic activation on the embedded system (SQLite + in-process broker and worker).

Real components: the http module talks to a real HTTP server on loopback, welcome emails go
to a real SMTP server (aiosmtpd).
"""

import datetime as dt

from app.db import database
from app.models import Attempt, Operation
from tests.support import wait_for


def _attempts(op_id):
    with database.connection_context():
        return list(Attempt.select().where(Attempt.operation == op_id).order_by(Attempt.number))


def test_http_module_fails_twice_then_succeeds(app, api, http_endpoint, smtp_server):
    app.config["SMTP_URL"] = smtp_server.url
    http_endpoint.script = ["500", "500"]
    _, module, tariff, client = api.catalog(
        "http", http_endpoint.config(), retry_delay=1, max_attempts=3
    )
    order = api.order(client["id"], tariff["id"], {"domain": "alice.example"})
    status, paid = api.pay(order)
    assert status == 200, paid

    op = api.wait_operation(paid["operation_id"], timeout=20)
    assert op["attempts"] == 3
    attempts = api.ok("get", f"/operations/{op['id']}")["attempt_log"]
    assert [a["outcome"] for a in attempts] == ["temporary_error", "temporary_error", "done"]
    assert "500" in attempts[0]["error"]
    assert "POST http://127.0.0.1" in attempts[0]["log"]

    # exactly three calls for this operation, one creation, all signed correctly
    calls = [c for c in http_endpoint.calls("open") if c["operation_id"] == op["id"]]
    assert len(calls) == 3
    assert http_endpoint.bad_signatures == 0
    assert list(http_endpoint.creations) == [op["id"]]
    assert calls[0]["tariff"]["internal_name"] == tariff["internal_name"]
    assert calls[0]["client"]["email"] == client["email"]
    assert calls[0]["params"] == {"domain": "alice.example"}

    service = api.ok("get", f"/services/{order['service_id']}")
    assert service["status"] == "active"
    assert service["remote_id"] == http_endpoint.creations[op["id"]]
    assert service["details"]["ip"] == "198.51.100.7"

    message = wait_for(lambda: smtp_server.messages, message="the welcome email")[0]
    assert message["to"] == [client["email"]]
    assert "198.51.100.7" in message["body"]
    assert f"#{service['id']}" in message["subject"]
    # the server has the message a moment before the email is recorded sent
    emails = wait_for(
        lambda: (
            (e := api.ok("get", f"/emails?service_id={service['id']}")["emails"])
            and e[0]["status"] != "sending"
            and e
        ),
        message="the email recorded sent",
    )
    assert [e["status"] for e in emails] == ["sent"]


def test_retry_waits_exactly_the_retry_delay(app, api, monkeypatch):
    from app.services import dispatch

    sent = []  # (operation id, delay) of every run_operation message
    operations = dispatch.operations

    def recorded(ids, delay=None):
        ids = list(ids)
        sent.extend((op_id, delay) for op_id in ids)
        return operations(ids, delay=delay)

    monkeypatch.setattr(dispatch, "operations", recorded)
    _, module, tariff, client = api.catalog(
        "sandbox", {"fail_first": 2}, retry_delay=1, max_attempts=5
    )
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op_id = paid["operation_id"]
    api.wait_operation(op_id, timeout=15)
    attempts = _attempts(op_id)
    assert len(attempts) == 3
    # each retry is sent with the module's fixed delay, not a randomised backoff (an early
    # delivery is sent again for the rest of it: less than the delay)
    retries = [delay for sent_id, delay in sent if sent_id == op_id and delay is not None]
    assert retries.count(1) == 2 and all(0 < delay <= 1 for delay in retries), retries
    for before, after in zip(attempts, attempts[1:], strict=False):
        gap = (after.started_at - before.finished_at).total_seconds()
        assert gap >= 1.0, gap  # never early


def test_escalation_after_max_attempts_then_closed_by_staff(app, api, http_endpoint, smtp_server):
    app.config["SMTP_URL"] = smtp_server.url
    http_endpoint.script = ["503", "503"]
    department, module, tariff, client = api.catalog(
        "http", http_endpoint.config(), retry_delay=1, max_attempts=2, product_type="hosting"
    )
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("manual",), timeout=15)
    assert op["attempts"] == 2
    assert "503" in op["last_error"]

    tasks = api.ok("get", f"/tasks?department_id={department['id']}&status=new")["tasks"]
    assert len(tasks) == 1
    task = tasks[0]
    assert task["title"] == f"Set up service #{order['service_id']} manually"
    assert task["operation_id"] == op["id"]
    assert api.ok("get", f"/services/{order['service_id']}")["status"] == "processing"

    # required detail fields are enforced, and a refused close changes nothing
    code, body = api.post(f"/tasks/{task['id']}/close", {"fields": {"ip": "203.0.113.5"}})
    assert code == 422
    assert "username" in body["error"]["fields"]
    assert api.ok("get", f"/operations/{op['id']}")["status"] == "manual"

    fields = {
        "domain": "alice.example",
        "ip": "203.0.113.5",
        "username": "alice",
        "password": "pw-by-hand",
        "panel_url": "https://cp.example/",
    }
    api.ok("post", f"/tasks/{task['id']}/assign", {})
    closed = api.ok("post", f"/tasks/{task['id']}/close", {"fields": fields, "comment": "done"})
    assert closed["status"] == "closed"
    op = api.ok("get", f"/operations/{op['id']}")
    assert op["status"] == "done"
    assert op["completed_by"] == "admin@example.com"
    service = api.ok("get", f"/services/{order['service_id']}")
    assert service["status"] == "active"
    assert service["details"]["ip"] == "203.0.113.5"
    message = wait_for(lambda: smtp_server.messages, message="the welcome email")[0]
    assert "203.0.113.5" in message["body"] and "pw-by-hand" in message["body"]


def test_permanent_error_escalates_at_once(app, api, http_endpoint):
    http_endpoint.script = ["400"]
    department, module, tariff, client = api.catalog(
        "http", http_endpoint.config(), retry_delay=1, max_attempts=5
    )
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("manual",))
    assert op["attempts"] == 1
    assert "400" in op["last_error"]
    assert len(api.ok("get", f"/tasks?department_id={department['id']}")["tasks"]) == 1


def test_timeout_and_refused_connection_are_temporary(app, api, http_endpoint):
    http_endpoint.script = ["timeout"]
    _, _, tariff, client = api.catalog(
        "http", http_endpoint.config(timeout=0.5), retry_delay=1, max_attempts=3
    )
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], timeout=15)
    log = api.ok("get", f"/operations/{op['id']}")["attempt_log"]
    assert log[0]["outcome"] == "temporary_error" and "timeout" in log[0]["error"]

    _, _, tariff2, client2 = api.catalog(
        "http",
        {"url": "http://127.0.0.1:9/", "secret": "s", "timeout": 1},
        retry_delay=1,
        max_attempts=2,
    )
    order2 = api.order(client2["id"], tariff2["id"])
    _, paid2 = api.pay(order2)
    op2 = api.wait_operation(paid2["operation_id"], ("manual",), timeout=15)
    assert op2["attempts"] == 2
    assert "cannot reach" in op2["last_error"]


def test_pending_then_signed_callback(app, api, http_endpoint):
    from tests.support import ENDPOINT_SECRET, signed

    http_endpoint.script = ["pending"]
    _, _, tariff, client = api.catalog("http", http_endpoint.config(), retry_delay=1)
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("waiting_callback",))

    raw, headers = signed(
        {"status": "done", "remote_id": "cb-1", "details": {"ip": "192.0.2.9"}}, "wrong-secret"
    )
    bad = app.test_client().post(
        f"/api/v1/operations/{op['id']}/callback", data=raw, headers=headers
    )
    assert bad.status_code == 401
    assert api.ok("get", f"/operations/{op['id']}")["status"] == "waiting_callback"

    raw, headers = signed(
        {"status": "done", "remote_id": "cb-1", "details": {"ip": "192.0.2.9"}}, ENDPOINT_SECRET
    )
    good = app.test_client().post(
        f"/api/v1/operations/{op['id']}/callback", data=raw, headers=headers
    )
    assert good.status_code == 200, good.get_json()
    assert good.get_json()["status"] == "done"
    service = api.ok("get", f"/services/{order['service_id']}")
    assert service["status"] == "active" and service["remote_id"] == "cb-1"
    # a repeated callback changes nothing
    again = app.test_client().post(
        f"/api/v1/operations/{op['id']}/callback", data=raw, headers=headers
    )
    assert again.status_code == 200


def test_callback_before_the_pending_answer_is_recorded(app, api, http_endpoint):
    """The endpoint calls back at once, before Provisor has recorded its "pending" reply."""
    from tests.support import ENDPOINT_SECRET, signed

    answers = []

    def call_back_first(payload, behaviour):
        if payload["operation"] == "open" and behaviour == "pending":
            raw, headers = signed(
                {"status": "done", "remote_id": "fast-1", "details": {"ip": "192.0.2.55"}},
                ENDPOINT_SECRET,
            )
            response = app.test_client().post(
                f"/api/v1/operations/{payload['operation_id']}/callback", data=raw, headers=headers
            )
            answers.append(response.status_code)

    http_endpoint.script = ["pending"]
    http_endpoint.before_reply = call_back_first
    _, _, tariff, client = api.catalog("http", http_endpoint.config(), retry_delay=1)
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"])
    assert answers == [200]
    assert [a["outcome"] for a in op["attempt_log"]] == ["done"]
    # the module's request log is recorded too, before the callback's note
    log = wait_for(
        lambda: (
            "POST" in (text := api.ok("get", f"/operations/{op['id']}")["attempt_log"][0]["log"])
            and text
        )
    )
    assert log.index("POST") < log.index("callback: done")
    service = api.ok("get", f"/services/{order['service_id']}")
    assert service["status"] == "active" and service["remote_id"] == "fast-1"


def test_lost_messages_are_found_by_the_sweep(app, api, runner, monkeypatch):
    """Broker messages lost (queued ones, then a delayed retry): the sweep runs them."""
    from app.services import dispatch

    real_send = dispatch._send
    lost = []

    def lossy(name, ids, delay, lose_immediate=True):
        if delay or lose_immediate:
            lost.append((name, ids, delay))
        else:
            real_send(name, ids, delay)

    _, module, tariff, client = api.catalog("sandbox", {"fail_first": 1}, retry_delay=1)
    wait_for(
        lambda: api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "ready",
        message="the module's item",
    )
    # 1. every message lost at payment time (a broker restarted without persistence)
    monkeypatch.setattr(dispatch, "_send", lossy)
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op_id = paid["operation_id"]
    assert ("run_operation", [op_id], None) in lost
    assert api.ok("get", f"/operations/{op_id}")["status"] == "queued"

    # 2. from now on only delayed messages (the retry) are lost
    monkeypatch.setattr(dispatch, "_send", lambda n, i, d: lossy(n, i, d, lose_immediate=False))
    result = runner.invoke(args=["ops", "sweep"])
    assert result.exit_code == 0, result.output
    assert "resent: 1" in result.output, result.output
    api.wait_operation(op_id, ("retry_wait",))
    wait_for(lambda: _due(op_id), timeout=5, message="the retry to be due")
    assert api.ok("get", f"/operations/{op_id}")["status"] == "retry_wait"
    assert ("run_operation", [op_id], 1) in lost

    result = runner.invoke(args=["ops", "sweep"])
    assert "resent: 1" in result.output, result.output
    assert api.wait_operation(op_id)["attempts"] == 2


def _due(op_id):
    with database.connection_context():
        op = Operation.get_by_id(op_id)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return op.next_run_at <= now - dt.timedelta(seconds=0.2)


def test_stale_running_operation_is_reclaimed(app, api, runner, monkeypatch):
    """A worker that died mid-attempt leaves a running operation; the sweep takes it over."""
    from app.services import dispatch, orders

    _, module, tariff, client = api.catalog("sandbox", {"latency_ms": 0}, retry_delay=1)
    wait_for(
        lambda: api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "ready",
        message="the module's item",
    )
    order = api.order(client["id"], tariff["id"])
    real_send = dispatch._send
    monkeypatch.setattr(dispatch, "_send", lambda *args: None)
    with app.app_context(), database.connection_context():
        _, op = orders.mark_paid(order["id"], by="test")
    # pretend a worker claimed it, called the panel and died
    with database.connection_context():
        past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=5)
        Operation.update(status="running", attempts=1, lease_until=past).where(
            Operation.id == op.id
        ).execute()
        Attempt.create(operation=op.id, number=1, worker="dead:1", started_at=past)
    monkeypatch.setattr(dispatch, "_send", real_send)
    result = runner.invoke(args=["ops", "sweep"])
    assert "reclaimed: 1" in result.output, result.output
    done = api.wait_operation(op.id)
    assert done["attempts"] == 2
    outcomes = [a["outcome"] for a in api.ok("get", f"/operations/{op.id}")["attempt_log"]]
    assert outcomes == ["interrupted", "done"]


def test_mail_server_down_then_up_nothing_lost(app, api):
    from tests.support import free_port, start_smtp

    port = free_port()
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    app.config["MAIL_TIMEOUT"] = 2
    _, _, tariff, client = api.catalog("sandbox")
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    email = wait_for(
        lambda: [e for e in api.ok("get", "/emails")["emails"] if e["status"] == "retry_wait"],
        message="a failed delivery",
    )[0]
    assert email["attempts"] >= 1 and email["last_error"]
    controller, handler = start_smtp(port)
    try:
        wait_for(lambda: handler.messages, timeout=15, message="the retried email")
        sent = wait_for(
            lambda: [e for e in api.ok("get", "/emails")["emails"] if e["status"] == "sent"]
        )
        assert sent[0]["id"] == email["id"]
        assert len(handler.messages) == 1
    finally:
        controller.stop()


def test_outbox_without_smtp(app, api):
    _, _, tariff, client = api.catalog("sandbox")
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    emails = wait_for(lambda: api.ok("get", "/emails?status=outbox")["emails"])
    assert emails[0]["to"] == client["email"]
    assert emails[0]["kind"] == "welcome"


def test_a_message_delivered_again_after_its_operation_is_done_changes_nothing(app, api):
    """What a Redis broker does with a message whose acknowledgement a dead worker never
    sent: it comes again. The operation is done, so the run does nothing."""
    import actors
    from app.models import Email, SandboxResource, Service

    _, _, tariff, client = api.catalog("sandbox")
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op_id = paid["operation_id"]
    done = api.wait_operation(op_id)
    wait_for(lambda: api.ok("get", "/emails?status=outbox")["emails"], message="the welcome")

    def state():
        with database.connection_context():
            service = Service.get_by_id(order["service_id"])
            return (
                [(a.number, a.outcome) for a in _attempts(op_id)],
                Operation.get_by_id(op_id).status,
                (service.status, service.details),
                SandboxResource.select().where(SandboxResource.service_id == service.id).count(),
                Email.select().where(Email.service == service.id).count(),
            )

    before = state()
    assert before[0] == [(1, "done")] and before[1] == "done"
    assert before[3] == 1 and before[4] == 1
    with app.app_context(), database.connection_context():
        actors.run_operation.fn(op_id)  # the same message again, as a worker runs it
    assert state() == before
    assert api.ok("get", f"/operations/{op_id}")["attempts"] == done["attempts"] == 1
