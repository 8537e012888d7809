"""The tasks proxy (admins): server sides (this instance receives tasks) and client sides
(this instance sends tasks), checking the peers now, and the proxy part of a task page.

Thin views: every change goes through ``app.services.proxy``. Passwords are never shown
back in a form, never put in a page and never logged.
"""

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from app.auth import admin_required
from app.services import catalog, proxy
from app.services.errors import ServiceError, ValidationError
from app.web.helpers import local_url, render

bp = Blueprint("proxy_ui", __name__, url_prefix="/proxy")

# form field names are prefixed: both forms have a login and a password on one page
SERVER_FIELDS = ("login", "password", "department_id")
CLIENT_FIELDS = ("url", "login", "password", "remote_department_id", "department_id")
PEER_FIELDS = ("url", "login", "password")


@bp.errorhandler(HTTPException)
def _http_error(exc):
    # the app answers JSON for every path under /proxy/ (meant for /proxy/v1): these are
    # pages, so their errors (a staff member's 403, a missing CSRF token) are pages too
    return render_template("error.html", error=exc), exc.code


@bp.errorhandler(ServiceError)
def _service_error(exc):
    return render_template("error.html", error=exc), exc.status


@bp.app_context_processor
def _proxy_globals():
    return {
        "proxy_link": proxy_link,
        "proxy_parked": proxy.parked_changes,
        "proxy_change_name": proxy.change_name,
    }


def proxy_link(task):
    """``(link, inbound)`` of a task: how it is forwarded, where it came from (or None)."""
    if task is None:
        return None, None
    return proxy.link_of(task), proxy.inbound_of(task)


# --- form data ------------------------------------------------------------------------------


def _form(prefix, names):
    """The service's data from the ``<prefix>.<name>`` fields of the form."""
    return {name: request.form.get(f"{prefix}.{name}", "") for name in names}


def _shown(prefix, data):
    """The values to put back in a form: never the password."""
    return {f"{prefix}.{k}": v for k, v in data.items() if k != "password"}


def _prefixed(prefix, fields):
    return {f"{prefix}.{k}": v for k, v in fields.items()}


def _peer_error_field(exc):
    """Which field a failed call to the peer is about: a refused login is about the login
    and password (the password is what is typed again), anything else about the URL."""
    return "client.password" if exc.code == "peer_unauthorized" else "client.url"


def _load_remote(data):
    """``(departments, error)`` the remote offers to this login; never raises."""
    try:
        return proxy.remote_departments(data), None
    except ValidationError as exc:
        labels = {"url": "URL", "login": "Login", "password": "Password"}
        missing = "; ".join(f"{labels.get(k, k)}: {v}" for k, v in exc.fields.items())
        return None, missing or exc.message
    except ServiceError as exc:
        return None, exc.message


# --- the page --------------------------------------------------------------------------------


def _page(
    server_form=None,
    server_errors=None,
    client_form=None,
    client_errors=None,
    remote=None,
    remote_error=None,
    status=200,
):
    return render(
        "proxy/index.html",
        "proxy/_remote_departments.html",
        target="remote-departments",
        server_sides=proxy.server_sides(),
        client_sides=proxy.client_sides(),
        parked=proxy.parked_counts(),
        departments=catalog.departments(),
        server_form=server_form or {},
        server_errors=server_errors or {},
        client_form=client_form or {},
        client_errors=client_errors or {},
        remote=remote,
        remote_error=remote_error,
    ), status


@bp.get("")
@admin_required
def index():
    """Server sides and client sides, their state and last errors, and the forms."""
    return _page()


@bp.post("/server-sides")
@admin_required
def server_side_new():
    """Accept tasks from a remote instance (logging in as ``login``) into a department."""
    data = _form("server", SERVER_FIELDS)
    try:
        side = proxy.create_server_side(data)
    except ValidationError as exc:
        return _page(
            server_form=_shown("server", data),
            server_errors=_prefixed("server", exc.fields),
            status=422,
        )
    flash(f"Server side {side.login} created: its tasks go to {side.department.name}.", "success")
    return redirect(url_for("proxy_ui.index", _anchor=f"server-side-{side.id}"))


@bp.post("/client-sides/departments")
@admin_required
def remote_departments():
    """The htmx step of the client side form: log in to the remote instance and list the
    departments it offers (or say plainly why not). Without htmx, the whole page."""
    data = _form("client", CLIENT_FIELDS)
    remote, error = _load_remote(data)
    return _page(client_form=_shown("client", data), remote=remote, remote_error=error)


@bp.post("/client-sides")
@admin_required
def client_side_new():
    """Forward the tasks of a local department to a department of the remote instance."""
    data = _form("client", CLIENT_FIELDS)
    remote = remote_error = None
    try:
        side = proxy.create_client_side(data)
    except ValidationError as exc:
        errors = _prefixed("client", exc.fields)
        if not any(name in exc.fields for name in PEER_FIELDS):
            # the remote answered (or was not asked yet): list its departments again
            remote, remote_error = _load_remote(data)
    except ServiceError as exc:  # the remote refused the login, or cannot be reached
        errors = {_peer_error_field(exc): exc.message}
        remote_error = exc.message
    else:
        flash(
            f"Client side created: tasks of {side.department.name} go to {side.url} "
            f"({side.remote_department_name}).",
            "success",
        )
        return redirect(url_for("proxy_ui.index", _anchor=f"client-side-{side.id}"))
    return _page(
        client_form=_shown("client", data),
        client_errors=errors,
        remote=remote,
        remote_error=remote_error,
        status=422,
    )


# --- check now --------------------------------------------------------------------------------


def _changes(count):
    return f"{count} change{'' if count == 1 else 's'} brought back"


@bp.post("/client-sides/<int:side_id>/check")
@admin_required
def check(side_id):
    """Bring back the remote changes of one client side now (instead of in 5 minutes)."""
    side = proxy.get_client_side(side_id)
    try:
        count = proxy.pull(side.id, wait=True)
    except ServiceError as exc:
        flash(f"Checking {side.url} failed: {exc.message}", "error")
    else:
        flash(f"{_changes(count)} from {side.url}.", "success")
    return redirect(local_url(request.form.get("next"), url_for("proxy_ui.index")))


@bp.post("/check")
@admin_required
def check_all():
    """Bring back the remote changes of every client side now."""
    results = proxy.check_all()
    if not results:
        flash("No client side to check.", "info")
    sides = {side.id: side for side in proxy.client_sides()}
    for side_id, result in results.items():
        url = sides[side_id].url if side_id in sides else f"client side {side_id}"
        if isinstance(result, int):
            flash(f"{_changes(result)} from {url}.", "success")
        else:
            flash(f"Checking {url} failed: {result}", "error")
    return redirect(local_url(request.form.get("next"), url_for("proxy_ui.index")))


# --- pushing: retry now, parked changes ------------------------------------------------------


@bp.post("/client-sides/<int:side_id>/push")
@admin_required
def push_now(side_id):
    """Send the pending changes now instead of at the next due time of the backoff."""
    side = proxy.get_client_side(side_id)
    try:
        sent = proxy.push_now(side.id)
    except ServiceError as exc:
        flash(f"Sending to {side.url} failed: {exc.message}", "error")
    else:
        flash(f"{sent} change{'' if sent == 1 else 's'} sent to {side.url}.", "success")
    return redirect(local_url(request.form.get("next"), url_for("proxy_ui.index")))


@bp.post("/changes/<int:change_id>/retry")
@admin_required
def change_retry(change_id):
    """Send a change the remote refused again (after it was fixed there)."""
    change = proxy.retry_change(change_id)
    flash(f"Change {change.id} of task #{change.task_id} will be sent again.", "success")
    return redirect(local_url(request.form.get("next"), url_for("proxy_ui.index")))


@bp.post("/changes/<int:change_id>/skip")
@admin_required
def change_skip(change_id):
    """Give up a change the remote refused: it is never sent; the rest goes on."""
    change = proxy.skip_change(change_id)
    flash(f"Change {change.id} of task #{change.task_id} skipped.", "success")
    return redirect(local_url(request.form.get("next"), url_for("proxy_ui.index")))
