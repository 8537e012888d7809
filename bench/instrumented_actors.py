"""The project's actors plus a measuring middleware (for the analysis runs only).

Run instead of ``actors``: ``dramatiq bench.instrumented_actors --processes 1 --threads N``
with ``BENCH_STATS_PATH`` set (``bench.activation --instrument`` does this). Per message it
records (see ``bench.sqlcount``): the actor, wall time, the SQL statements peewee executed
(by verb and table), the time spent in them, in commits, in opening database connections,
in sending broker messages and in compiling the welcome template. The totals are written
to ``BENCH_STATS_PATH`` (JSON) every 2 s and when the worker shuts down.
"""

import atexit
import contextlib
import json
import os
import threading
import time

from dramatiq.middleware import Middleware

import actors  # noqa: F401  (the project's broker and actors)
from actors.middleware import AppContextMiddleware
from bench import sqlcount


class StatsMiddleware(Middleware):
    def before_process_message(self, broker, message):
        sqlcount.begin()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        cur, elapsed = sqlcount.end()
        if cur is None:
            return
        kind = message.actor_name
        if kind == "run_operation":
            # a message that claimed its operation inserts an attempt row; the others
            # (duplicates, early or re-sent messages) do nothing
            kind += (
                ":ran"
                if any(s.startswith("INSERT INTO attempt") for s in cur["shapes"])
                else ":skipped"
            )
        sqlcount.add(kind, cur, elapsed, exception is not None)

    after_skip_message = after_process_message

    def before_worker_shutdown(self, broker, worker):
        dump()


def dump():
    path = os.environ.get("BENCH_STATS_PATH")
    data = sqlcount.snapshot()
    if not path or not data:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"pid": os.getpid(), "actors": data}, fh, indent=2)
    os.replace(tmp, path)


# before the AppContextMiddleware: its before_process_message (app context + connect)
# and after_process_message (close) fall inside the measured span
actors.broker.add_middleware(StatsMiddleware(), before=AppContextMiddleware)
atexit.register(dump)


def _periodic():
    while True:
        time.sleep(2)
        with contextlib.suppress(Exception):
            dump()


threading.Thread(target=_periodic, daemon=True).start()
