"""A client's record for staff: notes, what the client has (orders,
services, tasks, emails), actions on all their services at once, and the log of staff
viewing the client area as the client."""

import logging

from app.db import write_transaction
from app.models import (
    ClientNote,
    Email,
    Impersonation,
    Order,
    Service,
    Task,
)
from app.objects.inputs import ClientNoteInput
from app.services import accounts, provisioning
from app.services.errors import Conflict, NotFound, ValidationError
from app.states import KINDS, SERVICE

log = logging.getLogger(__name__)

RECENT = 10  # rows of each short list on the record
BULK_KINDS = ("suspend", "close")  # what "suspend all" and "close all" ask for


def notes(client_id):
    """The staff notes on a client, newest first."""
    client = accounts.get_client(client_id)
    return list(
        ClientNote.select()
        .where(ClientNote.client == client.id)
        .order_by(ClientNote.created_at.desc(), ClientNote.id.desc())
    )


def add_note(client_id, data, actor):
    """A staff note on a client's record, signed by ``actor`` (an email)."""
    client = accounts.get_client(client_id)
    values = ClientNoteInput.parse(data)
    with write_transaction():
        return ClientNote.create(client=client, author=actor, text=values["text"])


def _service_ids(client):
    return Service.select(Service.id).where(Service.client == client.id)


def record(client_id):
    """What the client page shows besides the contact details and notes: the latest
    orders, services, tasks and emails (each with its total), their login and the log of
    staff viewing the client area as them."""
    client = accounts.get_client(client_id)
    services = Service.select().where(Service.client == client.id)
    orders = Order.select().where(Order.client == client.id)
    tasks = Task.select().where(Task.service.in_(_service_ids(client)))
    addresses = {client.email}
    login = accounts.login_of(client)
    if login is not None:
        addresses.add(login.email)
    emails = Email.select().where(
        Email.service.in_(_service_ids(client)) | Email.to.in_(sorted(addresses))
    )
    return {
        "client": client,
        "login": login,
        "services": list(services.order_by(Service.id.desc()).limit(RECENT)),
        "services_total": services.count(),
        "orders": list(orders.order_by(Order.id.desc()).limit(RECENT)),
        "orders_total": orders.count(),
        "tasks": list(tasks.order_by(Task.id.desc()).limit(RECENT)),
        "tasks_total": tasks.count(),
        "emails": list(emails.order_by(Email.id.desc()).limit(RECENT)),
        "emails_total": emails.count(),
        "impersonations": list(
            Impersonation.select()
            .where(Impersonation.client == client.id)
            .order_by(Impersonation.started_at.desc(), Impersonation.id.desc())
            .limit(RECENT)
        ),
        "eligible": {kind: len(eligible(client, kind)) for kind in BULK_KINDS},
    }


def eligible(client, kind):
    """The client's services ``kind`` may be asked for now (status, no open operation,
    a module that does it)."""
    statuses = KINDS[kind].starts_from
    rows = (
        Service.select()
        .where((Service.client == client.id) & Service.status.in_(statuses))
        .order_by(Service.id)
    )
    return [s for s in rows if kind in provisioning.allowed_actions(s)]


def request_all(client_id, kind, actor):
    """Ask ``kind`` (suspend or close) for every eligible service of the client: the
    normal operation of each, queued one by one. Returns ``(operations, refusals)``,
    refusals as ``{service_id: why}`` (a service that became busy meanwhile)."""
    if kind not in BULK_KINDS:
        raise NotFound(f"no such action for all services: {kind}")
    client = accounts.get_client(client_id)
    queued, refused = [], {}
    for service in eligible(client, kind):
        if not SERVICE.allows(f"request_{kind}", service.status):
            continue
        try:
            queued.append(provisioning.request(service.id, kind, actor=actor))
        except (Conflict, ValidationError) as exc:
            refused[service.id] = exc.message
    log.info(
        "%s all services of client #%s by %s: %d queued, %d refused",
        kind,
        client.id,
        actor,
        len(queued),
        len(refused),
    )
    return queued, refused


def start_impersonation(client_id, user):
    """``user`` (staff) starts viewing the client area as this client: logged."""
    client = accounts.get_client(client_id)
    with write_transaction():
        row = Impersonation.create(client=client, staff=user.id, staff_email=user.email)
    log.info("%s views the client area as client #%s (read-only)", user.email, client.id)
    return row
