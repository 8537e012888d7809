"""Every status × every action, against a table written here by hand.

The machines are declared once in ``app/states.py`` and the services drive them; these
tables are an independent statement of what must happen, so that a change to either
shows up here, not only in a slow end-to-end flow. Each cell sets an operation (or task,
or service) into the status directly, performs the action through the services layer or
the API, and checks the status it ends in — or that it was refused (409) and nothing
changed.
"""

import json

import pytest

import modules
from app import signing
from app.db import database
from app.models import Attempt, Operation, Service, Task, User, utcnow
from app.services import dispatch, operations, provisioning, tasks
from app.services.errors import Conflict
from modules.base import ModuleType, Result
from tests.support import ENDPOINT_SECRET

STATUSES = [
    "queued",
    "running",
    "retry_wait",
    "polling",
    "waiting_callback",
    "waiting_task",
    "manual",
    "done",
    "cancelled",
]
NO = "409"  # refused, nothing changes

# action: {status it starts in: status it ends in}
OPERATION_TABLE = {
    "run now": {
        "queued": "queued",
        "running": NO,
        "retry_wait": "queued",
        "polling": "queued",
        "waiting_callback": "queued",
        "waiting_task": NO,
        "manual": "queued",
        "done": NO,
        "cancelled": "queued",
    },
    "cancel": {
        "queued": "cancelled",
        "running": NO,
        "retry_wait": "cancelled",
        "polling": "cancelled",
        "waiting_callback": "cancelled",
        "waiting_task": "cancelled",
        "manual": "cancelled",
        "done": NO,
        "cancelled": NO,
    },
    "take over": {
        "queued": "manual",
        "running": NO,
        "retry_wait": "manual",
        "polling": "manual",
        "waiting_callback": "manual",
        "waiting_task": "waiting_task",
        "manual": "manual",
        "done": NO,
        "cancelled": NO,
    },
    "close its task": {
        "queued": "done",
        "running": NO,
        "retry_wait": "done",
        "polling": "done",
        "waiting_callback": "done",
        "waiting_task": "done",
        "manual": "done",
        "done": "done",  # a reopened task closed again: details corrected, nothing runs
        "cancelled": "cancelled",
    },
    "callback": {
        "queued": NO,
        "running": "done",  # the endpoint called back before its "pending" was recorded
        "retry_wait": NO,
        "polling": NO,
        "waiting_callback": "done",
        "waiting_task": NO,
        "manual": NO,
        "done": "done",  # a repeated callback
        "cancelled": NO,
    },
    # a poll result arrives for the attempt while the operation is in that status
    # (someone or something changed it meanwhile): only a running attempt's counts
    "poll": {status: ("polling" if status == "running" else status) for status in STATUSES},
}


class PollingSuspend(ModuleType):
    """Answers "not finished" to a suspend; ``meanwhile`` sets the operation's status as
    another actor would while the call is in flight."""

    id = "states-test-poll"
    name = "Poll (states test)"
    operations = {"suspend"}
    meanwhile = None

    def suspend(self, ctx):
        if PollingSuspend.meanwhile != "running":
            Operation.update(status=PollingSuspend.meanwhile).where(
                Operation.id == ctx.operation.id
            ).execute()
        return Result.poll(after=30, state={"job": "j-1"})


@pytest.fixture
def world(app, api, http_endpoint, monkeypatch):
    """An http module, a VPS tariff and an active service; nothing goes to the worker."""
    monkeypatch.setattr(dispatch, "_send", lambda *args, **kwargs: None)
    modules.types()
    monkeypatch.setitem(modules._registry, PollingSuspend.id, PollingSuspend)
    department, module, tariff, client = api.catalog("http", http_endpoint.config())
    poller = api.ok("post", "/modules", {"name": "poller", "type": PollingSuspend.id})
    return {"module": module, "poller": poller, "tariff": tariff, "client": client}


def _operation_in(app, world, status, module="module"):
    """A suspend operation of a new active service, put straight into ``status`` (with an
    attempt, and a task when people have it)."""
    with app.app_context(), database.connection_context():
        now = utcnow()
        service = Service.create(
            client=world["client"]["id"],
            tariff=world["tariff"]["id"],
            module=world[module]["id"],
            status="active",
            remote_id="acct-1",
        )
        op = Operation.create(
            kind="suspend",
            service=service,
            module=world[module]["id"],
            status=status,
            attempts=1,
            next_run_at=now,
            lease_until=now if status in ("running", "waiting_callback") else None,
        )
        Attempt.create(operation=op, number=1, started_at=now)
        task = None
        if status in ("manual", "waiting_task", "queued", "retry_wait", "polling", "done"):
            task = Task.create(
                service=service,
                operation=op,
                status="closed" if status == "done" else "new",
                created_at=now,
                updated_at=now,
            )
        return op.id, task.id if task else None, service.id


def _status(app, op_id):
    with app.app_context(), database.connection_context():
        return Operation.get_by_id(op_id).status


def _admin(app):
    with app.app_context(), database.connection_context():
        return User.get(User.email == "admin@example.com")


def _act(app, api, client, world, action, status):
    """Perform ``action`` on a new operation in ``status``; its final status or NO."""
    op_id, task_id, _ = _operation_in(
        app, world, status, module="poller" if action == "poll" else "module"
    )
    try:
        if action == "run now":
            code, _ = api.post(f"/operations/{op_id}/restart")
            return _status(app, op_id) if code == 202 else NO
        if action == "cancel":
            code, _ = api.post(f"/operations/{op_id}/cancel")
            return _status(app, op_id) if code == 200 else NO
        if action == "take over":
            code, _ = api.post(f"/operations/{op_id}/take-over")
            return _status(app, op_id) if code == 200 else NO
        if action == "close its task":
            admin = _admin(app)
            with app.app_context(), database.connection_context():
                if task_id is None:
                    now = utcnow()
                    task_id = Task.create(
                        service=Operation.get_by_id(op_id).service_id,
                        operation=op_id,
                        created_at=now,
                        updated_at=now,
                    ).id
                else:  # a closed task is reopened first, as an admin would
                    Task.update(status="in_work").where(Task.id == task_id).execute()
                tasks.close(task_id, admin, {})
            return _status(app, op_id)
        if action == "callback":
            raw = json.dumps({"status": "done", "remote_id": "acct-1"}).encode()
            response = client.post(
                f"/api/v1/operations/{op_id}/callback",
                data=raw,
                headers={
                    "Content-Type": "application/json",
                    signing.HEADER: signing.sign(ENDPOINT_SECRET, raw),
                },
            )
            return _status(app, op_id) if response.status_code == 200 else NO
        if action == "poll":
            PollingSuspend.meanwhile = status
            with app.app_context(), database.connection_context():
                # the attempt is in flight: claimed, then the module answers "poll"
                Operation.update(status="queued", next_run_at=None).where(
                    Operation.id == op_id
                ).execute()
                operations.run(op_id)
            return _status(app, op_id)
    except Conflict:
        return NO
    raise AssertionError(action)


@pytest.mark.parametrize("action", list(OPERATION_TABLE))
def test_every_operation_status_and_action(app, api, client, world, action):
    results = {status: _act(app, api, client, world, action, status) for status in STATUSES}
    assert results == OPERATION_TABLE[action]


def test_a_refused_action_changes_nothing(app, api, world):
    op_id, _, _ = _operation_in(app, world, "done")
    with app.app_context(), database.connection_context():
        before = Operation.get_by_id(op_id).__data__
    for path in ("restart", "cancel", "take-over"):
        code, body = api.post(f"/operations/{op_id}/{path}")
        assert code == 409 and body["error"]["code"] == "conflict", body
    with app.app_context(), database.connection_context():
        assert Operation.get_by_id(op_id).__data__ == before


SERVICE_STATUSES = ["ordered", "processing", "setup_cancelled", "active", "suspended", "deleted"]
# which service statuses staff may request each kind from
SERVICE_TABLE = {
    "suspend": {"active"},
    "resume": {"suspended"},
    "close": {"active", "suspended", "processing", "setup_cancelled"},
    "change_tariff": {"active", "suspended"},
    "renew": {"active", "suspended"},
}


def test_retry_setup_only_from_setup_cancelled(app, api, world):
    """Retry setup (issue 12): from setup_cancelled only, back to processing with a new
    open operation; from every other status 409 and nothing changes."""
    for status in SERVICE_STATUSES:
        with app.app_context(), database.connection_context():
            service = Service.create(
                client=world["client"]["id"],
                tariff=world["tariff"]["id"],
                module=world["module"]["id"],
                status=status,
                setup_cancelled_reason="why" if status == "setup_cancelled" else None,
            )
        code, body = api.post(f"/services/{service.id}/retry-setup")
        with app.app_context(), database.connection_context():
            after = Service.get_by_id(service.id)
        if status == "setup_cancelled":
            assert code == 202 and body["kind"] == "open", body
            assert (after.status, after.setup_cancelled_reason) == ("processing", None)
        else:
            assert code == 409, (status, body)
            assert after.status == status


@pytest.mark.parametrize("kind", list(SERVICE_TABLE))
def test_every_service_status_and_request(app, api, world, kind):
    other = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Other",
            "product_type": "vps",
            "price": "1",
            "internal_name": f"other-{kind}",
            "module_ids": [world["module"]["id"]],
        },
    )
    allowed = set()
    for status in SERVICE_STATUSES:
        with app.app_context(), database.connection_context():
            service = Service.create(
                client=world["client"]["id"],
                tariff=world["tariff"]["id"],
                module=world["module"]["id"],
                status=status,
            )
        code, body = api.post(f"/services/{service.id}/{kind}", {"tariff_id": other["id"]})
        if code == 202:
            allowed.add(status)
        else:
            assert code == 409 and "needs it to be" in body["error"]["message"], body
    assert allowed == SERVICE_TABLE[kind]
    assert set(provisioning.KINDS) >= set(SERVICE_TABLE)


TASK_STATUSES = ["new", "in_work", "closed", "cancelled"]
TASK_TABLE = {
    "assign": {"new": "in_work", "in_work": "in_work", "closed": NO, "cancelled": NO},
    "close": {"new": "closed", "in_work": "closed", "closed": NO, "cancelled": NO},
    "cancel": {"new": "cancelled", "in_work": "cancelled", "closed": NO, "cancelled": NO},
    "reopen": {"new": NO, "in_work": NO, "closed": "new", "cancelled": "new"},
    "fill in fields": {"new": "new", "in_work": "in_work", "closed": NO, "cancelled": NO},
}


@pytest.mark.parametrize("action", list(TASK_TABLE))
def test_every_task_status_and_action(app, api, world, action):
    results = {}
    for status in TASK_STATUSES:
        with app.app_context(), database.connection_context():
            now = utcnow()
            task = Task.create(title="A task", status=status, created_at=now, updated_at=now)
        path = {
            "assign": "assign",
            "close": "close",
            "cancel": "cancel",
            "reopen": "reopen",
            "fill in fields": "fields",
        }[action]
        body = {"fields": {"note": "x"}} if action == "fill in fields" else {}
        code, data = api.post(f"/tasks/{task.id}/{path}", body)
        results[status] = data["status"] if code == 200 else NO
        if code != 200:
            assert code == 409, data
    assert results == TASK_TABLE[action]
