"""The cpanel module against a **simulated** WHM (``whm`` fixture:
tests/simulators/cpanel_sim.py, WHM API 1 over HTTPS on loopback, built from cPanel's
published documentation; no cPanel server runs here): what each operation leaves on the
simulated server, take-over and foreign accounts, the faults (down, slow past the timeout,
the documented error form, garbage), Test connection, import, and the simulator's own
strictness.
"""

import uuid

import pytest
import requests

from app.db import database
from app.models import Attempt, Email, Operation
from app.services import operations
from modules.base import ConfigProblem
from modules.cpanel import CpanelModule, account_username
from tests.support import wait_for

LIMITS = {"quota": 1024, "bwlimit": 10240, "maxaddon": 2, "maxsub": 0, "maxpop": 10}


def module_instance(whm, **extra):
    cleaned, errors = CpanelModule.validate_config(whm.config(**extra))
    assert not errors, errors
    return CpanelModule(cleaned)


class Hosting:
    """A cpanel module on the test's simulated WHM, its tariffs and orders; ``engine``
    runs the operations in the test's thread."""

    def __init__(self, api, engine, whm, **config):
        self.api, self.engine, self.whm = api, engine, whm
        tag = uuid.uuid4().hex[:8]
        department = api.ok("post", "/departments", {"name": f"Hosting {tag}"})
        self.module = api.ok(
            "post",
            "/modules",
            {
                "name": f"whm-{tag}",
                "type": "cpanel",
                "config": whm.config(**config),
                "department_id": department["id"],
                "retry_delay": 1,
                "test_connection": True,
            },
            status=201,
        )
        self.client = api.ok(
            "post", "/clients", {"name": "Hana", "email": f"hana-{tag}@example.com"}
        )

    def tariff(self, name=None, **limits):
        name = name or f"web-{uuid.uuid4().hex[:6]}"
        tariff = self.api.ok(
            "post",
            "/tariffs",
            {
                "name": f"Web {name}",
                "product_type": "hosting",
                "price": "5",
                "internal_name": name,
                "module_ids": [self.module["id"]],
                "item_settings": {str(self.module["id"]): {**LIMITS, **limits}},
            },
            status=201,
        )
        for op in self.engine.run_all():  # ensure_item
            assert op.status == "done", op.last_error
        return tariff

    def order(self, tariff, domain=None):
        domain = domain or f"shop{uuid.uuid4().hex[:8]}.example.com"
        order = self.api.order(self.client["id"], tariff["id"], {"domain": domain})
        code, paid = self.api.pay(order)
        assert code == 200, paid
        return order["service_id"], domain, paid["operation_id"]

    def open(self, tariff, domain=None):
        service_id, domain, op_id = self.order(tariff, domain)
        return service_id, domain, self.engine.run(op_id)

    def request(self, service_id, kind, **params):
        op = self.api.ok("post", f"/services/{service_id}/{kind}", params, status=202)
        return self.engine.run(op["id"])

    def log(self, op_id):
        with database.connection_context():
            return "\n".join(
                a.log or "" for a in Attempt.select().where(Attempt.operation == op_id)
            )


@pytest.fixture
def hosting(app, api, engine, whm):
    return Hosting(api, engine, whm)


def test_simulated_cpanel_open_creates_the_account_in_the_tariffs_package(hosting, whm):
    tariff = hosting.tariff()
    package = whm.packages[tariff["internal_name"]]
    assert package["quota"] == 1024 and package["bwlimit"] == 10240
    assert package["maxsub"] == "unlimited"  # 0: unlimited
    assert package["maxpop"] == 10 and package["maxsql"] == "unlimited"  # not set: WHM's

    service_id, domain, op = hosting.open(tariff)
    assert op.status == "done", op.last_error
    user = account_username(domain, service_id)
    account = whm.accounts[user]
    assert account["domain"] == domain and account["plan"] == tariff["internal_name"]
    assert account["owner"] == "root" and account["suspended"] == 0
    assert account["email"] == hosting.client["email"]
    service = hosting.api.ok("get", f"/services/{service_id}")
    assert service["remote_id"] == user and service["status"] == "active"
    assert service["details"] == {
        "domain": domain,
        "username": user,
        "password": account["password"],
        "panel_url": "https://127.0.0.1:2083/",
        "ip": "192.0.2.80",
        "nameservers": "ns1.hosting.example, ns2.hosting.example",
    }
    with database.connection_context():
        (welcome,) = Email.select().where(Email.service == service_id)
    for text in (domain, user, account["password"], "https://127.0.0.1:2083/", "192.0.2.80"):
        assert text in welcome.body
    # under the hosting type's label (0021_hosting_nameservers), not as a bare key
    assert "Name servers: ns1.hosting.example, ns2.hosting.example" in welcome.body
    log = hosting.log(op.id)
    assert f"/json-api/accountsummary?api.version=1&user={user}" in log
    assert "> POST https://127.0.0.1:" in log and "/json-api/createacct" in log
    assert "< 200 OK" in log
    assert whm.token not in log and account["password"] not in log
    assert "password=********" in log


def test_simulated_cpanel_suspend_passes_the_reason_resume_and_close(hosting, whm):
    service_id, domain, op = hosting.open(hosting.tariff())
    user = account_username(domain, service_id)
    op = hosting.request(service_id, "suspend", reason="Invoice 1042 unpaid")
    assert op.status == "done", op.last_error
    assert whm.accounts[user]["suspended"] == 1
    assert whm.accounts[user]["suspendreason"] == "Invoice 1042 unpaid"
    assert hosting.request(service_id, "resume").status == "done"
    assert whm.accounts[user]["suspended"] == 0
    assert hosting.request(service_id, "close").status == "done"
    assert user not in whm.accounts
    assert hosting.api.ok("get", f"/services/{service_id}")["status"] == "deleted"


def test_simulated_cpanel_change_tariff_and_password(hosting, whm):
    small, big = hosting.tariff(), hosting.tariff(quota=8192)
    assert whm.packages[big["internal_name"]]["quota"] == 8192
    service_id, domain, _ = hosting.open(small)
    user = account_username(domain, service_id)
    op = hosting.request(service_id, "change_tariff", tariff_id=big["id"])
    assert op.status == "done", op.last_error
    assert whm.accounts[user]["plan"] == big["internal_name"]
    before = whm.accounts[user]["password"]
    assert hosting.request(service_id, "change_password").status == "done"
    details = hosting.api.ok("get", f"/services/{service_id}")["details"]
    assert whm.accounts[user]["password"] == details["password"] != before


def test_simulated_cpanel_ensure_item_brings_an_existing_package_to_the_items_limits(
    hosting, whm, app
):
    name = f"web-{uuid.uuid4().hex[:6]}"
    whm.packages[name] = {"quota": 50, "maxpop": 1, "featurelist": "default"}
    hosting.tariff(name=name, quota=2048)
    assert whm.packages[name]["quota"] == 2048 and whm.packages[name]["maxpop"] == 10
    assert "editpkg" in whm.functions_called() and "addpkg" not in whm.functions_called()


def test_simulated_cpanel_an_account_of_that_name_for_another_domain_is_not_taken_over(
    hosting, whm, app
):
    tariff = hosting.tariff()
    service_id, domain, op_id = hosting.order(tariff)
    user = account_username(domain, service_id)
    whm.add_account(user, "someone-else.example.org", owner="root", password="theirs-12345")
    op = hosting.engine.run(op_id)
    assert op.status == "manual"
    assert "already exists for 'someone-else.example.org'" in op.last_error
    assert "not taken over" in op.last_error
    assert whm.accounts[user]["domain"] == "someone-else.example.org"
    assert whm.accounts[user]["password"] == "theirs-12345"  # untouched
    assert "createacct" not in whm.functions_called() and "passwd" not in whm.functions_called()


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("down", "cannot reach WHM"),
        ("slow", "did not answer createacct within 1 s"),
        ("5xx", "WHM answered 500 to createacct"),
        ("garbage", "is not JSON"),
        ("error", "WHM is busy (createacct): Sorry, the server is busy"),
    ],
)
def test_simulated_cpanel_faults_are_temporary_and_the_retry_makes_one_account(
    app, api, engine, whm, fault, said
):
    hosting = Hosting(api, engine, whm, timeout=1)
    tariff = hosting.tariff()
    service_id, domain, op_id = hosting.order(tariff)
    whm.slow_seconds = 2.5
    faulty = whm.faulty(fault, calls=["createacct"])
    with faulty, app.app_context(), database.connection_context():
        operations.run(op_id)
        op = Operation.get_by_id(op_id)
        attempt = Attempt.get(Attempt.operation == op_id)
    assert attempt.outcome == "temporary_error", attempt.error
    assert op.status == "retry_wait" and said in attempt.error, attempt.error
    if fault == "slow":  # the call Provisor gave up on goes on, and creates the account
        wait_for(lambda: any(a["domain"] == domain for a in whm.accounts.values()))
    op = engine.run(op_id)  # WHM is well again
    assert op.status == "done", op.last_error
    user = account_username(domain, service_id)
    mine = [a for a in whm.accounts.values() if a["domain"] == domain]
    assert [a["user"] for a in mine] == [user]
    if fault == "slow":  # the slow createacct did create it: the retry took it over
        assert "taking it over" in hosting.log(op_id)


def test_simulated_cpanel_a_refusal_in_the_documented_form_is_permanent_with_whms_words(
    app, api, engine, whm
):
    hosting = Hosting(api, engine, whm)
    _, _, op_id = hosting.order(hosting.tariff())
    whm.error_reason = "The domain is listed as a reserved name on this server."
    with whm.faulty("error", calls=["createacct"]):
        op = engine.run(op_id)
    assert op.status == "manual"
    assert (
        "WHM refused to create the account" in op.last_error
        and "The domain is listed as a reserved name on this server." in op.last_error
    )


def test_simulated_cpanel_check_config_names_the_setting_at_fault(app, whm):
    from tests.support import free_port

    assert "WHM 11.126" in module_instance(whm).check_config()
    cases = [
        ({"api_token": "WRONG" + "0" * 27}, "api_token", "403"),
        ({"ca_certificate": ""}, "ca_certificate", "not trusted"),
        ({"url": f"https://127.0.0.1:{free_port()}"}, "url", "cannot reach WHM"),
        ({"url": whm.url.replace("https", "http")}, "url", "cannot reach WHM"),
    ]
    for extra, field, said in cases:
        with pytest.raises(ConfigProblem) as caught:
            module_instance(whm, **extra).check_config()
        assert caught.value.field == field and said in caught.value.message, caught.value.message
    # a self-signed certificate without its PEM: only with verification off
    assert module_instance(whm, ca_certificate="", verify_tls=False).check_config()
    whm.slow_seconds = 2
    with whm.faulty("slow"), pytest.raises(ConfigProblem) as caught:
        module_instance(whm, timeout=1).check_config()
    assert caught.value.field == "timeout"


def test_simulated_cpanel_bad_settings_are_refused_with_the_field(api, whm):
    code, body = api.post(
        "/modules",
        {
            "name": "whm-bad",
            "type": "cpanel",
            "config": whm.config(ca_certificate="not a certificate", nameservers="ns1", timeout=0),
        },
    )
    assert code == 422, body
    fields = body["error"]["fields"]
    assert {"config.ca_certificate", "config.nameservers", "config.timeout"} <= set(fields)
    code, body = api.post(
        "/modules",
        {
            "name": "whm-bad2",
            "type": "cpanel",
            "config": whm.config(api_token="x" * 20),
            "test_connection": True,
        },
    )
    assert code == 422 and "config.api_token" in body["error"]["fields"], body


def test_simulated_cpanel_lists_its_accounts_and_one_is_imported(hosting, whm, engine):
    whm.add_account("legacy1", "legacy-site.example.net", plan="default")
    tariff = hosting.tariff()
    service_id, domain, _ = hosting.open(tariff)
    accounts = hosting.api.ok("get", f"/modules/{hosting.module['id']}/accounts")["accounts"]
    by_id = {a["remote_id"]: a for a in accounts}
    assert by_id[account_username(domain, service_id)]["bound_to"] == service_id
    legacy = by_id["legacy1"]
    assert legacy["bound_to"] is None and "legacy-site.example.net" in legacy["summary"]
    assert legacy["details"]["domain"] == "legacy-site.example.net"
    assert legacy["details"]["ip"] == "192.0.2.80"
    body = hosting.api.ok(
        "post",
        "/services/import",
        {
            "client_id": hosting.client["id"],
            "tariff_id": tariff["id"],
            "module_id": hosting.module["id"],
            "remote_id": "legacy1",
            "details": legacy["details"],
        },
        status=201,
    )
    op = hosting.request(body["id"], "suspend", reason="Moved to Provisor: check")
    assert op.status == "done", op.last_error
    assert whm.accounts["legacy1"]["suspendreason"] == "Moved to Provisor: check"


def test_account_usernames_follow_cpanels_rules():
    assert account_username("shop-example.com", 42) == "shopex42"
    assert account_username("123.example", 7) == "h1237"  # begins with a letter
    assert account_username("testing.example", 5) == "htestin5"  # never with "test"
    assert account_username("a.example", 1234567) == "a1234567"
    for domain, sid in (("xn--e1afmkfd.xn--p1ai", 99999999), ("x" * 63 + ".com", 10**15)):
        name = account_username(domain, sid)
        assert len(name) <= 16 and name[0].isalpha() and name.isalnum()


# --- the simulator itself is strict ------------------------------------------------------


def whm_get(whm, function, token=None, **params):
    return requests.get(
        f"{whm.url}/json-api/{function}",
        params=params,
        headers={"Authorization": f"whm root:{token or whm.token}"},
        verify=f"{whm.folder}/ca.pem",
        timeout=5,
    )


def test_simulated_whm_refuses_what_the_real_api_refuses(whm):
    reply = whm_get(whm, "version", token="WRONG", **{"api.version": "1"})
    assert reply.status_code == 403 and "Access denied" in reply.text
    ok = whm_get(whm, "version", **{"api.version": "1"}).json()
    assert ok["metadata"] == {"version": 1, "command": "version", "result": 1, "reason": "OK"}
    cases = [
        ("version", {}, "api.version=1"),
        ("no_such_function", {"api.version": "1"}, "Unknown app (no_such_function)"),
        ("suspendacct", {"api.version": "1"}, 'Missing parameter "user"'),
        ("suspendacct", {"api.version": "1", "user": "Bad-Name"}, '"user" must be'),
        ("createacct", {"api.version": "1", "username": "test1", "domain": "a.example"}, "test"),
        ("addpkg", {"api.version": "1", "name": "p", "quota": "lots"}, '"quota" must be'),
        ("addpkg", {"api.version": "1", "name": "p", "hasshell": "yes"}, "must be 1 or 0"),
        ("listaccts", {"api.version": "1", "colour": "red"}, '"colour" is not a parameter'),
        ("accountsummary", {"api.version": "1", "user": "nobody1"}, "does not exist"),
    ]
    for function, params, said in cases:
        body = whm_get(whm, function, **params).json()
        assert body["metadata"]["result"] == 0 and said in body["metadata"]["reason"], body
    assert whm.accounts == {} and whm.packages == {}
