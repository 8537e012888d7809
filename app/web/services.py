"""Services (staff): the list, one service's whole story, and staff actions on it."""

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import MAX_SEARCH, Service
from app.services import accounts, dashboard, mail, provisioning
from app.services.errors import Conflict, ValidationError
from app.states import KINDS, REQUESTABLE
from app.web.helpers import Page, arg_choice, arg_int, render, search_status

bp = Blueprint("services", __name__)


@bp.get("/services")
@staff_required
def index():
    """Services with search (client, email, tariff, #id), a status filter and pages;
    ``stuck=1``: those in setup for longer than an hour (the dashboard's link)."""
    filters = {
        "q": request.args.get("q", "").strip(),
        "status": arg_choice("status", Service.STATUSES, default=""),
        "client_id": arg_int("client_id"),
        "stuck": request.args.get("stuck") == "1",
    }
    if filters["stuck"]:
        filters["status"] = "processing"
    errors = {}
    try:
        page = Page(
            provisioning.list_services(
                filters["status"] or None,
                filters["client_id"],
                filters["q"] or None,
                unchanged_since=dashboard.stuck_before() if filters["stuck"] else None,
            )
        )
    except ValidationError as exc:  # a search too long: said by the field, nothing listed
        errors, page = exc.fields, Page.empty()
    client = accounts.get_client(filters["client_id"]) if filters["client_id"] else None
    return render(
        "services/index.html",
        "services/_rows.html",
        target="services-list",
        page=page,
        filters=filters,
        errors=errors,
        client=client,
        statuses=Service.STATUSES,
        max_search=MAX_SEARCH,
    ), search_status(errors)


def _detail_context(service, errors=None, form=None):
    return {
        "service": service,
        "timeline": provisioning.timeline(service),
        "emails": mail.for_service(service.id),
        "actions": provisioning.allowed_actions(service),
        "tariff_choices": provisioning.tariff_choices(service),
        "kinds": KINDS,
        "errors": errors or {},
        "form": form or {},
    }


@bp.get("/services/<int:service_id>")
@staff_required
def detail(service_id):
    """A service: status, details, why its module, the live operation timeline, emails."""
    service = provisioning.get(service_id)
    return render(
        "services/detail.html",
        "services/_live.html",
        target="service-live",
        **_detail_context(service),
    )


@bp.post("/services/<int:service_id>/<kind>")
@staff_required
def action(service_id, kind):
    """Request an operation of a kind staff may ask for (suspend, resume, close, change
    the tariff, renew...): queue it."""
    if kind not in REQUESTABLE:
        abort(404)
    params = {name: request.form.get(name) or None for name in KINDS[kind].params}
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
