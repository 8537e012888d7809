"""Instructions per message of the worker's Redis consumer: fetch, hand out, acknowledge.

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python -m bench.consumer 2000 --callgrind

``N`` no-op messages are sent in one batch to a fresh namespace on the benchmark's Redis
(``BENCH_REDIS_URL``, db 12), then consumed in this thread as a worker's consumer thread
does: ``next()`` on the project's consumer (``prefetch`` 16, the default of 8 worker
threads), each message acknowledged at once (the acknowledgements go with the next fetch).
Only the consuming is counted (``callgrind_control`` switches counting on and off from
inside, as ``bench.inprocess`` does). Without ``--callgrind`` it prints the CPU time per
message instead. Run it from each checkout to compare two versions of actors/broker.py
(the current directory comes first on the path).
"""

import sys
import time
import uuid

from bench import common


def main():
    counting = "--callgrind" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--callgrind"]
    n = int(args[0]) if args else 2000
    import dramatiq

    from actors.broker import BatchingRedisBroker, batch

    namespace = f"provisor-bench-consumer-{uuid.uuid4().hex[:8]}"
    broker = BatchingRedisBroker(url=common.REDIS_URL, namespace=namespace)
    actor = dramatiq.actor(lambda n: None, broker=broker, actor_name="noop", queue_name="bench")
    try:
        with batch(broker):
            for i in range(n):
                actor.send(i)
        consumer = broker.consume("bench", prefetch=16, timeout=100)
        common.callgrind_control(counting, "-i", "on")
        start, got = time.thread_time(), 0
        while got < n:
            message = next(consumer)
            if message is not None:
                consumer.ack(message)
                got += 1
        consumer.close()
        cpu = (time.thread_time() - start) / n
        common.callgrind_control(counting, "--dump=consume")
        common.callgrind_control(counting, "-i", "off")
    finally:
        common.clean_namespace(namespace)
        broker.close()
    print(f"{n} messages consumed and acknowledged; CPU per message {cpu * 1e6:.1f} us")
    if counting:
        total = common.callgrind_counts()["consume"]
        print(f"instructions per message {total / n:,.0f} (callgrind, this process)")


if __name__ == "__main__":
    main()
