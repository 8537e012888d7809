"""Password guessing: failed logins limited per address and per account (429 with
Retry-After) on the login form and on the tasks proxy's HTTP Basic auth, in memory
(embedded) and in Redis (scaled); unknown and known emails taking as long; argon2 hashes
upgraded at login when the cost settings change."""

import uuid

import pytest
from argon2 import PasswordHasher

from app import create_app, schema
from tests import support
from tests.support import ADMIN, db, html

ELSEWHERE = {"REMOTE_ADDR": "198.51.100.7"}


def _admin(app):
    from app.services import accounts

    with db(app):
        accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        )


def _fail(client, email=ADMIN[0], address="127.0.0.1"):
    return client.post(
        "/login",
        data={"email": email, "password": "not-the-password"},
        environ_base={"REMOTE_ADDR": address},
    )


def _server_side(app, login="reseller-1", password=support.PEER_PASSWORD):
    from app.services import catalog, proxy

    with db(app):
        department = catalog.create_department({"name": f"DC {login}"})
        return proxy.create_server_side(
            {"login": login, "password": password, "department_id": department.id}
        )


def _peer(client, login, password, address="127.0.0.1"):
    import base64

    token = base64.b64encode(f"{login}:{password}".encode()).decode()
    return client.get(
        "/proxy/v1/departments",
        headers={"Authorization": f"Basic {token}"},
        environ_base={"REMOTE_ADDR": address},
    )


def _retry_after(response):
    value = response.headers.get("Retry-After")
    assert value is not None and value.isdigit(), response.headers
    assert 1 <= int(value) <= 3600
    return int(value)


# --- the login form -------------------------------------------------------------------------


def test_wrong_passwords_from_one_address_get_429_with_retry_after(app, client):
    _admin(app)
    for _ in range(10):  # LOGIN_LIMIT_PER_ADDRESS: 10/minute;60/hour
        response = _fail(client)
        assert response.status_code == 422
        assert "Wrong email or password." in html(response)
    refused = _fail(client)
    assert refused.status_code == 429
    wait = _retry_after(refused)
    assert wait <= 60
    page = html(refused)
    assert "Too many failed logins: try again in" in page
    assert '<form method="post" action="/login"' in page  # the form, not an error page
    # the right password from that address is refused too, until the window moves on
    right = client.post("/login", data={"email": ADMIN[0], "password": ADMIN[1]})
    assert right.status_code == 429
    assert client.get("/operations").status_code == 302  # not logged in
    # another account from that address: the address is what is limited
    assert _fail(client, email="someone@example.com").status_code == 429


def test_the_right_password_from_another_address_still_works(app, client):
    _admin(app)
    for _ in range(10):
        _fail(client)
    assert _fail(client).status_code == 429
    other = app.test_client()
    response = other.post(
        "/login", data={"email": ADMIN[0], "password": ADMIN[1]}, environ_base=ELSEWHERE
    )
    assert response.status_code == 302
    assert other.get("/operations", environ_base=ELSEWHERE).status_code == 200


def test_guessing_one_account_from_many_addresses_is_limited_per_account(app, client):
    _admin(app)
    app.config["LOGIN_LIMIT_PER_ACCOUNT"] = "5/minute"  # read at each request
    for n in range(5):
        assert _fail(client, address=f"203.0.113.{n + 1}").status_code == 422
    # a sixth address, even with the right password: the account is paused
    response = client.post(
        "/login", data={"email": ADMIN[0], "password": ADMIN[1]}, environ_base=ELSEWHERE
    )
    assert response.status_code == 429
    _retry_after(response)
    # other accounts are not affected (same email differently written counts as the same)
    assert _fail(client, email=" Admin@Example.COM ", address="192.0.2.50").status_code == 429
    assert _fail(client, email="other@example.com", address="192.0.2.50").status_code == 422


def test_only_failures_count(app, client):
    _admin(app)
    for _ in range(15):
        support.login(client, *ADMIN)
        client.post("/logout")
    assert _fail(client).status_code == 422


# --- the tasks proxy's Basic auth -------------------------------------------------------------


def test_wrong_proxy_passwords_get_429_with_retry_after(app, client):
    _server_side(app)
    for _ in range(10):
        response = _peer(client, "reseller-1", "wrong-password")
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
    refused = _peer(client, "reseller-1", support.PEER_PASSWORD)
    assert refused.status_code == 429
    _retry_after(refused)
    assert refused.json["error"]["code"] == "too_many_requests"
    assert refused.json["error"]["message"].startswith("Too many failed logins: try again in")
    assert refused.mimetype == "application/json"
    # the same peer from its own address is served
    assert _peer(client, "reseller-1", support.PEER_PASSWORD, "198.51.100.7").status_code == 200


def test_the_form_and_the_proxy_share_the_address_count(app, client):
    _admin(app)
    _server_side(app)
    for _ in range(5):
        _fail(client)
        _peer(client, "reseller-1", "wrong-password")
    assert _peer(client, "reseller-1", support.PEER_PASSWORD).status_code == 429
    assert _fail(client).status_code == 429


def test_proxy_logins_are_limited_per_account(app, client):
    _server_side(app)
    app.config["LOGIN_LIMIT_PER_ACCOUNT"] = "3/minute"
    for n in range(3):
        assert _peer(client, "reseller-1", "wrong", f"203.0.113.{n + 1}").status_code == 401
    assert _peer(client, "reseller-1", support.PEER_PASSWORD, "192.0.2.9").status_code == 429


# --- where the counts live --------------------------------------------------------------------


def _app_on(tmp_path, name, **settings):
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/{name}.sqlite3",
            "SECRET_KEY": "test-secret-key",
            "PAYMENT_WEBHOOK_SECRET": "x",
            "WTF_CSRF_ENABLED": False,
            "ARGON2_TIME_COST": 1,
            "ARGON2_MEMORY_COST": 1024,
            **settings,
        }
    )


@pytest.mark.redis
def test_with_redis_every_web_process_shares_the_counts(tmp_path, redis_url):
    """Two apps on one database and one Redis, as two gunicorn workers are."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    first = _app_on(tmp_path, "shared", REDIS_URL=redis_url, REDIS_NAMESPACE=namespace)
    second = _app_on(tmp_path, "shared", REDIS_URL=redis_url, REDIS_NAMESPACE=namespace)
    with first.app_context():
        schema.upgrade()
    _admin(first)
    for n in range(10):
        app = (first, second)[n % 2]
        with app.app_context():
            assert _fail(app.test_client()).status_code == 422
    for app in (first, second):
        with app.app_context():
            assert _fail(app.test_client()).status_code == 429
    import redis

    keys = redis.Redis.from_url(redis_url).keys(f"*{namespace}*")
    assert keys, "the counts are in Redis"
    redis.Redis.from_url(redis_url).delete(*keys)


def test_without_redis_reachable_logins_still_work_and_are_counted_in_memory(tmp_path):
    app = _app_on(tmp_path, "down", REDIS_URL=f"redis://127.0.0.1:{support.free_port()}/0")
    with app.app_context():
        schema.upgrade()
    _admin(app)
    client = app.test_client()
    with app.app_context():
        support.login(client, *ADMIN)
        client.post("/logout")
        for _ in range(10):
            assert _fail(client).status_code == 422
        assert _fail(client).status_code == 429


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(tmp_path):
    for hops in (0, 1):
        app = _app_on(tmp_path, f"hops{hops}", TRUSTED_PROXY_HOPS=hops)
        with app.app_context():
            schema.upgrade()
        _admin(app)
        client = app.test_client()
        with app.app_context():
            for n in range(11):
                response = client.post(
                    "/login",
                    data={"email": ADMIN[0], "password": "wrong"},
                    headers={"X-Forwarded-For": f"203.0.113.{n + 1}"},
                )
        # believed: eleven addresses, one failure each; not believed: one address, eleven
        assert response.status_code == (422 if hops else 429)


# --- equal timing ---------------------------------------------------------------------------


@pytest.fixture
def argon2_work(monkeypatch):
    """The argon2 verifications done, as the costs of the hash each one checked against
    ``(m, t)``: equal work for known and unknown logins is checked by what is computed,
    not by a stopwatch (no timing assertions in tests)."""
    done = []
    verify = PasswordHasher.verify

    def counted(self, stored, password):
        params = dict(p.split("=") for p in stored.split("$")[3].split(","))
        done.append((int(params["m"]), int(params["t"])))
        return verify(self, stored, password)

    monkeypatch.setattr(PasswordHasher, "verify", counted)
    return done


def test_unknown_and_known_emails_take_as_long(app, client, argon2_work):
    """The audit measured 227 ms (known) against 6 ms (unknown): both now run one argon2
    verification at the configured cost (an unknown email against a dummy hash)."""
    app.config.update(
        ARGON2_TIME_COST=2,
        ARGON2_MEMORY_COST=32768,
        LOGIN_LIMIT_PER_ADDRESS="1000/minute",
        LOGIN_LIMIT_PER_ACCOUNT="1000/minute",
    )
    _admin(app)  # hashed with these costs
    for email in (ADMIN[0], "nobody@example.com"):
        argon2_work.clear()
        assert _fail(client, email=email).status_code == 422
        assert argon2_work == [(32768, 2)], (email, argon2_work)


def test_an_unknown_proxy_login_takes_as_long_as_a_wrong_password(app, client, argon2_work):
    app.config.update(
        ARGON2_TIME_COST=2, ARGON2_MEMORY_COST=32768, LOGIN_LIMIT_PER_ADDRESS="1000/minute"
    )
    _server_side(app)
    for login in ("reseller-1", "nobody"):
        argon2_work.clear()
        assert _peer(client, login, "wrong").status_code == 401
        assert argon2_work == [(32768, 2)], (login, argon2_work)


# --- argon2 cost upgrades -------------------------------------------------------------------


def _stored_hash(app, email):
    from app.models import User

    with db(app):
        return User.get(User.email == email).password_hash


def test_a_login_upgrades_a_hash_made_with_older_costs(app, client):
    _admin(app)
    old = _stored_hash(app, ADMIN[0])
    assert "m=1024,t=1," in old
    # the provider raises the costs: nothing changes until the next login
    app.config.update(ARGON2_TIME_COST=2, ARGON2_MEMORY_COST=2048)
    assert _fail(client).status_code == 422
    assert _stored_hash(app, ADMIN[0]) == old  # a wrong password upgrades nothing
    support.login(client, *ADMIN)
    new = _stored_hash(app, ADMIN[0])
    assert "m=2048,t=2," in new and new != old
    client.post("/logout")
    support.login(client, *ADMIN)  # the new hash works, and is kept
    assert _stored_hash(app, ADMIN[0]) == new


def test_a_client_login_is_upgraded_too(app, client):
    support.make_client_login(app)
    app.config.update(ARGON2_TIME_COST=2)
    support.login(client, "carol@example.com", "carol-password")
    assert "t=2," in _stored_hash(app, "carol@example.com")


def test_a_proxy_login_upgrades_the_server_sides_hash(app, client):
    from app.models import ProxyServerSide

    side = _server_side(app)
    assert "m=1024,t=1," in side.password_hash
    app.config.update(ARGON2_TIME_COST=2, ARGON2_MEMORY_COST=2048)
    assert _peer(client, "reseller-1", support.PEER_PASSWORD).status_code == 200
    with db(app):
        upgraded = ProxyServerSide.get_by_id(side.id).password_hash
    assert "m=2048,t=2," in upgraded
    assert _peer(client, "reseller-1", support.PEER_PASSWORD).status_code == 200
    assert _peer(client, "reseller-1", "wrong-password").status_code == 401


def test_guessing_the_current_password_on_the_account_page_is_limited(app, client):
    _admin(app)
    support.login(client, *ADMIN)
    data = {"current_password": "guess", "password": "new-password", "password_repeat": "x"}
    for _ in range(10):
        assert client.post("/account", data=data).status_code == 422
    refused = client.post("/account", data=data)
    assert refused.status_code == 429
    _retry_after(refused)
    assert "Too many failed logins: try again in" in html(refused)


def test_mistakes_beside_the_current_password_do_not_count(app, client):
    _admin(app)
    support.login(client, *ADMIN)
    data = {"current_password": ADMIN[1], "password": "new-password", "password_repeat": "x"}
    for _ in range(12):
        assert client.post("/account", data=data).status_code == 422
