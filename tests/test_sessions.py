"""Page sessions end on the server's word: a copied session cookie stops working after
logout and after a password change; logins end after SESSION_LIFETIME and after
SESSION_IDLE_TIMEOUT without use; the cookie is SameSite=Lax, HttpOnly, and Secure over
HTTPS (directly, or behind a trusted TLS proxy)."""

import re
import time

import requests

from app import create_app, schema
from tests import support
from tests.support import ADMIN, db

STAFF = ("sam@example.com", "staff-password")


def _admin(app):
    from app.services import accounts

    with db(app):
        return accounts.create_user(
            {"email": ADMIN[0], "name": "Admin", "password": ADMIN[1]}, role="admin"
        ).id


def _csrf(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _browser_login(base, email, password):
    """A requests session logged in through the real login form (CSRF on)."""
    session = requests.Session()
    token = _csrf(session.get(f"{base}/login", timeout=10).text)
    response = session.post(
        f"{base}/login",
        data={"email": email, "password": password, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text[:500]
    return session


def _copy(session):
    """Another client holding a copy of ``session``'s cookie (as a thief would)."""
    thief = requests.Session()
    thief.cookies.set("session", session.cookies["session"])
    return thief


def _logged_in(session, base):
    response = session.get(f"{base}/operations", allow_redirects=False, timeout=10)
    if response.status_code == 302:
        assert "/login" in response.headers["Location"]
        return False
    assert response.status_code == 200
    return True


def test_a_copied_cookie_stops_working_after_logout(live_app):
    """On a real server through the real form: copy the cookie, log out, reuse it."""
    base = live_app.config["BASE_URL"]
    _admin(live_app)
    owner = _browser_login(base, *ADMIN)
    thief = _copy(owner)
    assert _logged_in(thief, base)
    token = _csrf(owner.get(f"{base}/operations", timeout=10).text)
    out = owner.post(
        f"{base}/logout", data={"csrf_token": token}, allow_redirects=False, timeout=10
    )
    assert out.status_code == 302 and out.headers["Location"].endswith("/login")
    assert not _logged_in(thief, base)
    assert not _logged_in(owner, base)
    # logging in again makes a new session; the old copy stays dead
    again = _browser_login(base, *ADMIN)
    assert _logged_in(again, base)
    assert not _logged_in(thief, base)


def test_a_new_password_set_by_an_admin_ends_the_users_sessions(app, client):
    _admin(app)
    staff_id = support.make_staff(app, STAFF[0], password=STAFF[1])
    staff = app.test_client()
    support.login(staff, *STAFF)
    copy = app.test_client()
    copy.set_cookie("session", staff.get_cookie("session").value)
    assert copy.get("/tasks").status_code == 200
    support.login(client, *ADMIN)
    saved = client.post(
        f"/staff/{staff_id}/edit",
        data={"name": "Sam", "role": "staff", "is_active": "on", "password": "new-password-1"},
    )
    assert saved.status_code == 302
    for old in (staff, copy):
        response = old.get("/tasks")
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    # htmx requests of the ended session are sent to the login page too
    refused = copy.get("/tasks", headers=support.HTMX)
    assert refused.status_code == 401 and "/login" in refused.headers["HX-Redirect"]
    fresh = app.test_client()
    support.login(fresh, STAFF[0], "new-password-1")
    assert fresh.get("/tasks").status_code == 200
    # the admin's own session is not affected
    assert client.get("/staff").status_code == 200


def test_a_change_without_a_new_password_keeps_the_sessions(app, client):
    _admin(app)
    staff_id = support.make_staff(app, STAFF[0], password=STAFF[1])
    staff = app.test_client()
    support.login(staff, *STAFF)
    support.login(client, *ADMIN)
    client.post(
        f"/staff/{staff_id}/edit",
        data={"name": "Samuel", "role": "staff", "is_active": "on", "password": ""},
    )
    assert staff.get("/tasks").status_code == 200


def test_changing_ones_own_password_keeps_this_session_and_ends_the_others(app, client):
    admin_id = _admin(app)
    support.login(client, *ADMIN)
    elsewhere = app.test_client()
    support.login(elsewhere, *ADMIN)
    saved = client.post(
        f"/staff/{admin_id}/edit",
        data={"name": "Admin", "role": "admin", "is_active": "on", "password": "brand-new-pw"},
    )
    assert saved.status_code == 302
    assert client.get("/staff").status_code == 200
    assert elsewhere.get("/staff").status_code == 302


def test_a_new_password_through_the_api_ends_the_sessions_too(app, client, api):
    staff_id = support.make_staff(app, STAFF[0], password=STAFF[1])
    support.login(client, *STAFF)
    status, _ = api.put(f"/staff/{staff_id}", {"password": "new-password-2"})
    assert status == 200
    assert client.get("/tasks").status_code == 302


def test_an_idle_session_ends_and_use_keeps_it_alive(app, client):
    _admin(app)
    # read at each request; 4 s leaves room for a slow request on a loaded machine
    app.config["SESSION_IDLE_TIMEOUT"] = 4
    support.login(client, *ADMIN)
    for _ in range(5):  # used every second: alive past the timeout
        time.sleep(1)
        assert client.get("/operations").status_code == 200
    time.sleep(5)
    response = client.get("/operations")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/operations").status_code == 302  # ended for good


def test_a_session_ends_after_its_lifetime_even_in_use(app, client):
    _admin(app)
    app.config["SESSION_LIFETIME"] = 3
    support.login(client, *ADMIN)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert client.get("/operations").status_code == 200
        time.sleep(0.5)
    time.sleep(1.5)
    assert client.get("/operations").status_code == 302


def test_a_session_from_before_the_upgrade_is_asked_to_log_in(app, client):
    """A session without the stamps (made by an earlier release) is not trusted."""
    admin_id = _admin(app)
    with client.session_transaction() as session:
        session["_user_id"] = str(admin_id)
        session["_fresh"] = True
    assert client.get("/operations").status_code == 302


def _set_cookie(response):
    return next(v for k, v in response.headers.items() if k == "Set-Cookie" and "session=" in v)


def _app(tmp_path, **settings):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/cookies.sqlite3",
            "SECRET_KEY": "test-secret-key",
            "PAYMENT_WEBHOOK_SECRET": "x",
            "WTF_CSRF_ENABLED": False,
            "ARGON2_TIME_COST": 1,
            "ARGON2_MEMORY_COST": 1024,
            **settings,
        }
    )
    with app.app_context():
        schema.upgrade()
    return app


def _login_cookie(app, **kwargs):
    response = app.test_client().post(
        "/login", data={"email": ADMIN[0], "password": ADMIN[1]}, **kwargs
    )
    assert response.status_code == 302
    return _set_cookie(response)


def test_the_cookie_is_lax_httponly_and_secure_over_https(tmp_path):
    app = _app(tmp_path)
    _admin(app)
    plain = _login_cookie(app)
    assert "SameSite=Lax" in plain and "HttpOnly" in plain
    assert "Secure" not in plain  # http: a Secure cookie would never come back
    assert "Secure" in _login_cookie(app, base_url="https://provisor.example")
    # a client claiming HTTPS is not believed without a trusted proxy
    claimed = _login_cookie(app, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in claimed


def test_behind_a_trusted_tls_proxy_the_cookie_is_secure(tmp_path):
    app = _app(tmp_path, TRUSTED_PROXY_HOPS=1)
    _admin(app)
    cookie = _login_cookie(app, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in _login_cookie(app, headers={"X-Forwarded-Proto": "http"})


def test_cookie_secure_always_and_never(tmp_path):
    app = _app(tmp_path, COOKIE_SECURE="always")
    _admin(app)
    assert "Secure" in _login_cookie(app)
    app.config["COOKIE_SECURE"] = "NEVER"
    assert "Secure" not in _login_cookie(app, base_url="https://provisor.example")


def test_a_user_changing_their_own_password_ends_their_other_sessions(app, client):
    support.make_client_login(app)
    carol = ("carol@example.com", "carol-password")
    support.login(client, *carol)
    phone = app.test_client()
    support.login(phone, *carol)
    page = client.get("/account")
    assert page.status_code == 200 and "Change your password" in support.html(page)

    def change(current, new, repeat):
        return client.post(
            "/account",
            data={"current_password": current, "password": new, "password_repeat": repeat},
        )

    wrong = change("not-it", "carol-new-pw", "carol-new-pw")
    assert wrong.status_code == 422 and "Wrong password." in support.html(wrong)
    differ = change(carol[1], "carol-new-pw", "carol-new-px")
    assert differ.status_code == 422 and "The two passwords differ." in support.html(differ)
    short = change(carol[1], "short", "short")
    assert short.status_code == 422 and "At least 8 characters." in support.html(short)
    assert phone.get("/my").status_code == 200  # nothing changed so far
    done = change(carol[1], "carol-new-pw", "carol-new-pw")
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    assert "Your other sessions are logged out" in support.html(client.get("/account"))
    assert client.get("/my").status_code == 200  # this session goes on
    assert phone.get("/my").status_code == 302  # the other one ended
    refused = app.test_client().post("/login", data={"email": carol[0], "password": carol[1]})
    assert refused.status_code == 422
    support.login(app.test_client(), carol[0], "carol-new-pw")
