"""Services (staff): the list, one service's whole story, and staff actions on it."""

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import MAX_SEARCH, Service
from app.services import accounts, catalog, dashboard, imports, mail, provisioning
from app.services.errors import Conflict, NotFound, ValidationError
from app.states import KINDS, REQUESTABLE
from app.web.helpers import (
    Page,
    Sorting,
    arg_choice,
    arg_int,
    csv_response,
    render,
    search_status,
)

bp = Blueprint("services", __name__)


CSV_HEADER = ("Service", "Client", "Email", "Tariff", "Status", "Remote id", "Domain")
CSV_HEADER += ("Created", "Active since", "Expires")


def _list():
    """The list's filters, order and query (the page and its CSV export share them)."""
    filters = {
        "q": request.args.get("q", "").strip(),
        "status": arg_choice("status", Service.STATUSES, default=""),
        "client_id": arg_int("client_id"),
        "stuck": request.args.get("stuck") == "1",
    }
    if filters["stuck"]:  # the dashboard's link: in setup for longer than an hour
        filters["status"] = "processing"
    sorting = Sorting(provisioning.service_sorts(), default="id")
    return filters, sorting


def _query(filters, sorting):
    return provisioning.list_services(
        filters["status"] or None,
        filters["client_id"],
        filters["q"] or None,
        sorting.key,
        sorting.desc,
        unchanged_since=dashboard.stuck_before() if filters["stuck"] else None,
    )


@bp.get("/services")
@staff_required
def index():
    """Services with search (client, email, tariff, domain, remote id, #id), a status
    filter, sorting by column and pages; ``stuck=1``: those in setup for longer than an
    hour (the dashboard's link)."""
    filters, sorting = _list()
    errors = {}
    try:
        page = Page(_query(filters, sorting))
    except ValidationError as exc:  # a search too long: said by the field, nothing listed
        errors, page = exc.fields, Page.empty()
    client = accounts.get_client(filters["client_id"]) if filters["client_id"] else None
    return render(
        "services/index.html",
        "services/_rows.html",
        target="services-list",
        page=page,
        filters=filters,
        sorting=sorting,
        errors=errors,
        client=client,
        statuses=Service.STATUSES,
        max_search=MAX_SEARCH,
    ), search_status(errors)


@bp.get("/services/export.csv")
@staff_required
def export():
    """The services list as CSV: every page, with the list's filters, search and order."""
    filters, sorting = _list()
    return csv_response(
        "services.csv",
        CSV_HEADER,
        _query(filters, sorting),
        lambda s: (
            s.id,
            s.client.name,
            s.client.email,
            s.tariff.name,
            s.status,
            s.remote_id,
            (s.params or {}).get("domain") or (s.details or {}).get("domain"),
            s.created_at,
            s.activated_at,
            s.expires_at,
        ),
    )


# the service page lists its operations newest first, this many a page (a service renewed
# monthly for years has hundreds: all of them made the page slow, bench/million.py)
TIMELINE_PAGE = 50


def _detail_context(
    service, errors=None, form=None, failed_form=None, reveal=False, kinds_open=None
):
    """The service page's context; ``kinds_open``: ``provisioning.open_kinds``, read before
    the service where the page polls (see ``provisioning.client_view``)."""
    if kinds_open is None:
        kinds_open = provisioning.open_kinds(service.id)
    operations, count = provisioning.operations_of(service)
    return {
        "service": service,
        "declared": service.tariff.product_type.detail_fields or [],
        "history": provisioning.history(service),
        "secrets_hidden": provisioning.secrets_hidden(service) and not reveal,
        "shown_details": provisioning.visible_details(service, reveal=reveal),
        "failed_form": failed_form,
        "timeline": Page(operations, size=TIMELINE_PAGE, count_query=count),
        "busy": bool(kinds_open),
        "emails": mail.for_service(service.id),
        "actions": provisioning.allowed_actions(service, kinds_open),
        "tariff_choices": provisioning.tariff_choices(service),
        "kinds": KINDS,
        "suspension_reason": provisioning.suspension_reason(service),
        "errors": errors or {},
        "form": form or {},
    }


@bp.get("/services/<int:service_id>")
@staff_required
def detail(service_id):
    """A service: status, details, why its module, the live operation timeline, emails."""
    kinds_open = provisioning.open_kinds(service_id)  # first: see provisioning.client_view
    service = provisioning.get(service_id)
    return render(
        "services/detail.html",
        "services/_live.html",
        target="service-live",
        **_detail_context(service, kinds_open=kinds_open),
    )


@bp.post("/services/<int:service_id>/retry-setup")
@staff_required
def retry_setup(service_id):
    """Retry setup: a service whose setup was cancelled gets a new set-up operation."""
    try:
        op = provisioning.retry_setup(service_id, actor=current_user.email)
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"Setup retried: operation #{op.id} queued.", "success")
    return redirect(url_for("services.detail", service_id=service_id))


@bp.post("/services/<int:service_id>/details")
@staff_required
def edit_details(service_id):
    """Correct the service's detail fields and remote id (checked by their kinds; a blank
    secret field keeps its value): recorded in the service's history."""
    service = provisioning.get(service_id)
    declared = service.tariff.product_type.detail_fields or []
    details = {}
    for f in declared:
        key = f"detail.{f['name']}"
        if key not in request.form:
            continue
        value = request.form.get(key, "")
        if f.get("secret") and not value.strip():
            continue  # a password field left blank: unchanged
        details[f["name"]] = value
    data = {"details": details, "remote_id": request.form.get("remote_id", "")}
    try:
        provisioning.edit_details(service_id, data, current_user.email)
    except ValidationError as exc:
        errors = {k.replace("details.", "detail.", 1): v for k, v in exc.fields.items()}
        context = _detail_context(service, errors=errors, form=request.form, failed_form="edit")
        return render("services/detail.html", **context), 422
    except Conflict as exc:
        context = _detail_context(
            service, errors={"remote_id": exc.message}, form=request.form, failed_form="edit"
        )
        return render("services/detail.html", **context), 409
    flash("Details saved.", "success")
    return redirect(url_for("services.detail", service_id=service_id))


@bp.post("/services/<int:service_id>/reveal")
@staff_required
def reveal(service_id):
    """Show a deleted service's secret details (recorded in its history)."""
    service = provisioning.reveal_secrets(service_id, current_user.email)
    return render("services/detail.html", **_detail_context(service, reveal=True))


def _import_context(args, errors=None, form=None, problem=None):
    """The import page: what to import (tariff, module), the module's accounts when its
    type lists them, and the form (client, remote id, detail fields)."""
    tariff = catalog.get_tariff(args.get("tariff_id")) if args.get("tariff_id") else None
    modules_ = imports.modules_of(tariff) if tariff is not None else []
    module_id = args.get("module_id") or (modules_[0].id if len(modules_) == 1 else None)
    module = next((m for m in modules_ if str(m.id) == str(module_id)), None)
    listed, listing_error = None, None
    if module is not None and module.id in {m.id for m in imports.listing_modules()}:
        try:
            listed = imports.accounts(module.id)
        except Conflict as exc:
            listing_error = exc.message
    form = dict(form or {})  # a plain dict (request.form.to_dict())
    chosen = args.get("account")
    if chosen and listed and not form:
        account = next((a for a in listed if a["remote_id"] == chosen), None)
        if account is not None:
            form = {"remote_id": account["remote_id"]}
            form.update({f"detail.{k}": v for k, v in account["details"].items()})
    return {
        "tariffs": catalog.tariffs(),
        "tariff": tariff,
        "modules": modules_,
        "module": module,
        "accounts": listed,
        "listing_error": listing_error,
        "clients": accounts.clients(),
        "declared": tariff.product_type.detail_fields if tariff is not None else [],
        "errors": errors or {},
        "form": form,
        "problem": problem,
    }


@bp.get("/services/import")
@staff_required
def import_page():
    """Import an account that already exists on a panel: pick the tariff and module, then
    an account from the module's list (when its type lists them) or its remote id."""
    try:
        context = _import_context(request.args)
    except NotFound:
        abort(404)
    return render("services/import.html", **context)


@bp.post("/services/import")
@staff_required
def import_account():
    """Bind the account to a new service, active at once (no open operation runs)."""
    declared_names = []
    tariff_id = request.form.get("tariff_id")
    try:
        context_args = {"tariff_id": tariff_id, "module_id": request.form.get("module_id")}
        declared_names = [f["name"] for f in _import_context(context_args)["declared"]]
    except NotFound:
        context_args = {}
    data = {
        "client_id": request.form.get("client_id"),
        "tariff_id": tariff_id,
        "module_id": request.form.get("module_id"),
        "remote_id": request.form.get("remote_id", ""),
        "details": {n: request.form.get(f"detail.{n}", "") for n in declared_names},
    }
    try:
        service = imports.import_service(data, current_user.email)
    except ValidationError as exc:
        errors = {k.replace("details.", "detail.", 1): v for k, v in exc.fields.items()}
        context = _import_context(context_args, errors=errors, form=request.form.to_dict())
        return render("services/import.html", **context), 422
    except Conflict as exc:
        context = _import_context(
            context_args,
            errors={"remote_id": exc.message},
            form=request.form.to_dict(),
            problem=exc.message,
        )
        return render("services/import.html", **context), 409
    flash(f"Service #{service.id} imported: active, no open operation ran.", "success")
    return redirect(url_for("services.detail", service_id=service.id))


@bp.post("/services/<int:service_id>/<kind>")
@staff_required
def action(service_id, kind):
    """Request an operation of a kind staff may ask for (suspend with a reason, resume,
    close, change the tariff, renew, change the password...): queue it."""
    if kind not in REQUESTABLE:
        abort(404)
    declared = KINDS[kind]
    params = {name: request.form.get(name) or None for name in declared.params + declared.options}
    try:
        op = provisioning.request(service_id, kind, actor=current_user.email, params=params)
    except ValidationError as exc:
        service = provisioning.get(service_id)
        context = _detail_context(service, errors=exc.fields, form=request.form)
        return render("services/detail.html", **context), 422
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"{KINDS[kind].label}: operation #{op.id} queued.", "success")
    return redirect(url_for("services.detail", service_id=service_id))
