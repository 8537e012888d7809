"""Catalog: modules validated by their type's schema, items, module choice, service actions."""

import datetime as dt

from app.db import database
from app.models import Attempt, Operation, ProcessingModule, Service
from tests.support import wait_for


def _department(api):
    return api.ok("post", "/departments", {"name": "Provisioning"})


def test_module_config_is_validated_by_the_type_schema(api):
    department = _department(api)
    code, body = api.post(
        "/modules",
        {
            "name": "Panel",
            "type": "http",
            "config": {"url": "ftp://x", "timeout": "soon"},
            "department_id": department["id"],
        },
    )
    assert code == 422
    fields = body["error"]["fields"]
    assert fields["config.url"] == "Must be an http:// or https:// URL."
    assert fields["config.secret"] == "This field is required."
    assert fields["config.timeout"] == "Must be a number."
    code, body = api.post("/modules", {"name": "X", "type": "nope", "config": {}})
    assert code == 422 and "type" in body["error"]["fields"]
    code, body = api.post(
        "/modules",
        {
            "name": "S",
            "type": "sandbox",
            "config": {"failure_rate": 2, "colour": "red"},
            "retry_delay": 0,
            "max_attempts": "many",
        },
    )
    assert code == 422
    assert set(body["error"]["fields"]) == {
        "config.failure_rate",
        "config.colour",
        "retry_delay",
        "max_attempts",
    }
    assert api.ok("get", "/modules")["modules"] == []


def test_module_defaults_and_masked_secret(api):
    module = api.ok(
        "post",
        "/modules",
        {
            "name": "Panel",
            "type": "http",
            "config": {"url": "https://panel.example/api", "secret": "topsecret"},
        },
    )
    assert module["retry_delay"] == 300 and module["max_attempts"] == 3
    assert module["enabled"] is True
    assert module["config"]["secret"] == "********"
    assert module["config"]["timeout"] == 30.0


def test_tariffs_sharing_an_internal_name_share_one_item(api):
    module = api.ok("post", "/modules", {"name": "Sandbox", "type": "sandbox", "config": {}})
    first = api.ok(
        "post",
        "/tariffs",
        {
            "name": "VPS S",
            "product_type": "vps",
            "price": "5",
            "internal_name": "vps-small",
            "module_ids": [module["id"]],
        },
    )
    second = api.ok(
        "post",
        "/tariffs",
        {
            "name": "VPS S (yearly)",
            "product_type": "vps",
            "price": "50",
            "period": "year",
            "internal_name": "vps-small",
            "module_ids": [module["id"]],
        },
    )
    wait_for(lambda: api.ok("get", f"/tariffs/{first['id']}")["items"][0]["status"] == "ready")
    items_1 = api.ok("get", f"/tariffs/{first['id']}")["items"]
    items_2 = api.ok("get", f"/tariffs/{second['id']}")["items"]
    assert items_1 == items_2 and len(items_1) == 1
    ensure = api.ok("get", "/operations?kind=ensure_item&status=done")["operations"]
    assert len(ensure) == 1
    assert second["orderable"] is True


def test_tariff_needs_an_enabled_module_to_be_orderable(api):
    module = api.ok(
        "post", "/modules", {"name": "Sandbox", "type": "sandbox", "config": {}, "enabled": False}
    )
    tariff = api.ok(
        "post",
        "/tariffs",
        {
            "name": "DB",
            "product_type": "database",
            "price": "1",
            "internal_name": "db-1",
            "module_ids": [module["id"]],
        },
    )
    assert tariff["orderable"] is False
    assert api.ok("get", "/operations?kind=ensure_item")["operations"] == []
    client = api.ok("post", "/clients", {"name": "Dan", "email": "dan@example.com"})
    code, body = api.post("/orders", {"client_id": client["id"], "tariff_id": tariff["id"]})
    assert code == 422 and "tariff_id" in body["error"]["fields"]
    api.ok(
        "put",
        f"/modules/{module['id']}",
        {"name": "Sandbox", "type": "sandbox", "config": {}, "enabled": True},
    )
    assert api.ok("get", f"/tariffs/{tariff['id']}")["orderable"] is True
    assert len(api.ok("get", "/operations?kind=ensure_item&status=")["operations"]) <= 1
    wait_for(lambda: api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "ready")


def test_module_choice_order(app, api):
    """Recent errors, then max_running, then the current module, then priority, then id."""
    ids = []
    for name, priority, max_running in (("a", 5, 0), ("b", 1, 1), ("c", 1, 0), ("d", 0, 0)):
        ids.append(
            api.ok(
                "post",
                "/modules",
                {
                    "name": name,
                    "type": "sandbox",
                    "config": {},
                    "priority": priority,
                    "max_running": max_running,
                },
            )["id"]
        )
    a, b, c, d = ids
    tariff = api.ok(
        "post",
        "/tariffs",
        {"name": "T", "product_type": "vps", "price": "1", "internal_name": "t", "module_ids": ids},
    )
    wait_for(
        lambda: all(
            i["status"] == "ready" for i in api.ok("get", f"/tariffs/{tariff['id']}")["items"]
        )
    )
    client = api.ok("post", "/clients", {"name": "E", "email": "e@example.com"})
    order = api.order(client["id"], tariff["id"])
    with app.app_context(), database.connection_context():
        from app.services import provisioning

        service = Service.get_by_id(order["service_id"])

        def ranking():
            return [m.id for m, _ in provisioning.rank_modules(service)]

        assert ranking() == [d, b, c, a]  # priority, then id
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        # b is at its limit of running operations
        Operation.create(kind="open", module=b, status="running", service=service)
        assert ranking() == [d, c, a, b]
        # d had an error a minute ago
        failed = Operation.create(kind="open", module=d, status="done", service=service)
        Attempt.create(
            operation=failed,
            number=1,
            started_at=now,
            finished_at=now,
            outcome="temporary_error",
            error="boom",
        )
        assert ranking() == [c, a, b, d]
        # the module the service is already on wins among equals
        service.module = a
        service.save()
        assert ranking() == [a, c, b, d]
        module, explanation = provisioning.choose_module(service)
        assert module.id == a
        assert explanation["candidates"][0]["current"] is True
        assert explanation["candidates"][-1]["recent_errors"] is True
        # the payment reads the same candidates, with their items, in its order's SELECT
        from app.services import orders

        def with_payment_read():
            _, candidates = orders._order_to_pay(order["id"])
            return provisioning.rank_modules(service, candidates=candidates)

        assert with_payment_read() == provisioning.rank_modules(service)
        assert [facts["item"] for _, facts in with_payment_read()] == ["ready"] * 4
        ProcessingModule.update(enabled=False).where(ProcessingModule.id == c).execute()
        assert [m.id for m, _ in with_payment_read()] == [a, b, d]
        assert with_payment_read() == provisioning.rank_modules(service)


def test_no_module_fits_makes_a_manual_task(app, api):
    department, module, tariff, client = api.catalog("sandbox")
    order = api.order(client["id"], tariff["id"])
    with app.app_context(), database.connection_context():
        ProcessingModule.update(enabled=False).where(ProcessingModule.id == module["id"]).execute()
    status, paid = api.pay(order)
    assert status == 200
    op = api.ok("get", f"/operations/{paid['operation_id']}")
    assert op["status"] == "manual" and op["module_id"] is None
    assert "no enabled module" in op["last_error"]
    tasks = api.ok("get", "/tasks?status=new")["tasks"]
    assert [t["operation_id"] for t in tasks] == [op["id"]]
    service = api.ok("get", f"/services/{order['service_id']}")
    assert service["module_choice"]["reason"] == "no enabled module serves this tariff"


def test_suspend_resume_change_tariff_close(api):
    _, module, tariff, client = api.catalog("sandbox")
    other = api.ok(
        "post",
        "/tariffs",
        {
            "name": "VPS M",
            "product_type": "vps",
            "price": "19",
            "internal_name": "vps-m",
            "module_ids": [module["id"]],
        },
    )
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    sid = order["service_id"]

    code, body = api.post(f"/services/{sid}/resume")
    assert code == 409  # active services are not suspended
    for kind, expected, body in (
        ("suspend", "suspended", None),
        ("resume", "active", None),
        ("change_tariff", "active", {"tariff_id": other["id"]}),
        ("close", "deleted", None),
    ):
        op = api.ok("post", f"/services/{sid}/{kind}", body, status=202)
        assert op["kind"] == kind
        api.wait_operation(op["id"])
        assert api.ok("get", f"/services/{sid}")["status"] == expected
    service = api.ok("get", f"/services/{sid}")
    assert service["tariff_id"] == other["id"]
    assert [op["kind"] for op in service["operations"]] == [
        "close",
        "change_tariff",
        "resume",
        "suspend",
        "open",
    ]
    code, body = api.post(f"/services/{sid}/suspend")
    assert code == 409 and "deleted" in body["error"]["message"]


def test_operation_cancel_and_restart_rules(api):
    _, _, tariff, client = api.catalog("sandbox", {"fail_first": 5}, retry_delay=60)
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("retry_wait",))
    cancelled = api.ok("post", f"/operations/{op['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    code, _ = api.post(f"/operations/{op['id']}/cancel")
    assert code == 409
    restarted = api.ok("post", f"/operations/{op['id']}/restart", status=202)
    assert restarted["status"] == "queued"
    api.wait_operation(op["id"], ("retry_wait",))
    assert api.ok("get", f"/operations/{op['id']}")["attempts"] == 2


def test_a_module_serves_only_the_product_types_its_type_declares(api):
    """A database module for a shared hosting tariff made services with empty hosting
    details: refused when the tariff is saved, saying what the module serves."""
    department = _department(api)
    dns = api.ok(
        "post",
        "/modules",
        {
            "name": "Our DNS",
            "type": "powerdns",
            "department_id": department["id"],
            "config": {
                "api_url": "http://127.0.0.1:9",
                "api_key": "k" * 16,
                "nameservers": "ns1.example.net",
            },
        },
        status=201,
    )
    body = {"name": "Web", "product_type": "hosting", "price": "5", "internal_name": "web"}
    code, answer = api.post("/tariffs", {**body, "module_ids": [dns["id"]]})
    assert code == 422, answer
    assert answer["error"]["fields"]["module_ids"] == (
        "Our DNS (PowerDNS (DNS hosting)) serves dns only, not Shared hosting."
    )
    assert api.ok("get", "/tariffs")["tariffs"] == []
    described = {t["id"]: t for t in api.ok("get", "/module-types")["module_types"]}
    assert described["powerdns"]["product_types"] == ["dns"]
    assert described["mariadb"]["product_types"] == ["database"]
    assert described["sandbox"]["product_types"] is None  # any


def test_a_service_moves_only_to_a_tariff_its_module_serves_and_is_ready_on(app, api):
    """Change tariff to a tariff of another module ran the change on the service's own
    module with settings it never had (a MariaDB service on a PostgreSQL tariff): the
    choice lists only the module's tariffs whose item did not fail, the API refuses others."""
    from app.models import Item

    _, module, tariff, client = api.catalog("sandbox")
    other = api.ok(
        "post", "/modules", {"name": "Other panel", "type": "sandbox", "config": {}}, status=201
    )
    elsewhere = api.ok(
        "post",
        "/tariffs",
        {"name": "Elsewhere", "product_type": "vps", "price": "7", "internal_name": "vps-e",
         "module_ids": [other["id"]]},
    )  # fmt: skip
    broken = api.ok(
        "post",
        "/tariffs",
        {"name": "Broken", "product_type": "vps", "price": "8", "internal_name": "vps-b",
         "module_ids": [module["id"]]},
    )  # fmt: skip
    fine = api.ok(
        "post",
        "/tariffs",
        {"name": "Fine", "product_type": "vps", "price": "9", "internal_name": "vps-f",
         "module_ids": [module["id"]]},
    )  # fmt: skip
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    service_id = order["service_id"]
    wait_for(lambda: api.ok("get", f"/tariffs/{broken['id']}")["items"][0]["status"] == "ready")
    with app.app_context(), database.connection_context():
        Item.update(status="failed", error="the panel refused the plan").where(
            (Item.module == module["id"]) & (Item.internal_name == "vps-b")
        ).execute()
        from app.services import provisioning

        choices = [t.name for t in provisioning.tariff_choices(Service.get_by_id(service_id))]
    assert choices == ["Fine"]
    code, body = api.post(f"/services/{service_id}/change_tariff", {"tariff_id": elsewhere["id"]})
    assert code == 422 and "is not served by" in body["error"]["fields"]["tariff_id"], body
    code, body = api.post(f"/services/{service_id}/change_tariff", {"tariff_id": broken["id"]})
    assert code == 422, body
    assert body["error"]["fields"]["tariff_id"] == (
        f"The tariff Broken is not ready on {module['name']}: its item vps-b is failed "
        "(the panel refused the plan)."
    )
    with app.app_context(), database.connection_context():
        assert not Operation.select().where(Operation.kind == "change_tariff").exists()
    op = api.ok("post", f"/services/{service_id}/change_tariff", {"tariff_id": fine["id"]})
    assert api.wait_operation(op["id"])["status"] == "done"
