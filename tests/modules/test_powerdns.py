"""The powerdns module against a real PowerDNS server (``powerdns`` fixture): what a zone
serves over DNS after each operation, ownership, templates, Test connection, the dns-01
helpers for the acme module, and the records on the service pages.

Every test has its own owner tag and domains; its zones are deleted afterwards (also when
it fails).
"""

import types
import uuid

import dns.message
import dns.query
import dns.rcode
import pytest

from app.db import database
from app.models import Attempt, Client, Email, Item, Operation, Service
from modules.base import ConfigProblem, OperationContext, PermanentError
from tests.support import free_port, html, login, make_client_login

TEMPLATE = """# the web tariff
@ A {ip}
@ AAAA {ipv6}
www CNAME @
mail A {ip}
@ MX 10 mail.{domain}
@ 300 TXT "v=spf1 mx -all"
_sip._tcp SRV 10 5 5060 sip.example.net
@ CAA 0 issue "letsencrypt.org"
"""


def rcode(powerdns, name, rdtype="SOA"):
    """The server's answer code for a query (NOERROR, NXDOMAIN, REFUSED...)."""
    reply = dns.query.udp(
        dns.message.make_query(name, rdtype), "127.0.0.1", port=powerdns.dns_port, timeout=3
    )
    return dns.rcode.to_text(reply.rcode())


def test_open_serves_the_zone_with_the_templates_records(pdns, powerdns):
    tariff = pdns.tariff(TEMPLATE)
    service_id, domain, op = pdns.open(tariff)
    assert op.status == "done", op.last_error
    q = powerdns.query
    (soa,) = q(domain, "SOA")
    assert soa.startswith("ns1.example.net. hostmaster.example.net. ")
    assert q(domain, "NS") == ["ns1.example.net.", "ns2.example.net."]
    assert q(domain, "A") == ["192.0.2.10"]
    assert q(domain, "AAAA") == ["2001:db8::10"]
    assert q(f"www.{domain}", "CNAME") == [f"{domain}."]
    assert q(f"mail.{domain}", "A") == ["192.0.2.10"]
    assert q(domain, "MX") == [f"10 mail.{domain}."]
    assert q(domain, "TXT") == ['"v=spf1 mx -all"']
    assert q(f"_sip._tcp.{domain}", "SRV") == ["10 5 5060 sip.example.net."]
    assert q(domain, "CAA") == ['0 issue "letsencrypt.org"']
    zone = pdns.zone(domain)
    assert zone["account"] == f"{pdns.tag}:service-{service_id}"
    assert zone["kind"] == "Native"
    txt = [s for s in zone["rrsets"] if s["type"] == "TXT"][0]
    assert txt["ttl"] == 300  # the line's own TTL; the others the default
    assert {s["ttl"] for s in zone["rrsets"] if s["type"] != "TXT"} == {3600}
    service = pdns.api.ok("get", f"/services/{service_id}")
    assert service["remote_id"] == f"{domain}."
    assert service["details"] == {
        "domain": domain,
        "nameservers": "ns1.example.net, ns2.example.net",
    }
    shown = {(r["name"], r["type"], r["content"]) for r in service["module_data"]["records"]}
    assert (f"www.{domain}.", "CNAME", f"{domain}.") in shown
    assert (f"{domain}.", "NS", "ns2.example.net.") in shown
    assert service["module_data"]["records"][0]["type"] == "SOA"
    with database.connection_context():
        (welcome,) = Email.select().where(Email.service == service_id)
    assert f"Domain: {domain}" in welcome.body
    assert "Name servers: ns1.example.net, ns2.example.net" in welcome.body


def test_suspend_stops_the_zone_answering_resume_brings_it_back_close_deletes_it(pdns, powerdns):
    tariff = pdns.tariff("@ A {ip}\nwww CNAME @")
    service_id, domain, op = pdns.open(tariff)
    assert op.status == "done", op.last_error
    assert rcode(powerdns, domain) == "NOERROR" and powerdns.query(domain, "A") == ["192.0.2.10"]

    assert pdns.request(service_id, "suspend").status == "done"
    for name, rdtype in ((domain, "SOA"), (domain, "A"), (f"www.{domain}", "A")):
        assert rcode(powerdns, name, rdtype) == "REFUSED", (name, rdtype)
    zone = pdns.zone(domain)  # the records are kept, disabled
    assert zone is not None and all(r["disabled"] for s in zone["rrsets"] for r in s["records"])
    assert pdns.api.ok("get", f"/services/{service_id}")["status"] == "suspended"

    assert pdns.request(service_id, "resume").status == "done"
    assert rcode(powerdns, domain) == "NOERROR"
    assert powerdns.query(f"www.{domain}", "A") == sorted([f"{domain}.", "192.0.2.10"])

    assert pdns.request(service_id, "close").status == "done"
    assert powerdns.api("GET", f"/zones/{domain}.").status_code == 404
    assert rcode(powerdns, domain) == "REFUSED"
    service = pdns.api.ok("get", f"/services/{service_id}")
    assert service["status"] == "deleted" and service["module_data"]["records"] == []


def test_close_of_a_zone_that_is_gone_already_is_done(pdns, powerdns):
    service_id, domain, _ = pdns.open(pdns.tariff("@ A {ip}"))
    assert powerdns.api("DELETE", f"/zones/{domain}.").status_code == 204
    op = pdns.request(service_id, "close")
    assert op.status == "done", op.last_error
    with database.connection_context():
        log = Attempt.get(Attempt.operation == op.id).log
    assert f"the zone {domain}. is gone already" in log


def test_a_zone_someone_else_owns_is_refused_permanently_and_left_alone(pdns, powerdns):
    tariff = pdns.tariff("@ A {ip}")
    domain = pdns.domain()
    theirs = [{"name": f"{domain}.", "type": "A", "ttl": 60, "records": [
        {"content": "203.0.113.5", "disabled": False}
    ]}]  # fmt: skip
    pdns.make_foreign_zone(domain, "someone-else", theirs)
    before = pdns.zone(domain)

    service_id, _, op = pdns.open(tariff, domain)
    assert op.status == "manual"
    assert f"the zone {domain}. already exists on PowerDNS and belongs to account" in (
        op.last_error
    )
    assert "'someone-else'" in op.last_error
    outcomes = [a["outcome"] for a in pdns.api.ok("get", f"/operations/{op.id}")["attempt_log"]]
    assert outcomes == ["permanent_error"]
    assert pdns.zone(domain) == before  # nothing changed
    assert powerdns.query(domain, "A") == ["203.0.113.5"]

    # another service of this very Provisor is "someone else" too
    second = pdns.domain()
    pdns.make_foreign_zone(second, f"{pdns.tag}:service-999999")
    _, _, op = pdns.open(tariff, second)
    assert op.status == "manual" and f"'{pdns.tag}:service-999999'" in op.last_error


def test_open_takes_over_the_zone_this_service_owns_and_makes_it_the_templates(pdns, powerdns, app):
    """An earlier attempt made the zone (and stale records): the next one adopts it."""
    tariff = pdns.tariff("@ A {ip}\nwww CNAME @")
    domain = pdns.domain()
    order = pdns.api.order(pdns.client["id"], tariff["id"], {"domain": domain})
    stale = [{"name": f"old.{domain}.", "type": "A", "ttl": 60, "records": [
        {"content": "198.51.100.1", "disabled": False}
    ]}]  # fmt: skip
    pdns.make_foreign_zone(domain, f"{pdns.tag}:service-{order['service_id']}", stale)
    code, paid = pdns.api.pay(order)
    op = pdns.engine.run(paid["operation_id"])
    assert op.status == "done", op.last_error
    assert powerdns.query(f"www.{domain}", "CNAME") == [f"{domain}."]
    assert rcode(powerdns, f"old.{domain}", "A") == "NXDOMAIN"
    assert powerdns.query(domain, "NS") == ["ns1.example.net.", "ns2.example.net."]
    with database.connection_context():
        log = Attempt.get(Attempt.operation == op.id).log
    assert "already belongs to this service" in log and "taking it over" in log


def test_change_tariff_applies_the_new_template_and_keeps_a_suspension(pdns, powerdns, app):
    small = pdns.tariff("@ A {ip}\nwww CNAME @", ip="192.0.2.10")
    big = pdns.tariff("@ A {ip}\nshop A {ip}\n@ MX 5 mx.example.net", ip="192.0.2.20")
    service_id, domain, _ = pdns.open(small)
    module = pdns.instance()
    with app.app_context(), database.connection_context():
        client = Client.get_by_id(pdns.client["id"])
        module.set_challenge(ctx_for(client), domain, "token-kept-over-the-change")

    op = pdns.request(service_id, "change_tariff", tariff_id=big["id"])
    assert op.status == "done", op.last_error
    assert powerdns.query(domain, "A") == ["192.0.2.20"]
    assert powerdns.query(f"shop.{domain}", "A") == ["192.0.2.20"]
    assert powerdns.query(domain, "MX") == ["5 mx.example.net."]
    assert rcode(powerdns, f"www.{domain}", "A") == "NXDOMAIN"  # not in the new template
    assert powerdns.query(f"_acme-challenge.{domain}", "TXT") == ['"token-kept-over-the-change"']
    service = pdns.api.ok("get", f"/services/{service_id}")
    assert service["tariff_id"] == big["id"]
    names = {(r["name"], r["type"]) for r in service["module_data"]["records"]}
    assert (f"shop.{domain}.", "A") in names and (f"www.{domain}.", "CNAME") not in names

    # a suspended zone moves to the other template and stays silent until resumed
    assert pdns.request(service_id, "suspend").status == "done"
    assert pdns.request(service_id, "change_tariff", tariff_id=small["id"]).status == "done"
    assert rcode(powerdns, domain, "A") == "REFUSED"
    assert pdns.request(service_id, "resume").status == "done"
    assert powerdns.query(f"www.{domain}", "CNAME") == [f"{domain}."]
    assert rcode(powerdns, f"shop.{domain}", "A") == "NXDOMAIN"


def test_the_record_template_is_checked_on_the_tariff(pdns, api):
    module_id = str(pdns.module["id"])

    def refused(settings):
        code, body = api.post(
            "/tariffs",
            {
                "name": "Bad",
                "product_type": "dns",
                "price": "1",
                "internal_name": f"bad-{uuid.uuid4().hex[:6]}",
                "module_ids": [pdns.module["id"]],
                "item_settings": {module_id: settings},
            },
        )
        assert code == 422, body
        return body["error"]["fields"]

    fields = refused({"records": "@ A {ip}\nwww CNAM @", "ip": "192.0.2.1"})
    assert fields == {
        f"item_settings.{module_id}.records": "Line 2 (www CNAM @): unknown record type CNAM; "
        "use one of A, AAAA, CNAME, MX, TXT, SRV, CAA, NS"
    }
    fields = refused({"records": "@ A {ip}"})
    assert "uses {ip}, but the IPv4 address" in fields[f"item_settings.{module_id}.records"]
    fields = refused({"records": "@ A {ip}", "ip": "300.1.1.1"})
    assert fields == {f"item_settings.{module_id}.ip": "Not an IPv4 address."}
    fields = refused({"records": "evil.example.org. A 192.0.2.1"})
    assert "names are relative to the zone" in fields[f"item_settings.{module_id}.records"]
    fields = refused({"records": "@ TXT {password}"})
    assert "unknown placeholder {password}" in fields[f"item_settings.{module_id}.records"]
    with database.connection_context():
        assert not Item.select().where(Item.internal_name.startswith("bad-")).exists()


def test_ensure_item_says_what_is_wrong_and_leaves_no_trial_zone(pdns, api, engine, powerdns):
    broken = api.ok(
        "post",
        "/modules",
        {
            "name": f"pdns-bad-key-{pdns.tag}",
            "type": "powerdns",
            "config": pdns.config(api_key="not-the-key"),
        },
        status=201,
    )
    tariff = api.ok(
        "post",
        "/tariffs",
        {
            "name": "DNS",
            "product_type": "dns",
            "price": "1",
            "internal_name": f"dns-{pdns.tag}",
            "module_ids": [broken["id"]],
        },
        status=201,
    )
    engine.run_all()
    (item,) = api.ok("get", f"/tariffs/{tariff['id']}")["items"]
    assert item["status"] != "ready"
    assert "PowerDNS refused the API key (401 Unauthorized)" in item["error"]
    # a good key: the template is tried on a trial zone, which is gone afterwards
    ok = pdns.tariff("@ A {ip}\n@ MX 10 mail.{domain}")
    assert api.ok("get", f"/tariffs/{ok['id']}")["items"][0]["status"] == "ready"
    leftovers = [z["name"] for z in powerdns.api("GET", "/zones").json() if "-check-" in z["name"]]
    assert leftovers == []


def test_test_connection_names_the_setting_at_fault(pdns, api):
    assert "PowerDNS Authoritative 4." in pdns.instance().check_config()
    with pytest.raises(ConfigProblem) as wrong_key:
        pdns.instance(api_key="not-the-key").check_config()
    assert wrong_key.value.field == "api_key"
    assert "PowerDNS refused the API key (401 Unauthorized)" in wrong_key.value.message
    with pytest.raises(ConfigProblem) as wrong_server:
        pdns.instance(server_id="nope").check_config()
    assert wrong_server.value.field == "server_id" and "it has: localhost" in str(
        wrong_server.value
    )
    with pytest.raises(ConfigProblem) as down:
        pdns.instance(api_url=f"http://127.0.0.1:{free_port()}").check_config()
    assert down.value.field == "api_url" and "Connection refused" in down.value.message
    # through the API: the module is not created, the field says why
    code, body = api.post(
        "/modules",
        {
            "name": "pdns-wrong",
            "type": "powerdns",
            "config": pdns.config(api_key="not-the-key"),
            "test_connection": True,
        },
    )
    assert code == 422 and "401 Unauthorized" in body["error"]["fields"]["config.api_key"]
    code, body = api.post(
        "/modules",
        {"name": "pdns-bad-ns", "type": "powerdns", "config": pdns.config(nameservers="ns1")},
    )
    assert code == 422
    assert body["error"]["fields"] == {
        "config.nameservers": "'ns1' is not a host name such as ns1.example.net"
    }


def ctx_for(client):
    """An operation context as the acme module's operations get one."""
    operation = types.SimpleNamespace(id=10**9, kind="open")
    return OperationContext(operation, 1, client=client)


def test_dns01_challenges_are_set_and_cleared_in_the_clients_zone(pdns, powerdns, app):
    service_id, domain, _ = pdns.open(pdns.tariff("@ A {ip}"))
    module = pdns.instance()
    name = f"_acme-challenge.{domain}"
    with app.app_context(), database.connection_context():
        client = Client.get_by_id(pdns.client["id"])
        ctx = ctx_for(client)
        assert module.set_challenge(ctx, domain, "first-value_1") == f"{domain}."
        module.set_challenge(ctx, f"*.{domain}", "second-value_2")  # a wildcard's base
        module.set_challenge(ctx, domain, "first-value_1")  # again: no second copy
        assert powerdns.query(name, "TXT") == ['"first-value_1"', '"second-value_2"']
        module.set_challenge(ctx, f"www.{domain}", "www-value")  # a name below the zone
        assert powerdns.query(f"_acme-challenge.www.{domain}", "TXT") == ['"www-value"']

        module.clear_challenge(ctx, domain, "first-value_1")
        assert powerdns.query(name, "TXT") == ['"second-value_2"']
        module.clear_challenge(ctx, domain, "second-value_2")
        assert rcode(powerdns, name, "TXT") == "NXDOMAIN"
        module.clear_challenge(ctx, domain, "second-value_2")  # gone already: fine
        assert f"{name}. TXT does not hold this value: nothing to clear" in ctx.log_text
        assert "> PATCH " in ctx.log_text and pdns.pdns.api_key not in ctx.log_text

        # another client's zone, a zone that is not Provisor's, no zone at all: refused
        other = Client.create(name="Eve", email=f"eve-{pdns.tag}@example.com")
        with pytest.raises(PermanentError, match="another client's DNS service"):
            module.set_challenge(ctx_for(other), domain, "stolen")
        foreign = pdns.domain()
        pdns.make_foreign_zone(foreign, "")
        with pytest.raises(PermanentError, match="is not one of this Provisor's DNS services"):
            module.set_challenge(ctx, foreign, "value")
        with pytest.raises(PermanentError, match="no zone on this PowerDNS contains"):
            module.set_challenge(ctx, "nowhere.example.invalid", "value")
        with pytest.raises(PermanentError, match="base64url"):
            module.set_challenge(ctx, domain, 'a" "b')
    assert powerdns.query(f"_acme-challenge.{foreign}", "TXT") == []
    assert rcode(powerdns, f"_acme-challenge.{domain}", "TXT") == "NXDOMAIN"


def test_the_client_and_staff_see_the_zones_records(pdns, app, api, client):
    login_id = make_client_login(app, email=f"carol-{pdns.tag}@example.com")
    service_id, domain, op = pdns.open(
        pdns.tariff("@ A {ip}\nwww CNAME @"), client={"id": login_id}
    )
    assert op.status == "done", op.last_error
    login(client, f"carol-{pdns.tag}@example.com", "carol-password")
    page = html(client.get(f"/my/services/{service_id}"))
    assert 'data-module-data="records"' in page
    assert f"<code>www.{domain}.</code>" in page and f"<code>{domain}.</code>" in page
    assert "CNAME" in page and "<code>192.0.2.10</code>" in page
    client.post("/logout")
    login(client, "admin@example.com", "admin-password")
    staff = html(client.get(f"/services/{service_id}"))
    assert 'data-module-data="records"' in staff and f"<code>www.{domain}.</code>" in staff
    assert "ns1.example.net. hostmaster.example.net." in staff


def test_a_template_cannot_inject_records_or_quotes(pdns, powerdns):
    """TXT text is quoted and escaped; what the server serves is exactly the text."""
    tariff = pdns.tariff('@ TXT say "hi" \\ bye\nx TXT "quoted; not a comment"')
    _, domain, op = pdns.open(tariff)
    assert op.status == "done", op.last_error
    reply = dns.query.udp(
        dns.message.make_query(domain, "TXT"), "127.0.0.1", port=powerdns.dns_port, timeout=3
    )
    (rrset,) = reply.answer
    assert [b"".join(r.strings) for r in rrset] == [b'say "hi" \\ bye']
    assert powerdns.query(f"x.{domain}", "TXT") == ['"quoted; not a comment"']


def test_operations_are_logged_with_the_key_masked(pdns, app):
    service_id, _, op = pdns.open(pdns.tariff("@ A {ip}"))
    with database.connection_context():
        logs = [a.log for a in Attempt.select().join(Operation).where(Operation.id == op.id)]
    assert any("> POST " in log and "< 201 Created" in log for log in logs), logs
    assert not any(pdns.pdns.api_key in log for log in logs)


def test_change_tariff_to_a_tariff_without_an_item_here_changes_nothing(pdns, powerdns, api):
    """No template to apply is not an empty template: the zone keeps its records."""
    service_id, domain, _ = pdns.open(pdns.tariff("@ A {ip}"))
    elsewhere = api.ok("post", "/modules", {"name": f"sbx-{pdns.tag}", "type": "sandbox"})
    other = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Elsewhere",
            "product_type": "dns",
            "price": "1",
            "internal_name": f"elsewhere-{pdns.tag}",
            "module_ids": [elsewhere["id"]],
        },
        status=201,
    )
    pdns.engine.run_all()
    before = pdns.zone(domain)
    # a tariff this module does not serve is refused when asked for
    code, body = api.post(f"/services/{service_id}/change_tariff", {"tariff_id": other["id"]})
    assert code == 422, body
    assert body["error"]["fields"]["tariff_id"].startswith(
        f"The tariff Elsewhere is not served by {pdns.module['name']}"
    )
    # and the module itself never applies "no template" (should one reach it anyway)
    instance = pdns.instance()
    with database.connection_context():
        service = Service.get_by_id(service_id)
        ctx = OperationContext(
            Operation(id=0, kind="change_tariff"),
            1,
            service=service,
            params={"tariff_internal_name": f"elsewhere-{pdns.tag}"},
            item_settings={},
        )
        with pytest.raises(PermanentError, match=f"'elsewhere-{pdns.tag}' has no item"):
            instance.change_tariff(ctx)
    assert pdns.zone(domain) == before and powerdns.query(domain, "A") == ["192.0.2.10"]


def test_zone_kind_master_and_the_default_soa_contact(pdns, api, powerdns):
    config = pdns.config(zone_kind="Master", default_ttl=600)
    del config["soa_contact"]
    module = api.ok(
        "post",
        "/modules",
        {"name": f"pdns-master-{pdns.tag}", "type": "powerdns", "config": config},
        status=201,
    )
    pdns.module = module
    service_id, domain, op = pdns.open(pdns.tariff("@ A {ip}"))
    assert op.status == "done", op.last_error
    zone = pdns.zone(domain)
    assert zone["kind"] == "Master"
    assert {s["ttl"] for s in zone["rrsets"]} == {600}
    (soa,) = powerdns.query(domain, "SOA")
    assert soa.startswith(f"ns1.example.net. hostmaster.{domain}. ")


def _one_attempt(app, op_id):
    """One attempt now, as a worker would run it: the operation and that attempt."""
    from app.services import operations

    with app.app_context(), database.connection_context():
        Operation.update(next_run_at=None).where(Operation.id == op_id).execute()
        operations.run(op_id)
        attempt = (
            Attempt.select().where(Attempt.operation == op_id).order_by(Attempt.number.desc()).get()
        )
        return Operation.get_by_id(op_id), attempt


def test_a_busy_or_failing_powerdns_is_temporary_and_a_lost_reply_is_taken_over(
    pdns, powerdns, app
):
    """Real faults of the real server. Its database held by another writer: the zone's POST
    hangs past the module's timeout (temporary), PowerDNS makes the zone once the lock goes
    (the reply the attempt never got), and the next attempt takes that zone over. Its
    backend failing (the records table gone for a moment): PowerDNS answers 500
    (temporary), and once it is back the operation completes."""
    import os
    import sqlite3

    from tests.support import wait_for

    tariff = pdns.tariff("@ A {ip}")
    domain = pdns.domain()
    order = pdns.api.order(pdns.client["id"], tariff["id"], {"domain": domain})
    code, paid = pdns.api.pay(order)
    assert code == 200, paid
    backend = sqlite3.connect(
        os.path.join(powerdns.folder, "pdns.sqlite3"), isolation_level=None, timeout=10
    )
    try:
        backend.execute("BEGIN IMMEDIATE")  # a writer holds the database: reads still work
        try:
            op, attempt = _one_attempt(app, paid["operation_id"])
        finally:
            backend.execute("ROLLBACK")
        assert attempt.outcome == "temporary_error", attempt.error
        assert op.status == "retry_wait" and op.failures == 1
        assert op.last_error.startswith("PowerDNS did not answer within 5 s (POST "), op.last_error
        assert "< timeout after 5 s" in attempt.log, attempt.log
        # the request went through once the lock was gone: a zone the attempt never heard of
        wait_for(lambda: pdns.zone(domain) is not None, timeout=20, message="the hung POST")
        assert pdns.zone(domain)["account"] == f"{pdns.tag}:service-{order['service_id']}"
        op = pdns.engine.run(op.id)
        assert op.status == "done", op.last_error
        with database.connection_context():
            log = Attempt.get((Attempt.operation == op.id) & (Attempt.number == 2)).log
        assert "already belongs to this service" in log and "taking it over" in log
        assert [z["name"] for z in powerdns.api("GET", "/zones").json()].count(f"{domain}.") == 1
        assert powerdns.query(domain, "A") == ["192.0.2.10"]

        # PowerDNS's own 500: its backend fails while the service is being suspended
        suspend = pdns.api.ok("post", f"/services/{order['service_id']}/suspend", {}, status=202)
        backend.execute("ALTER TABLE records RENAME TO records_away")
        try:
            op, attempt = _one_attempt(app, suspend["id"])
        finally:
            backend.execute("ALTER TABLE records_away RENAME TO records")
        assert attempt.outcome == "temporary_error", attempt.error
        assert op.status == "retry_wait", op.last_error
        assert op.last_error.startswith("PowerDNS answered 500: "), op.last_error
        op = pdns.engine.run(op.id)
        assert op.status == "done", op.last_error
        assert rcode(powerdns, domain) == "REFUSED"
    finally:
        backend.close()
