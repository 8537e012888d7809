"""The scheduler: runs the sweep every ``SWEEP_INTERVAL`` seconds.

Embedded mode runs it in a thread of ``provisor serve``; scaled out, run exactly one
``provisor scheduler`` process (several are harmless: every step is idempotent).
"""

import logging
import threading

from app.db import database

log = logging.getLogger(__name__)


def run_once(app):
    from app.services import mail, operations, proxy

    with app.app_context():
        database.connect(reuse_if_open=True)
        try:
            result = operations.sweep()
            result.update(mail.sweep())
            result.update(proxy.sweep())
            return result
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
            except Exception:
                log.exception("scheduler: sweep failed; trying again next time")
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
