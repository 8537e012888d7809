"""The brokers call only the middleware hooks that do something
(``actors.broker._OnlyHookedMiddleware``): the same hooks, in the same order, with the same
error handling as Dramatiq's own broker, which calls every middleware's hook for every
signal."""

import logging

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, SkipMessage

from actors.broker import EmbeddedBroker


class Recording(Middleware):
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def before_process_message(self, broker, message):
        self.calls.append(("before_process_message", self.name))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self.calls.append(("after_process_message", self.name))


class Failing(Middleware):
    def after_process_message(self, broker, message, *, result=None, exception=None):
        raise RuntimeError("a broken hook")


class Skipping(Middleware):
    def before_process_message(self, broker, message):
        raise SkipMessage("skipped")


def _brokers(make_middleware):
    """A Dramatiq StubBroker and an EmbeddedBroker with the same kinds of middleware, and
    each one's list of calls."""
    made = []
    for cls in (StubBroker, EmbeddedBroker):
        calls = []
        broker = cls(middleware=[])
        for middleware in make_middleware(calls):
            broker.add_middleware(middleware)
        made.append((broker, calls))
    return made


def _signals(broker):
    message = dramatiq.Message(queue_name="default", actor_name="a", args=(), kwargs={}, options={})
    for signal in ("process_message", "ack", "nack", "skip_message"):
        broker.emit_before(signal, message)
        broker.emit_after(signal, message)


def test_the_same_hooks_are_called_in_the_same_order():
    def middleware(calls):
        first, second = Recording("first", calls), Recording("second", calls)
        plain = Middleware()  # no hook of its own: its class's are the base's, empty
        own = Middleware()  # a hook set on the instance itself
        own.before_ack = lambda broker, message: calls.append(("before_ack", "own"))
        return [first, plain, own, second]

    (stub, expected), (embedded, got) = _brokers(middleware)
    _signals(stub)
    _signals(embedded)
    assert (
        got
        == expected
        == [
            ("before_process_message", "first"),
            ("before_process_message", "second"),
            ("after_process_message", "second"),
            ("after_process_message", "first"),
            ("before_ack", "own"),
        ]
    )
    # middleware added later is called too
    late = Recording("late", got)
    embedded.add_middleware(late)
    got.clear()
    embedded.emit_before("process_message", None)
    assert got == [("before_process_message", n) for n in ("first", "second", "late")]


def test_a_failing_hook_is_logged_and_the_others_run(caplog):
    (stub, expected), (embedded, got) = _brokers(
        lambda calls: [Recording("first", calls), Failing(), Recording("last", calls)]
    )
    for broker in (stub, embedded):
        with caplog.at_level(logging.CRITICAL):
            caplog.clear()
            broker.emit_after("process_message", None)
        assert [r.getMessage() for r in caplog.records] == [
            f"Unexpected failure in after_process_message of {broker.middleware[1]!r}."
        ]
    assert got == expected == [("after_process_message", n) for n in ("last", "first")]


def test_a_middleware_error_before_a_message_is_raised():
    (stub, expected), (embedded, got) = _brokers(lambda calls: [Skipping(), Recording("x", calls)])
    for broker in (stub, embedded):
        with pytest.raises(SkipMessage):
            broker.emit_before("process_message", None)
    assert got == expected == []
