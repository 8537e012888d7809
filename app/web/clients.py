"""Clients (staff): the list with search; admins add new clients."""

from flask import Blueprint, flash, redirect, render_template, request, url_for

from app.auth import admin_required, staff_required
from app.models import MAX_SEARCH
from app.services import accounts
from app.services.errors import ValidationError
from app.web.helpers import Page, render, search_status

bp = Blueprint("clients", __name__)


@bp.get("/clients")
@staff_required
def index():
    """Clients, newest first; ``q`` searches name and email."""
    q = request.args.get("q", "").strip()
    errors = {}
    try:
        page = Page(accounts.clients(q or None))
    except ValidationError as exc:  # a search too long: said by the field, nothing listed
        errors, page = exc.fields, Page.empty()
    return render(
        "clients/index.html",
        "clients/_rows.html",
        target="clients-list",
        page=page,
        filters={"q": q},
        errors=errors,
        max_search=MAX_SEARCH,
    ), search_status(errors)


@bp.route("/clients/new", methods=["GET", "POST"])
@admin_required
def new():
    """Add a client; with a password the client can log in to the client area."""
    form = {"name": request.form.get("name", ""), "email": request.form.get("email", "")}
    errors = {}
    if request.method == "POST":
        password = request.form.get("password", "")
        data = {**form, "password": password}
        try:
            client = accounts.create_client(data, with_login=bool(password))
        except ValidationError as exc:
            errors = exc.fields
        else:
            flash(f"Client {client.name} <{client.email}> added.", "success")
            return redirect(url_for("clients.index"))
    return render_template("clients/new.html", form=form, errors=errors), 422 if errors else 200
