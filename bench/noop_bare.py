"""A no-op actor on a BARE Redis broker (Dramatiq's default middleware only, no app
context, no database): the raw cost of Dramatiq + Redis on this machine.

Run: ``dramatiq bench.noop_bare:broker --processes 1 --threads N``. Uses the namespace
``$REDIS_NAMESPACE-bare`` so it never touches the project's queues.
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench_noop"
NAMESPACE = os.environ.get("REDIS_NAMESPACE", "provisor") + "-bare"

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=NAMESPACE)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, broker=broker)
def noop(n):
    """Does nothing."""
