"""Shared web helpers: partial-or-page rendering, pagination, input parsing, filters."""

import csv
import datetime as dt
import io
import math
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from flask import (
    Response,
    current_app,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from app import messages
from app.db import database
from app.models import utcnow


def render(template, partial=None, target=None, **context):
    """Render ``partial`` for an htmx request aimed at ``target`` (or at anything, when
    ``target`` is None), else the whole page ``template`` (which includes the partial).

    The one place that decides "partial or page" (the context may hold a ``page`` of rows).
    """
    if (
        partial
        and request.htmx
        and not request.htmx.boosted  # a boosted link or form navigates: the whole page
        and (target is None or request.htmx.target == target)
    ):
        return render_template(partial, **context)
    return render_template(template, **context)


class Page:
    """One page of a query: ``rows``, ``number``, ``pages``, ``total``."""

    def __init__(self, query, number=None, size=None, count_query=None):
        size = size or current_app.config["PAGE_SIZE"]
        try:
            number = int(number or request.args.get("page", 1))
        except (TypeError, ValueError):
            number = 1
        # ``count_query``: the same rows without the joins that only add columns (SQLite
        # scans a whole table to count a LEFT JOIN)
        self.total = (count_query if count_query is not None else query).count()
        self.size = size
        self.pages = max(1, math.ceil(self.total / size))
        self.number = min(max(1, number), self.pages)
        self.rows = list(query.paginate(self.number, size))

    @classmethod
    def empty(cls):
        """A page without rows: a list whose search could not run (its field says why)."""
        page = cls.__new__(cls)
        page.total, page.size, page.pages, page.number, page.rows = 0, 1, 1, 1, []
        return page

    @property
    def has_prev(self):
        return self.number > 1

    @property
    def has_next(self):
        return self.number < self.pages

    @property
    def first_row(self):
        return (self.number - 1) * self.size + 1 if self.total else 0

    @property
    def last_row(self):
        return min(self.number * self.size, self.total)

    def numbers(self, around=2):
        """The page numbers to link: the first, the last and ``around`` on each side of
        this one; None where numbers are left out (shown as "…")."""
        shown = {1, self.pages} | {
            n for n in range(self.number - around, self.number + around + 1) if 1 <= n <= self.pages
        }
        numbers, previous = [], 0
        for n in sorted(shown):
            if n - previous > 1:
                numbers.append(n - 1 if n - previous == 2 else None)
            numbers.append(n)
            previous = n
        return numbers


# columns whose first click shows the largest first (the newest, the most urgent)
FIRST_DESCENDING = ("id", "created", "updated", "priority", "activated", "paid", "sent")


class Sorting:
    """A list's order from ``sort`` (a column key among ``keys``) and ``dir`` (asc or
    desc). A key that is not a sortable column is ignored (the list keeps its default
    order) and said in ``ignored``; never an error."""

    def __init__(self, keys, default, default_desc=True):
        raw = request.args.get("sort", "")
        self.keys = tuple(keys)
        self.ignored = raw if raw and raw not in self.keys else None
        self.key = raw if raw in self.keys else default
        direction = request.args.get("dir", "")
        self.desc = direction == "desc" if direction in ("asc", "desc") else default_desc
        self.explicit = raw in self.keys

    @property
    def direction(self):
        return "desc" if self.desc else "asc"

    def url(self, key):
        """The current list's URL sorted by ``key`` (the other way round when it already
        is), on its first page, keeping the filters."""
        desc = not self.desc if key == self.key else key in FIRST_DESCENDING
        args = {k: v for k, v in request.args.items() if k not in ("page", "sort", "dir")}
        args.update(sort=key, dir="desc" if desc else "asc")
        return url_for(request.endpoint, **(request.view_args or {}), **args)

    def aria(self, key):
        if key != self.key:
            return "none"
        return "descending" if self.desc else "ascending"


# --- CSV export -------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """One CSV cell: text a spreadsheet would run as a formula (starting with = + - @,
    a tab or a carriage return) is prefixed with ``'``; numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_response(filename, header, query, row):
    """A CSV download of ``query``'s rows (``row(model)``: its values) under ``header``,
    streamed (a long list is never held whole), quoted by the csv module."""

    def generate():
        # the rows are read while the response streams, after the request's teardown
        # closed its connection: a connection of its own
        with database.connection_context():
            yield from lines(row(obj) for obj in query.iterator())

    def lines(rows):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow([csv_cell(h) for h in header])
        yield buffer.getvalue()
        for row in rows:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow([csv_cell(v) for v in row])
            yield buffer.getvalue()

    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def export_url(endpoint):
    """The CSV export of the current list (its filters, search and order; every page)."""
    args = {k: v for k, v in request.args.items() if k != "page"}
    return url_for(endpoint, **args)


# --- input ------------------------------------------------------------------------------

MAX_ID = 2**63 - 1  # larger numbers cannot be a database id (and overflow SQLite)


def arg_int(name, source=None):
    """A whole-number query (or form) argument, or None when absent or not a number."""
    raw = (source if source is not None else request.args).get(name, "")
    raw = str(raw).strip().lstrip("#")
    if not (raw.isascii() and raw.isdigit()):
        return None
    number = int(raw)
    return number if number <= MAX_ID else None


def arg_choice(name, allowed, default=None):
    """A query argument that must be one of ``allowed``; anything else gives ``default``."""
    raw = request.args.get(name, "")
    return raw if raw in allowed else default


def search_status(errors):
    """The status of a list page: 422 when its filters were refused, except for htmx's
    live search, which swaps only a 2xx (the rows partial says what was wrong)."""
    return 422 if errors and not request.htmx else 200


def local_url(target, default="/"):
    """``target`` if it is a path on this site (never another host), else ``default``."""
    if not target or not isinstance(target, str):
        return default
    target = target.strip()
    parts = urlsplit(target)
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or parts.scheme
        or parts.netloc
    ):
        return default
    return target


def redirect_back(default):
    """Redirect to the form's ``next`` field when it is a local path, else ``default``."""
    return redirect(local_url(request.form.get("next") or request.args.get("next"), default))


def page_url(number):
    """The current page's URL with ``page=number`` (keeping the filters)."""
    args = {**request.args.to_dict(), "page": number}
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def public_url(endpoint, **values):
    """An absolute URL for an email: under ``PUBLIC_URL`` when set (never the request's
    own Host header then), else the address the request came to."""
    base = current_app.config.get("PUBLIC_URL")
    if base:
        return base.rstrip("/") + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)


def here():
    """The current path with its query string (for a form's ``next`` field)."""
    return request.full_path.rstrip("?") if request.query_string else request.path


# --- template filters -------------------------------------------------------------------


def _when(value):
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _span(seconds):
    seconds = abs(seconds)
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} d"


def _relative(value, now=None):
    """'in 5 s', '3 min ago', 'now' for a naive UTC datetime."""
    if not value:
        return ""
    delta = (value - (now or utcnow())).total_seconds()
    if 0 < delta < 1:
        return "in 1 s"  # a check due within the second is still to come
    if abs(delta) < 1:
        return "now"
    return f"in {_span(delta)}" if delta > 0 else f"{_span(delta)} ago"


def _duration(start, end=None):
    """How long from ``start`` to ``end`` (or until now, for a running attempt)."""
    if not start:
        return ""
    seconds = ((end or utcnow()) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s"
    return _span(seconds)


def _money(value, currency=""):
    """An amount with two decimals (and its currency), e.g. ``4.50 USD``."""
    if value is None:
        return ""
    try:
        text = f"{Decimal(str(value)):.2f}"
    except InvalidOperation:
        text = str(value)
    return f"{text} {currency}".strip()


def _from_iso(value):
    """A datetime kept as ISO text in JSON (a module choice's ``at``), for :func:`_when`;
    text that is not one stays as it is."""
    if isinstance(value, dt.datetime) or not value:
        return value
    try:
        parsed = dt.datetime.fromisoformat(str(value).removesuffix("Z"))
    except ValueError:
        return value
    return parsed.replace(tzinfo=None) if parsed.tzinfo else parsed


def _iso(value):
    if isinstance(value, str):
        return value
    return value.isoformat(timespec="seconds") + "Z" if isinstance(value, dt.datetime) else ""


def _label(value):
    return str(value or "").replace("_", " ")


def _operation_actions(op, task=None, task_known=False):
    """The actions on ``op`` the logged-in user may take (none outside their departments).
    ``task``: its open task (or None) when ``task_known`` (a list looked them up at once)."""
    from flask import g
    from flask_login import current_user

    from app.services import accounts, operations

    user = current_user
    if not user.is_authenticated:
        return []
    if "my_departments" not in g:
        g.my_departments = None if user.is_admin else set(accounts.department_ids_of(user))
    known = {"task": task} if task_known else {}
    if not operations.may_act(user, op, g.my_departments, **known):
        return []
    return operations.available_actions(op)


def _viewing_as():
    """The client whose area this staff session views (read-only), or None."""
    from app.auth import viewing_as_client
    from app.models import Client

    client_id = viewing_as_client()
    return Client.get_or_none_by_id(client_id) if client_id else None


def init_app(app):
    app.context_processor(lambda: {"viewing_as": _viewing_as()})

    app.jinja_env.filters["when"] = _when
    app.jinja_env.filters["relative"] = _relative
    app.jinja_env.filters["duration"] = _duration
    app.jinja_env.filters["iso"] = _iso
    app.jinja_env.filters["from_iso"] = _from_iso
    app.jinja_env.filters["money"] = _money
    app.jinja_env.filters["label"] = _label
    app.jinja_env.filters["kind_label"] = messages.kind_label
    app.jinja_env.globals["here"] = here
    app.jinja_env.globals["page_url"] = page_url
    app.jinja_env.globals["export_url"] = export_url
    app.jinja_env.globals["operation_actions"] = _operation_actions
    app.jinja_env.globals["STATUS_CLASSES"] = {
        "done": "ok",
        "active": "ok",
        "sent": "ok",
        "delivered": "ok",
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
        "setup_cancelled": "warn",
        "outbox": "muted",
        "unpaid": "warn",
        "manual": "bad",
        "failed": "bad",
        "cancelled": "muted",
        "deleted": "muted",
        "ordered": "muted",
        "paid": "ok",
        "sending": "info",
        # attempt outcomes
        "pending": "info",
        "temporary_error": "warn",
        "permanent_error": "bad",
        "interrupted": "warn",
    }
