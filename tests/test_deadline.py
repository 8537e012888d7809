"""An attempt ends by its module's timeout, whatever the panel does, so its lease never
runs out while it is still talking and a reclaimed attempt never overlaps a live one.

The audit's case: an endpoint that sends one byte every quarter of a second keeps every
socket read short (the timeout is per read) and the call alive for ten seconds, far past
the lease; the sweep reclaimed it and started a second attempt while the first was still
talking.
"""

import threading
import time

import pytest

from app.db import database
from app.models import Attempt, Operation
from app.services import operations
from app.watchdog import Deadline, DeadlineExceeded
from tests.support import wait_for


def test_the_deadline_interrupts_a_call_that_keeps_going():
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded), Deadline(0.3):
        while True:
            time.sleep(0.02)
    # not before it; the bound is loose (a loaded machine): without it the loop never ends
    assert 0.3 <= time.monotonic() - started < 3.0


def test_a_block_that_ends_in_time_is_never_interrupted_afterwards():
    """The deadline firing as the block ends is withdrawn: it never reaches the code
    after it (tried many times around the moment it fires)."""
    for i in range(60):
        fired = None
        try:
            with Deadline(0.01 + (i % 6) * 0.001) as deadline:
                time.sleep(0.01)
            fired = deadline.fired
            for _ in range(2000):  # code after the block: never interrupted
                pass
        except DeadlineExceeded:
            assert fired is None  # only ever inside the block
    with Deadline(5) as deadline:
        pass
    time.sleep(0.05)
    assert deadline.fired is False


def test_a_module_swallowing_exceptions_is_still_stopped():
    swallowed = []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded), Deadline(0.2):
        while time.monotonic() - started < 5:
            try:
                time.sleep(0.02)
            except Exception as exc:  # a careless module
                swallowed.append(exc)
    assert swallowed == [] and time.monotonic() - started < 4.0  # stopped, not the loop's end


def test_a_trickling_endpoint_is_stopped_at_the_deadline_and_never_overlapped(
    app, api, http_endpoint
):
    http_endpoint.script = ["trickle", "trickle"]
    http_endpoint.trickle_bytes, http_endpoint.trickle_interval = 40, 0.25  # 10 s
    _, _, tariff, client = api.catalog(
        "http", http_endpoint.config(timeout=1), retry_delay=1, max_attempts=2
    )
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op_id = paid["operation_id"]
    reclaimed = []
    stop = threading.Event()

    def sweeping():  # a scheduler sweeping every 0.2 s meanwhile
        while not stop.is_set():
            with app.app_context(), database.connection_context():
                reclaimed.append(operations.sweep()["reclaimed"])
            time.sleep(0.2)

    sweeper = threading.Thread(target=sweeping)
    sweeper.start()
    try:
        op = api.wait_operation(op_id, ("manual",), timeout=20)
    finally:
        stop.set()
        sweeper.join(10)
    assert sum(reclaimed) == 0, "the sweep reclaimed a live attempt"
    with app.app_context(), database.connection_context():
        attempts = list(Attempt.select().where(Attempt.operation == op_id).order_by(Attempt.number))
        final = Operation.get_by_id(op_id)
    assert [a.outcome for a in attempts] == ["temporary_error", "temporary_error"]
    for attempt in attempts:
        assert "ran past its deadline of 1 s" in attempt.error, attempt.error
        took = (attempt.finished_at - attempt.started_at).total_seconds()
        # the deadline and the read it was in (a loaded machine), far from the 10 s trickle
        assert took < 5, took
    assert attempts[1].started_at >= attempts[0].finished_at  # never overlapping
    assert final.status == "manual" and op["status"] == "manual"
    wait_for(lambda: len(http_endpoint.calls("open")) == 2, timeout=5)


def test_an_interruption_withdrawn_before_delivery_never_arrives():
    """The stop raised while the thread sits in a blocking call arrives when that call
    returns; withdrawn meanwhile, it never does (and Dramatiq's own use of the same C
    function keeps working: the ctypes function is left as it was)."""
    import ctypes

    from app import watchdog

    def sleeper(outcome, withdraw):
        ident = threading.get_ident()
        outcome["ident"] = ident
        try:
            time.sleep(0.6)  # blocking: nothing is delivered before it returns
            for _ in range(1000):
                pass
            outcome["result"] = "finished"
        except DeadlineExceeded:
            outcome["result"] = "interrupted"

    for withdraw, expected in ((False, "interrupted"), (True, "finished")):
        outcome = {}
        thread = threading.Thread(target=sleeper, args=(outcome, withdraw))
        thread.start()
        wait_for(lambda outcome=outcome: "ident" in outcome, timeout=5)
        time.sleep(0.1)
        watchdog._set_async_exc(outcome["ident"], DeadlineExceeded)
        if withdraw:
            watchdog._set_async_exc(outcome["ident"], None)
        thread.join(5)
        assert outcome["result"] == expected
    assert ctypes.pythonapi.PyThreadState_SetAsyncExc.argtypes is None
