"""Logins (flask-login sessions for pages, bearer tokens for the API) and CSRF."""

import functools

from flask import abort, g, jsonify, redirect, request, url_for
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect

from app.models import User

login_manager = LoginManager()
csrf = CSRFProtect()


@login_manager.user_loader
def _load_user(user_id):
    user = User.get_or_none_by_id(user_id)
    return user if user is not None and user.is_active else None


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


staff_required = _role_required(lambda u: u.is_staff)
admin_required = _role_required(lambda u: u.is_admin)
client_required = _role_required(lambda u: u.role == "client" and u.client_id is not None)


def api_user():
    """The user of the bearer token of this API request, or None."""
    if "api_user" not in g:
        from app.services import accounts

        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        g.api_user = accounts.user_for_token(token.strip()) if scheme.lower() == "bearer" else None
    return g.api_user
