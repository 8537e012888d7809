"""Outgoing events: signed webhooks for billing systems and automations.

**What is an event.** Every status change of a service, an operation or a task
(``app.states``: the machines that ``emits``) is an event ``<machine>.<status>``
(``service.active``, ``operation.manual``, ``task.closed``), and a new row is
``<machine>.created``: a status added to a machine is a new event with no more code
(:data:`app.states.EVENT_TYPES`).

**Never lost, never for a rolled-back change.** :meth:`Machine.move` calls :func:`moved`
inside the transaction that changes the status; it writes the event and one delivery per
enabled endpoint that wants it (the outbox), so they commit or roll back with the
change. Nothing is written when no endpoint wants the event. Once the transaction
commits a worker is woken (``deliver_event``); the sweep re-sends what a lost message
left behind.

**Delivered at least once.** :func:`deliver` claims a delivery (a conditional UPDATE: one
worker sends it), POSTs ``{"id", "type", "created_at", "data"}`` signed like the payment
webhook (``X-Provisor-Signature``, v2 with the direction ``event`` and the URL's path,
:mod:`app.signing`) through :func:`app.outbound.post_signed` (the URL checked, no
redirects, a capped read, ``EVENT_TIMEOUT``), and records the attempt. A 2xx answer
delivers it; anything else waits ``EVENT_RETRY_DELAY`` seconds, doubling up to
``EVENT_RETRY_MAX``, until ``EVENT_MAX_ATTEMPTS`` (then ``failed``; staff may "Retry
now"). The event's ``id`` (``evt_...``, also the ``X-Provisor-Event-Id`` header) is the
same on every attempt, so receivers deduplicate on it.
"""

import json
import logging
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from flask import current_app
from peewee import fn

from app import outbound, secrets_box
from app.db import forget, once_per_transaction, remember, write_transaction
from app.models import DeliveryAttempt, Event, EventDelivery, WebhookEndpoint, utcnow
from app.services import dispatch
from app.services.errors import NotFound, ValidationError
from app.states import DELIVERY, EVENT_TYPES

log = logging.getLogger(__name__)

SECRET_PURPOSE = "webhook-secret"
TEST_EVENT = "endpoint.test"
ALL = "*"
MIN_SECRET = 16
MAX_SECRET = 200
EXCERPT = 1000  # characters of an endpoint's answer kept per attempt
EVENT_ID_HEADER = "X-Provisor-Event-Id"
EVENT_TYPE_HEADER = "X-Provisor-Event"
DELIVERY_HEADER = "X-Provisor-Delivery"

# what each kind of row says of itself in an event's data
FIELDS = {
    "service": ("client_id", "tariff_id", "module_id", "remote_id"),
    "operation": ("kind", "service_id", "item_id", "module_id", "attempts", "last_error"),
    "task": ("operation_id", "service_id", "department_id", "assignee_id"),
}


def _stamp(value):
    return value.isoformat(timespec="seconds") + "Z" if value else None


# --- recording (inside the caller's transaction) ------------------------------------------


def moved(machine, row, action, previous):
    """``row`` of ``machine`` went from ``previous`` to ``row.status`` by ``action``."""
    _record(machine.name, row, action, previous, f"{machine.name}.{row.status}")


def created(subject, row):
    """A new service, operation or task (``<subject>.created``)."""
    _record(subject, row, "create", None, f"{subject}.created")


def _record(subject, row, action, previous, event_type):
    endpoints = [e for e in _enabled_endpoints() if e.wants(event_type)]
    if not endpoints:
        return None
    data = {
        "object": subject,
        "id": row.id,
        "status": row.status,
        "previous_status": previous,
        "action": action,
    }
    for name in FIELDS.get(subject, ()):
        data[name] = getattr(row, name, None)
    return _store(event_type, subject, row.id, data, endpoints)


ENDPOINTS_KEY = "events.enabled_endpoints"


def _enabled_endpoints():
    """The enabled endpoints, read once per transaction: an activation changes the status
    of its operation and of its service in one transaction, each of them an event."""
    return once_per_transaction(
        ENDPOINTS_KEY,
        lambda: list(WebhookEndpoint.select().where(WebhookEndpoint.enabled == True)),  # noqa: E712
    )


def enabled_count_column():
    """A column counting the enabled endpoints (``enabled_endpoints``), for a SELECT that
    a transaction runs anyway; its value goes to :func:`known_enabled_count`."""
    return (
        WebhookEndpoint.select(fn.COUNT(WebhookEndpoint.id)).where(WebhookEndpoint.enabled)
    ).alias("enabled_endpoints")


def known_enabled_count(count):
    """The caller read, inside this transaction, that ``count`` webhook endpoints are
    enabled (a column of a statement it ran anyway): with none, the transaction's events
    need not read them (creating one forgets this, as any change of them does)."""
    if count == 0:
        remember(ENDPOINTS_KEY, [])


def _store(event_type, subject, subject_id, data, endpoints):
    now = utcnow()
    event = Event.create(
        uid=f"evt_{uuid.uuid4().hex}",
        type=event_type,
        subject=subject,
        subject_id=subject_id,
        data=data,
        created_at=now,
    )
    ids = [
        EventDelivery.create(
            event=event.id, endpoint=e.id, status="pending", next_try_at=now, created_at=now
        ).id
        for e in endpoints
    ]
    dispatch.events(ids)
    return event


def body_of(event):
    """The exact bytes POSTed for ``event`` (the same on every attempt)."""
    document = {
        "id": event.uid,
        "type": event.type,
        "created_at": _stamp(event.created_at),
        "data": event.data,
    }
    return json.dumps(document, sort_keys=True).encode()


# --- delivering -------------------------------------------------------------------------


def _setting(name):
    return current_app.config[name]


def retry_delay(attempts):
    """Seconds before the next try after ``attempts`` failed ones (doubling, capped)."""
    base = _setting("EVENT_RETRY_DELAY")
    return min(base * 2 ** min(max(attempts - 1, 0), 30), _setting("EVENT_RETRY_MAX"))


def deliver(delivery_id):
    """Send one delivery if it is due (idempotent: a claimed or delivered one is skipped).
    Returns the delivery after the attempt, or None when there was nothing to do."""
    now = utcnow()
    lease = now + timedelta(seconds=_setting("EVENT_TIMEOUT") * 2 + 30)
    with write_transaction():
        delivery = EventDelivery.get_or_none_by_id(delivery_id)
        if delivery is None or not DELIVERY.allows("claim", delivery.status):
            return None
        if delivery.next_try_at and delivery.next_try_at > now + timedelta(seconds=1):
            return None
        endpoint = delivery.endpoint
        if not endpoint.enabled:
            return None  # it waits; the sweep sends it once the endpoint is enabled again
        claimed = (
            EventDelivery.update(
                status=DELIVERY.target("claim", delivery.status),
                attempts=EventDelivery.attempts + 1,
                next_try_at=lease,
            )
            .where(
                (EventDelivery.id == delivery.id)
                & (EventDelivery.status == delivery.status)
                & (EventDelivery.attempts == delivery.attempts)
            )
            .execute()
        )
        if claimed != 1:
            return None
        number = delivery.attempts + 1
        event = delivery.event
    outcome = _post(endpoint, event, delivery_id, number)
    with write_transaction():
        delivery = EventDelivery.get_or_none_by_id(delivery_id)
        if delivery is None:
            return None  # its endpoint was removed meanwhile
        DeliveryAttempt.create(delivery=delivery_id, number=number, **outcome)
        if delivery.status != "sending" or delivery.attempts != number:
            return delivery  # reclaimed by the sweep meanwhile: its next try is planned
        delivery.last_status_code = outcome["status_code"]
        delivery.last_error = outcome["error"]
        if outcome["error"] is None:
            DELIVERY.move(delivery, "delivered")
            delivery.delivered_at = utcnow()
            delivery.next_try_at = None
        elif number >= _setting("EVENT_MAX_ATTEMPTS") or event.type == TEST_EVENT:
            DELIVERY.move(delivery, "give_up")
            delivery.next_try_at = None
        else:
            delay = retry_delay(number)
            DELIVERY.move(delivery, "fail")
            delivery.next_try_at = utcnow() + timedelta(seconds=delay)
            dispatch.events([delivery.id], delay=delay)
            log.info(
                "event %s to endpoint %s not delivered (%s); retrying in %s s",
                event.uid,
                endpoint.id,
                outcome["error"],
                delay,
            )
        delivery.save()
    return delivery


def _post(endpoint, event, delivery_id, number):
    """POST ``event`` to ``endpoint``: the attempt's fields (``error`` None: delivered)."""
    started = utcnow()
    clock = time.monotonic()
    outcome = {"started_at": started, "status_code": None, "error": None, "response_excerpt": ""}
    try:
        secret = secrets_box.decrypt(endpoint.secret_encrypted, SECRET_PURPOSE).decode()
        reply = outbound.post_signed(
            endpoint.url,
            body_of(event),
            secret,
            "event",
            _setting("EVENT_TIMEOUT"),
            headers={
                EVENT_ID_HEADER: event.uid,
                EVENT_TYPE_HEADER: event.type,
                DELIVERY_HEADER: f"{delivery_id}.{number}",
            },
            v1=False,
        )
    except secrets_box.Undecryptable as exc:
        outcome["error"] = str(exc)
    except outbound.Refused as exc:
        outcome["error"] = f"refused by Provisor: {exc.message}"
    except outbound.TooLarge as exc:
        outcome["error"] = str(exc)
    except requests.Timeout:
        outcome["error"] = f"no answer within {_setting('EVENT_TIMEOUT')} s"
    except requests.RequestException as exc:
        from modules.http import why

        outcome["error"] = f"cannot reach {endpoint.url}: {why(exc)}"
    else:
        outcome["status_code"] = reply.status_code
        outcome["response_excerpt"] = reply.content[:EXCERPT].decode("utf-8", "replace")
        if not 200 <= reply.status_code < 300:
            outcome["error"] = f"answered {reply.status_code} {reply.reason or ''}".strip()
    outcome["duration_ms"] = int((time.monotonic() - clock) * 1000)
    outcome["response_excerpt"] = outcome["response_excerpt"].replace("\x00", "\\0")
    return outcome


def retry(delivery_id):
    """ "Retry now": a waiting or failed delivery is due at once (the same event id)."""
    with write_transaction():
        delivery = get_delivery(delivery_id)
        DELIVERY.move(delivery, "retry", subject=delivery.id)
        delivery.next_try_at = utcnow()
        delivery.save()
        dispatch.events([delivery.id])
    return delivery


def sweep(limit=500):
    """Reclaim deliveries left in ``sending`` past their lease (their worker stopped) and
    re-send due ones whose message was lost. Returns counts."""
    from app.services import sweeps

    now = utcnow()
    grace = timedelta(seconds=_setting("SWEEP_GRACE"))
    stuck = [
        row.id
        for row in EventDelivery.select(EventDelivery.id)
        .where(
            EventDelivery.status.in_(DELIVERY.sources("reclaim"))
            & (EventDelivery.next_try_at < now)
        )
        .limit(limit)
    ]
    errors = sweeps.each("delivery", stuck, lambda i: _reclaim(i, now), _note_error)
    due = [
        row.id
        for row in EventDelivery.select(EventDelivery.id)
        .join(WebhookEndpoint)
        .where(
            EventDelivery.status.in_(DELIVERY.sources("claim"))
            & (EventDelivery.next_try_at <= now - grace)
            & (WebhookEndpoint.enabled == True)  # noqa: E712
        )
        .limit(limit)
    ]
    errors += sweeps.each("delivery", due, _resend, _note_error)
    pruned = prune(now - timedelta(days=_setting("EVENT_KEEP_DAYS")))
    return {
        "events_resent": len(due),
        "events_reclaimed": len(stuck),
        "events_pruned": pruned,
        "event_errors": errors,
    }


def prune(before):
    """Forget events made before ``before`` whose deliveries are all over (delivered or
    failed), with their deliveries and attempts; returns how many."""
    unfinished = EventDelivery.select(EventDelivery.id).where(
        (EventDelivery.event == Event.id) & EventDelivery.status.not_in(DELIVERY.final)
    )
    with write_transaction():
        old = [
            e.id
            for e in Event.select(Event.id).where(
                (Event.created_at < before) & ~fn.EXISTS(unfinished)
            )
        ]
        for chunk in range(0, len(old), 500):
            ids = old[chunk : chunk + 500]
            delivery_ids = EventDelivery.select(EventDelivery.id).where(
                EventDelivery.event.in_(ids)
            )
            DeliveryAttempt.delete().where(DeliveryAttempt.delivery.in_(delivery_ids)).execute()
            EventDelivery.delete().where(EventDelivery.event.in_(ids)).execute()
            Event.delete().where(Event.id.in_(ids)).execute()
    return len(old)


def _reclaim(delivery_id, now):
    with write_transaction():
        EventDelivery.update(status=DELIVERY.target("reclaim", "sending"), next_try_at=now).where(
            (EventDelivery.id == delivery_id)
            & EventDelivery.status.in_(DELIVERY.sources("reclaim"))
            & (EventDelivery.next_try_at < now)
        ).execute()


def _resend(delivery_id):
    with write_transaction():
        dispatch.events([delivery_id])


def _note_error(delivery_id, message):
    EventDelivery.update(last_error=message).where(EventDelivery.id == delivery_id).execute()


# --- endpoints (admins) -----------------------------------------------------------------


def endpoints():
    return list(WebhookEndpoint.select().order_by(WebhookEndpoint.id))


def get_endpoint(endpoint_id):
    endpoint = WebhookEndpoint.get_or_none_by_id(endpoint_id)
    if endpoint is None:
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return endpoint


def _clean(data, endpoint=None):
    """The endpoint's values from ``data`` (a ValidationError naming each bad field)."""
    from app.objects.inputs import WebhookEndpointInput

    values, errors = WebhookEndpointInput.check(data)
    url = values.get("url")
    if url and "url" not in errors:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors["url"] = "Must be an http:// or https:// URL with a host."
        else:
            try:
                outbound.check(url)
            except outbound.Refused as exc:
                errors["url"] = exc.message
    secret = values.get("secret")
    if "secret" not in errors:
        if not secret and endpoint is None:
            errors["secret"] = "This field is required."
        elif secret and not MIN_SECRET <= len(secret) <= MAX_SECRET:
            errors["secret"] = f"From {MIN_SECRET} to {MAX_SECRET} characters."
    if errors:
        raise ValidationError(errors)
    return values


def create_endpoint(data):
    """A new endpoint (its URL checked like every outbound URL, its secret encrypted)."""
    values = _clean(data)
    now = utcnow()
    with write_transaction():
        forget(ENDPOINTS_KEY)
        return WebhookEndpoint.create(
            url=values["url"],
            secret_encrypted=secrets_box.encrypt(values["secret"], SECRET_PURPOSE),
            event_types=values["event_types"],
            enabled=values["enabled"],
            description=values["description"] or "",
            created_at=now,
            updated_at=now,
        )


def update_endpoint(endpoint_id, data):
    """Change an endpoint (all fields; a blank secret keeps the current one)."""
    with write_transaction():
        endpoint = get_endpoint(endpoint_id)
        values = _clean(data, endpoint)
        endpoint.url = values["url"]
        if values["secret"]:
            endpoint.secret_encrypted = secrets_box.encrypt(values["secret"], SECRET_PURPOSE)
        endpoint.event_types = values["event_types"]
        endpoint.enabled = values["enabled"]
        endpoint.description = values["description"] or ""
        endpoint.updated_at = utcnow()
        endpoint.save()
        forget(ENDPOINTS_KEY)
    if endpoint.enabled:
        with write_transaction():
            # what waited while it was disabled goes out now
            due = [
                d.id
                for d in EventDelivery.select(EventDelivery.id).where(
                    (EventDelivery.endpoint == endpoint.id)
                    & EventDelivery.status.in_(DELIVERY.sources("claim"))
                )
            ]
            dispatch.events(due)
    return endpoint


def delete_endpoint(endpoint_id):
    """Remove an endpoint with its deliveries (the events other endpoints get stay)."""
    with write_transaction():
        endpoint = get_endpoint(endpoint_id)
        endpoint.delete_instance(recursive=True)
        forget(ENDPOINTS_KEY)


def send_test(endpoint_id):
    """Send an ``endpoint.test`` event to the endpoint now (not retried); returns its
    delivery, whose last attempt says what the endpoint answered."""
    with write_transaction():
        endpoint = get_endpoint(endpoint_id)
        if not endpoint.enabled:
            raise ValidationError({"enabled": "The endpoint is disabled: enable it to test it."})
        now = utcnow()
        event = Event.create(
            uid=f"evt_{uuid.uuid4().hex}",
            type=TEST_EVENT,
            subject="endpoint",
            subject_id=endpoint.id,
            data={"object": "endpoint", "id": endpoint.id, "message": "a test event"},
            created_at=now,
        )
        delivery = EventDelivery.create(
            event=event.id, endpoint=endpoint.id, status="pending", next_try_at=now, created_at=now
        )
    return deliver(delivery.id) or EventDelivery.get_by_id(delivery.id)


# --- the delivery log -------------------------------------------------------------------


def deliveries(endpoint_id=None, status=None, event_type=None):
    """Deliveries, newest first (with their event and endpoint)."""
    query = (
        EventDelivery.select(EventDelivery, Event, WebhookEndpoint)
        .join(Event)
        .switch(EventDelivery)
        .join(WebhookEndpoint)
    )
    if endpoint_id is not None:
        query = query.where(EventDelivery.endpoint == endpoint_id)
    if status:
        query = query.where(EventDelivery.status == status)
    if event_type:
        query = query.where(Event.type == event_type)
    return query.order_by(EventDelivery.id.desc())


def get_delivery(delivery_id):
    delivery = EventDelivery.get_or_none_by_id(delivery_id)
    if delivery is None:
        raise NotFound(f"event delivery {delivery_id} not found")
    return delivery


def attempts_of(delivery):
    """Its attempts, newest first."""
    return list(
        DeliveryAttempt.select()
        .where(DeliveryAttempt.delivery == delivery.id)
        .order_by(DeliveryAttempt.number.desc())
    )


def event_types():
    """Every event an endpoint may ask for."""
    return EVENT_TYPES
