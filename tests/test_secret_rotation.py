"""Changing SECRET_KEY without losing what it protects: with the old key in
SECRET_KEY_FALLBACKS every stored secret (peer passwords, ACME keys, secrets in operation
states) still decrypts and sessions stay valid; ``provisor secrets rotate`` re-encrypts
the stored secrets with the new key, after which the new key alone is enough."""

import subprocess

import pytest

from app import create_app, secrets_box
from tests import support
from tests.support import ADMIN, BIN, Instance, connect_peers, db

OLD, NEW = "old-secret-key", "new-secret-key"


def _restart(app, secret_key, fallbacks=None):
    """The same database under other keys, as a restart with other settings makes it."""
    settings = {
        "TESTING": True,
        "DATABASE_URL": app.config["DATABASE_URL"],
        "SECRET_KEY": secret_key,
        "PAYMENT_WEBHOOK_SECRET": "x",
        "WTF_CSRF_ENABLED": False,
        "ARGON2_TIME_COST": 1,
        "ARGON2_MEMORY_COST": 1024,
    }
    if fallbacks is not None:
        settings["SECRET_KEY_FALLBACKS"] = fallbacks
    return create_app(settings)


def _stored_secrets(app):
    """One of each kind of stored secret, made under the app's SECRET_KEY."""
    from app.models import (
        AcmeAccount,
        AcmeCertificate,
        Client,
        Operation,
        ProcessingModule,
        ProductType,
        ProxyClientSide,
        Service,
        Tariff,
        utcnow,
    )
    from app.services import catalog, certificates, proxy
    from modules.base import NEW_PASSWORD_KEY, NEW_PASSWORD_PURPOSE
    from modules.databases import PASSWORD_PURPOSE

    with db(app):
        department = catalog.create_department({"name": "Upstream"})
        ProxyClientSide.create(
            url="http://127.0.0.1:9",
            login="reseller-1",
            password_encrypted=proxy.encrypt("peer-password"),
            remote_department_id=1,
            department=department,
        )
        AcmeAccount.create(
            identity="ca-1",
            directory_url="https://ca.example/directory",
            email="ops@example.com",
            key_encrypted=secrets_box.encrypt("account key", certificates.ACCOUNT_KEY),
        )
        client = Client.create(name="C", email="c@example.com")
        tariff = Tariff.create(
            name="Cert",
            product_type=ProductType.get(ProductType.code == "certificate"),
            price="1",
            internal_name="cert",
        )
        service = Service.create(client=client, tariff=tariff)
        AcmeCertificate.create(
            service=service,
            order_url="https://ca.example/order/1",
            serial="01",
            not_before=utcnow(),
            not_after=utcnow(),
            certificate_pem="-",
            key_encrypted=secrets_box.encrypt("certificate key", certificates.CERTIFICATE_KEY),
        )
        mariadb = ProcessingModule.create(name="DB", type="mariadb", config={})
        acme = ProcessingModule.create(name="CA", type="acme", config={})
        sandbox = ProcessingModule.create(name="Sandbox", type="sandbox", config={})
        states = [
            (mariadb, {"password": secrets_box.encrypt("db password", PASSWORD_PURPOSE)}),
            (acme, {"key": secrets_box.encrypt("order key", certificates.CERTIFICATE_KEY)}),
            (None, {"password": secrets_box.encrypt("orphan", PASSWORD_PURPOSE), "n": 1}),
            # a change_password's new password: Provisor stores it for any module type
            (sandbox, {NEW_PASSWORD_KEY: secrets_box.encrypt("new pw", NEW_PASSWORD_PURPOSE)}),
        ]
        for module, state in states:
            Operation.create(kind="open", module=module, status="done", state=state)


def _decrypted(app):
    """Every stored secret in clear (Undecryptable or a ServiceError if one cannot be)."""
    from app.models import AcmeAccount, AcmeCertificate, Operation, ProxyClientSide
    from app.services import certificates, proxy
    from modules.base import NEW_PASSWORD_KEY, NEW_PASSWORD_PURPOSE
    from modules.databases import PASSWORD_PURPOSE

    with db(app):
        out = [proxy.decrypt(ProxyClientSide.get().password_encrypted)]
        out.append(secrets_box.decrypt(AcmeAccount.get().key_encrypted, certificates.ACCOUNT_KEY))
        key = AcmeCertificate.get().key_encrypted
        out.append(secrets_box.decrypt(key, certificates.CERTIFICATE_KEY))
        for op in Operation.select().order_by(Operation.id):
            if "key" in op.state:
                token, purpose = op.state["key"], certificates.CERTIFICATE_KEY
            elif NEW_PASSWORD_KEY in op.state:
                token, purpose = op.state[NEW_PASSWORD_KEY], NEW_PASSWORD_PURPOSE
            else:
                token, purpose = op.state["password"], PASSWORD_PURPOSE
            out.append(secrets_box.decrypt(token, purpose))
    return [v.decode() if isinstance(v, bytes) else v for v in out]


CLEAR = [
    "peer-password",
    "account key",
    "certificate key",
    "db password",
    "order key",
    "orphan",
    "new pw",
]


def test_fallback_keys_decrypt_and_rotation_makes_the_new_key_enough(app):
    from app.services.errors import ServiceError

    first = _restart(app, OLD)
    _stored_secrets(first)
    assert _decrypted(first) == CLEAR
    # the new key alone cannot open what the old one made
    with pytest.raises(ServiceError, match="cannot be decrypted"):
        _decrypted(_restart(app, NEW))
    # with the old key as a fallback everything opens, and new secrets use the new key
    both = _restart(app, NEW, f"unrelated-key, {OLD}")
    assert both.config["SECRET_KEY_FALLBACKS"] == ["unrelated-key", OLD]
    assert _decrypted(both) == CLEAR
    with both.app_context():
        token = secrets_box.encrypt("made now", "proxy")
        assert secrets_box.is_current(token, "proxy")
    # rotate: everything re-encrypted with the new key, the rest of the states kept
    result = both.test_cli_runner().invoke(args=["secrets", "rotate"])
    assert result.exit_code == 0, result.output
    assert result.output == "Stored secrets: 7 re-encrypted with SECRET_KEY, 0 already were.\n"
    assert _decrypted(_restart(app, NEW)) == CLEAR
    again = both.test_cli_runner().invoke(args=["secrets", "rotate"])
    assert again.output == "Stored secrets: 0 re-encrypted with SECRET_KEY, 7 already were.\n"
    from app.models import Operation

    with db(both):
        assert [op.state.get("n") for op in Operation.select().order_by(Operation.id)] == [
            None,
            None,
            1,
            None,
        ]


def test_rotation_names_what_no_key_opens_and_leaves_it(app):
    from app.models import ProxyClientSide

    _stored_secrets(_restart(app, OLD))
    result = _restart(app, NEW).test_cli_runner().invoke(args=["secrets", "rotate"])
    assert result.exit_code == 1
    assert "cannot decrypt: proxy client side #1 (password)" in result.output
    assert "cannot decrypt: operation #3 (state 'password')" in result.output
    assert result.output.rstrip().endswith(
        "Error: 7 stored secrets open with neither SECRET_KEY nor SECRET_KEY_FALLBACKS: left"
        " as they were (enter them again, or add the key they were made with to"
        " SECRET_KEY_FALLBACKS)"
    )
    with db(app):
        stored = ProxyClientSide.get().password_encrypted
    assert _decrypted(_restart(app, OLD))[0] == "peer-password"  # untouched
    with db(app):
        assert ProxyClientSide.get().password_encrypted == stored


def test_sessions_made_with_a_fallback_key_stay_valid(app):
    first = _restart(app, OLD)
    from app.services import accounts

    with db(first):
        accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        )
    browser = first.test_client()
    support.login(browser, *ADMIN)
    cookie = browser.get_cookie("session").value

    def logged_in(restarted):
        client = restarted.test_client()
        client.set_cookie("session", cookie)
        return client.get("/operations").status_code == 200

    assert logged_in(_restart(app, NEW, OLD))
    assert not logged_in(_restart(app, NEW))


def test_a_peer_password_survives_a_key_change_between_real_processes(tmp_path):
    """Two `provisor serve` instances; the reseller's key changes between restarts."""
    started = []
    try:
        reseller = Instance(tmp_path, "reseller").start()
        started.append(reseller)
        provider = Instance(tmp_path, "provider").start()
        started.append(provider)
        connect_peers(
            reseller,
            provider,
            reseller.department("Upstream DC"),
            provider.department("DC"),
            "reseller-1",
        )
        reseller.stop()
        old = reseller.env["SECRET_KEY"]
        reseller.env["SECRET_KEY"] = "a-new-secret-key"
        failed = reseller.cli("remotetaskctl", "--command", "checkevent", check=False)
        assert failed.returncode == 1
        assert "the stored password cannot be decrypted" in failed.stderr
        reseller.env["SECRET_KEY_FALLBACKS"] = old
        pulled = reseller.cli("remotetaskctl", "--command", "checkevent")
        assert ": 0 events applied" in pulled.stdout
        rotated = reseller.cli("secrets", "rotate")
        assert "1 re-encrypted with SECRET_KEY" in rotated.stdout
        del reseller.env["SECRET_KEY_FALLBACKS"]
        pulled = reseller.cli("remotetaskctl", "--command", "checkevent")
        assert ": 0 events applied" in pulled.stdout
        reseller.start()  # and the new key alone serves
        order, _ = reseller.order_manual_service(reseller.department("Other")["id"])
        assert order["status"] == "unpaid"
    finally:
        for instance in started:
            instance.stop()


def test_the_fallbacks_setting_is_a_list():
    from app import config

    values = config.load(environ={"SECRET_KEY_FALLBACKS": " a , b,, "})
    assert values["SECRET_KEY_FALLBACKS"] == ("a", "b")
    assert config.load(environ={})["SECRET_KEY_FALLBACKS"] == ()
    result = subprocess.run(
        [f"{BIN}/provisor", "secrets", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "rotate" in result.stdout
