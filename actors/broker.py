"""The one place that sets Dramatiq's broker; imported before any actor is defined.

``REDIS_URL`` (or ``PROVISOR_REDIS_URL``) set: a Redis broker shared by the web processes,
any number of ``dramatiq actors`` workers and the scheduler. Unset: an in-process
StubBroker, run by the embedded worker of ``provisor serve`` (and by the tests).

The settings are read here, before any app exists, through the same reader as the app
(:mod:`app.config`), and all of them are checked: a ``dramatiq actors`` worker with a bad
setting stops before it boots, saying which one and why.
"""

import contextlib
import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from actors.metrics import WorkerMetrics
from actors.middleware import AppContextMiddleware, GracefulShutdown
from app import config


class BadSettings(ImportError):
    """A bad setting found while importing the actors. An ImportError because that is
    what ``dramatiq actors`` reports as "Failed to import module" and exits on (any other
    exception would crash each worker process in turn); the message is the setting's."""


class _PipelinedDispatch:
    """Stands in for RedisBroker's ``dispatch`` script: while the calling thread is inside
    :meth:`BatchingRedisBroker.batch`, an ``enqueue`` is queued on that batch's pipeline
    instead of being sent at once; every other command (and every other thread) goes to
    Redis as before."""

    def __init__(self, script, batches):
        self.script = script
        self.batches = batches

    def __call__(self, keys=None, args=None, client=None):
        pipe = getattr(self.batches, "pipe", None)
        if pipe is not None and client is None and args and args[0] == "enqueue":
            return self.script(keys=keys, args=args, client=pipe)
        return self.script(keys=keys, args=args, client=client)


class BatchingRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker with :meth:`batch`: the messages a thread sends inside it go
    to Redis in one pipeline (one round trip) instead of one round trip per message. The
    sweep re-sending thousands of due operations spent three quarters of its time waiting
    on those round trips.

    Each message is still enqueued by RedisBroker's own ``enqueue`` (its middleware, ids,
    delays and the broker's Lua script with the same arguments); only the transport is
    batched. It relies on RedisBroker keeping its scripts in ``self.scripts`` and passing
    the command first (Dramatiq 2.2, pinned); ``tests/test_broker_batch.py`` checks that
    against a real Redis and a real worker.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._batches = threading.local()
        self.scripts["dispatch"] = _PipelinedDispatch(self.scripts["dispatch"], self._batches)

    @contextlib.contextmanager
    def batch(self):
        """Send the messages this thread enqueues inside the block in one pipeline at its
        end (nothing if the block raises). A nested block joins the outer one. A Redis
        error is raised at the end of the block; the messages may or may not be in Redis
        then (the database is what the sweep re-sends from)."""
        if getattr(self._batches, "pipe", None) is not None:
            yield
            return
        pipe = self._batches.pipe = self.client.pipeline(transaction=False)
        try:
            yield
        finally:
            self._batches.pipe = None
        if len(pipe):
            pipe.execute()


def batch(broker):
    """Send the messages enqueued inside the block together when the broker can (Redis),
    one by one otherwise (the StubBroker has no round trips to save)."""
    return broker.batch() if isinstance(broker, BatchingRedisBroker) else contextlib.nullcontext()


def make_broker():
    try:
        settings = config.load()
    except config.SettingError as exc:
        raise BadSettings(exc.message) from None
    url = settings["REDIS_URL"]
    if url:
        broker = BatchingRedisBroker(url=url, namespace=settings["REDIS_NAMESPACE"])
    else:
        broker = StubBroker()
    broker.add_middleware(AppContextMiddleware())
    broker.add_middleware(GracefulShutdown())
    broker.add_middleware(WorkerMetrics(settings["WORKER_METRICS_PORT"]))
    return broker


broker = make_broker()
dramatiq.set_broker(broker)
