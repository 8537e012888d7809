"""Clients (staff): the list with search, each client's record (contact details, notes,
what they have, password, actions on all their services, viewing the client area as
them); admins add new clients."""

from flask import (
    Blueprint,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from app.auth import (
    admin_required,
    staff_required,
    stop_viewing_as_client,
    view_as_client,
)
from app.models import MAX_SEARCH
from app.services import accounts, clients, resellers
from app.services.errors import ValidationError
from app.states import KINDS
from app.web.helpers import Page, Sorting, csv_response, public_url, render, search_status

CONTACT_FIELDS = ("name", "email", "language", "phone", "company", "address", "country")

bp = Blueprint("clients", __name__)


CSV_HEADER = ("Client", "Name", "Email", "Client since", "Reseller on account")


def _sorting():
    return Sorting(accounts.CLIENT_SORTS, default="id")


@bp.get("/clients")
@staff_required
def index():
    """Clients, newest first; ``q`` searches name, email and company; sorting by column,
    pages."""
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


def _record_page(client_id, status=200, form=None, errors=None, failed=None):
    """The client page; after a refused form (``failed``: contact, note or password) its
    values and errors (the forms' field names differ, so one ``form`` and ``errors``)."""
    context = clients.record(client_id)
    client = context["client"]
    values = {name: getattr(client, name) for name in CONTACT_FIELDS}
    return render_template(
        "clients/detail.html",
        notes=clients.notes(client_id),
        form={**values, **(form or {})},
        errors=errors or {},
        failed=failed,
        kinds=KINDS,
        **context,
    ), status


@bp.get("/clients/<int:client_id>")
@staff_required
def detail(client_id):
    """A client's record: contact details, notes, their orders, services, tasks and
    emails, password, actions on all their services, viewing the client area as them."""
    return _record_page(client_id)


@bp.post("/clients/<int:client_id>/contact")
@staff_required
def contact(client_id):
    """Change the contact details; a refused field is said by the field, nothing saved."""
    form = {name: request.form.get(name, "") for name in CONTACT_FIELDS}
    if "language" not in request.form:
        del form["language"]  # a form without the choice leaves the language as it is
    try:
        client = accounts.update_client(client_id, form, actor=current_user.email)
    except ValidationError as exc:
        return _record_page(client_id, 422, form, exc.fields, failed="contact")
    flash(f"Contact details of {client.name} saved.", "success")
    return redirect(url_for("clients.detail", client_id=client_id))


@bp.post("/clients/<int:client_id>/notes")
@staff_required
def add_note(client_id):
    """Add a staff note (signed with the staff member's email and the time)."""
    form = {"text": request.form.get("text", "")}
    try:
        clients.add_note(client_id, form, actor=current_user.email)
    except ValidationError as exc:
        return _record_page(client_id, 422, form, exc.fields, failed="note")
    flash("Note added.", "success")
    return redirect(url_for("clients.detail", client_id=client_id, _anchor="notes"))


@bp.post("/clients/<int:client_id>/password/reset")
@staff_required
def send_reset(client_id):
    """Email the client a password reset link (through the outbox)."""
    try:
        login = accounts.client_login_for_reset(client_id)
    except ValidationError as exc:
        return _record_page(client_id, 422, errors=exc.fields, failed="password")
    accounts.start_reset(login, current_user.email, _reset_link)
    flash(f"A password reset link was sent to {login.email}.", "success")
    return redirect(url_for("clients.detail", client_id=client_id, _anchor="password"))


def _reset_link(token):
    return public_url("auth.reset_password", token=token)


@bp.post("/clients/<int:client_id>/password")
@admin_required
def set_password(client_id):
    """Set the client's password (a client without a login gets one). Admins only: whoever
    sets it can log in as the client for real; other staff email a reset link."""
    data = {k: request.form.get(k, "") for k in ("password", "password_repeat")}
    try:
        login = accounts.set_client_password(client_id, data, actor=current_user.email)
    except ValidationError as exc:
        return _record_page(client_id, 422, errors=exc.fields, failed="password")
    flash(f"New password set: the client logs in as {login.email}.", "success")
    return redirect(url_for("clients.detail", client_id=client_id, _anchor="password"))


@bp.post("/clients/<int:client_id>/services/<any(suspend, close):kind>")
@staff_required
def all_services(client_id, kind):
    """Suspend (or close) every eligible service of the client: the normal operation of
    each is queued."""
    queued, refused = clients.request_all(client_id, kind, actor=current_user.email)
    label = KINDS[kind].label.lower()
    if queued:
        ids = ", ".join(f"#{op.service_id}" for op in queued)
        flash(
            f"{KINDS[kind].label}: {len(queued)} operation(s) queued (services {ids}).", "success"
        )
    else:
        flash(f"No service of this client can be asked to {label} now.", "info")
    for service_id, why in refused.items():
        flash(f"Service #{service_id}: {why}", "error")
    return redirect(url_for("clients.detail", client_id=client_id))


@bp.post("/clients/<int:client_id>/view-as")
@staff_required
def view_as(client_id):
    """Start viewing the client area as this client (read-only; logged on the record)."""
    clients.start_impersonation(client_id, current_user._get_current_object())
    view_as_client(client_id)
    return redirect(url_for("my.index"))


@bp.post("/view-as/stop")
@staff_required
def stop_viewing_as():
    """Stop viewing the client area as a client: back to their record."""
    client_id = stop_viewing_as_client()
    if not isinstance(client_id, int):
        return redirect(url_for("clients.index"))
    return redirect(url_for("clients.detail", client_id=client_id))
