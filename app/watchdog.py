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
import threading


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
        self._timer = None

    def _fire(self):
        with self._lock:
            if not self._armed:
                return
            self.fired = True
            _set_async_exc(self._thread, DeadlineExceeded)

    def __enter__(self):
        self._thread = threading.get_ident()
        self._armed = True
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        with self._lock:
            self._armed = False
            self._timer.cancel()
            if self.fired and exc_type is not DeadlineExceeded:
                # raised but not delivered yet (the block ended meanwhile): withdraw it
                _set_async_exc(self._thread, None)
        return False
