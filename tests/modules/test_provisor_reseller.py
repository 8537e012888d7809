"""The ``provisor`` module type: reselling an upstream Provisor's services, between real
``provisor serve`` instances (each its own process and database) on loopback.

The upstream sets its services up with its sandbox module; the reseller's module orders
them (paid on its account there), follows them with ``Result.poll`` and forwards every
operation."""

import uuid

import pytest
import requests

from tests.support import Instance, order_params, signed, wait_for


@pytest.fixture
def instances(tmp_path):
    started = []

    def make(name):
        instance = Instance(tmp_path, name).start()
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.stop()


def sell(upstream, module_type="sandbox", config=None, reseller_name="Shop"):
    """On ``upstream``: a module, a VPS tariff served by it, and a reseller client with its
    token (made with the CLI). Returns ``(tariff, module, reseller client, token)``."""
    department = upstream.department(f"Ops {uuid.uuid4().hex[:6]}")
    module = upstream.call(
        "POST",
        "/modules",
        {
            "name": f"{module_type}-{uuid.uuid4().hex[:6]}",
            "type": module_type,
            "config": config or {},
            "department_id": department["id"],
            "retry_delay": 1,
        },
    )
    tariff = upstream.call(
        "POST",
        "/tariffs",
        {
            "name": f"VPS at {upstream.name}",
            "product_type": "vps",
            "price": "5.00",
            "internal_name": f"vps-{uuid.uuid4().hex[:8]}",
            "module_ids": [module["id"]],
            **(
                {"item_settings": {str(module["id"]): config.pop("_item")}}
                if config and "_item" in config
                else {}
            ),
        },
    )
    client = upstream.call(
        "POST",
        "/clients",
        {"name": reseller_name, "email": f"{reseller_name.lower()}-{uuid.uuid4().hex[:6]}@ex.com"},
    )
    token = upstream.cli("clients", "reseller", "--client-id", str(client["id"])).stdout.strip()
    assert token.startswith("pv_")
    return tariff, module, client, token


def resell(downstream, upstream, token, upstream_tariff_id, wait_item=True):
    """On ``downstream``: a provisor module to ``upstream`` (Test connection on save) and a
    tariff reselling ``upstream_tariff_id``. Returns ``(module, tariff)``."""
    department = downstream.department(f"Resold {uuid.uuid4().hex[:6]}")
    module = downstream.call(
        "POST",
        "/modules",
        {
            "name": f"upstream-{uuid.uuid4().hex[:6]}",
            "type": "provisor",
            "config": {"url": upstream.url, "token": token, "timeout": 3, "poll_interval": 0.3},
            "department_id": department["id"],
            "retry_delay": 1,
            "max_attempts": 20,
            "test_connection": True,
        },
        status=(201,),
    )
    tariff = downstream.call(
        "POST",
        "/tariffs",
        {
            "name": f"VPS resold by {downstream.name}",
            "product_type": "vps",
            "price": "9.00",
            "internal_name": f"resold-{uuid.uuid4().hex[:8]}",
            "module_ids": [module["id"]],
            "item_settings": {str(module["id"]): {"upstream_tariff_id": upstream_tariff_id}},
        },
    )
    if wait_item:
        item = wait_for(
            lambda: (
                (i := downstream.call("GET", f"/tariffs/{tariff['id']}")["items"])
                and i[0]["status"] != "creating"
                and i[0]
            ),
            timeout=20,
            message="the item checked upstream",
        )
        assert item["status"] == "ready", item
    return module, tariff


def order_paid(instance, tariff, client=None):
    """A client of ``instance`` orders ``tariff`` and pays (the signed webhook)."""
    if client is None:
        client = instance.call(
            "POST", "/clients", {"name": "Dana", "email": f"dana-{uuid.uuid4().hex[:6]}@ex.com"}
        )
    params = order_params(tariff["order_fields"])
    order = instance.call(
        "POST",
        "/orders",
        {"client_id": client["id"], "tariff_id": tariff["id"], "params": params},
    )
    raw, headers = signed(
        {
            "payment_id": f"p-{uuid.uuid4().hex}",
            "order_id": order["id"],
            "amount": order["amount"],
            "currency": order["currency"],
        }
    )
    paid = requests.post(
        instance.url + "/api/v1/webhooks/payment", data=raw, headers=headers, timeout=10
    )
    assert paid.status_code == 200, paid.text
    return order["service_id"], paid.json()["operation_id"]


def wait_done(instance, op_id, statuses=("done",), timeout=30):
    return wait_for(
        lambda: (op := instance.call("GET", f"/operations/{op_id}"))["status"] in statuses and op,
        timeout=timeout,
        interval=0.2,
        message=f"operation {op_id} at {instance.name} in {statuses}",
    )


def upstream_services(upstream, client_id):
    return upstream.call("GET", f"/services?client_id={client_id}")["services"]


def logs_of(instance, op_id):
    op = instance.call("GET", f"/operations/{op_id}")
    return "\n".join((a["log"] or "") + (a["error"] or "") for a in op["attempt_log"])


def test_resold_service_lives_its_life_upstream(instances):
    upstream, reseller = instances("upstream"), instances("reseller")
    up_tariff, _, shop, token = sell(upstream, config={"job_checks": 2})
    module, tariff = resell(reseller, upstream, token, up_tariff["id"])
    checked = reseller.call("POST", f"/modules/{module['id']}/check")
    assert checked["ok"] and "sells 1 tariff" in checked["message"], checked

    service_id, op_id = order_paid(reseller, tariff)
    op = wait_done(reseller, op_id)
    assert op["attempts"] >= 2  # it polled: the upstream's sandbox takes job checks
    [remote] = upstream_services(upstream, shop["id"])
    mine = reseller.call("GET", f"/services/{service_id}")
    theirs = upstream.call("GET", f"/services/{remote['id']}")
    assert mine["status"] == theirs["status"] == "active"
    assert mine["details"] == theirs["details"] and mine["details"]["password"]
    assert mine["remote_id"] == str(remote["id"])
    assert mine["params"] == theirs["params"]
    welcome = wait_for(
        lambda: reseller.call("GET", f"/emails?service_id={service_id}")["emails"],
        message="the welcome email",
    )[0]
    assert mine["details"]["ip"] in welcome["body"]

    # a bigger tariff upstream, resold here too: change_tariff moves the upstream service
    up_bigger = upstream.call(
        "POST",
        "/tariffs",
        {
            "name": "VPS XL upstream",
            "product_type": "vps",
            "price": "15.00",
            "internal_name": f"{up_tariff['internal_name']}-xl",
            "module_ids": up_tariff["module_ids"],
        },
    )
    bigger = reseller.call(
        "POST",
        "/tariffs",
        {
            "name": "VPS XL resold",
            "product_type": "vps",
            "price": "25.00",
            "internal_name": f"{tariff['internal_name']}-xl",
            "module_ids": [module["id"]],
            "item_settings": {str(module["id"]): {"upstream_tariff_id": up_bigger["id"]}},
        },
    )
    wait_for(
        lambda: reseller.call("GET", f"/tariffs/{bigger['id']}")["items"][0]["status"] == "ready",
        timeout=20,
    )
    op = reseller.call("POST", f"/services/{service_id}/change_tariff", {"tariff_id": bigger["id"]})
    wait_done(reseller, op["id"])
    assert reseller.call("GET", f"/services/{service_id}")["tariff_id"] == bigger["id"]
    assert upstream.call("GET", f"/services/{remote['id']}")["tariff_id"] == up_bigger["id"]

    for kind, status in (("suspend", "suspended"), ("resume", "active"), ("close", "deleted")):
        op = reseller.call("POST", f"/services/{service_id}/{kind}", {})
        wait_done(reseller, op["id"])
        assert reseller.call("GET", f"/services/{service_id}")["status"] == status, kind
        assert upstream.call("GET", f"/services/{remote['id']}")["status"] == status, kind
    # one upstream operation each, and the token never in an attempt log
    kinds = [o["kind"] for o in upstream.call("GET", f"/services/{remote['id']}")["operations"]]
    assert sorted(kinds) == ["change_tariff", "close", "open", "resume", "suspend"]
    for o in reseller.call("GET", f"/services/{service_id}")["operations"]:
        text = logs_of(reseller, o["id"])
        assert token not in text and "/api/v1/reseller/" in text
        assert mine["details"]["password"] not in text


def test_upstream_down_during_open_is_retried_and_orders_once(instances):
    upstream, reseller = instances("upstream"), instances("reseller")
    up_tariff, _, shop, token = sell(upstream)
    _, tariff = resell(reseller, upstream, token, up_tariff["id"])
    upstream.stop()

    service_id, op_id = order_paid(reseller, tariff)
    failed = wait_done(reseller, op_id, ("retry_wait",), timeout=20)
    assert "cannot reach the upstream" in failed["last_error"]
    upstream.start()
    wait_done(reseller, op_id, timeout=40)
    assert len(upstream_services(upstream, shop["id"])) == 1
    assert reseller.call("GET", f"/services/{service_id}")["status"] == "active"
    attempts = reseller.call("GET", f"/operations/{op_id}")["attempt_log"]
    assert attempts[0]["outcome"] == "temporary_error" and attempts[-1]["outcome"] == "done"


def test_a_chain_of_three(instances):
    """A resells B, which resells C: C's sandbox sets it up, A's client gets C's details."""
    c, b, a = instances("c"), instances("b"), instances("a")
    c_tariff, _, b_at_c, b_token = sell(c, reseller_name="Bee")
    b_module, b_tariff = resell(b, c, b_token, c_tariff["id"])
    a_at_b = b.call("POST", "/clients", {"name": "Ace", "email": "ace@ex.com"})
    a_token = b.cli("clients", "reseller", "--client-id", str(a_at_b["id"])).stdout.strip()
    _, a_tariff = resell(a, b, a_token, b_tariff["id"])

    service_id, op_id = order_paid(a, a_tariff)
    wait_done(a, op_id, timeout=40)
    [at_b] = upstream_services(b, a_at_b["id"])
    [at_c] = upstream_services(c, b_at_c["id"])
    details = [
        a.call("GET", f"/services/{service_id}")["details"],
        b.call("GET", f"/services/{at_b['id']}")["details"],
        c.call("GET", f"/services/{at_c['id']}")["details"],
    ]
    assert details[0] == details[1] == details[2] and details[0]["ip"]

    op = a.call("POST", f"/services/{service_id}/suspend", {})
    wait_done(a, op["id"], timeout=40)
    assert c.call("GET", f"/services/{at_c['id']}")["status"] == "suspended"
    assert b.call("GET", f"/services/{at_b['id']}")["status"] == "suspended"


def test_refusals_are_permanent_with_the_upstreams_words(instances):
    upstream, reseller = instances("upstream"), instances("reseller")
    up_tariff, up_module, shop, token = sell(upstream)

    # a wrong token: Test connection says so by the setting, nothing is saved
    response = requests.post(
        reseller.url + "/api/v1/modules",
        json={
            "name": "wrong token",
            "type": "provisor",
            "config": {"url": upstream.url, "token": "pv_not-a-token"},
            "test_connection": True,
        },
        headers={"Authorization": f"Bearer {reseller.token}"},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert "refused the token" in response.json()["error"]["fields"]["config.token"]

    # a tariff the upstream does not sell: the item says which it sells
    _, bad = resell(reseller, upstream, token, 999999, wait_item=False)
    item = wait_for(
        lambda: (
            (i := reseller.call("GET", f"/tariffs/{bad['id']}")["items"])
            and i[0]["status"] not in ("creating",)
            and i[0]
        ),
        timeout=20,
    )
    assert "does not sell tariff 999999" in item["error"] and up_tariff["name"] in item["error"]

    # the upstream stops selling the tariff: the order is refused, permanently, in its words
    _, tariff = resell(reseller, upstream, token, up_tariff["id"])
    upstream.call(
        "PUT",
        f"/modules/{up_module['id']}",
        {"name": up_module["name"], "config": {}, "enabled": False, "retry_delay": 1},
    )
    _, op_id = order_paid(reseller, tariff)
    op = wait_done(reseller, op_id, ("manual",))
    assert "This tariff cannot be ordered" in op["last_error"], op["last_error"]
    assert [a["outcome"] for a in op["attempt_log"]] == ["permanent_error"]
    assert upstream_services(upstream, shop["id"]) == []


class Killed(BaseException):
    """The worker died: raised where the result would have been recorded."""


def test_a_crash_after_the_upstream_took_the_order_is_taken_over_by_its_key(
    app, api, engine, instances, monkeypatch
):
    """The attempt dies after the upstream made the order and before anything of it was
    recorded here (not even the module's state): the next attempt sends the same
    idempotency key and gets that order back; the upstream has one."""
    from datetime import timedelta

    from app.db import database
    from app.models import Attempt, Operation, utcnow
    from app.services import operations

    upstream = instances("upstream")
    up_tariff, _, shop, token = sell(upstream)
    config = {"url": upstream.url, "token": token, "timeout": 3, "poll_interval": 0.2}
    _, _, tariff, client = api.catalog(
        "provisor", config, item_settings={"upstream_tariff_id": up_tariff["id"]}, retry_delay=1
    )
    assert [op.status for op in engine.run_all()] == ["done"]  # ensure_item
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op_id = paid["operation_id"]

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(operations, "_save_state", lambda *args: None)
        patch.setattr(operations, "_record_result", die)
        with pytest.raises(Killed), app.app_context(), database.connection_context():
            operations.run(op_id)
    assert len(upstream_services(upstream, shop["id"])) == 1
    with app.app_context(), database.connection_context():
        assert Operation.get_by_id(op_id).state is None  # nothing remembered here
        Operation.update(lease_until=utcnow() - timedelta(seconds=1)).where(
            Operation.id == op_id
        ).execute()
        assert operations.sweep()["reclaimed"] == 1
    assert engine.run(op_id).status == "done"
    [remote] = upstream_services(upstream, shop["id"])
    service = engine.service(order["service_id"])
    assert service.status == "active" and service.remote_id == str(remote["id"])
    with app.app_context(), database.connection_context():
        logs = [a.log or "" for a in Attempt.select().where(Attempt.operation == op_id)]
    assert any("made before: taken over" in text for text in logs), logs


def test_an_upstream_service_busy_with_its_own_operation_is_waited_for(instances):
    """Upstream staff suspend the service themselves (their panel slow to do it): the
    reseller's close meanwhile is answered 409 operation_in_progress, which is not a
    refusal but a temporary error; it goes through once the upstream's suspend ends."""
    upstream, reseller = instances("upstream"), instances("reseller")
    up_tariff, up_module, shop, token = sell(upstream)
    _, tariff = resell(reseller, upstream, token, up_tariff["id"])
    service_id, op_id = order_paid(reseller, tariff)
    wait_done(reseller, op_id)
    [remote] = upstream_services(upstream, shop["id"])
    # the upstream's panel fails each operation's first attempt, retried 3 s later
    upstream.call(
        "PUT",
        f"/modules/{up_module['id']}",
        {"name": up_module["name"], "config": {"fail_first": 1}, "retry_delay": 3},
    )
    theirs = upstream.call("POST", f"/services/{remote['id']}/suspend", {})
    close = reseller.call("POST", f"/services/{service_id}/close", {})
    op = wait_done(reseller, close["id"], timeout=40)
    outcomes = [a["outcome"] for a in op["attempt_log"]]
    assert outcomes[0] == "temporary_error" and outcomes[-1] == "done", op["attempt_log"]
    first = op["attempt_log"][0]["error"]
    assert "the upstream is busy (409)" in first and f"operation #{theirs['id']}" in first, first
    assert upstream.call("GET", f"/operations/{theirs['id']}")["status"] == "done"
    assert upstream.call("GET", f"/services/{remote['id']}")["status"] == "deleted"
    kinds = [o["kind"] for o in upstream.call("GET", f"/services/{remote['id']}")["operations"]]
    assert sorted(kinds) == ["close", "open", "suspend"]


def test_an_upstream_setup_cancelled_is_given_to_people_with_its_reason(instances):
    """Upstream staff cancel the setup of the resold service (their manual module's task,
    with a reason): the upstream service is setup_cancelled, so the reseller stops waiting
    for it and its open operation goes to people with the upstream's reason (issue 12)."""
    upstream, reseller = instances("upstream"), instances("reseller")
    up_tariff, _, shop, token = sell(upstream, module_type="manual")
    _, tariff = resell(reseller, upstream, token, up_tariff["id"])
    _, op_id = order_paid(reseller, tariff)
    remote = wait_for(
        lambda: upstream_services(upstream, shop["id"]), timeout=20, message="the upstream order"
    )[0]
    task = wait_for(
        lambda: upstream.call("GET", "/tasks?status=new")["tasks"],
        timeout=20,
        message="the upstream's setup task",
    )[0]
    upstream.call("POST", f"/tasks/{task['id']}/cancel", {"reason": "No stock in Frankfurt"})
    assert upstream.call("GET", f"/services/{remote['id']}")["status"] == "setup_cancelled"
    op = wait_done(reseller, op_id, statuses=("manual",), timeout=30)
    assert "the upstream cancelled the setup" in op["last_error"], op
    assert "No stock in Frankfurt" in op["last_error"]
