"""Security headers on every kind of answer: pages, htmx partials, the JSON API, the
tasks proxy's API, static files, redirects and error pages (HTML and JSON); HSTS only
over HTTPS; and templates that need no inline script or style (the policy forbids them)."""

import json
import pathlib
import re

import pytest

from tests import support
from tests.support import HTMX

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMMON = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def policy(response):
    """The Content-Security-Policy as {directive: [values]}."""
    header = response.headers.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.request.path}"
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def assert_secured(response, page):
    for name, value in COMMON.items():
        assert response.headers.get(name) == value, (response.request.path, name)
    directives = policy(response)
    assert directives["frame-ancestors"] == ["'none'"], response.request.path
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in response.headers["Content-Security-Policy"]
    if page:
        assert directives["script-src"] == ["'self'"]
        assert directives["style-src"] == ["'self'"]
        assert directives["object-src"] == ["'none'"]
        assert directives["base-uri"] == ["'none'"]
        assert directives["form-action"] == ["'self'"]
    else:
        assert directives["default-src"] == ["'none'"], response.request.path
    assert "Strict-Transport-Security" not in response.headers  # plain http


@pytest.fixture
def boom(app):
    """A route that fails unexpectedly (the 500 page)."""

    def fail():
        raise RuntimeError("unexpected")

    app.add_url_rule("/test-boom", "test_boom", fail)
    app.add_url_rule("/api/v1/test-boom", "test_api_boom", fail)


def test_every_kind_of_answer_carries_the_headers(app, boom, client, admin):
    anonymous = app.test_client()
    staff_pages = [
        ("/operations", {}, 200, True),  # a page
        ("/operations", HTMX, 200, True),  # an htmx partial
        ("/services?q=x", HTMX, 200, True),
        ("/tasks", {}, 200, True),
        ("/catalog/tariffs", {}, 200, True),
        ("/proxy", {}, 200, True),
        ("/nowhere", {}, 404, True),  # error pages
        ("/operations/999999", {}, 404, True),
        ("/test-boom", {}, 500, True),
        ("/static/app.css", {}, 200, False),  # static files
        ("/static/vendor/htmx-2.0.11/htmx.min.js", {}, 200, False),
        ("/static/favicon.svg", {}, 200, False),
    ]
    for path, headers, status, page in staff_pages:
        response = client.get(path, headers=headers)
        assert response.status_code == status, path
        if path.startswith("/static/"):
            assert response.mimetype != "text/html"
        else:
            assert response.mimetype == "text/html", path
        assert_secured(response, page)
    for path, status, page in [
        ("/login", 200, True),
        ("/operations", 302, True),  # a redirect to the login page (an HTML body)
        ("/api/v1/health?scope=web", 200, False),  # the JSON API (no scheduler here)
        ("/api/v1/tariffs", 401, False),
        ("/api/v1/nowhere", 404, False),
        ("/api/v1/test-boom", 500, False),
        ("/proxy/v1/departments", 401, False),  # the tasks proxy's API
        ("/.well-known/acme-challenge/none", 404, False),
    ]:
        response = anonymous.get(path)
        assert response.status_code == status, path
        assert_secured(response, page)
    response = client.get("/api/v1/tariffs", headers=admin.headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert_secured(response, page=False)
    assert_secured(client.post("/api/v1/orders", data="{", headers=admin.headers), page=False)


def test_a_refused_login_and_a_refused_peer_carry_them_too(app, client):
    for _ in range(11):
        form = client.post("/login", data={"email": "x@example.com", "password": "nope"})
    assert form.status_code == 429
    assert_secured(form, page=True)
    peer = client.get("/proxy/v1/departments", auth=("nobody", "nope"))
    assert peer.status_code == 429
    assert_secured(peer, page=False)


def test_hsts_only_over_https(app):
    secure = app.test_client().get("/login", base_url="https://provisor.example")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
    api = app.test_client().get("/api/v1/health", base_url="https://provisor.example")
    assert api.headers["Strict-Transport-Security"] == "max-age=31536000"
    # a client cannot claim HTTPS without a trusted proxy (TRUSTED_PROXY_HOPS)
    claimed = app.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in claimed.headers
    app.config["HSTS_MAX_AGE"] = 0
    off = app.test_client().get("/login", base_url="https://provisor.example")
    assert "Strict-Transport-Security" not in off.headers


def test_hsts_behind_a_trusted_tls_proxy(tmp_path):
    from app import create_app

    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite3",
            "SECRET_KEY": "x",
            "PAYMENT_WEBHOOK_SECRET": "x",
            "TRUSTED_PROXY_HOPS": 1,
            "HSTS_MAX_AGE": 600,
        }
    )
    response = app.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert response.headers["Strict-Transport-Security"] == "max-age=600"


# --- what the policy forbids is nowhere in the templates ---------------------------------------

INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"<style\b", re.I), "a <style> element"),
    (re.compile(r"\sstyle\s*=", re.I), "a style= attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an on...= event handler"),
    (re.compile(r"\bhx-on\b|\bhx-on[:-]", re.I), "hx-on (evaluated code)"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
    (re.compile(r"\bjs:", re.I), "a js: value (evaluated by htmx)"),
    (re.compile(r"hx-trigger=\"[^\"]*\[", re.I), "an htmx event filter (evaluated code)"),
]


def test_no_template_needs_inline_script_or_style():
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        text = path.read_text()
        for pattern, what in INLINE:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert found == []


def test_htmx_is_told_not_to_insert_styles_or_evaluate_code(client):
    page = support.html(client.get("/login"))
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", page)
    assert meta, "the htmx-config meta tag"
    assert json.loads(meta.group(1)) == {
        "includeIndicatorStyles": False,
        "allowEval": False,
        "allowScriptTags": False,
    }
    css = (ROOT / "static" / "app.css").read_text()
    assert ".htmx-request .htmx-indicator" in css  # the styles htmx would have inserted
