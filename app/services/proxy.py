"""The tasks proxy: forward a department's tasks to a peer Provisor and bring results back.

*Server side* (receives tasks): a peer logs in (HTTP Basic) with a login and password and
its tasks land in one department. Changes people make here to those tasks (assigned,
comment, fields, closed, cancelled) become events the peer pulls with a cursor.

*Client side* (sends tasks): the tasks of one local department are pushed to the peer as
they are created or changed — through an ordered outbox, retried until they get through,
exactly once (the peer is idempotent on the sender's task id and on event ids). The peer's
events are pulled every ``PROXY_PULL_INTERVAL`` seconds (and at once by ``provisor
remotetaskctl --command checkevent`` or "Check now"); a task closed remotely closes the
local one with the same fields, which completes its operation.

Chains work because both sides hook into the same place (every task history event): a
task received from A into a department that forwards to C is pushed on to C, and what C's
staff do comes back to B and from there to A.
"""

import contextlib
import hashlib
import logging
import threading
import uuid
from datetime import timedelta

import requests
from flask import current_app

from app import outbound, secrets_box
from app.db import get_for_update, write_transaction
from app.models import (
    Department,
    ProxyClientSide,
    ProxyEvent,
    ProxyInbound,
    ProxyLink,
    ProxyOutgoing,
    ProxyReceived,
    ProxyServerSide,
    Task,
    utcnow,
)
from app.objects.peer import (
    MAX_SENDER_TASK_ID,
    REPORTED_KINDS,
    PeerEvent,
    PeerEventInput,
    PeerTaskInput,
)
from app.services import dispatch, tasks
from app.services.errors import NotFound, ServiceError, ValidationError, unique_fields
from app.states import PROXY_OUTGOING

log = logging.getLogger(__name__)

PUSHED_KINDS = {
    "created": "create",
    "comment": "comment",
    "fields": "fields",
    "closed": "close",
    "cancelled": "cancel",
}
SERVER_SIDE_UNIQUE = {
    "login": "A server side with this login exists.",
    "department_id": "This department already serves another server side.",
}
CLIENT_SIDE_UNIQUE = {
    "department_id": "This department is already forwarded by another client side.",
}
PUSH_LEASE = timedelta(seconds=60)
PAGE = 500

_origin = threading.local()
_verified = {}  # digest of (stored hash, password) -> until when it counts as verified
VERIFIED_FOR = timedelta(seconds=60)


@contextlib.contextmanager
def applying_from(side):
    """Changes made inside come from ``side`` (a client or server side): not echoed back."""
    previous = getattr(_origin, "side", None)
    _origin.side = side
    try:
        yield
    finally:
        _origin.side = previous


def _from(model, row_id):
    side = getattr(_origin, "side", None)
    return side is not None and isinstance(side, model) and side.id == row_id


# --- secrets ------------------------------------------------------------------------------


PASSWORD_PURPOSE = "proxy"  # app.secrets_box's key: what this module has always used


def encrypt(password):
    """A peer's password as stored (encrypted with a key derived from SECRET_KEY)."""
    return secrets_box.encrypt(password, PASSWORD_PURPOSE)


def decrypt(token):
    try:
        return secrets_box.decrypt(token, PASSWORD_PURPOSE).decode()
    except secrets_box.Undecryptable:
        raise ServiceError(
            "the stored password cannot be decrypted (SECRET_KEY changed?); enter it again",
            code="proxy_password",
        ) from None


# --- server side: configuration -----------------------------------------------------------


def _text(data, name, errors, max_length=200):
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        errors[name] = "This field is required."
        return None
    if len(value.strip()) > max_length:
        errors[name] = f"At most {max_length} characters."
        return None
    return value.strip()


def _login(data, errors):
    """A peer login: HTTP Basic separates it from the password with the first ':'."""
    login = _text(data, "login", errors, 100)
    if login and ":" in login:
        errors["login"] = "Cannot contain a colon (HTTP Basic ends the login there)."
        return None
    return login


def server_sides():
    return list(ProxyServerSide.select().order_by(ProxyServerSide.id))


def create_server_side(data):
    """An account a peer logs in with, and the department that takes its tasks."""
    from app.services import accounts

    errors = {}
    login = _login(data, errors)
    password = data.get("password")
    if not isinstance(password, str) or len(password) < 8:
        errors["password"] = "At least 8 characters."
    department = Department.get_or_none_by_id(data.get("department_id"))
    if department is None:
        errors["department_id"] = "Choose an existing department."
    elif ProxyServerSide.select().where(ProxyServerSide.department == department.id).exists():
        errors["department_id"] = SERVER_SIDE_UNIQUE["department_id"]
    if login and ProxyServerSide.select().where(ProxyServerSide.login == login).exists():
        errors["login"] = SERVER_SIDE_UNIQUE["login"]
    if errors:
        raise ValidationError(errors)
    with unique_fields(SERVER_SIDE_UNIQUE), write_transaction():
        return ProxyServerSide.create(
            login=login, password_hash=accounts.hash_password(password), department=department
        )


def authenticate_peer(login, password):
    """The server side a peer logs in as, or None (unknown login or wrong password: the
    same argon2 work either way). A hash made with older costs is upgraded on success."""
    from app.services import accounts

    side = ProxyServerSide.get_or_none(ProxyServerSide.login == (login or ""))
    if side is None or not side.enabled:
        accounts.verify_password_hash(None, password)  # as long as a known login takes
        return None
    # a peer calls often: a verified password is remembered for a minute (in memory, as a
    # keyed digest bound to the stored hash), so argon2 runs once, not on every request
    key = hashlib.sha256(f"{side.password_hash}\0{password}".encode(errors="replace")).hexdigest()
    now = utcnow()
    if _verified.get(key, now) <= now:
        if not accounts.verify_password_hash(side.password_hash, password):
            return None
        if accounts.needs_rehash(side.password_hash):
            with write_transaction():
                ProxyServerSide.update(password_hash=accounts.hash_password(password)).where(
                    (ProxyServerSide.id == side.id)
                    & (ProxyServerSide.password_hash == side.password_hash)
                ).execute()
        else:
            if len(_verified) > 1000:
                _verified.clear()
            _verified[key] = now + VERIFIED_FOR
    if side.last_seen_at is None or (now - side.last_seen_at).total_seconds() > 30:
        ProxyServerSide.update(last_seen_at=now).where(ProxyServerSide.id == side.id).execute()
    return side


def peer_departments(side):
    """What a peer may send to: the one department of its server side."""
    return [side.department]


# --- server side: receiving -----------------------------------------------------------------


def receive_task(side, data):
    """A peer sends a task (idempotent on its task id). Returns ``(task, created)``."""

    values, errors = PeerTaskInput.check(data)
    if "department_id" not in errors and values["department_id"] != side.department_id:
        errors["department_id"] = "Not a department this account may send to."
    if errors:
        raise ValidationError(errors)
    sender_task_id, title, form = values["sender_task_id"], values["title"], values["form"]
    fields, description = values["fields"], values["description"]
    now = utcnow()
    with write_transaction():
        existing = ProxyInbound.get_or_none(
            (ProxyInbound.server_side == side.id) & (ProxyInbound.sender_task_id == sender_task_id)
        )
        if existing is not None:
            return existing.task, False
        task = Task.create(
            department=side.department_id,
            title=title,
            status="new",
            fields={str(k): str(v) for k, v in fields.items()},
            created_at=now,
            updated_at=now,
        )
        ProxyInbound.create(
            server_side=side,
            sender_task_id=sender_task_id,
            task=task,
            description=description,
            form=form,
        )
        with applying_from(side):
            if description:
                tasks.record_event(task, "created", f"peer {side.login}", now, text=description)
            else:
                tasks.record_event(
                    task,
                    "created",
                    f"peer {side.login}",
                    now,
                    message="received_from",
                    args={"login": side.login},
                )
        tasks.notify_department(task, f"received from {side.login}")
    return task, True


def receive_event(side, sender_task_id, data):
    """A peer reports a change of a task it sent (idempotent on ``event_id``)."""
    if not 1 <= sender_task_id <= MAX_SENDER_TASK_ID:  # never received (nor storable)
        raise NotFound(f"no task {sender_task_id} was received from {side.login}")
    values = PeerEventInput.parse(data)
    event_id, kind, text, fields = (values[k] for k in ("event_id", "kind", "text", "fields"))
    actor = f"{side.login}: {values['actor'] or 'peer'}"[:200]
    now = utcnow()
    with write_transaction():
        inbound = ProxyInbound.get_or_none(
            (ProxyInbound.server_side == side.id) & (ProxyInbound.sender_task_id == sender_task_id)
        )
        if inbound is None:
            raise NotFound(f"no task {sender_task_id} was received from {side.login}")
        if ProxyReceived.get_or_none(
            (ProxyReceived.server_side == side.id) & (ProxyReceived.event_id == event_id)
        ):
            return inbound.task, False
        ProxyReceived.create(server_side=side, event_id=event_id)
        task = get_for_update(Task, inbound.task_id)
        with applying_from(side):
            _apply(task, kind, actor, text, fields, now)
    return task, True


def _apply(task, kind, actor, text, fields, now):
    """Apply a change that came from a peer to a local task (inside a transaction)."""
    if kind == "comment" and text:
        tasks.record_event(task, "comment", actor, now, text=text)
    elif kind in ("fields", "assigned", "reopened") and (fields or text):
        if fields and task.status in Task.OPEN_STATUSES:
            task.fields = {**(task.fields or {}), **{str(k): str(v) for k, v in fields.items()}}
            task.save()
        if text:
            tasks.record_event(task, "note", actor, now, text=text)
        else:
            tasks.record_event(task, "note", actor, now, message="fields_filled_remotely")
    elif kind in ("close", "closed"):
        if task.status not in Task.OPEN_STATUSES:
            return
        try:
            with write_transaction():  # a savepoint: a refused close changes nothing
                tasks.close_locked(task, actor, dict(fields), "", now)
        except ValidationError as exc:
            tasks.record_event(
                task,
                "note",
                actor,
                now,
                message="closed_remotely_missing",
                args={"missing": ", ".join(sorted(exc.fields))},
            )
            task.fields = {**(task.fields or {}), **{str(k): str(v) for k, v in fields.items()}}
            task.save()
    elif kind in ("cancel", "cancelled") and task.status in Task.OPEN_STATUSES:
        tasks.cancel_locked(task, actor, text, now, default_message="cancelled_remotely")


def events_after(side, cursor, limit=PAGE):
    """The changes made here to this peer's tasks after ``cursor``."""
    rows = list(
        ProxyEvent.select()
        .where((ProxyEvent.server_side == side.id) & (ProxyEvent.id > cursor))
        .order_by(ProxyEvent.id)
        .limit(limit)
    )
    events = [PeerEvent.of(e) for e in rows]
    return events, (rows[-1].id if rows else cursor)


# --- the hook: every task history event --------------------------------------------------


@tasks.task_changed.connect
def on_task_event(task, kind, actor, text, fields, now, **_):
    """Every task history event (``tasks.task_changed``, inside its transaction): report
    it to the peer that sent the task, push it to the peer the task is forwarded to."""
    inbound = ProxyInbound.get_or_none(ProxyInbound.task == task.id)
    if (
        inbound is not None
        and kind in REPORTED_KINDS
        and not _from(ProxyServerSide, inbound.server_side_id)
    ):
        ProxyEvent.create(
            server_side=inbound.server_side_id,
            sender_task_id=inbound.sender_task_id,
            kind=kind,
            actor=actor,
            text=text,
            fields=fields or {},
            created_at=now,
        )
    if kind not in PUSHED_KINDS or task.department_id is None:
        return
    side = ProxyClientSide.get_or_none(ProxyClientSide.department == task.department_id)
    if side is None or not side.enabled or _from(ProxyClientSide, side.id):
        return
    if kind != "created" and not ProxyLink.select().where(ProxyLink.task == task.id).exists():
        return  # a task that was never forwarded (made before the client side existed)
    if kind == "created":
        ProxyLink.get_or_create(task=task.id, defaults={"client_side": side.id})
    ProxyOutgoing.create(
        client_side=side.id,
        task=task.id,
        event_id=uuid.uuid4().hex,
        kind=PUSHED_KINDS[kind],
        payload=_payload(task, kind, actor, text, fields),
        created_at=now,
    )
    dispatch.proxy_push(side.id)


def _payload(task, kind, actor, text, fields):
    payload = {"actor": actor, "text": text, "fields": fields or {}}
    if kind == "created":
        description = [text] if text else []
        if task.service_id:
            service = task.service
            description.append(
                f"Service #{service.id}: {service.tariff.name} "
                f"({service.tariff.product_type.name}), client {service.client.name}."
            )
        payload.update(
            {
                "title": task.title,
                "description": "\n".join(description),
                "form": [
                    {
                        "name": f["name"],
                        "label": f.get("label") or f["name"],
                        "required": bool(f.get("required")),
                    }
                    for f in tasks.form_of(task)
                ],
                "fields": task.fields or {},
            }
        )
    return payload


# --- client side: configuration -----------------------------------------------------------


def client_sides():
    return list(ProxyClientSide.select().order_by(ProxyClientSide.id))


def get_client_side(side_id):
    side = ProxyClientSide.get_or_none_by_id(side_id)
    if side is None:
        raise NotFound(f"client side {side_id} not found")
    return side


def _peer_settings(data, errors):
    from urllib.parse import urlparse

    url = _text(data, "url", errors, 300)
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors["url"] = "Must be an http:// or https:// URL of the remote Provisor."
        url = url.rstrip("/")
    login = _login(data, errors)
    password = data.get("password")
    if not isinstance(password, str) or not password:
        errors["password"] = "This field is required."
    return url, login, password


def remote_departments(data):
    """Log in to the remote instance and list the departments it offers (an htmx step)."""
    errors = {}
    url, login, password = _peer_settings(data, errors)
    if errors:
        raise ValidationError(errors)
    body = _call("GET", url, login, password, "/departments")
    return body.get("departments", [])


def create_client_side(data):
    """Forward the tasks of a local department to a department of a remote instance."""
    from app.models import parse_id

    errors = {}
    url, login, password = _peer_settings(data, errors)
    department = Department.get_or_none_by_id(data.get("department_id"))
    if department is None:
        errors["department_id"] = "Choose the local department whose tasks are forwarded."
    elif ProxyClientSide.select().where(ProxyClientSide.department == department.id).exists():
        errors["department_id"] = CLIENT_SIDE_UNIQUE["department_id"]
    remote_id = parse_id(data.get("remote_department_id"))
    if remote_id is None:
        errors["remote_department_id"] = "Choose the remote department."
    if errors:
        raise ValidationError(errors)
    offered = {
        d["id"]: d["name"]
        for d in _call("GET", url, login, password, "/departments").get("departments", [])
    }
    if remote_id not in offered:
        raise ValidationError(
            {
                "remote_department_id": "The remote instance does not offer "
                "this department to this login."
            }
        )
    with unique_fields(CLIENT_SIDE_UNIQUE), write_transaction():
        return ProxyClientSide.create(
            url=url,
            login=login,
            password_encrypted=encrypt(password),
            remote_department_id=remote_id,
            remote_department_name=offered[remote_id],
            department=department,
        )


# --- client side: talking to the peer ------------------------------------------------------


class PeerError(ServiceError):
    status = 502
    code = "peer_error"


def _call(method, url, login, password, path, json=None, params=None):
    """One request to a peer's ``/proxy/v1``; a clear PeerError when it does not work."""
    timeout = current_app.config["PROXY_TIMEOUT"]
    try:
        outbound.check(url)
        response = requests.request(
            method,
            f"{url}/proxy/v1{path}",
            json=json,
            params=params,
            # UTF-8, as the peer reads it (requests would encode text as Latin-1, and
            # fail on anything beyond it)
            auth=(login.encode(), password.encode()),
            timeout=timeout,
            allow_redirects=False,  # a peer's answers are shown: only its own
        )
    except outbound.Refused as exc:
        raise PeerError(f"not calling {url}: {exc.message}") from None
    except requests.Timeout:
        raise PeerError(f"{url} did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise PeerError(f"cannot reach {url} ({exc.__class__.__name__})") from None
    if 300 <= response.status_code < 400:
        raise PeerError(
            f"{url} answered {response.status_code} redirecting to "
            f"{response.headers.get('Location') or '(nowhere)'}: use that address"
        )
    if response.status_code == 401:
        raise PeerError(
            f"{url} refused the login {login!r}: wrong login or password", code="peer_unauthorized"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise PeerError(f"{url} answered {response.status_code} without JSON: is it a Provisor?")
    if response.status_code >= 400:
        message = (body.get("error") or {}).get("message") or response.reason
        raise PeerError(f"{url} answered {response.status_code}: {message}")
    return body


def _peer(side):
    password = decrypt(side.password_encrypted)
    return lambda method, path, **kw: _call(method, side.url, side.login, password, path, **kw)


def _note_error(side_id, message):
    ProxyClientSide.update(last_error=message[:1000], last_error_at=utcnow()).where(
        ProxyClientSide.id == side_id
    ).execute()


def push(side_id):
    """Send this client side's pending changes, in order; stop at the first failure.

    Returns the number sent. A lease on the client side keeps two pushers from
    interleaving; the peer's idempotency makes a repeat after a crash harmless.
    """
    now = utcnow()
    with write_transaction():
        taken = (
            ProxyClientSide.update(pushing_until=now + PUSH_LEASE)
            .where(
                (ProxyClientSide.id == side_id)
                & (ProxyClientSide.pushing_until.is_null() | (ProxyClientSide.pushing_until < now))
            )
            .execute()
        )
    if not taken:
        return 0  # another pusher is at it; it will see our events too
    sent = 0
    try:
        side = get_client_side(side_id)
        call = _peer(side)
        while True:
            batch = list(
                ProxyOutgoing.select()
                .where((ProxyOutgoing.client_side == side.id) & (ProxyOutgoing.status == "pending"))
                .order_by(ProxyOutgoing.id)
                .limit(50)
            )
            if not batch:
                break
            for event in batch:
                _send_one(side, call, event)
                sent += 1
        if sent:
            with write_transaction():
                ProxyClientSide.update(last_push_at=utcnow(), last_error=None).where(
                    ProxyClientSide.id == side.id
                ).execute()
        _release(side_id)
        # a change queued while we held the lease found it taken and left it to us
        if (
            ProxyOutgoing.select()
            .where((ProxyOutgoing.client_side == side_id) & (ProxyOutgoing.status == "pending"))
            .exists()
        ):
            dispatch.proxy_push(side_id)
        return sent
    except ServiceError as exc:
        _note_error(side_id, f"push: {exc.message}")
        delay = current_app.config["PROXY_RETRY_DELAY"]
        log.warning(
            "proxy push to client side %s failed (%s); retrying in %s s",
            side_id,
            exc.message,
            delay,
        )
        dispatch.proxy_push(side_id, delay=delay)
        return sent
    finally:
        _release(side_id)


def _release(side_id):
    ProxyClientSide.update(pushing_until=None).where(ProxyClientSide.id == side_id).execute()


def _send_one(side, call, event):
    link = ProxyLink.get_or_none(ProxyLink.task == event.task_id)
    payload = dict(event.payload or {})
    try:
        if event.kind == "create":
            body = call(
                "POST",
                "/tasks",
                json={
                    "sender_task_id": event.task_id,
                    "department_id": side.remote_department_id,
                    "title": payload.get("title"),
                    "description": payload.get("description", ""),
                    "form": payload.get("form", []),
                    "fields": payload.get("fields", {}),
                },
            )
            if link is not None:
                ProxyLink.update(remote_task_id=body.get("task_id")).where(
                    ProxyLink.id == link.id
                ).execute()
        else:
            call(
                "POST",
                f"/tasks/{event.task_id}/events",
                json={
                    "event_id": event.event_id,
                    "kind": event.kind,
                    "actor": payload.get("actor"),
                    "text": payload.get("text", ""),
                    "fields": payload.get("fields", {}),
                },
            )
    except ServiceError as exc:
        ProxyOutgoing.update(
            attempts=ProxyOutgoing.attempts + 1, last_error=exc.message[:1000]
        ).where(ProxyOutgoing.id == event.id).execute()
        if link is not None:
            ProxyLink.update(sync_error=exc.message[:1000]).where(ProxyLink.id == link.id).execute()
        raise
    now = utcnow()
    with write_transaction():
        ProxyOutgoing.update(
            status=PROXY_OUTGOING.target("sent", "pending"),
            sent_at=now,
            attempts=ProxyOutgoing.attempts + 1,
            last_error=None,
        ).where(
            (ProxyOutgoing.id == event.id)
            & ProxyOutgoing.status.in_(PROXY_OUTGOING.sources("sent"))
        ).execute()
        if link is not None:
            ProxyLink.update(last_synced_at=now, sync_error=None).where(
                ProxyLink.id == link.id
            ).execute()


def pull(side_id):
    """Bring back the peer's changes after our cursor; the cursor moves with each event
    applied, in the same transaction, so nothing is applied twice or skipped."""
    side = get_client_side(side_id)
    applied = 0
    try:
        call = _peer(side)
        cursor = side.cursor
        while True:
            body = call("GET", "/events", params={"after": cursor})
            events = body.get("events") or []
            for event in events:
                _apply_pulled(side, event)
                cursor = event["id"]
                applied += 1
            if not events or body.get("next", cursor) <= cursor and len(events) < PAGE:
                break
    except ServiceError as exc:
        _note_error(side.id, f"pull: {exc.message}")
        raise
    with write_transaction():
        ProxyClientSide.update(last_pull_at=utcnow(), last_error=None).where(
            ProxyClientSide.id == side.id
        ).execute()
    return applied


def _apply_pulled(side, event):
    now = utcnow()
    with write_transaction():
        current = get_for_update(ProxyClientSide, side.id)
        if event["id"] <= current.cursor:
            return  # applied by a concurrent pull
        ProxyClientSide.update(cursor=event["id"]).where(ProxyClientSide.id == side.id).execute()
        link = (
            ProxyLink.select()
            .where(
                (ProxyLink.client_side == side.id) & (ProxyLink.task == event.get("sender_task_id"))
            )
            .first()
        )
        if link is None:
            log.warning(
                "proxy: event %s is about task %s, which was not sent from here",
                event["id"],
                event.get("sender_task_id"),
            )
            return
        task = get_for_update(Task, link.task_id)
        actor = f"{side.remote_department_name or side.url}: {event.get('actor') or 'peer'}"
        kind = event.get("kind")
        text = event.get("text") or ""
        if kind == "assigned":
            text = f"{text} (at {side.url})"
        with applying_from(side):
            _apply(task, kind, actor[:200], text, event.get("fields") or {}, now)
        ProxyLink.update(last_synced_at=now, sync_error=None).where(
            ProxyLink.id == link.id
        ).execute()


def check_all():
    """Pull every enabled client side now; returns ``{side_id: applied or error text}``."""
    results = {}
    for side in ProxyClientSide.select().where(ProxyClientSide.enabled == True):  # noqa: E712
        try:
            results[side.id] = pull(side.id)
        except ServiceError as exc:
            results[side.id] = exc.message
    return results


def sweep():
    """Re-send pending pushes (a lost message, a peer that was down) and pull when due.

    Each client side on its own (:func:`sweeps.each`): one that fails is logged with the
    reason kept as its last error, and the others are still pushed and pulled.
    """
    from app.services import sweeps

    now = utcnow()
    pending = sorted(
        {
            row.client_side_id
            for row in ProxyOutgoing.select(ProxyOutgoing.client_side)
            .where(ProxyOutgoing.status == "pending")
            .distinct()
        }
    )
    errors = sweeps.each("client_side", pending, dispatch.proxy_push, _note_sweep_error)
    due = now - timedelta(seconds=current_app.config["PROXY_PULL_INTERVAL"])
    pulls = [
        side.id
        for side in ProxyClientSide.select(ProxyClientSide.id).where(
            (ProxyClientSide.enabled == True)  # noqa: E712
            & (ProxyClientSide.last_pull_at.is_null() | (ProxyClientSide.last_pull_at <= due))
            & (ProxyClientSide.last_error_at.is_null() | (ProxyClientSide.last_error_at <= due))
        )
    ]
    errors += sweeps.each("client_side", pulls, dispatch.proxy_pull, _note_sweep_error)
    return {"proxy_pushes": len(pending), "proxy_pulls": len(pulls), "proxy_errors": errors}


def _note_sweep_error(side_id, message):
    ProxyClientSide.update(last_error=message, last_error_at=utcnow()).where(
        ProxyClientSide.id == side_id
    ).execute()


def link_of(task):
    """How a local task is forwarded (or None)."""
    return ProxyLink.get_or_none(ProxyLink.task == task.id)


def inbound_of(task):
    """Where a received task came from (or None)."""
    return ProxyInbound.get_or_none(ProxyInbound.task == task.id)
