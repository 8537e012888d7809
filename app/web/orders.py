"""Orders (staff): every order with its status, and marking an order paid by hand."""

from decimal import Decimal

from flask import Blueprint, flash, request, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import MAX_SEARCH, Order
from app.services import orders
from app.services.errors import Conflict, ValidationError
from app.web.helpers import (
    Page,
    Sorting,
    arg_choice,
    csv_response,
    redirect_back,
    render,
    search_status,
)

bp = Blueprint("orders", __name__)

CSV_HEADER = ("Order", "Client", "Email", "Tariff", "Amount", "Currency", "Status")
CSV_HEADER += ("Ordered", "Paid", "Paid by", "Service")


def _list():
    """The list's filters, order and query (as the page and its CSV export share them)."""
    filters = {
        "q": request.args.get("q", "").strip(),
        "status": arg_choice("status", Order.STATUSES, default=""),
    }
    sorting = Sorting(orders.ORDER_SORTS, default="id")
    query = orders.list_orders(
        filters["status"] or None, filters["q"] or None, sorting.key, sorting.desc
    )
    return filters, sorting, query


@bp.get("/orders")
@staff_required
def index():
    """Orders, newest first: a status filter, search (client, email, #number, day),
    sorting by column and pages."""
    errors = {}
    try:
        filters, sorting, query = _list()
        page = Page(query)
    except ValidationError as exc:  # a search too long: said by the field, nothing listed
        errors, page = exc.fields, Page.empty()
        filters = {"q": request.args.get("q", "").strip(), "status": ""}
        sorting = Sorting(orders.ORDER_SORTS, default="id")
    return render(
        "orders/index.html",
        "orders/_rows.html",
        target="orders-list",
        page=page,
        filters=filters,
        sorting=sorting,
        errors=errors,
        statuses=Order.STATUSES,
        max_search=MAX_SEARCH,
    ), search_status(errors)


@bp.get("/orders/export.csv")
@staff_required
def export():
    """The orders list as CSV: every page, with the list's filters, search and order."""
    _, _, query = _list()
    return csv_response(
        "orders.csv",
        CSV_HEADER,
        query,
        lambda o: (
            o.id,
            o.client.name,
            o.client.email,
            o.tariff.name,
            f"{Decimal(str(o.amount)):.2f}",
            o.currency,
            o.status,
            o.created_at,
            o.paid_at,
            o.paid_by,
            o.service_id,
        ),
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
