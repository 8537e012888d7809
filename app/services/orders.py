"""Orders and payments: an order is unpaid until a payment (webhook or staff) arrives."""

import datetime as dt
import logging

from peewee import IntegrityError

from app.db import (
    cached_query_rows,
    cached_write,
    is_sqlite,
    next_id_column,
    unindexed,
    write_transaction,
)
from app.models import (
    Client,
    Operation,
    Order,
    Payment,
    Service,
    Tariff,
    parse_id,
    search_term,
    sorted_by,
    utcnow,
)
from app.objects.inputs import OrderInput, PaymentInput
from app.services import catalog, events, order_fields, provisioning
from app.services.errors import Conflict, NotFound, ValidationError
from app.states import SERVICE

log = logging.getLogger(__name__)


def get(order_id):
    order = Order.get_or_none_by_id(order_id)
    if order is None:
        raise NotFound(f"order {order_id} not found")
    return order


def create(data):
    """An unpaid order and its service (status ``ordered``)."""
    values, errors = OrderInput.check(data)
    params = values["params"]
    client = Client.get_or_none_by_id(values["client_id"])
    if client is None:
        errors["client_id"] = "Choose an existing client."
    tariff = Tariff.get_or_none_by_id(values["tariff_id"])
    if tariff is None:
        errors["tariff_id"] = "Choose an existing tariff."
    elif not catalog.is_orderable(tariff):
        errors["tariff_id"] = "This tariff cannot be ordered: no enabled module serves it."
    if params is not None and tariff is not None and "params" not in errors:
        # the order fields of the tariff's product type (a domain name, a hostname...)
        try:
            params = order_fields.clean(catalog.order_fields_for(tariff), params)
        except ValidationError as exc:
            errors.update(exc.fields)
    if not errors and tariff is not None:
        errors.update(taken_names(tariff, params or {}))
    if errors:
        raise ValidationError(errors)
    now = utcnow()
    with write_transaction():
        service = Service.create(
            client=client,
            tariff=tariff,
            status="ordered",
            params=params,
            created_at=now,
            updated_at=now,
        )
        events.created("service", service)
        return Order.create(
            client=client,
            tariff=tariff,
            service=service,
            amount=tariff.price,
            currency=tariff.currency,
            status="unpaid",
            created_at=now,
        )


def availability(tariff, field, value):
    """``(available, reason)`` of an order field's value (a domain name) at the tariff's
    modules that check availability: ``False`` when one of them says it is taken, ``True``
    when they all say it is free, ``None`` when none checks or none could be asked (the
    order is then not refused: the module's own operation finds out)."""
    answers = []
    for instance, name in catalog.availability_checkers(tariff):
        if name != field:
            continue
        try:
            available, reason = instance.check_availability(value)
        except Exception as exc:  # a registry that is down must not stop ordering
            log.warning("availability of %r at %s not known: %s", value, instance.id, exc)
            continue
        if not available:
            return False, reason
        answers.append(True)
    return (True, None) if answers else (None, None)


def check_name(tariff_id, field, raw):
    """What the order form shows under a name being typed: ``(state, message)``, state
    ``available``, ``taken``, ``invalid`` or ``unknown`` (nobody could say)."""
    tariff = Tariff.get_or_none_by_id(tariff_id) if parse_id(tariff_id) is not None else None
    if tariff is None or not catalog.is_orderable(tariff):
        return "unknown", None
    spec = next((f for f in catalog.order_fields_for(tariff) if f.get("name") == field), None)
    if spec is None or not isinstance(raw, str) or not raw.strip():
        return "unknown", None
    try:
        value = order_fields.clean_value(spec, raw)
    except ValueError as exc:
        return "invalid", str(exc)
    if not isinstance(value, str):
        return "unknown", None
    available, reason = availability(tariff, field, value)
    if available is None:
        return "unknown", None
    if available:
        return "available", f"{value} is available."
    return "taken", f"{value} is taken" + (f" ({reason})." if reason else ".")


def taken_names(tariff, params):
    """``{"params.<field>": message}`` for the names the tariff's registry says are taken."""
    errors = {}
    for _, field in catalog.availability_checkers(tariff):
        value = params.get(field)
        if isinstance(value, str) and value and f"params.{field}" not in errors:
            available, reason = availability(tariff, field, value)
            if available is False:
                errors[f"params.{field}"] = f"{value} is taken" + (
                    f" ({reason})." if reason else "."
                )
    return errors


def _order_to_pay_query():
    query = provisioning.join_modules_of_tariff(
        Order.select(Order, Service, Tariff, events.enabled_count_column())
        .join(Service, on=(Order.service == Service.id))
        .join(Tariff, on=(Service.tariff == Tariff.id))
    ).where(Order.id == 0)
    if not is_sqlite():  # SQLite's write transactions are serialised already
        # the order locked until the payment's COMMIT, and the id of the operation paying it
        # queues: the payment's writes then need no answer and go with the COMMIT (_pay)
        query = query.select_extend(next_id_column(Operation, "next_operation_id")).for_update(
            of=Order
        )
    return query, [True, 0]


def _order_to_pay(order_id):
    """The order with its service and the service's tariff, which paying it reads, and the
    tariff's enabled modules with their items, which the payment ranks
    (``provisioning.join_modules_of_tariff``), in one SELECT (its text made once) that
    also counts the enabled webhook endpoints (none: the payment's events read none).
    Returns the order and those modules; NotFound if there is no such order.

    On PostgreSQL it locks the order (``FOR UPDATE OF order``) until the transaction ends
    — a second payment of it waits, then reads it paid — and takes the id of the operation
    the payment queues (``next_operation_id``)."""
    pk = parse_id(order_id)
    rows = [] if pk is None else cached_query_rows("orders.to_pay", _order_to_pay_query, (True, pk))
    if not rows:
        raise NotFound(f"order {order_id} not found")
    order = rows[0]
    events.known_enabled_count(order.enabled_endpoints)
    return order, provisioning.modules_in_rows(row.service.tariff for row in rows)


def mark_paid(order_id, by):
    """Staff (or a payment) marks the order paid: the service goes ``processing``."""
    with write_transaction():
        order, candidates = _order_to_pay(order_id)
        if order.status == "paid":
            raise Conflict(f"order {order.id} is already paid")
        if order.status != "unpaid":
            raise Conflict(f"order {order.id} is {order.status}")
        op = _pay(order, by, candidates)
    return order, op


def pay_within(order, by):
    """Mark ``order`` paid inside the caller's transaction (a payment on account); returns
    the ``open`` operation it queued."""
    return _pay(order, by)


_PAID_AT = dt.datetime(2000, 1, 1)


def _pay_query():
    """The payment's UPDATE of the order, built with placeholder values."""
    query = Order.update(status="paid", paid_at=_PAID_AT, paid_by="by").where(
        (Order.id == 0) & (unindexed(Order.status) == "unpaid")
    )
    return query, ["paid", Order.paid_at.db_value(_PAID_AT), "by", 0, "unpaid"]


def _pay(order, by, candidates=None):
    now = utcnow()
    params = ["paid", Order.paid_at.db_value(now), by, order.id, "unpaid"]
    next_id = getattr(order, "next_operation_id", None)
    if next_id is not None:
        # read locked in this transaction (_order_to_pay): its status is the stored one and
        # stays so, its UPDATE needs no answer (it goes with the operation's INSERT and the
        # COMMIT: the payment is two round trips)
        if order.status != "unpaid":
            raise Conflict(f"order {order.id} is already paid")
        cached_write("orders.pay", _pay_query, params, later=True)
    elif cached_write("orders.pay", _pay_query, params) != 1:
        raise Conflict(f"order {order.id} is already paid")
    order.status, order.paid_at, order.paid_by = "paid", now, by
    return provisioning.start_open(order.service, now, candidates, operation_id=next_id)


def cancel(order_id):
    with write_transaction():
        order = get(order_id)
        if order.status != "unpaid":
            raise Conflict(
                f"order {order.id} is {order.status}; only unpaid orders can be cancelled"
            )
        order.status = "cancelled"
        order.save()
        service = Service.get_by_id(order.service_id)
        SERVICE.move(service, "cancel_order")
        service.updated_at = utcnow()
        service.save()
    return order


def parse_payment(data):
    if not isinstance(data, dict):
        raise ValidationError({"body": "Must be a JSON object."})
    values = PaymentInput.parse(data)
    return values["payment_id"], values["order_id"], values["amount"], values["currency"]


def receive_payment(data):
    """A (verified) payment notification. Idempotent on ``payment_id``.

    Returns ``(result, created)``: a replay returns the stored result and queues nothing.
    """
    payment_id, order_id, amount, currency = parse_payment(data)
    existing = Payment.get_or_none(Payment.payment_id == payment_id)
    if existing is not None:
        return _replay(existing, order_id)
    try:
        with write_transaction():
            if Payment.select().where(Payment.payment_id == payment_id).exists():
                raise _Replay()
            order, candidates = _order_to_pay(order_id)
            if currency != order.currency:
                raise ValidationError({"currency": f"The order is in {order.currency}."})
            if amount < order.amount:
                raise ValidationError(
                    {"amount": f"The order costs {order.amount} {order.currency}."}
                )
            if order.status == "cancelled":
                raise Conflict(f"order {order.id} is cancelled")
            if order.status == "paid":
                raise Conflict(f"order {order.id} is already paid by another payment")
            op = _pay(order, f"payment {payment_id}", candidates)
            result = {
                "payment_id": payment_id,
                "order_id": order.id,
                "order_status": "paid",
                "service_id": order.service_id,
                "operation_id": op.id,
            }
            Payment.create(
                payment_id=payment_id, order=order, amount=amount, currency=currency, result=result
            )
        return result, True
    except (IntegrityError, _Replay):
        return _replay(Payment.get(Payment.payment_id == payment_id), order_id)


class _Replay(Exception):
    pass


def _replay(payment, order_id):
    if payment.order_id != order_id:
        raise Conflict(f"payment {payment.payment_id} was already used for another order")
    return payment.result, False


def for_client(client_id):
    return Order.select().where(Order.client == client_id).order_by(Order.id.desc())


#: the columns the orders list sorts by
ORDER_SORTS = {
    "id": Order.id,
    "client": Client.name,
    "tariff": Tariff.name,
    "amount": Order.amount,
    "status": Order.status,
    "created": Order.created_at,
    "paid": Order.paid_at,
}


def list_orders(status=None, search=None, sort="id", descending=True):
    """Orders with their client and tariff (one query); ``search``: the client's name or
    email, an order number (``#12``) or a day (``2026-05-01``); ``sort`` a key of
    :data:`ORDER_SORTS`."""
    query = Order.select(Order, Client, Tariff).join(Client).switch(Order).join(Tariff)
    if status:
        query = query.where(Order.status == status)
    term = search_term(search)
    if term:
        cond = Client.name.contains(term) | Client.email.contains(term)
        number = parse_id(term.lstrip("#"))
        if number is not None:
            cond = cond | (Order.id == number)
        day = _day(term)
        if day is not None:
            cond = cond | (
                (Order.created_at >= day) & (Order.created_at < day + dt.timedelta(days=1))
            )
        query = query.where(cond)
    return sorted_by(
        query, ORDER_SORTS, sort if sort in ORDER_SORTS else "id", descending, Order.id
    )


def _day(text):
    """The day a search names (YYYY-MM-DD), as a datetime at midnight, else None."""
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return None


def get_for_client(order_id, client_id):
    """An order of this client; any other order is "not found" (client isolation)."""
    order = Order.get_or_none_by_id(order_id)
    if order is None or order.client_id != client_id:
        raise NotFound(f"order {order_id} not found")
    return order
