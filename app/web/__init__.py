"""The browser UI: one blueprint per area, server-rendered pages with htmx partials."""

import logging

from flask import jsonify, render_template, request
from htmx_flask import Htmx
from werkzeug.exceptions import HTTPException

from app.services.errors import ServiceError

log = logging.getLogger(__name__)
htmx = Htmx()


def wants_json():
    return request.path.startswith(("/api/", "/proxy/"))


def allow_header(exc):
    """Keep the ``Allow`` header of a 405 (the rest of the HTTPException's headers are
    about its own HTML body)."""
    return [(k, v) for k, v in exc.get_headers() if k.lower() == "allow"]


def init_app(app):
    htmx.init_app(app)
    from app.web import (
        auth_views,
        catalog,
        clients,
        home,
        my,
        operations,
        orders,
        outbox,
        proxy_views,
        services,
        staff,
        tasks,
    )

    for module in (
        auth_views,
        home,
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
    ):
        app.register_blueprint(module.bp)

    from app.web import helpers

    helpers.init_app(app)

    @app.after_request
    def _vary(response):
        response.vary.add("HX-Request")
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if wants_json():
            code = (exc.name or "error").lower().replace(" ", "_")
            body = {"error": {"code": code, "message": exc.description or exc.name, "fields": {}}}
            return jsonify(body), exc.code, allow_header(exc)
        return render_template("error.html", error=exc), exc.code, allow_header(exc)

    @app.errorhandler(ServiceError)
    def _service_error(exc):
        if wants_json():
            return jsonify(exc.as_dict()), exc.status
        return render_template("error.html", error=exc), exc.status

    @app.errorhandler(Exception)
    def _unexpected(exc):
        log.exception("unexpected error on %s %s", request.method, request.path)
        if wants_json():
            body = {"error": {"code": "internal", "message": "internal error", "fields": {}}}
            return jsonify(body), 500
        return render_template("error.html", error=None), 500
