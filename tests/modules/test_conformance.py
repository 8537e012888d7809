"""The module conformance suite: what every module type must do, against its real backend.

Runs once per backend of ``tests/modules/conftest.py`` (sandbox, http, and the poll-based
test module; every later module type adds its backend there):

- open twice with the same operation id gives one remote object: an attempt killed after
  the remote call is reclaimed and the next attempt takes over what the first created;
- suspend / resume / change_password / change_tariff / renew / close where the type
  declares them (change_password: the service's password detail is the new one);
- a backend that is down or does not answer is a temporary error, a refusal a permanent
  one carrying the backend's own words; one that accepts and never answers is given up
  within the module's deadline and one blocking call, before the lease runs out;
- no secret in any attempt log;
- ``ensure_item`` creates the item (or the tariff says who must);
- ``check_config`` talks to the server and rejects bad credentials.
"""

from datetime import timedelta

import pytest

import modules
from app.db import database
from app.models import Attempt, Operation, utcnow
from app.services import operations


class Killed(BaseException):
    """The worker died: raised where the result would have been recorded."""


def setup(api, engine, backend, config=None, **module_fields):
    department, module, tariff, client = api.catalog(
        backend.type_id,
        backend.config() if config is None else config,
        product_type=backend.product_type,
        item_settings=backend.item_settings(),
        retry_delay=1,
        **module_fields,
    )
    engine.run_all()  # the tariff's ensure_item, when the type has items
    return department, module, tariff, client


def open_service(api, engine, tariff, client):
    order = api.order(client["id"], tariff["id"])
    status, paid = api.pay(order)
    assert status == 200, paid
    return order["service_id"], paid["operation_id"]


def declared(backend, kind):
    return modules.get_type(backend.type_id).supports(kind)


def test_open_twice_with_the_same_operation_takes_over(
    any_app, any_api, any_engine, backend, monkeypatch
):
    """A worker dies after the remote call: the next attempt adopts what it made (on SQLite
    and on PostgreSQL, whose claim locks the operation and whose simulated panel answers
    in one statement)."""
    _, _, tariff, client = setup(any_api, any_engine, backend)
    service_id, op_id = open_service(any_api, any_engine, tariff, client)

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(operations, "_record_result", die)
        with pytest.raises(Killed):
            any_engine.run_once(op_id)
    assert len(backend.objects(any_engine.service(service_id))) == 1  # the remote call happened
    with any_app.app_context(), database.connection_context():
        assert Operation.get_by_id(op_id).status == "running"
        # its lease runs out: the sweep reclaims it as a real scheduler would
        Operation.update(lease_until=utcnow() - timedelta(seconds=1)).where(
            Operation.id == op_id
        ).execute()
        assert operations.sweep()["reclaimed"] == 1
    op = any_engine.run(op_id)
    assert op.status == "done", op.last_error
    service = any_engine.service(service_id)
    objects = backend.objects(service)
    assert len(objects) == 1, objects
    assert service.remote_id == objects[0][0]
    assert service.status == "active"


def test_each_declared_operation_changes_the_backend(app, api, engine, backend):
    _, module, tariff, client = setup(api, engine, backend)
    service_id, op_id = open_service(api, engine, tariff, client)
    assert engine.run(op_id).status == "done"
    steps = [
        ("suspend", "suspended", "suspended"),
        ("resume", "active", "active"),
        ("change_password", None, "active"),
        ("change_tariff", None, "active"),
        ("renew", None, "active"),
        ("close", "deleted", "deleted"),
    ]
    other = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Bigger",
            "product_type": backend.product_type,
            "price": "20",
            "internal_name": f"{tariff['internal_name']}-xl",
            "module_ids": [module["id"]],
            **(
                {"item_settings": {str(module["id"]): backend.item_settings(bigger=True)}}
                if backend.item_settings(bigger=True) is not None
                else {}
            ),
        },
    )
    engine.run_all()
    for kind, remote_state, service_status in steps:
        if not declared(backend, kind):
            # never offered, and refused with a clear message
            code, body = api.post(f"/services/{service_id}/{kind}", {"tariff_id": other["id"]})
            assert code == 409 and "does not do" in body["error"]["message"], body
            continue
        params = {"tariff_id": other["id"]} if kind == "change_tariff" else {}
        before = engine.service(service_id).details or {}
        op = api.ok("post", f"/services/{service_id}/{kind}", params, status=202)
        done = engine.run(op["id"])
        assert done.status == "done", (kind, done.last_error)
        service = engine.service(service_id)
        if kind == "change_password":  # the service's password detail is the new one
            assert service.details["password"] != before.get("password"), kind
        assert service.status == service_status, kind
        if remote_state is not None:
            assert [state for _, state in backend.objects(service)] == [remote_state], kind
        if kind == "change_tariff":
            assert service.tariff_id == other["id"]


def test_a_backend_that_is_down_is_a_temporary_error(app, api, engine, backend):
    _, _, tariff, client = setup(api, engine, backend, config=backend.unreachable())
    _, op_id = open_service(api, engine, tariff, client)
    with app.app_context(), database.connection_context():
        operations.run(op_id)
        op = Operation.get_by_id(op_id)
        attempt = Attempt.get(Attempt.operation == op_id)
    assert attempt.outcome == "temporary_error", attempt.error
    assert op.status == "retry_wait" and op.failures == 1


def test_a_backend_that_never_answers_is_given_up_before_the_lease(app, api, engine, backend):
    """A hung server (it accepts the connection and never says a word): the attempt ends
    as a temporary error within its module's deadline and one blocking call
    (``timeout() + io_timeout()``), which the lease covers before ``LEASE_GRACE``; so the
    sweep never reclaims an attempt that is still talking, whatever the module type."""
    import threading
    import time

    from app.models import ProcessingModule
    from tests.support import SilentServer

    _, module, tariff, client = setup(api, engine, backend)  # its item made while it answers
    server = SilentServer(unix=backend.silent_unix)
    try:
        config = backend.silent(server)
        if config is None:  # no server: nothing can hang but the module's own code
            assert backend.type_id == "sandbox"
            return
        with app.app_context(), database.connection_context():
            row = ProcessingModule.get_by_id(module["id"])
            row.config = {**row.config, **config}
            row.save()
            instance = modules.get_type(backend.type_id)(row.config)
        bound = instance.timeout() + instance.io_timeout()
        _, op_id = open_service(api, engine, tariff, client)

        def attempt():
            with app.app_context(), database.connection_context():
                operations.run(op_id)

        started = time.monotonic()
        runner = threading.Thread(target=attempt, daemon=True)
        runner.start()
        runner.join(bound + 5)
        took = time.monotonic() - started
        assert not runner.is_alive(), f"the attempt still runs after {took:.0f} s (bound {bound})"
    finally:
        server.close()  # a call still waiting (on failure) gets its end of file
    with app.app_context(), database.connection_context():
        op = Operation.get_by_id(op_id)
        (attempt,) = Attempt.select().where(Attempt.operation == op_id)
    assert attempt.outcome == "temporary_error", attempt.error
    assert op.status == "retry_wait" and op.last_error
    assert took <= bound + 1, (took, bound)


def test_a_refusal_is_permanent_with_the_backends_words(app, api, engine, backend):
    _, module, tariff, client = setup(api, engine, backend)
    _, op_id = open_service(api, engine, tariff, client)
    with backend.refusing(module["id"]), app.app_context(), database.connection_context():
        operations.run(op_id)
        op = Operation.get_by_id(op_id)
    assert op.status == "manual", op.last_error
    assert backend.refusal_text in op.last_error
    outcomes = [a["outcome"] for a in api.ok("get", f"/operations/{op_id}")["attempt_log"]]
    assert outcomes == ["permanent_error"]


def test_no_secret_in_any_attempt_log(app, api, engine, backend):
    _, module, tariff, client = setup(api, engine, backend)
    service_id, op_id = open_service(api, engine, tariff, client)
    engine.run(op_id)
    for kind in ("suspend", "resume", "change_password", "close"):
        if declared(backend, kind):
            engine.run(api.ok("post", f"/services/{service_id}/{kind}", {}, status=202)["id"])
    service = api.ok("get", f"/services/{service_id}")
    secrets = [*backend.secrets(), service["details"].get("password")]
    secrets = [s for s in secrets if s]
    with app.app_context(), database.connection_context():
        logs = [(a.log or "") + (a.error or "") for a in Attempt.select()]
        errors = [op.last_error or "" for op in Operation.select()]
    assert logs and any(line.strip() for line in logs)
    for secret in secrets:
        assert not any(secret in text for text in logs + errors), "a secret in the attempt log"
    shown = api.ok("get", f"/modules/{module['id']}")
    for name in modules.get_type(backend.type_id).secret_fields():
        assert shown["config"][name] == "********"


def test_ensure_item_creates_the_item_or_says_who_must(app, api, engine, backend):
    _, _, tariff, _ = setup(api, engine, backend)
    cls = modules.get_type(backend.type_id)
    items = api.ok("get", f"/tariffs/{tariff['id']}")["items"]
    if not cls.supports("ensure_item"):
        assert items == [] and api.ok("get", f"/tariffs/{tariff['id']}")["orderable"]
        return
    assert len(items) == 1
    if cls.creates_items:
        assert items[0]["status"] == "ready", items[0]["error"]
        assert backend.has_item(tariff["internal_name"]) == backend.creates_remote_items
    else:
        assert items[0]["status"] == "manual" and items[0]["error"]


def test_check_config_talks_to_the_server(app, api, engine, backend):
    _, module, _, _ = setup(api, engine, backend)
    cls = modules.get_type(backend.type_id)
    assert cls.can_check()
    good = api.ok("post", f"/modules/{module['id']}/check")
    assert good["ok"] is True, good
    down = api.ok(
        "post",
        "/modules",
        {"name": f"down-{module['id']}", "type": backend.type_id, "config": backend.unreachable()},
        status=201,
    )
    if backend.type_id != "sandbox":  # the simulated panel is never unreachable
        answer = api.ok("post", f"/modules/{down['id']}/check")
        assert answer["ok"] is False and answer["message"], answer
    bad = backend.bad_credentials()
    if bad is None:
        assert not cls.secret_fields()  # no credentials to get wrong
        return
    code, body = api.post(
        "/modules",
        {
            "name": f"bad-{module['id']}",
            "type": backend.type_id,
            "config": bad,
            "test_connection": True,
        },
    )
    assert code == 422, body
    assert any(k.startswith("config.") for k in body["error"]["fields"]), body
    assert "Test connection failed" in body["error"]["message"]
