"""Webhook endpoints (admins): where outgoing events go, a test event, and the delivery
log of each endpoint with every attempt and "Retry now"."""

from flask import Blueprint, flash, redirect, request, url_for

from app.auth import admin_required
from app.models import EventDelivery
from app.services import events
from app.services.errors import ValidationError
from app.web.helpers import Page, arg_choice, render

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

FIELDS = ["url", "secret", "event_types", "enabled", "description"]


@bp.get("")
@admin_required
def index():
    """Webhook endpoints with the count of their deliveries by status."""
    return render("webhooks/index.html", endpoints=events.endpoints())


def _form():
    return {
        "url": request.form.get("url", ""),
        "secret": request.form.get("secret", ""),
        "event_types": request.form.getlist("event_types"),
        "enabled": "enabled" in request.form,
        "description": request.form.get("description", ""),
    }


def _form_page(endpoint, form, errors):
    return render(
        "webhooks/form.html",
        endpoint=endpoint,
        form=form,
        errors=errors,
        event_types=events.event_types(),
    ), (422 if errors else 200)


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def new():
    """Add a webhook endpoint: URL, signing secret, the events it wants."""
    if request.method == "GET":
        return _form_page(None, {"enabled": True, "event_types": []}, {})
    form = _form()
    try:
        endpoint = events.create_endpoint(form)
    except ValidationError as exc:
        return _form_page(None, form, exc.fields)
    flash(f"Events now go to {endpoint.url}.", "success")
    return redirect(url_for("webhooks.detail", endpoint_id=endpoint.id))


@bp.route("/<int:endpoint_id>/edit", methods=["GET", "POST"])
@admin_required
def edit(endpoint_id):
    """Change a webhook endpoint (a blank secret keeps the current one)."""
    endpoint = events.get_endpoint(endpoint_id)
    if request.method == "GET":
        form = {
            "url": endpoint.url,
            "event_types": endpoint.event_types,
            "enabled": endpoint.enabled,
            "description": endpoint.description,
        }
        return _form_page(endpoint, form, {})
    form = _form()
    try:
        events.update_endpoint(endpoint_id, form)
    except ValidationError as exc:
        return _form_page(endpoint, form, exc.fields)
    flash("Endpoint saved.", "success")
    return redirect(url_for("webhooks.detail", endpoint_id=endpoint_id))


@bp.post("/<int:endpoint_id>/delete")
@admin_required
def delete(endpoint_id):
    """Remove a webhook endpoint and its delivery log."""
    events.delete_endpoint(endpoint_id)
    flash("Endpoint removed.", "success")
    return redirect(url_for("webhooks.index"))


@bp.post("/<int:endpoint_id>/test")
@admin_required
def test(endpoint_id):
    """Send an ``endpoint.test`` event now and say what the endpoint answered."""
    try:
        delivery = events.send_test(endpoint_id)
    except ValidationError as exc:
        flash(" ".join(exc.fields.values()), "error")
        return redirect(url_for("webhooks.detail", endpoint_id=endpoint_id))
    if delivery.status == "delivered":
        flash(f"Test event delivered ({delivery.last_status_code}).", "success")
    else:
        flash(f"Test event not delivered: {delivery.last_error}", "error")
    return redirect(url_for("webhooks.detail", endpoint_id=endpoint_id))


@bp.get("/<int:endpoint_id>")
@admin_required
def detail(endpoint_id):
    """An endpoint and its delivery log: each event, each attempt (status code, time,
    error, the start of the answer), newest first; polls while deliveries wait."""
    endpoint = events.get_endpoint(endpoint_id)
    status = arg_choice("status", EventDelivery.STATUSES, default="")
    page = Page(events.deliveries(endpoint.id, status or None))
    attempts = {d.id: events.attempts_of(d) for d in page.rows}
    waiting = any(d.status in ("pending", "sending", "retry_wait") for d in page.rows)
    return render(
        "webhooks/detail.html",
        "webhooks/_deliveries.html",
        target="deliveries",
        endpoint=endpoint,
        page=page,
        attempts=attempts,
        waiting=waiting,
        filters={"status": status},
        statuses=EventDelivery.STATUSES,
    )


@bp.post("/deliveries/<int:delivery_id>/retry")
@admin_required
def retry(delivery_id):
    """ "Retry now": send a waiting or failed delivery again at once (same event id)."""
    delivery = events.retry(delivery_id)
    flash(f"Delivery #{delivery.id} is being sent again.", "success")
    return redirect(url_for("webhooks.detail", endpoint_id=delivery.endpoint_id))
