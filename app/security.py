"""What every answer carries and how the session cookie is sent.

- Behind reverse proxies (``TRUSTED_PROXY_HOPS`` > 0) their ``X-Forwarded-For``,
  ``-Proto``, ``-Host``, ``-Port`` and ``-Prefix`` headers are believed (werkzeug's
  ProxyFix, as many hops as configured; never when 0, so a client cannot claim an address
  or HTTPS by itself).
- The session cookie is ``HttpOnly``, ``SameSite=Lax``, and ``Secure`` as
  ``COOKIE_SECURE`` says (``AUTO``: when the request came over HTTPS, directly or as a
  trusted proxy says); it is signed with ``SECRET_KEY`` and still accepted when signed with
  one of ``SECRET_KEY_FALLBACKS``. How long a login lasts is ``app.auth``'s business.
- Security headers on every answer: a Content-Security-Policy without inline script or
  style for pages (``default-src 'none'`` for everything else), framing refused
  (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), ``nosniff``, a
  same-origin Referrer-Policy and opener policy, and HSTS (``HSTS_MAX_AGE``) on answers
  over HTTPS only.
"""

from flask import has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, ``Secure`` as ``COOKIE_SECURE`` says."""

    def get_cookie_secure(self, app):
        mode = app.config["COOKIE_SECURE"]
        if mode == "AUTO":
            return has_request_context() and request.is_secure
        return mode == "ALWAYS"


def init_app(app):
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    app.session_interface = SessionInterface()
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SECRET_KEY_FALLBACKS"] = list(app.config.get("SECRET_KEY_FALLBACKS") or ())
    # the signed cookie itself expires with the longest a login may last
    app.config["PERMANENT_SESSION_LIFETIME"] = app.config["SESSION_LIFETIME"]

    @app.after_request
    def _security_headers(response):
        html = response.mimetype == "text/html"
        response.headers.setdefault(
            "Content-Security-Policy", PAGE_POLICY if html else OTHER_POLICY
        )
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        max_age = app.config["HSTS_MAX_AGE"]
        if request.is_secure and max_age:
            response.headers.setdefault("Strict-Transport-Security", f"max-age={max_age}")
        return response
