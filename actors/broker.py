"""The one place that sets Dramatiq's broker; imported before any actor is defined.

``REDIS_URL`` (or ``PROVISOR_REDIS_URL``) set: a Redis broker shared by the web processes,
any number of ``dramatiq actors`` workers and the scheduler. Unset: an in-process
StubBroker, run by the embedded worker of ``provisor serve`` (and by the tests).
"""

import os

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

from actors.middleware import AppContextMiddleware


def _env(name, default=None):
    return os.environ.get(f"PROVISOR_{name}") or os.environ.get(name) or default


def make_broker():
    url = _env("REDIS_URL")
    if url:
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url, namespace=_env("REDIS_NAMESPACE", "provisor"))
    else:
        broker = StubBroker()
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(AppContextMiddleware())
    return broker


broker = make_broker()
dramatiq.set_broker(broker)
