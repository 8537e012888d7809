"""All of Provisor's actors. ``dramatiq actors`` runs a worker for them.

The broker is set first (``actors.broker``), then every actor module is imported.
"""

from actors import broker as _broker  # noqa: F401  (sets the broker before any actor)
from actors.events import deliver_event
from actors.mail import send_email
from actors.operations import run_operation, sweep_operations
from actors.proxy import pull_proxy, push_proxy

broker = _broker.broker

__all__ = [
    "broker",
    "deliver_event",
    "pull_proxy",
    "push_proxy",
    "run_operation",
    "send_email",
    "sweep_operations",
]
