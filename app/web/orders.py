"""Orders (staff): every order with its status, and marking an order paid by hand."""

from flask import Blueprint, flash, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import Order
from app.services import orders
from app.services.errors import Conflict
from app.web.helpers import Page, arg_choice, redirect_back, render

bp = Blueprint("orders", __name__)


@bp.get("/orders")
@staff_required
def index():
    """Orders, newest first, with a status filter."""
    status = arg_choice("status", Order.STATUSES, default="")
    return render(
        "orders/index.html",
        "orders/_rows.html",
        target="orders-list",
        page=Page(orders.list_orders(status or None)),
        filters={"status": status},
        statuses=Order.STATUSES,
    )


@bp.post("/orders/<int:order_id>/pay")
@staff_required
def mark_paid(order_id):
    """Mark an unpaid order paid: its service starts being set up."""
    try:
        order, op = orders.mark_paid(order_id, by=current_user.email)
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(
            f"Order #{order.id} marked paid; service #{order.service_id} is being set up "
            f"(operation #{op.id}).",
            "success",
        )
    return redirect_back(url_for("orders.index"))
