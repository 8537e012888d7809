"""Worker middleware: an app context and a database connection per message, the log
context of each message, and a graceful stop."""

import logging
import threading

from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)


class AppContextMiddleware(Middleware):
    """Push a Flask app context and open the database connection for each message (an
    SQLite one stays open in its worker thread between messages: ``app.db.keep_connection``), and
    put the id the message is about on every record logged while handling it: an actor
    declared with ``log_context="operation"`` logs ``operation=<its first argument>``.

    The embedded server sets :attr:`app` itself; a ``dramatiq actors`` worker process
    builds the app from the environment when it boots (``create_app`` configures the
    process's logging then).
    """

    app = None
    _local = threading.local()

    @property
    def actor_options(self):
        return {"log_context"}

    def before_worker_boot(self, broker, worker):
        if AppContextMiddleware.app is None:
            from app import create_app

            AppContextMiddleware.app = create_app()

    def before_process_message(self, broker, message):
        from app.db import database, keep_connection

        if AppContextMiddleware.app is None:
            self.before_worker_boot(broker, None)
        from app import logs

        field = broker.get_actor(message.actor_name).options.get("log_context")
        if field and message.args:
            self._local.log_token = logs.bind(**{field: message.args[0]})
        ctx = AppContextMiddleware.app.app_context()
        ctx.push()
        self._local.ctx = ctx
        keep_connection()
        database.connect(reuse_if_open=True)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        from app.db import release

        try:
            release()
        finally:
            ctx = getattr(self._local, "ctx", None)
            if ctx is not None:
                self._local.ctx = None
                ctx.pop()
            token = getattr(self._local, "log_token", None)
            if token is not None:
                from app import logs

                self._local.log_token = None
                logs.unbind(token)

    after_skip_message = after_process_message


class GracefulShutdown(Middleware):
    """A worker asked to stop (SIGTERM to ``dramatiq actors`` on a deploy, or ``provisor
    serve`` stopping) takes no new message, gives its running attempts
    ``WORKER_SHUTDOWN_GRACE`` seconds to finish, and hands the others back at once
    (``operations.hand_back``): they do not wait in ``running`` for their lease to expire.
    """

    def before_worker_shutdown(self, broker, worker):
        from app.db import database
        from app.services import operations

        for thread in getattr(worker, "workers", ()):
            thread.stop()  # no new message; Dramatiq stops them too, right after this
        app = AppContextMiddleware.app
        if app is None:
            return
        with app.app_context():
            try:
                operations.hand_back(app.config["WORKER_SHUTDOWN_GRACE"])
            except Exception:
                log.exception("cannot hand the running attempts back; the sweep will")
            finally:
                if not database.is_closed():
                    database.close()
