"""Input guards that apply to every request, before any view runs."""

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge


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


def one_line(text, limit=None):
    """``text`` on one line: line breaks, tabs and other control characters become spaces
    (a mail header, a title). ``limit``: cut to that many characters."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return cleaned[:limit] if limit else cleaned


def init_app(app):
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
