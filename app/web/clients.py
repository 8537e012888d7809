"""Clients (staff): the list with search; admins add new clients."""

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for

from app.auth import admin_required, staff_required
from app.models import MAX_SEARCH
from app.services import accounts, resellers
from app.services.errors import ValidationError
from app.web.helpers import Page, Sorting, csv_response, render, search_status

bp = Blueprint("clients", __name__)


CSV_HEADER = ("Client", "Name", "Email", "Client since", "Reseller on account")


def _sorting():
    return Sorting(accounts.CLIENT_SORTS, default="id")


@bp.get("/clients")
@staff_required
def index():
    """Clients, newest first; ``q`` searches name and email; sorting by column, pages."""
    q = request.args.get("q", "").strip()
    sorting = _sorting()
    errors = {}
    try:
        page = Page(accounts.clients(q or None, sorting.key, sorting.desc))
    except ValidationError as exc:  # a search too long: said by the field, nothing listed
        errors, page = exc.fields, Page.empty()
    return render(
        "clients/index.html",
        "clients/_rows.html",
        target="clients-list",
        page=page,
        filters={"q": q},
        sorting=sorting,
        errors=errors,
        max_search=MAX_SEARCH,
    ), search_status(errors)


@bp.get("/clients/export.csv")
@staff_required
def export():
    """The clients list as CSV: every page, with the list's search and order."""
    sorting = _sorting()
    query = accounts.clients(request.args.get("q", "").strip() or None, sorting.key, sorting.desc)
    return csv_response(
        "clients.csv",
        CSV_HEADER,
        query,
        lambda c: (c.id, c.name, c.email, c.created_at, c.on_account),
    )


@bp.route("/clients/new", methods=["GET", "POST"])
@admin_required
def new():
    """Add a client; with a password the client can log in to the client area."""
    form = {
        "name": request.form.get("name", ""),
        "email": request.form.get("email", ""),
        "language": request.form.get("language", "en"),
    }
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


@bp.post("/clients/<int:client_id>/reseller")
@admin_required
def make_reseller(client_id):
    """Make a client a reseller paying on account; its new token is shown once, here."""
    client, token = resellers.enable(client_id)
    response = make_response(render_template("clients/reseller.html", client=client, token=token))
    response.headers["Cache-Control"] = "no-store"  # the token is shown once, kept nowhere
    return response


@bp.post("/clients/<int:client_id>/reseller/end")
@admin_required
def end_reseller(client_id):
    """The client is no reseller any more: its reseller tokens stop working."""
    client = resellers.disable(client_id)
    flash(f"Client {client.name} <{client.email}> is no longer a reseller.", "success")
    return redirect(url_for("clients.index"))
