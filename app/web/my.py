"""The client area: my services (live while being set up), ordering, my orders."""

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from app import throttle
from app.auth import acting_client_id, client_required
from app.i18n import local_money, tr, translated
from app.services import catalog, orders, provisioning
from app.services.errors import Conflict, ValidationError
from app.states import KINDS
from app.web.helpers import Page, render

bp = Blueprint("my", __name__, url_prefix="/my")

SETTLING = ("ordered", "processing")


@bp.get("")
@client_required
def index():
    """My services; the list polls itself only while one of them is being set up."""
    services = list(provisioning.list_services(client_id=acting_client_id()))
    return render(
        "my/index.html",
        "my/_services.html",
        target="my-services",
        services=services,
        live=any(s.status in SETTLING for s in services),
    )


@bp.get("/services/<int:service_id>")
@client_required
def service(service_id):
    """One of my services: its status, and its details once it is ready."""
    svc, view = provisioning.client_view(service_id, acting_client_id())
    return render(
        "my/service.html",
        "my/_service_live.html",
        target="service-live",
        service=svc,
        live=svc.status in SETTLING or view["in_progress"] is not None,
        kinds=KINDS,
        **view,
    )


@bp.post("/services/<int:service_id>/<kind>")
@client_required
def action(service_id, kind):
    """Ask for an operation clients may request on their own service (a new password)."""
    try:
        provisioning.request_by_client(service_id, acting_client_id(), kind)
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(
            _("%(action)s: requested. We email you once it is done.", action=tr(KINDS[kind].label)),
            "success",
        )
    return redirect(url_for("my.service", service_id=service_id))


@bp.route("/order", methods=["GET", "POST"])
@client_required
def order():
    """Choose a tariff plan and order it (the order waits for payment)."""
    errors = {}
    if request.method == "POST":
        data = {
            "client_id": acting_client_id(),
            "tariff_id": request.form.get("tariff_id"),
            # the order fields of the tariff's product type, named "params.<field>"
            "params": {
                key.removeprefix("params."): value
                for key, value in request.form.items()
                if key.startswith("params.")
            },
        }
        try:
            new_order = orders.create(data)
        except ValidationError as exc:
            errors = translated(exc.fields)
        else:
            flash(
                _(
                    "Order #%(id)s for %(tariff)s placed: %(amount)s to pay.",
                    id=new_order.id,
                    tariff=new_order.tariff.name,
                    amount=local_money(new_order.amount, new_order.currency),
                ),
                "success",
            )
            return redirect(url_for("my.orders"))
    return render_template(
        "my/order.html",
        tariffs=catalog.orderable_tariffs(),
        selected=request.form.get("tariff_id", ""),
        form=request.form,
        errors=errors,
    ), (422 if errors else 200)


@bp.get("/order/<int:tariff_id>/availability/<field>")
@client_required
def availability(tariff_id, field):
    """htmx: "available" / "taken" under an order field (a domain name) as it is typed,
    asked of the tariff's module that checks availability (a registry's domain:check)."""
    if not throttle.allow_availability_check(f"client:{acting_client_id()}"):
        message = _("Too many checks in a short time: the name is checked when you order.")
        return render_template("my/_availability.html", state="unknown", message=message)
    state, message = orders.check_name(tariff_id, field, request.args.get(f"params.{field}"))
    return render_template("my/_availability.html", state=state, message=message)


@bp.get("/orders", endpoint="orders")
@client_required
def orders_index():
    """My orders with their status (and a sandbox payment button when enabled)."""
    return render(
        "my/orders.html",
        page=Page(orders.for_client(acting_client_id())),
        sandbox=current_app.config.get("SANDBOX_PAYMENTS"),
    )


@bp.post("/orders/<int:order_id>/pay")
@client_required
def pay(order_id):
    """Pay an order in the sandbox (no real payment provider): the service gets set up."""
    if not current_app.config.get("SANDBOX_PAYMENTS"):
        abort(404)
    order_ = orders.get_for_client(order_id, acting_client_id())
    message, category = None, "success"
    try:
        orders.mark_paid(order_.id, by="sandbox payment")
    except Conflict as exc:
        message, category = exc.message, "error"
    order_ = orders.get(order_.id)
    if request.htmx and not request.htmx.boosted:
        return render_template("my/_order_row.html", order=order_, sandbox=True, note=message)
    flash(message or _("Order #%(id)s paid: your service is being set up.", id=order_.id), category)
    return redirect(url_for("my.orders"))
