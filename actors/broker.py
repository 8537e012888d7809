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
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware, MiddlewareError

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
            # by its digest, without registering the script on the pipeline: redis-py
            # asks the server ``SCRIPT EXISTS`` before every pipeline that has one, a round
            # trip of its own for each fetch; a server that lost the script (restarted,
            # SCRIPT FLUSH) answers NOSCRIPT and _execute loads it and sends those again
            keys, args = keys or [], args or []
            return pipe.evalsha(self.script.sha, len(keys), *keys, *args)
        return self.script(keys=keys, args=args, client=client)


def _execute(client, pipe, scripts, raise_on_error):
    """``pipe.execute(raise_on_error)``; the commands the server refused as NOSCRIPT (it
    lost a script of ``scripts`` — redis-py ``Script`` objects — since it was loaded)
    sent again once the script is loaded."""
    commands = list(pipe.command_stack)
    results = pipe.execute(raise_on_error=False)
    by_sha = {script.sha: script for script in scripts}
    lost = [
        i
        for i, (result, (command_args, _)) in enumerate(zip(results, commands, strict=True))
        if isinstance(result, redis.exceptions.NoScriptError) and command_args[1] in by_sha
    ]
    if lost:
        for sha in {commands[i][0][1] for i in lost}:
            by_sha[sha].sha = client.script_load(by_sha[sha].script)
        again = client.pipeline(transaction=False)
        for i in lost:
            command_args, options = commands[i]
            again.execute_command(*command_args, **options)
        for i, result in zip(lost, again.execute(raise_on_error=False), strict=True):
            results[i] = result
    if raise_on_error:
        pipe.raise_first_error(commands, results)  # as ``execute`` raises it
    return results


# The acknowledgement of many messages in one call (Dramatiq's script takes one per call,
# and each call runs its whole preamble): for each id, what Dramatiq's "ack" does — the id
# leaves the set of messages this worker fetched and, only if it was still there, its body
# is deleted (a message put back for another worker meanwhile keeps its body) — and this
# worker's heartbeat, as every call of Dramatiq's script records it. Returns how many were
# acknowledged.
# KEYS: the worker's set of fetched ids of the queue, the queue's hash of bodies, the
# heartbeats; ARGV: the time in ms, the worker's id, then the message ids.
_ACK_MANY = """
redis.call("zadd", KEYS[3], ARGV[1], ARGV[2])
local acknowledged = 0
for i = 3, #ARGV do
    if redis.call("srem", KEYS[1], ARGV[i]) > 0 then
        redis.call("hdel", KEYS[2], ARGV[i])
        acknowledged = acknowledged + 1
    end
end
return acknowledged
"""
_ACKS_PER_CALL = 1000


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
        calls = [ids[i : i + _ACKS_PER_CALL] for i in range(0, len(ids), _ACKS_PER_CALL)]
        try:
            with self.broker.pipelined(raise_on_error=False) as results:
                for chunk in calls:
                    self.broker.ack_many(self.queue_name, chunk)
                if fetch:
                    self.broker.do_fetch(self.queue_name, fetch)
        except BaseException as exc:
            self.gathered.give_back(ids)
            if isinstance(exc, redis.ConnectionError):
                raise ConnectionClosed(exc) from None
            raise
        refused = [
            (chunk, result)
            for chunk, result in zip(calls, results, strict=False)
            if isinstance(result, Exception)
        ]
        if refused:
            # as Dramatiq does with an ack Redis refuses: not retried (it would be refused
            # again and hold up the fetch); the message is delivered again when this
            # worker restarts, and finds its work done
            log.warning(
                "Redis refused %d of %d acknowledgements on %s (%s); those messages will be "
                "delivered again when this worker restarts",
                sum(len(chunk) for chunk, _ in refused),
                len(ids),
                self.queue_name,
                refused[0][1],
            )
        if not fetch:
            return []
        if isinstance(results[-1], Exception):
            raise results[-1]
        return results[-1]


class _OnlyHookedMiddleware:
    """Dramatiq's broker calls every middleware's hook for every signal: a ``getattr`` and
    a call each, 36 per message with Provisor's nine middleware (before and after the
    message, before and after its acknowledgement), of which 24 reach the base class's
    empty method. This calls only the middleware whose class (or the instance itself)
    defines the hook, in Dramatiq's order (``after_`` ones in reverse), with its error
    handling; the lists are made again whenever middleware is added."""

    def add_middleware(self, middleware, **kwargs):
        super().add_middleware(middleware, **kwargs)  # it emits nothing itself
        self._hooked = {}

    def _hooked_by(self, hook):
        hooked = self.__dict__.setdefault("_hooked", {})
        found = hooked.get(hook)
        if found is None:
            empty = getattr(Middleware, hook, None)
            found = [
                middleware
                for middleware in self.middleware
                if hook in vars(middleware) or getattr(type(middleware), hook, empty) is not empty
            ]
            if hook.startswith("after_"):
                found.reverse()
            found = hooked[hook] = tuple(found)
        return found

    def emit_before(self, signal, *args, **kwargs):
        self._call_hooks("before_" + signal, args, kwargs, MiddlewareError)

    def emit_after(self, signal, *args, **kwargs):
        self._call_hooks("after_" + signal, args, kwargs, ())

    def _call_hooks(self, hook, args, kwargs, raised):
        """Each middleware's ``hook``; an exception of the ``raised`` kinds goes to the
        caller (a ``before_`` hook's MiddlewareError, such as SkipMessage), any other is
        logged and the next middleware is called, as Dramatiq does."""
        for middleware in self._hooked_by(hook):
            try:
                getattr(middleware, hook)(self, *args, **kwargs)
            except raised:
                raise
            except Exception:
                self.logger.critical(
                    "Unexpected failure in %s of %r.", hook, middleware, exc_info=True
                )


class EmbeddedBroker(_OnlyHookedMiddleware, StubBroker):
    """The in-process broker of ``provisor serve`` (no ``REDIS_URL``): Dramatiq's
    StubBroker, calling only the middleware hooks that do something."""


class BatchingRedisBroker(_OnlyHookedMiddleware, RedisBroker):
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
        self._dispatch_script = self.scripts["dispatch"]
        self.scripts["dispatch"] = _PipelinedDispatch(self._dispatch_script, self._batches)
        self._ack_many_script = self.client.register_script(_ACK_MANY)
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

    def _scripts(self):
        return (self._dispatch_script, self._ack_many_script)

    def ack_many(self, queue_name, redis_message_ids):
        """Inside :meth:`pipelined`: acknowledge these messages of ``queue_name`` fetched
        by this process, in one call (see ``_ACK_MANY``)."""
        keys = [
            f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}",
            f"{self.namespace}:{queue_name}.msgs",
            f"{self.namespace}:__heartbeats__",
        ]
        args = [int(time.time() * 1000), self.broker_id, *redis_message_ids]
        self._batches.pipe.evalsha(self._ack_many_script.sha, len(keys), *keys, *args)

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
            results.extend(_execute(self.client, pipe, self._scripts(), raise_on_error))

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
            _execute(self.client, pipe, self._scripts(), True)


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
        broker = EmbeddedBroker()
    broker.add_middleware(AppContextMiddleware())
    broker.add_middleware(GracefulShutdown())
    broker.add_middleware(WorkerMetrics(settings["WORKER_METRICS_PORT"]))
    return broker


broker = make_broker()
dramatiq.set_broker(broker)
