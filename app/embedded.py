"""The embedded system: an in-process Dramatiq worker and the scheduler beside the web app."""

import logging

import dramatiq

log = logging.getLogger(__name__)

_worker = None


def start_worker(app, threads=None):
    """Start (once per process) a worker for the current broker, running inside ``app``."""
    global _worker
    import actors
    from actors.middleware import AppContextMiddleware

    AppContextMiddleware.app = app
    if _worker is None:
        from actors.metrics import WorkerMetrics

        for middleware in actors.broker.middleware:
            if isinstance(middleware, WorkerMetrics):
                middleware.count_in_process()  # shown by this process's /metrics
        _worker = dramatiq.Worker(
            actors.broker,
            worker_threads=threads or app.config["WORKER_THREADS"],
            worker_timeout=100,
        )
        _worker.start()
        log.info("embedded worker started with %d threads", _worker.worker_threads)
    return _worker


def stop_worker():
    global _worker
    if _worker is not None:
        _worker.stop()
        _worker = None
