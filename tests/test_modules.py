"""The module registry: third-party types through the entry-point group, like built-ins."""

import sys
import textwrap

import pytest

import modules
from tests.support import wait_for

THIRD_PARTY = """
from modules.base import ConfigField, ModuleType, Result


class RackModule(ModuleType):
    id = "rack"
    name = "Rack (dedicated servers)"
    config_fields = [ConfigField("datacenter", "Datacenter", required=True)]
    operations = {"open", "ensure_item"}  # it needs an item per tariff...
    creates_items = False  # a dedicated server cannot be made by software

    def open(self, ctx):
        ctx.log(f"rack: racking a server in {self.config['datacenter']}")
        return Result.done(remote_id=f"rack-{ctx.idempotency_key}",
                           details={"hostname": "ded1.example", "ip": "203.0.113.10",
                                    "username": "root", "password": "pw"})
"""


@pytest.fixture
def third_party_package(tmp_path, monkeypatch):
    """An installed distribution (dist-info on sys.path) declaring a provisor.modules entry."""
    (tmp_path / "rack_module.py").write_text(textwrap.dedent(THIRD_PARTY))
    info = tmp_path / "rack_module-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rack-module\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[provisor.modules]\nrack = rack_module:RackModule\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(modules, "_loaded", False)
    monkeypatch.setattr(modules, "_registry", {})
    yield
    sys.modules.pop("rack_module", None)


def test_builtin_types_come_through_the_entry_point_group():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="provisor.modules")}
    assert {"sandbox", "http"} <= names
    assert set(modules.types()) >= {"sandbox", "http"}
    assert modules.get_type("http").describe()["config_fields"][0]["name"] == "url"


def test_third_party_type_is_found_and_used(third_party_package, app, api):
    assert "rack" in modules.types()
    department = api.ok("post", "/departments", {"name": "DC hands"})
    types = {t["id"]: t for t in api.ok("get", "/module-types")["module_types"]}
    assert types["rack"]["creates_items"] is False
    code, body = api.post("/modules", {"name": "Rack", "type": "rack", "config": {}})
    assert code == 422 and body["error"]["fields"] == {
        "config.datacenter": "This field is required."
    }
    module = api.ok(
        "post",
        "/modules",
        {
            "name": "Rack",
            "type": "rack",
            "config": {"datacenter": "FRA1"},
            "department_id": department["id"],
        },
    )
    tariff = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Dedicated XL",
            "product_type": "dedicated",
            "price": "199",
            "internal_name": "ded-xl",
            "module_ids": [module["id"]],
        },
    )
    # the module says it cannot create the item: a person is asked to, and the tariff shows it
    items = api.ok("get", f"/tariffs/{tariff['id']}")["items"]
    assert items[0]["status"] == "manual"
    assert "cannot create items automatically" in items[0]["error"]
    tasks = api.ok("get", f"/tasks?department_id={department['id']}")["tasks"]
    assert tasks[0]["title"] == "Create item ded-xl on module Rack manually"
    api.ok("post", f"/tasks/{tasks[0]['id']}/close", {"fields": {}})
    assert api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "ready"

    client = api.ok("post", "/clients", {"name": "Eve", "email": "eve@example.com"})
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"])
    assert "racking a server in FRA1" in op["attempt_log"][0]["log"]
    service = wait_for(
        lambda: (s := api.ok("get", f"/services/{order['service_id']}"))["status"] == "active" and s
    )
    assert service["remote_id"] == f"rack-{op['id']}"
