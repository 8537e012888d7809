"""A no-op actor on the PROJECT's broker: ``actors`` is imported first, so the broker,
its namespace and its middleware (AppContextMiddleware: an app context
and a database connect/close per message) are exactly those of ``dramatiq actors``.

Run: ``dramatiq bench.noop_actors --processes 1 --threads N`` (it serves the project's
queues too, which stay empty during the no-op measurement).
"""

import dramatiq

import actors  # noqa: F401  (sets the project's broker before any actor is defined)

QUEUE = "bench_noop"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(n):
    """Does nothing."""
