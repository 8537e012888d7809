"""The Redis broker's batches (``actors.broker.BatchingRedisBroker``), against a real Redis
and a real Dramatiq worker: messages sent inside ``batch()`` reach Redis together at the
end of the block, each exactly once, and are run like any other message.
"""

import threading
import time
import uuid

import dramatiq
import pytest
import redis

from actors.broker import BatchingRedisBroker, batch
from tests.support import free_port, wait_for

pytestmark = pytest.mark.redis


@pytest.fixture
def broker(redis_url):
    namespace = f"provisor-test-batch-{uuid.uuid4().hex[:8]}"
    broker = BatchingRedisBroker(url=redis_url, namespace=namespace)
    broker.seen = []
    lock = threading.Lock()

    def record(n):
        with lock:
            broker.seen.append(n)

    broker.record = dramatiq.actor(record, broker=broker, actor_name="record", queue_name="batch")
    yield broker
    drop_namespace(redis_url, namespace)
    broker.close()


def drop_namespace(redis_url, namespace):
    """Remove a test's keys from the shared Redis."""
    conn = redis.Redis.from_url(redis_url)
    keys = list(conn.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        conn.delete(*keys)


def waiting(broker, queue="batch"):
    """Messages of ``queue`` stored in Redis (the broker's hash of message bodies)."""
    return broker.client.hlen(f"{broker.namespace}:{queue}.msgs")


def run_worker(broker, until):
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_for(until, timeout=20)
    finally:
        worker.stop()


def test_a_batch_reaches_redis_at_the_end_of_its_block_and_each_message_runs_once(broker):
    with batch(broker):
        for n in range(1200):
            broker.record.send(n)
        assert waiting(broker) == 0  # queued on the pipeline, not sent yet
    assert waiting(broker) == 1200
    run_worker(broker, lambda: len(broker.seen) >= 1200)
    time.sleep(0.3)
    assert sorted(broker.seen) == list(range(1200))


def test_delayed_messages_in_a_batch_wait_their_delay(broker):
    with batch(broker):
        for n in range(5):
            broker.record.send_with_options(args=(n,), delay=300)
    assert waiting(broker, "batch.DQ") == 5
    assert waiting(broker) == 0
    run_worker(broker, lambda: len(broker.seen) >= 5)
    assert sorted(broker.seen) == [0, 1, 2, 3, 4]


def test_outside_a_batch_and_in_other_threads_messages_go_at_once(broker):
    broker.record.send(1)
    assert waiting(broker) == 1
    with batch(broker):
        broker.record.send(2)
        other = threading.Thread(target=broker.record.send, args=(3,))
        other.start()
        other.join()
        assert waiting(broker) == 2  # the other thread's message did not wait for this block
        with batch(broker):  # a nested block joins the outer one
            broker.record.send(4)
        assert waiting(broker) == 2
    assert waiting(broker) == 4


def test_a_block_that_raises_sends_nothing(broker):
    with pytest.raises(RuntimeError), batch(broker):
        broker.record.send(1)
        raise RuntimeError("stop")
    assert waiting(broker) == 0
    broker.record.send(2)  # the broker is still usable, unbatched
    assert waiting(broker) == 1


def test_redis_down_is_raised_at_the_end_of_the_block():
    broker = BatchingRedisBroker(url=f"redis://127.0.0.1:{free_port()}/0", namespace="nowhere")
    record = dramatiq.actor(lambda n: None, broker=broker, actor_name="record")
    with pytest.raises(redis.ConnectionError), batch(broker):
        record.send(1)
        record.send(2)
    broker.close()


def test_the_stub_broker_sends_one_by_one():
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker()
    record = dramatiq.actor(lambda n: None, broker=broker, actor_name="record", queue_name="q")
    with batch(broker):
        record.send(1)
        assert broker.queues["q"].qsize() == 1


def test_dispatch_sends_many_ids_in_batches_of_its_size(broker, monkeypatch):
    import actors
    from app.services import dispatch

    pipelines = []
    make_pipeline = broker.client.pipeline

    def counting_pipeline(*args, **kwargs):
        pipelines.append(1)
        return make_pipeline(*args, **kwargs)

    monkeypatch.setattr(broker.client, "pipeline", counting_pipeline)
    monkeypatch.setattr(actors, "broker", broker)
    monkeypatch.setattr(actors, "run_operation", broker.record)
    dispatch._send("run_operation", list(range(2 * dispatch.BATCH + 2)), None)
    assert waiting(broker) == 2 * dispatch.BATCH + 2
    assert len(pipelines) == 3
    dispatch._send("run_operation", [7], None)  # one id: sent as is, no pipeline
    assert waiting(broker) == 2 * dispatch.BATCH + 3
    assert len(pipelines) == 3


def test_dispatch_logs_a_batch_redis_refused_and_goes_on(monkeypatch, caplog):
    import actors
    from app.services import dispatch

    broker = BatchingRedisBroker(url=f"redis://127.0.0.1:{free_port()}/0", namespace="nowhere")
    record = dramatiq.actor(lambda n: None, broker=broker, actor_name="record")
    monkeypatch.setattr(actors, "broker", broker)
    monkeypatch.setattr(actors, "run_operation", record)
    dispatch._send("run_operation", list(range(1, dispatch.BATCH + 3)), None)
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.services.dispatch"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(
        f"cannot send run_operation(1 … {dispatch.BATCH}, {dispatch.BATCH} ids) to the broker ("
    )
    assert warnings[1].startswith(
        f"cannot send run_operation({dispatch.BATCH + 1} … {dispatch.BATCH + 2}, 2 ids)"
    )
    assert all(w.endswith("; the sweep will") for w in warnings)
    broker.close()


def acks_held(broker, queue="batch"):
    """Messages Redis holds as fetched by this broker and not acknowledged yet."""
    return broker.client.scard(f"{broker.namespace}:__acks__.{broker.broker_id}.{queue}")


def test_acknowledgements_are_gathered_and_sent_with_the_next_fetch(broker, monkeypatch):
    sent = []  # per pipeline: the ids in each of its calls of the acknowledging script
    execute = type(broker.client.pipeline()).execute

    def counting_execute(pipe, *args, **kwargs):
        sha = broker._ack_many_script.sha
        sent.append([len(c[0]) - 8 for c in pipe.command_stack if c[0][:2] == ("EVALSHA", sha)])
        return execute(pipe, *args, **kwargs)

    monkeypatch.setattr(type(broker.client.pipeline()), "execute", counting_execute)
    with batch(broker):
        for n in range(300):
            broker.record.send(n)
    sent.clear()
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: len(broker.seen) >= 300, timeout=20)
        # while the worker runs on, idle: the last ones go with its next (empty) fetch
        wait_for(lambda: waiting(broker) == 0 and acks_held(broker) == 0, timeout=5)
    finally:
        worker.stop()
    assert sorted(broker.seen) == list(range(300))
    # 300 acknowledgements, each sent once, in fewer round trips than messages (each with
    # a fetch or alone), several in one call of the script
    calls = [ids for pipeline in sent for ids in pipeline]
    assert sum(calls) == 300, sent
    assert len([pipeline for pipeline in sent if pipeline]) < 300, sent
    assert max(calls) > 2 and all(len(pipeline) <= 1 for pipeline in sent), sent


def test_acknowledgements_left_at_a_stop_are_sent_when_the_consumer_closes(broker):
    for n in range(20):
        broker.record.send(n)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=1000)
    worker.start()
    wait_for(lambda: len(broker.seen) >= 20, timeout=20)
    worker.stop()  # at once: the consumer may still be in its backoff sleep
    assert waiting(broker) == 0
    assert acks_held(broker) == 0
    assert broker.gathered_acks("batch").ids == []


def test_acknowledgements_that_cannot_be_sent_are_kept_for_the_next_try(broker):
    from dramatiq.errors import ConnectionClosed

    from actors.broker import _GatheringConsumer

    broker.record.send(1)
    consumer = broker.consume("batch", prefetch=4, timeout=100)
    message = next(consumer)
    assert message is not None and tuple(message.args) == (1,)
    assert acks_held(broker) == 1
    consumer.ack(message)
    assert isinstance(consumer, _GatheringConsumer)
    assert acks_held(broker) == 1  # gathered, not sent yet
    real_client = broker.client
    broker.client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(ConnectionClosed):
            next(consumer)
        assert len(broker.gathered_acks("batch").ids) == 1  # kept
    finally:
        broker.client = real_client
    # a new consumer of the queue (as Dramatiq makes after a connection error) sends them
    other = broker.consume("batch", prefetch=4, timeout=100)
    assert next(other) is None  # nothing to fetch; the acknowledgement went
    assert acks_held(broker) == 0
    assert waiting(broker) == 0
    other.close()
    consumer.close()


def test_a_failed_message_is_still_rejected_at_once(broker):
    broker.record.send(1)
    consumer = broker.consume("batch", prefetch=4, timeout=100)
    message = next(consumer)
    message.fail()
    consumer.nack(message)
    assert acks_held(broker) == 0
    assert waiting(broker) == 0
    assert broker.client.hlen(f"{broker.namespace}:batch.XQ.msgs") == 1
    consumer.close()


def test_an_acknowledgement_lost_with_its_process_means_the_message_comes_again(redis_url):
    """A process that dies with acknowledgements gathered and not sent: once its heartbeat
    is old, another process's broker puts those messages back and they run again (every
    actor turns such a message away: tests/test_activation.py)."""
    namespace = f"provisor-test-lost-ack-{uuid.uuid4().hex[:8]}"
    dead = BatchingRedisBroker(url=redis_url, namespace=namespace, heartbeat_timeout=200)
    dramatiq.actor(lambda n: None, broker=dead, actor_name="record", queue_name="batch")
    alive = BatchingRedisBroker(
        url=redis_url, namespace=namespace, heartbeat_timeout=200, maintenance_chance=1_000_000
    )
    try:
        dead.get_actor("record").send(1)
        consumer = dead.consume("batch", prefetch=4, timeout=100)
        first = next(consumer)
        consumer.ack(first)  # gathered; the process "dies" before its consumer sends it
        assert acks_held(dead) == 1
        time.sleep(0.4)  # its heartbeat gets old
        other = alive.consume("batch", prefetch=4, timeout=100)
        again = wait_for(lambda: next(other), timeout=5, message="the message again")
        assert again.message_id == first.message_id and tuple(again.args) == (1,)
        other.ack(again)
        other.close()
        assert waiting(alive) == 0 and acks_held(alive) == 0
    finally:
        drop_namespace(redis_url, namespace)
        dead.close()
        alive.close()


def test_an_acknowledgement_redis_refuses_is_logged_and_does_not_hold_up_the_fetch(
    broker, monkeypatch, caplog
):
    broker.record.send(1)
    consumer = broker.consume("batch", prefetch=4, timeout=100)
    first = next(consumer)
    consumer.ack(first)
    broker.record.send(2)

    def refused_ack(queue_name, redis_message_ids):
        # an EVALSHA of a script Redis does not have: a real refusal (NOSCRIPT), on the
        # pipeline the consumer is filling
        broker._batches.pipe.execute_command("EVALSHA", "0" * 40, 0)

    monkeypatch.setattr(broker, "ack_many", refused_ack, raising=False)
    with caplog.at_level("WARNING", logger="actors.broker"):
        second = next(consumer)  # the refused ack went with this fetch
    assert second is not None and tuple(second.args) == (2,)
    assert broker.gathered_acks("batch").ids == []  # not retried
    warnings = [r.getMessage() for r in caplog.records if r.name == "actors.broker"]
    assert len(warnings) == 1 and warnings[0].startswith(
        "Redis refused 1 of 1 acknowledgements on batch (No matching script"
    ), warnings  # the server's own words
    assert acks_held(broker) == 2  # the first comes again when this worker restarts
    monkeypatch.undo()
    consumer.ack(second)
    consumer.close()
    assert acks_held(broker) == 1


def test_a_pipeline_asks_redis_nothing_before_its_commands(broker, monkeypatch):
    """The broker's pipelines (a batch of messages, a fetch with its acknowledgements)
    are one round trip each: redis-py asks ``SCRIPT EXISTS`` first for a pipeline that
    registered a script (one round trip more per fetch); the broker's do not register."""
    asked = []
    pipeline = type(broker.client.pipeline())
    immediate = pipeline.immediate_execute_command

    def recording(pipe, *args, **options):
        asked.append(args[0])
        return immediate(pipe, *args, **options)

    monkeypatch.setattr(pipeline, "immediate_execute_command", recording)
    with batch(broker):
        for n in range(50):
            broker.record.send(n)
    assert waiting(broker) == 50
    run_worker(broker, lambda: len(broker.seen) >= 50 and acks_held(broker) == 0)
    assert sorted(broker.seen) == list(range(50))
    assert broker.gathered_acks("batch").ids == []
    assert asked == []


def test_a_redis_that_lost_the_broker_script_is_given_it_again(private_redis):
    """A Redis that does not have the broker's script (new, restarted, SCRIPT FLUSH)
    answers NOSCRIPT to the pipelined commands: the script is loaded and those commands
    sent again, each once — a batch's messages and a fetch with its acknowledgements."""
    broker = BatchingRedisBroker(url=private_redis.url, namespace="provisor-test-noscript")
    seen = []
    broker_actor = dramatiq.actor(
        seen.append, broker=broker, actor_name="record", queue_name="batch"
    )
    try:
        assert broker.client.script_exists(broker._dispatch_script.sha) == [False]
        with batch(broker):
            for n in range(30):
                broker_actor.send(n)
        assert waiting(broker) == 30  # each once
        consumer = broker.consume("batch", prefetch=10, timeout=100)
        first = [next(consumer) for _ in range(10)]
        for message in first:
            consumer.ack(message)
        broker.client.script_flush()
        rest = []
        while len(rest) < 20:  # the acknowledgements go with these fetches
            message = next(consumer)
            if message is not None:
                rest.append(message)
                consumer.ack(message)
        consumer.close()
        ids = [m.args[0] for m in first + rest]
        assert sorted(ids) == list(range(30))
        assert waiting(broker) == 0 and acks_held(broker) == 0
        assert broker.client.script_exists(broker._dispatch_script.sha) == [True]
    finally:
        broker.close()


def test_a_late_acknowledgement_leaves_a_message_put_back_to_the_worker_that_has_it(redis_url):
    """The gathered acknowledgements go in one call of Provisor's script, which does per
    message what Dramatiq's does: a message another worker was given meanwhile (this
    one's heartbeat was old) keeps its body, and that worker runs and acknowledges it;
    the call records this worker's heartbeat, as each call of Dramatiq's script does."""
    namespace = f"provisor-test-late-ack-{uuid.uuid4().hex[:8]}"
    slow = BatchingRedisBroker(url=redis_url, namespace=namespace, heartbeat_timeout=200)
    dramatiq.actor(lambda n: None, broker=slow, actor_name="record", queue_name="batch")
    alive = BatchingRedisBroker(
        url=redis_url, namespace=namespace, heartbeat_timeout=200, maintenance_chance=1_000_000
    )
    heartbeats = f"{namespace}:__heartbeats__"
    try:
        slow.get_actor("record").send(1)
        consumer = slow.consume("batch", prefetch=1, timeout=100)
        first = next(consumer)
        time.sleep(0.4)  # its heartbeat gets old: the other worker is given the message
        other = alive.consume("batch", prefetch=4, timeout=100)
        again = wait_for(lambda: next(other), timeout=5, message="the message again")
        assert again.message_id == first.message_id
        # the other worker's maintenance forgot this one (no fetched message left to it)
        assert slow.client.zscore(heartbeats, slow.broker_id) is None
        consumer.ack(first)
        consumer.close()  # too late: sent now, as a stopping worker sends what it gathered
        assert slow.client.zscore(heartbeats, slow.broker_id) is not None  # as Dramatiq's ack
        assert slow.client.hexists(f"{namespace}:batch.msgs", again.options["redis_message_id"])
        other.ack(again)
        other.close()
        assert waiting(alive) == 0 and acks_held(alive) == 0 and acks_held(slow) == 0
    finally:
        drop_namespace(redis_url, namespace)
        slow.close()
        alive.close()
