"""What a remote party sends never leaves an operation or an email without a final word.

The audit's cases (on PostgreSQL, which refuses NUL characters in text): an endpoint reply
containing a NUL was recorded as "the worker stopped" and each attempt waited out its
lease; a ``done`` reply with ``\\u0000`` in a detail value never completed; a line break
in a task title left its notification email in ``sending`` for ever, with no error. Each
now ends as an error recorded with its reason (or the input is cleaned), on SQLite and
PostgreSQL alike.
"""

import json

from app.db import database
from app.models import Attempt, Department, Email, Service, Task
from app.services import mail, tasks
from tests.support import wait_for


def _order(api, endpoint, **module_fields):
    _, _, tariff, client = api.catalog("http", endpoint.config(), retry_delay=1, **module_fields)
    order = api.order(client["id"], tariff["id"])
    status, paid = api.pay(order)
    assert status == 200, paid
    return order["service_id"], paid["operation_id"]


def _attempts(app, op_id):
    with app.app_context(), database.connection_context():
        return list(Attempt.select().where(Attempt.operation == op_id).order_by(Attempt.number))


def test_a_reply_with_a_nul_byte_is_an_error_recorded_at_once(any_app, any_api, http_endpoint):
    http_endpoint.script = ["raw", "raw"]
    http_endpoint.raw_reply = b'{"status": "done", "remote_id": "a\x00b", "details": {}}'
    _, op_id = _order(any_api, http_endpoint, max_attempts=2)
    op = any_api.wait_operation(op_id, ("manual",), timeout=15)
    attempts = _attempts(any_app, op_id)
    assert [a.outcome for a in attempts] == ["temporary_error", "temporary_error"]
    for attempt in attempts:
        assert attempt.error == "endpoint answered with a body that is not JSON"
        assert '"remote_id": "a\\x00b"' in attempt.log  # what it said, the NUL shown
        assert (attempt.finished_at - attempt.started_at).total_seconds() < 2
    assert op["last_error"] == "endpoint answered with a body that is not JSON"


def test_a_done_reply_with_a_nul_in_a_detail_is_refused_saying_where(
    any_app, any_api, http_endpoint
):
    http_endpoint.script = ["raw"]
    http_endpoint.raw_reply = json.dumps(
        {"status": "done", "remote_id": "acct-1", "details": {"password": "pass\u0000word"}}
    ).encode()
    service_id, op_id = _order(any_api, http_endpoint, max_attempts=3)
    op = any_api.wait_operation(op_id, ("manual",), timeout=15)
    expected = "module returned a NUL character in details.password: not recorded"
    assert op["last_error"] == expected
    assert [a.outcome for a in _attempts(any_app, op_id)] == ["permanent_error"]
    with any_app.app_context(), database.connection_context():
        service = Service.get_by_id(service_id)
        assert service.status == "processing" and service.details == {}
        assert Email.select().where(Email.service == service_id).count() == 0
        (task,) = Task.select().where(Task.operation == op_id)
        assert task.status == "new"  # a person sets it up


def test_a_line_break_in_a_task_title_never_reaches_a_mail_header(any_app, smtp_server):
    any_app.config["SMTP_URL"] = smtp_server.url
    with any_app.app_context(), database.connection_context():
        department = Department.create(name="Upstream", notify_email="noc@example.com")
        task = Task.create(
            department=department,
            stored_title="Set up\r\nBcc: victim@example.net\r\n\r\nforged body",
        )
        tasks.notify_department(task, "received from a peer")
        email = Email.get(Email.kind == "task_new")
    assert "\n" not in email.subject and "\r" not in email.subject
    (message,) = wait_for(lambda: smtp_server.messages, message="the notification")
    assert message["to"] == ["noc@example.com"]  # no Bcc added
    assert message["subject"] == (
        f"New task #{task.id}: Set up Bcc: victim@example.net forged body"
    )

    def status():  # the worker records it after the SMTP server took it
        with any_app.app_context(), database.connection_context():
            return Email.get_by_id(email.id).status

    wait_for(lambda: status() == "sent", message="the email marked sent")


def test_an_email_that_cannot_be_built_is_an_error_recorded_not_a_loop(
    any_app, smtp_server, monkeypatch
):
    any_app.config["SMTP_URL"] = smtp_server.url

    def broken(settings, email):
        raise ValueError("Header values may not contain linefeed or carriage return characters")

    monkeypatch.setattr(mail, "_send_smtp", broken)
    with any_app.app_context(), database.connection_context():
        email = mail.queue("someone@example.com", "Subject", "Body", kind="test")

    def recorded():
        with any_app.app_context(), database.connection_context():
            row = Email.get_by_id(email.id)
            return row if row.status == "retry_wait" else None

    row = wait_for(recorded, message="the email's error")
    assert row.last_error.startswith("ValueError: Header values may not contain")
    assert row.next_try_at is not None
