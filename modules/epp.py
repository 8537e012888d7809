"""The epp module: domain registration at a registry (or a registrar's reseller gateway)
speaking EPP (RFC 5730 core, 5731 domains, 5732 hosts, 5733 contacts, 5734 TCP transport).

One EPP session per operation: TLS to ``host:port`` (the server is verified against the
``ca_bundle`` setting or the system's CAs; a client certificate is presented when the
``client_cert`` setting holds one), the greeting, ``<login>`` with the registrar's clID and
password and the configured object and extension URIs, the commands, ``<logout>``. Each
data unit is framed by a 4-byte big-endian length that counts itself (RFC 5734).

``open`` registers the order's domain (order field ``domain``):

1. the registrant: a contact whose id is derived from the client (``<contact prefix><client
   id>``, e.g. ``pv42``), made once per client (``contact:check``; an existing one of ours
   is taken over after ``contact:info``, one sponsored by someone else is refused);
2. the name servers: the order's ``nameservers`` field when the provider added one, else
   the module's; they are passed as host objects (``domain:hostObj``), each created
   (``host:create``, no addresses) when the registry does not know it yet;
3. ``domain:check``, then ``domain:create`` for the item's period (years), with an auth
   code generated for the service and stored (encrypted) in the operation's state before
   the call, so a retry sends the same one;
4. a name that is not available is taken over when it is ours: sponsored by this
   registrar login and registered to this client's contact (an earlier attempt died after
   the create); anything else is a permanent error with the registry's words. ``2302``
   (exists) on create is handled the same way.

``1001`` (action pending) is polled with ``domain:info`` until ``pendingCreate`` is gone.
The service expires on the domain's ``exDate``; ``renew`` reads ``domain:info`` first and
sends ``domain:renew`` with that ``curExpDate`` only while the expiry is still short of the
one this renewal aims at, so a repeated renew never adds a second period. ``suspend`` /
``resume`` add / remove ``clientHold``; ``close`` is ``domain:delete`` (a domain that is
gone already, or now another registrar's, is left alone).

Result codes: 1000 / 1001 done / pending; 2302 take over when ours; 2400 and 2500-2502
(and a connection that fails, times out or answers something that is not EPP) are
temporary, retried with a new session; every other 2xxx is permanent, with the registry's
message and reason.
"""

import contextlib
import datetime as dt
import itertools
import logging
import os
import re
import socket
import ssl
import struct
import tempfile

from lxml import etree

from modules.base import (
    ConfigField,
    ConfigProblem,
    ModuleType,
    PerCallTimeouts,
    PermanentError,
    QuietLog,
    Result,
    TemporaryError,
    new_password,
    operation_password,
)

log = logging.getLogger(__name__)

EPP_NS = "urn:ietf:params:xml:ns:epp-1.0"
DOMAIN_NS = "urn:ietf:params:xml:ns:domain-1.0"
CONTACT_NS = "urn:ietf:params:xml:ns:contact-1.0"
HOST_NS = "urn:ietf:params:xml:ns:host-1.0"
DEFAULT_OBJECTS = f"{DOMAIN_NS}\n{CONTACT_NS}\n{HOST_NS}"
MAX_FRAME = 4 << 20  # an EPP answer larger than this is not one
TEMPORARY_CODES = {2400, 2500, 2501, 2502}
AUTH_PURPOSE = "epp-auth-code"
_CONTACT_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,7}$")
_E164 = re.compile(r"^\+[0-9]{1,3}\.[0-9]{1,14}$")
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True
)


def _q(ns, tag):
    return f"{{{ns}}}{tag}"


def _parse_date(text):
    """An EPP dateTime (``2027-01-02T03:04:05.0Z``) as a naive UTC datetime."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=0)


def _add_years(value, years):
    try:
        return value.replace(year=value.year + years)
    except ValueError:  # 29 February
        return value.replace(year=value.year + years, day=28)


def host_names(raw):
    """Name servers from a setting or an order field (text or a list), or ValueError."""
    from app.services.order_fields import clean_domains

    if raw in (None, "", []):
        return []
    return clean_domains(raw, max_count=13)


def uri_list(text):
    return [u for u in re.split(r"\s+", text or "") if u]


class Refused(PermanentError):
    """The registry answered a 2xxx result code that retrying will not change."""

    def __init__(self, message, code, words):
        super().__init__(message)
        self.code = code
        self.words = words


class Answer:
    """A registry's response: its result code, message, reason and ``resData``."""

    def __init__(self, code, msg, reason, res):
        self.code, self.msg, self.reason, self.res = code, msg, reason, res

    @property
    def words(self):
        return f"{self.code} {self.msg}" + (f" ({self.reason})" if self.reason else "")

    def find(self, ns, tag):
        if self.res is None:
            return None
        return self.res.find(f".//{_q(ns, tag)}")

    def text(self, ns, tag):
        found = self.find(ns, tag)
        return None if found is None or found.text is None else found.text.strip()


class Session:
    """One EPP session (connect, greeting, login ... logout), every command logged."""

    def __init__(self, module, ctx, trid_prefix):
        self.module = module
        self.ctx = ctx
        self.config = module.config
        self.where = f"{self.config.get('host')}:{self.config.get('port') or 700}"
        self.counter = itertools.count(1)
        self.trid_prefix = trid_prefix
        self.sock = None
        self.greeting = None

    # --- transport ----------------------------------------------------------------------

    def _context(self):
        ca = (self.config.get("ca_bundle") or "").strip()
        context = ssl.create_default_context(cadata=ca or None)
        if not ca:
            context.load_default_certs()
        pem = (self.config.get("client_cert") or "").strip()
        if pem:
            fd, path = tempfile.mkstemp(prefix="provisor-epp-", suffix=".pem")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(pem + "\n")
                context.load_cert_chain(path)
            except ssl.SSLError as exc:
                raise PermanentError(
                    f"the client_cert setting is not a PEM certificate with its key: {exc}"
                ) from None
            finally:
                os.unlink(path)
        return context

    def connect(self):
        host, port = self.config.get("host"), int(self.config.get("port") or 700)
        timeout = self.module.call_timeout()
        with self.ctx.call("CONNECT", f"tls://{self.where}") as call:
            try:
                raw = socket.create_connection((host, port), timeout=timeout)
            except TimeoutError:
                call.outcome = f"timeout after {timeout:g} s"
                raise TemporaryError(
                    f"the registry did not answer within {timeout:g} s at {self.where}"
                ) from None
            except OSError as exc:
                call.outcome = f"connection error: {exc.strerror or exc}"
                raise TemporaryError(
                    f"cannot reach the registry at {self.where}: {exc.strerror or exc}"
                ) from None
            try:
                self.sock = self._context().wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                raw.close()
                call.outcome = "TLS certificate not trusted"
                raise TemporaryError(
                    f"the registry's TLS certificate at {self.where} is not trusted "
                    f"({exc.verify_message}): check the ca_bundle setting"
                ) from None
            except (OSError, ssl.SSLError) as exc:
                raw.close()
                call.outcome = f"TLS error: {exc}"
                raise TemporaryError(
                    f"TLS with the registry at {self.where} failed: {exc}"
                ) from None
            greeting = self._read("the greeting")
            if greeting.find(_q(EPP_NS, "greeting")) is None:
                raise TemporaryError(f"{self.where} sent no EPP greeting: not an EPP server")
            self.greeting = greeting
            call.outcome = "greeting: " + (greeting.findtext(f".//{_q(EPP_NS, 'svID')}") or "?")

    def close(self):
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _recv(self, count, what):
        data = b""
        while len(data) < count:
            try:
                chunk = self.sock.recv(count - len(data))
            except TimeoutError:
                raise TemporaryError(
                    f"the registry did not answer {what} within "
                    f"{self.module.call_timeout():g} s ({self.where})"
                ) from None
            except (OSError, ssl.SSLError) as exc:
                raise TemporaryError(
                    f"the connection to the registry broke during {what}: {exc}"
                ) from None
            if not chunk:
                raise TemporaryError(
                    f"the registry closed the connection instead of answering {what}"
                )
            data += chunk
        return data

    def _read(self, what):
        (length,) = struct.unpack(">I", self._recv(4, what))
        if length < 5 or length > MAX_FRAME:
            raise TemporaryError(
                f"the registry's answer to {what} is not EPP (a frame of {length} bytes)"
            )
        data = self._recv(length - 4, what)
        try:
            root = etree.fromstring(data, parser=_PARSER)
        except etree.XMLSyntaxError:
            raise TemporaryError(
                f"the registry's answer to {what} is not EPP: {data[:60]!r}"
            ) from None
        if root.tag != _q(EPP_NS, "epp"):
            raise TemporaryError(f"the registry's answer to {what} is not EPP: <{root.tag}>")
        return root

    def _send(self, root):
        data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=False)
        try:
            self.sock.sendall(struct.pack(">I", len(data) + 4) + data)
        except (OSError, ssl.SSLError) as exc:
            raise TemporaryError(f"the connection to the registry broke: {exc}") from None

    # --- commands -----------------------------------------------------------------------

    def command(self, label, body, ok=()):
        """Send ``<command>`` holding ``body``; the Answer of a 1xxx code (or one in
        ``ok``), else the error it means."""
        epp = etree.Element(_q(EPP_NS, "epp"), nsmap={None: EPP_NS})
        command = etree.SubElement(epp, _q(EPP_NS, "command"))
        command.append(body)
        trid = f"{self.trid_prefix}-{next(self.counter)}"
        etree.SubElement(command, _q(EPP_NS, "clTRID")).text = trid
        with self.ctx.call("EPP", label) as call:
            self._send(epp)
            root = self._read(label)
            result = root.find(f"{_q(EPP_NS, 'response')}/{_q(EPP_NS, 'result')}")
            if result is None or not (result.get("code") or "").isdigit():
                call.outcome = "not an EPP response"
                raise TemporaryError(f"the registry's answer to {label} is not an EPP response")
            answer = Answer(
                int(result.get("code")),
                (result.findtext(_q(EPP_NS, "msg")) or "").strip(),
                " ".join((r.text or "").strip() for r in result.iter(_q(EPP_NS, "reason"))).strip()
                or None,
                root.find(f"{_q(EPP_NS, 'response')}/{_q(EPP_NS, 'resData')}"),
            )
            call.outcome = f"{answer.code} {answer.msg}"
            if answer.reason:
                call.note(answer.reason)
        if answer.code < 2000 or answer.code in ok:
            return answer
        if answer.code in TEMPORARY_CODES:
            raise TemporaryError(f"the registry answered {label}: {answer.words}")
        raise Refused(f"the registry refused {label}: {answer.words}", answer.code, answer.words)

    def login(self):
        c = self.config
        self.ctx.secret(c.get("password"))
        login = etree.Element(_q(EPP_NS, "login"))
        etree.SubElement(login, _q(EPP_NS, "clID")).text = c.get("client_id")
        etree.SubElement(login, _q(EPP_NS, "pw")).text = c.get("password")
        options = etree.SubElement(login, _q(EPP_NS, "options"))
        etree.SubElement(options, _q(EPP_NS, "version")).text = "1.0"
        etree.SubElement(options, _q(EPP_NS, "lang")).text = "en"
        svcs = etree.SubElement(login, _q(EPP_NS, "svcs"))
        for uri in uri_list(c.get("object_uris") or DEFAULT_OBJECTS):
            etree.SubElement(svcs, _q(EPP_NS, "objURI")).text = uri
        extensions = uri_list(c.get("extension_uris"))
        if extensions:
            ext = etree.SubElement(svcs, _q(EPP_NS, "svcExtension"))
            for uri in extensions:
                etree.SubElement(ext, _q(EPP_NS, "extURI")).text = uri
        self.command(f"login {c.get('client_id')}", login)

    def logout(self):
        with contextlib.suppress(TemporaryError, PermanentError):
            self.command("logout", etree.Element(_q(EPP_NS, "logout")))

    @staticmethod
    def _object(verb, ns, prefix):
        outer = etree.Element(_q(EPP_NS, verb))
        inner = etree.SubElement(outer, _q(ns, verb), nsmap={prefix: ns})
        return outer, inner

    def check(self, ns, prefix, key, value):
        """``(available, reason)`` of one object (``<obj:check>``)."""
        outer, inner = self._object("check", ns, prefix)
        etree.SubElement(inner, _q(ns, key)).text = value
        answer = self.command(f"{prefix}:check {value}", outer)
        found = answer.find(ns, key)
        if found is None or found.get("avail") not in ("0", "1", "true", "false"):
            raise TemporaryError(f"the registry's {prefix}:check answer has no availability")
        return found.get("avail") in ("1", "true"), answer.text(ns, "reason")

    def info(self, ns, prefix, key, value, ok=()):
        outer, inner = self._object("info", ns, prefix)
        etree.SubElement(inner, _q(ns, key)).text = value
        return self.command(f"{prefix}:info {value}", outer, ok=ok)


class DomainInfo:
    """What ``domain:info`` said of a domain."""

    def __init__(self, answer):
        self.name = answer.text(DOMAIN_NS, "name")
        self.sponsor = answer.text(DOMAIN_NS, "clID")
        self.registrant = answer.text(DOMAIN_NS, "registrant")
        self.statuses = (
            sorted(s.get("s") for s in answer.res.iter(_q(DOMAIN_NS, "status")))
            if answer.res is not None
            else []
        )
        ex = answer.text(DOMAIN_NS, "exDate")
        self.expires = _parse_date(ex) if ex else None
        auth = answer.find(DOMAIN_NS, "authInfo")
        self.auth_code = None if auth is None else auth.findtext(_q(DOMAIN_NS, "pw"))
        self.nameservers = (
            [(h.text or "").strip() for h in answer.res.iter(_q(DOMAIN_NS, "hostObj"))]
            if answer.res is not None
            else []
        )


class EppModule(PerCallTimeouts, ModuleType):
    id = "epp"
    name = "EPP registry (domain registration)"
    description = (
        "Registers, renews, suspends (clientHold) and deletes the ordered domain at a "
        "registry speaking EPP (RFC 5730-5734) over TLS."
    )
    operations = frozenset({"open", "suspend", "resume", "renew", "close", "ensure_item"})
    product_types = ("domain",)
    client_data = ("statuses",)
    checks_availability = True  # check_availability(name): the order form asks it
    state_secrets = {"auth_code": AUTH_PURPOSE}
    default_timeout = 30.0
    CALLS_PER_ATTEMPT = 14  # connect, login, contact x3, hosts, check, create, info...
    config_fields = [
        ConfigField("host", "EPP server", required=True, help="e.g. epp.registry.example"),
        ConfigField("port", "Port", kind="int", default=700, minimum=1, maximum=65535),
        ConfigField("client_id", "Registrar login (clID)", required=True),
        ConfigField("password", "Password", kind="secret", required=True),
        ConfigField(
            "client_cert",
            "Client certificate",
            kind="secret",
            multiline=True,
            help="PEM certificate and its private key, when the registry requires one.",
        ),
        ConfigField(
            "ca_bundle",
            "CA bundle",
            kind="text",
            help="PEM certificates the registry's TLS certificate must chain to; empty: "
            "the system's CAs.",
        ),
        ConfigField(
            "object_uris",
            "Object URIs",
            kind="text",
            default=DEFAULT_OBJECTS,
            help="Sent in <login><svcs>: one a line (domain, contact and host are needed).",
        ),
        ConfigField(
            "extension_uris",
            "Extension URIs",
            kind="text",
            default="",
            help="Sent in <login><svcExtension>, one a line (e.g. the registry's "
            "required extensions); empty: none.",
        ),
        ConfigField(
            "nameservers",
            "Default name servers",
            required=True,
            help="Host names, e.g. ns1.example.net, ns2.example.net: used when the order "
            "gives none (order field 'nameservers'). Passed as host objects.",
        ),
        ConfigField(
            "contact_prefix",
            "Contact id prefix",
            default="pv",
            help="Registrant contacts are <prefix><client id>. Each Provisor sharing this "
            "registrar login needs its own prefix.",
        ),
        ConfigField(
            "fallback_city",
            "City when a client's record has no address",
            help="Registries need the registrant's postal address; fill the clients' "
            "records, or give one here.",
        ),
        ConfigField(
            "fallback_country",
            "Country (ISO code) when a client's record has none",
            max_length=2,
        ),
        ConfigField(
            "renew_days_before",
            "Renew days before expiry",
            kind="int",
            default=30,
            minimum=0,
            maximum=365,
            help="0: renewals only when requested.",
        ),
        ConfigField(
            "poll_interval",
            "Pending check interval (s)",
            kind="float",
            default=60,
            minimum=0.2,
            maximum=86400,
            help="How often a pending (1001) registration is looked at again.",
        ),
        ConfigField(
            "timeout",
            "Timeout (s)",
            kind="float",
            default=30.0,
            minimum=1,
            maximum=300,
            help="For the connection and each answer.",
        ),
    ]
    item_fields = [
        ConfigField(
            "years",
            "Registration period (years)",
            kind="int",
            default=1,
            minimum=1,
            maximum=10,
            help="For registration and each renewal.",
        ),
    ]

    # --- settings -----------------------------------------------------------------------

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        if "nameservers" not in errors and cleaned.get("nameservers"):
            try:
                host_names(cleaned["nameservers"])
            except ValueError as exc:
                errors["nameservers"] = str(exc)
        prefix = cleaned.get("contact_prefix")
        if "contact_prefix" not in errors and prefix and not _CONTACT_PREFIX.match(prefix):
            errors["contact_prefix"] = "Up to 8 lowercase letters, digits and -, from a letter."
        country = cleaned.get("fallback_country")
        if "fallback_country" not in errors and country:
            if not re.fullmatch(r"[A-Za-z]{2}", country):
                errors["fallback_country"] = "Two letters (ISO 3166), e.g. DE."
            else:
                cleaned["fallback_country"] = country.upper()
        for name in ("object_uris", "extension_uris"):
            if name not in errors and any(
                not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", u)
                for u in uri_list(cleaned.get(name))
            ):
                errors[name] = "URIs, one a line, e.g. urn:ietf:params:xml:ns:domain-1.0"
        if "object_uris" not in errors and cleaned.get("object_uris"):
            missing = {DOMAIN_NS, CONTACT_NS, HOST_NS} - set(uri_list(cleaned["object_uris"]))
            if missing:
                errors["object_uris"] = "Needed: " + ", ".join(sorted(missing))
        ca = (cleaned.get("ca_bundle") or "").strip()
        if "ca_bundle" not in errors and ca:
            try:
                ssl.create_default_context(cadata=ca)
            except (ssl.SSLError, ValueError):
                errors["ca_bundle"] = "Not PEM certificates."
        return cleaned, errors

    def renew_days_before(self):
        days = self.config.get("renew_days_before")
        return None if not days else int(days)

    @contextlib.contextmanager
    def session(self, ctx, trid="provisor"):
        session = Session(self, ctx, trid)
        try:
            session.connect()
            session.login()
            yield session
            session.logout()
        finally:
            session.close()

    def _trid(self, ctx):
        return f"provisor-op{ctx.operation.id}-a{ctx.attempt_number}"

    # --- the pieces ---------------------------------------------------------------------

    def contact_id(self, client_id):
        return f"{self.config.get('contact_prefix') or 'pv'}{client_id}"

    def _domain(self, ctx):
        from app.services.order_fields import clean_domain

        raw = (ctx.service.remote_id if ctx.service is not None else None) or (
            ctx.params or {}
        ).get("domain")
        if not isinstance(raw, str) or not raw.strip():
            raise PermanentError("the service has no domain (order field 'domain') to register")
        try:
            return clean_domain(raw)
        except ValueError as exc:
            raise PermanentError(f"the order's domain {raw!r}: {exc}") from None

    def _nameservers(self, ctx):
        ordered = (ctx.params or {}).get("nameservers")
        try:
            names = host_names(ordered) or host_names(self.config.get("nameservers"))
        except ValueError as exc:
            raise PermanentError(f"the name servers: {exc}") from None
        if not names:
            raise PermanentError("no name servers: set the module's default name servers")
        return names

    def _years(self, ctx):
        return int((ctx.item_settings or {}).get("years") or 1)

    def _postal(self, client):
        """``(type, name, org, street lines, city, country)`` of the client's record."""
        lines = [x.strip() for x in (client.address or "").splitlines() if x.strip()]
        city = lines[-1] if lines else (self.config.get("fallback_city") or "")
        street = lines[:-1][:3]
        country = (client.country or self.config.get("fallback_country") or "").upper()
        missing = [
            w
            for w, v in (("an address (its last line the city)", city), ("a country", country))
            if not v
        ]
        if missing:
            raise PermanentError(
                f"client #{client.id} has no {' and no '.join(missing)} on their record: the "
                "registry needs the registrant's postal address (or set the module's "
                "fallback city and country)"
            )
        texts = [client.name, client.company or "", *street, city]
        kind = "int" if all(t.isascii() for t in texts) else "loc"
        return kind, client.name[:255], (client.company or "")[:255], street, city[:255], country

    def _ensure_contact(self, s, ctx):
        client = ctx.client
        ident = self.contact_id(client.id)
        available, _ = s.check(CONTACT_NS, "contact", "id", ident)
        if not available:
            try:
                answer = s.info(CONTACT_NS, "contact", "id", ident)
            except Refused as exc:
                raise PermanentError(
                    f"the contact id {ident} belongs to another registrar ({exc.words}): "
                    "give this module another contact prefix"
                ) from None
            sponsor = answer.text(CONTACT_NS, "clID")
            if sponsor != self.config.get("client_id"):
                raise PermanentError(
                    f"the contact {ident} is sponsored by {sponsor!r}, not this registrar login"
                )
            ctx.log(f"the registrant contact {ident} exists: taken over")
            return ident
        kind, name, org, street, city, country = self._postal(client)
        outer, inner = s._object("create", CONTACT_NS, "contact")
        etree.SubElement(inner, _q(CONTACT_NS, "id")).text = ident
        postal = etree.SubElement(inner, _q(CONTACT_NS, "postalInfo"), type=kind)
        etree.SubElement(postal, _q(CONTACT_NS, "name")).text = name
        if org:
            etree.SubElement(postal, _q(CONTACT_NS, "org")).text = org
        addr = etree.SubElement(postal, _q(CONTACT_NS, "addr"))
        for line in street:
            etree.SubElement(addr, _q(CONTACT_NS, "street")).text = line[:255]
        etree.SubElement(addr, _q(CONTACT_NS, "city")).text = city
        etree.SubElement(addr, _q(CONTACT_NS, "cc")).text = country
        phone = re.sub(r"[\s()-]", "", client.phone or "")
        if _E164.match(phone):
            etree.SubElement(inner, _q(CONTACT_NS, "voice")).text = phone
        etree.SubElement(inner, _q(CONTACT_NS, "email")).text = client.email
        auth = etree.SubElement(inner, _q(CONTACT_NS, "authInfo"))
        etree.SubElement(auth, _q(CONTACT_NS, "pw")).text = ctx.secret(new_password(16))
        try:
            s.command(f"contact:create {ident}", outer)
        except Refused as exc:
            if exc.code != 2302:
                raise
            ctx.log(f"the contact {ident} appeared meanwhile: looking again")
            return self._ensure_contact(s, ctx)
        ctx.log(f"created the registrant contact {ident}")
        return ident

    def _ensure_hosts(self, s, ctx, names):
        for name in names:
            available, _ = s.check(HOST_NS, "host", "name", name)
            if not available:
                continue
            outer, inner = s._object("create", HOST_NS, "host")
            etree.SubElement(inner, _q(HOST_NS, "name")).text = name
            try:
                s.command(f"host:create {name}", outer)
            except Refused as exc:
                if exc.code != 2302:
                    raise
            ctx.log(f"created the host object {name}")

    def _info(self, s, name, ok=()):
        answer = s.info(DOMAIN_NS, "domain", "name", name, ok=ok)
        if answer.code >= 2000:
            return None
        info = DomainInfo(answer)
        if info.expires is None or not info.sponsor:
            raise TemporaryError(f"the registry's domain:info of {name} has no clID or exDate")
        return info

    def _done(self, ctx, info, auth_code=None):
        auth = info.auth_code or auth_code
        details = {
            "domain": info.name,
            "nameservers": ", ".join(info.nameservers),
            "expires_on": info.expires.date().isoformat(),
        }
        if auth:
            details["auth_code"] = ctx.secret(auth)
        return Result.done(
            info.name,
            details,
            data={"statuses": info.statuses, "registrant": info.registrant},
            expires_at=info.expires,
        )

    def _wait_or_done(self, ctx, info, auth_code=None):
        if "pendingCreate" in info.statuses:
            ctx.log(f"{info.name} is pendingCreate at the registry: looking again later")
            return Result.poll(
                after=float(self.config.get("poll_interval") or 60),
                state={**ctx.state, "waiting": info.name},
            )
        return self._done(ctx, info, auth_code)

    def _take_over(self, s, ctx, name, contact, said):
        """The name exists: ours (this login sponsors it, this client's contact holds it)
        is taken over, anything else is refused with what the registry said."""
        try:
            info = self._info(s, name)
        except Refused as exc:
            raise PermanentError(
                f"{name} is not available ({said}): it is registered through another "
                f"registrar ({exc.words})"
            ) from None
        us = self.config.get("client_id")
        if info.sponsor != us or info.registrant != contact:
            raise PermanentError(
                f"{name} is not available ({said}): registered by {info.sponsor!r} to "
                f"{info.registrant!r}, not by {us!r} to this client's contact {contact!r}"
            )
        ctx.log(f"{name} is already registered by us to {contact}: taking it over")
        return self._wait_or_done(ctx, info)

    def _own(self, s, ctx, name, missing_ok=False):
        info = self._info(s, name, ok=(2303, 2201) if missing_ok else ())
        if info is None:
            ctx.log(f"{name} is gone from the registry or now another registrar's: left alone")
            return None
        if info.sponsor != self.config.get("client_id"):
            raise PermanentError(f"{name} is sponsored by {info.sponsor!r}, not this login")
        return info

    # --- operations ---------------------------------------------------------------------

    def open(self, ctx):
        name = self._domain(ctx)
        with self.session(ctx, self._trid(ctx)) as s:
            if ctx.state.get("waiting"):
                return self._wait_or_done(ctx, self._own(s, ctx, name))
            contact = self._ensure_contact(s, ctx)
            hosts = self._nameservers(ctx)
            self._ensure_hosts(s, ctx, hosts)
            available, reason = s.check(DOMAIN_NS, "domain", "name", name)
            if not available:
                return self._take_over(s, ctx, name, contact, reason or "not available")
            auth = operation_password(ctx, AUTH_PURPOSE, length=16, key="auth_code")
            years = self._years(ctx)
            outer, inner = s._object("create", DOMAIN_NS, "domain")
            etree.SubElement(inner, _q(DOMAIN_NS, "name")).text = name
            etree.SubElement(inner, _q(DOMAIN_NS, "period"), unit="y").text = str(years)
            ns = etree.SubElement(inner, _q(DOMAIN_NS, "ns"))
            for host in hosts:
                etree.SubElement(ns, _q(DOMAIN_NS, "hostObj")).text = host
            etree.SubElement(inner, _q(DOMAIN_NS, "registrant")).text = contact
            for role in ("admin", "tech"):
                etree.SubElement(inner, _q(DOMAIN_NS, "contact"), type=role).text = contact
            auth_info = etree.SubElement(inner, _q(DOMAIN_NS, "authInfo"))
            etree.SubElement(auth_info, _q(DOMAIN_NS, "pw")).text = auth
            try:
                answer = s.command(f"domain:create {name} ({years} y)", outer)
            except Refused as exc:
                if exc.code != 2302:
                    raise
                return self._take_over(s, ctx, name, contact, exc.words)
            ctx.log(f"registered {name} for {years} year(s) ({answer.code})")
            return self._wait_or_done(ctx, self._own(s, ctx, name), auth)

    def _hold(self, ctx, on):
        name = self._domain(ctx)
        with self.session(ctx, self._trid(ctx)) as s:
            info = self._own(s, ctx, name)
            if ("clientHold" in info.statuses) == on:
                ctx.log(f"{name} {'has' if on else 'does not have'} clientHold already")
                return self._done(ctx, info)
            outer, inner = s._object("update", DOMAIN_NS, "domain")
            etree.SubElement(inner, _q(DOMAIN_NS, "name")).text = name
            part = etree.SubElement(inner, _q(DOMAIN_NS, "add" if on else "rem"))
            etree.SubElement(part, _q(DOMAIN_NS, "status"), s="clientHold")
            s.command(f"domain:update {name} {'add' if on else 'rem'} clientHold", outer)
            return self._done(ctx, self._own(s, ctx, name))

    def suspend(self, ctx):
        """clientHold: the registry stops publishing the domain in its zone."""
        return self._hold(ctx, True)

    def resume(self, ctx):
        return self._hold(ctx, False)

    def renew(self, ctx):
        """One period more, once: the expiry aimed at is stored before ``domain:renew``,
        and a retry that finds it reached does not renew again."""
        name = self._domain(ctx)
        years = self._years(ctx)
        with self.session(ctx, self._trid(ctx)) as s:
            info = self._own(s, ctx, name)
            target = ctx.state.get("target")
            if target is None:
                target = _add_years(info.expires, years).date().isoformat()
                ctx.save_state({**ctx.state, "target": target})
            if info.expires.date().isoformat() >= target:
                ctx.log(f"{name} expires on {info.expires.date()} already: renewed before")
                return self._done(ctx, info)
            outer, inner = s._object("renew", DOMAIN_NS, "domain")
            etree.SubElement(inner, _q(DOMAIN_NS, "name")).text = name
            etree.SubElement(
                inner, _q(DOMAIN_NS, "curExpDate")
            ).text = info.expires.date().isoformat()
            etree.SubElement(inner, _q(DOMAIN_NS, "period"), unit="y").text = str(years)
            s.command(f"domain:renew {name} from {info.expires.date()} ({years} y)", outer)
            return self._done(ctx, self._own(s, ctx, name))

    def close(self, ctx):
        name = self._domain(ctx)
        with self.session(ctx, self._trid(ctx)) as s:
            info = self._own(s, ctx, name, missing_ok=True)
            if info is None:
                return Result.done(name, data={"statuses": []})
            outer, inner = s._object("delete", DOMAIN_NS, "domain")
            etree.SubElement(inner, _q(DOMAIN_NS, "name")).text = name
            answer = s.command(f"domain:delete {name}", outer)
            ctx.log(f"deleted {name} ({answer.code} {answer.msg})")
            return Result.done(name, data={"statuses": ["deleted"]})

    def ensure_item(self, ctx):
        """A registry has no plans: the item is the period (years). This checks that the
        registrar login works with these settings."""
        years = int((ctx.item_settings or {}).get("years") or 1)
        with self.session(ctx, self._trid(ctx)):
            ctx.log(f"logged in; the tariff {ctx.internal_name} registers for {years} year(s)")
        return Result.done()

    # --- the order form's availability check --------------------------------------------

    def check_availability(self, name):
        """``(available, reason)`` of a domain name, from ``domain:check``; raises a
        ModuleError when the registry cannot be asked."""
        with self.session(QuietLog(), "provisor-check") as s:
            return s.check(DOMAIN_NS, "domain", "name", name)

    # --- Test connection ----------------------------------------------------------------

    def check_config(self):
        session = Session(self, QuietLog(), "provisor-test")
        try:
            try:
                session.connect()
            except TemporaryError as exc:
                text = str(exc)
                field = (
                    "timeout"
                    if "within" in text
                    else "ca_bundle"
                    if "not trusted" in text
                    else "host"
                )
                raise ConfigProblem(text, field=field) from None
            except PermanentError as exc:
                raise ConfigProblem(str(exc), field="client_cert") from None
            try:
                session.login()
            except Refused as exc:
                field = {2307: "object_uris", 2103: "extension_uris"}.get(exc.code, "password")
                raise ConfigProblem(f"the registry refused the login: {exc.words}", field) from None
            except TemporaryError as exc:
                field = "timeout" if "within" in str(exc) else "host"
                raise ConfigProblem(str(exc), field=field) from None
            session.logout()
        finally:
            session.close()
        server = session.greeting.findtext(f".//{_q(EPP_NS, 'svID')}") or "?"
        return f"EPP server {server} accepted the login of {self.config.get('client_id')}"
