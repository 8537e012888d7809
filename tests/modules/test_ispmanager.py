"""The ispmanager module against a SIMULATED ISPmanager 6 panel (``ispmanager_sim``:
tests/simulators/ispmanager_sim.py, written from the vendor's published API documentation;
not a real panel — none can run here). What the panel holds after each operation, take-over
and refusal, the faults (down, slow, error answer, garbage), masking of the admin password,
Test connection, and the simulator's own strictness.
"""

from urllib.parse import quote, quote_plus

import pytest
import requests

from app.db import database
from app.models import Attempt, Email, Operation
from app.services import operations
from modules.ispmanager import ISPmanagerModule

ITEM = {"disk_quota_mib": 2048, "webdomains": 2, "mailboxes": 10}


def setup(api, engine, sim, config=None, item=None):
    """A module on the simulated panel, a tariff with its item (ensure_item run), a client."""
    _, module, tariff, client = api.catalog(
        "ispmanager",
        sim.config(**(config or {})),
        product_type="hosting",
        item_settings=ITEM if item is None else item,
        retry_delay=1,
    )
    engine.run_all()
    return module, tariff, client


def order(api, tariff, client, domain="shop.example.org"):
    placed = api.order(client["id"], tariff["id"], {"domain": domain})
    status, paid = api.pay(placed)
    assert status == 200, paid
    return placed["service_id"], paid["operation_id"]


def run_once(app, op_id):
    """One attempt of the operation: (operation, its attempts)."""
    with app.app_context(), database.connection_context():
        operations.run(op_id)
        op = Operation.get_by_id(op_id)
        attempts = list(Attempt.select().where(Attempt.operation == op_id).order_by(Attempt.id))
    return op, attempts


def logs(app):
    with app.app_context(), database.connection_context():
        texts = [(a.log or "") + (a.error or "") for a in Attempt.select()]
        texts += [op.last_error or "" for op in Operation.select()]
    return "\n".join(texts)


def panel_call(sim, **params):
    """A request to the simulated panel, as the admin unless ``authinfo`` is given."""
    form = {"out": "json", "authinfo": f"{sim.admin}:{sim.password}", **params}
    form = {k: v for k, v in form.items() if v is not None}
    reply = requests.post(f"{sim.url}/ispmgr", data=form, verify=_ca(sim), timeout=5)
    return reply


def _ca(sim):
    from modules.base import pem_file

    return pem_file(sim.ca_pem)


def test_simulated_ispmanager_ensure_item_creates_the_user_template(
    app, api, engine, ispmanager_sim
):
    sim = ispmanager_sim
    module, tariff, _ = setup(api, engine, sim)
    assert api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "ready"
    preset = sim.presets[tariff["internal_name"]]
    assert preset["limit_quota"] == "2048"
    assert preset["limit_webdomains"] == "2"
    assert preset["limit_emails"] == "10"
    assert preset["limit_db"] == ""  # empty: no limit
    # a template that exists already (made by hand) is set to the item's limits
    sim.presets["made-by-hand"] = {"limit_quota": "1"}
    other = api.ok(
        "post",
        "/tariffs",
        {
            "name": "By hand",
            "product_type": "hosting",
            "price": "3",
            "internal_name": "made-by-hand",
            "module_ids": [module["id"]],
            "item_settings": {str(module["id"]): {"disk_quota_mib": 500}},
        },
    )
    engine.run_all()
    assert api.ok("get", f"/tariffs/{other['id']}")["items"][0]["status"] == "ready"
    assert sim.presets["made-by-hand"]["limit_quota"] == "500"
    assert [p.get("elid") for p in sim.calls_of("preset.edit")] == [None, "made-by-hand"]


def test_simulated_ispmanager_open_creates_the_user_and_its_site(app, api, engine, ispmanager_sim):
    sim = ispmanager_sim
    module, tariff, client = setup(api, engine, sim, config={"panel_url": "https://cp.example.net"})
    service_id, op_id = order(api, tariff, client)
    op = engine.run(op_id)
    assert op.status == "done", op.last_error
    name = f"pv{service_id}"
    user = sim.users[name]
    assert user["comment"] == f"provisor:service-{service_id}"
    assert user["preset"] == tariff["internal_name"]
    assert user["limits"]["limit_quota"] == "2048"  # the template's limits
    assert user["active"] == "on"
    assert sim.webdomains["shop.example.org"] == {
        "name": "shop.example.org",
        "owner": name,
        "ipaddr": "192.0.2.20",  # the panel's first address (no ip setting)
        "email": "webmaster@shop.example.org",
    }
    service = api.ok("get", f"/services/{service_id}")
    assert service["remote_id"] == name
    details = service["details"]
    assert details["username"] == name
    assert details["domain"] == "shop.example.org"
    assert details["ip"] == "192.0.2.20"
    assert details["panel_url"] == "https://cp.example.net"
    assert details["password"] == user["passwd"]
    # the client's password logs in to the panel
    who = panel_call(sim, func="whoami", authinfo=f"{name}:{details['password']}").json()
    assert who["doc"]["user"]["$"] == name
    with database.connection_context():
        (welcome,) = Email.select().where(Email.service == service_id)
    for line in (f"Username: {name}", "Domain: shop.example.org", "IP address: 192.0.2.20"):
        assert line in welcome.body
    assert "https://cp.example.net" in welcome.body


def test_simulated_ispmanager_takes_over_its_own_user_refuses_someone_elses(
    app, api, engine, ispmanager_sim
):
    sim = ispmanager_sim
    _, tariff, client = setup(api, engine, sim)
    # someone else's user with the name this service would get: refused, left alone
    service_id, op_id = order(api, tariff, client, "one.example.org")
    sim.add_user(f"pv{service_id}", comment="someone-else")
    op, attempts = run_once(app, op_id)
    assert op.status == "manual", op.last_error
    assert "comment 'someone-else'" in op.last_error
    assert attempts[-1].outcome == "permanent_error"
    assert sim.users[f"pv{service_id}"]["passwd"] == "someone-elses-password"
    assert "one.example.org" not in sim.webdomains
    # a site of the domain that is someone else's: refused before anything is created
    sim.add_user("otheruser", comment="")
    sim.webdomains["two.example.org"] = {
        "name": "two.example.org",
        "owner": "otheruser",
        "ipaddr": "192.0.2.20",
        "email": None,
    }
    service_id, op_id = order(api, tariff, client, "two.example.org")
    op, _ = run_once(app, op_id)
    assert op.status == "manual"
    assert "belongs to the user 'otheruser'" in op.last_error
    assert f"pv{service_id}" not in sim.users
    # this service's own user (an attempt died after creating it): taken over, one user
    service_id, op_id = order(api, tariff, client, "three.example.org")
    sim.add_user(f"pv{service_id}", comment=f"provisor:service-{service_id}")
    op = engine.run(op_id)
    assert op.status == "done", op.last_error
    user = sim.users[f"pv{service_id}"]
    details = api.ok("get", f"/services/{service_id}")["details"]
    assert user["passwd"] == details["password"] != "someone-elses-password"
    assert user["preset"] == tariff["internal_name"]
    assert sim.webdomains["three.example.org"]["owner"] == f"pv{service_id}"


def test_simulated_ispmanager_manages_the_user(app, api, engine, ispmanager_sim):
    sim = ispmanager_sim
    module, tariff, client = setup(api, engine, sim)
    bigger = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Hosting XL",
            "product_type": "hosting",
            "price": "20",
            "internal_name": f"{tariff['internal_name']}-xl",
            "module_ids": [module["id"]],
            "item_settings": {str(module["id"]): {"disk_quota_mib": 8192}},
        },
    )
    engine.run_all()
    service_id, op_id = order(api, tariff, client)
    assert engine.run(op_id).status == "done"
    name = f"pv{service_id}"

    def do(kind, params=None):
        op = api.ok("post", f"/services/{service_id}/{kind}", params or {}, status=202)
        done = engine.run(op["id"])
        assert done.status == "done", (kind, done.last_error)

    do("suspend")
    assert sim.users[name]["active"] == "off"
    do("resume")
    assert sim.users[name]["active"] == "on"
    do("change_tariff", {"tariff_id": bigger["id"]})
    assert sim.users[name]["preset"] == bigger["internal_name"]
    assert sim.users[name]["limits"]["limit_quota"] == "8192"
    before = sim.users[name]["passwd"]
    do("change_password")
    details = api.ok("get", f"/services/{service_id}")["details"]
    assert sim.users[name]["passwd"] == details["password"] != before
    do("close")
    assert name not in sim.users and "shop.example.org" not in sim.webdomains
    text = logs(app)
    for secret in (sim.password, quote_plus(sim.password), quote(sim.password, safe=""), before):
        assert secret not in text
    assert "authinfo=********" in text and "passwd=********" in text


@pytest.mark.parametrize(
    "fault, words",
    [
        ("down", "cannot reach ISPmanager"),
        ("slow", "did not answer within 1 s"),
        ("error", "Internal error: the panel could not finish"),
        ("busy", "another operation is running"),
        ("garbage", "is not the API's JSON document"),
        ("unavailable", "ISPmanager answered 503"),
    ],
)
def test_simulated_ispmanager_faults_are_temporary(app, api, engine, ispmanager_sim, fault, words):
    sim = ispmanager_sim
    _, tariff, client = setup(api, engine, sim, config={"timeout": 1})
    service_id, op_id = order(api, tariff, client)
    if fault == "down":
        sim.down()
    elif fault == "slow":
        sim.fault, sim.slow_seconds = "slow", 2.5
    elif fault == "busy":
        sim.fault, sim.fault_error = "error", ("busy", "user", "another operation is running")
    else:
        sim.fault = fault
    op, attempts = run_once(app, op_id)
    assert attempts[-1].outcome == "temporary_error", attempts[-1].error
    assert op.status == "retry_wait" and words in op.last_error
    # the panel back: the next attempt opens the service, one user
    if fault == "down":
        sim.up()
    sim.fault = None
    op = engine.run(op_id)
    assert op.status == "done", op.last_error
    assert [u for u in sim.users.values() if u["comment"] == f"provisor:service-{service_id}"]
    assert len(sim.users) == 1


def test_simulated_ispmanager_open_that_failed_halfway_takes_over_its_user(
    app, api, engine, ispmanager_sim
):
    """The user was made, the web site was not (the panel failed): the next attempt takes
    the user over (same password) and makes the site: one user, one site."""
    sim = ispmanager_sim
    _, tariff, client = setup(api, engine, sim)
    service_id, op_id = order(api, tariff, client)
    sim.fault, sim.fault_only = "error", "webdomain.edit"
    op, attempts = run_once(app, op_id)
    assert attempts[-1].outcome == "temporary_error", attempts[-1].error
    name = f"pv{service_id}"
    first_password = sim.users[name]["passwd"]
    assert sim.webdomains == {}
    sim.fault = sim.fault_only = None
    op = engine.run(op_id)
    assert op.status == "done", op.last_error
    assert list(sim.users) == [name] and list(sim.webdomains) == ["shop.example.org"]
    details = api.ok("get", f"/services/{service_id}")["details"]
    assert details["password"] == first_password == sim.users[name]["passwd"]
    assert [p["name"] for p in sim.calls_of("user.edit") if "name" in p] == [name]


def test_simulated_ispmanager_module_form(app, client, admin, ispmanager_sim):
    from tests.support import html

    fieldset = html(client.get("/catalog/modules/config-fields?type=ispmanager"))
    assert "CA certificate (PEM)" in fieldset and "<textarea" in fieldset
    assert 'type="password"' in fieldset and 'name="config.password"' in fieldset
    form = {
        "name": "ISPmanager",
        "type": "ispmanager",
        **{f"config.{k}": v for k, v in ispmanager_sim.config().items()},
        "config.verify_tls": "1",
        "retry_delay": "60",
        "max_attempts": "4",
        "enabled": "1",
    }
    refused = client.post("/catalog/modules/new", data={**form, "config.url": "http://x:1500"})
    assert refused.status_code == 422
    assert "https:// only" in html(refused)
    created = client.post("/catalog/modules/new", data=form)
    assert created.status_code == 302, html(created)


def test_simulated_ispmanager_refusals_are_permanent_with_the_panels_words(
    app, api, engine, ispmanager_sim
):
    sim = ispmanager_sim
    _, tariff, client = setup(api, engine, sim)
    _, op_id = order(api, tariff, client)
    sim.fault, sim.fault_error = "error", ("value", "passwd", "The password is too weak")
    op, attempts = run_once(app, op_id)
    assert [a.outcome for a in attempts] == ["permanent_error"]
    assert op.status == "manual" and "The password is too weak" in op.last_error
    # bad credentials: permanent, saying which settings to check
    sim.fault = None
    _, tariff, client = setup(api, engine, sim, config={"password": "wrong-password"})
    _, op_id = order(api, tariff, client, "other.example.org")
    op, _ = run_once(app, op_id)
    assert op.status == "manual"
    assert "Invalid username or password" in op.last_error
    assert "username and password" in op.last_error


def module(sim, **config):
    cleaned, errors = ISPmanagerModule.validate_config(sim.config(**config))
    assert errors == {}
    return ISPmanagerModule(cleaned)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_simulated_ispmanager_check_config_names_the_setting(ispmanager_sim):
    sim = ispmanager_sim
    assert "ISPmanager answers as root" in module(sim).check_config()
    assert "192.0.2.21" in module(sim, ip="192.0.2.21").check_config()
    # without a CA the self-signed certificate is refused, unless verification is off
    assert module(sim, ca_certificate="", verify_tls=False).check_config()
    cases = [
        ({"password": "wrong"}, "password", "Invalid username or password"),
        ({"ca_certificate": ""}, "ca_certificate", "not trusted"),
        ({"ip": "198.51.100.7"}, "ip", "192.0.2.20, 192.0.2.21"),
        ({"url": sim.url.replace(str(sim.port), "1")}, "url", "cannot reach"),
    ]
    sim.add_user("client1", password="client-password")
    cases.append(({"username": "client1", "password": "client-password"}, "username", "denied"))
    for config, field, words in cases:
        with pytest.raises(Exception) as caught:
            module(sim, **config).check_config()
        assert caught.value.field == field, (config, caught.value)
        assert words in caught.value.message
    sim.fault, sim.slow_seconds = "slow", 2.5
    with pytest.raises(Exception) as caught:
        module(sim, timeout=1).check_config()
    assert caught.value.field == "timeout"


def test_simulated_ispmanager_settings_are_checked(api):
    code, body = api.post(
        "/modules",
        {
            "name": "panel",
            "type": "ispmanager",
            "config": {"url": "http://panel.example.net:1500", "password": "x", "user_prefix": "9"},
        },
    )
    assert code == 422, body
    assert {"config.url", "config.user_prefix"} <= set(body["error"]["fields"])


def test_simulated_ispmanager_simulator_is_strict(ispmanager_sim):
    sim = ispmanager_sim

    def error(**params):
        reply = panel_call(sim, **params)
        assert reply.status_code == 200
        doc = reply.json()["doc"]
        return doc["error"]["$type"], doc["error"]["$object"], doc["error"]["msg"]["$"]

    assert error(func="user.frobnicate")[:2] == ("missed", "func")
    assert error(func="user", authinfo="root:wrong")[0] == "auth"
    assert error(func="user", authinfo=None)[0] == "auth"
    assert error(func="user", out="xml")[:2] == ("value", "out")
    assert error(func="user", colour="red")[:2] == ("value", "colour")
    assert error(func="user.edit", sok="ok", name="bob", passwd="secret1")[:2] == (
        "value",
        "confirm",
    )
    assert error(func="user.edit", sok="ok", passwd="secret1", confirm="secret1")[:2] == (
        "empty",
        "name",
    )
    assert error(func="preset.edit", sok="ok", name="t1", limit_quota="lots")[:2] == (
        "value",
        "limit_quota",
    )
    assert error(func="user.suspend", elid="nobody")[:2] == ("missed", "user")
    assert error(
        func="user.edit", sok="ok", name="bob", passwd="secret1", confirm="secret1", preset="none"
    )[:2] == ("missed", "preset")
    twice = requests.post(
        f"{sim.url}/ispmgr?func=user",
        data={"func": "user", "out": "json", "authinfo": f"root:{sim.password}"},
        verify=_ca(sim),
        timeout=5,
    ).json()
    assert twice["doc"]["error"]["$object"] == "func"
    assert requests.get(f"{sim.url}/manager", verify=_ca(sim), timeout=5).status_code == 404
    ok = panel_call(sim, func="preset.edit", sok="ok", name="t1", limit_quota="100").json()
    assert ok == {"doc": {"ok": {}, "id": {"$": "t1"}}}
    assert panel_call(sim, func="preset").json()["doc"]["elem"][0]["limit_quota"] == {"$": "100"}
    assert sim.users == {}  # nothing refused changed anything
