"""The cpanel module: shared hosting accounts on cPanel & WHM through WHM API 1 (JSON).

Every call is ``GET|POST <url>/json-api/<function>?api.version=1&...`` with the header
``Authorization: whm <username>:<api token>``; WHM answers ``{"metadata": {"result": 1|0,
"reason": ...}, "data": ...}``. The functions used: ``createacct``, ``accountsummary``,
``suspendacct``, ``unsuspendacct``, ``removeacct``, ``changepackage``, ``passwd``,
``listpkgs``, ``addpkg``, ``editpkg``, ``listaccts``, ``version`` and ``applist``.

**The account's name** is derived from the order's domain and the service id
(:func:`account_username`): the same service always gets the same username, so an attempt
looks the account up first (``accountsummary``) and takes over what an earlier attempt
created (a worker may die after ``createacct`` and before its result is recorded). An
account of that name with another domain or another owner is someone else's: refused
permanently, never touched. The password is generated once per operation and stored
(encrypted) in its state before ``createacct``; a take-over sets it again with ``passwd``
so the client's details are right whatever the earlier attempt managed.

**Packages.** Each tariff's item is a WHM package (hosting plan) holding its limits (disk
quota, bandwidth, addon and sub domains, email accounts, databases, FTP accounts):
``ensure_item`` creates it (``addpkg``) or brings an existing one to the item's limits
(``editpkg``). Packages a reseller creates are named ``<reseller>_<name>`` by WHM: the
module uses that name when its user is not ``root``.

Errors: unreachable, a timeout, a 5xx, an answer that is not WHM API 1 JSON, and a refusal
whose reason says the server is busy (try again, locked, in progress) are temporary; a
refused token (401/403) and every other refusal (``result`` 0: invalid, taken, missing)
are permanent, with WHM's own reason. ``createacct`` answers when the account exists, so
no polling is needed.
"""

import contextlib
import ipaddress
import re
import warnings
from urllib.parse import urlencode, urlsplit

import requests

from modules.base import (
    ConfigField,
    ConfigProblem,
    ModuleType,
    PerCallTimeouts,
    PermanentError,
    QuietLog,
    Result,
    TemporaryError,
    new_service_password,
    operation_password,
    pem_file,
)
from modules.http import why

PASSWORD_PURPOSE = "cpanel-account"
PACKAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
USERNAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
# a refusal that says "not now" rather than "no"
BUSY = re.compile(r"try again|temporar|busy|locked|in progress|timed? ?out", re.I)
MISSING = re.compile(r"does not exist|no such (user|account)", re.I)
LIMITS = (
    ("quota", "Disk quota (MB)"),
    ("bwlimit", "Monthly bandwidth (MB)"),
    ("maxaddon", "Addon domains"),
    ("maxsub", "Subdomains"),
    ("maxpark", "Parked domains (aliases)"),
    ("maxpop", "Email accounts"),
    ("maxsql", "Databases"),
    ("maxftp", "FTP accounts"),
)


def account_username(domain, service_id):
    """The cPanel username of a service: letters and digits of the domain's first label,
    then the service id, at most 16 characters, beginning with a letter and never with
    ``test`` (cPanel's rules). The id stays within the first eight characters (some
    cPanel versions want those unique) for services up to 9,999,999."""
    sid = str(int(service_id))
    letters = re.sub(r"[^a-z0-9]", "", domain.split(".")[0].lower())
    if not letters or not letters[0].isalpha() or letters.startswith("test"):
        letters = "h" + letters
    return (letters[: max(1, 8 - len(sid))] + sid)[:16]


class WhmRefusal(PermanentError):
    """WHM answered ``result`` 0: ``reason`` is its own words."""

    def __init__(self, function, reason):
        super().__init__(f"WHM refused {function}: {reason}")
        self.function = function
        self.reason = reason


class CpanelModule(PerCallTimeouts, ModuleType):
    id = "cpanel"
    name = "cPanel & WHM (shared hosting)"
    description = (
        "Creates a cPanel account per hosting service on a cPanel & WHM server (WHM API 1 "
        "with an API token), with a WHM package per tariff."
    )
    operations = frozenset(
        {"open", "suspend", "resume", "close", "change_tariff", "change_password", "ensure_item"}
    )
    product_types = ("hosting",)
    default_timeout = 60.0
    CALLS_PER_ATTEMPT = 4  # open: accountsummary, createacct, accountsummary, passwd
    config_fields = [
        ConfigField(
            "url",
            "WHM URL",
            kind="url",
            required=True,
            help="The server's WHM address with its port, e.g. https://server.example.net:2087",
        ),
        ConfigField(
            "username",
            "WHM user",
            required=True,
            default="root",
            help="The user the API token belongs to: root or a reseller",
        ),
        ConfigField(
            "api_token",
            "API token",
            kind="secret",
            required=True,
            help="WHM >> Development >> Manage API Tokens",
        ),
        ConfigField(
            "ca_certificate",
            "CA certificate (PEM)",
            kind="text",
            help="The certificate WHM serves (or the CA that signed it), for a self-signed "
            "one; empty: the system's trusted CAs",
        ),
        ConfigField(
            "verify_tls",
            "Verify the TLS certificate",
            kind="bool",
            default=True,
            help="Turn off only on a trusted network: anyone in between could read the token",
        ),
        ConfigField(
            "panel_url",
            "cPanel URL for clients",
            kind="url",
            help="Shown to clients; empty: https://<the WHM host>:2083/",
        ),
        ConfigField(
            "nameservers",
            "Name servers",
            help="Shown to clients, e.g. ns1.example.net, ns2.example.net; empty: the ones "
            "WHM names when it creates the account",
        ),
        ConfigField(
            "contact_email",
            "Send the client's email to cPanel",
            kind="bool",
            default=True,
            help="createacct's contactemail: cPanel's own notices go to the client",
        ),
        ConfigField(
            "timeout",
            "Timeout (s)",
            kind="float",
            default=60.0,
            minimum=1,
            maximum=600,
            help="For each API call (creating an account takes a while); an operation "
            "makes up to four.",
        ),
    ]
    item_fields = [
        ConfigField(
            "package",
            "Package name",
            help="The WHM package of this tariff; empty: the tariff's internal name",
        ),
        *[
            ConfigField(
                name,
                label,
                kind="int",
                minimum=0,
                maximum=999999,
                help="0: unlimited; empty: WHM's default",
            )
            for name, label in LIMITS
        ],
        ConfigField("featurelist", "Feature list", default="default"),
        ConfigField("hasshell", "Shell access", kind="bool", default=False),
    ]

    # --- settings -----------------------------------------------------------------------

    @classmethod
    def validate_config(cls, data):
        from modules.powerdns import nameserver_list

        cleaned, errors = super().validate_config(data)
        user = cleaned.get("username")
        if "username" not in errors and user and not re.fullmatch(r"[a-z0-9_.-]{1,32}", user):
            errors["username"] = "A WHM user name such as root or a reseller's name."
        pem = cleaned.get("ca_certificate")
        if "ca_certificate" not in errors and pem:
            try:
                _load_certificates(pem)
            except ValueError as exc:
                errors["ca_certificate"] = str(exc)
        if "nameservers" not in errors and cleaned.get("nameservers"):
            try:
                nameserver_list(cleaned["nameservers"])
            except ValueError as exc:
                errors["nameservers"] = str(exc)
        return cleaned, errors

    @classmethod
    def validate_item(cls, data):
        cleaned, errors = super().validate_item(data)
        name = cleaned.get("package")
        if "package" not in errors and name and not PACKAGE_NAME.match(name):
            errors["package"] = "Letters, digits, _ and - (up to 64), e.g. web_basic."
        feature = cleaned.get("featurelist")
        if "featurelist" not in errors and feature and not PACKAGE_NAME.match(feature):
            errors["featurelist"] = "A feature list's name: letters, digits, _ and -."
        return cleaned, errors

    def _nameservers(self):
        from modules.powerdns import nameserver_list

        text = self.config.get("nameservers")
        return [n.rstrip(".") for n in nameserver_list(text)] if text else []

    def _base(self):
        return (self.config.get("url") or "").rstrip("/")

    def panel_url(self):
        if self.config.get("panel_url"):
            return self.config["panel_url"]
        host = urlsplit(self._base()).hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:2083/"

    def package_name(self, settings, internal_name):
        """The WHM package of a tariff's item (a reseller's packages carry its prefix)."""
        name = (settings or {}).get("package") or internal_name or ""
        if not PACKAGE_NAME.match(name):
            raise PermanentError(
                f"{name!r} cannot be a WHM package name: set the item's package name "
                "(letters, digits, _ and -)"
            )
        user = self.config.get("username") or "root"
        if user != "root" and not name.startswith(user + "_"):
            name = f"{user}_{name}"
        return name

    # --- HTTP ---------------------------------------------------------------------------

    def _verify(self):
        if self.config.get("ca_certificate"):
            return pem_file(self.config["ca_certificate"])
        return self.config.get("verify_tls", True) is not False

    def _send(self, function, params, method):
        url = f"{self._base()}/json-api/{function}"
        query = {"api.version": "1", **({} if method == "POST" else params)}
        token = self.config.get("api_token") or ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # urllib3's warning when verify_tls is off
            return requests.request(
                method,
                url,
                params=query,
                data=params if method == "POST" else None,
                headers={
                    "Authorization": f"whm {self.config.get('username') or 'root'}:{token}",
                    "Accept": "application/json",
                },
                timeout=self.call_timeout(),
                verify=self._verify(),
                allow_redirects=False,
            )

    def _call(self, ctx, function, params=None, method="GET"):
        """One WHM API 1 function, logged (secrets masked): its ``data``, or an error."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        ctx.secret(self.config.get("api_token"))
        ctx.secret(params.get("password"))
        shown = urlencode({"api.version": "1", **params})
        target = f"{self._base()}/json-api/{function}"
        with ctx.call(method, f"{target}?{shown}" if method == "GET" else target) as call:
            if method == "POST":
                call.note(f"form: {shown}")
            try:
                reply = self._send(function, params, method)
            except requests.exceptions.SSLError as exc:
                call.outcome = "TLS error"
                raise PermanentError(
                    f"the TLS certificate of {self._base()} is not trusted ({why(exc)}): set "
                    "the module's CA certificate to the one WHM serves"
                ) from None
            except requests.Timeout:
                call.outcome = f"timeout after {self.call_timeout():g} s"
                raise TemporaryError(
                    f"WHM did not answer {function} within {self.call_timeout():g} s"
                ) from None
            except requests.RequestException as exc:
                call.outcome = f"connection error: {why(exc)}"
                raise TemporaryError(f"cannot reach WHM at {self._base()}: {why(exc)}") from None
            call.outcome = f"{reply.status_code} {reply.reason}"
            meta, data = self._parse(ctx, function, reply)
            if meta.get("result") != 1:
                call.note(f"result 0: {meta.get('reason')}")
        if meta.get("result") == 1:
            return data
        reason = " ".join(str(meta.get("reason") or "no reason given").split())[:500]
        if BUSY.search(reason):
            raise TemporaryError(f"WHM is busy ({function}): {reason}")
        raise WhmRefusal(function, reason)

    def _parse(self, ctx, function, reply):
        """``(metadata, data)`` of a WHM API 1 answer, or the error an answer means."""
        text = " ".join((reply.text or "").split())[:200]
        if reply.status_code in (401, 403):
            raise PermanentError(
                f"WHM refused the API token ({reply.status_code} {text or reply.reason}): check "
                "the module's WHM user and API token"
            )
        if reply.status_code >= 500:
            raise TemporaryError(f"WHM answered {reply.status_code} to {function}: {text}")
        if reply.status_code != 200:
            raise PermanentError(
                f"WHM answered {reply.status_code} to {function}: {text} (is the URL WHM's, "
                "port 2087?)"
            )
        try:
            body = reply.json()
        except ValueError:
            raise TemporaryError(
                f"WHM's answer to {function} is not JSON (cut short or garbled)"
            ) from None
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or meta.get("result") not in (0, 1):
            raise TemporaryError(f"WHM's answer to {function} is not a WHM API 1 answer")
        if hasattr(ctx, "secrets_in"):  # not QuietLog
            ctx.secrets_in(body)
        return meta, body.get("data")

    # --- the service's account ----------------------------------------------------------

    @staticmethod
    def _domain(params):
        from app.services.order_fields import clean_domain

        raw = (params or {}).get("domain")
        if not isinstance(raw, str) or not raw.strip():
            raise PermanentError("the service has no domain (order field 'domain') to host")
        try:
            return clean_domain(raw)
        except ValueError as exc:
            raise PermanentError(f"the order's domain {raw!r}: {exc}") from None

    def _summary(self, ctx, user):
        """The account ``user`` as accountsummary shows it, or None when there is none."""
        try:
            data = self._call(ctx, "accountsummary", {"user": user})
        except WhmRefusal as exc:
            if MISSING.search(exc.reason):
                return None
            raise
        accounts = (data or {}).get("acct") if isinstance(data, dict) else None
        if not isinstance(accounts, list) or not accounts or not isinstance(accounts[0], dict):
            raise TemporaryError("WHM's accountsummary answer holds no account")
        return accounts[0]

    def _mine(self, found, user, domain):
        """Raise unless the account is this service's: its domain and owner."""
        owner = self.config.get("username") or "root"
        if found.get("domain") != domain or found.get("owner") != owner:
            raise PermanentError(
                f"the cPanel account {user} already exists for {found.get('domain')!r} (owner "
                f"{found.get('owner')!r}), not for this service's {domain!r} (owner {owner!r}): "
                "it is not taken over"
            )

    def _service_account(self, ctx, missing_ok=False):
        """``(user, summary)`` of the service's account after checking it is still its;
        ``summary`` None when it is gone (``missing_ok``) or someone else's by now. A
        service with a remote id (opened, or imported) is that account, whose domain must
        still be the service's; without one, the username derived from its domain."""
        service = ctx.service
        domain = (service.details or {}).get("domain") or (service.params or {}).get("domain")
        if service.remote_id:
            user = service.remote_id
        else:
            domain = self._domain(ctx.params)
            user = account_username(domain, service.id)
        found = self._summary(ctx, user)
        if found is None:
            if missing_ok:
                ctx.log(f"the cPanel account {user} is gone already")
                return user, None
            raise PermanentError(f"the cPanel account {user} no longer exists on WHM")
        try:
            if not service.remote_id:
                self._mine(found, user, domain)
            elif domain and found.get("domain") != domain:
                raise PermanentError(
                    f"the cPanel account {user} is for {found.get('domain')!r} now, not this "
                    f"service's {domain!r}: it is left alone"
                )
        except PermanentError:
            if missing_ok:
                ctx.log(f"the cPanel account {user} is not this service's now: left alone")
                return user, None
            raise
        return user, found

    def _details(self, domain, user, password, ip, nameservers):
        details = {
            "domain": domain,
            "username": user,
            "password": password,
            "panel_url": self.panel_url(),
        }
        with contextlib.suppress(ValueError, TypeError):
            details["ip"] = str(ipaddress.ip_address(str(ip)))
        names = self._nameservers() or [n for n in nameservers if n]
        if names:
            details["nameservers"] = ", ".join(names)
        return details

    # --- operations ---------------------------------------------------------------------

    def open(self, ctx):
        domain = self._domain(ctx.params)
        user = account_username(domain, ctx.service.id)
        package = self.package_name(ctx.item_settings, ctx.internal_name)
        password = operation_password(ctx, PASSWORD_PURPOSE)
        found = self._summary(ctx, user)
        if found is None:
            params = {"username": user, "domain": domain, "plan": package, "password": password}
            if self.config.get("contact_email", True) and ctx.client is not None:
                params["contactemail"] = ctx.client.email
            try:
                data = self._call(ctx, "createacct", params, method="POST") or {}
            except WhmRefusal as exc:
                # an attempt running at the same time may have made it: look once more
                found = self._summary(ctx, user)
                if found is None:
                    raise PermanentError(
                        f"WHM refused to create the account {user} for {domain}: {exc.reason}"
                    ) from None
            else:
                ctx.log(f"created the cPanel account {user} for {domain} (package {package})")
                names = [data.get(k) for k in ("nameserver", "nameserver2", "nameserver3")]
                details = self._details(domain, user, password, data.get("ip"), names)
                return Result.done(user, details)
        self._mine(found, user, domain)
        ctx.log(f"the cPanel account {user} already exists for {domain}: taking it over")
        self._call(ctx, "passwd", {"user": user, "password": password}, method="POST")
        return Result.done(user, self._details(domain, user, password, found.get("ip"), []))

    def suspend(self, ctx):
        """``suspendacct`` with the reason staff gave (shown in WHM)."""
        user, _ = self._service_account(ctx)
        reason = ctx.params.get("reason") or "Suspended by the hosting provider"
        self._call(ctx, "suspendacct", {"user": user, "reason": reason})
        ctx.log(f"the cPanel account {user} is suspended ({reason})")
        return Result.done(user)

    def resume(self, ctx):
        user, _ = self._service_account(ctx)
        self._call(ctx, "unsuspendacct", {"user": user})
        ctx.log(f"the cPanel account {user} is active again")
        return Result.done(user)

    def close(self, ctx):
        user, found = self._service_account(ctx, missing_ok=True)
        if found is not None:
            try:
                self._call(ctx, "removeacct", {"username": user})
            except WhmRefusal as exc:
                if not MISSING.search(exc.reason):
                    raise
            ctx.log(f"the cPanel account {user} is removed")
        return Result.done(user)

    def change_tariff(self, ctx):
        """``changepackage`` to the new tariff's package (``ctx.item_settings``: its item)."""
        internal = ctx.params.get("tariff_internal_name")
        if ctx.item_settings is None:
            raise PermanentError(
                f"the tariff {internal!r} has no item on this module (its WHM package): link "
                "the tariff to the module"
            )
        package = self.package_name(ctx.item_settings, internal)
        user, _ = self._service_account(ctx)
        self._call(ctx, "changepackage", {"user": user, "pkg": package})
        ctx.log(f"the cPanel account {user} now has the package {package}")
        return Result.done(user)

    def change_password(self, ctx):
        password = new_service_password(ctx)
        user, _ = self._service_account(ctx)
        self._call(ctx, "passwd", {"user": user, "password": password}, method="POST")
        ctx.log(f"the password of the cPanel account {user} is changed")
        return Result.done(user)

    def ensure_item(self, ctx):
        """The tariff's package with the item's limits: ``addpkg``, or ``editpkg`` when
        it exists already (its limits follow the item's)."""
        settings = ctx.item_settings or (ctx.item.settings if ctx.item is not None else {})
        name = self.package_name(settings, ctx.internal_name)
        params = {"name": name, "featurelist": settings.get("featurelist") or "default"}
        params["hasshell"] = 1 if settings.get("hasshell") else 0
        for limit, _ in LIMITS:
            value = settings.get(limit)
            if value is not None:
                params[limit] = "unlimited" if value == 0 else str(value)
        data = self._call(ctx, "listpkgs") or {}
        rows = data.get("pkg") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise TemporaryError("WHM's listpkgs answer holds no package list")
        exists = any(isinstance(r, dict) and r.get("name") == name for r in rows)
        self._call(ctx, "editpkg" if exists else "addpkg", params)
        ctx.log(f"the WHM package {name} {'follows' if exists else 'is created with'} the item")
        return Result.done()

    # --- import, Test connection --------------------------------------------------------

    def list_accounts(self):
        data = self._call(QuietLog(), "listaccts") or {}
        rows = data.get("acct") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise TemporaryError("WHM's listaccts answer holds no account list")
        found = []
        for row in rows:
            if not isinstance(row, dict) or not row.get("user"):
                continue
            state = ", suspended" if row.get("suspended") else ""
            details = self._details(row.get("domain"), row["user"], None, row.get("ip"), [])
            details.pop("password")
            found.append(
                {
                    "remote_id": row["user"],
                    "summary": f"{row['user']}: {row.get('domain')} ({row.get('plan')}{state})",
                    "details": {k: v for k, v in details.items() if v},
                }
            )
        return found

    def check_config(self):
        """``version`` and ``applist``: the URL, the certificate, the token, and that its
        user may create accounts."""
        quiet = QuietLog()
        try:
            version = self._call(quiet, "version") or {}
            apps = self._call(quiet, "applist") or {}
        except PermanentError as exc:
            text = str(exc)
            field = "url"
            if "API token" in text:
                field = "api_token"
            elif "TLS certificate" in text:
                field = "ca_certificate"
            raise ConfigProblem(text, field=field) from None
        except TemporaryError as exc:
            field = "timeout" if "did not answer" in str(exc) else "url"
            raise ConfigProblem(str(exc), field=field) from None
        names = apps.get("app") if isinstance(apps, dict) else None
        if isinstance(names, list) and "createacct" not in names:
            raise ConfigProblem(
                f"the WHM user {self.config.get('username')!r} may not call createacct with "
                "this token (its ACLs)",
                field="username",
            )
        return f"WHM {version.get('version', '?')} answers; this token may create accounts"


def _load_certificates(pem):
    """The certificates of a PEM text, or ValueError saying what is wrong."""
    from cryptography import x509

    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("Paste the certificate in PEM form (-----BEGIN CERTIFICATE-----...).")
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise ValueError("This PEM text is not a readable certificate.") from None
