"""Logging in and out, and client self-registration."""

import logging

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.services import accounts
from app.services.errors import ValidationError
from app.web.helpers import local_url

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form; on POST check the credentials and go where the visitor wanted."""
    next_url = local_url(request.values.get("next"), default="")
    if current_user.is_authenticated and request.method == "GET":
        return redirect(next_url or url_for("home.index"))
    form = {"email": request.form.get("email", "")}
    errors = {}
    if request.method == "POST":
        user = accounts.authenticate(request.form.get("email"), request.form.get("password"))
        if user is not None:
            login_user(user)
            log.info("user %s logged in", user.email)
            return redirect(next_url or url_for("home.index"))
        errors["login"] = "Wrong email or password."
    status = 422 if errors else 200
    return render_template("auth/login.html", form=form, errors=errors, next=next_url), status


@bp.post("/logout")
@login_required
def logout():
    """Log out and go back to the login form."""
    logout_user()
    flash("You are logged out.", "info")
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
        data = {**form, "password": request.form.get("password", "")}
        try:
            client = accounts.create_client(data, with_login=True)
        except ValidationError as exc:
            errors = exc.fields
        else:
            login_user(accounts.login_of(client))
            flash("Welcome! Your account is ready: order your first service.", "success")
            return redirect(url_for("my.index"))
    status = 422 if errors else 200
    return render_template("auth/register.html", form=form, errors=errors), status
