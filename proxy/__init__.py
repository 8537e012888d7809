"""The tasks proxy's server side (``/proxy/v1``): what a peer Provisor calls.

HTTP Basic with a server side's login and password. Every answer is JSON; errors are
``{"error": {"code", "message", "fields"}}``. A peer only ever sees its own department,
its own tasks and its own events.
"""

import functools

from flask import Blueprint, g, jsonify, request

from app.auth import csrf
from app.guards import nul_fields
from app.objects import peer as objects
from app.objects.peer import MAX_CURSOR, MAX_PAGE, PROTOCOL, PROTOCOL_HEADER
from app.services import proxy
from app.services.errors import ServiceError, ValidationError
from app.web.errors import json_error, register_json_errors

proxy_bp = Blueprint("proxy", __name__, url_prefix="/proxy/v1")
csrf.exempt(proxy_bp)
register_json_errors(proxy_bp)

CHALLENGE = 'Basic realm="provisor-proxy", charset="UTF-8"'


@proxy_bp.after_app_request
def protocol_header(response):
    """Every answer under ``/proxy/v1`` (errors included) names the protocol's version."""
    if request.path == "/proxy/v1" or request.path.startswith("/proxy/v1/"):
        response.headers[PROTOCOL_HEADER] = PROTOCOL
    return response


def peer_required(view):
    """HTTP Basic as a server side's account; 401 (with a challenge) otherwise."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        auth = request.authorization
        side = proxy.authenticate_peer(auth.username, auth.password) if auth else None
        if side is None:
            return json_error(
                401,
                "unauthorized",
                "unknown login or wrong password",
                headers=[("WWW-Authenticate", CHALLENGE)],
            )
        g.peer = side
        return view(*args, **kwargs)

    return wrapped


def _body():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ServiceError("the body must be a JSON object", code="invalid_json")
    bad = nul_fields(data)  # PostgreSQL refuses NUL in text
    if bad:
        raise ValidationError(bad)
    return data


@proxy_bp.get("/departments")
@peer_required
def departments():
    """The department this account's tasks go to."""
    departments = proxy.peer_departments(g.peer)
    return jsonify(objects.PeerDepartmentList.of({"departments": departments}))


@proxy_bp.post("/tasks")
@peer_required
def receive_task():
    """Receive a task (idempotent on the sender's task id): 201 new, 200 already here."""
    task, created = proxy.receive_task(g.peer, _body())
    receipt = {"task_id": task.id, "status": task.status, "created": created}
    return jsonify(objects.PeerTaskReceipt.of(receipt)), 201 if created else 200


@proxy_bp.post("/tasks/<int:sender_task_id>/events")
@peer_required
def receive_event(sender_task_id):
    """A change of a task the peer sent (idempotent on ``event_id``)."""
    task, applied = proxy.receive_event(g.peer, sender_task_id, _body())
    receipt = {"task_id": task.id, "status": task.status, "applied": applied}
    return jsonify(objects.PeerEventReceipt.of(receipt))


@proxy_bp.get("/events")
@peer_required
def events():
    """Changes made here to the peer's tasks after the cursor ``after`` (at most
    ``limit``, 500 by default), oldest first; ``next`` is the cursor to ask with next."""
    raw = request.args.get("after", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_CURSOR)):
        raise ValidationError({"after": "Must be a cursor (a whole number from 0)."})
    limit = request.args.get("limit", str(MAX_PAGE))
    if (
        not (limit.isascii() and limit.isdigit())
        or len(limit) > 6
        or not 1 <= int(limit) <= MAX_PAGE
    ):
        raise ValidationError({"limit": f"Must be a whole number from 1 to {MAX_PAGE}."})
    items, cursor = proxy.events_after(g.peer, int(raw), int(limit))
    return jsonify(objects.PeerEventPage.of({"events": items, "next": cursor}))
