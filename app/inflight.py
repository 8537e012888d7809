"""The attempts this process is running right now, and how to end their module calls at
once when the worker is asked to stop.

``operations.run`` registers each claimed attempt (:func:`attempt`) and marks the module
call inside it (:meth:`Attempt.calling`). A stopping worker (``actors.middleware.
GracefulShutdown``) waits a little for them (:func:`running`), hands the ones still in a
module call back to the queue (``operations.hand_back``) and then ends those calls
(:func:`end`):

- every socket the call opened is shut down, so a call blocked on a slow panel returns
  at once instead of when the panel answers (an exception raised in a thread cannot
  interrupt a blocking read: Python delivers it only when the read returns);
- Dramatiq's ``Shutdown`` exception is raised in the thread, for module code that is not
  waiting on a socket (a sleep between two polls, a loop).

The sockets are found with an audit hook on ``socket.connect`` (:func:`sys.addaudithook`):
the only place that sees every connection whatever library a module type uses (requests,
PyMySQL, smtplib, acme). A connection made by a C library (libpq for the postgresql
module type) is not seen; its thread still gets ``Shutdown`` when that call returns.
Dramatiq's own ``ShutdownNotifications`` is not used: it interrupts every thread at once,
including one that is recording the result its panel just gave, and that result would
be lost.
"""

import contextlib
import os
import socket
import sys
import threading

from dramatiq.middleware import Shutdown
from dramatiq.middleware.threading import raise_thread_exception

__all__ = ["Attempt", "Shutdown", "attempt", "end", "running"]

_lock = threading.Lock()
_attempts = {}  # thread id -> Attempt
_local = threading.local()


class Attempt:
    """An attempt running in this process: its operation, its number, its thread."""

    def __init__(self, operation_id, number):
        self.operation_id = operation_id
        self.number = number
        self.thread_id = threading.get_ident()
        self.in_call = False  # inside the module's code (not claiming or recording)
        self.ended = False  # handed back and ended by end(): nothing more to record
        self.sockets = []  # (file descriptor, inode) of each connection its call made

    @contextlib.contextmanager
    def calling(self):
        """Around the module call: its connections are noted, :func:`end` may end it."""
        with _lock:
            self.in_call = True
        _local.attempt = self
        try:
            yield
        finally:
            _local.attempt = None
            with _lock:
                self.in_call = False


@contextlib.contextmanager
def attempt(operation_id, number):
    """Register an attempt of this thread for as long as it runs."""
    current = Attempt(operation_id, number)
    with _lock:
        _attempts[current.thread_id] = current
    try:
        yield current
    finally:
        with _lock:
            if _attempts.get(current.thread_id) is current:
                del _attempts[current.thread_id]


def running():
    """The attempts running in this process now."""
    with _lock:
        return list(_attempts.values())


def end(target):
    """End ``target``'s module call now (see the module's docstring); False if it is not
    in its module call any more (it finished meanwhile, or is recording its result)."""
    with _lock:
        if _attempts.get(target.thread_id) is not target or not target.in_call:
            return False
        target.ended = True
        for fd, inode in target.sockets:
            _shut_down(fd, inode)
        raise_thread_exception(target.thread_id, Shutdown)
        return True


def _shut_down(fd, inode):
    """Shut down the connection on ``fd`` if it is still the one the call opened (the
    same inode: a closed descriptor may have been reused by another connection)."""
    try:
        if os.fstat(fd).st_ino != inode:
            return
        duplicate = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


def _note_connection(event, args):
    """The audit hook: a module call's thread connects a socket."""
    if event != "socket.connect":
        return
    current = getattr(_local, "attempt", None)
    if current is None:
        return
    try:
        fd = args[0].fileno()
        current.sockets.append((fd, os.fstat(fd).st_ino))
    except Exception:  # an audit hook must never break the connection it watches
        pass


sys.addaudithook(_note_connection)
