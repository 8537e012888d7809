"""The tasks proxy (``/proxy/v1``): forwards a department's tasks to a peer Provisor.

The server and client sides come with the tasks-proxy issue; the blueprint is mounted now
so that the URL space is reserved and answers JSON.
"""

from flask import Blueprint, jsonify

from app.auth import csrf

proxy_bp = Blueprint("proxy", __name__, url_prefix="/proxy/v1")
csrf.exempt(proxy_bp)


@proxy_bp.route("/<path:anything>", methods=["GET", "POST"])
def not_configured(anything):
    """Every proxy call answers 404 until the tasks proxy is configured."""
    body = {
        "error": {
            "code": "not_found",
            "message": "the tasks proxy is not configured here",
            "fields": {},
        }
    }
    return jsonify(body), 404
