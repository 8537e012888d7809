"""The acme module type against a real pebble (Let's Encrypt's test CA).

pebble resolves every name to 127.0.0.1 (pebble-challtestsrv as its DNS server) and its
http-01 check connects to the port where the test's own Provisor is served
(``acme_http_port``), so each certificate here is validated by pebble fetching the token
from Provisor's ``/.well-known/acme-challenge/<token>``. The issued certificate is parsed
with cryptography: names, the key it is for, its chain up to the root pebble reports.
"""

import contextlib
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from acme.client import ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app.models import (
    AcmeAccount,
    AcmeCertificate,
    AcmeChallenge,
    Attempt,
    Email,
    Operation,
    Service,
    utcnow,
)
from app.services import certificates, operations
from tests.support import (
    ADMIN,
    AcmeAccountClient,
    Pebble,
    db,
    free_port,
    login,
    make_client_login,
    wait_for,
)


class Killed(BaseException):
    """The worker died right there."""


def names_for(tag):
    n = time.monotonic_ns() % 10**9
    return [f"{tag}{n}.example.com", f"www.{tag}{n}.example.com"]


def catalog(api, config, **module_fields):
    """An acme module, a certificate tariff, its item (the CA account) made."""
    department, module, tariff, _ = api.catalog(
        "acme", config, product_type="certificate", **module_fields
    )
    wait_for(
        lambda: api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]["status"] == "ready",
        timeout=20,
        message="the CA account (the tariff's item)",
    )
    return module, tariff


def order_certificate(app, api, tariff, names, email=None):
    """A client with a login orders ``names`` and pays; returns (service id, op id, email)."""
    email = email or f"carol{time.monotonic_ns()}@example.com"
    client_id = make_client_login(app, email=email)
    order = api.order(client_id, tariff["id"], {"domains": ", ".join(names)})
    status, paid = api.pay(order)
    assert status == 200, paid
    return order["service_id"], paid["operation_id"], email


def account_client(app, pebble, module_config):
    """What the test asks pebble as Provisor's account for these settings."""
    with db(app):
        row = AcmeAccount.get(
            AcmeAccount.identity
            == certificates.identity(
                module_config["directory_url"],
                module_config["email"],
                module_config.get("eab_kid"),
                module_config.get("eab_hmac_key"),
            )
        )
        _, key = certificates.account_key(row.id)
    return AcmeAccountClient(pebble, key, row.url)


def logs(app, op_id):
    with db(app):
        return [
            (a.outcome, a.log or "", a.error)
            for a in Attempt.select().where(Attempt.operation == op_id).order_by(Attempt.number)
        ]


def test_a_certificate_is_issued_over_http01_and_checked(app, api, client, pebble):
    module, tariff = catalog(api, pebble.config(key_type="rsa2048"))
    names = names_for("shop")
    service_id, op_id, email = order_certificate(app, api, tariff, names)
    op = api.wait_operation(op_id, timeout=30)
    assert op["status"] == "done", op["last_error"]

    service = api.ok("get", f"/services/{service_id}")
    assert service["status"] == "active"
    assert service["details"]["common_name"] == names[0]
    assert service["details"]["certificate_url"] == f"/my/services/{service_id}"
    data = service["module_data"]
    assert data["names"] == ", ".join(names)
    assert data["issuer"].startswith("CN=Pebble Intermediate CA")

    # the client downloads it; the key is the one the certificate is for
    login(client, email, "carol-password")
    fullchain = client.get(f"/my/services/{service_id}/certificate/fullchain.pem")
    assert fullchain.status_code == 200
    assert fullchain.headers["Content-Disposition"] == 'attachment; filename="fullchain.pem"'
    key_pem = client.get(f"/my/services/{service_id}/certificate/key.pem").get_data()
    leaf, intermediate = x509.load_pem_x509_certificates(fullchain.get_data())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == names
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == names[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.key_size == 2048  # key_type rsa2048
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)
    # the chain goes up to the root of this run of pebble
    root = x509.load_pem_x509_certificate(pebble.root_pem().encode())
    assert intermediate == x509.load_pem_x509_certificate(pebble.intermediate_pem().encode())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    assert client.get(f"/my/services/{service_id}/certificate/chain.pem").get_data() == (
        intermediate.public_bytes(serialization.Encoding.PEM)
    )
    cert_only = client.get(f"/my/services/{service_id}/certificate/certificate.pem")
    assert x509.load_pem_x509_certificates(cert_only.get_data()) == [leaf]
    serial = format(leaf.serial_number, "x")
    assert data["serial"] == serial and pebble.certificate_status(serial) == "Valid"
    assert service["expires_at"].startswith(leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M"))
    assert service["details"]["expires_on"] == leaf.not_valid_after_utc.date().isoformat()
    page = client.get(f"/my/services/{service_id}").get_data(as_text=True)
    assert "Certificate downloads" in page and "privkey.pem" in page and serial in page

    # the welcome email says where to download it, and never holds the key
    with db(app):
        welcome = Email.get((Email.service == service_id) & (Email.kind == "welcome"))
    assert names[0] in welcome.body and f"/my/services/{service_id}" in welcome.body
    assert "PRIVATE KEY" not in welcome.body and "BEGIN" not in welcome.body

    # another client finds nothing; staff get the certificate and the chain, not the key
    other = f"dave{time.monotonic_ns()}@example.com"
    make_client_login(app, email=other, name="Dave")
    login(client, other, "carol-password")
    assert client.get(f"/my/services/{service_id}/certificate/fullchain.pem").status_code == 404
    assert client.get(f"/my/services/{service_id}/certificate/key.pem").status_code == 404
    login(client, *ADMIN)
    staff = client.get(f"/services/{service_id}/certificate/fullchain.pem")
    assert staff.status_code == 200 and staff.get_data() == fullchain.get_data()
    assert client.get(f"/services/{service_id}/certificate/key.pem").status_code == 404
    assert client.get(f"/my/services/{service_id}/certificate/key.pem").status_code in (302, 403)
    page = client.get(f"/services/{service_id}").get_data(as_text=True)
    assert "Certificate downloads" in page and "privkey.pem" not in page
    # staff see the issuer, the names, the serial and the expiry
    for value in (data["issuer"], data["names"], serial, data["not_after"]):
        assert value in page, value
    # staff viewing the client area as the client: the certificate too, never the key
    assert client.post(f"/clients/{service['client_id']}/view-as").status_code == 302
    page = client.get(f"/my/services/{service_id}").get_data(as_text=True)
    assert "Certificate downloads" in page and "certificate/key.pem" not in page
    assert f"/services/{service_id}/certificate/fullchain.pem" in page
    assert client.get(f"/my/services/{service_id}/certificate/key.pem").status_code == 404
    client.post("/view-as/stop")

    # the tokens went once the order was valid; every CA request is in the attempt log
    with db(app):
        assert AcmeChallenge.select().count() == 0
        stored = AcmeCertificate.get(AcmeCertificate.service == service_id)
        assert stored.key_encrypted and b"PRIVATE KEY" not in stored.key_encrypted.encode()
    text = "\n".join(log for _, log, _ in logs(app, op_id))
    port = pebble.acme_port
    for line in (f"> POST https://127.0.0.1:{port}/order-plz", "< 201 Created ("):
        assert line in text, text
    assert "http-01 challenge for " + names[0] + " answered" in text


def test_provisor_answers_the_http01_tokens_of_pending_orders_only(app, client):
    """No login; plain text; 404 for a token it does not hold (or no longer)."""
    missing = client.get("/.well-known/acme-challenge/no-such-token")
    assert missing.status_code == 404 and missing.mimetype == "text/plain"
    with db(app):
        certificates.put_challenge("tok_EN-123", "tok_EN-123.thumbprint", "a.example.com")
    answer = client.get("/.well-known/acme-challenge/tok_EN-123")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    assert answer.get_data(as_text=True) == "tok_EN-123.thumbprint"
    assert client.get("/.well-known/acme-challenge/tok.EN").status_code == 404
    assert client.get("/.well-known/acme-challenge/" + "x" * 300).status_code == 404
    with db(app):
        AcmeChallenge.update(created_at=utcnow() - timedelta(days=9)).execute()
    assert client.get("/.well-known/acme-challenge/tok_EN-123").status_code == 404
    with db(app), pytest.raises(ValueError):
        certificates.put_challenge("bad token", "x", "a.example.com")


def test_external_account_binding_is_checked_and_used(app, api, pebble_eab):
    without = {k: v for k, v in pebble_eab.config().items() if not k.startswith("eab_")}
    code, body = api.post(
        "/modules",
        {"name": "no-eab", "type": "acme", "config": without, "test_connection": True},
    )
    assert code == 422, body
    assert "requires External Account Binding" in body["error"]["fields"]["config.eab_kid"]
    wrong = {**pebble_eab.config(), "eab_hmac_key": "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk"}
    code, body = api.post(
        "/modules", {"name": "bad-eab", "type": "acme", "config": wrong, "test_connection": True}
    )
    assert code == 422, body
    message = body["error"]["fields"]["config.eab_hmac_key"]
    assert "external account binding JWS verification error" in message  # pebble's words
    half = {**pebble_eab.config(), "eab_hmac_key": ""}
    code, body = api.post(
        "/modules", {"name": "half-eab", "type": "acme", "config": half, "test_connection": True}
    )
    assert code == 422 and "config.eab_hmac_key" in body["error"]["fields"], body

    module, tariff = catalog(api, pebble_eab.config())
    check = api.ok("post", f"/modules/{module['id']}/check")
    assert check["ok"] is True and "CA account https://127.0.0.1" in check["message"], check
    item = api.ok("get", f"/tariffs/{tariff['id']}")["items"][0]
    account = account_client(app, pebble_eab, pebble_eab.config())
    assert item["remote_id"] == account.account_url
    assert account.get(account.account_url).json()["externalAccountBinding"]  # bound
    service_id, op_id, _ = order_certificate(app, api, tariff, names_for("eab"))
    op = api.wait_operation(op_id, timeout=30)
    assert op["status"] == "done", op["last_error"]
    assert api.ok("get", f"/services/{service_id}")["module_data"]["account"] == (
        account.account_url
    )
    with db(app):
        assert AcmeAccount.select().where(AcmeAccount.url.is_null(False)).count() == 1


def test_renewal_before_expiry_then_close_revokes(app, api, client, pebble, monkeypatch):
    """The scheduler renews N days before expiry (a new order, the same service, a new
    serial); closing revokes every certificate still valid, an already revoked one too."""
    config = pebble.config()
    module, tariff = catalog(api, config)
    service_id, op_id, email = order_certificate(app, api, tariff, names_for("renew"))
    assert api.wait_operation(op_id, timeout=30)["status"] == "done"
    first = api.ok("get", f"/services/{service_id}")
    # 40-day certificates, renewed 30 days before: not due yet
    with db(app):
        assert operations.sweep()["renewals"] == 0
        # the default renew_days_before is 30: due inside 30 days of expiry, not before
        assert "renew_days_before" not in config
        Service.update(expires_at=utcnow() + timedelta(days=30, hours=1)).where(
            Service.id == service_id
        ).execute()
        assert operations.sweep()["renewals"] == 0
        Service.update(expires_at=utcnow() + timedelta(days=29, hours=23)).where(
            Service.id == service_id
        ).execute()
        assert operations.sweep()["renewals"] == 1
        renew = Operation.get((Operation.service == service_id) & (Operation.kind == "renew"))
    done = api.wait_operation(renew.id, timeout=30)
    assert done["status"] == "done", done["last_error"]
    renewed = api.ok("get", f"/services/{service_id}")
    assert renewed["id"] == service_id and renewed["status"] == "active"
    assert renewed["module_data"]["serial"] != first["module_data"]["serial"]
    assert renewed["remote_id"] != first["remote_id"]  # a new order
    assert renewed["expires_at"] > first["expires_at"][:10]
    with db(app):
        assert operations.sweep()["renewals"] == 0  # the new expiry is 40 days away
    login(client, email, "carol-password")
    leaf = x509.load_pem_x509_certificates(
        client.get(f"/my/services/{service_id}/certificate/fullchain.pem").get_data()
    )[0]
    assert format(leaf.serial_number, "x") == renewed["module_data"]["serial"]
    serials = [first["module_data"]["serial"], renewed["module_data"]["serial"]]
    assert [pebble.certificate_status(s) for s in serials] == ["Valid", "Valid"]
    assert len(account_client(app, pebble, config).orders()) == 2

    # someone revoked the first one already: closing is fine with that
    with db(app):
        old = AcmeCertificate.get(AcmeCertificate.serial == serials[0])
    account_client(app, pebble, config).revoke(old.certificate_pem)
    close = api.ok("post", f"/services/{service_id}/close", {}, status=202)
    done = api.wait_operation(close["id"], timeout=30)
    assert done["status"] == "done", done["last_error"]
    assert [pebble.certificate_status(s) for s in serials] == ["Revoked", "Revoked"]
    text = "\n".join(log for _, log, _ in logs(app, close["id"]))
    assert f"certificate {serials[0]} was revoked already" in text
    assert f"certificate {serials[1]} revoked" in text
    assert api.ok("get", f"/services/{service_id}")["status"] == "deleted"
    assert client.get(f"/my/services/{service_id}/certificate/key.pem").status_code == 404
    with db(app):
        assert AcmeCertificate.select().where(AcmeCertificate.revoked_at.is_null()).count() == 0


@pytest.mark.parametrize(
    "kill_after", ["the order is made", "the order URL is saved", "a challenge is answered"]
)
def test_a_worker_killed_mid_order_continues_the_same_order(
    app, api, engine, pebble, monkeypatch, kill_after
):
    """Killed right after the CA made the order (its URL not saved yet: the order is
    found in the account's list), after saving its URL, after answering a challenge."""
    config = pebble.config()
    _, _, tariff, client_ = api.catalog("acme", config, product_type="certificate")
    engine.run_all()
    order = api.order(client_["id"], tariff["id"], {"domains": names_for("kill")})
    _, paid = api.pay(order)
    op_id = paid["operation_id"]
    real = operations._save_state

    def save_then_die(op, attempt, state):
        real(op, attempt, state)
        if (kill_after == "the order URL is saved" and state.get("order")) or (
            kill_after == "a challenge is answered" and state.get("answered")
        ):
            raise Killed()

    real_order = ClientV2.new_order

    def order_then_die(self, *args, **kwargs):
        real_order(self, *args, **kwargs)
        raise Killed()

    with monkeypatch.context() as patch:
        if kill_after == "the order is made":
            patch.setattr(ClientV2, "new_order", order_then_die)
        else:
            patch.setattr(operations, "_save_state", save_then_die)
        with pytest.raises(Killed), db(app):
            operations.run(op_id)
    with db(app):
        state = Operation.get_by_id(op_id).state
        assert state["key"] and "PRIVATE KEY" not in json.dumps(state)
        Operation.update(lease_until=utcnow() - timedelta(seconds=1)).where(
            Operation.id == op_id
        ).execute()
        assert operations.sweep()["reclaimed"] == 1
    op = engine.run(op_id)
    assert op.status == "done", op.last_error
    orders = account_client(app, pebble, config).orders()
    assert len(orders) == 1  # pebble saw one order
    assert state.get("order") in (None, orders[0])
    assert engine.service(order["service_id"]).remote_id == orders[0]
    outcomes = [outcome for outcome, _, _ in logs(app, op_id)]
    assert outcomes[0] == "interrupted" and outcomes[-1] == "done"
    second = logs(app, op_id)[1][1]
    if kill_after == "the order is made":
        assert f"taking over order {orders[0]} an earlier attempt made" in second
    else:
        assert f"order {orders[0]} is pending" in second


def test_an_order_another_operation_follows_is_never_adopted(app, api):
    _, _, tariff, client_ = api.catalog("sandbox", product_type="certificate")
    order = api.order(client_["id"], tariff["id"], {"domains": "a.example.com"})
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    url = "https://ca.example/order/1_x"
    with db(app):
        assert not certificates.order_taken(url, paid["operation_id"])
        Operation.update(state={"order": url, "names": ["a.example.com"]}).where(
            Operation.id == paid["operation_id"]
        ).execute()
        assert not certificates.order_taken(url, paid["operation_id"])  # its own
        assert certificates.order_taken(url, paid["operation_id"] + 1)
        assert not certificates.order_taken(url[:-1], paid["operation_id"] + 1)


def test_the_ca_refusing_is_permanent_with_its_own_words(app, api, engine, tmp_path):
    """A name the CA will not issue for; a validation that fails (pebble cannot connect to
    Provisor): each goes to people at once, with the CA's problem detail."""
    pebble = Pebble(tmp_path / "pebble", free_port(), blocklist=["blocked.example"]).start()
    try:
        _, _, tariff, client_ = api.catalog(
            "acme", pebble.config(), product_type="certificate", retry_delay=1
        )
        engine.run_all()
        order = api.order(client_["id"], tariff["id"], {"domains": "shop.blocked.example"})
        _, paid = api.pay(order)
        op = engine.run(paid["operation_id"])
        assert op.status == "manual"
        assert "rejectedIdentifier" in op.last_error and "blocked.example" in op.last_error
        assert [o for o, _, _ in logs(app, op.id)] == ["permanent_error"]

        order = api.order(client_["id"], tariff["id"], {"domains": names_for("nohttp")})
        _, paid = api.pay(order)
        op = engine.run(paid["operation_id"])
        assert op.status == "manual", op.last_error
        assert op.last_error.startswith("the CA refused the order: ")
        assert "[connection]" in op.last_error or "[unauthorized]" in op.last_error, op.last_error
        assert op.state == {}  # "Run now" orders anew
        assert [o for o, _, _ in logs(app, op.id)][-1] == "permanent_error"
        with db(app):
            assert AcmeChallenge.select().count() == 0
    finally:
        pebble.stop()


class FakeCa:
    """An HTTP server that answers the directory as scripted: a CA having a bad day."""

    def __init__(self):
        self.behaviour = "503"
        self.port = free_port()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if fake.behaviour == "hang":
                    time.sleep(2)
                    return self._reply(200, "application/json", b"{}")
                if fake.behaviour == "503":
                    return self._reply(503, "text/html", b"<h1>Service Unavailable</h1>")
                if fake.behaviour == "html":
                    return self._reply(200, "text/html", b"<h1>Welcome</h1>")
                problem = {
                    "type": "urn:ietf:params:acme:error:rateLimited",
                    "detail": "too many new orders recently",
                }
                return self._reply(429, "application/problem+json", json.dumps(problem).encode())

            def _reply(self, status, kind, body):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_ca_that_is_down_busy_or_slow_is_temporary(app, api, engine):
    fake = FakeCa()
    try:
        config = {
            "directory_url": f"http://127.0.0.1:{fake.port}/directory",
            "email": "certs@provisor.example",
            "timeout": 1,
        }
        _, module, tariff, _ = api.catalog(
            "acme", config, product_type="certificate", max_attempts=10
        )
        with db(app):
            item_op = Operation.get(Operation.kind == "ensure_item")
        expected = {
            "503": "the CA answered 503 Service Unavailable",
            "rateLimited": "the CA answered too many new orders recently [rateLimited]",
            "hang": "the CA did not answer within 1 s",
        }
        for behaviour, message in expected.items():
            fake.behaviour = behaviour
            with db(app):
                Operation.update(next_run_at=None).where(Operation.id == item_op.id).execute()
                operations.run(item_op.id)
                op = Operation.get_by_id(item_op.id)
            assert op.status == "retry_wait", (behaviour, op.last_error)
            assert message in op.last_error, (behaviour, op.last_error)
        assert [o for o, _, _ in logs(app, item_op.id)] == ["temporary_error"] * 3
        fake.behaviour = "html"
        check = api.ok("post", f"/modules/{module['id']}/check")
        assert check["ok"] is False and check["fields"] == {
            "config.directory_url": check["message"]
        }
        assert "is not an ACME directory" in check["message"]
    finally:
        fake.stop()


def test_a_ca_whose_tls_is_not_trusted_says_to_set_the_bundle(app, api, engine, pebble):
    config = {k: v for k, v in pebble.config().items() if k != "ca_bundle"}
    _, module, tariff, _ = api.catalog("acme", config, product_type="certificate")
    check = api.ok("post", f"/modules/{module['id']}/check")
    assert check["ok"] is False and "config.ca_bundle" in check["fields"], check
    assert "not trusted" in check["message"]
    item = engine.run_all()[0]
    assert item.status == "manual" and "ca_bundle" in item.last_error
    code, body = api.post(
        "/modules",
        {
            "name": "bad-bundle",
            "type": "acme",
            "config": {**pebble.config(), "ca_bundle": "not a certificate"},
            "test_connection": True,
        },
    )
    assert code == 422 and "config.ca_bundle" in body["error"]["fields"], body
    code, body = api.post(
        "/modules",
        {
            "name": "bad-email",
            "type": "acme",
            "config": {**pebble.config(), "email": "no-at-sign"},
            "test_connection": True,
        },
    )
    assert code == 422 and body["error"]["fields"] == {"config.email": "Not an email address."}


def test_nonces_the_ca_rejects_are_retried(app, api, tmp_path, acme_http_port):
    """pebble rejecting a fifth of the nonces (badNonce): the ACME client retries once,
    an attempt that still fails is a temporary error; the certificate comes anyway."""
    pebble = Pebble(
        tmp_path / "pebble", acme_http_port, env={"PEBBLE_WFE_NONCEREJECT": "20"}
    ).start()
    try:
        _, tariff = catalog(api, pebble.config(), retry_delay=1, max_attempts=20)
        service_id, op_id, _ = order_certificate(app, api, tariff, names_for("nonce"))
        op = api.wait_operation(op_id, timeout=60)
        assert op["status"] == "done", op["last_error"]
        assert api.ok("get", f"/services/{service_id}")["module_data"]["serial"]
    finally:
        pebble.stop()
