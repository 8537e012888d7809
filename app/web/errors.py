"""The one JSON error builder: ``/api/v1``, ``/proxy/v1`` and the pages' JSON answers.

Every JSON error is ``{"error": {"code", "message", "fields"}}`` (see
:func:`app.services.errors.envelope`) with a fitting status; :func:`json_error_for` turns
a service error, an HTTP exception (keeping the ``Allow`` header of a 405) or a refused
database constraint into one.
"""

from flask import jsonify
from peewee import IntegrityError
from werkzeug.exceptions import HTTPException

from app.services.errors import ServiceError, envelope, from_integrity_error


def json_error(status, code, message, fields=None, headers=()):
    """A JSON error response."""
    response = jsonify(envelope(code, message, fields))
    response.status_code = status
    response.headers.extend(list(headers))
    return response


def http_error_code(exc):
    """``method_not_allowed`` for a 405, ``not_found`` for a 404, ..."""
    return (exc.name or "error").lower().replace(" ", "_")


def allow_header(exc):
    """Keep the ``Allow`` header of a 405 (the rest of the HTTPException's headers are
    about its own HTML body)."""
    return [(k, v) for k, v in exc.get_headers() if k.lower() == "allow"]


def json_error_for(exc):
    """The JSON error response for a ServiceError, an HTTPException or an IntegrityError."""
    if isinstance(exc, IntegrityError):
        exc = from_integrity_error(exc)
    if isinstance(exc, ServiceError):
        retry = [("Retry-After", str(exc.retry_after))] if exc.retry_after else []
        return json_error(exc.status, exc.code, exc.message, exc.fields, headers=retry)
    if isinstance(exc, HTTPException):
        return json_error(
            exc.code or 400,
            http_error_code(exc),
            exc.description or exc.name,
            headers=allow_header(exc),
        )
    return json_error(500, "internal", "internal error")


def register_json_errors(blueprint):
    """Every error of a JSON-only blueprint answers through :func:`json_error_for`."""
    for kind in (ServiceError, HTTPException, IntegrityError):
        blueprint.register_error_handler(kind, json_error_for)
