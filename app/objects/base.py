"""What every described object shares: input validation with Provisor's messages, output
building from rows, and the JSON Schema generator of the OpenAPI document."""

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from app.services.errors import ValidationError

REQUIRED = "This field is required."
MISSING_KIND = "provisor_missing"
INVALID_KIND = "provisor_invalid"


def invalid(message):
    """The error a field type raises: ``message`` is shown to people as it is."""
    return PydanticCustomError(INVALID_KIND, message)


def missing(message=REQUIRED):
    """The error of a value that counts as not given (a blank text, say)."""
    return PydanticCustomError(MISSING_KIND, message)


def blank(value):
    """None and empty or whitespace-only text count as "not given"."""
    return value is None or (isinstance(value, str) and not value.strip())


class Missing:
    """Field metadata: the message when the field is required and not given (default
    "This field is required."); a callable is called for it (a message listing choices)."""

    def __init__(self, message):
        self.message = message

    def text(self):
        return self.message() if callable(self.message) else self.message


class NotBlank:
    """Field metadata: a blank value is an error for this optional field instead of "not
    given" (a rename that sends an empty name must not keep the old one silently)."""


def _marker(field, kind):
    return next((m for m in reversed(field.metadata) if isinstance(m, kind)), None)


class Input(BaseModel):
    """A body a service takes. Unknown keys are ignored; a blank value (None, "" or
    spaces) counts as not given, so the field's default applies (or "This field is
    required.")."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def _given(cls, data):
        data = dict(data or {})
        keep = {name for name, field in cls.model_fields.items() if _marker(field, NotBlank)}
        return {k: v for k, v in data.items() if k in keep or not blank(v)}

    @classmethod
    def check(cls, data):
        """``(values, errors)``: the cleaned value of every field (None for a field in
        error) and a message per invalid field; changes nothing, raises nothing."""
        data = cls._given(data)
        try:
            return cls.model_validate(data).model_dump(), {}
        except PydanticValidationError as exc:
            errors = cls._messages(exc)
        values = {}
        for name, field in cls.model_fields.items():
            if name in errors:
                values[name] = None
            elif name in data:
                checked = cls.__pydantic_validator__.validate_assignment(
                    cls.model_construct(), name, data[name]
                )
                values[name] = getattr(checked, name)
            else:
                values[name] = (
                    None
                    if field.is_required()
                    else field.get_default(call_default_factory=True, validated_data={})
                )
        return values, errors

    @classmethod
    def parse(cls, data):
        """The cleaned values, or :class:`ValidationError` with a message per field."""
        values, errors = cls.check(data)
        if errors:
            raise ValidationError(errors)
        return values

    @classmethod
    def _messages(cls, exc):
        """``{field: message}``; for a field with several errors, the first of ours (an
        optional field tries its type and null: the type's message is the one to show)."""
        errors, ours = {}, set()
        for error in exc.errors(include_url=False):
            key = str(error["loc"][0]) if error["loc"] else "body"
            message, mine = cls._message(key, error)
            if key not in errors or (mine and key not in ours):
                errors[key] = message
                if mine:
                    ours.add(key)
        return errors

    @classmethod
    def _message(cls, key, error):
        kind = error["type"]
        if kind in ("missing", MISSING_KIND):
            field = cls.model_fields.get(key)
            marker = _marker(field, Missing) if field is not None else None
            if marker is not None:
                return marker.text(), True
            return (REQUIRED if kind == "missing" else error["msg"]), True
        if kind == INVALID_KIND:
            return error["msg"], True
        return error["msg"].rstrip(".") + ".", False  # a check of pydantic's own


class _WithExtra:
    """A row seen with some attributes added (``module_ids`` of a tariff, say)."""

    def __init__(self, obj, extra):
        self._obj, self._extra = obj, extra

    def __getattr__(self, name):
        if name in self._extra:
            return self._extra[name]
        return getattr(self._obj, name)


class Output(BaseModel):
    """An object the API answers with, built from a row (or a dict) by :meth:`of`."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, obj, **extra):
        """The JSON-ready dict of ``obj``; ``extra`` gives (or overrides) attributes."""
        if isinstance(obj, dict):
            source = {**obj, **extra}
        else:
            source = _WithExtra(obj, extra) if extra else obj
        return cls.model_validate(source).model_dump()


class OpenApiSchema(GenerateJsonSchema):
    """JSON Schema 2020-12 as OpenAPI 3.1 takes it; no generated title on every field."""

    def field_title_should_be_set(self, schema):
        return False
