"""Resellers paying on account: another Provisor (its ``provisor`` module type) orders
and acts here for its own clients, through ``/api/v1/reseller``.

A reseller is a client with ``on_account`` set and a login (role ``client``) whose bearer
token (made by :func:`enable`, shown once) reaches the reseller routes only, and only the
reseller's own services. Its orders are paid on account at once (a payment row of the
provider ``account``; the provider invoices the reseller outside Provisor). Every order
and action carries the reseller's idempotency key: the same key again answers with what
the first request made (``reseller_request``, unique per client), never a second one.
"""

import re

from peewee import IntegrityError

from app.db import write_transaction
from app.models import (
    ApiToken,
    Client,
    Operation,
    Order,
    Payment,
    ResellerRequest,
    Service,
    Tariff,
    User,
    utcnow,
)
from app.services import accounts, catalog, orders, provisioning
from app.services.errors import Conflict, NotFound, PermissionDenied, ValidationError
from app.states import KINDS

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
KEY_RULE = "Required: 1 to 200 letters, digits and . _ : - (your own unique id of the request)."
PAYMENT_PROVIDER = "account"
TOKEN_NAME = "reseller"


# --- admins make and end resellers -----------------------------------------------------


def enable(client_id):
    """Make the client a reseller paying on account; returns ``(client, token)``, the new
    bearer token of its login shown once (a login without a password is made for a
    client that has none: it logs in with the token only)."""
    client = _client(client_id)
    with write_transaction():
        user = User.get_or_none((User.client == client.id) & (User.role == "client"))
        if user is None:
            if User.select().where(User.email == client.email).exists():
                raise Conflict(
                    f"the email {client.email} of client {client.id} belongs to a staff login"
                )
            user = User.create(email=client.email, name=client.name, role="client", client=client)
        Client.update(on_account=True).where(Client.id == client.id).execute()
        token = accounts.new_token(user, TOKEN_NAME)
    client.on_account = True
    return client, token


def disable(client_id):
    """The client pays for its orders again; its reseller tokens stop working."""
    client = _client(client_id)
    with write_transaction():
        Client.update(on_account=False).where(Client.id == client.id).execute()
        users = User.select(User.id).where(User.client == client.id)
        ApiToken.delete().where(ApiToken.user.in_(users) & (ApiToken.name == TOKEN_NAME)).execute()
    client.on_account = False
    return client


def _client(client_id):
    client = Client.get_or_none_by_id(client_id)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    return client


def reseller_of(user):
    """The client a bearer token's user resells for, else PermissionDenied."""
    if user is None or user.role != "client" or user.client_id is None:
        raise PermissionDenied("resellers only (a client paying on account)")
    client = Client.get_or_none_by_id(user.client_id)
    if client is None or not client.on_account:
        raise PermissionDenied("this client is not a reseller paying on account")
    return client


# --- what a reseller does ----------------------------------------------------------------


def tariffs():
    """The tariffs a reseller may order (orderable now)."""
    return catalog.orderable_tariffs()


def _key(data):
    key = data.get("idempotency_key")
    if not isinstance(key, str) or not KEY.match(key):
        raise ValidationError({"idempotency_key": KEY_RULE})
    return key


def _earlier(client, key):
    return ResellerRequest.get_or_none(
        (ResellerRequest.client == client.id) & (ResellerRequest.key == key)
    )


def order(client, data):
    """Order a tariff paid on account; returns ``(order, operation, created)``. The same
    idempotency key again returns the first order (``created`` False)."""
    if not isinstance(data, dict):
        raise ValidationError({"body": "Must be a JSON object."})
    key = _key(data)
    earlier = _earlier(client, key)
    if earlier is not None:
        return _replayed_order(earlier, key)
    body = {"client_id": client.id, "tariff_id": data.get("tariff_id")}
    if "params" in data:
        body["params"] = data["params"]
    unknown = sorted(set(data) - {"tariff_id", "params", "idempotency_key"})
    if unknown:
        raise ValidationError({name: "Unknown field." for name in unknown})
    try:
        with write_transaction():
            if _earlier(client, key) is not None:
                raise _Replay()
            made = orders.create(body)
            by = f"{PAYMENT_PROVIDER} (reseller {client.email})"
            op = orders.pay_within(made, by)
            Payment.create(
                payment_id=f"{PAYMENT_PROVIDER}-{client.id}-{key}",
                order=made,
                amount=made.amount,
                currency=made.currency,
                result={
                    "provider": PAYMENT_PROVIDER,
                    "order_id": made.id,
                    "order_status": "paid",
                    "service_id": made.service_id,
                    "operation_id": op.id,
                },
            )
            ResellerRequest.create(
                client=client,
                key=key,
                kind="order",
                order=made,
                service=made.service_id,
                operation=op,
                created_at=utcnow(),
            )
        return made, op, True
    except (IntegrityError, _Replay):
        return _replayed_order(_earlier(client, key), key)


class _Replay(Exception):
    pass


def _replayed_order(earlier, key):
    if earlier is None or earlier.kind != "order":
        raise Conflict(f"the idempotency key {key!r} was used for another request")
    made = Order.get_by_id(earlier.order_id)
    op = Operation.get_or_none_by_id(earlier.operation_id)
    return made, op, False


def service(client, service_id):
    """One of the reseller's own services (any other is "not found")."""
    found = Service.get_or_none_by_id(service_id)
    if found is None or found.client_id != client.id:
        raise NotFound(f"service {service_id} not found")
    return found


def operation(client, operation_id):
    """An operation on one of the reseller's own services."""
    found = Operation.get_or_none_by_id(operation_id)
    if found is None or found.service_id is None:
        raise NotFound(f"operation {operation_id} not found")
    if Service.get_by_id(found.service_id).client_id != client.id:
        raise NotFound(f"operation {operation_id} not found")
    return found


def current_operation(found):
    """The service's newest operation (not an item's), or None."""
    return (
        Operation.select()
        .where((Operation.service == found.id) & (Operation.kind != "ensure_item"))
        .order_by(Operation.id.desc())
        .first()
    )


def act(client, service_id, kind, data):
    """Ask for an operation on an own service; returns ``(operation, created)``. The same
    idempotency key again returns the first operation."""
    if not isinstance(data, dict):
        raise ValidationError({"body": "Must be a JSON object."})
    key = _key(data)
    own = service(client, service_id)
    earlier = _earlier(client, key)
    if earlier is None:
        params = {k: v for k, v in data.items() if k != "idempotency_key"}
        allowed = {"tariff_id"} if kind == "change_tariff" else set(KINDS[kind].options)
        allowed.discard("password")  # a reseller's new password is always generated
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValidationError({name: "Unknown field." for name in unknown})
        if kind == "change_tariff":
            new = Tariff.get_or_none_by_id(params.get("tariff_id"))
            if new is None or not catalog.is_orderable(new):
                raise ValidationError({"tariff_id": "Choose a tariff you can order."})
        try:
            with write_transaction():
                if _earlier(client, key) is not None:
                    raise _Replay()
                op = provisioning.request(own.id, kind, f"reseller {client.email}", params=params)
                ResellerRequest.create(
                    client=client,
                    key=key,
                    kind=kind,
                    service=own,
                    operation=op,
                    created_at=utcnow(),
                )
            return op, True
        except (IntegrityError, _Replay):
            earlier = _earlier(client, key)
    if earlier is None or earlier.kind != kind or earlier.service_id != own.id:
        raise Conflict(f"the idempotency key {key!r} was used for another request")
    op = Operation.get_or_none_by_id(earlier.operation_id)
    if op is None:
        raise Conflict(f"the operation of the idempotency key {key!r} is gone")
    return op, False
