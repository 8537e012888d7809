"""Long jobs without holding a worker: ``Result.poll`` through the whole engine.

The poll-based test module (``tests/modules/jobpanel.py``) starts a job on a real panel on
loopback and polls it; the scaled-mode tests (tests/test_scaled.py) kill the worker and
flush Redis in the middle of such a job.
"""

import re
from datetime import timedelta

import pytest

import modules
from app.db import database
from app.models import Operation, Task, utcnow
from app.services import operations
from tests.modules.jobpanel import JobPanel, JobPanelModule
from tests.support import wait_for


@pytest.fixture
def panel(monkeypatch):
    modules.types()
    monkeypatch.setitem(modules._registry, JobPanelModule.id, JobPanelModule)
    panel = JobPanel(checks_needed=4).start()
    yield panel
    panel.stop()


def test_a_polling_operation_waits_without_a_worker_and_finishes(app, api, client, panel):
    department, module, tariff, shopper = api.catalog(
        "jobpanel", panel.config(poll_after=1.0), max_attempts=1
    )
    panel.checks_needed = 10**6  # the job stays unready while the page is looked at
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    op_id = paid["operation_id"]
    polling = api.wait_operation(op_id, ("polling",))
    assert polling["state"] == {"job": "job-1"}
    assert polling["failures"] == 0 and polling["next_run_at"]
    assert polling["deadline_at"]  # max_wait (one hour by default) bounds the wait
    # Current operations says what it waits for
    client.post("/login", data={"email": "admin@example.com", "password": "admin-password"})

    def current_operations():
        headers = {"HX-Request": "true", "HX-Target": "operations-live"}
        row = client.get("/operations", headers=headers)
        return " ".join(re.sub(r"<[^>]+>", " ", row.get_data(as_text=True)).split())

    # between two checks (a check itself shows as running for a moment)
    text = wait_for(
        lambda: (t := current_operations()) and "waiting for the panel" in t and t,
        message="the row between two checks",
    )
    assert re.search(r"waiting for the panel — next check (in \d+ s|now)", text), text
    panel.checks_needed = 4
    done = api.wait_operation(op_id)
    # four checks, none of them a failure, although max_attempts is 1
    assert done["attempts"] >= 4 and done["failures"] == 0
    assert [a["outcome"] for a in done["attempt_log"]][-1] == "done"
    assert set(a["outcome"] for a in done["attempt_log"][:-1]) == {"poll"}
    assert panel.creations == [f"service-{order['service_id']}"]  # one job
    service = api.ok("get", f"/services/{order['service_id']}")
    assert service["status"] == "active" and service["remote_id"] == "job-1"
    assert service["module_data"] == {"job": "job-1"}
    assert panel.token not in str(done["attempt_log"])


def test_max_wait_hands_the_operation_to_people(app, api, engine, panel):
    panel.checks_needed = 10**6  # never ready
    department, module, tariff, shopper = api.catalog("jobpanel", panel.config(), max_wait=60)
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    op_id = paid["operation_id"]
    with app.app_context(), database.connection_context():
        operations.run(op_id)
        op = Operation.get_by_id(op_id)
        assert op.status == "polling"
        # an hour later: the next check still says "not finished"
        Operation.update(deadline_at=utcnow() - timedelta(seconds=1), next_run_at=None).where(
            Operation.id == op_id
        ).execute()
        operations.run(op_id)
        op = Operation.get_by_id(op_id)
        assert op.status == "manual"
        assert "waiting 60 s" in op.last_error
        task = Task.get(Task.operation == op_id)
        assert task.title == f"Set up service #{order['service_id']} manually"
        assert "max_wait" in task.events[0].text
    # Run now gives it a whole max_wait again and goes on with the same job
    api.ok("post", f"/operations/{op_id}/restart", status=202)
    with app.app_context(), database.connection_context():
        operations.run(op_id)
        op = Operation.get_by_id(op_id)
        assert op.status == "polling" and op.state == {"job": "job-1"}
    assert len(panel.creations) == 1


def test_a_panel_down_during_the_checks_is_retried_with_the_same_job(app, api, engine, panel):
    department, module, tariff, shopper = api.catalog(
        "jobpanel", panel.config(), max_attempts=3, retry_delay=1
    )
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    op_id = paid["operation_id"]
    with app.app_context(), database.connection_context():
        operations.run(op_id)
        assert Operation.get_by_id(op_id).status == "polling"
    panel.stop()  # the panel goes down between two checks
    with app.app_context(), database.connection_context():
        Operation.update(next_run_at=None).where(Operation.id == op_id).execute()
        operations.run(op_id)
        op = Operation.get_by_id(op_id)
        assert op.status == "retry_wait" and op.failures == 1
        assert op.state == {"job": "job-1"}  # kept for the next attempt
    panel.start()  # back on the same port, with its jobs
    op = engine.run(op_id)
    assert op.status == "done", op.last_error
    assert len(panel.creations) == 1
    assert wait_for(lambda: engine.service(order["service_id"]).status == "active")
