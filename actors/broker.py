"""The one place that sets Dramatiq's broker; imported before any actor is defined.

``REDIS_URL`` (or ``PROVISOR_REDIS_URL``) set: a Redis broker shared by the web processes,
any number of ``dramatiq actors`` workers and the scheduler. Unset: an in-process
StubBroker, run by the embedded worker of ``provisor serve`` (and by the tests).

The settings are read here, before any app exists, through the same reader as the app
(:mod:`app.config`), and all of them are checked: a ``dramatiq actors`` worker with a bad
setting stops before it boots, saying which one and why.
"""

import dramatiq
from dramatiq.brokers.stub import StubBroker

from actors.metrics import WorkerMetrics
from actors.middleware import AppContextMiddleware, GracefulShutdown
from app import config


class BadSettings(ImportError):
    """A bad setting found while importing the actors. An ImportError because that is
    what ``dramatiq actors`` reports as "Failed to import module" and exits on (any other
    exception would crash each worker process in turn); the message is the setting's."""


def make_broker():
    try:
        settings = config.load()
    except config.SettingError as exc:
        raise BadSettings(exc.message) from None
    url = settings["REDIS_URL"]
    if url:
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url, namespace=settings["REDIS_NAMESPACE"])
    else:
        broker = StubBroker()
    broker.add_middleware(AppContextMiddleware())
    broker.add_middleware(GracefulShutdown())
    broker.add_middleware(WorkerMetrics(settings["WORKER_METRICS_PORT"]))
    return broker


broker = make_broker()
dramatiq.set_broker(broker)
