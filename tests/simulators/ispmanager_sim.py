"""A strict simulator of the ISPmanager 6 API (the ISPsystem "func=...&out=json" API), for
the ``ispmanager`` module's tests. It is NOT a real ISPmanager: nothing of the vendor's is
copied here; it was written by hand from the vendor's public documentation:

- "Guide to ispmanager software API" (ispmanager 6 lite, pro, host),
  https://www.ispmanager.com/docs/ispmanager/guide-to-ispsystem-software-api — requests
  ``https://HOST:1500/ispmgr?func=FUNC&out=...``, ``authinfo=user:password`` on every call,
  ``sok=ok`` to submit a form, ``elid`` naming the element of an ``.edit``/action function;
- "API functions" (integration with BILLmanager),
  https://www.ispmanager.com/docs/ispmanager/bill-api-functions — the functions ``user``,
  ``user.edit``, ``preset``, ``preset.edit``, ``ipaddr`` a billing system uses;
- "User" (creating a user: Login, Owner, Template, Password, Re-enter password, Comment),
  https://www.ispmanager.com/docs/ispmanager/user;
- "Error codes (ISPmanager)", http://en.ispdoc.com/index.php/Error_codes_(ISPmanager) —
  the error kinds (internal, exists, missed/not found, invalid value, limit, access,
  license) and their ``obj``/``val`` attributes.

Where these pages leave a detail open the simulator decides, and the module agrees; each
decision is listed in the README ("The ispmanager module", *Assumptions*): the JSON shapes
(``{"doc": {...}}``, text under ``"$"``, attributes as ``"$name"``, lists as
``"elem": [...]``, a finished form as ``{"doc": {"ok": {}, "id": {"$": elid}}}``), errors
as HTTP 200 with ``{"doc": {"error": {"$type", "$object", "msg": {"$": text}}}}``, the
preset limit names, ``whoami``, the user list's ``active`` column.

It is strict: an unknown path or function, a parameter a function does not take, a missing
or ill-typed one, a parameter given twice, ``out`` other than ``json``, bad or missing
``authinfo``, or an admin function called by a plain user are refused in that error form.

Faults the tests flip (``fault``): ``"slow"`` (answers after ``slow_seconds``),
``"unavailable"`` (HTTP 503, as a proxy in front of a stopped panel would), ``"error"``
(answers ``fault_error`` — by default an internal error — in the documented error form),
``"garbage"`` (answers an HTML page that is not JSON); :meth:`down` stops the listener
(connection refused) and :meth:`up` starts it again on the same port. ``fault_only``
limits the fault to one function (the web site's creation, say). ``refuse_create``
makes user creation answer the given error (a licence's user limit, say).

HTTPS only, with a self-signed certificate made at start (``ca_pem``: trust it).
"""

import datetime as dt
import ipaddress
import json
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

ADMIN_LEVEL = 7  # "admin": may manage users and templates
USER_LEVEL = 16  # a panel user (assumed numbering; only "is it an admin" matters)

USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PRESET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# the limits of a user template (``preset.edit``) and of a user: whole numbers, empty
# meaning "no limit"
LIMITS = (
    "limit_quota",  # disk, MiB
    "limit_webdomains",
    "limit_emaildomains",
    "limit_emails",
    "limit_db",
    "limit_ftp_users",
)

COMMON = {"func", "out", "authinfo", "lang"}
# each function: the parameters it takes (besides COMMON) and whether only an admin may
FUNCTIONS = {
    "whoami": (set(), False),
    "user": (set(), True),
    "user.edit": (
        {"elid", "sok", "name", "fullname", "passwd", "confirm", "preset", "comment"},
        True,
    ),
    "user.suspend": ({"elid"}, True),
    "user.resume": ({"elid"}, True),
    "user.delete": ({"elid"}, True),
    "preset": (set(), True),
    "preset.edit": ({"elid", "sok", "name", *LIMITS}, True),
    "ipaddr": (set(), True),
    "webdomain": (set(), True),
    "webdomain.edit": ({"elid", "sok", "name", "owner", "ipaddrs", "email"}, True),
}


class Refusal(Exception):
    """An answer in the documented error form."""

    def __init__(self, type_, obj, message, value=None):
        super().__init__(message)
        self.type, self.obj, self.message, self.value = type_, obj, message, value

    def doc(self):
        error = {"$type": self.type, "$object": self.obj, "msg": {"$": self.message}}
        if self.value is not None:
            error["$value"] = self.value
        return {"doc": {"error": error}}


def _t(value):
    """A text node."""
    return {"$": "" if value is None else str(value)}


def self_signed_certificate(folder):
    """A key and self-signed certificate for 127.0.0.1 / localhost in ``folder``:
    ``(cert_path, key_path, cert_pem)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ispmanager-simulator")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = f"{folder}/cert.pem", f"{folder}/key.pem"
    with open(cert_path, "w") as fh:
        fh.write(cert_pem)
    with open(key_path, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path, cert_pem


class ISPmanagerSim:
    """The simulated panel: its state, its faults and its HTTPS listener on loopback."""

    def __init__(self, admin="root", password=None, ips=("192.0.2.20", "192.0.2.21")):
        self.admin = admin
        # a password with characters that URL encoding changes (for the masking tests)
        self.password = password or f"Adm1n p@ss/{secrets.token_hex(6)}+&="
        self.ips = list(ips)
        self.lock = threading.Lock()
        self.users = {}  # name -> {name, fullname, passwd, preset, comment, active, limits}
        self.presets = {}  # name -> {limit_...: "" or int text}
        self.webdomains = {}  # name -> {name, owner, ipaddr, email}
        self.calls = []  # (func, params without authinfo) of every request answered
        self.fault = None  # None, "slow", "unavailable", "error" or "garbage"
        self.fault_only = None  # a function name: the fault hits that function only
        self.slow_seconds = 5.0
        self.fault_error = ("internal", "", "Internal error: the panel could not finish")
        self.refuse_create = None  # (type, object, message) answered to a user creation
        self.folder = tempfile.mkdtemp(prefix="ispmanager-sim-")
        self.cert_path, self.key_path, self.ca_pem = self_signed_certificate(self.folder)
        self.port = None
        self.server = None
        self.thread = None

    # --- the listener -----------------------------------------------------------------

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    def start(self):
        return self.up()

    def up(self):
        """Listen (again, on the same port after :meth:`down`)."""
        sim = self

        class Handler(_Handler):
            simulator = sim

        if self.port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def down(self):
        """Stop listening: connections are refused until :meth:`up`."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def stop(self):
        import shutil

        self.down()
        shutil.rmtree(self.folder, ignore_errors=True)

    def config(self, **extra):
        """Settings of the ispmanager module that work with this panel."""
        return {
            "url": self.url,
            "username": self.admin,
            "password": self.password,
            "ca_certificate": self.ca_pem,
            "timeout": 3,
            **extra,
        }

    # --- state helpers for the tests ----------------------------------------------------

    def add_user(self, name, comment="", password="someone-elses-password", preset=""):
        """A user made by someone else (by hand on the panel)."""
        with self.lock:
            self.users[name] = {
                "name": name,
                "fullname": "",
                "passwd": password,
                "preset": preset,
                "comment": comment,
                "active": "on",
                "limits": {},
            }

    def calls_of(self, func):
        return [params for f, params in self.calls if f == func]

    # --- the API ----------------------------------------------------------------------

    def answer(self, method, path, params):
        """The JSON document for one request (``params``: ``[(name, value)]``)."""
        if path != "/ispmgr":
            return 404, None
        names = [n for n, _ in params]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise Refusal("value", twice[0], f"The parameter '{twice[0]}' is given twice")
        p = dict(params)
        if p.get("out") != "json":
            raise Refusal("value", "out", "This simulator answers out=json only")
        level = self._authenticate(p.get("authinfo"))
        func = p.get("func") or ""
        if func not in FUNCTIONS:
            raise Refusal("missed", "func", f"Function '{func}' not found")
        allowed, admin_only = FUNCTIONS[func]
        unknown = sorted(set(p) - COMMON - allowed)
        if unknown:
            raise Refusal("value", unknown[0], f"Unknown parameter '{unknown[0]}' for {func}")
        if admin_only and level != ADMIN_LEVEL:
            raise Refusal("access", func, f"Access to '{func}' is denied")
        shown = {k: v for k, v in p.items() if k not in ("authinfo", "passwd", "confirm")}
        with self.lock:
            self.calls.append((func, shown))
            return 200, getattr(self, "_" + func.replace(".", "_"))(p)

    def _authenticate(self, authinfo):
        if not authinfo:
            raise Refusal("auth", "", "Authorization required: authinfo is missing")
        user, sep, password = authinfo.partition(":")
        if not sep:
            raise Refusal("value", "authinfo", "authinfo must be user:password")
        with self.lock:
            if user == self.admin and secrets.compare_digest(password, self.password):
                return ADMIN_LEVEL
            found = self.users.get(user)
            if found and found["active"] == "on" and found["passwd"] == password:
                return USER_LEVEL
        raise Refusal("auth", "", "Invalid username or password")

    @staticmethod
    def _required(p, name):
        value = p.get(name, "")
        if value.strip() == "":
            raise Refusal("empty", name, f"The field '{name}' is required")
        return value

    @staticmethod
    def _submitting(p):
        sok = p.get("sok")
        if sok is None:
            return False
        if sok != "ok":
            raise Refusal("value", "sok", "sok must be 'ok'")
        return True

    def _elid(self, p, table, obj):
        elid = self._required(p, "elid")
        if elid not in table:
            raise Refusal("missed", obj, f"The {obj} '{elid}' does not exist", value=elid)
        return table[elid]

    @staticmethod
    def _ok(elid):
        return {"doc": {"ok": {}, "id": _t(elid)}}

    def _whoami(self, p):
        user, _, _ = p["authinfo"].partition(":")
        level = ADMIN_LEVEL if user == self.admin else USER_LEVEL
        return {"doc": {"user": {"$": user, "$level": str(level)}}}

    # users

    def _user(self, p):
        return {
            "doc": {
                "elem": [
                    {
                        "name": _t(u["name"]),
                        "fullname": _t(u["fullname"]),
                        "preset": _t(u["preset"]),
                        "comment": _t(u["comment"]),
                        "active": _t(u["active"]),
                        "webdomains": _t(
                            sum(1 for w in self.webdomains.values() if w["owner"] == u["name"])
                        ),
                    }
                    for u in sorted(self.users.values(), key=lambda u: u["name"])
                ]
            }
        }

    def _password(self, p):
        passwd = self._required(p, "passwd")
        if p.get("confirm") != passwd:
            raise Refusal("value", "confirm", "The passwords do not match")
        if len(passwd) < 6 or len(passwd) > 128 or not passwd.isprintable():
            raise Refusal("value", "passwd", "The password must be 6 to 128 printable characters")
        return passwd

    def _preset_of(self, p):
        name = p.get("preset", "")
        if name and name not in self.presets:
            raise Refusal("missed", "preset", f"The template '{name}' does not exist", value=name)
        return name

    def _user_edit(self, p):
        submitting = self._submitting(p)
        if "elid" in p:
            user = self._elid(p, self.users, "user")
            if not submitting:  # the form's current values
                return {
                    "doc": {
                        "elid": _t(user["name"]),
                        "name": _t(user["name"]),
                        "fullname": _t(user["fullname"]),
                        "preset": _t(user["preset"]),
                        "comment": _t(user["comment"]),
                    }
                }
            if "name" in p and p["name"] != user["name"]:
                raise Refusal("value", "name", "A user's login cannot be changed")
            if "passwd" in p or "confirm" in p:
                user["passwd"] = self._password(p)
            if "preset" in p:
                user["preset"] = self._preset_of(p)
                user["limits"] = dict(self.presets.get(user["preset"], {}))
            for field in ("fullname", "comment"):
                if field in p:
                    user[field] = p[field]
            return self._ok(user["name"])
        if not submitting:
            return {"doc": {"name": _t(""), "preset": _t("")}}
        name = self._required(p, "name")
        if not USER_NAME.match(name):
            raise Refusal("value", "name", f"'{name}' is not a valid login", value=name)
        passwd = self._password(p)
        preset = self._preset_of(p)
        if name in self.users or name == self.admin:
            raise Refusal("exists", "user", f"The user '{name}' already exists", value=name)
        if self.refuse_create is not None:
            raise Refusal(*self.refuse_create)
        self.users[name] = {
            "name": name,
            "fullname": p.get("fullname", ""),
            "passwd": passwd,
            "preset": preset,
            "comment": p.get("comment", ""),
            "active": "on",
            "limits": dict(self.presets.get(preset, {})),
        }
        return self._ok(name)

    def _set_active(self, p, value):
        for elid in self._elids(p):
            self.users[elid]["active"] = value
        return {"doc": {"ok": {}}}

    def _elids(self, p):
        """``elid`` of a group action: one name or several separated by ", "."""
        elids = [e.strip() for e in self._required(p, "elid").split(",")]
        for elid in elids:
            if elid not in self.users:
                raise Refusal("missed", "user", f"The user '{elid}' does not exist", value=elid)
        return elids

    def _user_suspend(self, p):
        return self._set_active(p, "off")

    def _user_resume(self, p):
        return self._set_active(p, "on")

    def _user_delete(self, p):
        for elid in self._elids(p):
            del self.users[elid]
            for name in [n for n, w in self.webdomains.items() if w["owner"] == elid]:
                del self.webdomains[name]
        return {"doc": {"ok": {}}}

    # user templates

    def _preset(self, p):
        return {
            "doc": {
                "elem": [
                    {"name": _t(name), **{k: _t(v) for k, v in limits.items()}}
                    for name, limits in sorted(self.presets.items())
                ]
            }
        }

    def _preset_edit(self, p):
        submitting = self._submitting(p)
        if "elid" in p:
            limits = self._elid(p, self.presets, "preset")
            name = p["elid"]
        else:
            limits, name = None, None
        if not submitting:
            return {"doc": {k: _t(v) for k, v in (limits or {}).items()}}
        cleaned = {}
        for key in LIMITS:
            if key in p:
                value = p[key].strip()
                if value != "" and not (value.isdigit() and len(value) <= 12):
                    raise Refusal(
                        "value", key, f"'{p[key]}' is not a whole number for {key}", value=p[key]
                    )
                cleaned[key] = value
        if limits is None:
            name = self._required(p, "name")
            if not PRESET_NAME.match(name):
                raise Refusal("value", "name", f"'{name}' is not a valid template name")
            if name in self.presets:
                raise Refusal("exists", "preset", f"The template '{name}' already exists")
            self.presets[name] = {key: "" for key in LIMITS}
            limits = self.presets[name]
        limits.update(cleaned)
        return self._ok(name)

    # addresses and web domains

    def _ipaddr(self, p):
        return {"doc": {"elem": [{"name": _t(ip)} for ip in self.ips]}}

    def _webdomain(self, p):
        return {
            "doc": {
                "elem": [
                    {
                        "name": _t(w["name"]),
                        "owner": _t(w["owner"]),
                        "ipaddr": _t(w["ipaddr"]),
                        "active": _t(self.users[w["owner"]]["active"]),
                    }
                    for w in sorted(self.webdomains.values(), key=lambda w: w["name"])
                ]
            }
        }

    def _webdomain_edit(self, p):
        if not self._submitting(p):
            raise Refusal("value", "sok", "This simulator only submits webdomain.edit (sok=ok)")
        if "elid" in p:
            raise Refusal("value", "elid", "This simulator does not edit web domains")
        name = self._required(p, "name").lower()
        if not DOMAIN.match(name):
            raise Refusal("value", "name", f"'{p['name']}' is not a domain name", value=p["name"])
        owner = self._required(p, "owner")
        if owner not in self.users:
            raise Refusal("missed", "user", f"The user '{owner}' does not exist", value=owner)
        ip = self._required(p, "ipaddrs")
        if ip not in self.ips:
            raise Refusal("value", "ipaddrs", f"'{ip}' is not an address of this server")
        if name in self.webdomains:
            raise Refusal("exists", "webdomain", f"The WWW domain '{name}' already exists")
        self.webdomains[name] = {
            "name": name,
            "owner": owner,
            "ipaddr": ip,
            "email": p.get("email"),
        }
        return self._ok(name)


class _Handler(BaseHTTPRequestHandler):
    simulator = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._serve(urlsplit(self.path).query)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        ctype = self.headers.get("Content-Type", "")
        if body and not ctype.startswith("application/x-www-form-urlencoded"):
            self._send(415, "text/plain", b"form-encoded bodies only")
            return
        query = urlsplit(self.path).query
        self._serve("&".join(q for q in (query, body) if q))

    def _serve(self, query):
        sim = self.simulator
        try:
            params = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            params = None
        func = dict(params or []).get("func")
        fault = sim.fault if sim.fault_only in (None, func) else None
        if fault == "slow":
            time.sleep(sim.slow_seconds)
        if fault == "unavailable":
            self._send(503, "text/html", b"<html><body>503 Service Unavailable</body></html>")
            return
        if fault == "garbage":
            self._send(200, "text/html", b"<html><body>Bad Gateway? <b>ispmgr</b>")
            return
        try:
            if params is None:
                raise Refusal("value", "query", "The request's parameters cannot be read")
            if fault == "error":
                raise Refusal(*sim.fault_error)
            status, doc = sim.answer(self.command, urlsplit(self.path).path, params)
        except Refusal as refusal:
            status, doc = 200, refusal.doc()
        if status == 404:
            self._send(404, "text/html", b"<html><body>404 Not Found</body></html>")
            return
        self._send(status, "application/json", json.dumps(doc).encode())

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
