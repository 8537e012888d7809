"""Worker-side metrics: Dramatiq's messages by queue and actor, under the names of
Dramatiq's own Prometheus middleware (``dramatiq_messages_total``,
``dramatiq_message_errors_total``, ``dramatiq_messages_inprogress``,
``dramatiq_message_duration_milliseconds``), so that its dashboards work as they are.

- ``provisor serve``: the embedded worker counts in the process (:func:`in_process`), and
  the web app's ``/metrics`` shows the counts with the rest.
- ``dramatiq actors`` with ``WORKER_METRICS_PORT`` set: each worker process counts into
  prometheus_client's multiprocess files, in a folder of its ``dramatiq actors`` main
  process (``provisor-worker-metrics-<pid>`` in the temporary folder); a process forked by
  the main one (Dramatiq's ``forks``) serves their sum on that port at ``/metrics``,
  protected like the web's (``METRICS_TOKEN``, ``METRICS_ALLOW``; off when neither is
  set). One port per ``dramatiq actors`` command, whatever its ``--processes``: with
  several commands on one machine, give each its own port.
"""

import logging
import os
import shutil
import tempfile
import threading
import time

from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)

FOLDER_PREFIX = "provisor-worker-metrics-"
BUCKETS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000)
BUCKETS += (60000, 600000, 900000, float("inf"))

_registry = None  # the embedded worker's (provisor serve), shown by the web's /metrics


def folder(main_pid):
    return os.path.join(tempfile.gettempdir(), f"{FOLDER_PREFIX}{main_pid}")


class _Counts:
    def __init__(self, registry):
        import prometheus_client as prom

        labels = ["queue_name", "actor_name"]
        self.messages = prom.Counter(
            "dramatiq_messages_total",
            "The total number of messages processed.",
            labels,
            registry=registry,
        )
        self.errors = prom.Counter(
            "dramatiq_message_errors_total",
            "The total number of errored messages.",
            labels,
            registry=registry,
        )
        self.in_progress = prom.Gauge(
            "dramatiq_messages_inprogress",
            "The number of messages in progress.",
            labels,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.durations = prom.Histogram(
            "dramatiq_message_duration_milliseconds",
            "The time spent processing messages.",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )


class WorkerMetrics(Middleware):
    """Counts each message a worker of this process handles (see the module)."""

    def __init__(self, port=0):
        self.port = port
        self.counts = None
        self.multiprocess_folder = None
        self._started = threading.local()

    @property
    def forks(self):
        return [serve_worker_metrics] if self.port else []

    def after_process_boot(self, broker):
        """A ``dramatiq actors`` worker process (only Dramatiq's CLI emits this)."""
        if not self.port or self.counts is not None:
            return
        from app import config

        self.multiprocess_folder = folder(os.getppid())
        os.makedirs(self.multiprocess_folder, exist_ok=True)
        config.set_environ("PROMETHEUS_MULTIPROC_DIR", self.multiprocess_folder)
        from prometheus_client import values

        # prometheus_client chooses where values live when it is first imported
        values.ValueClass = values.get_value_class()
        self.counts = _Counts(registry=None)

    def count_in_process(self):
        """The embedded worker: count in this process, for the web's /metrics."""
        global _registry
        if self.counts is None:
            from prometheus_client import CollectorRegistry

            _registry = CollectorRegistry(auto_describe=True)
            self.counts = _Counts(registry=_registry)

    def before_process_message(self, broker, message):
        if self.counts is None:
            return
        self.counts.in_progress.labels(message.queue_name, message.actor_name).inc()
        self._started.at = time.monotonic()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if self.counts is None:
            return
        labels = (message.queue_name, message.actor_name)
        started = getattr(self._started, "at", None)
        if started is not None:
            self._started.at = None
            self.counts.durations.labels(*labels).observe((time.monotonic() - started) * 1000)
        self.counts.in_progress.labels(*labels).dec()
        self.counts.messages.labels(*labels).inc()
        if exception is not None:
            self.counts.errors.labels(*labels).inc()

    after_skip_message = after_process_message

    def after_worker_shutdown(self, broker, worker):
        if self.multiprocess_folder:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_folder)


def in_process_registry():
    """The embedded worker's counts (None: no worker counts in this process)."""
    return _registry


def serve_worker_metrics():
    """The process Dramatiq forks from a ``dramatiq actors`` main process: serve the sum
    of its worker processes' counts on ``WORKER_METRICS_PORT``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from app import config
    from app.services import monitoring

    settings = config.load()
    if not monitoring.metrics_enabled(settings):
        log.warning(
            "WORKER_METRICS_PORT is set but neither METRICS_TOKEN nor METRICS_ALLOW: "
            "the worker metrics stay off"
        )
        return 0
    main_pid = os.getppid()
    path = folder(main_pid)
    os.makedirs(path, exist_ok=True)
    _forget_stopped_workers(main_pid)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            refused = monitoring.metrics_refusal(
                settings, self.headers.get("Authorization"), self.client_address[0]
            )
            if self.path.split("?")[0] != "/metrics":
                refused = (404, "not_found", "the metrics are at /metrics")
            if refused is not None:
                status, code, message = refused
                body = monitoring.error_body(code, message)
                return self._reply(status, "application/json", body, refused=status == 401)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=path)
            return self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))

        def _reply(self, status, content_type, body, refused=False):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if refused:
                self.send_header("WWW-Authenticate", 'Bearer realm="metrics"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            log.debug(fmt, *args)

    server = ThreadingHTTPServer(("0.0.0.0", settings["WORKER_METRICS_PORT"]), Handler)
    log.info("worker metrics on port %s", settings["WORKER_METRICS_PORT"])
    server.serve_forever()
    return 0


def _forget_stopped_workers(main_pid):
    """Remove the metrics folders of ``dramatiq actors`` main processes that are gone."""
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        if not name.startswith(FOLDER_PREFIX):
            continue
        pid = name[len(FOLDER_PREFIX) :]
        if not pid.isdigit() or int(pid) == main_pid or _alive(int(pid)):
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
