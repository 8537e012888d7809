"""The field types of Provisor's objects.

Each input type is an ``Annotated`` type built by one call (``Text(100)``,
``WholeNumber(1, 604800)``): its validator gives Provisor's messages ("This field is
required.", "At most 100 characters.", "Must be a whole number.", ...) and takes what the
pages send too (numbers as text, checkboxes); its constraints describe it in JSON Schema.
Output types turn what the database gives into JSON values ("10.00", "...Z").
"""

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from app.models import MAX_ID, parse_id
from app.objects.base import Missing, invalid, missing

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def whole_number(value):
    """An int from user input (int, integral float, or text of ASCII digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None  # inf and nan are not integers
    if isinstance(value, str):
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
            return None
        return sign * int(digits)
    return value if isinstance(value, int) else None


# --- inputs -------------------------------------------------------------------------------


def Text(
    max_length=200,
    *,
    not_text="Must be text.",
    strip=True,
    pattern=None,
    pattern_message=None,
    transform=None,
    schema=None,
):
    """Text of 1..``max_length`` characters (stripped); ``pattern`` with its message."""
    compiled = re.compile(pattern) if pattern else None

    def check(value):
        if value is None:
            raise missing()
        if not isinstance(value, str):
            raise invalid(not_text)
        text = value.strip() if strip else value
        if not text.strip():
            raise missing()
        if len(text) > max_length:
            raise invalid(f"At most {max_length} characters.")
        if compiled is not None and not compiled.search(text):
            raise invalid(pattern_message)
        return transform(text) if transform else text

    return Annotated[
        str,
        Field(min_length=1, max_length=max_length, pattern=pattern, json_schema_extra=schema),
        BeforeValidator(check),
    ]


def FreeText(not_text="Must be text.", max_length=None):
    """Any text, kept as it is (a comment, a description); empty when not given;
    ``max_length`` characters at most when given."""

    def check(value):
        if not isinstance(value, str):
            raise invalid(not_text)
        if max_length is not None and len(value) > max_length:
            raise invalid(f"At most {max_length:,} characters.")
        return value

    constraints = [Field(max_length=max_length)] if max_length is not None else []
    return Annotated[str, *constraints, BeforeValidator(check)]


MAX_DETAIL_FIELDS = 100
MAX_DETAIL_NAME = 100
MAX_DETAIL_VALUE = 2000


def DetailValues(message="Must be an object of detail fields."):
    """Detail fields by name: at most 100, each name 1..100 characters, each value text of
    at most 2,000 characters (a number is taken as its text; null as not filled in)."""

    def check(value):
        if not isinstance(value, dict):
            raise invalid(message)
        if len(value) > MAX_DETAIL_FIELDS:
            raise invalid(f"At most {MAX_DETAIL_FIELDS} detail fields.")
        cleaned = {}
        for name, item in value.items():
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_DETAIL_NAME:
                raise invalid(f"Each name must be 1 to {MAX_DETAIL_NAME} characters.")
            if item is None:
                item = ""
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                raise invalid(f"{name[:40]}: must be text.")
            if len(item) > MAX_DETAIL_VALUE:
                raise invalid(f"{name[:40]}: at most {MAX_DETAIL_VALUE:,} characters.")
            cleaned[name] = item
        return cleaned

    value_schema = Annotated[str, Field(max_length=MAX_DETAIL_VALUE)]
    return Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=MAX_DETAIL_NAME)], value_schema],
        Field(max_length=MAX_DETAIL_FIELDS),
        BeforeValidator(check),
    ]


def EmailAddress(not_text="This field is required."):
    """An email address (stripped, lowercased, at most 200 characters)."""

    def check(value):
        if value is None:
            raise missing()
        if not isinstance(value, str):
            raise invalid(not_text)
        text = value.strip().lower()
        if not text:
            raise missing()
        if not EMAIL.match(text) or len(text) > 200:
            raise invalid("Must be an email address.")
        return text

    return Annotated[
        str,
        Field(max_length=200, pattern=EMAIL.pattern, json_schema_extra={"format": "email"}),
        BeforeValidator(check),
    ]


def _password(value):
    if not isinstance(value, str) or len(value) < 8:
        raise invalid("At least 8 characters.")
    return value


Password = Annotated[
    str,
    Field(min_length=8, json_schema_extra={"writeOnly": True}),
    BeforeValidator(_password),
    Missing("At least 8 characters."),
]


def WholeNumber(minimum, maximum):
    """A whole number from ``minimum`` to ``maximum`` (also as text: "300")."""

    def check(value):
        number = whole_number(value)
        if number is None:
            raise invalid("Must be a whole number.")
        if not minimum <= number <= maximum:
            raise invalid(f"Must be between {minimum} and {maximum}.")
        return number

    return Annotated[int, Field(ge=minimum, le=maximum), BeforeValidator(check)]


def Ref(message, maximum=MAX_ID):
    """The id of an existing row; ``message`` when it is not an id (the service says the
    same when no such row exists). ``maximum``: a smaller bound than a database id's."""

    def check(value):
        number = parse_id(value)
        if number is None or number > maximum:
            raise invalid(message)
        return number

    return Annotated[int, Field(ge=1, le=maximum), BeforeValidator(check), Missing(message)]


def IdList(not_a_list="Must be a list of ids.", bad_item="Must be a list of ids."):
    """A list of ids (one id alone is a list of one), without repeats; ``bad_item`` may
    show the wrong item with ``{!r}``."""

    def check(value):
        if isinstance(value, (str, int)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise invalid(not_a_list)
        ids = []
        for raw in value:
            number = parse_id(raw)
            if number is None:
                raise invalid(bad_item.format(raw))
            ids.append(number)
        return sorted(set(ids))

    return Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_ID)]],
        Field(json_schema_extra={"uniqueItems": True}),
        BeforeValidator(check),
    ]


def _flag(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


Flag = Annotated[bool, BeforeValidator(_flag)]
"""A checkbox: true, or "1"/"true"/"yes"/"on"; anything else is false."""


def StrictFlag(message="Must be true or false."):
    def check(value):
        if not isinstance(value, bool):
            raise invalid(message)
        return value

    return Annotated[bool, BeforeValidator(check)]


def Choice(values, message=None):
    """One of ``values`` (a declaration such as ``Tariff.PERIODS``)."""
    values = tuple(values)
    message = message or "One of: " + ", ".join(values)

    def check(value):
        if not isinstance(value, str) or value not in values:
            raise invalid(message)
        return value

    return Annotated[Literal[values], BeforeValidator(check)]


DUE_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")


def DueDate(message="A date (2026-05-31) or a UTC time (2026-05-31T17:00:00Z)."):
    """When something should be done: a day (due at its end, 23:59:59 UTC) or a UTC time
    (``Z`` or no offset); a naive UTC datetime, as the database stores them."""

    def check(value):
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=None)
        if not isinstance(value, str) or len(value) > 40:
            raise invalid(message)
        text = value.strip().removesuffix("Z").removesuffix("+00:00")
        try:
            day = dt.datetime.strptime(text, "%Y-%m-%d")
        except ValueError:
            pass
        else:
            return day.replace(hour=23, minute=59, second=59)
        for pattern in DUE_FORMATS:
            try:
                return dt.datetime.strptime(text, pattern)
            except ValueError:
                continue
        raise invalid(message)

    return Annotated[
        dt.datetime,
        BeforeValidator(check),
        WithJsonSchema({"type": "string", "examples": ["2026-05-31", "2026-05-31T17:00:00Z"]}),
    ]


def JsonObject(message="Must be an object."):
    def check(value):
        if not isinstance(value, dict):
            raise invalid(message)
        return value

    return Annotated[dict[str, Any], BeforeValidator(check)]


def Amount(message, maximum=None, places=None, description=None, places_message=None):
    """A non-negative amount, exact (text "9.99" or a number); ``places`` rounds it, or,
    with ``places_message``, refuses more decimal places than that ("0.001" for cents;
    "9.990" is 9.99)."""

    def check(value):
        try:
            if isinstance(value, bool):
                raise InvalidOperation
            amount = Decimal(str(value).strip())
            if not amount.is_finite() or amount < 0:
                raise InvalidOperation
            if maximum is not None and amount > maximum:
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            raise invalid(message) from None
        if places is None:
            return amount
        rounded = amount.quantize(Decimal(10) ** -places)
        if places_message and rounded != amount:
            raise invalid(places_message)
        return rounded

    digits = len(str(int(maximum))) if maximum is not None else None
    number = {"type": "number", "minimum": 0}
    if maximum is not None:
        number["maximum"] = int(maximum)
    schema = {
        "anyOf": [
            {
                "type": "string",
                "pattern": r"^\d%s(\.\d+)?$" % (f"{{1,{digits}}}" if digits else "+"),
            },
            number,
        ]
    }
    if description:
        schema["description"] = description
    return Annotated[Decimal, BeforeValidator(check), WithJsonSchema(schema)]


# --- outputs ------------------------------------------------------------------------------


def money(value):
    """Amounts always with two decimals ("10.00"), whatever the database gives back."""
    return f"{Decimal(value):.2f}"


def timestamp(value):
    """A stored (naive UTC) datetime as JSON: "2025-01-31T12:00:00Z"."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat(timespec="seconds") + "Z"


Id = Annotated[int, Field(ge=1)]
Money = Annotated[str, Field(pattern=r"^\d+\.\d{2}$", examples=["9.99"]), BeforeValidator(money)]
Timestamp = Annotated[
    Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None,
    BeforeValidator(timestamp),
    Field(description="UTC, e.g. 2025-01-31T12:00:00Z"),
]
Object = Annotated[dict[str, Any], BeforeValidator(lambda value: value or {})]
"""A JSON object stored on a row (details, params); {} when the row holds none."""


def OneOf(values, description=None):
    """Text that is one of ``values`` (a model's declaration). An answer is not refused
    for a value the declaration does not have yet; the schema lists the declared ones."""
    extra = {"enum": list(values)}
    return Annotated[str, Field(description=description, json_schema_extra=extra)]
