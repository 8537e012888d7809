"""Order fields: what a client fills in when ordering a product type.

A product type declares them (``ProductType.order_fields``): a domain name for domain, DNS,
certificate and hosting products, a hostname and an OS image for a VPS, a database name
prefix... Each has a ``kind`` that says how it is checked:

``domain``    a registrable domain name (``example.com``; IDN allowed, stored as A-labels)
``domains``   a list of domain names, each checked like ``domain`` (the first one is the
              main one, e.g. a certificate's common name), at most ``max_count`` of them
              (default 10): a JSON list, or text separated by commas, spaces or new lines
``hostname``  a host name: one or more labels of letters, digits and hyphens
``slug``      a name for a remote object: a lowercase letter, then a-z, 0-9 and _
``choice``    one of ``options``
``text``      one line of text of at most ``max_length`` characters (default 200)

The values go to the service's ``params`` and from there to the module (``ctx.params``).
"""

import re

from app.services.errors import ValidationError

KINDS = ("domain", "domains", "hostname", "slug", "choice", "text")
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SLUG = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_MAX = {"domain": 253, "hostname": 253, "slug": 32, "choice": 200, "text": 200}
DEFAULT_MAX_COUNT = 10  # domains: how many names at most, unless the field says
MAX_COUNT = 100
_SEPARATORS = re.compile(r"[\s,]+")


def _labels(value):
    return value.rstrip(".").split(".")


def clean_domain(value):
    """A domain name in lowercase A-labels, or ValueError with the reason."""
    text = value.strip().lower().rstrip(".")
    if not text:
        raise ValueError("Enter a domain name such as example.com.")
    try:
        ascii_text = text.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("Not a valid domain name.") from None
    labels = _labels(ascii_text)
    if len(ascii_text) > 253 or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        raise ValueError("Not a valid domain name (such as example.com).")
    if labels[-1].isdigit():
        raise ValueError("Not a valid domain name (such as example.com).")
    return ascii_text


def clean_hostname(value):
    text = value.strip().lower().rstrip(".")
    labels = _labels(text)
    if not text or len(text) > 253 or not all(_LABEL.match(x) for x in labels):
        raise ValueError("Letters, digits and hyphens, in labels separated by dots.")
    return text


def clean_domains(raw, max_count=DEFAULT_MAX_COUNT):
    """A list of distinct domain names (A-labels, in the given order) from a list or from
    text separated by commas, spaces or new lines; ValueError with the reason."""
    if isinstance(raw, str):
        if any(ord(c) < 32 and c not in "\t\n\r" for c in raw):
            raise ValueError("Domain names only, separated by commas, spaces or new lines.")
        if len(raw) > max_count * 254:
            raise ValueError(f"At most {max_count} domain names.")
        names = [n for n in _SEPARATORS.split(raw) if n]
    elif isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        names = [n.strip() for n in raw if n.strip()]
    else:
        raise ValueError("A list of domain names.")
    if not names:
        raise ValueError("Enter at least one domain name such as example.com.")
    if len(names) > max_count:
        raise ValueError(f"At most {max_count} domain names.")
    cleaned = []
    for name in names:
        if len(name) > 253 or any(ord(c) < 32 for c in name):
            raise ValueError(f"{name[:60]!r} is not a valid domain name (such as example.com).")
        try:
            value = clean_domain(name)
        except ValueError:
            raise ValueError(
                f"{name!r} is not a valid domain name (such as example.com)."
            ) from None
        if value in cleaned:
            raise ValueError(f"{value} is listed twice.")
        cleaned.append(value)
    return cleaned


def clean_value(spec, raw):
    """The cleaned value of one order field, or ValueError with the field's message."""
    kind = spec.get("kind", "text")
    if kind == "domains":
        count = spec.get("max_count")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            count = DEFAULT_MAX_COUNT  # a field declared through the API without a good one
        return clean_domains(raw, count)
    if not isinstance(raw, str):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError("Must be text.")
        raw = str(raw)
    if any(ord(c) < 32 for c in raw):
        raise ValueError("Must be one line of text.")
    limit = spec.get("max_length") or DEFAULT_MAX.get(kind, 200)
    if len(raw.strip()) > limit:
        raise ValueError(f"At most {limit} characters.")
    if kind == "domain":
        return clean_domain(raw)
    if kind == "hostname":
        return clean_hostname(raw)
    if kind == "slug":
        text = raw.strip().lower()
        if not _SLUG.match(text):
            raise ValueError("A lowercase letter, then letters, digits and _ only.")
        return text
    if kind == "choice":
        options = [str(o) for o in spec.get("options") or []]
        if raw.strip() not in options:
            raise ValueError("One of: " + ", ".join(options))
        return raw.strip()
    return raw.strip()


def clean(fields, params):
    """``params`` with every declared order field checked and cleaned.

    Errors are keyed ``params.<name>``; parameters the product type does not declare pass
    through unchanged (a module or an http endpoint may use its own).
    """
    cleaned = dict(params)
    errors = {}
    for spec in fields or []:
        name = spec["name"]
        raw = params.get(name)
        if raw is None or (isinstance(raw, str) and not raw.strip()) or raw == []:
            cleaned.pop(name, None)
            if spec.get("required"):
                errors[f"params.{name}"] = f"{spec.get('label') or name} is required."
            continue
        try:
            cleaned[name] = clean_value(spec, raw)
        except ValueError as exc:
            errors[f"params.{name}"] = str(exc)
    if errors:
        raise ValidationError(errors)
    return cleaned


def parse_lines(text, make):
    """Field declarations from text, one a line ``name | Label | ...``: the lines of the
    product type form (detail fields and order fields alike).

    ``make(name, label, parts)`` turns one line into a field (``parts``: everything after
    the label) or raises ValueError with what is wrong. Returns ``(fields, problems)``.
    """
    fields, problems = [], []
    for number, line in enumerate(str(text or "").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        name = parts[0]
        if not FIELD_NAME.match(name):
            problems.append(f"line {number}: {name!r} is not a field name (a-z, 0-9, _)")
            continue
        label = parts[1] if len(parts) > 1 and parts[1] else name.replace("_", " ").title()
        try:
            fields.append(make(name, label, parts[2:]))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    names = [f["name"] for f in fields]
    if len(names) != len(set(names)):
        problems.append("a field name appears twice")
    return fields, problems


def _order_field(name, label, parts):
    kind, _, extra = (parts[0] if parts and parts[0] else "text").partition(":")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    spec = {"name": name, "label": label, "kind": kind}
    spec["required"] = "required" in {p.lower() for p in parts[1:]}
    if kind == "choice":
        options = [o.strip() for o in extra.split(",") if o.strip()]
        if not options:
            raise ValueError("a choice needs options (choice:a,b,c)")
        spec["options"] = options
    elif kind == "domains":
        if extra and (not extra.isdigit() or not 1 <= int(extra) <= MAX_COUNT):
            raise ValueError(f"the number of names must be a number from 1 to {MAX_COUNT}")
        spec["max_count"] = int(extra) if extra else DEFAULT_MAX_COUNT
    elif extra:
        if not extra.isdigit() or not 1 <= int(extra) <= 2000:
            raise ValueError("the length must be a number from 1 to 2000")
        spec["max_length"] = int(extra)
    return spec


def parse(text):
    """Order fields from lines ``name | Label | kind[:options or length] | required``,
    e.g. ``os_image | Operating system | choice:debian-12,ubuntu-24.04`` or
    ``prefix | Database prefix | slug:16`` (``domains:5``: at most 5 names). Returns
    ``(fields, problems)``."""
    return parse_lines(text, _order_field)


def format_lines(fields):
    lines = []
    for f in fields or []:
        kind = f.get("kind", "text")
        if kind == "choice":
            kind += ":" + ",".join(f.get("options") or [])
        elif kind == "domains":
            kind += f":{f.get('max_count') or DEFAULT_MAX_COUNT}"
        elif f.get("max_length"):
            kind += f":{f['max_length']}"
        parts = [f["name"], f.get("label", ""), kind] + (["required"] if f.get("required") else [])
        lines.append(" | ".join(parts))
    return "\n".join(lines)
