"""Logging, configured once per process, the same way in every process.

``provisor serve``, ``provisor scheduler``, the web app under gunicorn or any WSGI server
(``create_app`` does it when no CLI command is running) and ``dramatiq actors`` workers
(their app is made by ``create_app`` too) send every record to stderr in one format,
``PROVISOR_LOG_FORMAT=text`` (the default) or ``json`` (one object per line), at
``PROVISOR_LOG_LEVEL``.

Each record carries what the process is handling at the time: ``operation=12``,
``task=7``, ``email=3``... (:func:`context`, a :mod:`contextvars` variable set by the worker
middleware for each message, by the services for each row they sweep or change, and by
the web app for a request about one operation or task).
"""

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]%(context)s: %(message)s"

_fields = contextvars.ContextVar("provisor_log_context", default=None)
_handler = None


def current():
    """The context fields of the records logged now (a dict, maybe empty)."""
    return dict(_fields.get() or {})


def bind(**fields):
    """Add ``fields`` to every record logged from here on in this context; returns the
    token :func:`unbind` takes (for hooks that begin and end in different calls)."""
    added = {k: v for k, v in fields.items() if v is not None}
    return _fields.set({**(_fields.get() or {}), **added})


def unbind(token):
    _fields.reset(token)


@contextlib.contextmanager
def context(**fields):
    """``with logs.context(operation=12):`` every record logged inside carries it."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


class ContextFilter(logging.Filter):
    """Puts the context fields on each record: ``record.context_fields`` (a dict) and
    ``record.context`` (`` operation=12 task=7``, for the text format)."""

    def filter(self, record):
        fields = _fields.get() or {}
        record.context_fields = fields
        record.context = "".join(f" {key}={value}" for key, value in fields.items())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, process, thread,
    the context fields, and the traceback as ``exception`` when there is one."""

    def format(self, record):
        data = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
            **getattr(record, "context_fields", {}),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str)


def configure(level="INFO", fmt="TEXT", stream=None):
    """Send every record of this process to ``stream`` (stderr) in the chosen format.

    Idempotent: a second call replaces the first one's handler. A plain stderr handler
    left by ``logging.basicConfig`` (Dramatiq's worker processes make one) is replaced
    too, so that each line is written once; other handlers (a test's capture) stay.
    """
    global _handler
    root = logging.getLogger()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "JSON" else logging.Formatter(TEXT_FORMAT))
    for existing in list(root.handlers):
        plain = type(existing) is logging.StreamHandler and getattr(existing, "stream", None) in (
            sys.stderr,
            sys.stdout,
        )
        if existing is _handler or plain:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # peewee logs every SQL statement with its parameters at DEBUG: passwords, module
    # secrets and secret details in clear. PROVISOR_LOG_LEVEL=DEBUG must not write them.
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    logging.getLogger("peewee").setLevel(max(numeric, logging.INFO))
    logging.captureWarnings(True)  # warnings become records: one format on stderr
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    _handler = handler
    return handler


# request view arguments that name what a request is about, and their log field
REQUEST_FIELDS = {
    "operation_id": "operation",
    "task_id": "task",
    "service_id": "service",
    "email_id": "email",
}


def init_app(app):
    """Configure this process's logging from the app's settings — unless the app is a
    test's or a CLI command is running: ``provisor serve`` and ``provisor scheduler``
    configure it themselves, one-shot commands keep stderr for their one-line errors —
    and put what a request is about (``operation=12``...) on the records it logs."""
    import click
    from flask import g, request

    if not app.testing and click.get_current_context(silent=True) is None:
        configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])

    @app.before_request
    def _bind_request():
        args = request.view_args or {}
        fields = {field: args[name] for name, field in REQUEST_FIELDS.items() if name in args}
        if fields:
            g.log_token = bind(**fields)

    @app.teardown_request
    def _unbind_request(exc):
        token = g.pop("log_token", None)
        if token is not None:
            unbind(token)
