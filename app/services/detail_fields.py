"""Detail fields: what a module or a person fills in when a service is set up.

A product type declares them (``ProductType.detail_fields``): a list of ``{"name",
"label", "kind", "required", "secret", "max_length"}``. The ``kind`` says how a value is
checked, wherever details are written (a task closed on the staff pages, the API or by a
peer of the tasks proxy, a module's result, staff editing a service):

``ip``        an IPv4 or IPv6 address (stored in its short form)
``url``       an http:// or https:// address with a host
``domain``    a domain name (``example.com``; IDN allowed, stored as A-labels)
``hostname``  a host name: labels of letters, digits and hyphens (an IPv4 address passes)
``port``      a TCP/UDP port, 1 to 65535
``text``      one line of text of at most ``max_length`` characters (default 200)

A field without a kind (one declared before kinds existed) is ``text``. ``secret``
fields (passwords) are masked in pages and logs.

On the product type form a field is one line ``name | Label | kind[:length] | required |
secret``; the kind may be left out (``password | Password | required | secret``).
"""

import ipaddress
from urllib.parse import urlsplit

from app import guards
from app.services import order_fields
from app.services.errors import ValidationError

KINDS = ("text", "ip", "url", "domain", "hostname", "port")
FLAGS = ("required", "secret")
DEFAULT_MAX = {"text": 200, "ip": 45, "url": 2000, "domain": 253, "hostname": 253, "port": 5}
MAX_LENGTH = 10000  # the most a text field may declare
MESSAGES = {
    "ip": "Not an IP address.",
    "url": "Not a web address (http:// or https://).",
    "domain": "Not a domain name (such as example.com).",
    "hostname": "Not a host name (letters, digits and hyphens, in labels separated by dots).",
    "port": "Not a port (a number from 1 to 65535).",
}


def kind_of(spec):
    kind = spec.get("kind") or "text"
    return kind if kind in KINDS else "text"


def limit_of(spec):
    kind = kind_of(spec)
    declared = spec.get("max_length")
    if kind == "text" and isinstance(declared, int) and not isinstance(declared, bool):
        return max(1, min(declared, MAX_LENGTH))
    return DEFAULT_MAX[kind]


def _check_kind(kind, text):
    if kind == "ip":
        try:
            return ipaddress.ip_address(text).compressed
        except ValueError:
            raise ValueError(MESSAGES["ip"]) from None
    if kind == "url":
        try:
            parts = urlsplit(text)
            port = parts.port  # a bad port raises here
        except ValueError:
            raise ValueError(MESSAGES["url"]) from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(MESSAGES["url"])
        if any(c.isspace() for c in text) or (port is not None and not 0 < port < 65536):
            raise ValueError(MESSAGES["url"])
        return text
    if kind == "domain":
        try:
            return order_fields.clean_domain(text)
        except ValueError:
            raise ValueError(MESSAGES["domain"]) from None
    if kind == "hostname":
        try:
            return order_fields.clean_hostname(text)
        except ValueError:
            raise ValueError(MESSAGES["hostname"]) from None
    if kind == "port":
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ValueError(MESSAGES["port"])
        return str(int(text))
    return text


def clean_value(spec, raw):
    """The cleaned value of one detail field (text), or ValueError with its message."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError("Must be text.")
    text = str(raw).strip()
    if guards.has_control_characters(text):
        raise ValueError("Must be one line of text.")
    kind, limit = kind_of(spec), limit_of(spec)
    if len(text) > limit:
        short = kind in ("ip", "port")  # "Not a port" says more than "At most 5 characters"
        raise ValueError(MESSAGES[kind] if short else f"At most {limit} characters.")
    return _check_kind(kind, text)


def blank(value):
    return value is None or (isinstance(value, str) and not value.strip())


def clean(declared, values, required=False, unknown="keep"):
    """``values`` with every declared field that has a value checked and cleaned.

    ``required``: the required fields must have a value (setting a service up).
    ``unknown``: what happens to names the product type does not declare: ``"keep"``
    (as text), ``"refuse"`` (an error each) or ``"drop"``. Errors are keyed by field name.
    """
    specs = {f["name"]: f for f in declared or []}
    errors, cleaned = {}, {}
    for name, raw in values.items():
        spec = specs.get(name)
        if spec is None:
            if unknown == "refuse":
                errors[name] = "Not a detail field of this product type."
            elif unknown == "keep" and not blank(raw):
                cleaned[str(name)] = str(raw).strip()
            continue
        if blank(raw):
            continue
        try:
            cleaned[name] = clean_value(spec, raw)
        except ValueError as exc:
            errors[name] = str(exc)
    if required:
        for name, spec in specs.items():
            if spec.get("required") and name not in cleaned and name not in errors:
                errors[name] = f"{spec.get('label') or name} is required."
    if errors:
        raise ValidationError(errors)
    return cleaned


def problems(declared, values):
    """``{name: message}`` for the declared fields whose value is not of their kind
    (a module's result: blank values and unknown names are not this check's business)."""
    try:
        clean(declared, values, unknown="drop")
    except ValidationError as exc:
        return exc.fields
    return {}


def normalized(field):
    """A declared field as stored (from a form line or an API body)."""
    spec = {
        "name": field["name"],
        "label": field.get("label") or field["name"],
        "kind": kind_of(field),
        "required": bool(field.get("required")),
        "secret": bool(field.get("secret")),
    }
    if spec["kind"] == "text" and field.get("max_length"):
        spec["max_length"] = limit_of(field)
    return spec


def _line(name, label, parts):
    spec = {"name": name, "label": label, "kind": "text"}
    kinds = []
    for part in parts:
        word = part.strip().lower()
        if not word:
            continue
        if word in FLAGS:
            spec[word] = True
            continue
        kind, _, extra = word.partition(":")
        if kind not in KINDS:
            raise ValueError(
                f"{part!r}: a kind ({', '.join(KINDS)}) or a flag (required, secret) was expected"
            )
        kinds.append(kind)
        spec["kind"] = kind
        if extra:
            if kind != "text":
                raise ValueError(f"only text takes a length (text:{extra})")
            if not extra.isdigit() or not 1 <= int(extra) <= MAX_LENGTH:
                raise ValueError(f"the length must be a number from 1 to {MAX_LENGTH}")
            spec["max_length"] = int(extra)
    if len(kinds) > 1:
        raise ValueError("one kind per field")
    return normalized(spec)


def parse(text):
    """Detail fields from lines ``name | Label | kind | required | secret`` (the kind and
    flags in any order; a line without a kind is text). Returns ``(fields, problems)``."""
    return order_fields.parse_lines(text, _line)


def format_lines(fields):
    lines = []
    for f in fields or []:
        kind = kind_of(f)
        if kind == "text" and f.get("max_length"):
            kind += f":{limit_of(f)}"
        flags = [flag for flag in FLAGS if f.get(flag)]
        lines.append(" | ".join([f["name"], f.get("label", ""), kind, *flags]))
    return "\n".join(lines)


def check_declared(fields):
    """Fields given as a JSON list (the API): ``(fields, error message or None)``."""
    out = []
    for f in fields:
        if not isinstance(f, dict) or not order_fields.FIELD_NAME.match(str(f.get("name", ""))):
            return None, "Each field needs a name (a-z, 0-9, _)."
        if f.get("kind", "text") not in KINDS:
            return None, f"kind must be one of {', '.join(KINDS)}"
        length = f.get("max_length")
        if length is not None and (
            isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_LENGTH
        ):
            return None, f"max_length must be a number from 1 to {MAX_LENGTH}"
        out.append(normalized(f))
    names = [f["name"] for f in out]
    if len(names) != len(set(names)):
        return None, "a field name appears twice"
    return out, None
