"""The acme module's dns-01 challenge through the powerdns module, against real servers
(and http-01 with pebble looking the names up on the same PowerDNS).

pebble (Let's Encrypt's test CA) asks the session's PowerDNS (``pebble_dns01``): its
dns-01 check reads the very TXT records Provisor published in the client's zone, a zone
of a DNS service of that client on the same PowerDNS (the ``pdns`` fixture). The issued
certificate is parsed with cryptography; what PowerDNS serves is asked over DNS
(dnspython) and through its API.
"""

import time
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.models import AcmeAccount, Attempt, Client, Operation, utcnow
from app.services import certificates, operations
from modules.base import OperationContext
from modules.powerdns import PowerDNSModule
from tests.support import AcmeAccountClient, Pebble, db, free_port


class Killed(BaseException):
    """The worker died right there."""


def acme_module(api, engine, pebble, pdns, **config):
    """An acme module set to dns-01 through the test's powerdns module, a certificate
    tariff, and its item (the CA account) made."""
    settings = pebble.config(challenge="dns-01", dns_module_id=pdns.module["id"], **config)
    module = api.ok(
        "post",
        "/modules",
        {
            "name": f"acme-dns01-{uuid.uuid4().hex[:8]}",
            "type": "acme",
            "config": settings,
            "retry_delay": 1,
            "max_attempts": 5,
            "test_connection": True,
        },
        status=201,
    )
    tariff = api.ok(
        "post",
        "/tariffs",
        {
            "name": "TLS (dns-01)",
            "product_type": "certificate",
            "price": "5",
            "internal_name": f"tls-{uuid.uuid4().hex[:8]}",
            "module_ids": [module["id"]],
        },
        status=201,
    )
    for op in engine.run_all():  # ensure_item: the CA account
        assert op.status == "done", op.last_error
    return module, tariff


def hosted(pdns, client=None):
    """A domain hosted as an active DNS service of the client (default: the pdns one)."""
    domain = f"z{uuid.uuid4().hex[:12]}.example.com"
    if not hasattr(pdns, "dns_tariff"):
        pdns.dns_tariff = pdns.tariff("@ A {ip}")
    _, _, op = pdns.open(pdns.dns_tariff, domain, client=client)
    assert op.status == "done", op.last_error
    return domain


def order(api, tariff, client, names):
    """The client orders ``names`` and pays: (service id, open operation id)."""
    placed = api.order(client["id"], tariff["id"], {"domains": ", ".join(names)})
    code, paid = api.pay(placed)
    assert code == 200, paid
    return placed["service_id"], paid["operation_id"]


def txt(powerdns, name):
    """The TXT values PowerDNS serves for ``_acme-challenge.<name>`` (over DNS)."""
    return powerdns.query(f"_acme-challenge.{name}", "TXT")


def challenge_rrsets(powerdns, domain):
    """The ``_acme-challenge`` TXT rrsets of the zone, as PowerDNS's API lists them."""
    zone = powerdns.api("GET", f"/zones/{domain}.").json()
    return [
        s for s in zone["rrsets"] if s["type"] == "TXT" and s["name"].startswith("_acme-challenge")
    ]


def logs(app, op_id):
    with db(app):
        return [
            (a.outcome, a.log or "", a.error)
            for a in Attempt.select().where(Attempt.operation == op_id).order_by(Attempt.number)
        ]


def pebble_orders(app, pebble, config):
    """The URLs of the orders pebble holds for Provisor's account of these settings."""
    with db(app):
        identity = certificates.identity(
            config["directory_url"],
            config["email"],
            config.get("eab_kid"),
            config.get("eab_hmac_key"),
        )
        row = AcmeAccount.get(AcmeAccount.identity == identity)
        _, key = certificates.account_key(row.id)
    return AcmeAccountClient(pebble, key, row.url).orders()


def state_of(app, op_id):
    with db(app):
        return Operation.get_by_id(op_id).state or {}


def run_once(app, op_id):
    """One attempt now, as a worker would run it: the operation afterwards."""
    with db(app):
        Operation.update(next_run_at=None).where(Operation.id == op_id).execute()
        operations.run(op_id)
        return Operation.get_by_id(op_id)


def test_a_certificate_is_issued_over_dns01_with_the_records_in_the_clients_zone(
    app, api, engine, pdns, powerdns, pebble_dns01, monkeypatch
):
    domain = hosted(pdns)
    module, tariff = acme_module(api, engine, pebble_dns01, pdns)
    check = api.ok("post", f"/modules/{module['id']}/check")
    assert check["ok"] is True, check
    assert f"DNS module '{pdns.module['name']}': PowerDNS Authoritative 4." in check["message"]

    # what PowerDNS serves right after each record is published (before the CA checks)
    served = {}
    real_set = PowerDNSModule.set_challenge

    def set_and_look(self, ctx, name, value):
        zone = real_set(self, ctx, name, value)
        served[name] = (value, txt(powerdns, name))
        return zone

    monkeypatch.setattr(PowerDNSModule, "set_challenge", set_and_look)
    names = [domain, f"www.{domain}"]
    service_id, op_id = order(api, tariff, pdns.client, names)
    op = engine.run(op_id, max_checks=200)
    assert op.status == "done", op.last_error

    assert set(served) == set(names)
    for value, answer in served.values():
        assert answer == [f'"{value}"']  # the CA's view: exactly this value, over DNS
    # gone once the order was decided: over DNS, in the zone, in the operation's state
    assert txt(powerdns, domain) == [] and txt(powerdns, f"www.{domain}") == []
    assert challenge_rrsets(powerdns, domain) == []
    assert state_of(app, op_id)["dns01"] == []
    assert powerdns.query(domain, "A") == ["192.0.2.10"]  # the zone itself untouched

    # the certificate: its names, the key Provisor keeps for it, the chain to pebble's root
    with db(app):
        row = certificates.current(service_id)
        key_pem = certificates.private_key_pem(row)
    leaf, intermediate = x509.load_pem_x509_certificates(
        (row.certificate_pem + row.chain_pem).encode()
    )
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == names
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == domain
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)
    root = x509.load_pem_x509_certificate(pebble_dns01.root_pem().encode())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    service = api.ok("get", f"/services/{service_id}")
    assert service["status"] == "active"
    assert service["module_data"]["serial"] == format(leaf.serial_number, "x")

    # the attempt log: each record published, answered, removed; the API key masked
    text = "\n".join(log for _, log, _ in logs(app, op_id))
    for name in names:
        assert f"dns-01 TXT record for {name} published in {domain}." in text, text
        assert f"dns-01 challenge for {name} answered" in text
        assert f"dns-01 TXT record for {name} removed" in text
    assert f"> PATCH {powerdns.api_url}/api/v1/servers/localhost/zones/{domain}." in text
    assert powerdns.api_key not in text
    assert "http-01" not in text

    # wildcards: the order field accepts host names only (dns-01 could, the field cannot)
    code, body = api.post(
        "/orders",
        {"client_id": pdns.client["id"], "tariff_id": tariff["id"], "params": {
            "domains": f"{domain}, *.{domain}"}},
    )  # fmt: skip
    assert code == 422 and "'*." in body["error"]["fields"]["params.domains"], body

    # close revokes, and finds nothing left to remove
    close = api.ok("post", f"/services/{service_id}/close", {}, status=202)
    assert engine.run(close["id"]).status == "done"
    assert pebble_dns01.certificate_status(format(leaf.serial_number, "x")) == "Revoked"


def test_dns01_settings_are_refused_on_the_dns_module_field_saying_why(
    app, api, engine, pdns, pebble_dns01
):
    def refused(test_connection=True, **config):
        code, body = api.post(
            "/modules",
            {
                "name": f"acme-{uuid.uuid4().hex[:8]}",
                "type": "acme",
                "config": pebble_dns01.config(challenge="dns-01", **config),
                "test_connection": test_connection,
            },
        )
        assert code == 422, body
        return body["error"]["fields"]

    assert refused(test_connection=False) == {
        "config.dns_module_id": "dns-01 needs the DNS module that holds the clients' zones: "
        "choose a powerdns module."
    }
    assert refused(dns_module_id=999999) == {
        "config.dns_module_id": "There is no processing module #999999: choose a powerdns module."
    }
    sandbox = api.ok("post", "/modules", {"name": f"sbx-{pdns.tag}", "type": "sandbox"})
    assert refused(dns_module_id=sandbox["id"]) == {
        "config.dns_module_id": f"The module 'sbx-{pdns.tag}' (#{sandbox['id']}, type sandbox) "
        "cannot publish dns-01 TXT records: choose a powerdns module."
    }

    # PowerDNS not answering: Test connection says so, on the DNS module field
    dead = api.ok(
        "post",
        "/modules",
        {
            "name": f"pdns-dead-{pdns.tag}",
            "type": "powerdns",
            "config": pdns.config(api_url=f"http://127.0.0.1:{free_port()}", timeout=1),
        },
        status=201,
    )
    message = refused(dns_module_id=dead["id"])["config.dns_module_id"]
    assert message.startswith(f"the DNS module 'pdns-dead-{pdns.tag}' (#{dead['id']}): ")
    assert "cannot reach PowerDNS" in message and "Connection refused" in message
    assert message.endswith("(its setting api_url)")

    # a disabled DNS module: saved (to be enabled later), refused by Test connection and
    # by the operations, permanently and saying which module
    off = api.ok(
        "post",
        "/modules",
        {
            "name": f"pdns-off-{pdns.tag}",
            "type": "powerdns",
            "config": pdns.config(),
            "enabled": False,
        },
        status=201,
    )
    disabled = (
        f"The DNS module 'pdns-off-{pdns.tag}' (#{off['id']}) is disabled: enable it, or choose "
        "another powerdns module."
    )
    assert refused(dns_module_id=off["id"]) == {"config.dns_module_id": disabled}
    module = api.ok(
        "post",
        "/modules",
        {
            "name": f"acme-off-{pdns.tag}",
            "type": "acme",
            "config": pebble_dns01.config(challenge="dns-01", dns_module_id=off["id"]),
        },
        status=201,
    )
    check = api.ok("post", f"/modules/{module['id']}/check")
    assert check["ok"] is False and check["fields"] == {"config.dns_module_id": disabled}
    api.ok(
        "post",
        "/tariffs",
        {
            "name": "TLS",
            "product_type": "certificate",
            "price": "5",
            "internal_name": f"tls-off-{pdns.tag}",
            "module_ids": [module["id"]],
        },
        status=201,
    )
    (item_op,) = engine.run_all()
    assert item_op.status == "manual"
    assert item_op.last_error == f"setting dns_module_id: {disabled}"


def test_a_name_in_another_clients_zone_is_refused_and_nothing_stays_published(
    app, api, engine, pdns, powerdns, pebble_dns01
):
    mine = hosted(pdns)
    eve = api.ok("post", "/clients", {"name": "Eve", "email": f"eve-{pdns.tag}@example.com"})
    theirs = hosted(pdns, client=eve)
    _, tariff = acme_module(api, engine, pebble_dns01, pdns)

    _, op_id = order(api, tariff, pdns.client, [mine, f"www.{theirs}"])
    op = engine.run(op_id)
    assert op.status == "manual"
    assert (
        f"the zone {theirs}. belongs to another client's DNS service: "
        f"_acme-challenge.www.{theirs}. is not written there"
    ) in op.last_error
    assert [o for o, _, _ in logs(app, op_id)] == ["permanent_error"]
    # whatever was published before the refusal is gone again; the other zone untouched
    assert txt(powerdns, mine) == [] and txt(powerdns, f"www.{theirs}") == []
    assert challenge_rrsets(powerdns, mine) == [] and challenge_rrsets(powerdns, theirs) == []
    assert state_of(app, op_id)["dns01"] == []
    assert "challenge for" not in logs(app, op_id)[0][1]  # nothing answered at the CA

    # a zone that is not one of this Provisor's DNS services; a name in no zone at all
    foreign = f"f{uuid.uuid4().hex[:12]}.example.com"
    pdns.make_foreign_zone(foreign, "someone-else")
    _, op_id = order(api, tariff, pdns.client, [foreign])
    op = engine.run(op_id)
    assert op.status == "manual"
    assert f"the zone {foreign}. holding _acme-challenge.{foreign}. is not one of this " in (
        op.last_error
    )
    assert txt(powerdns, foreign) == []
    nowhere = f"n{uuid.uuid4().hex[:12]}.example.org"
    _, op_id = order(api, tariff, pdns.client, [nowhere])
    op = engine.run(op_id)
    assert op.status == "manual"
    assert f"no zone on this PowerDNS contains _acme-challenge.{nowhere}." in op.last_error


def test_powerdns_down_is_temporary_while_publishing_and_while_removing(
    app, api, engine, pdns, powerdns, pebble_dns01
):
    """PowerDNS stopped for real: publishing fails (retried), then the order completes,
    one order at the CA; stopped again once the CA has validated: the removal fails
    (retried) and the certificate waits for it."""
    domain = hosted(pdns)
    module, tariff = acme_module(api, engine, pebble_dns01, pdns)
    config = pebble_dns01.config()

    _, op_id = order(api, tariff, pdns.client, [domain])
    powerdns.stop()
    try:
        op = run_once(app, op_id)
    finally:
        powerdns.start()
    assert op.status == "retry_wait", op.last_error
    assert f"cannot reach PowerDNS at {powerdns.api_url}" in op.last_error
    assert state_of(app, op_id)["order"]  # the order is made and kept
    op = engine.run(op_id, max_checks=200)
    assert op.status == "done", op.last_error
    outcomes = [o for o, _, _ in logs(app, op_id)]
    assert outcomes[0] == "temporary_error" and outcomes[-1] == "done"
    assert len(pebble_orders(app, pebble_dns01, config)) == 1
    assert txt(powerdns, domain) == []

    # down once the CA has validated: the record cannot be removed yet
    service_id, op_id = order(api, tariff, pdns.client, [f"www.{domain}"])
    op = run_once(app, op_id)  # published and answered
    assert op.status == "polling", op.last_error
    url = state_of(app, op_id)["order"]
    with db(app):
        row = AcmeAccount.select().where(AcmeAccount.url.is_null(False)).get()
        _, key = certificates.account_key(row.id)
    ca = AcmeAccountClient(pebble_dns01, key, row.url)
    deadline = time.monotonic() + 20
    while ca.order(url)["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ca.order(url)["status"] == "ready"
    assert len(txt(powerdns, f"www.{domain}")) == 1
    powerdns.stop()
    try:
        op = run_once(app, op_id)
    finally:
        powerdns.start()
    assert op.status == "retry_wait", op.last_error
    assert op.last_error.startswith(f"removing the dns-01 TXT record of www.{domain}: ")
    assert "cannot reach PowerDNS" in op.last_error
    assert state_of(app, op_id)["dns01"]  # still listed: removed by the next attempt
    with db(app):
        assert certificates.current(service_id) is None  # not finalized before
    op = engine.run(op_id, max_checks=200)
    assert op.status == "done", op.last_error
    assert txt(powerdns, f"www.{domain}") == [] and challenge_rrsets(powerdns, domain) == []
    assert state_of(app, op_id)["dns01"] == []


def test_a_worker_killed_after_publishing_continues_the_same_order_and_cleans_up(
    app, api, engine, pdns, powerdns, pebble_dns01, monkeypatch
):
    domain = hosted(pdns)
    _, tariff = acme_module(api, engine, pebble_dns01, pdns)
    service_id, op_id = order(api, tariff, pdns.client, [domain, f"www.{domain}"])
    real_set = PowerDNSModule.set_challenge

    def set_then_die(self, ctx, name, value):
        real_set(self, ctx, name, value)
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(PowerDNSModule, "set_challenge", set_then_die)
        with pytest.raises(Killed), db(app):
            operations.run(op_id)
    state = state_of(app, op_id)
    (published,) = state["dns01"]  # listed before it was published
    assert txt(powerdns, published["domain"]) == [f'"{published["value"]}"']
    assert published["module"] == pdns.module["id"]
    with db(app):
        Operation.update(lease_until=utcnow() - timedelta(seconds=1)).where(
            Operation.id == op_id
        ).execute()
        assert operations.sweep()["reclaimed"] == 1
    op = engine.run(op_id, max_checks=200)
    assert op.status == "done", op.last_error
    orders = pebble_orders(app, pebble_dns01, pebble_dns01.config())
    assert orders == [state["order"]]  # the same order, continued
    assert engine.service(service_id).remote_id == orders[0]
    outcomes = [o for o, _, _ in logs(app, op_id)]
    assert outcomes[0] == "interrupted" and outcomes[-1] == "done"
    second = logs(app, op_id)[1][1]
    assert f"_acme-challenge.{published['domain']}. TXT already holds this value" in second
    assert txt(powerdns, domain) == [] and txt(powerdns, f"www.{domain}") == []
    assert challenge_rrsets(powerdns, domain) == []


def test_close_removes_the_records_an_operation_left_listed(
    app, api, engine, pdns, powerdns, pebble_dns01
):
    """An operation that ended before it could remove a value (PowerDNS down then, or
    cancelled after a worker died) still lists it: closing the service removes it."""
    domain = hosted(pdns)
    _, tariff = acme_module(api, engine, pebble_dns01, pdns)
    service_id, op_id = order(api, tariff, pdns.client, [domain])
    assert engine.run(op_id, max_checks=200).status == "done"
    with db(app):
        op = Operation.get_by_id(op_id)
        left = {"domain": domain, "value": "left-over_value", "module": pdns.module["id"]}
        op.state = {**op.state, "dns01": [left]}
        op.save()
    with db(app):
        ctx = OperationContext(
            SimpleNamespace(id=op_id, kind="open"), 9, client=Client.get_by_id(pdns.client["id"])
        )
        pdns.instance().set_challenge(ctx, domain, "left-over_value")
    assert txt(powerdns, domain) == ['"left-over_value"']
    close = api.ok("post", f"/services/{service_id}/close", {}, status=202)
    op = engine.run(close["id"])
    assert op.status == "done", op.last_error
    assert txt(powerdns, domain) == []
    text = logs(app, close["id"])[-1][1]
    assert "revoked" in text and f"dns-01 TXT record for {domain} removed" in text


def test_dns01_with_external_account_binding(app, api, engine, pdns, powerdns, tmp_path):
    pebble = Pebble(
        tmp_path / "pebble-eab", free_port(), eab=True, dns_server=f"127.0.0.1:{powerdns.dns_port}"
    ).start()
    try:
        domain = hosted(pdns)
        _, tariff = acme_module(api, engine, pebble, pdns)
        service_id, op_id = order(api, tariff, pdns.client, [domain, f"www.{domain}"])
        op = engine.run(op_id, max_checks=200)
        assert op.status == "done", op.last_error
        with db(app):
            row = AcmeAccount.select().where(AcmeAccount.url.is_null(False)).get()
            _, key = certificates.account_key(row.id)
        account = AcmeAccountClient(pebble, key, row.url)
        assert account.get(row.url).json()["externalAccountBinding"]  # bound
        assert api.ok("get", f"/services/{service_id}")["module_data"]["account"] == row.url
        assert txt(powerdns, domain) == [] and txt(powerdns, f"www.{domain}") == []
    finally:
        pebble.stop()


def test_a_record_the_ca_does_not_find_is_its_refusal_and_the_record_goes(
    app, api, engine, pdns, powerdns, pebble_dns01, monkeypatch
):
    """A wrong TXT value published: pebble reads it from PowerDNS and refuses the order
    (permanent, in its words); the value is removed and "Run now" would order anew."""
    domain = hosted(pdns)
    _, tariff = acme_module(api, engine, pebble_dns01, pdns)
    monkeypatch.setattr(challenges.DNS01, "validation", lambda self, key, **kw: "not-the-digest")
    _, op_id = order(api, tariff, pdns.client, [domain])
    op = engine.run(op_id, max_checks=200)
    assert op.status == "manual"
    assert op.last_error.startswith("the CA refused the order: ")
    assert op.last_error.endswith(f"[unauthorized] (failed: {domain})"), op.last_error
    assert txt(powerdns, domain) == [] and challenge_rrsets(powerdns, domain) == []
    assert op.state == {}
    text = "\n".join(log for _, log, _ in logs(app, op_id))
    assert f"dns-01 TXT record for {domain} removed" in text


def test_http01_with_pebble_asking_the_tests_powerdns_where_the_names_point(
    app, api, engine, pdns, powerdns, pebble_dns01
):
    """http-01 with pebble's ``-dnsserver`` at the tests' PowerDNS (not pebble-challtestsrv):
    the client's DNS service points its names at 127.0.0.1, pebble looks them up there and
    fetches each token from the running Provisor; a name no zone there holds cannot be
    looked up, so it is not validated (pebble asks PowerDNS and nothing else)."""
    web = pdns.tariff("@ A {ip}\nwww CNAME @", ip="127.0.0.1")
    _, domain, op = pdns.open(web)
    assert op.status == "done", op.last_error
    assert powerdns.query(domain, "A") == ["127.0.0.1"]
    module = api.ok(
        "post",
        "/modules",
        {
            "name": f"acme-http01-{uuid.uuid4().hex[:8]}",
            "type": "acme",
            "config": pebble_dns01.config(),  # the defaults: http-01, key type ec256
            "retry_delay": 1,
            "max_attempts": 5,
            "test_connection": True,
        },
        status=201,
    )
    tariff = api.ok(
        "post",
        "/tariffs",
        {
            "name": "TLS (http-01)",
            "product_type": "certificate",
            "price": "5",
            "internal_name": f"tls-{uuid.uuid4().hex[:8]}",
            "module_ids": [module["id"]],
        },
        status=201,
    )
    for op in engine.run_all():  # ensure_item: the CA account
        assert op.status == "done", op.last_error

    names = [domain, f"www.{domain}"]
    service_id, op_id = order(api, tariff, pdns.client, names)
    op = engine.run(op_id, max_checks=200)
    assert op.status == "done", op.last_error
    with db(app):
        row = certificates.current(service_id)
        key_pem = certificates.private_key_pem(row)
    leaf, intermediate = x509.load_pem_x509_certificates(
        (row.certificate_pem + row.chain_pem).encode()
    )
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == names
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(
        x509.load_pem_x509_certificate(pebble_dns01.root_pem().encode())
    )
    text = "\n".join(log for _, log, _ in logs(app, op_id))
    for name in names:
        assert f"http-01 challenge for {name} answered" in text, text
    assert "dns-01" not in text
    assert challenge_rrsets(powerdns, domain) == []  # nothing was published in the zone

    # a name in no zone of that PowerDNS: pebble cannot look it up, the order is invalid
    nowhere = f"nowhere{uuid.uuid4().hex[:10]}.example.com"
    assert powerdns.query(nowhere, "A") == []
    _, op_id = order(api, tariff, pdns.client, [nowhere])
    op = engine.run(op_id, max_checks=200)
    assert op.status == "manual", op.last_error
    assert op.last_error.startswith("the CA refused the order: "), op.last_error
    assert f'could not resolve URL "http://{nowhere}:' in op.last_error
