"""Item settings: what a module type declares in ``item_fields`` (a record template, a
connection limit) is edited on the tariff, kept on the item and handed to every operation."""

import pytest

import modules
from app.db import database
from app.models import Item, Operation
from modules.base import ConfigField, ModuleType, Result
from tests.support import login, wait_for

SEEN = []


class Limited(ModuleType):
    """Records the item settings each operation gets."""

    id = "limited-test"
    name = "Limited (test)"
    operations = {"open", "change_tariff", "ensure_item"}
    item_fields = [
        ConfigField("connections", "Connections", kind="int", required=True, minimum=1),
        ConfigField("records", "Record template", kind="text", default="A @ {ip}"),
    ]

    def ensure_item(self, ctx):
        SEEN.append(("ensure_item", ctx.item.internal_name, ctx.item_settings))
        return Result.done(f"plan-{ctx.item.internal_name}")

    def open(self, ctx):
        SEEN.append(("open", ctx.internal_name, ctx.item_settings))
        return Result.done(f"acct-{ctx.service.id}", {"ip": "192.0.2.9"})

    def change_tariff(self, ctx):
        SEEN.append(("change_tariff", ctx.params["tariff_internal_name"], ctx.item_settings))
        return Result.done(ctx.service.remote_id)


@pytest.fixture
def limited(monkeypatch):
    modules.types()
    monkeypatch.setitem(modules._registry, Limited.id, Limited)
    SEEN.clear()
    return Limited


def _tariff(api, module, internal, settings=None, status=201, method="post", path="/tariffs"):
    body = {
        "name": f"Plan {internal}",
        "product_type": "vps",
        "price": "5",
        "internal_name": internal,
        "module_ids": [module["id"]],
    }
    if settings is not None:
        body["item_settings"] = {str(module["id"]): settings}
    return api.post(path, body) if status is None else api.ok(method, path, body, status=status)


def test_item_settings_are_checked_kept_and_handed_to_operations(app, api, limited):
    module = api.ok("post", "/modules", {"name": "lim", "type": limited.id}, status=201)
    code, body = _tariff(api, module, "small", status=None)
    assert code == 422
    assert body["error"]["fields"] == {
        f"item_settings.{module['id']}.connections": "This field is required."
    }
    code, body = _tariff(api, module, "small", {"connections": "0"}, status=None)
    assert body["error"]["fields"] == {
        f"item_settings.{module['id']}.connections": "Must be at least 1."
    }
    with app.app_context(), database.connection_context():
        assert Item.select().count() == 0  # a refused tariff made nothing
    tariff = _tariff(api, module, "small", {"connections": "10"})
    item = wait_for(
        lambda: (
            (i := api.ok("get", f"/tariffs/{tariff['id']}")["items"])[0]["status"] == "ready"
            and i[0]
        )
    )
    assert item["settings"] == {"connections": 10, "records": "A @ {ip}"}
    assert SEEN[-1] == ("ensure_item", "small", {"connections": 10, "records": "A @ {ip}"})
    # a tariff sharing the internal name shares the item: no settings needed, none changed
    twin = _tariff(api, module, "small")
    assert api.ok("get", f"/tariffs/{twin['id']}")["items"][0]["settings"]["connections"] == 10
    assert [s for s in SEEN if s[0] == "ensure_item"] == [SEEN[0]]
    # the service's operations get the settings of their tariff's item
    shopper = api.ok("post", "/clients", {"name": "C", "email": "c@example.com"}, status=201)
    order = api.order(shopper["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    assert SEEN[-1] == ("open", "small", {"connections": 10, "records": "A @ {ip}"})
    # new settings on the tariff: the item is checked again with them
    _tariff(
        api,
        module,
        "small",
        {"connections": 20, "records": "A @ {ip}\nMX 10 mail"},
        method="put",
        path=f"/tariffs/{tariff['id']}",
        status=200,
    )
    wait_for(lambda: SEEN[-1][0] == "ensure_item" and SEEN[-1][2]["connections"] == 20)
    with app.app_context(), database.connection_context():
        assert Operation.select().where(Operation.kind == "ensure_item").count() == 2
    # change_tariff gets the settings of the new tariff's item
    big = _tariff(api, module, "big", {"connections": 99})
    wait_for(lambda: api.ok("get", f"/tariffs/{big['id']}")["items"][0]["status"] == "ready")
    op = api.ok(
        "post",
        f"/services/{order['service_id']}/change_tariff",
        {"tariff_id": big["id"]},
        status=202,
    )
    api.wait_operation(op["id"])
    assert SEEN[-1] == ("change_tariff", "big", {"connections": 99, "records": "A @ {ip}"})
    described = {t["id"]: t for t in api.ok("get", "/module-types")["module_types"]}
    assert [f["name"] for f in described[limited.id]["item_fields"]] == ["connections", "records"]


def test_the_tariff_form_edits_the_item_settings(app, api, client, limited):
    module = api.ok("post", "/modules", {"name": "lim", "type": limited.id}, status=201)
    login(client, "admin@example.com", "admin-password")
    page = client.get("/catalog/tariffs/new").get_data(as_text=True)
    assert f'name="item_settings.{module["id"]}.connections"' in page
    form = {
        "name": "Web",
        "product_type": "vps",
        "price": "3",
        "internal_name": "web",
        "module_ids": str(module["id"]),
        f"item_settings.{module['id']}.connections": "abc",
        f"item_settings.{module['id']}.records": "A @ {ip}",
    }
    response = client.post("/catalog/tariffs/new", data=form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Must be a whole number." in page
    # what was typed is still there to correct (it was blanked, and saved blank next)
    assert 'value="abc"' in page and "A @ {ip}" in page
    form[f"item_settings.{module['id']}.connections"] = "7"
    assert client.post("/catalog/tariffs/new", data=form).status_code == 302
    tariff = api.ok("get", "/tariffs")["tariffs"][0]
    wait_for(lambda: api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "ready")
    edit = client.get(f"/catalog/tariffs/{tariff['id']}/edit").get_data(as_text=True)
    assert f'name="item_settings.{module["id"]}.connections"' in edit and 'value="7"' in edit
