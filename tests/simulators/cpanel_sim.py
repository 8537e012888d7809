"""A strict simulator of cPanel & WHM's WHM API 1 (JSON), for the cpanel module's tests.

No cPanel server can run on this machine, so the tests talk to this instead: HTTPS on
loopback (a certificate of the test's own CA), state kept in memory, refusing what the
real API refuses. Written by hand from cPanel's public documentation, nothing of it copied:

- "Introduction to WHM API 1" and "WHM API 1 - Return Data"
  (https://api.docs.cpanel.net/whm/introduction): calls are
  ``GET|POST /json-api/<function>?api.version=1&...``; every answer is
  ``{"metadata": {"version": 1, "command", "result": 1|0, "reason"}, "data": ...}``, a
  failure being ``result`` 0 with the reason in words; Booleans are 1 or 0.
- "Guide to API Authentication - API Tokens in WHM"
  (https://api.docs.cpanel.net/guides/guide-to-api-authentication/guide-to-api-authentication-api-tokens-in-whm):
  the header ``Authorization: whm <user>:<token>``, over HTTPS on port 2087.
- The WHM API 1 function reference (https://api.docs.cpanel.net/openapi/whm/operation/<name>/,
  "WHM API 1 Functions - <name>"): applist, version, createacct, accountsummary,
  listaccts, suspendacct, unsuspendacct, removeacct, changepackage, passwd, listpkgs,
  addpkg, editpkg, with their parameter names and types and the shapes of their data.

Where the documentation leaves a detail open, this simulator assumes (and the README says
so): a wrong or missing token is HTTP 403 with a short text body (the documentation says
"Access denied" without giving the exact body); a call without ``api.version=1`` is refused
(the real server falls back to API 0, which the module never speaks); parameters a
function does not document are refused (the real server may ignore some); the reasons'
wording is this simulator's own.

Faults the tests switch on (``WhmSimulator.fault``): ``"down"`` (the connection is closed
without an answer), ``"slow"`` (the answer comes after ``slow_seconds``), ``"error"``
(HTTP 200 with ``result`` 0 and ``error_reason``: the documented error form), ``"5xx"``
(HTTP 500 from cpsrvd), ``"garbage"`` (a 200 whose body is not JSON). ``fault_calls``
limits a fault to the named functions.
"""

import contextlib
import datetime as dt
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

USERNAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}$")
PACKAGE = re.compile(r"^[A-Za-z0-9_ -]{1,64}$")
LIMITS = ("quota", "bwlimit", "maxftp", "maxsql", "maxpop", "maxlst", "maxsub", "maxpark")
LIMITS += ("maxaddon",)


# --- parameter types --------------------------------------------------------------------


def _text(value):
    return value


def _boolean(value):
    if value not in ("0", "1"):
        raise ValueError("must be 1 or 0")
    return value == "1"


def _limit(value):
    """A whole number of 0..999999 or "unlimited" (0 and unlimited mean no limit)."""
    if value == "unlimited":
        return "unlimited"
    if not re.fullmatch(r"\d{1,6}", value):
        raise ValueError("must be a whole number of 0 to 999999 or unlimited")
    return "unlimited" if int(value) == 0 else int(value)


def _username(value):
    if value != value.lower():
        value = value.lower()  # the documentation: converted to lowercase
    if not USERNAME.match(value):
        raise ValueError("must be 1 to 16 lowercase letters and digits and begin with a letter")
    if value.startswith("test"):
        raise ValueError("cannot begin with the string test")
    return value


def _domain(value):
    value = value.lower()
    if not DOMAIN.match(value):
        raise ValueError("is not a valid domain name")
    return value


def _package(value):
    if not PACKAGE.match(value):
        raise ValueError("may contain letters, digits, spaces, underscores and hyphens only")
    return value


def _yes_no(value):
    if value not in ("y", "n"):
        raise ValueError("must be y or n")
    return value


# function -> {parameter: (type, required)}
PARAMETERS = {
    "applist": {},
    "version": {},
    "listaccts": {
        "search": (_text, False),
        "searchtype": (_text, False),
        "searchmethod": (_text, False),
        "want": (_text, False),
    },
    "accountsummary": {"user": (_username, False), "domain": (_domain, False)},
    "createacct": {
        "username": (_username, True),
        "domain": (_domain, True),
        "plan": (_package, False),
        "password": (_text, False),
        "contactemail": (_text, False),
        "ip": (_yes_no, False),
        "language": (_text, False),
    },
    "suspendacct": {"user": (_username, True), "reason": (_text, False)},
    "unsuspendacct": {"user": (_username, True)},
    "removeacct": {"username": (_username, True), "keepdns": (_boolean, False)},
    "changepackage": {"user": (_username, True), "pkg": (_package, True)},
    "passwd": {"user": (_username, True), "password": (_text, True)},
    "listpkgs": {"want": (_text, False)},
    "addpkg": {
        "name": (_package, True),
        "featurelist": (_text, False),
        "hasshell": (_boolean, False),
        "cgi": (_boolean, False),
        **{limit: (_limit, False) for limit in LIMITS},
    },
}
PARAMETERS["editpkg"] = dict(PARAMETERS["addpkg"])


class Refused(Exception):
    """A failure in the documented form: ``result`` 0 with this reason."""


class WhmSimulator:
    """A WHM server on 127.0.0.1 with HTTPS; ``start()`` returns it running."""

    def __init__(self, user="root", token=None, ip="192.0.2.80"):
        self.user = user
        self.token = token or secrets.token_hex(16).upper()
        self.ip = ip
        self.nameservers = ["ns1.hosting.example", "ns2.hosting.example"]
        self.accounts = {}  # username -> dict
        self.packages = {}  # name -> dict
        self.calls = []  # (function, params) of every authenticated call
        self.fault = None
        self.fault_calls = None  # None: every function; else a set of names
        self.slow_seconds = 5.0
        self.error_reason = "Sorry, the server is busy: try again later."
        self.lock = threading.Lock()
        self.folder = tempfile.mkdtemp(prefix="provisor-whm-")
        self.server = None

    # --- running -------------------------------------------------------------------------

    def start(self):
        from tests.support import make_tls_certificate

        self.ca_pem = make_tls_certificate(self.folder, names=("localhost",))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f"{self.folder}/cert.pem", f"{self.folder}/key.pem")
        sim = self

        class Handler(WhmHandler):
            simulator = sim

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        import shutil

        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    def config(self, **extra):
        """The cpanel module's settings for this server."""
        return {
            "url": self.url,
            "username": self.user,
            "api_token": self.token,
            "ca_certificate": self.ca_pem,
            "timeout": 3,
            **extra,
        }

    @contextlib.contextmanager
    def faulty(self, fault, calls=None):
        self.fault, self.fault_calls = fault, set(calls) if calls else None
        try:
            yield self
        finally:
            self.fault, self.fault_calls = None, None

    def functions_called(self):
        return [name for name, _ in self.calls]

    def add_account(self, user, domain, owner="root", plan="default", password="x"):
        """An account made outside Provisor (by hand, another reseller)."""
        with self.lock:
            self.accounts[user] = self._account(user, domain, owner, plan, password)

    # --- the functions -------------------------------------------------------------------

    def _account(self, user, domain, owner, plan, password):
        return {
            "user": user,
            "domain": domain,
            "owner": owner,
            "plan": plan,
            "password": password,
            "email": "",
            "ip": self.ip,
            "suspended": 0,
            "suspendreason": "not suspended",
            "suspendtime": None,
            "unix_startdate": int(time.time()),
            "startdate": dt.datetime.now(dt.UTC).strftime("%y %b %d %H:%M"),
            "theme": "jupiter",
            "partition": "home",
        }

    def _summary(self, account):
        """An account as accountsummary and listaccts show it (never its password)."""
        row = {k: v for k, v in account.items() if k != "password"}
        package = self.packages.get(account["plan"], {})
        row["disklimit"] = f"{package['quota']}M" if package.get("quota", 0) else "unlimited"
        row["diskused"] = "0M"
        for key in ("maxaddon", "maxsub", "maxpop", "maxsql", "maxftp"):
            value = package.get(key, "unlimited")
            row[key + ("s" if key == "maxaddon" else "")] = str(value)
        return row

    def _needs_account(self, user):
        if user not in self.accounts:
            raise Refused(f'The user "{user}" does not exist.')
        return self.accounts[user]

    def call(self, name, params):
        """One function: ``(data, reason)``, or raises Refused."""
        handler = getattr(self, "fn_" + name)
        with self.lock:
            return handler(params)

    def fn_applist(self, params):
        return {"app": sorted(PARAMETERS)}, "OK"

    def fn_version(self, params):
        return {"version": "11.126.0.12"}, "OK"

    def fn_listaccts(self, params):
        rows = [self._summary(a) for a in self.accounts.values()]
        if params.get("search"):
            field = params.get("searchtype") or "domain"
            if field not in ("domain", "owner", "user", "ip", "package"):
                raise Refused(f"Invalid searchtype: {field}")
            field = "plan" if field == "package" else field
            term = params["search"]
            if params.get("searchmethod") == "exact":
                rows = [r for r in rows if r[field] == term]
            else:
                rows = [r for r in rows if re.search(term, r[field])]
        return {"acct": rows}, "OK"

    def fn_accountsummary(self, params):
        if "user" in params:
            account = self.accounts.get(params["user"])
        elif "domain" in params:
            found = [a for a in self.accounts.values() if a["domain"] == params["domain"]]
            account = found[0] if found else None
        else:
            raise Refused("You must specify a user or a domain.")
        if account is None:
            who = params.get("user") or params.get("domain")
            raise Refused(f'Account "{who}" does not exist.')
        return {"acct": [self._summary(account)]}, "OK"

    def fn_createacct(self, params):
        user, domain = params["username"], params["domain"]
        plan = params.get("plan") or "default"
        if user in self.accounts:
            raise Refused(f"Sorry, the username {user} is already taken.")
        if user[:8] in {u[:8] for u in self.accounts}:
            raise Refused(f"Sorry, the first eight characters of {user} are already in use.")
        if any(a["domain"] == domain for a in self.accounts.values()):
            raise Refused(f"Sorry, the domain {domain} is already in use by another account.")
        if plan != "default" and plan not in self.packages:
            raise Refused(f"The package {plan} does not exist.")
        password = params.get("password") or ""
        if len(password) < 8:
            raise Refused("Sorry, the password is too weak: use at least 8 characters.")
        account = self._account(user, domain, self.user, plan, password)
        account["email"] = params.get("contactemail", "")
        self.accounts[user] = account
        data = {"ip": self.ip, "package": plan, "nameserver": self.nameservers[0]}
        data["nameserver2"] = self.nameservers[1]
        data["nameserver3"] = data["nameserver4"] = None
        return data, "Account Creation Ok"

    def fn_suspendacct(self, params):
        account = self._needs_account(params["user"])
        account["suspended"] = 1
        account["suspendreason"] = params.get("reason") or "Unknown"
        account["suspendtime"] = int(time.time())
        return None, f"{params['user']}'s account has been suspended"

    def fn_unsuspendacct(self, params):
        account = self._needs_account(params["user"])
        account.update(suspended=0, suspendreason="not suspended", suspendtime=None)
        return None, f"{params['user']}'s account is now active"

    def fn_removeacct(self, params):
        self._needs_account(params["username"])
        del self.accounts[params["username"]]
        return None, f"{params['username']} account removed"

    def fn_changepackage(self, params):
        account = self._needs_account(params["user"])
        if params["pkg"] not in self.packages:
            raise Refused(f"Specified package {params['pkg']} does not exist")
        account["plan"] = params["pkg"]
        return None, f"Account Upgraded/Downgraded to {params['pkg']}"

    def fn_passwd(self, params):
        account = self._needs_account(params["user"])
        if len(params["password"]) < 8:
            raise Refused("Sorry, the password is too weak: use at least 8 characters.")
        account["password"] = params["password"]
        return {"app": "system"}, "Password changed for user " + params["user"]

    def fn_listpkgs(self, params):
        rows = []
        for name, settings in sorted(self.packages.items()):
            row = {"name": name}
            row.update({k.upper(): str(v) for k, v in settings.items()})
            rows.append(row)
        return {"pkg": rows}, "OK"

    def fn_addpkg(self, params):
        name = params["name"]
        if name in self.packages or name == "default":
            raise Refused(f"Unable to create the package {name}: it already exists.")
        self.packages[name] = self._package_settings(params, {})
        return {"pkg": name}, f"Created the package {name}."

    def fn_editpkg(self, params):
        name = params["name"]
        if name not in self.packages:
            raise Refused(f"The package {name} does not exist.")
        self.packages[name] = self._package_settings(params, self.packages[name])
        return {"pkg": name}, f"Modified the package {name}."

    @staticmethod
    def _package_settings(params, before):
        settings = {"featurelist": "default", "hasshell": 0, "cgi": 1}
        settings.update({limit: "unlimited" for limit in LIMITS})
        settings.update(before)
        for key, value in params.items():
            if key != "name":
                settings[key] = int(value) if isinstance(value, bool) else value
        return settings


class WhmHandler(BaseHTTPRequestHandler):
    simulator: WhmSimulator = None
    protocol_version = "HTTP/1.1"
    server_version = "cpsrvd/11.126.0.12"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._handle(urlsplit(self.path).query)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        query = urlsplit(self.path).query
        self._handle("&".join(part for part in (query, body) if part))

    def _send(self, status, body, kind="application/json"):
        raw = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _answer(self, name, result, reason, data=None):
        body = {"metadata": {"version": 1, "command": name, "result": result, "reason": reason}}
        if data is not None:
            body["data"] = data
        self._send(200, json.dumps(body))

    def _handle(self, query):
        sim = self.simulator
        path = urlsplit(self.path).path
        matched = re.fullmatch(r"/json-api/([A-Za-z_][A-Za-z0-9_]*)", path)
        name = matched.group(1) if matched else None
        chosen = sim.fault_calls is None or name in sim.fault_calls
        if sim.fault and chosen and self._fault(sim, name):
            return
        auth = self.headers.get("Authorization") or ""
        if auth != f"whm {sim.user}:{sim.token}":
            self._send(403, "Access denied\n", "text/plain; charset=utf-8")
            return
        if matched is None:
            self._send(404, "Not Found\n", "text/plain; charset=utf-8")
            return
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            self._answer(name, 0, "The request's parameters cannot be read.")
            return
        params = {}
        for key, value in pairs:
            if key in params:
                self._answer(name, 0, f'The parameter "{key}" was given more than once.')
                return
            params[key] = value
        if params.pop("api.version", None) != "1":
            self._answer(name, 0, "This server answers WHM API 1 only: give api.version=1.")
            return
        if name not in PARAMETERS:
            self._answer(
                name, 0, f"Unknown app ({name}) requested for this version (1) of the API."
            )
            return
        try:
            cleaned = self._clean(PARAMETERS[name], params)
            data, reason = sim.call(name, cleaned)
        except Refused as exc:
            self._answer(name, 0, str(exc))
            return
        sim.calls.append((name, cleaned))
        self._answer(name, 1, reason, data)

    @staticmethod
    def _clean(spec, params):
        for key in params:
            if key not in spec:
                raise Refused(f'The parameter "{key}" is not a parameter of this function.')
        cleaned = {}
        for key, (kind, required) in spec.items():
            if key not in params or params[key] == "":
                if required:
                    raise Refused(f'Missing parameter "{key}".')
                continue
            try:
                cleaned[key] = kind(params[key])
            except ValueError as exc:
                raise Refused(f'The parameter "{key}" {exc}.') from None
        return cleaned

    def _fault(self, sim, name):
        """Apply the switched-on fault; True when the request was answered (or dropped)."""
        if sim.fault == "down":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return True
        if sim.fault == "slow":
            time.sleep(sim.slow_seconds)
            return False
        if sim.fault == "error":
            self._answer(name, 0, sim.error_reason)
            return True
        if sim.fault == "5xx":
            self._send(500, "Internal Server Error\n", "text/plain; charset=utf-8")
            return True
        if sim.fault == "garbage":
            self._send(200, b"\x00<html>cpsrvd \xff\xfe half an answer", "application/json")
            return True
        return False
