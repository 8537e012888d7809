"""Limits on password guessing (Flask-Limiter): failed logins are counted per client
address and per account, on the login form (``auth.login``), on the tasks proxy's HTTP
Basic auth (``/proxy/v1``) and for the current password asked to change one's own
(``auth.account``).

- Per address (``LOGIN_LIMIT_PER_ADDRESS``, default ``10/minute;60/hour``): the failed
  logins from one address, whatever the account (both doors count together; an IPv6
  address counts with its /64). Once used up, that address gets 429 until the window
  moves on, even with the right password; other addresses are not affected.
- Per account (``LOGIN_LIMIT_PER_ACCOUNT``, default ``100/hour``): the failed logins for
  one email (or proxy login) from all addresses together, against guessing spread over
  many addresses. It is higher than the per-address limit, so one address alone cannot
  lock an account's owner out; when it is used up, every address gets 429 for that
  account until the window moves on.

Only failures count (a wrong password, an unknown login), in a moving window. A refused
attempt answers 429 with ``Retry-After`` (seconds): the login form with a message, JSON
``{"error": {"code": "too_many_requests", ...}}`` on ``/proxy/v1``. The counts live in
Redis when ``REDIS_URL`` is set (shared by every web process), in memory otherwise (the
embedded mode's one process); if Redis cannot be reached, each process counts in memory
until it can again. Client addresses are those the request came from, or, with
``TRUSTED_PROXY_HOPS``, the one the trusted reverse proxies say (``app.security``).
"""

import ipaddress
import math
import time

from flask import current_app, g, render_template, request
from flask_limiter import Limiter, RateLimitExceeded

from app.services.errors import ServiceError
from app.web.errors import json_error

ADDRESS_SCOPE = "logins-per-address"  # the login form and the proxy count together


def client_address():
    """The client's address as the limits count it: IPv4 as is, IPv6 by its /64."""
    raw = request.remote_addr or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


def form_account():
    """The account a login form names (its email as looked up)."""
    from app.services.accounts import normal_email

    return "email:" + (normal_email(request.form.get("email")) or "-")


def own_account():
    """The account of the logged-in user (changing their password)."""
    from flask_login import current_user

    return "email:" + (getattr(current_user, "email", None) or "-")


def peer_account():
    """The login a proxy request names in its Basic auth."""
    auth = request.authorization
    return "peer:" + ((auth.username if auth else None) or "-")


def _storage_uri(config):
    url = config.get("REDIS_URL")
    if not url:
        return "memory://"
    if url.startswith("unix://"):
        return "redis+" + url
    return url


def _limit(name):
    return lambda: current_app.config[name]


def init_app(app):
    """One limiter per app (its own storage), with the limits on the login form and the
    proxy blueprint; 429 answers through :func:`too_many`."""
    limiter = Limiter(
        key_func=client_address,
        storage_uri=_storage_uri(app.config),
        strategy="moving-window",
        key_prefix=f"{app.config['REDIS_NAMESPACE']}:logins",
        headers_enabled=False,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.init_app(app)
    app.extensions["provisor.limiter"] = limiter

    def failed_form(response):
        return response.status_code == 422

    def failed_peer(response):
        return response.status_code == 401

    login = app.view_functions["auth.login"]
    login = limiter.shared_limit(
        _limit("LOGIN_LIMIT_PER_ADDRESS"),
        scope=ADDRESS_SCOPE,
        methods=["POST"],
        deduct_when=failed_form,
    )(login)
    login = limiter.limit(
        _limit("LOGIN_LIMIT_PER_ACCOUNT"),
        key_func=form_account,
        methods=["POST"],
        deduct_when=failed_form,
    )(login)
    app.view_functions["auth.login"] = login

    def refused_password(response):
        return bool(g.get("password_refused"))

    account = app.view_functions["auth.account"]
    account = limiter.shared_limit(
        _limit("LOGIN_LIMIT_PER_ADDRESS"),
        scope=ADDRESS_SCOPE,
        methods=["POST"],
        deduct_when=refused_password,
    )(account)
    account = limiter.limit(
        _limit("LOGIN_LIMIT_PER_ACCOUNT"),
        key_func=own_account,
        methods=["POST"],
        deduct_when=refused_password,
    )(account)
    app.view_functions["auth.account"] = account

    from proxy import proxy_bp

    limiter.shared_limit(
        _limit("LOGIN_LIMIT_PER_ADDRESS"), scope=ADDRESS_SCOPE, deduct_when=failed_peer
    )(proxy_bp)
    limiter.limit(
        _limit("LOGIN_LIMIT_PER_ACCOUNT"), key_func=peer_account, deduct_when=failed_peer
    )(proxy_bp)

    app.register_error_handler(RateLimitExceeded, too_many)


def allow_availability_check(account_key):
    """Whether one more availability check (the order form asking a registry whether a
    name is free, as the client types) is within ``AVAILABILITY_CHECK_LIMIT`` for this
    account: each check is a session at the registry, so one client cannot turn the form
    into a flood. A storage that cannot be reached allows it (the order still checks)."""
    from limits import parse_many

    limiter = current_app.extensions["provisor.limiter"]
    try:
        for item in parse_many(current_app.config["AVAILABILITY_CHECK_LIMIT"]):
            if not limiter.limiter.hit(item, "availability-checks", account_key):
                return False
    except Exception:  # noqa: BLE001 - counting must never stop ordering
        return True
    return True


def retry_after():
    """Seconds until the limit this request broke lets a login be tried again."""
    limiter = current_app.extensions["provisor.limiter"]
    try:
        breached = limiter.current_limit
        reset_at = breached.window[0] if breached is not None else None
    except Exception:  # the storage went away meanwhile: a guess is enough
        reset_at = None
    if reset_at is None:
        return 60
    return max(1, math.ceil(reset_at - time.time()))


def in_words(seconds):
    """``"30 seconds"``, ``"5 minutes"``: how long to wait, for a message."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minutes"


class TooManyLogins(ServiceError):
    status = 429
    code = "too_many_requests"


def refusal():
    """The refusal of this request's login attempt: ``(message, Retry-After headers)``."""
    wait = retry_after()
    return f"Too many failed logins: try again in {in_words(wait)}.", [("Retry-After", str(wait))]


def too_many(exc):
    """429 with Retry-After: JSON on the API and the proxy, the error page elsewhere (the
    login form shows its own, ``auth_views``)."""
    message, headers = refusal()
    if request.path.startswith(("/api/", "/proxy/")):
        return json_error(429, TooManyLogins.code, message, headers=headers)
    error = TooManyLogins(message.rstrip("."))
    return render_template("error.html", error=error), 429, headers
