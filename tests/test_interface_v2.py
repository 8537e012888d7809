"""Module interface v2 from the outside: declared operations, Test connection, config
kinds, per-service module data, expiry and renewals, order fields, task texts."""

import re
from datetime import timedelta

import pytest

import modules
from app.db import database
from app.models import Operation, Service, Task, TaskEvent, utcnow
from app.services import operations
from modules.base import ConfigField, ModuleType, Result
from tests.support import wait_for


def login(client, email="admin@example.com", password="admin-password"):
    response = client.post("/login", data={"email": email, "password": password})
    assert response.status_code == 302


def text_of(response):
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


class OpenOnly(ModuleType):
    """Sets services up and closes them; nothing else."""

    id = "open-only-test"
    name = "Open only (test)"
    operations = {"open", "close"}
    config_fields = [
        ConfigField("region", "Region", kind="choice", options=["eu", "us"], default="eu"),
        ConfigField("template", "Record template", kind="text", max_length=50),
        ConfigField("key", "API key", kind="secret", multiline=True),
    ]

    def open(self, ctx):
        return Result.done(f"oo-{ctx.service.id}", {"ip": "192.0.2.1"}, data={"serial": "S-1"})

    def close(self, ctx):
        return Result.done(ctx.service.remote_id)


@pytest.fixture
def open_only(monkeypatch):
    modules.types()
    monkeypatch.setitem(modules._registry, OpenOnly.id, OpenOnly)
    return OpenOnly


def test_a_type_must_declare_its_operations():
    class Vague(ModuleType):
        id = "vague-test"

        def open(self, ctx):
            return Result.done()

    with pytest.raises(TypeError, match="must declare its operations"):
        modules.register(Vague)

    class Liar(ModuleType):
        id = "liar-test"
        operations = {"open", "suspend"}

        def open(self, ctx):
            return Result.done()

    with pytest.raises(TypeError, match="without methods"):
        modules.register(Liar)
    assert "vague-test" not in modules.types() and "liar-test" not in modules.types()


def test_an_undeclared_operation_is_never_offered(app, api, client, open_only):
    _, module, tariff, shopper = api.catalog(open_only.id, {"region": "us"})
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    sid = order["service_id"]
    login(client)
    page = text_of(client.get(f"/services/{sid}"))
    assert "Close service" in page
    assert "Suspend" not in page and "Renew" not in page and "Change tariff" not in page
    code, body = api.post(f"/services/{sid}/suspend")
    assert code == 409
    assert body["error"]["message"] == (
        f"module {module['name']} ({open_only.id}) does not do suspend; "
        f"service #{sid} cannot be asked to"
    )
    with app.app_context(), database.connection_context():
        assert Operation.select().where(Operation.kind == "suspend").count() == 0
    # what the module keeps for later is on the service, for staff
    service = api.ok("get", f"/services/{sid}")
    assert service["module_data"] == {"serial": "S-1"}
    assert "S-1" in text_of(client.get(f"/services/{sid}"))


def test_config_kinds_choice_text_and_multiline_secret(app, api, open_only):
    code, body = api.post(
        "/modules",
        {"name": "oo", "type": open_only.id, "config": {"region": "mars", "template": "x" * 51}},
    )
    assert code == 422
    assert body["error"]["fields"] == {
        "config.region": "One of: eu, us",
        "config.template": "At most 50 characters.",
    }
    pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----"
    module = api.ok(
        "post",
        "/modules",
        {"name": "oo", "type": open_only.id, "config": {"template": "a\nb", "key": pem}},
        status=201,
    )
    assert module["config"] == {"region": "eu", "template": "a\nb", "key": "********"}
    described = {t["id"]: t for t in api.ok("get", "/module-types")["module_types"]}
    fields = {f["name"]: f for f in described[open_only.id]["config_fields"]}
    assert fields["region"]["options"] == [
        {"value": "eu", "label": "eu"},
        {"value": "us", "label": "us"},
    ]
    assert fields["key"]["multiline"] is True and fields["template"]["kind"] == "text"
    assert described[open_only.id]["can_check"] is False


def test_test_connection_on_the_form_shows_the_servers_words_by_the_field(
    app, api, client, http_endpoint
):
    login(client)
    form = {
        "name": "Panel",
        "type": "http",
        "config.url": http_endpoint.url,
        "config.secret": "wrong-secret-value",
        "config.timeout": "2",
    }
    answer = client.post("/catalog/modules/check", data=form, headers={"HX-Request": "true"})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert 'id="check-result"' in html and "✗" in html
    # the message is swapped in beside the secret field (out of band)
    secret_error = re.search(r'<p class="field-error" id="check-config-secret"[^>]*>([^<]*)<', html)
    assert secret_error and "refused the signature (401" in secret_error.group(1)
    assert "wrong-secret-value" not in html
    good = client.post(
        "/catalog/modules/check",
        data={**form, "config.secret": http_endpoint.secret},
        headers={"HX-Request": "true"},
    ).get_data(as_text=True)
    assert "✓ Connection works" in good
    # the form has the button, wired to the same route
    page = client.get("/catalog/modules/new?type=http").get_data(as_text=True)
    assert 'hx-post="/catalog/modules/check"' in page and "Test connection" in page
    # saving tests too: saved, and told at once that the connection does not work
    response = client.post("/catalog/modules/new", data={**form, "enabled": "1"})
    assert response.status_code == 302
    page = text_of(client.get("/catalog/modules"))
    assert "but the connection test failed: secret: the endpoint refused the signature" in page


def _expire_in(app, service_id, days):
    """Time passes: the service now expires in ``days`` days."""
    with app.app_context(), database.connection_context():
        Service.update(expires_at=utcnow() + timedelta(days=days)).where(
            Service.id == service_id
        ).execute()


def test_a_renewal_window_as_long_as_the_term_is_refused(api):
    code, body = api.post(
        "/modules",
        {
            "name": "s",
            "type": "sandbox",
            "config": {"expires_in_days": 20, "renew_days_before": 30},
        },
    )
    assert code == 422
    assert body["error"]["fields"] == {
        "config.renew_days_before": "Must be less than the 20 days services last (or 0: only by hand)."
    }


def test_renew_is_requested_once_per_expiry_by_the_scheduler(app, api, client):
    _, module, tariff, shopper = api.catalog(
        "sandbox", {"expires_in_days": 60, "renew_days_before": 30}
    )
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    sid = order["service_id"]
    service = api.ok("get", f"/services/{sid}")
    assert service["expires_at"]
    with app.app_context(), database.connection_context():
        assert operations.sweep()["renewals"] == 0  # 60 days away: not yet
    _expire_in(app, sid, 10)
    first_expiry = api.ok("get", f"/services/{sid}")["expires_at"]
    # due: two sweeps (or two schedulers) queue one renew between them
    with app.app_context(), database.connection_context():
        counts = [operations.sweep()["renewals"], operations.sweep()["renewals"]]
    assert sorted(counts) == [0, 1]
    renewal = wait_for(
        lambda: [o for o in api.ok("get", f"/services/{sid}")["operations"] if o["kind"] == "renew"]
    )
    assert len(renewal) == 1 and renewal[0]["params"]["requested_by"] == "scheduler"
    api.wait_operation(renewal[0]["id"])
    renewed = api.ok("get", f"/services/{sid}")
    assert renewed["expires_at"] > first_expiry  # a month later (the tariff's period)
    # the new expiry is 40 days away, beyond the 30-day window: nothing more to queue
    with app.app_context(), database.connection_context():
        assert operations.sweep()["renewals"] == 0
    # staff (and the API) can renew by hand too
    op = api.ok("post", f"/services/{sid}/renew", status=202)
    assert op["kind"] == "renew"
    api.wait_operation(op["id"])
    login(client)
    page = text_of(client.get(f"/services/{sid}"))
    assert "Renew" in page and "Expires" in page


def test_a_cancelled_renewal_is_not_queued_again_for_the_same_expiry(app, api, monkeypatch):
    from app.services import dispatch

    _, module, tariff, shopper = api.catalog(
        "sandbox", {"expires_in_days": 30, "renew_days_before": 10}
    )
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    _expire_in(app, order["service_id"], 5)
    monkeypatch.setattr(dispatch, "_send", lambda *a, **k: None)
    with app.app_context(), database.connection_context():
        assert operations.sweep()["renewals"] == 1
        op = Operation.get(Operation.kind == "renew")
        operations.cancel(op.id, actor="staff")
        assert operations.sweep()["renewals"] == 0
        service = Service.get_by_id(order["service_id"])
        assert service.renewal_queued_for == service.expires_at


def test_order_fields_are_checked_on_every_path(app, api, client):
    _, module, tariff, shopper = api.catalog("sandbox", product_type="hosting")
    assert tariff["order_fields"][0]["name"] == "domain"
    before = api.ok("get", "/operations?status=done")["total"]
    for bad, message in (
        ({}, "Domain name is required."),
        ({"domain": "not a domain"}, "Not a valid domain name (such as example.com)."),
        ({"domain": "x" * 300 + ".com"}, "At most 253 characters."),
        ({"domain": 7}, "Not a valid domain name (such as example.com)."),
    ):
        code, body = api.post(
            "/orders", {"client_id": shopper["id"], "tariff_id": tariff["id"], "params": bad}
        )
        assert code == 422 and body["error"]["fields"] == {"params.domain": message}, body
    with app.app_context(), database.connection_context():
        assert Service.select().count() == 0
    order = api.order(shopper["id"], tariff["id"], {"domain": "Bücher.Example"})
    with app.app_context(), database.connection_context():
        assert Service.get_by_id(order["service_id"]).params == {"domain": "xn--bcher-kva.example"}
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    service = api.ok("get", f"/services/{order['service_id']}")
    assert service["details"]["domain"] == "xn--bcher-kva.example"  # the module got it
    assert api.ok("get", "/operations?status=done")["total"] > before


def test_the_client_order_form_shows_and_checks_the_fields(app, api, client):
    _, module, tariff, _ = api.catalog("sandbox", product_type="hosting")
    api.ok(
        "post",
        "/clients",
        {"name": "Carol", "email": "carol@example.com", "password": "carol-password"},
        status=201,
    )
    login(client, "carol@example.com", "carol-password")
    page = client.get("/my/order").get_data(as_text=True)
    assert f'id="f-{tariff["id"]}-domain"' in page and 'name="params.domain"' in page
    response = client.post(
        "/my/order", data={"tariff_id": tariff["id"], "params.domain": "-bad-.com"}
    )
    assert response.status_code == 422
    assert "Not a valid domain name" in response.get_data(as_text=True)
    with app.app_context(), database.connection_context():
        assert Service.select().count() == 0
    response = client.post(
        "/my/order", data={"tariff_id": tariff["id"], "params.domain": "carol.example.org"}
    )
    assert response.status_code == 302
    with app.app_context(), database.connection_context():
        assert Service.get().params == {"domain": "carol.example.org"}


def test_product_type_form_edits_the_order_fields(app, api, client):
    login(client)
    response = client.post(
        "/catalog/product-types/2/edit",
        data={
            "name": "VPS",
            "detail_fields": "ip | IP | required",
            "order_fields": "os_image | OS | choice: | required\nname | Name | nope",
            "welcome_subject": "Hi",
            "welcome_template": "Hello",
        },
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "a choice needs options" in page and "kind must be one of" in page
    response = client.post(
        "/catalog/product-types/2/edit",
        data={
            "name": "VPS",
            "detail_fields": "ip | IP | required",
            "order_fields": "os_image | OS | choice:debian-12,alma-9 | required\nlabel | Label | text:20",
            "welcome_subject": "Hi",
            "welcome_template": "Hello",
        },
    )
    assert response.status_code == 302
    _, module, tariff, shopper = api.catalog("sandbox", product_type="vps")
    shown = [{k: v for k, v in f.items() if v is not None} for f in tariff["order_fields"]]
    assert shown == [
        {
            "name": "os_image",
            "label": "OS",
            "kind": "choice",
            "required": True,
            "options": ["debian-12", "alma-9"],
        },
        {"name": "label", "label": "Label", "kind": "text", "required": False, "max_length": 20},
    ]
    code, body = api.post(
        "/orders",
        {"client_id": shopper["id"], "tariff_id": tariff["id"], "params": {"os_image": "dos"}},
    )
    assert body["error"]["fields"] == {"params.os_image": "One of: debian-12, alma-9"}


def test_task_titles_and_history_are_rendered_not_stored(app, api, http_endpoint):
    http_endpoint.script = ["400"]
    department, module, tariff, shopper = api.catalog("http", http_endpoint.config())
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"], ("manual",))
    task = api.ok("get", f"/tasks?operation_id={paid['operation_id']}")["tasks"][0]
    assert task["title"] == f"Set up service #{order['service_id']} manually"
    detail = api.ok("get", f"/tasks/{task['id']}")
    assert detail["events"][0]["text"] == (
        f"Operation #{paid['operation_id']} (Set up): permanent error."
    )
    with app.app_context(), database.connection_context():
        row = Task.get_by_id(task["id"])
        assert row.stored_title is None
        event = TaskEvent.get(TaskEvent.task == row.id)
        assert event.stored_text == "" and event.message == "task_created"
        assert event.args == {
            "operation": paid["operation_id"],
            "kind": "open",
            "reason": "permanent_error",
            "reason_args": {},
        }


def test_the_api_shows_a_polling_operations_facts(app, api, monkeypatch):
    """The sandbox's long jobs: the operation shows its state, checks and deadline."""
    from app.services import dispatch

    _, module, tariff, shopper = api.catalog("sandbox", {"job_checks": 3})
    monkeypatch.setattr(dispatch, "_send", lambda *a, **k: None)
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    with app.app_context(), database.connection_context():
        operations.run(paid["operation_id"])
    op = api.ok("get", f"/operations/{paid['operation_id']}")
    assert op["status"] == "polling" and op["state"]["checks_left"] == 2
    deadline = op["deadline_at"]
    assert deadline and deadline > (utcnow() + timedelta(minutes=59)).isoformat()
