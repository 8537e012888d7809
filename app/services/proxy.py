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
import json
import logging
import threading
import time
import uuid
from datetime import timedelta

import requests
from flask import current_app
from peewee import IntegrityError

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
    LEGACY_KINDS,
    MAX_CURSOR,
    MAX_PAGE,
    MAX_SENDER_TASK_ID,
    PROTOCOL,
    PROTOCOL_HEADER,
    REPORTED_KINDS,
    PeerEvent,
    PeerEventInput,
    PeerTaskInput,
)
from app.services import detail_fields, dispatch, events, tasks
from app.services.errors import (
    Busy,
    Conflict,
    NotFound,
    ServiceError,
    ValidationError,
    unique_fields,
)
from app.states import PROXY_OUTGOING
from app.watchdog import Deadline, DeadlineExceeded

log = logging.getLogger(__name__)

PUSHED_KINDS = {
    "created": "create",
    "comment": "comment",
    "fields": "fields",
    "closed": "closed",
    "cancelled": "cancelled",
}
SERVER_SIDE_UNIQUE = {
    "login": "A server side with this login exists.",
    "department_id": "This department already serves another server side.",
}
CLIENT_SIDE_UNIQUE = {
    "department_id": "This department is already forwarded by another client side.",
}

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


def _utf8(value):
    """Text that can be sent as UTF-8 (a command line can carry undecodable bytes)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(data, name, errors, max_length=200):
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        errors[name] = "This field is required."
        return None
    if not _utf8(value):
        errors[name] = "Must be valid UTF-8 text."
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
    elif not _utf8(password):
        errors["password"] = "Must be valid UTF-8 text."
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
    try:
        return _receive_task(side, sender_task_id, title, form, fields, description, now)
    except IntegrityError:  # the same task sent twice at once: the other request made it
        existing = ProxyInbound.get_or_none(
            (ProxyInbound.server_side == side.id) & (ProxyInbound.sender_task_id == sender_task_id)
        )
        if existing is None:
            raise
        return existing.task, False


def _receive_task(side, sender_task_id, title, form, fields, description, now):
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
        events.created("task", task)
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
    """A peer reports a change of a task it sent. Returns ``(task, applied)``.

    Event ids are unique per server side (login): the same id again for the same task
    with the same content is a replay (``applied`` False); for another task or with other
    content it is refused (409 ``event_id_reused``), never dropped. A close or cancel of a
    task that is no longer open is refused (409 ``task_not_open``); a close that lacks a
    required field of this side's form is refused (422, the fields named) and leaves a
    note on the task.
    """
    if not 1 <= sender_task_id <= MAX_SENDER_TASK_ID:  # never received (nor storable)
        raise NotFound(f"no task {sender_task_id} was received from {side.login}")
    values = PeerEventInput.parse(data)
    event_id, kind, text, fields = (values[k] for k in ("event_id", "kind", "text", "fields"))
    if kind == "comment" and not text.strip():
        raise ValidationError({"text": "Write a comment."})
    actor = f"{side.login}: {values['actor'] or 'peer'}"[:200]
    digest = hashlib.sha256(
        json.dumps([kind, text, fields], sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()
    now = utcnow()
    try:
        with write_transaction():
            inbound = ProxyInbound.get_or_none(
                (ProxyInbound.server_side == side.id)
                & (ProxyInbound.sender_task_id == sender_task_id)
            )
            if inbound is None:
                raise NotFound(f"no task {sender_task_id} was received from {side.login}")
            task = get_for_update(Task, inbound.task_id)  # one change of a task at a time
            seen = ProxyReceived.get_or_none(
                (ProxyReceived.server_side == side.id) & (ProxyReceived.event_id == event_id)
            )
            if seen is not None:
                if seen.sender_task_id in (None, sender_task_id) and seen.digest in (None, digest):
                    return task, False
                raise Conflict(_reused(event_id, seen), code="event_id_reused")
            if kind in ("closed", "cancelled") and task.status not in Task.OPEN_STATUSES:
                raise Conflict(
                    f"task {sender_task_id} is {task.status} here: it cannot be {kind} again",
                    code="task_not_open",
                )
            with applying_from(side):
                _apply(task, kind, actor, text, fields, now, refuse_incomplete=True)
            ProxyReceived.create(
                server_side=side,
                event_id=event_id,
                sender_task_id=sender_task_id,
                digest=digest,
                received_at=now,
            )
    except IntegrityError:  # the same event id at once for another task
        raise Conflict(f"event id {event_id!r} is already used", code="event_id_reused") from None
    except IncompleteClose as exc:
        with write_transaction():  # say so on the task: the sender believes it closed
            task = get_for_update(Task, exc.task_id)
            with applying_from(side):
                if exc.invalid:
                    message = "close_refused_invalid"
                    args = {"problems": describe_problems(exc.fields)}
                else:
                    message, args = (
                        "close_refused_missing",
                        {"missing": ", ".join(sorted(exc.fields))},
                    )
                tasks.record_event(task, "note", actor, now, message=message, args=args)
        raise
    return task, True


def _reused(event_id, seen):
    if seen.sender_task_id is not None:
        return (
            f"event id {event_id!r} was already used for task {seen.sender_task_id} "
            "with other content; a new change needs a new event id"
        )
    return f"event id {event_id!r} is already used"


def describe_problems(fields):
    """``missing ip, username; port: Not a port (...)``: why a close cannot be applied
    (the field errors of the refused close: required ones missing, values of a wrong kind)."""
    missing = sorted(name for name, message in fields.items() if _is_missing(message))
    parts = ["missing " + ", ".join(missing)] if missing else []
    parts += [f"{name}: {fields[name]}" for name in sorted(fields) if name not in missing]
    return "; ".join(parts).rstrip(".")  # the sentences it goes into end it


def _is_missing(message):
    return str(message).endswith(" is required.")


class IncompleteClose(ValidationError):
    """A close that lacks required detail fields here, or carries a value that is not of
    its field's kind (``999.999.1.1`` as an IP address): nothing changes (422)."""

    def __init__(self, task_id, fields):
        problems = describe_problems(fields)
        super().__init__(fields, message=f"the task cannot be closed here: {problems}")
        self.task_id = task_id
        self.invalid = any(not _is_missing(m) for m in fields.values())


def _known_and_extra(task, fields):
    """Split a peer's detail fields into those of this task's form and the others (kept as
    extra details on the task, never refused: the peers' product types may differ)."""
    names = {f["name"] for f in tasks.form_of(task)}
    known = {k: v for k, v in fields.items() if k in names}
    return known, {k: v for k, v in fields.items() if k not in names}


def _apply(task, kind, actor, text, fields, now, refuse_incomplete=False):
    """Apply a change that came from a peer to a local task (inside a transaction).

    A close that lacks required fields raises :class:`IncompleteClose` with
    ``refuse_incomplete`` (a push: the sender is told), or else leaves the task open with
    the fields kept and a note (a pull) and returns the missing names. Returns None when
    the change was applied.
    """
    kind = LEGACY_KINDS.get(kind, kind)
    if kind == "comment" and text:
        tasks.record_event(task, "comment", actor, now, text=text)
    elif kind in ("fields", "assigned", "reopened") and (fields or text):
        if fields and task.status in Task.OPEN_STATUSES:
            task.fields = {**(task.fields or {}), **fields}
            task.save()
        if text:
            tasks.record_event(task, "note", actor, now, text=text)
        else:
            tasks.record_event(task, "note", actor, now, message="fields_filled_remotely")
    elif kind == "closed":
        if task.status not in Task.OPEN_STATUSES:
            return None
        known, extra = _known_and_extra(task, fields)
        try:
            with write_transaction():  # a savepoint: a refused close changes nothing
                if extra:
                    task.fields = {**(task.fields or {}), **extra}
                tasks.close_locked(task, actor, known, "", now)
        except ValidationError as exc:
            task = get_for_update(Task, task.id)  # as it was before the savepoint
            if refuse_incomplete:
                raise IncompleteClose(task.id, exc.fields) from None
            if all(_is_missing(m) for m in exc.fields.values()):
                message, args = (
                    "closed_remotely_missing",
                    {"missing": ", ".join(sorted(exc.fields))},
                )
            else:
                message, args = (
                    "closed_remotely_invalid",
                    {"problems": describe_problems(exc.fields)},
                )
            tasks.record_event(task, "note", actor, now, message=message, args=args)
            task.fields = {**(task.fields or {}), **fields}
            task.save()
            return exc.fields
        except Conflict as exc:  # its operation is running an attempt: later
            raise Busy(exc.message) from None
    elif kind == "cancelled" and task.status in Task.OPEN_STATUSES:
        try:
            tasks.cancel_locked(task, actor, text, now, default_message="cancelled_remotely")
        except Conflict as exc:
            raise Busy(exc.message) from None
    return None


def events_after(side, cursor, limit=MAX_PAGE):
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
        # the events of one server side are numbered in the order they commit: a peer's
        # cursor must never pass an id whose transaction is still open (PostgreSQL hands
        # out ids before commit), so their writers take turns on the server side's row
        get_for_update(ProxyServerSide, inbound.server_side_id)
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
    pushed = PUSHED_KINDS[kind]
    if pushed == "closed" and not fields and _needs_fields(task):
        # closed because its operation was completed another way (automatically, or on
        # the operation's page): nothing for the peer to close it with, and nothing left
        # for its people to do
        pushed, text = "cancelled", "No longer needed: done at the sender without this task."
    ProxyOutgoing.create(
        client_side=side.id,
        task=task.id,
        event_id=uuid.uuid4().hex,
        kind=pushed,
        payload=_payload(task, kind, actor, text, fields),
        created_at=now,
    )
    dispatch.proxy_push(side.id)


def _sets_up(task):
    """Whether closing the task sets a service up (its detail fields are the peer's form):
    a task of an ``open`` operation, or one received with a form and forwarded on."""
    if task.operation_id is not None:
        return task.operation.kind == "open"
    return task.service_id is None


def _needs_fields(task):
    return _sets_up(task) and any(f.get("required") for f in tasks.form_of(task))


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
                        "kind": detail_fields.kind_of(f),
                        **(
                            {"max_length": detail_fields.limit_of(f)}
                            if detail_fields.kind_of(f) == "text"
                            else {}
                        ),
                    }
                    for f in (tasks.form_of(task) if _sets_up(task) else [])
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
    elif not _utf8(password) or len(password) > 1000:
        errors["password"] = "Must be valid UTF-8 text of at most 1,000 characters."
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
    """A call to a peer that did not work. ``permanent``: the peer refused this change for
    good (400, 404, 409, 413, 422: sending it again cannot help); otherwise (unreachable,
    a timeout, 5xx, 408, 429, 401/403, an answer that is not the protocol's) it is tried
    again later. ``retry_after``: what the peer asked for (seconds), if anything."""

    status = 502
    code = "peer_error"
    PERMANENT = frozenset({400, 404, 409, 413, 422})

    def __init__(
        self, message, code=None, permanent=False, peer_status=None, wait=None, peer_fields=None
    ):
        super().__init__(message, code=code)
        self.permanent = permanent
        self.peer_status = peer_status
        self.wait = wait
        self.peer_fields = peer_fields or {}


def _retry_after(response):
    value = (response.headers.get("Retry-After") or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 7 else None


def json_text(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _deadline():
    """How long one call to a peer may take in all (``PROXY_TIMEOUT`` bounds each read: a
    peer sending a byte a second would keep a call alive for ever without this)."""
    return 2 * current_app.config["PROXY_TIMEOUT"]


def _lease():
    """A pusher's lease: one whole call and one more read past it, at least a minute."""
    return timedelta(seconds=max(60, _deadline() + current_app.config["PROXY_TIMEOUT"] + 10))


def _call(method, url, login, password, path, json=None, params=None):
    """One request to a peer's ``/proxy/v1``; a clear PeerError when it does not work."""
    timeout = current_app.config["PROXY_TIMEOUT"]
    try:
        with Deadline(_deadline()):
            response, content = _request(method, url, login, password, path, json, params)
    except DeadlineExceeded:
        raise PeerError(f"{url} did not finish answering within {_deadline():g} s") from None
    except outbound.Refused as exc:
        raise PeerError(f"not calling {url}: {exc.message}") from None
    except requests.Timeout:
        raise PeerError(f"{url} did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise PeerError(f"cannot reach {url} ({exc.__class__.__name__})") from None
    return _answer(url, login, response, content)


def _request(method, url, login, password, path, json, params):
    outbound.check(url)
    headers = {PROTOCOL_HEADER: PROTOCOL}
    data = None
    if json is not None:  # UTF-8 as it is: escaping non-ASCII would make bodies 6 times larger
        data = json_text(json).encode()
        headers["Content-Type"] = "application/json; charset=utf-8"
    response = requests.request(
        method,
        f"{url}/proxy/v1{path}",
        data=data,
        params=params,
        # UTF-8, as the peer reads it (requests would encode text as Latin-1, and fail on
        # anything beyond it)
        auth=(login.encode(), password.encode()),
        headers=headers,
        timeout=current_app.config["PROXY_TIMEOUT"],
        allow_redirects=False,  # a peer's answers are shown: only its own
        stream=True,
    )
    return response, outbound.read_capped(response)


def _answer(url, login, response, content):
    """The JSON object a peer answered, or the PeerError its answer amounts to."""
    status = response.status_code
    if 300 <= status < 400:
        raise PeerError(
            f"{url} answered {status} redirecting to "
            f"{response.headers.get('Location') or '(nowhere)'}: use that address"
        )
    if status == 401:
        raise PeerError(
            f"{url} refused the login {login!r}: wrong login or password", code="peer_unauthorized"
        )
    try:
        body = json.loads(content) if content is not None else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        kind = "truncated (over 1 MiB)" if content is None else "without JSON"
        raise PeerError(
            f"{url} answered {status} {kind}: is it a Provisor?",
            peer_status=status,
            wait=_retry_after(response),
        )
    if status >= 400:
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        message = str(error.get("message") or response.reason or "")[:500]
        fields = error.get("fields") if isinstance(error.get("fields"), dict) else {}
        if fields:
            named = "; ".join(f"{k}: {v}" for k, v in list(fields.items())[:10])
            message = f"{message} ({named})"[:800]
        raise PeerError(
            f"{url} answered {status}: {message}",
            # a 409 "conflict" is two identical requests meeting there: not a refusal
            permanent=status in PeerError.PERMANENT
            and not (status == 409 and error.get("code") == "conflict"),
            peer_status=status,
            wait=_retry_after(response),
            peer_fields=fields,
        )
    return body


def _peer(side):
    password = decrypt(side.password_encrypted)
    return lambda method, path, **kw: _call(method, side.url, side.login, password, path, **kw)


def _note_error(side_id, message, pull_failed=False):
    now = utcnow()
    changes = {"last_error": message[:1000], "last_error_at": now}
    if pull_failed:  # the next scheduled pull waits a full interval (pushes do not)
        changes["pull_failed_at"] = now
    ProxyClientSide.update(**changes).where(ProxyClientSide.id == side_id).execute()


def backoff(failures):
    """Seconds to wait after ``failures`` failed pushes in a row: the retry delay, doubled
    with each failure, at most ``PROXY_RETRY_MAX``."""
    config = current_app.config
    step = config["PROXY_RETRY_DELAY"] * 2 ** min(max(failures - 1, 0), 30)
    return min(step, max(config["PROXY_RETRY_MAX"], config["PROXY_RETRY_DELAY"]))


def _pending(side_id):
    """The changes to send now, in order: pending ones, except those of a task with an
    earlier change parked (a task's changes keep their order; other tasks' flow)."""
    held = ProxyOutgoing.select(ProxyOutgoing.task).where(
        (ProxyOutgoing.client_side == side_id) & (ProxyOutgoing.status == "parked")
    )
    return (
        ProxyOutgoing.select()
        .where(
            (ProxyOutgoing.client_side == side_id)
            & (ProxyOutgoing.status == "pending")
            & ProxyOutgoing.task.not_in(held)
        )
        .order_by(ProxyOutgoing.id)
    )


def push(side_id):
    """Send this client side's pending changes, in order. Returns the number sent.

    One schedule per client side: a push runs only when it is due (``next_push_at``,
    claimed with the lease in one UPDATE), so extra messages and sweeps add no calls; a
    failure moves the due time by the backoff. A change the peer refuses for good is
    parked (with the peer's message) and the others go on; the same task's later changes
    wait behind it. The peer's idempotency makes a repeat after a crash harmless.
    """
    now = utcnow()
    lease = [now + _lease()]
    with write_transaction():
        taken = (
            ProxyClientSide.update(pushing_until=lease[0])
            .where(
                (ProxyClientSide.id == side_id)
                & (ProxyClientSide.enabled == True)  # noqa: E712
                & (ProxyClientSide.pushing_until.is_null() | (ProxyClientSide.pushing_until < now))
                & (ProxyClientSide.next_push_at.is_null() | (ProxyClientSide.next_push_at <= now))
            )
            .execute()
        )
    if not taken:
        return 0  # not due yet, or another pusher is at it (it will see our changes too)
    sent = 0
    try:
        side = get_client_side(side_id)
        call = _peer(side)
        while True:
            batch = list(_pending(side.id).limit(50))
            if not batch:
                break
            held = set()  # tasks with a change parked in this batch: their later ones wait
            for event in batch:
                if event.task_id in held:
                    continue
                if not _renew(side.id, lease):
                    return sent  # the lease ran out: another pusher owns the order now
                if _send_one(side, call, event):
                    sent += 1
                else:
                    held.add(event.task_id)
        with write_transaction():
            changes = {"next_push_at": None, "push_failures": 0}
            if sent:
                changes.update(last_push_at=utcnow(), last_error=None)
            ProxyClientSide.update(**changes).where(ProxyClientSide.id == side.id).execute()
        _release(side_id, lease)
        # a change queued while we held the lease found it taken and left it to us
        if _pending(side_id).exists():
            dispatch.proxy_push(side_id)
        return sent
    except ServiceError as exc:
        _failed(side_id, exc)
        return sent
    finally:
        _release(side_id, lease)


def _failed(side_id, exc):
    """The peer failed (not for one change: for all of them): try again at the next due
    time of the backoff, or when the peer asked (Retry-After, within the cap)."""
    side = ProxyClientSide.get_by_id(side_id)
    failures = side.push_failures + 1
    delay = backoff(failures)
    if getattr(exc, "wait", None):
        delay = min(max(delay, exc.wait), current_app.config["PROXY_RETRY_MAX"])
    due = utcnow() + timedelta(seconds=delay)
    with write_transaction():
        ProxyClientSide.update(
            push_failures=failures,
            next_push_at=due,
            last_error=f"push: {exc.message}"[:1000],
            last_error_at=utcnow(),
        ).where(ProxyClientSide.id == side_id).execute()
    log.warning(
        "proxy push to client side %s failed (%s); next try in %s s", side_id, exc.message, delay
    )
    dispatch.proxy_push(side_id, delay=delay)  # the sweep would find it too: no extra call


def _renew(side_id, lease):
    """Extend our lease before each call (a long queue outlives one lease); False when it
    is not ours any more."""
    until = utcnow() + _lease()
    with write_transaction():
        renewed = (
            ProxyClientSide.update(pushing_until=until)
            .where((ProxyClientSide.id == side_id) & (ProxyClientSide.pushing_until == lease[0]))
            .execute()
        )
    if renewed:
        lease[0] = until
    return bool(renewed)


def _release(side_id, lease):
    ProxyClientSide.update(pushing_until=None).where(
        (ProxyClientSide.id == side_id) & (ProxyClientSide.pushing_until == lease[0])
    ).execute()


def _send_one(side, call, event):
    """Send one change; True when the peer took it, False when it refused it for good
    (parked). A temporary failure raises (the push stops: order is kept)."""
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
            remote_id = body.get("task_id")
            if link is not None and isinstance(remote_id, int) and not isinstance(remote_id, bool):
                ProxyLink.update(remote_task_id=remote_id).where(ProxyLink.id == link.id).execute()
        else:
            _post_event(call, event, payload)
    except PeerError as exc:
        parked = exc.permanent
        with write_transaction():
            ProxyOutgoing.update(
                attempts=ProxyOutgoing.attempts + 1,
                last_error=exc.message[:1000],
                **({"status": PROXY_OUTGOING.target("park", "pending")} if parked else {}),
            ).where(
                (ProxyOutgoing.id == event.id)
                & ProxyOutgoing.status.in_(PROXY_OUTGOING.sources("park"))
            ).execute()
            if link is not None:
                message = f"{_CHANGE_NAMES.get(event.kind, event.kind)} refused: " if parked else ""
                ProxyLink.update(sync_error=(message + exc.message)[:1000]).where(
                    ProxyLink.id == link.id
                ).execute()
        if parked:
            log.warning("proxy change %s parked: %s", event.id, exc.message)
            return False
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
    return True


def _post_event(call, event, payload):
    kind = LEGACY_KINDS.get(event.kind, event.kind)
    body = {
        "event_id": event.event_id,
        "kind": kind,
        "actor": payload.get("actor"),
        "text": payload.get("text", ""),
        "fields": payload.get("fields", {}),
    }
    try:
        return call("POST", f"/tasks/{event.task_id}/events", json=body)
    except PeerError as exc:
        older = {new: old for old, new in LEGACY_KINDS.items()}.get(kind)
        if older is None or exc.peer_status != 422 or "kind" not in exc.peer_fields:
            raise
    # a peer older than protocol 1 knows this kind by its older name
    return call("POST", f"/tasks/{event.task_id}/events", json={**body, "kind": older})


_CHANGE_NAMES = {
    "create": "the task",
    "comment": "a comment",
    "fields": "the detail fields",
    "closed": "the close",
    "close": "the close",
    "cancelled": "the cancel",
    "cancel": "the cancel",
}


def parked_changes(side_id=None, task_id=None):
    """Changes a peer refused for good, waiting for staff to retry or skip them."""
    query = ProxyOutgoing.select().where(ProxyOutgoing.status == "parked")
    if side_id is not None:
        query = query.where(ProxyOutgoing.client_side == side_id)
    if task_id is not None:
        query = query.where(ProxyOutgoing.task == task_id)
    return list(query.order_by(ProxyOutgoing.id))


def parked_counts():
    """``{client side id: parked changes}``."""
    from peewee import fn

    rows = (
        ProxyOutgoing.select(ProxyOutgoing.client_side, fn.COUNT(ProxyOutgoing.id).alias("n"))
        .where(ProxyOutgoing.status == "parked")
        .group_by(ProxyOutgoing.client_side)
    )
    return {row.client_side_id: row.n for row in rows}


def change_name(change):
    """What a change is, in words ("a comment")."""
    return _CHANGE_NAMES.get(change.kind, change.kind)


def retry_change(change_id):
    """Send a parked change again (and push now)."""
    return _unpark(change_id, "retry")


def skip_change(change_id):
    """Give up a parked change: it is never sent; the task's later changes go on."""
    return _unpark(change_id, "skip")


def _unpark(change_id, action):
    with write_transaction():
        change = get_for_update(ProxyOutgoing, change_id) if _exists(change_id) else None
        if change is None:
            raise NotFound(f"change {change_id} not found")
        PROXY_OUTGOING.move(change, action, subject=f"change {change.id}")
        change.save()
        if action == "skip" and not parked_changes(task_id=change.task_id):
            ProxyLink.update(sync_error=None).where(ProxyLink.task == change.task_id).execute()
        ProxyClientSide.update(next_push_at=None).where(
            ProxyClientSide.id == change.client_side_id
        ).execute()
        dispatch.proxy_push(change.client_side_id)
    return change


def _exists(change_id):
    from app.models import parse_id

    pk = parse_id(change_id)
    return pk is not None and ProxyOutgoing.select().where(ProxyOutgoing.id == pk).exists()


def push_now(side_id):
    """Retry now: push at once instead of at the next due time. Returns the number of
    changes sent; raises PeerError when the peer failed (the backoff goes on)."""
    side = get_client_side(side_id)
    with write_transaction():
        ProxyClientSide.update(next_push_at=None).where(ProxyClientSide.id == side.id).execute()
    sent = push(side.id)
    side = get_client_side(side.id)
    if side.next_push_at is not None:
        raise PeerError(side.last_error or f"sending to {side.url} failed")
    return sent


# --- client side: pulling ------------------------------------------------------------------


class PageError(PeerError):
    """A page of events that is not what the protocol says."""


def _valid_page(url, body, cursor, limit):
    """The events of a page of ``GET /events`` newer than ``cursor``, in order, and the
    page's ``next``; PageError naming the first thing wrong."""

    def bad(what):
        return PageError(f"{url} answered a malformed page of events: {what}")

    def whole(value):
        return isinstance(value, int) and not isinstance(value, bool)

    events, next_ = body.get("events"), body.get("next")
    if not isinstance(events, list):
        raise bad("'events' is not a list")
    if len(events) > limit:
        raise bad(f"{len(events)} events, more than the {limit} asked for")
    if not whole(next_) or not 0 <= next_ <= MAX_CURSOR:
        raise bad(f"'next' is not a whole number from 0 to {MAX_CURSOR}")
    good = []
    last = cursor
    for n, event in enumerate(events):
        if not isinstance(event, dict):
            raise bad(f"event {n} is not an object")
        if not whole(event.get("id")) or event["id"] < 1:
            raise bad(f"event {n} has no whole-number id")
        if event["id"] > MAX_CURSOR:  # what ``after`` cannot take (18 digits)
            raise bad(f"event {n}: its id is beyond {MAX_CURSOR}")
        if not whole(event.get("sender_task_id")):
            raise bad(f"event {event['id']} has no whole-number sender_task_id")
        for name in ("actor", "text"):
            if event.get(name) is not None and not isinstance(event[name], str):
                raise bad(f"event {event['id']}: {name} is not text")
        fields = event.get("fields") if event.get("fields") is not None else {}
        if not isinstance(fields, dict) or not all(
            isinstance(v, str) and len(v) <= 2000 for v in fields.values()
        ):
            raise bad(f"event {event['id']}: fields is not an object of text values")
        if not isinstance(event.get("kind"), str):
            raise bad(f"event {event['id']} has no kind")
        if event["id"] <= last:
            continue  # not newer than what we have: a peer that ignores the cursor
        last = event["id"]
        good.append(event)
    return good, next_


def pull(side_id, wait=False):
    """Bring back the peer's changes after our cursor; the cursor moves with each event
    applied, in the same transaction, so nothing is applied twice or skipped.

    One pull of a client side at a time (a lease, like a push's): a sweep's pull while
    another runs does nothing (returns None); ``wait`` (Check now, ``checkevent``) waits
    for the running one to end, then pulls. At most ``PROXY_PULL_MAX_PAGES`` pages; it
    stops at a page with no event newer than the cursor (a peer that ignores ``after``) and
    at a short page. Returns the number of events applied; raises PeerError (recorded on
    the client side) for a peer that fails or a malformed page, and for a close here that
    could not be applied (after applying everything else).
    """
    side = get_client_side(side_id)
    lease = [_claim_pull(side.id)]
    give_up = utcnow() + _lease()
    while lease[0] is None and wait and utcnow() < give_up:
        time.sleep(0.2)
        lease[0] = _claim_pull(side.id)
    if lease[0] is None:
        if wait:
            raise PeerError(f"another pull from {side.url} is still running; try again later")
        return None
    try:
        return _pull(get_client_side(side.id), lease)
    finally:
        ProxyClientSide.update(pulling_until=None).where(
            (ProxyClientSide.id == side.id) & (ProxyClientSide.pulling_until == lease[0])
        ).execute()


def _claim_pull(side_id):
    now = utcnow()
    until = now + _lease()
    with write_transaction():
        taken = (
            ProxyClientSide.update(pulling_until=until)
            .where(
                (ProxyClientSide.id == side_id)
                & (ProxyClientSide.pulling_until.is_null() | (ProxyClientSide.pulling_until < now))
            )
            .execute()
        )
    return until if taken else None


def _renew_pull(side_id, lease):
    until = utcnow() + _lease()
    with write_transaction():
        renewed = (
            ProxyClientSide.update(pulling_until=until)
            .where((ProxyClientSide.id == side_id) & (ProxyClientSide.pulling_until == lease[0]))
            .execute()
        )
    if renewed:
        lease[0] = until
    return bool(renewed)


def _pull(side, lease):
    applied = 0
    unapplied = []
    skipped = 0
    max_pages = current_app.config["PROXY_PULL_MAX_PAGES"]
    try:
        call = _peer(side)
        cursor = side.cursor
        for _ in range(max_pages):
            if not _renew_pull(side.id, lease):
                break  # the lease ran out: another puller has it now
            body = call("GET", "/events", params={"after": cursor, "limit": MAX_PAGE})
            events, _next = _valid_page(side.url, body, cursor, MAX_PAGE)
            for event in events:
                outcome = _apply_pulled(side, event)
                if outcome == SKIPPED:
                    skipped += 1
                elif outcome:
                    unapplied.append((event, outcome))
                cursor = event["id"]
                applied += 1
            if not events or len(body["events"]) < MAX_PAGE:
                break
    except ServiceError as exc:
        _note_error(side.id, f"pull: {exc.message}", pull_failed=True)
        raise
    finally:
        if skipped:
            log.info(
                "proxy: %d event(s) from %s skipped: about tasks not sent from here, or of "
                "kinds this side does not know",
                skipped,
                side.url,
            )
    if unapplied:
        message = "; ".join(
            f"task #{e['sender_task_id']} was closed remotely but not here: "
            + describe_problems(problems)
            for e, problems in unapplied
        )
        with write_transaction():
            ProxyClientSide.update(
                last_pull_at=utcnow(),
                last_error=f"pull: {message}"[:1000],
                last_error_at=utcnow(),
                pull_failed_at=None,
            ).where(ProxyClientSide.id == side.id).execute()
        raise PeerError(message, code="close_not_applied")
    with write_transaction():
        ProxyClientSide.update(last_pull_at=utcnow(), last_error=None, pull_failed_at=None).where(
            ProxyClientSide.id == side.id
        ).execute()
        if get_client_side(side.id).next_push_at is not None:
            # the peer answers again: what waits for the push's next due time goes now
            ProxyClientSide.update(next_push_at=None).where(ProxyClientSide.id == side.id).execute()
            dispatch.proxy_push(side.id)
    return applied


SKIPPED = "skipped"


def _apply_pulled(side, event):
    """Apply one pulled event (cursor moved with it). Returns the missing fields of a
    close that could not be applied here (the peer is told with a comment), else None."""
    now = utcnow()
    with write_transaction():
        current = get_for_update(ProxyClientSide, side.id)
        if event["id"] <= current.cursor:
            return None  # applied by a concurrent pull
        ProxyClientSide.update(cursor=event["id"]).where(ProxyClientSide.id == side.id).execute()
        ours = 1 <= event["sender_task_id"] <= MAX_SENDER_TASK_ID  # a task id here
        link = (
            ProxyLink.select()
            .where((ProxyLink.client_side == side.id) & (ProxyLink.task == event["sender_task_id"]))
            .first()
            if ours
            else None
        )
        kind = event["kind"]
        if link is None or kind not in REPORTED_KINDS:
            log.debug("proxy: event %s (%s) skipped", event["id"], kind)
            return SKIPPED  # the cursor moves on (protocol 1: unknown kinds are skipped)
        task = get_for_update(Task, link.task_id)
        actor = f"{side.remote_department_name or side.url}: {event.get('actor') or 'peer'}"
        text = event.get("text") or ""
        if kind == "assigned":
            text = f"{text} (at {side.url})"
        fields = {str(k)[:100]: v for k, v in (event.get("fields") or {}).items()}
        with applying_from(side):
            missing = _apply(task, kind, actor[:200], text[:10000], fields, now)
        error = None
        if missing:
            problems = describe_problems(missing)
            error = f"closed remotely but not here: {problems}"
            # tell the peer (a comment on its task: the sender's words reach its staff)
            if all(_is_missing(m) for m in missing.values()):
                text = (
                    f"This task was closed at {side.url}, but it cannot be closed at the "
                    f"sender: {', '.join(sorted(missing))} missing there. Please fill them in."
                )
            else:
                text = (
                    f"This task was closed at {side.url}, but it cannot be closed at the "
                    f"sender: {problems}. Please correct them."
                )
            tasks.record_event(task, "comment", "Provisor", now, text=text)
        ProxyLink.update(last_synced_at=now, sync_error=error).where(
            ProxyLink.id == link.id
        ).execute()
        return missing


def check_all():
    """Pull every enabled client side now; returns ``{side_id: applied or error text}``."""
    results = {}
    for side in ProxyClientSide.select().where(ProxyClientSide.enabled == True):  # noqa: E712
        try:
            results[side.id] = pull(side.id, wait=True)
        except ServiceError as exc:
            results[side.id] = exc.message
    return results


def sweep():
    """Re-send pending pushes that are due (a lost message, a peer that was down) and pull
    when due.

    Each client side on its own (:func:`sweeps.each`): one that fails is logged with the
    reason kept as its last error, and the others are still pushed and pulled. A client
    side waiting out its backoff is left alone: one schedule per client side.
    """
    from app.services import sweeps

    now = utcnow()
    pending = sorted(
        {
            row.client_side_id
            for row in ProxyOutgoing.select(ProxyOutgoing.client_side)
            .join(ProxyClientSide)
            .where(
                (ProxyOutgoing.status == "pending")
                & (ProxyClientSide.enabled == True)  # noqa: E712
                & (ProxyClientSide.next_push_at.is_null() | (ProxyClientSide.next_push_at <= now))
                & (ProxyClientSide.pushing_until.is_null() | (ProxyClientSide.pushing_until < now))
            )
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
            # a failed pull waits a full interval; a failing push does not hold pulls back
            & (ProxyClientSide.pull_failed_at.is_null() | (ProxyClientSide.pull_failed_at <= due))
            & (ProxyClientSide.pulling_until.is_null() | (ProxyClientSide.pulling_until < now))
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
