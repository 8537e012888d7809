"""The powerdns module: DNS hosting on a PowerDNS authoritative server (HTTP API, 4.x).

``open`` creates the zone named after the order's domain (order field ``domain``) with the
records of the tariff's template (item setting ``records``, see ``modules.zone_template``),
the module's name servers as its NS records and an SOA naming the first of them.

**Ownership.** A zone's ``account`` field says who owns it: ``<owner tag>:service-<id>``
(``provisor:service-42`` with the default tag). An attempt looks the zone up first and
takes over a zone that already carries this service's account (an earlier attempt died
after creating it); a zone with any other account (another service, another Provisor with
its own tag, a zone made by hand) is refused permanently and left untouched. Two Provisor
instances that share one PowerDNS must give their modules different owner tags: with the
same tag, service #42 of one would take over service #42's zone of the other.

**Suspension.** PowerDNS 4.7 has no "zone disabled" switch; the module marks every record
of the zone ``disabled`` (PATCH rrsets, REPLACE with ``"disabled": true``). Without an
enabled SOA the server no longer considers itself authoritative for the name and answers
REFUSED; the API flushes its caches for the zone on the change, so this takes effect at
once. ``resume`` enables them again. The records stay on the server meanwhile.

``close`` deletes the zone (a zone that is gone already is fine; one that now belongs to
someone else is left alone). ``change_tariff`` makes the zone's records those of the new
tariff's template: the template owns every rrset except the SOA and the ``_acme-challenge``
TXT records (which belong to certificate validations); the apex NS come from the module's
name servers.

For the ACME module (dns-01): :meth:`PowerDNSModule.set_challenge` and
:meth:`PowerDNSModule.clear_challenge`.
"""

import ipaddress
import re
from urllib.parse import quote

import requests

from modules import zone_template
from modules.base import (
    OWNER_TAG,
    OWNER_TAG_RULE,
    ConfigField,
    ConfigProblem,
    ModuleType,
    PerCallTimeouts,
    PermanentError,
    Result,
    TemporaryError,
)
from modules.http import why

_SERVER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CHALLENGE_VALUE = re.compile(r"^[A-Za-z0-9_=+/.-]{1,255}$")
CHALLENGE_TTL = 60
# refresh, retry, expire, negative-answer TTL of the SOA
SOA_TIMERS = "10800 3600 604800 3600"
SAMPLE_DOMAIN = "example.com"
TEMPLATE_HELP = (
    "One record a line: <name> [<ttl>] <TYPE> <data>, e.g. '@ A {ip}', 'www CNAME @', "
    "'@ MX 10 mail.{domain}', '@ TXT \"v=spf1 mx -all\"'. Names are relative (@ is the "
    "zone). Types A, AAAA, CNAME, MX, TXT, SRV, CAA, NS. Placeholders: {domain}, {ip}, "
    "{ipv6}. Empty: the zone has only its SOA and NS records."
)


def host_name(text):
    """A host name (at least two labels) in lowercase with the final dot, or ValueError."""
    name = text.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(labels) < 2 or len(name) > 253 or not all(_HOST_LABEL.match(x) for x in labels):
        raise ValueError(f"{text.strip()!r} is not a host name such as ns1.example.net")
    return name + "."


def nameserver_list(text):
    """The name servers of a setting ("ns1.example.net, ns2.example.net") or ValueError."""
    names = [n for n in re.split(r"[\s,]+", text or "") if n]
    if not names:
        raise ValueError("Give at least one name server, e.g. ns1.example.net, ns2.example.net.")
    cleaned = []
    for n in names:
        name = host_name(n)
        if name not in cleaned:
            cleaned.append(name)
    return cleaned


def soa_contact(text, zone):
    """The SOA's contact as a DNS name: ``hostmaster.example.net.`` from that text or
    ``hostmaster@example.net``; empty: ``hostmaster.<zone>``."""
    text = (text or "").strip()
    if not text:
        return "hostmaster." + zone
    if "@" in text:
        local, _, domain = text.partition("@")
        if not _HOST_LABEL.match(local.lower()):
            raise ValueError("The mailbox before @ must be one label such as hostmaster.")
        return local.lower() + "." + host_name(domain)
    return host_name(text)


def zone_domain(params):
    """The order's domain as a zone name (``example.com.``), checked again here: the
    product type's order fields are the provider's to edit."""
    from app.services.order_fields import clean_domain

    raw = (params or {}).get("domain")
    if not isinstance(raw, str) or not raw.strip():
        raise PermanentError("the service has no domain (order field 'domain') to host")
    try:
        return clean_domain(raw) + "."
    except ValueError as exc:
        raise PermanentError(f"the order's domain {raw!r} cannot be a zone: {exc}") from None


def _error_text(reply):
    """What PowerDNS said: its JSON ``error`` or its short text answer."""
    try:
        data = reply.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])[:300]
    text = " ".join((reply.text or "").split())[:300]
    return text or reply.reason or str(reply.status_code)


class PowerDNSModule(PerCallTimeouts, ModuleType):
    id = "powerdns"
    name = "PowerDNS (DNS hosting)"
    description = (
        "Hosts the ordered domain as a zone on a PowerDNS authoritative server through its "
        "HTTP API, with the tariff's record template."
    )
    operations = frozenset({"open", "suspend", "resume", "close", "change_tariff", "ensure_item"})
    client_data = ("records",)
    product_types = ("dns",)
    dns_challenges = True  # set_challenge / clear_challenge, for the acme module's dns-01
    default_timeout = 10.0
    CALLS_PER_ATTEMPT = 6  # the most API calls one operation makes (ensure_item)
    config_fields = [
        ConfigField(
            "api_url",
            "API URL",
            kind="url",
            required=True,
            help="PowerDNS's webserver with api=yes, e.g. http://127.0.0.1:8081",
        ),
        ConfigField(
            "api_key", "API key", kind="secret", required=True, help="api-key of pdns.conf"
        ),
        ConfigField("server_id", "Server id", default="localhost"),
        ConfigField(
            "nameservers",
            "Name servers",
            required=True,
            help="The NS records of every zone, e.g. ns1.example.net, ns2.example.net "
            "(the first is the SOA's primary). Clients set these at their registrar.",
        ),
        ConfigField(
            "default_ttl", "Default TTL (s)", kind="int", default=3600, minimum=30, maximum=604800
        ),
        ConfigField(
            "zone_kind",
            "Zone kind",
            kind="choice",
            default="Native",
            options=(
                ("Native", "Native (the database backend replicates)"),
                ("Master", "Master (secondaries by NOTIFY and AXFR)"),
            ),
        ),
        ConfigField(
            "soa_contact",
            "SOA contact",
            help="hostmaster.example.net or hostmaster@example.net; empty: hostmaster.<zone>",
        ),
        ConfigField(
            "owner_tag",
            "Owner tag",
            default="provisor",
            help="Zones are marked account=<tag>:service-<id>. Each Provisor sharing this "
            "PowerDNS needs its own tag.",
        ),
        ConfigField(
            "timeout",
            "Timeout (s)",
            kind="float",
            default=10.0,
            minimum=1,
            maximum=300,
            help="For each API call; an operation makes up to six.",
        ),
    ]
    item_fields = [
        ConfigField("records", "Record template", kind="text", default="", help=TEMPLATE_HELP),
        ConfigField("ip", "IPv4 address ({ip})", help="e.g. the tariff's web server"),
        ConfigField("ipv6", "IPv6 address ({ipv6})"),
    ]

    # --- settings -----------------------------------------------------------------------

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        for name, check in (
            ("nameservers", nameserver_list),
            ("soa_contact", lambda v: soa_contact(v, SAMPLE_DOMAIN + ".")),
        ):
            if name not in errors and cleaned.get(name):
                try:
                    check(cleaned[name])
                except ValueError as exc:
                    errors[name] = str(exc)
        tag = cleaned.get("owner_tag")
        if "owner_tag" not in errors and tag and not OWNER_TAG.match(tag):
            errors["owner_tag"] = OWNER_TAG_RULE
        server = cleaned.get("server_id")
        if "server_id" not in errors and server and not _SERVER_ID.match(server):
            errors["server_id"] = (
                "Letters, digits, '.', '_' and '-' (PowerDNS's default: localhost)."
            )
        return cleaned, errors

    @classmethod
    def validate_item(cls, data):
        """The item's settings, and its template parsed (with example.com for {domain})."""
        cleaned, errors = super().validate_item(data)
        for name, kind in (("ip", "IPv4Address"), ("ipv6", "IPv6Address")):
            if name not in errors and cleaned.get(name):
                try:
                    cleaned[name] = str(getattr(ipaddress, kind)(cleaned[name]))
                except ValueError:
                    errors[name] = f"Not an {'IPv4' if name == 'ip' else 'IPv6'} address."
        if not errors:
            try:
                cls.template_records(cleaned, SAMPLE_DOMAIN + ".")
            except zone_template.TemplateError as exc:
                errors["records"] = str(exc)
        return cleaned, errors

    @staticmethod
    def template_records(settings, zone):
        """The template's records for ``zone`` (raises ``TemplateError``)."""
        settings = settings or {}
        values = {
            "domain": zone.rstrip("."),
            "ip": settings.get("ip") or "",
            "ipv6": settings.get("ipv6") or "",
        }
        return zone_template.parse(settings.get("records") or "", values)

    def _wanted(self, ctx, zone, settings, item_needed=True):
        """The rrsets the zone should have: the apex NS and the template's records."""
        if item_needed and not settings:
            # no item of this module for the tariff (change_tariff: the new one): applying
            # "no template" would empty the zone
            raise PermanentError(
                f"the tariff {ctx.params.get('tariff_internal_name') or ctx.internal_name!r} has "
                "no item on this module (its record template): link the tariff to the module"
            )
        try:
            records = self.template_records(settings, zone)
        except zone_template.TemplateError as exc:
            raise PermanentError(f"the record template of this tariff: {exc}") from None
        ttl = self.config.get("default_ttl") or 3600
        ns = {
            "name": zone,
            "type": "NS",
            "ttl": ttl,
            "records": [{"content": n, "disabled": False} for n in self._nameservers()],
        }
        return [ns, *zone_template.rrsets(records, ttl)]

    def _nameservers(self):
        return nameserver_list(self.config.get("nameservers") or "")

    def _soa(self, zone):
        primary = self._nameservers()[0]
        contact = soa_contact(self.config.get("soa_contact"), zone)
        return {
            "name": zone,
            "type": "SOA",
            "ttl": self.config.get("default_ttl") or 3600,
            "records": [{"content": f"{primary} {contact} 1 {SOA_TIMERS}", "disabled": False}],
        }

    def owner(self, service_id):
        """The ``account`` of this service's zone."""
        return f"{self.config.get('owner_tag') or 'provisor'}:service-{service_id}"

    # --- HTTP ---------------------------------------------------------------------------

    def _base(self):
        url = (self.config.get("api_url") or "").rstrip("/")
        for tail in ("/api/v1", "/api"):
            url = url.removesuffix(tail)
        server = quote(self.config.get("server_id") or "localhost", safe="")
        return f"{url}/api/v1/servers/{server}"

    def _send(self, method, path, **kwargs):
        return requests.request(
            method,
            self._base() + path,
            headers={"X-API-Key": self.config.get("api_key") or "", "Accept": "application/json"},
            timeout=self.call_timeout(),
            **kwargs,
        )

    def _request(self, ctx, method, path, ok=(200, 201, 204), **kwargs):
        """One API call, logged; an answer outside ``ok`` raises the error it means."""
        url = self._base() + path
        ctx.secret(self.config.get("api_key"))
        with ctx.call(method, url) as call:
            try:
                reply = self._send(method, path, **kwargs)
            except requests.Timeout:
                call.outcome = f"timeout after {self.call_timeout():g} s"
                raise TemporaryError(
                    f"PowerDNS did not answer within {self.call_timeout():g} s ({method} {url})"
                ) from None
            except requests.RequestException as exc:
                call.outcome = f"connection error: {why(exc)}"
                raise TemporaryError(f"cannot reach PowerDNS at {url}: {why(exc)}") from None
            call.outcome = f"{reply.status_code} {reply.reason}"
            if reply.status_code not in ok and reply.status_code >= 400:
                call.note(_error_text(reply))
        if reply.status_code in ok:
            return reply
        said = _error_text(reply)
        if reply.status_code >= 500:
            raise TemporaryError(f"PowerDNS answered {reply.status_code}: {said}")
        if reply.status_code in (401, 403):
            raise PermanentError(
                f"PowerDNS refused the API key ({reply.status_code} {said}): check the module's "
                "api_key"
            )
        if reply.status_code == 404 and path == "":
            raise PermanentError(f"PowerDNS has no server {self.config.get('server_id')!r}")
        if reply.status_code >= 400:
            raise PermanentError(f"PowerDNS refused {method} {path or '/'}: {said}")
        raise TemporaryError(f"PowerDNS answered {reply.status_code}: {said}")

    @staticmethod
    def _zone_path(zone_id):
        return "/zones/" + quote(zone_id, safe=".=")

    def _find(self, ctx, zone):
        """The zone's summary (``id``, ``account``...) or None when there is none."""
        found = self._request(ctx, "GET", "/zones", params={"zone": zone}).json()
        for z in found if isinstance(found, list) else []:
            if z.get("name", "").lower() == zone.lower():
                return z
        return None

    def _get(self, ctx, zone_id):
        """The whole zone (with its rrsets) or None when it is gone."""
        reply = self._request(ctx, "GET", self._zone_path(zone_id), ok=(200, 404))
        return None if reply.status_code == 404 else reply.json()

    def _patch(self, ctx, zone_id, rrsets):
        if rrsets:
            self._request(ctx, "PATCH", self._zone_path(zone_id), json={"rrsets": rrsets})

    # --- the service's zone -------------------------------------------------------------

    def _service_zone(self, ctx):
        """The zone name of the service: what it was created as, else the order's domain."""
        remote = (ctx.service.remote_id or "") if ctx.service is not None else ""
        return remote if remote.endswith(".") else zone_domain(ctx.params)

    def _own_zone(self, ctx, missing_ok=False):
        """This service's zone (whole), after checking it is still this service's."""
        zone = self._service_zone(ctx)
        data = self._get(ctx, zone)
        if data is None:
            if missing_ok:
                ctx.log(f"the zone {zone} is gone already")
                return zone, None
            raise PermanentError(f"the zone {zone} no longer exists on PowerDNS")
        owner = self.owner(ctx.service.id)
        if data.get("account") != owner:
            if missing_ok:
                ctx.log(
                    f"the zone {zone} belongs to account {data.get('account')!r} now, not "
                    f"{owner!r}: left alone"
                )
                return zone, None
            raise PermanentError(
                f"the zone {zone} belongs to account {data.get('account')!r}, not this "
                f"service's {owner!r}: it is left alone"
            )
        return zone, data

    @staticmethod
    def suspended(zone_data):
        """Whether a zone is suspended (its SOA record disabled)."""
        return any(
            r.get("disabled")
            for s in zone_data.get("rrsets") or []
            if s.get("type") == "SOA"
            for r in s.get("records") or []
        )

    @staticmethod
    def record_list(zone_data):
        """The zone's records for people to read: SOA and NS first, then by name."""
        order = {"SOA": 0, "NS": 1}
        rows = [
            {
                "name": s["name"],
                "type": s["type"],
                "ttl": s.get("ttl"),
                "content": r["content"],
            }
            for s in zone_data.get("rrsets") or []
            for r in s.get("records") or []
        ]
        zone = zone_data.get("name", "")
        return sorted(
            rows,
            key=lambda r: (r["name"] != zone, order.get(r["type"], 2), r["name"], r["type"]),
        )

    def _done(self, zone, zone_data):
        return Result.done(
            zone,
            {
                "domain": zone.rstrip("."),
                "nameservers": ", ".join(n.rstrip(".") for n in self._nameservers()),
            },
            data={"records": self.record_list(zone_data) if zone_data else []},
        )

    @staticmethod
    def _reserved(rrset, zone):
        """Rrsets a template never touches: the SOA, certificate validations' TXT."""
        if rrset["type"] == "SOA":
            return True
        return rrset["type"] == "TXT" and rrset["name"].lower().startswith("_acme-challenge.")

    def _sync(self, ctx, zone_data, wanted, disabled=False):
        """Make the zone's rrsets (but the reserved ones) exactly ``wanted``."""
        zone = zone_data["name"]
        keep = {(w["name"].lower(), w["type"]) for w in wanted}
        changes = [
            {"name": s["name"], "type": s["type"], "changetype": "DELETE"}
            for s in zone_data.get("rrsets") or []
            if not self._reserved(s, zone) and (s["name"].lower(), s["type"]) not in keep
        ]
        for w in wanted:
            records = [{**r, "disabled": disabled} for r in w["records"]]
            changes.append({**w, "records": records, "changetype": "REPLACE"})
        self._patch(ctx, zone_data["id"], changes)

    # --- operations ---------------------------------------------------------------------

    def open(self, ctx):
        zone = zone_domain(ctx.params)
        owner = self.owner(ctx.service.id)
        wanted = self._wanted(ctx, zone, ctx.item_settings)
        found = self._find(ctx, zone)
        if found is None:
            body = {
                "name": zone,
                "kind": self.config.get("zone_kind") or "Native",
                "account": owner,
                "nameservers": [],
                "soa_edit_api": "DEFAULT",
                "rrsets": [self._soa(zone), *wanted],
            }
            reply = self._request(ctx, "POST", "/zones", ok=(201, 409), json=body)
            if reply.status_code == 201:
                ctx.log(f"created the zone {zone} (account {owner})")
                data = reply.json()
                return self._done(data.get("id") or zone, data)
            ctx.log(f"the zone {zone} appeared meanwhile (409 Conflict): looking again")
            found = self._find(ctx, zone)
            if found is None:
                raise TemporaryError(f"PowerDNS says {zone} exists but does not list it")
        if found.get("account") != owner:
            raise PermanentError(
                f"the zone {zone} already exists on PowerDNS and belongs to account "
                f"{found.get('account')!r} (not this service's {owner!r}): it is not taken over"
            )
        ctx.log(f"the zone {zone} already belongs to this service ({owner}): taking it over")
        data = self._get(ctx, found["id"])
        if data is None:
            raise TemporaryError(f"the zone {zone} vanished while being taken over")
        self._sync(ctx, data, wanted)
        return self._done(found["id"], self._get(ctx, found["id"]))

    def _switch(self, ctx, disabled):
        zone, data = self._own_zone(ctx)
        changes = [
            {
                "name": s["name"],
                "type": s["type"],
                "ttl": s["ttl"],
                "changetype": "REPLACE",
                "records": [{**r, "disabled": disabled} for r in s.get("records") or []],
            }
            for s in data.get("rrsets") or []
        ]
        self._patch(ctx, data["id"], changes)
        ctx.log(f"every record of {zone} {'disabled' if disabled else 'enabled'}")
        return self._done(data["id"], self._get(ctx, data["id"]))

    def suspend(self, ctx):
        """Disable every record: without its SOA the server answers REFUSED for the zone."""
        return self._switch(ctx, True)

    def resume(self, ctx):
        return self._switch(ctx, False)

    def close(self, ctx):
        zone, data = self._own_zone(ctx, missing_ok=True)
        if data is None:
            return Result.done(ctx.service.remote_id, data={"records": []})
        reply = self._request(ctx, "DELETE", self._zone_path(data["id"]), ok=(204, 200, 404))
        ctx.log(
            f"deleted the zone {zone}" if reply.status_code != 404 else f"{zone} is gone already"
        )
        return Result.done(data["id"], data={"records": []})

    def change_tariff(self, ctx):
        """The new tariff's template (``ctx.item_settings`` are the new item's)."""
        zone, data = self._own_zone(ctx)
        wanted = self._wanted(ctx, data["name"], ctx.item_settings)
        self._sync(ctx, data, wanted, disabled=self.suspended(data))
        ctx.log(
            f"the records of {zone} follow the template of {ctx.params.get('tariff_internal_name')}"
        )
        return self._done(data["id"], self._get(ctx, data["id"]))

    def ensure_item(self, ctx):
        """Checks the item: its template parses, and PowerDNS accepts its records from
        this API key: a trial zone ``<tag>-check-<operation>.invalid.`` is created with
        them and deleted again (one taken over from an attempt that died is deleted)."""
        settings = ctx.item_settings or (ctx.item.settings if ctx.item is not None else {})
        tag = self.config.get("owner_tag") or "provisor"
        trial = f"{tag}-check-{ctx.idempotency_key}.invalid."
        wanted = self._wanted(ctx, trial, settings, item_needed=False)
        ctx.log(f"the template of {ctx.internal_name} parses: {len(wanted) - 1} rrsets")
        self._request(ctx, "GET", "")
        leftover = self._find(ctx, trial)
        if leftover is not None and leftover.get("account") == f"{tag}:item-check":
            self._request(ctx, "DELETE", self._zone_path(leftover["id"]), ok=(204, 404))
        body = {
            "name": trial,
            "kind": "Native",
            "account": f"{tag}:item-check",
            "nameservers": [],
            "rrsets": [self._soa(trial), *wanted],
        }
        try:
            created = self._request(ctx, "POST", "/zones", ok=(201,), json=body).json()
        except PermanentError as exc:
            raise PermanentError(
                f"PowerDNS does not accept a zone with the template of {ctx.internal_name}: {exc}"
            ) from None
        self._request(ctx, "DELETE", self._zone_path(created.get("id") or trial), ok=(204, 404))
        ctx.log("PowerDNS accepted a trial zone with these records (deleted again)")
        return Result.done()

    # --- Test connection ----------------------------------------------------------------

    def check_config(self):
        base = self._base()
        try:
            reply = self._send("GET", "")
            if reply.status_code == 404:
                listing = requests.get(
                    base.rsplit("/", 1)[0],
                    headers={"X-API-Key": self.config.get("api_key") or ""},
                    timeout=self.call_timeout(),
                )
            zones = (
                self._send("GET", "/zones", params={"zone": "provisor-check.invalid."})
                if reply.status_code == 200
                else None
            )
        except requests.Timeout:
            raise ConfigProblem(
                f"PowerDNS did not answer within {self.call_timeout():g} s at {base}",
                field="timeout",
            ) from None
        except requests.RequestException as exc:
            raise ConfigProblem(
                f"cannot reach PowerDNS at {base}: {why(exc)}", field="api_url"
            ) from None
        said = _error_text(reply)
        if reply.status_code in (401, 403):
            raise ConfigProblem(
                f"PowerDNS refused the API key ({reply.status_code} {said})", field="api_key"
            )
        if reply.status_code == 404:
            if listing.status_code == 200 and isinstance(listing.json(), list):
                ids = ", ".join(s.get("id", "?") for s in listing.json())
                raise ConfigProblem(
                    f"PowerDNS has no server {self.config.get('server_id')!r} (it has: {ids})",
                    field="server_id",
                )
            raise ConfigProblem(
                f"{base} is not the PowerDNS HTTP API (404 {said}): is api=yes set, and is "
                "this its webserver address?",
                field="api_url",
            )
        if reply.status_code != 200:
            raise ConfigProblem(f"PowerDNS answered {reply.status_code}: {said}", field="api_url")
        try:
            server = reply.json()
        except ValueError:
            raise ConfigProblem(
                f"{base} does not answer JSON: not PowerDNS", field="api_url"
            ) from None
        if server.get("daemon_type") != "authoritative":
            raise ConfigProblem(
                f"{base} is a PowerDNS {server.get('daemon_type')!r}, not an authoritative server",
                field="api_url",
            )
        if zones is None or zones.status_code != 200:
            raise ConfigProblem(
                f"PowerDNS does not list its zones: {_error_text(zones)}", field="api_key"
            )
        return (
            f"PowerDNS Authoritative {server.get('version', '?')} (server {server.get('id')}) "
            "answers and lists zones with this key"
        )

    # --- DNS-01 challenges for the acme module ------------------------------------------

    def _challenge_zone(self, ctx, domain):
        """The zone holding ``_acme-challenge.<domain>`` (the longest zone on the server
        that contains it), after checking Provisor may write into it."""
        name = self._challenge_name(domain)
        labels = name.rstrip(".").split(".")
        found = None
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:]) + "."
            found = self._find(ctx, candidate)
            if found is not None:
                break
        if found is None:
            raise PermanentError(f"no zone on this PowerDNS contains {name}")
        account = found.get("account") or ""
        tag = self.config.get("owner_tag") or "provisor"
        matched = re.fullmatch(re.escape(tag) + r":service-(\d+)", account)
        if matched is None:
            raise PermanentError(
                f"the zone {found['name']} holding {name} is not one of this Provisor's DNS "
                f"services (account {account!r}): its records are not changed"
            )
        if ctx.client is not None:
            from app.models import Service

            owner = Service.get_or_none(Service.id == int(matched.group(1)))
            if owner is None or owner.client_id != ctx.client.id:
                raise PermanentError(
                    f"the zone {found['name']} belongs to another client's DNS service: "
                    f"{name} is not written there"
                )
        return name, found

    @staticmethod
    def _challenge_name(domain):
        text = (domain or "").strip().lower().rstrip(".").removeprefix("*.")
        try:
            return "_acme-challenge." + host_name(text)
        except ValueError:
            raise PermanentError(f"{domain!r} is not a domain name") from None

    @staticmethod
    def _challenge_value(value):
        if not isinstance(value, str) or not _CHALLENGE_VALUE.match(value):
            raise PermanentError("a dns-01 value is base64url text (RFC 8555 section 8.4)")
        return zone_template.quote_txt(value)

    def _txt_rrset(self, ctx, zone_id, name, setting=True):
        data = self._get(ctx, zone_id)
        if data is None:
            return None, []
        if setting and self.suspended(data):
            raise PermanentError(f"the zone {data['name']} is suspended: it does not answer")
        for s in data.get("rrsets") or []:
            if s["name"].lower() == name and s["type"] == "TXT":
                return data, [r["content"] for r in s.get("records") or []]
        return data, []

    def set_challenge(self, ctx, domain, value):
        """dns-01 (RFC 8555 8.4): publish ``value`` as a TXT record of
        ``_acme-challenge.<domain>`` (a leading ``*.`` is dropped: a wildcard is validated
        at its base name) in the PowerDNS zone that contains that name.

        ``ctx`` is the calling operation's context (the acme module's): every API call is
        logged in its attempt log, the API key masked. ``domain`` is a domain name in
        A-labels, ``value`` the base64url digest of the key authorization. Other values of
        the same name are kept (a certificate for ``example.com`` and ``*.example.com``
        needs two at once); setting a value twice is a no-op. TTL 60 s. The API flushes
        PowerDNS's caches for the zone, so the record is served at once.

        Allowed only in a zone of this Provisor's DNS services (account
        ``<owner tag>:service-<id>``) and, when ``ctx.client`` is set, one of that client's
        services: a client cannot validate someone else's domain. Raises
        ``PermanentError`` (no zone contains the name, someone else's zone, a suspended
        zone, a refusal) or ``TemporaryError`` (PowerDNS down, 5xx). Returns the zone's
        name (``example.com.``)."""
        content = self._challenge_value(value)
        name, found = self._challenge_zone(ctx, domain)
        data, values = self._txt_rrset(ctx, found["id"], name)
        if data is None:
            raise TemporaryError(f"the zone {found['name']} vanished while being changed")
        if content in values:
            ctx.log(f"{name} TXT already holds this value")
            return found["name"]
        rrset = {
            "name": name,
            "type": "TXT",
            "ttl": CHALLENGE_TTL,
            "changetype": "REPLACE",
            "records": [{"content": c, "disabled": False} for c in [*values, content]],
        }
        self._patch(ctx, found["id"], [rrset])
        ctx.log(f"{name} TXT set in {found['name']} ({len(values) + 1} value(s))")
        return found["name"]

    def clear_challenge(self, ctx, domain, value):
        """Remove what :meth:`set_challenge` published: the TXT value ``value`` of
        ``_acme-challenge.<domain>`` (the rrset goes when it was the last value). Idempotent:
        a value, rrset or zone that is gone already is fine, and a zone that is not one of
        this Provisor's (or this client's) is never changed (``PermanentError``). Same
        ``ctx``, errors and logging as :meth:`set_challenge`; returns the zone's name."""
        content = self._challenge_value(value)
        name, found = self._challenge_zone(ctx, domain)
        data, values = self._txt_rrset(ctx, found["id"], name, setting=False)
        if content not in values:
            ctx.log(f"{name} TXT does not hold this value: nothing to clear")
            return found["name"]
        left = [c for c in values if c != content]
        rrset = {"name": name, "type": "TXT", "changetype": "DELETE"}
        if left:
            rrset = {
                "name": name,
                "type": "TXT",
                "ttl": CHALLENGE_TTL,
                "changetype": "REPLACE",
                "records": [{"content": c, "disabled": False} for c in left],
            }
        self._patch(ctx, found["id"], [rrset])
        ctx.log(f"{name} TXT value removed ({len(left)} left)")
        return found["name"]
