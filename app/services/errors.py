"""Errors the services layer raises; the web, API and CLI layers turn them into answers.

The JSON error envelope ``{"error": {"code", "message", "fields"}}`` is described once
here (:class:`Error`, built by :func:`envelope`): the API, the peer API and the pages'
JSON answers all use it, and the OpenAPI document's ``Error`` schema is generated from it.
"""

import re
from contextlib import contextmanager
from typing import Annotated

from peewee import IntegrityError
from pydantic import BaseModel, Field, WithJsonSchema


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Machine-readable: unauthorized, forbidden, not_found, conflict, "
        "validation_error, invalid_json, bad_signature, method_not_allowed, "
        "operation_in_progress (409: the service has an open operation; try again once it "
        "ends), ..."
    )
    message: str = Field(description="For people.")
    fields: dict[str, str] = Field(
        description="A message per invalid input field (keys such as `price`, `module_ids` "
        "or `config.failure_rate`); empty when the error is not about one field."
    )


class Error(BaseModel):
    """Every error: `{"error": {"code", "message", "fields"}}` with a 4xx status."""

    # described inline: the envelope reads as one object in the OpenAPI document
    error: Annotated[ErrorDetail, WithJsonSchema(ErrorDetail.model_json_schema())]


def envelope(code, message, fields=None):
    """The JSON error body (a dict)."""
    detail = ErrorDetail(code=code, message=message, fields=dict(fields or {}))
    return Error(error=detail).model_dump()


class ServiceError(Exception):
    status = 400
    code = "bad_request"
    retry_after = None  # seconds, sent as Retry-After (a 429 or a 503)

    def __init__(self, message, fields=None, code=None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        if code:
            self.code = code

    def as_dict(self):
        return envelope(self.code, self.message, self.fields)


class ValidationError(ServiceError):
    status = 422
    code = "validation_error"

    def __init__(self, fields, message=None):
        if message is None:
            message = "; ".join(f"{k}: {v}" for k, v in fields.items()) or "invalid input"
        super().__init__(message, fields)


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Busy(ServiceError):
    """Not now, certainly later (a row another request is changing): 503 with Retry-After."""

    status = 503
    code = "busy"
    retry_after = 5


class PermissionDenied(ServiceError):
    status = 403
    code = "forbidden"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class BadSignature(Unauthorized):
    """A signed request (webhook, module callback) whose signature does not check out."""

    code = "bad_signature"


# --- constraints the database enforces ------------------------------------------------------

CONCURRENT_CHANGE = "another change to the same data was made at the same moment; try again"
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)")
_POSTGRES_KEY = re.compile(r"Key \((.+?)\)=")


def violated_columns(exc):
    """The columns of the unique constraint ``exc`` (a peewee IntegrityError) is about, as a
    tuple of names (empty when it is another kind of constraint or cannot be told)."""
    original = getattr(exc, "orig", None) or exc  # the driver's own exception
    diag = getattr(original, "diag", None)
    if diag is not None:  # psycopg2
        if getattr(original, "pgcode", None) != "23505":  # unique_violation
            return ()
        match = _POSTGRES_KEY.search(getattr(diag, "message_detail", None) or "")
        return tuple(c.strip().strip('"') for c in match.group(1).split(",")) if match else ()
    match = _SQLITE_UNIQUE.search(str(original))
    if match is None:
        return ()
    return tuple(part.strip().rpartition(".")[2] for part in match.group(1).split(","))


def from_integrity_error(exc, messages=None):
    """The clear answer for a constraint the database refused.

    ``messages`` maps a column to the message of the input field of the same name (the
    message the service's own "exists?" check gives): a known unique constraint becomes a
    422 with that field, anything else a 409 ``conflict``.
    """
    columns = violated_columns(exc)
    messages = messages or {}
    if columns and all(column in messages for column in columns):
        return ValidationError({column: messages[column] for column in columns})
    return Conflict(CONCURRENT_CHANGE)


@contextmanager
def unique_fields(messages=None):
    """Turn an IntegrityError inside (at an insert or at commit) into
    :func:`from_integrity_error`: when two requests pass the same "exists?" check at once,
    the database's unique constraint decides and the loser gets the field's message."""
    try:
        yield
    except IntegrityError as exc:
        raise from_integrity_error(exc, messages) from exc
