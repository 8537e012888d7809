"""Importing an account that already exists on a panel: staff bind it to a new service,
which is active at once without running ``open`` (an open operation is recorded done,
"imported by ..."); a module type may list its panel's accounts (the sandbox does); a
remote id already bound to another live service of the module is refused (409)."""

from app.models import Email, Operation, SandboxResource, Service, ServiceEvent
from app.states import SERVICE
from tests.support import db, html, paid_service

VPS = {
    "hostname": "old1.example.net",
    "ip": "198.51.100.20",
    "username": "root",
    "password": "legacy-pw",
}


def _legacy_account(app, remote_id="sbx-account-legacy1"):
    """An account on the sandbox panel that Provisor did not make."""
    with db(app):
        SandboxResource.create(
            operation_key=f"legacy-{remote_id}",
            kind="account",
            remote_id=remote_id,
            details=VPS,
            status="active",
        )
    return remote_id


def test_the_import_transition_is_declared():
    assert SERVICE.target("import", "ordered") == "active"
    assert not SERVICE.allows("import", "active")


def test_import_by_remote_id_through_the_api(app, api):
    _, module, tariff, customer = api.catalog("sandbox")
    _legacy_account(app, "legacy-42")
    data = {
        "client_id": customer["id"],
        "tariff_id": tariff["id"],
        "module_id": module["id"],
        "remote_id": "legacy-42",
        "details": VPS,
    }
    status, body = api.post("/services/import", {**data, "details": {**VPS, "ip": "999.1.1.1"}})
    assert status == 422 and body["error"]["fields"] == {"details.ip": "Not an IP address."}
    status, body = api.post("/services/import", {**data, "remote_id": ""})
    assert status == 422 and "remote_id" in body["error"]["fields"]
    _, other_module, _, _ = api.catalog("sandbox")
    status, body = api.post("/services/import", {**data, "module_id": other_module["id"]})
    assert status == 422
    assert body["error"]["fields"] == {"module_id": "This module does not serve the tariff."}
    with db(app):
        assert not Service.select().exists()

    status, body = api.post("/services/import", data)
    assert status == 201, body
    assert body["status"] == "active" and body["remote_id"] == "legacy-42"
    assert body["details"] == VPS and body["module_id"] == module["id"]
    service = api.ok("get", f"/services/{body['id']}")
    [op] = service["operations"]
    assert (op["kind"], op["status"]) == ("open", "done")
    assert op["completed_by"] == "imported by admin@example.com"
    assert op["attempts"] == 0  # nothing ran on the panel
    with db(app):
        assert not Email.select().where(Email.service == body["id"]).exists()  # no welcome
        event = ServiceEvent.get(ServiceEvent.service == body["id"])
        assert event.kind == "imported" and "legacy-42" in event.text

    # the same account again: refused, nothing made
    status, again = api.post("/services/import", data)
    assert status == 409
    assert again["error"]["code"] == "remote_id_bound"
    assert f"already bound to service #{body['id']}" in again["error"]["message"]
    with db(app):
        assert Service.select().count() == 1
    # once that service is deleted, the account may be bound again
    op = api.ok("post", f"/services/{body['id']}/close", {}, status=202)
    api.wait_operation(op["id"])
    status, _ = api.post("/services/import", data)
    assert status == 201


def test_the_sandbox_lists_its_accounts_and_one_is_imported(app, api):
    ids = paid_service(api)
    legacy = _legacy_account(app)
    accounts = api.ok("get", f"/modules/{ids['module']['id']}/accounts")["accounts"]
    by_id = {a["remote_id"]: a for a in accounts}
    with db(app):
        bound = Service.get_by_id(ids["service_id"]).remote_id
    assert by_id[bound]["bound_to"] == ids["service_id"]
    assert by_id[legacy]["bound_to"] is None
    assert by_id[legacy]["details"] == VPS
    assert "198.51.100.20" in by_id[legacy]["summary"]

    data = {
        "client_id": ids["client"]["id"],
        "tariff_id": ids["tariff"]["id"],
        "module_id": ids["module"]["id"],
        "remote_id": bound,
    }
    status, body = api.post("/services/import", data)
    assert status == 409 and body["error"]["code"] == "remote_id_bound"
    body = api.ok("post", "/services/import", {**data, "remote_id": legacy}, status=201)
    accounts = api.ok("get", f"/modules/{ids['module']['id']}/accounts")["accounts"]
    assert {a["remote_id"]: a["bound_to"] for a in accounts}[legacy] == body["id"]
    # the imported service is managed as any other: the module suspends that account
    op = api.ok("post", f"/services/{body['id']}/suspend", {}, status=202)
    api.wait_operation(op["id"])
    with db(app):
        assert Service.get_by_id(body["id"]).status == "suspended"


def test_a_module_type_that_cannot_list_is_said_so(app, api):
    _, module, _, _ = api.catalog("manual")
    status, body = api.get(f"/modules/{module['id']}/accounts")
    assert status == 409 and body["error"]["code"] == "cannot_list_accounts"
    types = {t["id"]: t for t in api.ok("get", "/module-types")["module_types"]}
    assert types["sandbox"]["can_list_accounts"] is True
    assert types["manual"]["can_list_accounts"] is False
    assert api.get("/modules/999999/accounts")[0] == 404


def test_the_import_page(app, client, admin):
    ids = paid_service(admin)
    legacy = _legacy_account(app)
    page = html(client.get("/services"))
    assert 'href="/services/import"' in page
    tariff_id, module_id = ids["tariff"]["id"], ids["module"]["id"]
    page = html(client.get(f"/services/import?tariff_id={tariff_id}"))
    # the tariff's only module is chosen; its accounts are listed
    assert 'id="remote-accounts"' in page and legacy in page
    assert f"service #{ids['service_id']}" in page
    page = html(
        client.get(f"/services/import?tariff_id={tariff_id}&module_id={module_id}&account={legacy}")
    )
    assert f'value="{legacy}"' in page and 'value="198.51.100.20"' in page  # prefilled

    form = {
        "tariff_id": tariff_id,
        "module_id": module_id,
        "client_id": ids["client"]["id"],
        "remote_id": legacy,
        **{f"detail.{k}": v for k, v in VPS.items()},
    }
    response = client.post("/services/import", data={**form, "detail.ip": "999.999.1.1"})
    assert response.status_code == 422
    assert 'id="err-detail-ip"' in html(response) and "Not an IP address." in html(response)
    response = client.post("/services/import", data=form)
    assert response.status_code == 302, html(response)[:3000]
    with db(app):
        service = Service.select().order_by(Service.id.desc()).get()
        assert (service.status, service.remote_id, service.details) == ("active", legacy, VPS)
        assert Operation.get(Operation.service == service.id).completed_by.startswith("imported")
    assert response.headers["Location"].endswith(f"/services/{service.id}")
    response = client.post("/services/import", data=form)
    assert response.status_code == 409
    assert f"already bound to service #{service.id}" in html(response)


def test_the_cli_lists_and_imports(app, api, runner):
    _, module, tariff, customer = api.catalog("sandbox")
    legacy = _legacy_account(app)
    result = runner.invoke(args=["services", "accounts", "--module-id", str(module["id"])])
    assert result.exit_code == 0, result.output
    assert f"{legacy}\tfree\t" in result.output
    base = [
        "services",
        "import",
        "--client-id",
        str(customer["id"]),
        "--tariff-id",
        str(tariff["id"]),
        "--module-id",
        str(module["id"]),
        "--remote-id",
        legacy,
    ]
    result = runner.invoke(args=[*base, "--detail", "ip=999.999.1.1"])
    assert result.exit_code == 2 and "Not an IP address." in result.output
    result = runner.invoke(
        args=[*base, "--detail", "ip=198.51.100.20", "--detail", "username=root"]
    )
    assert result.exit_code == 0, result.output
    assert "imported: active" in result.output
    result = runner.invoke(args=[*base])
    assert result.exit_code == 2 and "already bound to service #" in result.output
    result = runner.invoke(args=["services", "accounts", "--module-id", str(module["id"])])
    assert f"{legacy}\tservice #" in result.output
