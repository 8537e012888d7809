"""Sweeps: what the scheduler runs every ``SWEEP_INTERVAL`` seconds, and its heartbeat.

Each sweep (operations, mail, proxy, events) goes through its rows one by one with :func:`each`:
an exception on one row is logged (with the row's id on the record) and recorded on that
row, and the sweep goes on with the others. :func:`run` runs one whole sweep the same way
(one failing sweep does not keep the next from running) and records its heartbeat in the
``sweep`` table, which ``/api/v1/health`` and ``/metrics`` read on any machine.
"""

import logging
import os
import socket
import time

from app import logs
from app.db import write_transaction
from app.models import Sweep, utcnow

log = logging.getLogger(__name__)

NAMES = ("operations", "mail", "proxy", "events")


def each(kind, ids, step, record_error=None):
    """``step(id)`` for each id, each on its own; returns how many failed.

    A failing step (its transaction rolled back) is logged with ``kind=id`` on the record
    and, when ``record_error`` is given, ``record_error(id, message)`` keeps the reason on
    the row (an operation's or email's last error, a client side's), so that it shows
    where staff look.
    """
    failed = 0
    for row_id in ids:
        with logs.context(**{kind: row_id}):
            try:
                step(row_id)
            except Exception as exc:
                failed += 1
                log.exception("sweep: %s %s failed; going on with the others", kind, row_id)
                if record_error is None:
                    continue
                message = f"sweep failed: {exc.__class__.__name__}: {exc}"[:1000]
                try:
                    with write_transaction():
                        record_error(row_id, message)
                except Exception:
                    log.exception("sweep: cannot record the error on %s %s", kind, row_id)
    return failed


def run(name, sweep):
    """Run one sweep and record its heartbeat; returns ``(counts, error)`` (error: None,
    or the one line saying why the whole sweep failed — it is logged too)."""
    started = time.monotonic()
    counts, error = {}, None
    try:
        counts = sweep()
    except Exception as exc:
        error = f"{exc.__class__.__name__}: {exc}".strip()[:1000]
        log.exception("scheduler: the %s sweep failed; the others go on", name)
    failed_rows = sum(n for key, n in counts.items() if key.endswith("errors"))
    record(name, time.monotonic() - started, failed_rows, error)
    return counts, error


def record(name, duration, failed_rows=0, error=None):
    """The heartbeat of sweep ``name`` (logged, not raised, if the database refuses)."""
    now = utcnow()
    values = {
        Sweep.last_run_at: now,
        Sweep.last_error: error,
        Sweep.failed_rows: failed_rows,
        Sweep.duration: round(duration, 3),
        Sweep.scheduler: f"{socket.gethostname()}:{os.getpid()}",
    }
    if error is None:
        values[Sweep.last_ok_at] = now
    try:
        with write_transaction():
            Sweep.insert({Sweep.name: name, **values}).on_conflict(
                conflict_target=[Sweep.name], update=values
            ).execute()
    except Exception:
        log.exception("scheduler: cannot record the heartbeat of the %s sweep", name)


def last_runs():
    """The heartbeat rows, by sweep name."""
    return {row.name: row for row in Sweep.select()}
