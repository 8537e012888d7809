"""The result of an attempt against what changed during the module's call (issue 14).

On PostgreSQL a ``done`` result is written without reading the operation again when
nothing changed since its claim: one check first, then the writes and the COMMIT, in one
message (``operations._record_done_unread``). Whatever changed meanwhile must make that
check stop the transaction, and the result then goes the usual way, reading the rows
again, locked — as it always does on SQLite. Each change below is made by another
transaction while the module's call runs, on both databases; the result must keep it.
"""

import logging

import pytest

from app.db import database, write_transaction
from app.models import Attempt, Email, Event, Operation, Service
from app.services import events
from modules.sandbox import SandboxModule
from tests import support

CHANGED = "the operation changed during the call"


def _nothing(op_id, service_id, receiver):
    pass


def _service_edited(op_id, service_id, receiver):
    """Staff adds a detail to the service."""
    with write_transaction():
        service = Service.get_by_id(service_id)
        Service.update(details={**(service.details or {}), "staff_note": "kept"}).where(
            Service.id == service_id
        ).execute()


def _state_saved(op_id, service_id, receiver):
    """The module's state is stored with the operation during the call (as
    ``ctx.save_state`` does, from another transaction)."""
    with write_transaction():
        Operation.update(state={"progress": "kept"}).where(
            (Operation.id == op_id) & (Operation.status == "running")
        ).execute()


def _endpoint_enabled(op_id, service_id, receiver):
    """A webhook endpoint is added: the operation's and the service's changes are events."""
    events.create_endpoint(
        {"url": receiver.url, "secret": receiver.secret, "event_types": ["*"], "enabled": True}
    )


@pytest.fixture
def during_call(monkeypatch):
    """``during_call.change`` runs, in its own transaction, once the sandbox module's
    ``open`` has made its account and before its result is written."""

    class During:
        change = staticmethod(_nothing)
        receiver = None

    original = SandboxModule.open

    def open_then_change(self, ctx):
        result = original(self, ctx)
        During.change(ctx.operation.id, ctx.service.id, During.receiver)
        return result

    monkeypatch.setattr(SandboxModule, "open", open_then_change)
    return During


@pytest.mark.parametrize(
    "change", [_nothing, _service_edited, _state_saved, _endpoint_enabled], ids=lambda f: f.__name__
)
def test_a_result_keeps_what_changed_during_the_call(
    any_app, any_api, during_call, event_receiver, caplog, change
):
    from app.db import is_sqlite

    during_call.change = change
    during_call.receiver = event_receiver
    caplog.set_level(logging.INFO, logger="app.services.operations")
    _, _, tariff, client = any_api.catalog("sandbox")
    order = any_api.order(client["id"], tariff["id"])
    paid = any_api.ok("post", f"/orders/{order['id']}/pay")
    any_api.wait_operation(paid["operation_id"])
    with any_app.app_context(), database.connection_context():
        op = Operation.get_by_id(paid["operation_id"])
        service = Service.get_by_id(order["service_id"])
        attempts = list(Attempt.select().where(Attempt.operation == op.id))
        welcome = Email.select().where((Email.service == service.id) & (Email.kind == "welcome"))
        assert (op.status, op.attempts) == ("done", 1)
        assert [(a.number, a.outcome) for a in attempts] == [(1, "done")]
        assert "created account" in attempts[0].log
        assert service.status == "active" and service.details["ip"].startswith("192.0.2.")
        assert welcome.count() == 1
        if change is _service_edited:
            assert service.details["staff_note"] == "kept"
        if change is _state_saved:
            assert op.state == {"progress": "kept"}
        if change is _endpoint_enabled:
            types = {
                e.type
                for e in Event.select().where(
                    (Event.subject == "service") & (Event.subject_id == service.id)
                )
            }
            assert "service.active" in types
    took_the_long_way = any(CHANGED in r.getMessage() for r in caplog.records)
    # SQLite always reads again (no round trip to save); PostgreSQL only when something changed
    assert took_the_long_way is (not is_sqlite() and change is not _nothing)


def test_a_done_result_is_one_message_after_the_call(pg_api, during_call):
    """PostgreSQL: once the module's call returned, the attempt's thread sends one message
    — the check, the operation and its attempt, the service, the welcome email, COMMIT."""
    import threading

    sent, worker = [], {}

    def mark_thread(op_id, service_id, receiver):
        worker["thread"] = threading.get_ident()

    during_call.change = mark_thread

    database.obj.close_all()
    # only the worker thread's messages, from the end of the call on
    database.obj.connect_params["cursor_factory"] = support.counting_cursor(
        sent, lambda: worker.get("thread")
    )
    try:
        _, _, tariff, client = pg_api.catalog("sandbox")
        # the worker's connections prepare each statement the first time they run it (a
        # message of its own): activations until one ran on prepared statements only
        for _ in range(12):
            sent.clear()
            worker.clear()
            order = pg_api.order(client["id"], tariff["id"])
            paid = pg_api.ok("post", f"/orders/{order['id']}/pay")
            pg_api.wait_operation(paid["operation_id"])
            if not any("PREPARE" in text for text in sent):
                break
        assert len(sent) == 1, sent
        assert sent[0].startswith("BEGIN; EXECUTE provisor_") and sent[0].endswith("; COMMIT")
        assert sent[0].count("EXECUTE provisor_") == 4, sent
    finally:
        database.obj.connect_params.pop("cursor_factory", None)
        database.obj.close_all()


@pytest.mark.parametrize("change", [_nothing, _service_edited], ids=lambda f: f.__name__)
def test_the_welcome_email_goes_once_with_an_smtp_server(
    any_app, any_api, during_call, smtp_server, change
):
    """With an SMTP server the welcome email's INSERT is answered (its id is needed to
    send it), so the check goes with it rather than with the COMMIT: a result that went
    the long way still sends the welcome email once, and only after the commit."""
    any_app.config["SMTP_URL"] = smtp_server.url
    during_call.change = change
    _, _, tariff, client = any_api.catalog("sandbox")
    order = any_api.order(client["id"], tariff["id"])
    paid = any_api.ok("post", f"/orders/{order['id']}/pay")
    any_api.wait_operation(paid["operation_id"])
    support.wait_for(lambda: smtp_server.messages, message="the welcome email")
    with any_app.app_context(), database.connection_context():
        service = Service.get_by_id(order["service_id"])
        sent = support.wait_for(
            lambda: list(
                Email.select().where(
                    (Email.service == service.id)
                    & (Email.kind == "welcome")
                    & (Email.status == "sent")
                )
            ),
            message="the welcome email marked sent",
        )
        assert len(sent) == 1
        assert Email.select().where(Email.service == service.id).count() == 1
        assert service.status == "active"
        if change is _service_edited:
            assert service.details["staff_note"] == "kept"
    to_client = [m for m in smtp_server.messages if client["email"] in str(m)]
    assert len(to_client) == 1
