"""The one place that sets Dramatiq's broker; imported before any actor is defined.

``REDIS_URL`` (or ``PROVISOR_REDIS_URL``) set: a Redis broker shared by the web processes,
any number of ``dramatiq actors`` workers and the scheduler. Unset: an in-process
StubBroker, run by the embedded worker of ``provisor serve`` (and by the tests).

The settings are read here, before any app exists, through the same reader as the app
(:mod:`app.config`), and all of them are checked: a ``dramatiq actors`` worker with a bad
setting stops before it boots, saying which one and why.
"""

import contextlib
import logging
import threading

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed

from actors.metrics import WorkerMetrics
from actors.middleware import AppContextMiddleware, GracefulShutdown
from app import config

log = logging.getLogger(__name__)


class BadSettings(ImportError):
    """A bad setting found while importing the actors. An ImportError because that is
    what ``dramatiq actors`` reports as "Failed to import module" and exits on (any other
    exception would crash each worker process in turn); the message is the setting's."""


class _PipelinedDispatch:
    """Stands in for RedisBroker's ``dispatch`` script: while the calling thread is inside
    :meth:`BatchingRedisBroker.batch`, an ``enqueue`` is queued on that batch's pipeline
    instead of being sent at once (inside :meth:`BatchingRedisBroker.pipelined`, every
    command is); every other command (and every other thread) goes to Redis as before."""

    def __init__(self, script, batches):
        self.script = script
        self.batches = batches

    def __call__(self, keys=None, args=None, client=None):
        pipe = getattr(self.batches, "pipe", None)
        if (
            pipe is not None
            and client is None
            and args
            and (args[0] == "enqueue" or getattr(self.batches, "every", False))
        ):
            return self.script(keys=keys, args=args, client=pipe)
        return self.script(keys=keys, args=args, client=client)


class _GatheredAcks:
    """The acknowledgements of one queue that this process's workers have not sent yet.
    Kept by the broker, not by a consumer: a consumer that Dramatiq replaces after a
    connection error leaves its unsent ones to the next."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ids = []

    def add(self, redis_message_id):
        with self.lock:
            self.ids.append(redis_message_id)

    def take(self):
        with self.lock:
            ids, self.ids = self.ids, []
        return ids

    def give_back(self, ids):
        with self.lock:
            self.ids[:0] = ids


class _GatheringConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, with a message's acknowledgement gathered instead of sent
    by the worker thread that ran it: the consumer thread sends the gathered ones in one
    pipeline with its next fetch (one round trip for all of them, where each was one).

    An acknowledgement only tells Redis to forget a message that has run. One not yet
    sent when the process dies leaves that message to be delivered again once the
    process's heartbeat is old (as one whose worker died while running it), and every
    Provisor actor is idempotent: the operation is done, the message does nothing. The
    consumer sends them whenever its prefetched messages are all handed out (so at most a
    backoff sleep later: ``worker_timeout`` when idle) and when it closes, on a worker's
    shutdown; one that fails to send is kept for the next try. A message that failed
    (``nack``: to the dead-letter queue) is still sent at once.
    """

    def __init__(self, broker, queue_name, prefetch, timeout):
        super().__init__(broker, queue_name, prefetch, timeout)
        self.gathered = broker.gathered_acks(queue_name)

    def ack(self, message):
        self.gathered.add(message.options["redis_message_id"])
        self.queued_message_ids.discard(message.message_id)

    def __next__(self):
        if not self.message_cache and self.gathered.ids:
            wanted = self.prefetch - self.outstanding_message_count
            fetched = self._send_acks(fetch=wanted if wanted > 0 else 0)
            if fetched:
                self.message_cache = fetched
        return super().__next__()

    def close(self):
        try:
            self._send_acks(fetch=0)
        except ConnectionClosed:
            log.warning("could not acknowledge messages of %s on closing", self.queue_name)
        super().close()

    def _send_acks(self, fetch):
        """Send the gathered acknowledgements, and fetch up to ``fetch`` messages in the
        same round trip; the fetched messages (their data, as Dramatiq's fetch gives)."""
        ids = self.gathered.take()
        if not ids and not fetch:
            return []
        try:
            with self.broker.pipelined(raise_on_error=False) as results:
                for redis_message_id in ids:
                    self.broker.do_ack(self.queue_name, redis_message_id)
                if fetch:
                    self.broker.do_fetch(self.queue_name, fetch)
        except BaseException as exc:
            self.gathered.give_back(ids)
            if isinstance(exc, redis.ConnectionError):
                raise ConnectionClosed(exc) from None
            raise
        refused = [r for r in results[: len(ids)] if isinstance(r, Exception)]
        if refused:
            # as Dramatiq does with an ack Redis refuses: not retried (it would be refused
            # again and hold up the fetch); the message is delivered again when this
            # worker restarts, and finds its work done
            log.warning(
                "Redis refused %d of %d acknowledgements on %s (%s); those messages will be "
                "delivered again when this worker restarts",
                len(refused),
                len(ids),
                self.queue_name,
                refused[0],
            )
        if not fetch:
            return []
        if isinstance(results[-1], Exception):
            raise results[-1]
        return results[-1]


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
        self._gathered = {}
        self._gathered_lock = threading.Lock()

    @property
    def consumer_class(self):
        return _GatheringConsumer

    def gathered_acks(self, queue_name):
        """The acknowledgements of ``queue_name`` gathered and not sent yet (one per
        queue and process: every consumer of the queue on this broker sends them)."""
        with self._gathered_lock:
            return self._gathered.setdefault(queue_name, _GatheredAcks())

    @contextlib.contextmanager
    def pipelined(self, raise_on_error=True):
        """Every Dramatiq command this thread sends inside the block goes to Redis in one
        pipeline at its end; the block gets the list the results are put in, in order
        (nothing is sent if the block raises). ``raise_on_error=False``: a command Redis
        refuses gives its error in the list instead of raising (a lost connection still
        raises)."""
        if getattr(self._batches, "pipe", None) is not None:
            raise RuntimeError("pipelined() inside a batch")
        results = []
        pipe = self._batches.pipe = self.client.pipeline(transaction=False)
        self._batches.every = True
        try:
            yield results
        finally:
            self._batches.pipe = None
            self._batches.every = False
        if len(pipe):
            results.extend(pipe.execute(raise_on_error=raise_on_error))

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
