"""Input guards that apply to every request, before any view runs, and to every JSON body
a request carries."""

import re

from flask import request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from app.services.errors import ServiceError

MAX_JSON_DEPTH = 64
"""How deeply a request's JSON may nest (arrays and objects); no Provisor body needs more
than a few levels, and Python's reader fails (RecursionError) a few hundred levels down."""


class TooDeep(ServiceError):
    """A JSON body nested deeper than :data:`MAX_JSON_DEPTH` (a 400, whatever route)."""

    code = "invalid_json"

    def __init__(self):
        super().__init__(f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")


def json_depth(value):
    """How deeply ``value`` (parsed JSON) nests: 0 for a scalar, 1 for a flat list..."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((item, depth + 1) for item in value)
    return deepest


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that reading a body nested too deeply is a clean 400.

    :class:`TooDeep` is not a ``ValueError``: ``request.get_json(silent=True)`` lets it
    through, and the JSON blueprints answer it with their error envelope.
    """

    def loads(self, s, **kwargs):
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise TooDeep() from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise TooDeep()
        return value


def contains_nul(value):
    """True when a string anywhere in ``value`` (JSON-like data) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def nul_in(value, path=""):
    """Where a NUL character is in ``value`` (JSON-like data): ``"details.password"``,
    ``""`` for ``value`` itself, or None when there is none."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if contains_nul(key):
                return where
            found = nul_in(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = nul_in(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def storable(text):
    """``text`` as the database can keep it: a NUL (which PostgreSQL refuses in text)
    written as ``\\x00``, visibly. For what Provisor records of a remote's words
    (attempt logs, errors), never for values it hands on (those are refused)."""
    return text.replace("\x00", "\\x00") if isinstance(text, str) else text


def has_control_characters(text):
    """Whether ``text`` holds a control character (C0 or DEL): not one line of text."""
    return _CONTROL.search(text) is not None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text, limit=None):
    """``text`` on one line: line breaks, tabs and other control characters become spaces
    (a mail header, a title). ``limit``: cut to that many characters."""
    text = str(text)
    if not text.isprintable():  # (most are: then the check is all, in C)
        text = "".join(c if c.isprintable() else " " for c in text)
    cleaned = " ".join(text.split())
    return cleaned[:limit] if limit else cleaned


def nul_fields(data):
    """``{key: message}`` for the top-level keys of a JSON object holding a NUL anywhere."""
    return {
        key: "NUL characters are not allowed."
        for key, value in data.items()
        if contains_nul(key) or contains_nul(value)
    }


def init_app(app):
    provider = JSONProvider(app)
    provider.sort_keys = app.json.sort_keys
    app.json = provider

    @app.before_request
    def _limit_streamed_bodies():
        """A body without a Content-Length (chunked) is cut at ``MAX_CONTENT_LENGTH`` by
        werkzeug, silently: one that goes on past it is refused (413) instead of being
        handed on truncated. (One with a Content-Length over it is refused before it is
        read, by werkzeug.)"""
        limit = request.max_content_length
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if limit and request.content_length is None and chunked:
            request.get_data(cache=True)
            if getattr(request.stream, "is_exhausted", False):
                raise RequestEntityTooLarge()

    @app.before_request
    def _refuse_nul_characters():
        """NUL characters are never meaningful input (and PostgreSQL refuses them)."""
        pairs = list(request.args.items(multi=True))
        if request.mimetype == "application/x-www-form-urlencoded":
            request.get_data(cache=True)  # keep the raw body for views that read it
            pairs += list(request.form.items(multi=True))
        if any(contains_nul(k) or contains_nul(v) for k, v in pairs) or "\x00" in request.path:
            raise BadRequest("NUL characters are not allowed in input.")
