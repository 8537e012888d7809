"""The ispmanager module: shared hosting accounts on ISPmanager 6 (the ISPsystem API).

Every call is one HTTPS request ``POST <url>/ispmgr`` with the form ``func=<function>``,
``out=json``, ``authinfo=<user>:<password>`` and the function's parameters (``sok=ok``
submits an edit form); the panel answers ``{"doc": {...}}``, or ``{"doc": {"error":
{"$type": ..., "$object": ..., "msg": {"$": text}}}}`` when it refuses.

**The account.** A service's panel user is ``<user prefix><service id>`` (``pv42``),
created from the tariff's user template (the item: a *preset*, named after the tariff's
internal name, which ``ensure_item`` creates or updates with the item's limits) with the
comment ``<owner tag>:service-<id>``. The comment says whose the user is: an attempt
looks the user up first and takes over a user carrying this service's comment (an
earlier attempt died after creating it), and refuses permanently a user with any other
comment (made by hand, another Provisor's). The order's domain becomes the user's web
domain on the module's IP address (or the panel's first one).

suspend / resume / close are ``user.suspend`` / ``user.resume`` / ``user.delete`` (which
deletes the user's sites too); change_tariff sets the new tariff's template on the user;
change_password sets the password Provisor chose. Unreachable, a timeout, a 5xx, an
answer that is not the API's JSON or an internal/busy error of the panel is temporary; a
refusal (exists, invalid value, limit, access, authorization) is permanent with the
panel's own message.
"""

import ipaddress
import re
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import requests

from modules.base import (
    OWNER_TAG,
    OWNER_TAG_RULE,
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

USER_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,11}$")
PRESET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PASSWORD_PURPOSE = "ispmanager-user"
# error types of the panel that retrying may cure; every other refusal is permanent
TEMPORARY_TYPES = {"internal", "busy", "lock", "locked", "timeout"}
LOGGED_SECRETS = ("authinfo", "passwd", "confirm")
# item setting -> the preset's limit parameter
LIMIT_FIELDS = {
    "disk_quota_mib": "limit_quota",
    "webdomains": "limit_webdomains",
    "emaildomains": "limit_emaildomains",
    "mailboxes": "limit_emails",
    "databases": "limit_db",
    "ftp_users": "limit_ftp_users",
}


class PanelError(Exception):
    """What went wrong talking to the panel: ``temporary`` or not, and the panel's words
    (``type``/``obj`` of its error document when it answered one)."""

    def __init__(self, message, temporary, type_=None, obj=None, tls=False):
        super().__init__(message)
        self.message, self.temporary, self.type, self.obj, self.tls = (
            message,
            temporary,
            type_,
            obj,
            tls,
        )


def text(node):
    """A node's text: ``{"$": "x"}`` or a plain value."""
    if isinstance(node, dict):
        node = node.get("$", "")
    return "" if node is None else str(node)


def elems(doc):
    """The rows of a list function (``"elem"``: a list, or one object for one row)."""
    found = doc.get("elem") or []
    if isinstance(found, dict):
        found = [found]
    return [{k: text(v) for k, v in e.items()} for e in found if isinstance(e, dict)]


class ISPmanagerModule(PerCallTimeouts, ModuleType):
    id = "ispmanager"
    name = "ISPmanager 6 (shared hosting)"
    description = (
        "Creates a panel user per hosting service on ISPmanager 6 from the tariff's user "
        "template, with the ordered domain as its web site."
    )
    operations = frozenset(
        {"open", "suspend", "resume", "close", "change_tariff", "change_password", "ensure_item"}
    )
    product_types = ("hosting",)
    client_data = ("preset",)
    default_timeout = 15.0
    CALLS_PER_ATTEMPT = 6  # the most API calls one operation makes (open)
    config_fields = [
        ConfigField(
            "url",
            "Panel URL",
            kind="url",
            required=True,
            help="ISPmanager's address with its port, e.g. https://panel.example.net:1500",
        ),
        ConfigField(
            "username",
            "Admin user",
            default="root",
            help="An ISPmanager user with administrator rights (authinfo).",
        ),
        ConfigField("password", "Admin password", kind="secret", required=True),
        ConfigField(
            "verify_tls",
            "Verify the TLS certificate",
            kind="bool",
            default=True,
            help="Off only for a test panel: the admin password travels in every request.",
        ),
        ConfigField(
            "ca_certificate",
            "CA certificate (PEM)",
            kind="text",
            default="",
            help="The panel's self-signed certificate or its CA, when it is not publicly "
            "trusted (ISPmanager's default certificate is self-signed).",
        ),
        ConfigField(
            "ip",
            "Web sites' IP address",
            help="One of the panel's addresses for new web sites; empty: the first the panel "
            "lists. Shown to the client.",
        ),
        ConfigField(
            "panel_url",
            "Panel URL for clients",
            kind="url",
            help="Where clients log in (welcome email); empty: the Panel URL.",
        ),
        ConfigField(
            "user_prefix",
            "User name prefix",
            default="pv",
            help="Panel users are <prefix><service id>: pv42. 1-12 of a-z, 0-9, a letter first.",
        ),
        ConfigField(
            "owner_tag",
            "Owner tag",
            default="provisor",
            help="Users carry the comment <tag>:service-<id>. Each Provisor sharing this "
            "panel needs its own tag and prefix.",
        ),
        ConfigField(
            "timeout",
            "Timeout (s)",
            kind="float",
            default=15.0,
            minimum=1,
            maximum=300,
            help="For each API call; an operation makes up to six.",
        ),
    ]
    item_fields = [
        ConfigField(
            "disk_quota_mib", "Disk quota (MiB)", kind="int", minimum=0, help="Empty: no limit."
        ),
        ConfigField("webdomains", "Web sites", kind="int", minimum=0, default=1),
        ConfigField("emaildomains", "Mail domains", kind="int", minimum=0, default=1),
        ConfigField("mailboxes", "Mailboxes", kind="int", minimum=0),
        ConfigField("databases", "Databases", kind="int", minimum=0),
        ConfigField("ftp_users", "FTP users", kind="int", minimum=0),
    ]

    # --- settings -----------------------------------------------------------------------

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        if "user_prefix" not in errors and not USER_PREFIX.match(cleaned.get("user_prefix") or ""):
            errors["user_prefix"] = "1 to 12 of a-z and 0-9, starting with a letter, e.g. pv."
        tag = cleaned.get("owner_tag")
        if "owner_tag" not in errors and not (tag and OWNER_TAG.match(tag)):
            errors["owner_tag"] = OWNER_TAG_RULE
        user = cleaned.get("username") or ""
        if "username" not in errors and (not user or ":" in user or len(user) > 64):
            errors["username"] = "An ISPmanager login without ':' (e.g. root)."
        if "ip" not in errors and cleaned.get("ip"):
            try:
                cleaned["ip"] = str(ipaddress.ip_address(cleaned["ip"]))
            except ValueError:
                errors["ip"] = "Not an IP address."
        pem = cleaned.get("ca_certificate") or ""
        if "ca_certificate" not in errors and pem and "-----BEGIN CERTIFICATE-----" not in pem:
            errors["ca_certificate"] = "A PEM certificate (-----BEGIN CERTIFICATE-----...)."
        url = cleaned.get("url") or ""
        if "url" not in errors and url and urlsplit(url).scheme != "https":
            errors["url"] = "https:// only: the admin password is sent with every request."
        return cleaned, errors

    # --- HTTP ---------------------------------------------------------------------------

    def endpoint(self):
        url = (self.config.get("url") or "").rstrip("/")
        return url.removesuffix("/ispmgr") + "/ispmgr"

    def _verify(self):
        pem = (self.config.get("ca_certificate") or "").strip()
        if pem:
            return pem_file(pem)
        return bool(self.config.get("verify_tls", True))

    def _mark_secrets(self, ctx, form):
        password = self.config.get("password") or ""
        for value in (password, f"{self.config.get('username')}:{password}"):
            for form_ in (value, quote_plus(value), quote(value, safe="")):
                ctx.secret(form_)
        for key in ("passwd", "confirm"):
            if form.get(key):
                ctx.secret(form[key])
                ctx.secret(quote_plus(form[key]))

    def _post(self, ctx, func, params):
        """One API call, logged: the panel's document, or :class:`PanelError`."""
        form = {
            "func": func,
            "out": "json",
            "authinfo": f"{self.config.get('username') or 'root'}:{self.config.get('password')}",
            **{k: v for k, v in params.items() if v is not None},
        }
        self._mark_secrets(ctx, form)
        shown = {k: ("********" if k in LOGGED_SECRETS else v) for k, v in form.items()}
        target = f"{self.endpoint()}?{urlencode(shown, safe='*')}"
        with ctx.call("POST", target) as call:
            try:
                reply = requests.post(
                    self.endpoint(),
                    data=form,
                    timeout=self.call_timeout(),
                    verify=self._verify(),
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError as exc:
                call.outcome = "TLS error"
                raise PanelError(
                    f"the panel's TLS certificate is not trusted at {self.endpoint()} "
                    f"({why(exc)}): give its certificate in ca_certificate",
                    temporary=False,
                    tls=True,
                ) from None
            except requests.Timeout:
                call.outcome = f"timeout after {self.call_timeout():g} s"
                raise PanelError(
                    f"ISPmanager did not answer within {self.call_timeout():g} s ({func})",
                    temporary=True,
                    type_="timeout",
                ) from None
            except requests.RequestException as exc:
                call.outcome = f"connection error: {why(exc)}"
                raise PanelError(
                    f"cannot reach ISPmanager at {self.endpoint()}: {why(exc)}",
                    temporary=True,
                    type_="unreachable",
                ) from None
            call.outcome = f"{reply.status_code} {reply.reason}"
            doc = self._document(reply, func)
            error = doc.get("error")
            if isinstance(error, dict):
                message = text(error.get("msg")) or text(error)
                kind = str(error.get("$type") or "")
                call.outcome += f", error {kind}"
                call.note(f"{kind} {error.get('$object') or ''}: {message}"[:300])
                raise PanelError(
                    f"ISPmanager refused {func}: {message}" if message else f"{func}: {kind}",
                    temporary=kind in TEMPORARY_TYPES,
                    type_=kind,
                    obj=str(error.get("$object") or ""),
                )
        return doc

    def _document(self, reply, func):
        short = " ".join((reply.text or "").split())[:120]
        if reply.status_code >= 500:
            raise PanelError(
                f"ISPmanager answered {reply.status_code} to {func}: {short}", temporary=True
            )
        if reply.status_code != 200:
            raise PanelError(
                f"{self.endpoint()} answered {reply.status_code} to {func}: not the ISPmanager "
                f"API (is the URL https://host:1500?): {short}",
                temporary=False,
                type_="http",
            )
        try:
            data = reply.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("doc"), dict):
            raise PanelError(
                f"ISPmanager's answer to {func} is not the API's JSON document: {short!r}",
                temporary=True,
                type_="garbage",
            )
        return data["doc"]

    def _call(self, ctx, func, **params):
        """:meth:`_post` for operations: a PanelError becomes Temporary/PermanentError."""
        try:
            return self._post(ctx, func, params)
        except PanelError as exc:
            if exc.temporary:
                raise TemporaryError(exc.message) from None
            if exc.type == "auth":
                raise PermanentError(
                    f"{exc.message} (check the module's username and password)"
                ) from None
            raise PermanentError(exc.message) from None

    # --- names --------------------------------------------------------------------------

    def username(self, service_id):
        return f"{self.config.get('user_prefix') or 'pv'}{service_id}"

    def owner(self, service_id):
        return f"{self.config.get('owner_tag') or 'provisor'}:service-{service_id}"

    @staticmethod
    def preset_name(internal_name):
        name = internal_name or ""
        if not PRESET_NAME.match(name):
            raise PermanentError(
                f"the tariff's internal name {name!r} cannot name an ISPmanager template "
                "(letters, digits, '.', '_', '-')"
            )
        return name

    def _find(self, ctx, func, name):
        for row in elems(self._call(ctx, func)):
            if row.get("name") == name:
                return row
        return None

    def _ip(self, ctx):
        if self.config.get("ip"):
            return self.config["ip"]
        rows = elems(self._call(ctx, "ipaddr"))
        if not rows:
            raise PermanentError("ISPmanager lists no IP address for web sites")
        return rows[0]["name"]

    def _details(self, username, domain, ip, password=None):
        details = {
            "username": username,
            "domain": domain,
            "ip": ip,
            "panel_url": self.config.get("panel_url") or self.config.get("url"),
        }
        if password is not None:
            details["password"] = password
        return details

    # --- operations ---------------------------------------------------------------------

    def open(self, ctx):
        from app.services.order_fields import clean_domain

        raw = ctx.params.get("domain")
        try:
            domain = clean_domain(raw) if isinstance(raw, str) and raw.strip() else None
        except ValueError as exc:
            raise PermanentError(f"the order's domain {raw!r}: {exc}") from None
        if domain is None:
            raise PermanentError("the service has no domain (order field 'domain')")
        preset = self.preset_name(ctx.internal_name)
        username, owner = self.username(ctx.service.id), self.owner(ctx.service.id)
        password = operation_password(ctx, PASSWORD_PURPOSE)
        ip = self._ip(ctx)
        site = self._find(ctx, "webdomain", domain)
        if site is not None and site.get("owner") != username:
            raise PermanentError(
                f"the web domain {domain} already exists on ISPmanager and belongs to the user "
                f"{site.get('owner')!r}, not this service's {username!r}: left alone"
            )
        found = self._find(ctx, "user", username)
        if found is None:
            try:
                self._call(
                    ctx,
                    "user.edit",
                    sok="ok",
                    name=username,
                    fullname=self._fullname(ctx),
                    passwd=password,
                    confirm=password,
                    preset=preset,
                    comment=owner,
                )
                ctx.log(f"created the user {username} from the template {preset}")
            except PermanentError:
                found = self._find(ctx, "user", username)  # made meanwhile?
                if found is None:
                    raise
        if found is not None:
            if found.get("comment") != owner:
                raise PermanentError(
                    f"the user {username} already exists on ISPmanager with the comment "
                    f"{found.get('comment')!r} (not this service's {owner!r}): it is not taken over"
                )
            ctx.log(f"the user {username} already belongs to this service: taking it over")
            self._call(
                ctx,
                "user.edit",
                elid=username,
                sok="ok",
                passwd=password,
                confirm=password,
                preset=preset,
            )
        if site is None:
            self._call(
                ctx,
                "webdomain.edit",
                sok="ok",
                name=domain,
                owner=username,
                ipaddrs=ip,
                email=f"webmaster@{domain}",
            )
            ctx.log(f"created the web domain {domain} on {ip} for {username}")
        else:
            ctx.log(f"the web domain {domain} is {username}'s already")
        return Result.done(
            username, self._details(username, domain, ip, password), data={"preset": preset}
        )

    @staticmethod
    def _fullname(ctx):
        name = (ctx.client.name if ctx.client is not None else "") or ""
        return name[:64] or f"Service {ctx.service.id}"

    def _own(self, ctx, missing_ok=False):
        """This service's user on the panel, after checking it is still the service's."""
        username = (ctx.service.remote_id or "") or self.username(ctx.service.id)
        owner = self.owner(ctx.service.id)
        found = self._find(ctx, "user", username)
        if found is None:
            if missing_ok:
                ctx.log(f"the user {username} is gone already")
                return username, None
            raise PermanentError(f"the user {username} no longer exists on ISPmanager")
        if found.get("comment") != owner:
            if missing_ok:
                ctx.log(f"the user {username} is not this service's now: left alone")
                return username, None
            raise PermanentError(
                f"the user {username} has the comment {found.get('comment')!r}, not this "
                f"service's {owner!r}: it is left alone"
            )
        return username, found

    def suspend(self, ctx):
        username, found = self._own(ctx)
        if found.get("active") == "off":
            ctx.log(f"{username} is suspended already")
        else:
            self._call(ctx, "user.suspend", elid=username)
            ctx.log(f"suspended {username} (its sites stop)")
        return Result.done(username)

    def resume(self, ctx):
        username, found = self._own(ctx)
        if found.get("active") == "on":
            ctx.log(f"{username} is active already")
        else:
            self._call(ctx, "user.resume", elid=username)
            ctx.log(f"resumed {username}")
        return Result.done(username)

    def close(self, ctx):
        username, found = self._own(ctx, missing_ok=True)
        if found is not None:
            self._call(ctx, "user.delete", elid=username)
            ctx.log(f"deleted the user {username} and its sites")
        return Result.done(username)

    def change_tariff(self, ctx):
        preset = self.preset_name(ctx.params.get("tariff_internal_name") or ctx.internal_name)
        username, _ = self._own(ctx)
        self._call(ctx, "user.edit", elid=username, sok="ok", preset=preset)
        ctx.log(f"{username} now has the template {preset}")
        return Result.done(username, data={"preset": preset})

    def change_password(self, ctx):
        password = new_service_password(ctx)
        username, _ = self._own(ctx)
        self._call(ctx, "user.edit", elid=username, sok="ok", passwd=password, confirm=password)
        ctx.log(f"{username} has a new password")
        return Result.done(username, details={"password": password})

    def ensure_item(self, ctx):
        """The tariff's user template: created with the item's limits, or updated to them
        when the panel has it already."""
        settings = ctx.item_settings or (ctx.item.settings if ctx.item is not None else {})
        preset = self.preset_name(ctx.internal_name)
        limits = {}
        for field, param in LIMIT_FIELDS.items():
            value = settings.get(field)
            limits[param] = "" if value is None else str(int(value))
        existing = self._find(ctx, "preset", preset)
        if existing is None:
            self._call(ctx, "preset.edit", sok="ok", name=preset, **limits)
            ctx.log(f"created the user template {preset}")
        else:
            self._call(ctx, "preset.edit", elid=preset, sok="ok", **limits)
            ctx.log(f"the user template {preset} exists: its limits set to the item's")
        return Result.done()

    # --- Test connection ----------------------------------------------------------------

    def check_config(self):
        log = QuietLog()
        try:
            who = self._post(log, "whoami", {})
            users = elems(self._post(log, "user", {}))
            ips = [row["name"] for row in elems(self._post(log, "ipaddr", {}))]
        except PanelError as exc:
            field = {"auth": "password", "access": "username", "timeout": "timeout"}.get(
                exc.type, "url"
            )
            if exc.tls:
                field = "ca_certificate"
            raise ConfigProblem(exc.message, field=field) from None
        ip = self.config.get("ip")
        if ip and ip not in ips:
            raise ConfigProblem(
                f"{ip} is not an address of this panel (it has: {', '.join(ips) or 'none'})",
                field="ip",
            )
        return (
            f"ISPmanager answers as {text(who.get('user')) or self.config.get('username')} "
            f"(admin: lists {len(users)} users; web sites on {ip or (ips[0] if ips else '?')})"
        )
