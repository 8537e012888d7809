"""The one JSON error builder: ``/api/v1``, ``/proxy/v1`` and the pages' JSON answers.

Every JSON error is ``{"error": {"code", "message", "fields"}}`` (see
:func:`app.services.errors.envelope`) with a fitting status; :func:`json_error_for` turns
a service error, an HTTP exception (keeping the ``Allow`` header of a 405) or a refused
database constraint into one. A database that does not answer is a 503 with
``Retry-After`` (:func:`database_unavailable`), on the pages as on the JSON routes.
"""

import sqlite3

from flask import jsonify
from peewee import IntegrityError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from app.db import is_sqlite
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


# seconds a client is asked to wait when the database does not answer (the Retry-After
# header of the 503); a restarted PostgreSQL is usually back within a few
DATABASE_RETRY_AFTER = 5

# what SQLite says when the file is busy or out of reach (its other OperationalErrors, a
# syntax error or a missing table, are faults of the code or of the set-up: 500)
SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o error", "disk is full")


def database_unavailable(exc):
    """Whether ``exc`` (a peewee OperationalError or InterfaceError) means the database
    cannot be reached or used for now: a connection refused, closed or lost (a restarted
    or stopped PostgreSQL), a server shutting down, a locked SQLite file."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    if isinstance(exc.__context__, sqlite3.Error) or is_sqlite():
        return any(words in str(exc).lower() for words in SQLITE_UNAVAILABLE)
    return True


def database_unavailable_json():
    """The JSON 503 of a database that does not answer."""
    return json_error(
        503,
        "unavailable",
        "the database is not available; try again shortly",
        headers=[("Retry-After", str(DATABASE_RETRY_AFTER))],
    )


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
