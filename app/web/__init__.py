"""The browser UI: one blueprint per area, server-rendered pages with htmx partials."""

import logging

from flask import render_template, request
from htmx_flask import Htmx
from peewee import IntegrityError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from app.services.errors import ServiceError, from_integrity_error
from app.web.errors import (
    DATABASE_RETRY_AFTER,
    allow_header,
    database_unavailable,
    database_unavailable_json,
    json_error,
    json_error_for,
)

log = logging.getLogger(__name__)
htmx = Htmx()


def wants_json():
    return request.path.startswith(("/api/", "/proxy/")) or request.path == "/metrics"


__all__ = ["allow_header", "htmx", "init_app", "wants_json"]


def init_app(app):
    htmx.init_app(app)
    from app.web import (
        auth_views,
        catalog,
        certificates,
        clients,
        dashboard,
        home,
        metrics,
        my,
        operations,
        orders,
        outbox,
        proxy_views,
        services,
        staff,
        tasks,
        webhooks,
    )

    for module in (
        auth_views,
        home,
        dashboard,
        operations,
        services,
        orders,
        clients,
        outbox,
        catalog,
        tasks,
        staff,
        proxy_views,
        my,
        certificates,
        metrics,
        webhooks,
    ):
        app.register_blueprint(module.bp)

    from app.web import helpers
    from app.web.helpers import here

    helpers.init_app(app)

    @app.after_request
    def _vary(response):
        response.vary.add("HX-Request")
        if request.htmx and request.htmx.boosted and response.status_code == 200:
            # a boosted form (a confirmed action) ends on this page: its address is the
            # browser's, even when a live refresh replaced the form meanwhile
            response.headers.setdefault("HX-Push-Url", here())
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if wants_json():
            return json_error_for(exc)
        return render_template("error.html", error=exc), exc.code, allow_header(exc)

    @app.errorhandler(ServiceError)
    def _service_error(exc):
        if wants_json():
            return json_error_for(exc)
        return render_template("error.html", error=exc), exc.status

    @app.errorhandler(IntegrityError)
    def _constraint_error(exc):
        """A constraint no service check caught (two requests at once): 409, not 500."""
        log.warning("constraint refused on %s %s: %s", request.method, request.path, exc)
        return _service_error(from_integrity_error(exc))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_error(exc):
        """The database does not answer (PostgreSQL restarted or stopped): 503 with
        ``Retry-After`` on every route, not a 500 with a traceback. The page is one of its
        own: the layout would ask the database who is logged in."""
        if not database_unavailable(exc):
            return _unexpected(exc)
        log.warning(
            "database unavailable on %s %s: %s: %s",
            request.method,
            request.path,
            exc.__class__.__name__,
            " ".join(str(exc).split())[:300],
        )
        if wants_json():
            return database_unavailable_json()
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER)}
        return render_template("unavailable.html", retry_after=DATABASE_RETRY_AFTER), 503, headers

    @app.errorhandler(Exception)
    def _unexpected(exc):
        log.exception("unexpected error on %s %s", request.method, request.path)
        if wants_json():
            return json_error(500, "internal", "internal error")
        return render_template("error.html", error=None), 500
