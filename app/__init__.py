"""Provisor: a service-activation engine for hosting providers.

``create_app`` is the application factory (flaskr style); every extension is wired with
``init_app``.
"""

import logging
import os

from flask import Flask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

log = logging.getLogger(__name__)


def create_app(test_config=None):
    """Build the Flask app. ``test_config`` overrides settings (tests)."""
    instance_path = os.environ.get("PROVISOR_INSTANCE_PATH") or os.path.join(ROOT, "instance")
    app = Flask(
        __name__,
        instance_path=os.path.abspath(instance_path),
        template_folder=os.path.join(ROOT, "templates"),
        static_folder=os.path.join(ROOT, "static"),
    )
    from app import config as settings

    app.config.from_mapping(settings.from_environment(app.instance_path))
    if test_config:
        app.config.update(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = settings.instance_secret(app.instance_path, "secret_key")
    if not app.config.get("PAYMENT_WEBHOOK_SECRET"):
        app.config["PAYMENT_WEBHOOK_SECRET"] = settings.instance_secret(
            app.instance_path, "payment_webhook_secret"
        )
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    app.json.sort_keys = False

    from app import auth, cli, db, guards, web
    from app.api import api_bp

    db.init_app(app)
    guards.init_app(app)
    auth.init_app(app)
    web.init_app(app)
    app.register_blueprint(api_bp)
    from proxy import proxy_bp

    app.register_blueprint(proxy_bp)
    cli.init_app(app)
    return app
