"""Actors of the tasks proxy: push a client side's changes, pull its peer's events."""

import contextlib

import dramatiq

from app.services import proxy
from app.services.errors import ServiceError


@dramatiq.actor(queue_name="proxy", max_retries=0, time_limit=600_000, log_context="client_side")
def push_proxy(client_side_id):
    """Send the client side's pending task changes in order (re-queues itself on failure)."""
    proxy.push(client_side_id)


@dramatiq.actor(queue_name="proxy", max_retries=0, time_limit=600_000, log_context="client_side")
def pull_proxy(client_side_id):
    """Bring back the peer's changes (a failure is recorded on the client side)."""
    # a failure is recorded as the client side's last error; the scheduler tries again
    with contextlib.suppress(ServiceError):
        proxy.pull(client_side_id)
