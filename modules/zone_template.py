"""Record templates of the ``powerdns`` module: the records every zone of a tariff gets.

A template is plain text, one record a line (blank lines and lines starting with ``#`` or
``;`` are ignored)::

    <name> [<ttl>] [IN] <TYPE> <data>

    @       A      {ip}
    @       AAAA   {ipv6}
    www     CNAME  @
    @       MX     10 mail.{domain}
    @  300  TXT    "v=spf1 mx -all"
    _sip._tcp SRV  10 5 5060 sip.{domain}
    @       CAA    0 issue "letsencrypt.org"

``name`` is relative to the zone: ``@`` is the zone itself, ``www`` is ``www.<domain>``,
``*`` (first label only) a wildcard; letters, digits, ``-`` and ``_``, no final dot.
``ttl`` (seconds) is optional: the module's default TTL otherwise. Types: A, AAAA, CNAME,
MX, TXT, SRV, CAA and NS (below the zone only: the zone's own NS records are the module's
name servers). A host name in the data is ``@`` (the zone), a single label (``www``: a name
in the zone) or a full name with dots (``mail.{domain}``, ``mx.provider.net``; the final
dot is optional). TXT text may be quoted or not; Provisor quotes and escapes it (and splits
it into 255-character strings). CAA is ``<flags> <tag> <value>``.

Placeholders, in the data only: ``{domain}`` (the order's domain, e.g. ``example.com``),
``{ip}`` and ``{ipv6}`` (the item settings of the tariff). Every value is validated before it
is put in (a domain name in A-labels, IP addresses), and every record's data is parsed and
written back in canonical form: nothing from a template or an order reaches the server
unchecked.
"""

import ipaddress
import re
from dataclasses import dataclass

TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS")
PLACEHOLDERS = {
    "domain": "the zone's domain name (the order's domain)",
    "ip": "the IPv4 address of the tariff's item (ip)",
    "ipv6": "the IPv6 address of the tariff's item (ipv6)",
}
MAX_TTL = 2_147_483_647
TXT_CHUNK = 255

_LINE = re.compile(r"^(\S+)\s+(?:(\d+)\s+)?(?:IN\s+)?([A-Za-z0-9]+)(?:\s+(.*?))?\s*$", re.I)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_CAA_TAG = re.compile(r"^[a-z0-9]{1,15}$")


class TemplateError(ValueError):
    """What is wrong with a template, naming the line."""

    def __init__(self, message, number=None, line=None):
        self.message = message
        self.number = number
        self.line = line
        where = f"Line {number} ({line.strip()}): " if number is not None else ""
        super().__init__(where + message)


@dataclass(frozen=True)
class Record:
    name: str  # absolute, with the final dot: "www.example.com."
    type: str
    content: str  # as PowerDNS wants it: "example.com.", "10 mail.example.com.", '"text"'
    ttl: int | None = None  # None: the module's default TTL


def placeholders(text):
    """The placeholder names a template uses."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(text or "")}


def parse(text, values):
    """The template's records for one zone, or :class:`TemplateError`.

    ``values``: ``domain`` (the zone's name, validated by the caller) and the item's
    ``ip`` / ``ipv6`` (may be empty: then a line using them is an error).
    """
    domain = values["domain"].rstrip(".").lower()
    zone = domain + "."
    records = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        try:
            records.append(_parse_line(stripped, zone, values))
        except TemplateError as exc:
            raise TemplateError(exc.message, number, stripped) from None
    _check_sets(records, zone)
    return _unique(records)


def _parse_line(line, zone, values):
    found = _LINE.match(line)
    if found is None:
        raise TemplateError("expected <name> [<ttl>] <TYPE> <data>, e.g. www CNAME @")
    name_text, ttl_text, rtype, data = found.groups()
    rtype = rtype.upper()
    if rtype not in TYPES:
        raise TemplateError(f"unknown record type {rtype}; use one of {', '.join(TYPES)}")
    if not data:
        raise TemplateError(f"{rtype} needs data after the type")
    name = _name(name_text, zone)
    ttl = None
    if ttl_text is not None:
        ttl = int(ttl_text)
        if not 1 <= ttl <= MAX_TTL:
            raise TemplateError(f"TTL {ttl_text} must be from 1 to {MAX_TTL} seconds")
    content = _CONTENT[rtype](_fill(data, values), zone)
    if name == zone and rtype in ("CNAME", "NS"):
        raise TemplateError(
            "the zone itself (@) cannot have a CNAME"
            if rtype == "CNAME"
            else "the zone's own NS records are the module's name servers; NS only below @"
        )
    return Record(name, rtype, content, ttl)


def _name(text, zone):
    if "{" in text:
        raise TemplateError("placeholders go in the data only; names are relative (www, @)")
    if text == "@":
        return zone
    if text.endswith("."):
        raise TemplateError(
            f"name {text!r}: names are relative to the zone (www, mail, _dmarc; @ for the "
            "zone itself): leave out the domain and the final dot"
        )
    labels = text.lower().split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0:
            continue
        if not _LABEL.match(label):
            raise TemplateError(
                f"name {text!r}: labels are letters, digits, - and _ (a * only as the first)"
            )
    name = ".".join(labels) + "." + zone
    if len(name) > 254:
        raise TemplateError(f"name {text!r} is too long with the domain")
    return name


def _fill(data, values):
    def value(match):
        key = match.group(1)
        if key not in PLACEHOLDERS:
            known = ", ".join("{" + k + "}" for k in PLACEHOLDERS)
            raise TemplateError(f"unknown placeholder {{{key}}}; known: {known}")
        got = values.get(key)
        if got in (None, ""):
            raise TemplateError(f"uses {{{key}}}, but {PLACEHOLDERS[key]} is empty")
        return str(got)

    filled = _PLACEHOLDER.sub(value, data)
    if "{" in filled or "}" in filled:
        raise TemplateError("a { or } that is not a placeholder such as {domain}")
    return filled


def _host(text, zone):
    """A host name in the data as an absolute name with the final dot."""
    text = text.strip().lower()
    if text == "@":
        return zone
    if not text or " " in text:
        raise TemplateError(f"{text!r} is not a host name")
    relative = "." not in text
    labels = text.rstrip(".").split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise TemplateError(f"{text!r} is not a host name (letters, digits, - and _)")
    name = (text + "." + zone) if relative else text.rstrip(".") + "."
    if len(name) > 254:
        raise TemplateError(f"host name {text!r} is too long")
    return name


def _number(text, what, top=65535):
    if not text.isdigit() or int(text) > top:
        raise TemplateError(f"{what} must be a whole number from 0 to {top}, got {text!r}")
    return int(text)


def _words(data, count, shape):
    words = data.split()
    if len(words) != count:
        raise TemplateError(f"expected {shape}")
    return words


def _a(data, zone):
    try:
        return str(ipaddress.IPv4Address(data.strip()))
    except ValueError:
        raise TemplateError(f"{data.strip()!r} is not an IPv4 address") from None


def _aaaa(data, zone):
    try:
        return ipaddress.IPv6Address(data.strip()).compressed
    except ValueError:
        raise TemplateError(f"{data.strip()!r} is not an IPv6 address") from None


def _single_host(data, zone):
    (host,) = _words(data, 1, "one host name, e.g. @ or www.example.net")
    return _host(host, zone)


def _mx(data, zone):
    priority, host = _words(data, 2, "<priority> <host>, e.g. 10 mail.{domain}")
    return f"{_number(priority, 'MX priority')} {_host(host, zone)}"


def _srv(data, zone):
    priority, weight, port, host = _words(
        data, 4, "<priority> <weight> <port> <host>, e.g. 10 5 5060 sip.{domain}"
    )
    numbers = [_number(v, what) for v, what in ((priority, "priority"), (weight, "weight"))]
    numbers.append(_number(port, "port"))
    return " ".join(str(n) for n in numbers) + " " + _host(host, zone)


def _plain(text, what):
    if not all(32 <= ord(c) < 127 for c in text):
        raise TemplateError(f"{what} must be printable ASCII")
    return text


def _unquote(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def quote_txt(text):
    """TXT data as PowerDNS wants it: quoted strings of at most 255 characters."""
    _plain(text, "TXT text")
    chunks = [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def _txt(data, zone):
    text = _unquote(data)
    if len(text) > 4000:
        raise TemplateError("TXT text is longer than 4000 characters")
    return quote_txt(text)


def _caa(data, zone):
    words = data.split(None, 2)
    if len(words) != 3:
        raise TemplateError('expected <flags> <tag> <value>, e.g. 0 issue "letsencrypt.org"')
    flags, tag, value = words
    tag = tag.lower()
    if not _CAA_TAG.match(tag):
        raise TemplateError(f"CAA tag {tag!r}: letters and digits, e.g. issue, issuewild, iodef")
    value = _plain(_unquote(value), "CAA value")
    if '"' in value or "\\" in value:
        raise TemplateError("a CAA value cannot contain quotes or backslashes")
    return f'{_number(flags, "CAA flags", 255)} {tag} "{value}"'


_CONTENT = {
    "A": _a,
    "AAAA": _aaaa,
    "CNAME": _single_host,
    "NS": _single_host,
    "MX": _mx,
    "TXT": _txt,
    "SRV": _srv,
    "CAA": _caa,
}


def _relative(name, zone):
    return "@" if name == zone else name.removesuffix("." + zone)


def _check_sets(records, zone):
    """A CNAME stands alone at its name; one name and type share one TTL."""
    by_name = {}
    ttls = {}
    for r in records:
        by_name.setdefault(r.name, set()).add(r.type)
        if r.ttl is not None:
            seen = ttls.setdefault((r.name, r.type), r.ttl)
            if seen != r.ttl:
                raise TemplateError(
                    f"{_relative(r.name, zone)} {r.type} has TTLs {seen} and {r.ttl}: the "
                    "records of one name and type share one TTL"
                )
    for name, types in by_name.items():
        if "CNAME" in types and len(types) > 1:
            others = ", ".join(sorted(types - {"CNAME"}))
            raise TemplateError(
                f"{_relative(name, zone)} has a CNAME and {others}: a CNAME must stand alone"
            )
        cnames = {r.content for r in records if r.name == name and r.type == "CNAME"}
        if len(cnames) > 1:
            raise TemplateError(f"{_relative(name, zone)} has {len(cnames)} CNAMEs: at most one")


def _unique(records):
    seen, kept = set(), []
    for r in records:
        key = (r.name, r.type, r.content)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept


def rrsets(records, default_ttl):
    """The records grouped as PowerDNS rrsets (name, type, ttl, records), in order."""
    grouped = {}
    for r in records:
        entry = grouped.setdefault(
            (r.name, r.type), {"name": r.name, "type": r.type, "ttl": None, "records": []}
        )
        if r.ttl is not None:
            entry["ttl"] = r.ttl
        entry["records"].append({"content": r.content, "disabled": False})
    for entry in grouped.values():
        if entry["ttl"] is None:
            entry["ttl"] = default_ttl
    return list(grouped.values())
