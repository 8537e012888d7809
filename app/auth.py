"""Logins (flask-login sessions for pages, bearer tokens for the API) and CSRF.

A page login is a signed session cookie holding the user's id and three stamps
(:func:`start_session`): the user's ``session_version`` at login, when the login was
made, and when it was last used. Each request checks them (the user loader): the login
ends when the version moved on (the user logged out, or their password changed: every
session of theirs ends, copies of the cookie included), ``SESSION_LIFETIME`` seconds after
it was made, or after ``SESSION_IDLE_TIMEOUT`` seconds without a request (a page that
updates itself counts as use). An ended login is an anonymous visitor: pages send it to
``/login``.
"""

import functools
import logging
import time

from flask import abort, current_app, g, jsonify, redirect, request, session, url_for
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFProtect

from app.models import User
from app.services.errors import PermissionDenied

log = logging.getLogger(__name__)

login_manager = LoginManager()
csrf = CSRFProtect()

STAMPS = ("_sv", "_login_at", "_seen_at")  # session keys: version, made, last used
AS_CLIENT = "_as_client"  # session key: the client whose area staff view (read-only)
# what a session viewing the client area may still POST: ending it, logging out
WHILE_VIEWING_AS_CLIENT = ("clients.stop_viewing_as", "auth.logout")


@login_manager.user_loader
def _load_user(user_id):
    user = User.get_or_none_by_id(user_id)
    if user is None or not user.is_active:
        return None
    if not _session_holds(user):
        for key in (*STAMPS, "_user_id", "_fresh", "_id"):
            session.pop(key, None)
        return None
    return user


def _session_holds(user):
    """Whether this session's login of ``user`` is still good; marks it used."""
    config = current_app.config
    now = int(time.time())
    login_at, seen_at = session.get("_login_at"), session.get("_seen_at")
    if session.get("_sv") != user.session_version or not (
        isinstance(login_at, int) and isinstance(seen_at, int)
    ):
        reason = "ended (logout or new password)"
    elif now - login_at >= config["SESSION_LIFETIME"]:
        reason = "too old (SESSION_LIFETIME)"
    elif now - seen_at >= config["SESSION_IDLE_TIMEOUT"]:
        reason = "unused too long (SESSION_IDLE_TIMEOUT)"
    else:
        # the cookie is written again when the stamp moves: not on every request
        if now - seen_at >= min(60, config["SESSION_IDLE_TIMEOUT"] // 10):
            session["_seen_at"] = now
        return True
    log.info("session of %s refused: %s", user.email, reason)
    return False


def start_session(user):
    """Log ``user`` in to the pages: a fresh session (nothing of the anonymous one is
    kept), stamped with their session version and the time."""
    session.clear()
    login_user(user)
    now = int(time.time())
    session.update({"_sv": user.session_version, "_login_at": now, "_seen_at": now})


def restamp_session(user):
    """Keep this session after ``user``'s session version moved on (they changed their own
    password here: their other sessions end, this one goes on)."""
    session["_sv"] = user.session_version


def end_session():
    """Log out: this login and every other session of the user end (a copied cookie
    too)."""
    from app.services import accounts

    user = current_user._get_current_object()
    if getattr(user, "is_authenticated", False):
        accounts.end_sessions(user)
    logout_user()
    for key in (*STAMPS, AS_CLIENT):
        session.pop(key, None)


@login_manager.unauthorized_handler
def _unauthorized():
    target = url_for("auth.login", next=request.full_path.rstrip("?"))
    if request.htmx:  # any htmx request, boosted too: htmx follows HX-Redirect
        response = jsonify({})
        response.headers["HX-Redirect"] = target
        return response, 401
    return redirect(target)


def init_app(app):
    login_manager.init_app(app)
    csrf.init_app(app)
    app.before_request(refuse_writes_while_viewing_as_client)


def _role_required(check):
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not check(current_user):
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def viewing_as_client():
    """The id of the client whose area this staff session views (read-only), or None."""
    client_id = session.get(AS_CLIENT)
    if isinstance(client_id, int) and current_user.is_authenticated and current_user.is_staff:
        return client_id
    return None


def acting_client_id():
    """The client whose area this page shows: the logged-in client's, or the one staff
    view as (:func:`viewing_as_client`)."""
    if current_user.is_authenticated and current_user.role == "client":
        return current_user.client_id
    return viewing_as_client()


def view_as_client(client_id):
    """From now on this staff session sees the client area as ``client_id``, read-only."""
    session[AS_CLIENT] = int(client_id)


def stop_viewing_as_client():
    """Back to the staff member's own view; the client's id it was (or None)."""
    return session.pop(AS_CLIENT, None)


def refuse_writes_while_viewing_as_client():
    """Every POST (PUT, DELETE...) of a page session viewing the client area as a client
    is refused (403), but ending that view and logging out: it is read-only."""
    if request.method in ("GET", "HEAD", "OPTIONS") or request.endpoint in WHILE_VIEWING_AS_CLIENT:
        return None
    if request.path.startswith(("/api/", "/proxy/")) or viewing_as_client() is None:
        return None
    log.info(
        "%s %s refused: %s views the client area", request.method, request.path, current_user.email
    )
    raise PermissionDenied(
        "you are viewing the client area as a client: it is read-only (stop viewing as "
        "the client to make changes)"
    )


staff_required = _role_required(lambda u: u.is_staff)
admin_required = _role_required(lambda u: u.is_admin)
client_required = _role_required(
    lambda u: (
        (u.role == "client" and u.client_id is not None)
        or (u.is_staff and viewing_as_client() is not None)
    )
)


def api_user():
    """The user of the bearer token of this API request, or None."""
    if "api_user" not in g:
        from app.services import accounts

        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        g.api_user = accounts.user_for_token(token.strip()) if scheme.lower() == "bearer" else None
    return g.api_user
