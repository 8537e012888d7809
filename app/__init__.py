"""Provisor: a service-activation engine for hosting providers.

``create_app`` is the application factory (flaskr style); every extension is wired with
``init_app``.
"""

import logging
import os

from flask import Flask

HERE = os.path.dirname(os.path.abspath(__file__))

log = logging.getLogger(__name__)


def bundled(name):
    """The folder ``name`` (``templates`` or ``static``): inside the package in an installed
    wheel (``app/templates``), at the top of the source tree in a checkout."""
    packaged = os.path.join(HERE, name)
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(HERE), name)


def create_app(test_config=None):
    """Build the Flask app. ``test_config`` overrides settings (tests).

    Every setting is read and checked by :mod:`app.config`; a bad one raises
    :class:`app.config.SettingError` (one line, shown by both CLIs as ``Error: ...``).
    """
    from app import config as settings

    values = settings.load(overrides=test_config)
    app = Flask(
        __name__,
        instance_path=values["INSTANCE_PATH"],
        template_folder=bundled("templates"),
        static_folder=bundled("static"),
    )
    app.config.from_mapping(values)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = settings.instance_secret(app.instance_path, "secret_key")
    if not app.config.get("PAYMENT_WEBHOOK_SECRET"):
        app.config["PAYMENT_WEBHOOK_SECRET"] = settings.instance_secret(
            app.instance_path, "payment_webhook_secret"
        )
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    # no body is read, on any route, beyond this: a 413 before parsing or signature checks
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]
    app.json.sort_keys = False

    from app import auth, cli, db, guards, i18n, logs, security, throttle, web
    from app.api import api_bp

    logs.init_app(app)
    db.init_app(app)
    security.init_app(app)
    guards.init_app(app)
    auth.init_app(app)
    i18n.init_app(app)
    web.init_app(app)
    app.register_blueprint(api_bp)
    from proxy import proxy_bp

    app.register_blueprint(proxy_bp)
    throttle.init_app(app)
    cli.init_app(app)
    return app
