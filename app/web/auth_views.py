"""Logging in and out, and client self-registration."""

import logging
from datetime import timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import force_locale, format_timedelta, get_locale
from flask_babel import gettext as _
from flask_limiter import RateLimitExceeded
from flask_login import current_user, login_required

from app import throttle
from app.auth import client_required, end_session, restamp_session, start_session
from app.i18n import translated
from app.services import accounts
from app.services.errors import ValidationError
from app.web.helpers import local_url, public_url

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form; on POST check the credentials and go where the visitor wanted.

    Failed logins are limited per address and per account (``app.throttle``): past the
    limit the form answers 429 with a message and ``Retry-After``."""
    next_url = local_url(request.values.get("next"), default="")
    if current_user.is_authenticated and request.method == "GET":
        return redirect(next_url or url_for("home.index"))
    form = {"email": request.form.get("email", "")}
    errors = {}
    if request.method == "POST":
        user = accounts.authenticate(request.form.get("email"), request.form.get("password"))
        if user is not None:
            start_session(user)
            log.info("user %s logged in", user.email)
            return redirect(next_url or url_for("home.index"))
        errors["login"] = _("Wrong email or password.")
    status = 422 if errors else 200
    return render_template("auth/login.html", form=form, errors=errors, next=next_url), status


@bp.errorhandler(RateLimitExceeded)
def too_many_logins(exc):
    """The login form (or the password form) again, saying when to try again (429 with
    Retry-After)."""
    headers = throttle.refusal()[1]
    wait = timedelta(seconds=int(dict(headers)["Retry-After"]))
    message = _(
        "Too many failed logins: try again in %(wait)s.",
        wait=format_timedelta(wait, threshold=1.5),
    )
    if request.endpoint == "auth.account":
        errors = {"current_password": message}
        return render_template("auth/account.html", errors=errors), 429, headers
    form = {"email": request.form.get("email", "")}
    next_url = local_url(request.values.get("next"), default="")
    page = render_template("auth/login.html", form=form, errors={"login": message}, next=next_url)
    return page, 429, headers


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """One's own login: who they are, and a new password (the current one first). A new
    password logs out every other session of theirs; a wrong current password counts as a
    failed login."""
    errors = {}
    if request.method == "POST":
        data = {
            k: request.form.get(k, "") for k in ("current_password", "password", "password_repeat")
        }
        user = current_user._get_current_object()
        try:
            user = accounts.change_own_password(user, data)
        except accounts.WrongPassword as exc:
            g.password_refused = True
            errors = translated(exc.fields)
        except ValidationError as exc:
            errors = translated(exc.fields)
        else:
            restamp_session(user)
            log.info("user %s changed their password", user.email)
            flash(_("Password changed. Your other sessions are logged out."), "success")
            return redirect(url_for("auth.account"))
    return render_template("auth/account.html", errors=errors), 422 if errors else 200


@bp.post("/account/language")
@client_required
def language():
    """A client chooses the language of the client area and of their emails (English or
    Russian); a bad choice is the field's message on the account page."""
    try:
        client = accounts.update_client(
            current_user.client_id, {"language": request.form.get("language")}
        )
    except ValidationError as exc:
        errors = translated(exc.fields)
        form = {"language": request.form.get("language", "")}
        return render_template("auth/account.html", errors=errors, form=form), 422
    with force_locale(client.language):  # this request's locale was the old language
        flash(_("Your language is saved."), "success")
    return redirect(url_for("auth.account"))


@bp.post("/logout")
@login_required
def logout():
    """Log out (every session of this login ends) and go back to the login form."""
    end_session()
    flash(_("You are logged out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/register", methods=["GET", "POST"])
def register():
    """Client self-sign-up (when ALLOW_REGISTRATION): a client with a login, then /my."""
    if not current_app.config.get("ALLOW_REGISTRATION"):
        abort(404)
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = {"name": request.form.get("name", ""), "email": request.form.get("email", "")}
    errors = {}
    if request.method == "POST":
        # the new client's language: the one the page is shown in (the browser's)
        language = str(get_locale() or "en")
        data = {**form, "password": request.form.get("password", ""), "language": language}
        try:
            client = accounts.create_client(data, with_login=True)
        except ValidationError as exc:
            errors = translated(exc.fields)
        else:
            start_session(accounts.login_of(client))
            flash(_("Welcome! Your account is ready: order your first service."), "success")
            return redirect(url_for("my.index"))
    status = 422 if errors else 200
    return render_template("auth/register.html", form=form, errors=errors), status


def _reset_link(token):
    return public_url("auth.reset_password", token=token)


@bp.route("/forgot-password", methods=["GET", "POST"])
def forgot_password():
    """ "Forgot password?": a reset link goes to the address if a login has it; the answer
    is the same either way (it does not tell who has an account)."""
    form = {"email": request.form.get("email", "")}
    errors = {}
    if request.method == "POST":
        email = accounts.normal_email(form["email"])
        if not email or "@" not in email or len(email) > 200:
            errors["email"] = _("Must be an email address.")
        else:
            accounts.request_reset(email, _reset_link)
            flash(
                _(
                    "If an account has this address, a link to choose a new password is on "
                    "its way. It works once, for an hour."
                ),
                "info",
            )
            return redirect(url_for("auth.login"))
    status = 422 if errors else 200
    return render_template("auth/forgot.html", form=form, errors=errors), status


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
def reset_password(token):
    """Choose a new password with a reset link (once, before it expires); then log in."""
    reset = accounts.reset_of(token)
    if reset is None:
        page = render_template("auth/reset.html", expired=True, errors={})
        return page, 404, {"Cache-Control": "no-store"}
    errors = {}
    if request.method == "POST":
        data = {k: request.form.get(k, "") for k in ("password", "password_repeat")}
        try:
            user = accounts.reset_password(token, data)
        except ValidationError as exc:
            errors = translated(exc.fields)
        else:
            if current_user.is_authenticated:
                end_session()
            flash(_("Your new password is set: log in as %(email)s.", email=user.email), "success")
            return redirect(url_for("auth.login"))
    page = render_template("auth/reset.html", expired=False, errors=errors, token=token)
    # the link's token is in the URL: no referrer to other sites, nothing cached
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return page, (422 if errors else 200), headers
