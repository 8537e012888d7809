"""The scheduler: runs the sweeps every ``SWEEP_INTERVAL`` seconds.

Embedded mode runs it in a thread of ``provisor serve``; scaled out, run exactly one
``provisor scheduler`` process (several are harmless: every step is idempotent).

The sweeps (operations, mail, proxy, events) run one after the other, each on its own: one that
fails is logged and the next still runs. Each records its heartbeat in the database
(``app.services.sweeps``), which ``/api/v1/health`` reads to tell a stopped scheduler.
"""

import logging
import threading

from app.db import database

log = logging.getLogger(__name__)


def sweep_all():
    """Every sweep once (inside an app context); returns ``(counts, errors)``: the counts
    of all sweeps together and, by sweep name, why a whole sweep failed."""
    from app.services import events, mail, operations, proxy, sweeps

    counts, errors = {}, {}
    for name, sweep in (
        ("operations", operations.sweep),
        ("mail", mail.sweep),
        ("proxy", proxy.sweep),
        ("events", events.sweep),
    ):
        result, error = sweeps.run(name, sweep)
        counts.update(result)
        if error is not None:
            errors[name] = error
    return counts, errors


def run_once(app):
    """Every sweep once, with the app's context and a database connection."""
    with app.app_context():
        database.connect(reuse_if_open=True)
        try:
            return sweep_all()
        finally:
            database.close()


class Scheduler(threading.Thread):
    def __init__(self, app, interval=None):
        super().__init__(name="provisor-scheduler", daemon=True)
        self.app = app
        self.interval = interval or app.config["SWEEP_INTERVAL"]
        self.stopping = threading.Event()

    def run(self):
        log.info("scheduler: sweeping every %s s", self.interval)
        while not self.stopping.is_set():
            try:
                run_once(self.app)
            except Exception:  # e.g. no connection to the database at all
                log.exception("scheduler: sweep failed; trying again next time")
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
