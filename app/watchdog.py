"""The deadline of an attempt: a module call is stopped when it runs past it.

A socket timeout bounds one read, not a call: an endpoint that sends one byte a second
keeps every read short and the call alive for ever, past the operation's lease, and the
sweep would then start a second attempt while the first is still talking to the panel.
:class:`Deadline` stops the call itself: when the time is up it raises
:class:`DeadlineExceeded` in the thread running the module (``PyThreadState_SetAsyncExc``,
as Dramatiq's time limit does). The exception arrives at the thread's next Python
instruction, so a blocking system call (a socket read) finishes first: a module bounds
those with its own timeouts (``ModuleType.io_timeout``), and the lease covers the deadline
plus one of them. ``DeadlineExceeded`` is a ``BaseException``: a module's ``except
Exception`` does not swallow it.
"""

import ctypes
import heapq
import itertools
import os
import threading
import time


class DeadlineExceeded(BaseException):
    """The attempt ran past its deadline (raised inside the module's call)."""


def _set_async_exc(thread_id, exc):
    """Raise ``exc`` in thread ``thread_id`` at its next instruction; ``None`` withdraws
    one not delivered yet (NULL to the C API). The shared ctypes function is called as
    Dramatiq calls it, without setting its ``argtypes`` (that would change it for Dramatiq's
    own calls too)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exc is None else ctypes.py_object(exc)
    )


class Deadline:
    """``with Deadline(seconds):`` — the block is interrupted with
    :class:`DeadlineExceeded` once ``seconds`` have passed (in this thread only).

    Leaving the block disarms it; an interruption that was raised but not yet delivered
    is withdrawn then, so it never reaches code after the block. ``fired`` tells whether
    the time ran out."""

    def __init__(self, seconds):
        self.seconds = max(float(seconds), 0.001)
        self.fired = False
        self._lock = threading.Lock()
        self._armed = False
        self._thread = None

    def _fire(self):
        with self._lock:
            if not self._armed:
                return
            self.fired = True
            _set_async_exc(self._thread, DeadlineExceeded)

    def __enter__(self):
        self._thread = threading.get_ident()
        self._armed = True
        _watcher().add(self, time.monotonic() + self.seconds)
        return self

    def __exit__(self, exc_type, exc, tb):
        with self._lock:
            self._armed = False
            if self.fired and exc_type is not DeadlineExceeded:
                # raised but not delivered yet (the block ended meanwhile): withdraw it
                _set_async_exc(self._thread, None)
        _watcher().disarmed()
        return False


class _Watcher(threading.Thread):
    """One thread per process fires every armed :class:`Deadline` at its time. (A timer
    thread per deadline cost more than a whole no-op message: starting a thread waits
    until it runs.) A deadline left in time stays in the heap, disarmed, until its time
    comes or the heap is compacted."""

    COMPACT_AT = 1024

    def __init__(self):
        super().__init__(name="provisor-deadlines", daemon=True)
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._heap = []
        self._seq = itertools.count()
        self._disarmed = 0

    def add(self, deadline, when):
        with self._cond:
            if len(self._heap) >= self.COMPACT_AT and self._disarmed * 2 >= len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2]._armed]
                heapq.heapify(self._heap)
                self._disarmed = 0
            heapq.heappush(self._heap, (when, next(self._seq), deadline))
            if self._heap[0][2] is deadline:
                self._cond.notify()  # earlier than what the thread waits for

    def disarmed(self):
        with self._cond:
            self._disarmed += 1

    def run(self):
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                _, _, deadline = heapq.heappop(self._heap)
                if not deadline._armed:
                    self._disarmed = max(0, self._disarmed - 1)
            deadline._fire()


_watcher_lock = threading.Lock()
_the_watcher = None


def _watcher():
    """This process's watcher thread (started on first use, again in a forked child)."""
    global _the_watcher
    watcher = _the_watcher
    if watcher is not None and watcher.pid == os.getpid():
        return watcher
    with _watcher_lock:
        if _the_watcher is None or _the_watcher.pid != os.getpid():
            _the_watcher = _Watcher()
            _the_watcher.start()
        return _the_watcher
