"""Input guards that apply to every request, before any view runs."""

from flask import request
from werkzeug.exceptions import BadRequest


def contains_nul(value):
    """True when a string anywhere in ``value`` (JSON-like data) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def init_app(app):
    @app.before_request
    def _refuse_nul_characters():
        """NUL characters are never meaningful input (and PostgreSQL refuses them)."""
        pairs = list(request.args.items(multi=True))
        if request.mimetype == "application/x-www-form-urlencoded":
            request.get_data(cache=True)  # keep the raw body for views that read it
            pairs += list(request.form.items(multi=True))
        if any(contains_nul(k) or contains_nul(v) for k, v in pairs) or "\x00" in request.path:
            raise BadRequest("NUL characters are not allowed in input.")
