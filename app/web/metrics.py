"""``/metrics`` for Prometheus: numbers computed from the database at scrape time (the
same on every web process), plus the embedded worker's message counts under ``provisor
serve``. Protected by ``METRICS_TOKEN`` and/or ``METRICS_ALLOW``; off when neither is set."""

from flask import Blueprint, Response, current_app, request

from app.services import monitoring
from app.web.errors import json_error

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    """The metrics in Prometheus' text format (a bearer token or an allowed address)."""
    refused = monitoring.metrics_refusal(
        current_app.config, request.headers.get("Authorization"), request.remote_addr
    )
    if refused is not None:
        status, code, message = refused
        headers = [("WWW-Authenticate", 'Bearer realm="metrics"')] if status == 401 else []
        return json_error(status, code, message, headers=headers)
    from prometheus_client import CONTENT_TYPE_LATEST

    from actors.metrics import in_process_registry

    text = monitoring.metrics_text(current_app.config, in_process_registry())
    return Response(text, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
