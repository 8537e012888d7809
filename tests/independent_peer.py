"""An independent peer of the tasks proxy, protocol 1 (``/proxy/v1``).

Written from ``docs/proxy-protocol.md`` alone (sections 1-13 are normative), without
looking at Provisor's own implementation, so that the tests can check that the document
is enough to interoperate with Provisor in both roles. It depends on werkzeug (the WSGI
server) and requests (the HTTP client) only, and imports nothing from Provisor.

- ``PeerServer``: the server side. The four endpoints of section 6 as a WSGI app with its
  own in-memory store (logins, received tasks, used event ids, the journal of events),
  plus "staff" methods that change received tasks and record journal events (section
  8.2), and switchable misbehaviours: ``down`` (stop the server: connection refused),
  ``slow``, ``5xx``, ``garbage`` (a non-JSON 200), ``ignore_cursor`` (always its first
  page) and ``refuse`` (a 4xx to the changes a predicate picks).
- ``PeerClient``: the client side. An ordered outbox of tasks and changes with the
  failure classes of section 11 (temporary: one retry schedule with a capped backoff that
  honours ``Retry-After``; permanent: parked, blocking only its own task, retry or skip by
  hand), and the pull of section 10 (cursor from 0, stored with each event, bounded pages,
  stop at a short page or a page with nothing newer, a page of the wrong shape applies
  nothing).
"""

import base64
import binascii
import hmac
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime

import requests
from werkzeug.serving import WSGIRequestHandler, make_server

PROTOCOL_HEADER = "Provisor-Proxy-Protocol"
PROTOCOL_VERSION = "1"
REALM_CHALLENGE = 'Basic realm="provisor-proxy", charset="UTF-8"'
TASK_ID_MAX = 2**31 - 1
PUSHED_KINDS = ("comment", "fields", "closed", "cancelled")
DEPRECATED_KINDS = {"close": "closed", "cancel": "cancelled"}
PULLED_KINDS = ("assigned", "comment", "fields", "closed", "cancelled", "reopened")
OPEN_STATUSES = ("new", "in_work")
MAX_NESTING = 64
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def now_iso():
    """Section 2.9: ISO 8601 in UTC with a ``Z``, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def basic_credentials(login, password):
    """Section 3: ``Basic base64(utf8(login) ":" utf8(password))``."""
    if ":" in login:
        raise ValueError("a login must not contain ':' (section 3)")
    raw = login.encode("utf-8") + b":" + password.encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Invalid(Exception):
    """A protocol error answer: status, code, message, fields."""

    def __init__(self, status, code, message, fields=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or {}
        self.headers = headers or {}


def _validation(member, message):
    return Invalid(422, "validation_error", f"{member}: {message}", {member: message})


# --- values (section 5) -----------------------------------------------------------------


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _nesting(text):
    """The deepest nesting of arrays and objects, strings left out (section 2.6)."""
    depth = deepest = 0
    for ch in _STRINGS.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _has_nul(value):
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _optional(body, name, default):
    """Section 2.8: an optional member sent as ``null`` counts as left out."""
    value = body.get(name)
    return default if value is None else value


def _text(body, name, maximum, default=""):
    value = _optional(body, name, default)
    if not isinstance(value, str):
        raise _validation(name, "must be a string")
    if len(value) > maximum:
        raise _validation(name, f"at most {maximum} characters")
    return value


def _task_id(value, name="sender_task_id"):
    if not _is_int(value) or not 1 <= value <= TASK_ID_MAX:
        raise _validation(name, f"an integer from 1 to {TASK_ID_MAX}")
    return value


def _detail_fields(value, name="fields"):
    """Section 5, *detail fields*: stored as strings (a number as its text, null as "")."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _validation(name, "must be an object")
    if len(value) > 100:
        raise _validation(name, "at most 100 members")
    out = {}
    for key, item in value.items():
        if not 1 <= len(key) <= 100 or not key.strip():
            raise _validation(name, f"bad field name {key[:40]!r}")
        if item is None:
            item = ""
        elif _is_int(item) or isinstance(item, float):
            item = json.dumps(item)
        elif not isinstance(item, str):
            raise _validation(name, f"{key}: must be a string")
        if len(item) > 2000:
            raise _validation(name, f"{key}: at most 2000 characters")
        out[key] = item
    return out


def _form(value):
    if value is None:
        return []
    if not isinstance(value, list):
        raise _validation("form", "must be an array")
    if len(value) > 100:
        raise _validation("form", "at most 100 entries")
    form = []
    for entry in value:
        if not isinstance(entry, dict):
            raise _validation("form", "each entry must be an object")
        name = entry.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise _validation("form", "each entry needs a name of 1-100 characters")
        label = _optional(entry, "label", "")
        if not isinstance(label, str) or len(label) > 200:
            raise _validation("form", f"{name}: label must be a string of at most 200")
        required = _optional(entry, "required", False)
        if not isinstance(required, bool):
            raise _validation("form", f"{name}: required must be a boolean")
        form.append({"name": name, "label": label or name, "required": required})
    return form


# --- the server side --------------------------------------------------------------------


class PeerServer:
    """The server side of protocol 1 on loopback, with an in-memory store.

    Switches (attributes, change them at any time):

    - ``mode``: ``None`` (behave), ``"slow"`` (answer after ``slow_seconds``),
      ``"5xx"`` (answer ``fail_status`` with an HTML body), ``"garbage"`` (a 200 whose
      body is not JSON), ``"ignore_cursor"`` (``GET /events`` always returns the first
      page). Down is ``stop()`` / ``start()``.
    - ``apply_first``: with ``5xx`` and ``garbage``, process the request first and then
      spoil the answer (a lost answer), instead of answering without processing.
    - ``refuse``: ``None`` or a function ``(login, sender_task_id, body) -> None or
      (status, code, message, fields)`` called for each change before it is applied.
    - ``mode_paths``: the path prefixes a misbehaviour applies to (default: all).
    """

    def __init__(self, port=None, max_body=1_048_576):
        self.lock = threading.RLock()
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_body = max_body
        self.logins = {}  # login -> {"password", "departments", "enabled"}
        self.tasks = {}  # (login, sender_task_id) -> task
        self.used = {}  # login -> {event_id: (sender_task_id, kind, text, fields)}
        self.journal = []  # pulled events in id order, each with its "login"
        self._event_seq = 1200
        self._task_seq = 900
        self.requests = []  # every request received, with what was answered
        self.mode = None
        self.slow_seconds = 0.0
        self.fail_status = 502
        self.apply_first = False
        self.refuse = None
        self.mode_paths = ("/",)
        self.in_flight = {}  # method -> requests being answered now
        self.max_in_flight = {}  # method -> the most at once
        self.server = None
        self.thread = None

    # life cycle ("down" is stop(): connections are then refused)
    def start(self):
        self.server = make_server(
            "127.0.0.1", self.port, self.wsgi, threaded=True, request_handler=_QuietHandler
        )
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.server = None

    @property
    def up(self):
        return self.server is not None

    # administration
    def add_login(self, login, password, departments=({"id": 3, "name": "Dedicated servers"},)):
        if ":" in login:
            raise ValueError("a login must not contain ':'")
        with self.lock:
            self.logins[login] = {
                "password": password,
                "departments": [dict(d) for d in departments],
                "enabled": True,
            }
            self.used.setdefault(login, {})

    def task(self, login, sender_task_id):
        with self.lock:
            return self.tasks.get((login, sender_task_id))

    def tasks_of(self, login):
        with self.lock:
            return sorted(
                (t for (owner, _), t in self.tasks.items() if owner == login),
                key=lambda t: t["task_id"],
            )

    def arrived(self, login, sender_task_id):
        """What the client side's pushes did to one task, in order: ``("created", title)``
        then ``(kind, text, fields)`` for each applied change (refusals not included)."""
        task = self.task(login, sender_task_id)
        if task is None:
            return []
        return [h["what"] for h in task["history"] if h["by"] == "client"]

    def sent(self, method=None, path_part=None, since=0.0):
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r["method"] == method)
                and (path_part is None or path_part in r["path"])
                and r["t"] >= since
            ]

    # the server side's own staff (section 8.2): each change is a journal event
    def _journal_event(self, login, sender_task_id, kind, actor, text, fields):
        with self.lock:
            self._event_seq += 1 + len(self.journal) % 3  # ids are not contiguous
            event = {
                "id": self._event_seq,
                "sender_task_id": sender_task_id,
                "kind": kind,
                "actor": actor,
                "text": text,
                "fields": dict(fields),
                "created_at": now_iso(),
                "login": login,
            }
            self.journal.append(event)
            return event

    def _staff_task(self, login, sender_task_id):
        task = self.tasks[(login, sender_task_id)]
        return task

    def staff_assign(self, login, sender_task_id, who="Bob Stone", actor="bob@peer.example"):
        with self.lock:
            task = self._staff_task(login, sender_task_id)
            if task["status"] == "new":
                task["status"] = "in_work"
            task["history"].append({"by": "staff", "what": ("assigned", who)})
            return self._journal_event(
                login, sender_task_id, "assigned", actor, f"Assigned to {who}.", {}
            )

    def staff_comment(self, login, sender_task_id, text, actor="bob@peer.example"):
        with self.lock:
            task = self._staff_task(login, sender_task_id)
            task["history"].append({"by": "staff", "what": ("comment", text)})
            return self._journal_event(login, sender_task_id, "comment", actor, text, {})

    def staff_fields(self, login, sender_task_id, fields, actor="bob@peer.example"):
        with self.lock:
            task = self._staff_task(login, sender_task_id)
            task["fields"].update(fields)
            task["history"].append({"by": "staff", "what": ("fields", dict(fields))})
            names = ", ".join(sorted(fields))
            return self._journal_event(
                login,
                sender_task_id,
                "fields",
                actor,
                f"Detail fields filled in: {names}.",
                task["fields"],
            )

    def staff_close(self, login, sender_task_id, fields, actor="bob@peer.example"):
        with self.lock:
            task = self._staff_task(login, sender_task_id)
            task["fields"].update(fields)
            task["status"] = "closed"
            task["history"].append({"by": "staff", "what": ("closed", dict(task["fields"]))})
            return self._journal_event(
                login,
                sender_task_id,
                "closed",
                actor,
                "Closed with the detail fields.",
                task["fields"],
            )

    def staff_cancel(self, login, sender_task_id, reason, actor="bob@peer.example"):
        with self.lock:
            task = self._staff_task(login, sender_task_id)
            task["status"] = "cancelled"
            task["history"].append({"by": "staff", "what": ("cancelled", reason)})
            return self._journal_event(login, sender_task_id, "cancelled", actor, reason, {})

    def record_event(self, login, sender_task_id, kind, text="", fields=None, actor="system"):
        """A journal event as is (for a task the client never sent, or an unknown kind)."""
        return self._journal_event(login, sender_task_id, kind, actor, text, fields or {})

    # HTTP
    def wsgi(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        record = {
            "t": time.monotonic(),
            "method": method,
            "path": path,
            "query": query,
            "from": environ.get("REMOTE_PORT"),
        }
        with self.lock:
            self.in_flight[method] = self.in_flight.get(method, 0) + 1
            self.max_in_flight[method] = max(
                self.max_in_flight.get(method, 0), self.in_flight[method]
            )
            self.requests.append(record)
            mode = self.mode if path.startswith(tuple(self.mode_paths)) else None
            apply_first = self.apply_first
        try:
            if mode in ("5xx", "garbage") and not apply_first:
                status, headers, body = self._spoiled(mode)
            else:
                with self.lock:  # one request at a time changes the store: arrival order
                    status, headers, body = self._answer(environ, method, path, query, record)
                if mode in ("5xx", "garbage"):
                    status, headers, body = self._spoiled(mode)
                elif mode == "slow":
                    time.sleep(self.slow_seconds)
            record["status"] = status
            start_response(_status_line(status), headers)
            return [body]
        finally:
            with self.lock:
                self.in_flight[method] -= 1
                record["end"] = time.monotonic()

    def _spoiled(self, mode):
        if mode == "garbage":  # claims JSON, is not (a broken reverse proxy, say)
            body = b"<html><body>Welcome to nginx!</body></html>"
            return 200, [("Content-Type", "application/json")], body
        body = b"<html><body><h1>Bad Gateway</h1></body></html>"
        return self.fail_status, [("Content-Type", "text/html")], body

    def _answer(self, environ, method, path, query, record):
        try:
            status, payload = self._route(environ, method, path, query, record)
            extra = {}
        except Invalid as error:
            status, extra = error.status, error.headers
            payload = {
                "error": {"code": error.code, "message": error.message, "fields": error.fields}
            }
        record["answer"] = payload
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = [
            ("Content-Type", "application/json"),
            (PROTOCOL_HEADER, PROTOCOL_VERSION),
            ("Content-Length", str(len(body))),
            *extra.items(),
        ]
        return status, headers, body

    def _route(self, environ, method, path, query, record):
        routes = {
            "/proxy/v1/departments": ("GET", self._departments),
            "/proxy/v1/tasks": ("POST", self._post_task),
            "/proxy/v1/events": ("GET", self._events),
        }
        args = ()
        if path in routes:
            allowed, handler = routes[path]
        elif (m := re.fullmatch(r"/proxy/v1/tasks/([^/]+)/events", path)) is not None:
            allowed, handler, args = "POST", self._post_event, (m.group(1),)
        else:
            raise Invalid(404, "not_found", f"no such route: {path}")
        if method != allowed:
            raise Invalid(
                405,
                "method_not_allowed",
                f"{method} is not allowed here",
                headers={"Allow": allowed},
            )
        login = self._authenticate(environ)
        record["login"] = login
        body = self._body(environ, record) if method == "POST" else None
        record["body"] = body
        return handler(login, body, query, *args)

    def _authenticate(self, environ):
        unauthorized = Invalid(
            401,
            "unauthorized",
            "authentication required",
            headers={"WWW-Authenticate": REALM_CHALLENGE},
        )
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise unauthorized
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized from None
        login, colon, password = decoded.partition(":")
        account = self.logins.get(login)
        if (
            not colon
            or account is None
            or not account["enabled"]
            or not hmac.compare_digest(password.encode("utf-8"), account["password"].encode())
        ):
            raise unauthorized
        return login

    def _body(self, environ, record):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise Invalid(400, "invalid_json", "bad Content-Length") from None
        if length > self.max_body:
            raise Invalid(413, "request_entity_too_large", f"the limit is {self.max_body} bytes")
        raw = environ["wsgi.input"].read(length) if length else b""
        record["raw"] = raw
        content_type = environ.get("CONTENT_TYPE", "")
        media, _, params = content_type.partition(";")
        charset = params.strip().lower().replace(" ", "")
        if media.strip().lower() != "application/json" or charset not in (
            "",
            "charset=utf-8",
            'charset="utf-8"',
        ):
            raise Invalid(400, "invalid_json", "the Content-Type must be application/json")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(400, "invalid_json", "the body is not UTF-8") from None
        if _nesting(text) > MAX_NESTING:
            raise Invalid(400, "invalid_json", f"JSON nested deeper than {MAX_NESTING} levels")

        def refuse_constant(name):
            raise ValueError(f"{name} is not JSON")

        try:
            body = json.loads(text, parse_constant=refuse_constant)
        except (ValueError, RecursionError):
            raise Invalid(400, "invalid_json", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Invalid(400, "invalid_json", "the body must be a JSON object")
        for name, value in body.items():
            if "\x00" in name or _has_nul(value):
                raise _validation(name.replace("\x00", ""), "must not contain U+0000")
        return body

    def _departments(self, login, body, query):
        return 200, {"departments": [dict(d) for d in self.logins[login]["departments"]]}

    def _post_task(self, login, body, query):
        sender_task_id = _task_id(body.get("sender_task_id"))
        department_id = body.get("department_id")
        allowed = [d["id"] for d in self.logins[login]["departments"]]
        if not _is_int(department_id) or department_id not in allowed:
            raise _validation("department_id", "not a department this login may send to")
        title = body.get("title")
        if not isinstance(title, str) or not 1 <= len(title.strip()) <= 250:
            raise _validation("title", "a string of 1-250 characters is required")
        description = _text(body, "description", 10_000)
        form = _form(body.get("form"))
        fields = _detail_fields(body.get("fields"))
        existing = self.tasks.get((login, sender_task_id))
        if existing is not None:  # the first copy wins
            return 200, {
                "task_id": existing["task_id"],
                "status": existing["status"],
                "created": False,
            }
        self._task_seq += 1
        task = {
            "task_id": self._task_seq,
            "login": login,
            "sender_task_id": sender_task_id,
            "department_id": department_id,
            "title": title.strip(),
            "description": description,
            "form": form,
            "fields": dict(fields),
            "status": "new",
            "history": [{"by": "client", "what": ("created", title.strip())}],
        }
        self.tasks[(login, sender_task_id)] = task
        return 201, {"task_id": task["task_id"], "status": "new", "created": True}

    def _post_event(self, login, body, query, raw_id):
        # decimal, no sign, no leading zeros; out of range or never sent: 404
        if not re.fullmatch(r"[1-9][0-9]*", raw_id) or int(raw_id) > TASK_ID_MAX:
            raise Invalid(404, "not_found", f"no task {raw_id[:30]} from this login")
        sender_task_id = int(raw_id)
        task = self.tasks.get((login, sender_task_id))
        if task is None:
            raise Invalid(404, "not_found", f"no task {sender_task_id} from this login")
        event_id = body.get("event_id")
        if not isinstance(event_id, str) or not 1 <= len(event_id) <= 100 or not event_id.strip():
            raise _validation("event_id", "a string of 1-100 characters is required")
        kind = body.get("kind")
        kind = DEPRECATED_KINDS.get(kind, kind)
        if kind not in PUSHED_KINDS:
            raise _validation("kind", f"one of {', '.join(PUSHED_KINDS)}")
        actor = _optional(body, "actor", "")
        if not isinstance(actor, str) or len(actor) > 200:
            raise _validation("actor", "a string of at most 200 characters")
        text = _text(body, "text", 10_000)
        if kind == "comment" and not text.strip():
            raise _validation("text", "a comment must not be empty")
        fields = _detail_fields(body.get("fields"))
        content = (sender_task_id, kind, text, fields)
        first = self.used[login].get(event_id)
        if first is not None:  # a replay is answered 200 before the task's state is checked
            if first == content:
                return 200, {"task_id": task["task_id"], "status": task["status"], "applied": False}
            raise Invalid(
                409,
                "event_id_reused",
                f"event id {event_id!r} was already used with other content",
            )
        if self.refuse is not None:
            refusal = self.refuse(login, sender_task_id, body)
            if refusal is not None:
                status, code, message, refused_fields = refusal
                raise Invalid(status, code, message, refused_fields)
        open_ = task["status"] in OPEN_STATUSES
        if kind == "comment":
            task["history"].append({"by": "client", "what": ("comment", text, {})})
        elif kind == "fields":
            if open_:
                task["fields"].update(fields)
            task["history"].append({"by": "client", "what": ("fields", text, fields)})
        elif kind == "closed":
            if not open_:
                raise Invalid(409, "task_not_open", f"task {sender_task_id} is {task['status']}")
            merged = {**task["fields"], **fields}
            missing = [
                f for f in task["form"] if f["required"] and not merged.get(f["name"], "").strip()
            ]
            if missing:
                names = ", ".join(sorted(f["name"] for f in missing))
                task["history"].append(
                    {"by": "note", "what": ("note", f"closed by the sender, missing {names}")}
                )
                raise Invalid(
                    422,
                    "validation_error",
                    f"the task cannot be closed here: missing {names}",
                    {f["name"]: f"{f['label']} is required." for f in missing},
                )
            task["fields"] = merged
            task["status"] = "closed"
            task["history"].append({"by": "client", "what": ("closed", text, fields)})
        else:  # cancelled
            if not open_:
                raise Invalid(409, "task_not_open", f"task {sender_task_id} is {task['status']}")
            task["status"] = "cancelled"
            task["history"].append(
                {"by": "client", "what": ("cancelled", text or "Cancelled remotely.", {})}
            )
        self.used[login][event_id] = content  # used only once applied
        return 200, {"task_id": task["task_id"], "status": task["status"], "applied": True}

    def _events(self, login, body, query, *_):
        params = {}
        for pair in query.split("&"):
            if pair:
                name, _, value = pair.partition("=")
                params.setdefault(name, value)
        after = params.get("after", "0")
        if not re.fullmatch(r"[0-9]{1,18}", after):
            raise _validation("after", "a whole number >= 0 of at most 18 digits")
        limit = params.get("limit", "500")
        if not re.fullmatch(r"[0-9]{1,3}", limit) or not 1 <= int(limit) <= 500:
            raise _validation("limit", "a whole number from 1 to 500")
        after, limit = int(after), int(limit)
        mine = [e for e in self.journal if e["login"] == login]
        if self.mode == "ignore_cursor":
            page = mine[:limit]
        else:
            page = [e for e in mine if e["id"] > after][:limit]
        events = [{k: v for k, v in e.items() if k != "login"} for e in page]
        return 200, {"events": events, "next": events[-1]["id"] if events else after}


class _QuietHandler(WSGIRequestHandler):
    def log(self, *args, **kwargs):  # no access log on stderr
        pass


def _status_line(status):
    reasons = {
        200: "OK",
        201: "Created",
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        413: "Content Too Large",
        422: "Unprocessable Entity",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }
    return f"{status} {reasons.get(status, 'Status')}"


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the client side --------------------------------------------------------------------

SUCCESS, TEMPORARY, CONFIGURATION, PERMANENT = "success", "temporary", "configuration", "permanent"


def classify(status, body, error=None):
    """Section 11: the class of one outcome (``status`` None when there was no answer)."""
    if error is not None or status is None:
        return TEMPORARY
    if 300 <= status < 400:
        return CONFIGURATION
    if status in (401, 403):
        return CONFIGURATION
    if status >= 500 or status in (408, 429):
        return TEMPORARY
    if not isinstance(body, dict):
        return TEMPORARY  # a 2xx or 4xx whose body is not a JSON object
    if status in (200, 201):
        return SUCCESS
    if status == 409 and (body.get("error") or {}).get("code") == "conflict":
        return TEMPORARY
    if 400 <= status < 500:
        return PERMANENT
    return TEMPORARY  # any other 2xx: not described by section 11; try again


def _retry_after(headers):
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return 0.0


def page_problem(page):
    """Section 10, client rule 7: why a ``GET /events`` answer is not a page (or None)."""
    if not isinstance(page, dict):
        return "the answer is not an object"
    events, next_ = page.get("events"), page.get("next")
    if not isinstance(events, list):
        return "events is not an array"
    if not _is_int(next_) or next_ < 0:
        return "next is not an integer >= 0"
    for event in events:
        if not isinstance(event, dict):
            return "an event is not an object"
        if not _is_int(event.get("id")) or event["id"] < 1:
            return "an event id is not an integer >= 1"
        if not _is_int(event.get("sender_task_id")):
            return "an event's sender_task_id is not an integer"
        if not isinstance(event.get("kind"), str):
            return "an event's kind is not a string"
        for name in ("actor", "text", "created_at"):
            if event.get(name) is not None and not isinstance(event[name], str):
                return f"an event's {name} is not a string"
        fields = event.get("fields")
        if fields is not None and (
            not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values())
        ):
            return "an event's fields is not an object of strings"
    return None


class PeerClient:
    """The client side of protocol 1: an ordered outbox and a cursor, all in memory.

    ``received`` holds, per ``sender_task_id``, the pulled events applied, in order;
    ``cursor`` only ever moves forward, one applied (or skipped) event at a time.
    """

    def __init__(
        self,
        base_url,
        login,
        password,
        department_id=None,
        timeout=5.0,
        retry_delay=0.2,
        retry_max=2.0,
        max_pages=20,
        limit=500,
    ):
        self.base = base_url.rstrip("/") + "/proxy/v1"
        self.authorization = basic_credentials(login, password)
        self.department_id = department_id
        self.timeout = timeout
        self.retry_delay, self.retry_max = retry_delay, retry_max
        self.max_pages, self.limit = max_pages, limit
        self.http = requests.Session()
        self.http.trust_env = False  # loopback: no proxies from the environment
        self.outbox = []  # changes in the order they happened
        self.failures = 0  # failures in a row: one retry schedule for this server side
        self.due = 0.0
        self.last_error = None
        self.cursor = 0
        self.received = {}  # sender_task_id -> [event, ...]
        self.skipped = []  # pulled events skipped (unknown task or kind)
        self.sent_tasks = set()
        self.calls = []  # (method, path, status or None)

    # one request
    def request(self, method, path, body=None, params=None):
        """One call: ``(status or None, headers, JSON body or None, error or None)``."""
        headers = {"Authorization": self.authorization, PROTOCOL_HEADER: PROTOCOL_VERSION}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            response = self.http.request(
                method,
                self.base + path,
                data=data,
                params=params,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            self.calls.append((method, path, None))
            return None, {}, None, error
        self.calls.append((method, path, response.status_code))
        try:
            payload = json.loads(response.content.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            payload = None
        return response.status_code, response.headers, payload, None

    def departments(self):
        status, _, body, error = self.request("GET", "/departments")
        assert classify(status, body, error) == SUCCESS, (status, body, error)
        return body["departments"]

    # the outbox
    def send_task(self, sender_task_id, title, description="", form=(), fields=None):
        body = {
            "sender_task_id": _task_id(sender_task_id),
            "department_id": self.department_id,
            "title": title,
            "description": description,
            "form": [dict(f) for f in form],
            "fields": dict(fields or {}),
        }
        return self._queue(sender_task_id, "POST", "/tasks", body)

    def send_change(self, sender_task_id, kind, text="", fields=None, actor=None, event_id=None):
        if kind not in PUSHED_KINDS:
            raise ValueError(f"a client sends only {PUSHED_KINDS}")
        if kind == "comment" and not text:
            raise ValueError("a client must not send an empty comment")
        if not any(c["sender_task_id"] == sender_task_id for c in self.outbox):
            raise ValueError("POST /tasks comes before any change of the task")
        body = {"event_id": event_id or uuid.uuid4().hex, "kind": kind, "text": text}
        if fields is not None:
            body["fields"] = dict(fields)
        if actor is not None:
            body["actor"] = actor
        return self._queue(sender_task_id, "POST", f"/tasks/{sender_task_id}/events", body)

    def _queue(self, sender_task_id, method, path, body):
        change = {
            "sender_task_id": sender_task_id,
            "method": method,
            "path": path,
            "body": body,
            "state": "pending",
            "status": None,
            "answer": None,
            "error": None,
            "attempts": 0,
        }
        self.outbox.append(change)
        return change

    def parked(self):
        return [c for c in self.outbox if c["state"] == "parked"]

    def retry(self, change):
        """People retry a parked change, unchanged."""
        assert change["state"] == "parked"
        change["state"] = "pending"

    def skip(self, change):
        assert change["state"] == "parked"
        change["state"] = "skipped"

    def _sendable(self):
        blocked, out = set(), []
        for change in self.outbox:
            sid = change["sender_task_id"]
            if change["state"] in ("sent", "skipped"):
                continue
            if sid not in blocked and change["state"] == "pending":
                out.append(change)
            blocked.add(sid)  # later changes of this task wait (pending or parked before)
        return out

    def push(self, force=False):
        """One attempt when the schedule is due: send what can go, in order. Returns the
        number of changes still waiting (pending and not blocked by a parked one)."""
        if not force and time.monotonic() < self.due:
            return len(self._sendable())
        while True:
            ready = self._sendable()
            if not ready:
                return 0
            change = ready[0]
            change["attempts"] += 1
            status, headers, body, error = self.request(
                change["method"], change["path"], change["body"]
            )
            change["status"], change["answer"] = status, body
            outcome = classify(status, body, error)
            if outcome == SUCCESS:
                change["state"] = "sent"
                if change["path"] == "/tasks":
                    self.sent_tasks.add(change["sender_task_id"])
                self.failures, self.due = 0, 0.0
                continue
            if outcome == PERMANENT:  # parked: shown with the server's message, rest flows
                change["state"] = "parked"
                change["error"] = ((body or {}).get("error") or {}).get("message") or str(status)
                continue
            # temporary or configuration: one retry schedule, capped backoff, Retry-After
            self.failures += 1
            wait = min(self.retry_delay * 2 ** (self.failures - 1), self.retry_max)
            wait = max(wait, _retry_after(headers))
            self.due = time.monotonic() + wait
            self.last_error = f"{outcome}: {error or status}"
            return len(self._sendable())

    def push_until_idle(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while self.push():
            if time.monotonic() > deadline:
                raise AssertionError(f"the outbox did not drain: {self.last_error}")
            time.sleep(max(0.01, min(self.due - time.monotonic(), 0.5)))

    # the pull
    def pull(self):
        """One pull (section 10): True when it ended without an error."""
        for _ in range(self.max_pages):
            status, _headers, page, error = self.request(
                "GET", "/events", params={"after": str(self.cursor), "limit": str(self.limit)}
            )
            if classify(status, page, error) != SUCCESS:
                self.last_error = f"pull: {error or status}"
                return False
            problem = page_problem(page)
            if problem is not None:
                self.last_error = f"pull: {problem}"
                return False
            events = sorted(page["events"], key=lambda e: e["id"])
            newer = [e for e in events if e["id"] > self.cursor]
            for event in newer:
                self._apply(event)
                self.cursor = event["id"]  # with the event, never back, never beyond
            if len(page["events"]) < self.limit or not newer:
                break
        return True

    def _apply(self, event):
        if event["kind"] not in PULLED_KINDS or event["sender_task_id"] not in self.sent_tasks:
            self.skipped.append(event)
            return
        self.received.setdefault(event["sender_task_id"], []).append(event)
