"""The epp module against a simulated EPP registry (``tests/simulators/epp_sim.py``: a
strict EPP server over TLS built from RFC 5730-5734 that validates every frame against the
RFCs' schemas; not a real registry). The conformance suite runs it too (backend ``epp``).
"""

import socket
import ssl
import struct
from datetime import timedelta

import pytest

from app.db import database
from app.models import Attempt, Operation, ProductType, Service, utcnow
from app.services import mail, operations
from tests.support import login


class Killed(BaseException):
    """The worker died where the result would have been recorded."""


def setup(api, engine, registry, years=2, **config):
    _, module, tariff, client = api.catalog(
        "epp",
        {**registry.config(), **config},
        product_type="domain",
        item_settings={"years": years},
        retry_delay=1,
    )
    engine.run_all()  # ensure_item: the registrar login works
    return module, tariff, client


def order(api, tariff, client, name):
    placed = api.order(client["id"], tariff["id"], {"domain": name})
    status, paid = api.pay(placed)
    assert status == 200, paid
    return placed["service_id"], paid["operation_id"]


def attempt_logs(app):
    with app.app_context(), database.connection_context():
        return [(a.log or "") + (a.error or "") for a in Attempt.select()]


def test_simulated_epp_open_registers_the_domain_for_the_client(app, api, engine, epp_registry):
    sim = epp_registry.sim
    _, tariff, client = setup(api, engine, epp_registry, years=2)
    service_id, op_id = order(api, tariff, client, "alice-shop.com")
    assert engine.run(op_id).status == "done"
    service = engine.service(service_id)
    domain = sim.domains["alice-shop.com"]
    # registered by this login, for the item's two years, to the client's own contact
    assert domain["clID"] == epp_registry.client_id
    assert domain["exDate"].year == domain["crDate"].year + 2
    contact = sim.contacts[domain["registrant"]]
    assert domain["registrant"] == f"pv{client['id']}"
    assert (contact["email"], contact["city"], contact["cc"]) == (client["email"], "Aarhus", "DK")
    assert domain["ns"] == ["ns1.dns-host.invalid", "ns2.dns-host.invalid"]
    assert set(sim.hosts) == {"ns1.dns-host.invalid", "ns2.dns-host.invalid"}
    # what the client needs: the name, its name servers, expiry and the auth code
    assert service.remote_id == "alice-shop.com"
    assert service.details["domain"] == "alice-shop.com"
    assert service.details["nameservers"] == "ns1.dns-host.invalid, ns2.dns-host.invalid"
    assert service.details["expires_on"] == domain["exDate"].date().isoformat()
    assert service.details["auth_code"] == domain["pw"] and len(domain["pw"]) >= 12
    assert service.expires_at == domain["exDate"].replace(tzinfo=None)
    # over TLS with the registrar's client certificate; secrets never logged
    assert sim.client_certs
    logs = "\n".join(attempt_logs(app))
    assert "domain:create alice-shop.com (2 y)" in logs
    for secret in (domain["pw"], epp_registry.password, contact["pw"]):
        assert secret not in logs
    with app.app_context(), database.connection_context():
        fields = ProductType.get(ProductType.code == "domain").detail_fields
        _, welcome = mail.render_welcome(Service.get_by_id(service_id))
    for shown in ("alice-shop.com", domain["pw"], domain["exDate"].date().isoformat()):
        assert shown in welcome  # the welcome email tells the client
    assert {"name": "auth_code", "secret": True}.items() <= (
        next(f for f in fields if f["name"] == "auth_code").items()
    )


def _recv(conn, count):
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        assert chunk, "the simulator closed the connection"
        data += chunk
    return data


def _read(conn):
    (length,) = struct.unpack(">I", _recv(conn, 4))
    return _recv(conn, length - 4).decode()


def _frame(conn, payload):
    conn.sendall(struct.pack(">I", len(payload) + 4) + payload)
    return _read(conn)


COMMAND = (
    '<?xml version="1.0" encoding="UTF-8"?><epp xmlns="urn:ietf:params:xml:ns:epp-1.0">'
    "<command>{}<clTRID>test-1</clTRID></command></epp>"
)
CHECK = (
    '<check><domain:check xmlns:domain="urn:ietf:params:xml:ns:domain-1.0">'
    "<domain:{tag}>example.com</domain:{tag}></domain:check></check>"
)


def test_simulated_epp_frames_are_validated_against_the_rfc_schemas(epp_registry):
    """What a real registry refuses, the simulator refuses: 2001 for what is not EPP,
    2002 before login, 2200 for a wrong password."""
    sim = epp_registry.sim
    context = ssl.create_default_context(cadata=sim.cert_pem)
    with (
        socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        assert "<greeting>" in _read(conn)
        answer = _frame(conn, b"<epp><command>not closed")
        assert 'code="2001"' in answer and "not well-formed" in answer
        answer = _frame(conn, COMMAND.format(CHECK.format(tag="nam")).encode())
        assert 'code="2001"' in answer and "schema" in answer
        answer = _frame(conn, COMMAND.format(CHECK.format(tag="name")).encode())
        assert 'code="2002"' in answer and "log in first" in answer
        login_xml = (
            f"<login><clID>{epp_registry.client_id}</clID><pw>wrong-pw</pw><options>"
            "<version>1.0</version><lang>en</lang></options><svcs>"
            "<objURI>urn:ietf:params:xml:ns:domain-1.0</objURI></svcs></login>"
        )
        assert 'code="2200"' in _frame(conn, COMMAND.format(login_xml).encode())
    assert sim.logins == 0 and sim.commands() == []


def test_simulated_epp_a_connection_dropped_after_create_is_taken_over(
    app, api, engine, epp_registry
):
    sim = epp_registry.sim
    _, tariff, client = setup(api, engine, epp_registry)
    service_id, op_id = order(api, tariff, client, "dropped.com")
    sim.drop_after_create = True
    with app.app_context(), database.connection_context():
        operations.run(op_id)
        first = Operation.get_by_id(op_id)
    assert first.status == "retry_wait", first.last_error
    assert "closed the connection" in first.last_error
    assert sim.domains["dropped.com"]["clID"] == epp_registry.client_id  # it was committed
    assert engine.run(op_id).status == "done"
    assert len(sim.commands("create", "domain")) == 1  # taken over, not created twice
    service = engine.service(service_id)
    # the auth code the first attempt sent is the service's
    assert service.details["auth_code"] == sim.domains["dropped.com"]["pw"]
    assert "taking it over" in "\n".join(attempt_logs(app))


def test_simulated_epp_a_pending_create_is_polled_until_the_registry_confirms(
    app, api, engine, epp_registry
):
    sim = epp_registry.sim
    sim.pending, sim.pending_infos = True, 3
    _, tariff, client = setup(api, engine, epp_registry)
    service_id, op_id = order(api, tariff, client, "pending.com")
    with app.app_context(), database.connection_context():
        operations.run(op_id)
        assert Operation.get_by_id(op_id).status == "polling"
    assert engine.run(op_id).status == "done"
    assert "pendingCreate" not in sim.domains["pending.com"]["status"]
    assert len(sim.commands("info", "domain")) >= 3
    assert engine.service(service_id).status == "active"


def test_simulated_epp_renew_adds_one_period_even_when_retried(
    app, api, engine, epp_registry, monkeypatch
):
    sim = epp_registry.sim
    _, tariff, client = setup(api, engine, epp_registry, years=1)
    service_id, op_id = order(api, tariff, client, "renewed.com")
    assert engine.run(op_id).status == "done"
    before = sim.domains["renewed.com"]["exDate"]
    renew = api.ok("post", f"/services/{service_id}/renew", {}, status=202)

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(operations, "_record_result", die)
        with pytest.raises(Killed), app.app_context(), database.connection_context():
            operations.run(renew["id"])
    assert sim.domains["renewed.com"]["exDate"].year == before.year + 1  # renewed once
    with app.app_context(), database.connection_context():
        Operation.update(lease_until=utcnow() - timedelta(seconds=1)).where(
            Operation.id == renew["id"]
        ).execute()
        assert operations.sweep()["reclaimed"] == 1
    assert engine.run(renew["id"]).status == "done"
    after = sim.domains["renewed.com"]["exDate"]
    assert after.year == before.year + 1, "the retry renewed a second time"
    assert len(sim.commands("renew", "domain")) == 1
    service = engine.service(service_id)
    assert service.expires_at == after.replace(tzinfo=None)
    assert service.details["expires_on"] == after.date().isoformat()


@pytest.mark.parametrize(
    "fault, outcome, words",
    [
        ({"slow": 2.5}, "temporary_error", "did not answer"),
        ({"error": 2400}, "temporary_error", "2400 Command failed"),
        ({"error": 2502}, "temporary_error", "2502 Session limit exceeded"),
        ({"garbage": True}, "temporary_error", "is not EPP"),
        ({"error": 2304}, "permanent_error", "2304 Object status prohibits operation"),
        ({"error": 2306}, "permanent_error", "2306 Parameter value policy error"),
    ],
    ids=["slow", "2400", "2502", "garbage", "2304", "2306"],
)
def test_simulated_epp_faults_are_classified(app, api, engine, epp_registry, fault, outcome, words):
    sim = epp_registry.sim
    _, tariff, client = setup(api, engine, epp_registry, timeout=1)
    _, op_id = order(api, tariff, client, "faulty.com")
    for name, value in fault.items():
        setattr(sim, name, value)
    with app.app_context(), database.connection_context():
        operations.run(op_id)
        attempt = Attempt.get(Attempt.operation == op_id)
        op = Operation.get_by_id(op_id)
    assert attempt.outcome == outcome, attempt.error
    assert words in attempt.error
    assert op.status == ("retry_wait" if outcome == "temporary_error" else "manual")
    assert "faulty.com" not in sim.domains


@pytest.mark.parametrize(
    "change, field",
    [
        ({"password": "wrong-password"}, "password"),
        ({"extension_uris": "urn:ietf:params:xml:ns:secDNS-1.1"}, "extension_uris"),
        ({"ca_bundle": ""}, "ca_bundle"),
        ({"timeout": 1, "slow": 2.5}, "timeout"),
    ],
    ids=["password", "extension", "untrusted-certificate", "slow"],
)
def test_simulated_epp_test_connection_names_the_wrong_setting(api, epp_registry, change, field):
    if "slow" in change:
        epp_registry.sim.slow = change.pop("slow")
    code, body = api.post(
        "/modules",
        {
            "name": f"epp-{field}",
            "type": "epp",
            "config": {**epp_registry.config(), **change},
            "test_connection": True,
        },
    )
    assert code == 422, body
    assert f"config.{field}" in body["error"]["fields"], body


def test_simulated_epp_order_form_says_taken_and_refuses_the_order(app, api, engine, epp_registry):
    sim = epp_registry.sim
    _, tariff, _ = setup(api, engine, epp_registry)
    sim.register_for("other-registrar", "taken.com")
    carol = api.ok(
        "post",
        "/clients",
        {"name": "Carol", "email": "carol@example.com", "password": "carol-password"},
        status=201,
    )
    web = app.test_client()
    login(web, "carol@example.com", "carol-password")
    page = web.get("/my/order").get_data(as_text=True)
    url = f"/my/order/{tariff['id']}/availability/domain"
    assert f'hx-get="{url}"' in page
    taken = web.get(url, query_string={"params.domain": "Taken.com"}, headers={"HX-Request": "1"})
    assert "Taken" in taken.get_data(as_text=True) and "In use" in taken.get_data(as_text=True)
    free = web.get(url, query_string={"params.domain": "free-name.com"})
    assert "Available" in free.get_data(as_text=True)
    bad = web.get(url, query_string={"params.domain": "-bad-.com"})
    assert "Not a valid domain name" in bad.get_data(as_text=True)
    refused = web.post("/my/order", data={"tariff_id": tariff["id"], "params.domain": "taken.com"})
    assert refused.status_code == 422
    assert "taken.com is taken (In use)." in refused.get_data(as_text=True)
    code, body = api.post(
        "/orders",
        {"client_id": carol["id"], "tariff_id": tariff["id"], "params": {"domain": "taken.com"}},
    )
    assert code == 422 and body["error"]["fields"] == {
        "params.domain": "taken.com is taken (In use)."
    }
    # a registry that cannot be asked does not stop ordering (the open finds out)
    sim.stop()
    unknown = web.get(url, query_string={"params.domain": "free-name.com"})
    assert "Available" not in unknown.get_data(as_text=True)
    placed = api.order(carol["id"], tariff["id"], {"domain": "free-name.com"})
    assert placed["service_id"]


def test_simulated_epp_availability_checks_per_client_are_limited(app, api, engine, epp_registry):
    """Each check is a session at the registry: past AVAILABILITY_CHECK_LIMIT a client's
    form says the name is checked at the order, and the registry is not asked."""
    app.config["AVAILABILITY_CHECK_LIMIT"] = "3/minute"
    sim = epp_registry.sim
    _, tariff, _ = setup(api, engine, epp_registry)
    api.ok(
        "post",
        "/clients",
        {"name": "Dora", "email": "dora@example.com", "password": "dora-password"},
        status=201,
    )
    web = app.test_client()
    login(web, "dora@example.com", "dora-password")
    url = f"/my/order/{tariff['id']}/availability/domain"
    answers = [
        web.get(url, query_string={"params.domain": f"name{i}.com"}).get_data(as_text=True)
        for i in range(5)
    ]
    assert all("Available" in a for a in answers[:3]), answers
    for answer in answers[3:]:
        assert "Available" not in answer and "checked when you order" in answer
    sim.stop()  # the registry is not asked past the limit: a stopped one changes nothing
    assert "checked when you order" in web.get(
        url, query_string={"params.domain": "name9.com"}
    ).get_data(as_text=True)
