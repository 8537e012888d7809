"""Shared web helpers: partial-or-page rendering, pagination, template filters."""

import math

from flask import current_app, render_template, request


def render(page, partial=None, target=None, **context):
    """Render ``partial`` for an htmx request aimed at ``target`` (or at anything, when
    ``target`` is None), else the whole ``page`` (which includes the partial)."""
    is_htmx = bool(request.headers.get("HX-Request")) and not request.headers.get("HX-Boosted")
    if partial and is_htmx and (target is None or request.headers.get("HX-Target") == target):
        return render_template(partial, **context)
    return render_template(page, **context)


class Page:
    """One page of a query: ``rows``, ``number``, ``pages``, ``total``."""

    def __init__(self, query, number=None, size=None):
        size = size or current_app.config["PAGE_SIZE"]
        try:
            number = int(number or request.args.get("page", 1))
        except (TypeError, ValueError):
            number = 1
        self.total = query.count()
        self.size = size
        self.pages = max(1, math.ceil(self.total / size))
        self.number = min(max(1, number), self.pages)
        self.rows = list(query.paginate(self.number, size))

    @property
    def has_prev(self):
        return self.number > 1

    @property
    def has_next(self):
        return self.number < self.pages


def _when(value):
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def init_app(app):
    app.jinja_env.filters["when"] = _when
    app.jinja_env.globals["STATUS_CLASSES"] = {
        "done": "ok",
        "active": "ok",
        "sent": "ok",
        "closed": "ok",
        "ready": "ok",
        "queued": "info",
        "running": "info",
        "processing": "info",
        "in_work": "info",
        "waiting_callback": "info",
        "waiting_task": "warn",
        "creating": "info",
        "new": "warn",
        "retry_wait": "warn",
        "suspended": "warn",
        "outbox": "muted",
        "unpaid": "warn",
        "manual": "bad",
        "failed": "bad",
        "cancelled": "muted",
        "deleted": "muted",
        "ordered": "muted",
        "paid": "ok",
        "sending": "info",
    }
