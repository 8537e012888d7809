"""The embedded system: an in-process Dramatiq worker and the scheduler beside the web app,
and the web server (waitress) with its limits.

Waitress, at its connection limit, stops accepting: new connections wait in the kernel's
backlog until an open one closes, and keep-alive connections stay open until they have
been idle for ``channel_timeout`` — so a client past the limit hangs (for minutes) rather
than being told. :class:`WebServer` keeps accepting past the limit and answers each
connection beyond it at once with a ``503`` (``Retry-After``, the JSON error envelope,
then close), so a load balancer or a client retries instead of timing out.
"""

import json
import logging
import resource
import socket
import time

import dramatiq
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

log = logging.getLogger(__name__)

_worker = None

RETRY_AFTER = 2
"""Seconds a client turned away at the connection limit is told to wait (``Retry-After``)."""
REFUSING_AT_ONCE = 100
"""Connections being turned away at one time, at most; past that they are closed at once."""
REFUSAL_DEADLINE = 5.0
"""Seconds a connection being turned away may take to read its 503 before it is closed."""


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


# --- the web server -----------------------------------------------------------------------


def _overloaded_response():
    """The 503 past the connection limit. It is sent before the request is read, so it
    names the tasks proxy's protocol too (a peer may be the one turned away, and every
    answer under ``/proxy/v1`` carries the header: docs/proxy-protocol.md 2.2)."""
    from app.objects.peer import PROTOCOL, PROTOCOL_HEADER

    body = json.dumps(
        {
            "error": {
                "code": "overloaded",
                "message": "too many open connections; try again in a moment",
                "fields": {},
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER}\r\n"
        f"{PROTOCOL_HEADER}: {PROTOCOL}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


OVERLOADED = _overloaded_response()


class _Refusal(wasyncore.dispatcher):
    """A connection past the limit: send the 503, read and drop what the client sends
    (closing with unread data would reset the connection, and the client could lose the
    answer), close when the client does or after :data:`REFUSAL_DEADLINE`."""

    def __init__(self, sock, map, refusing):
        super().__init__(sock, map)
        self.refusing = refusing
        self.refusing.add(self)
        self.pending = OVERLOADED
        self.deadline = time.monotonic() + REFUSAL_DEADLINE

    def readable(self):
        if time.monotonic() > self.deadline:
            self.close()
            return False
        return True

    def writable(self):
        return bool(self.pending)

    def handle_read(self):
        self.recv(8192)  # b"" when the client closed: recv calls handle_close

    def handle_write(self):
        sent = self.send(self.pending)
        self.pending = self.pending[sent:]
        if not self.pending:
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                self.close()

    def handle_close(self):
        self.close()

    def handle_error(self):  # a client gone mid-answer: nothing to report
        self.close()

    def close(self):
        self.refusing.discard(self)
        super().close()


class JsonErrorTask(ErrorTask):
    """What waitress answers by itself (a body over ``max_request_body_size``, a request
    it cannot parse) in Provisor's JSON error envelope, like every other answer: a client
    of ``/api/v1`` or ``/proxy/v1`` reads a 413 as a refusal, not as a peer gone wrong."""

    def execute(self):
        from app.objects.peer import PROTOCOL, PROTOCOL_HEADER

        error = self.request.error
        code = error.reason.lower().replace(" ", "_")
        message = str(error.body).splitlines()[0] if error.body else error.reason
        body = json.dumps({"error": {"code": code, "message": message, "fields": {}}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        if (getattr(self.request, "path", None) or "").startswith("/proxy/v1"):
            self.response_headers.append((PROTOCOL_HEADER, PROTOCOL))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


class WebServer(TcpWSGIServer):
    """Waitress's TCP server, answering a quick 503 past ``connection_limit`` (see the
    module's docstring) instead of leaving new connections waiting."""

    channel_class = JsonErrorChannel

    def __init__(self, *args, refusing, **kwargs):
        self.refusing = refusing  # shared by every listening socket of one server
        self.turned_away = 0
        super().__init__(*args, **kwargs)

    def readable(self):
        # waitress's own readable() also stops accepting at the limit: only its maintenance
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)  # closes the connections idle for channel_timeout
        return self.accepting

    def open_channels(self):
        return sum(1 for d in self._map.values() if isinstance(d, HTTPChannel))

    def handle_accept(self):
        if self.open_channels() < self.adj.connection_limit:
            return super().handle_accept()
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, _ = accepted
        self.turned_away += 1
        if self.turned_away == 1 or self.turned_away % 1000 == 0:
            log.warning(
                "connection limit (%d) reached: %d connection(s) answered 503 so far",
                self.adj.connection_limit,
                self.turned_away,
            )
        if len(self.refusing) >= REFUSING_AT_ONCE:
            conn.close()
            return
        _Refusal(conn, self._map, self.refusing)


def open_files_needed(connection_limit):
    """File descriptors the embedded server may hold: its connections, those being
    turned away, and about a hundred for the database, logs, listeners and the worker."""
    return connection_limit + REFUSING_AT_ONCE + 100


def ensure_open_files(connection_limit):
    """Raise this process's soft limit of open files to what ``connection_limit`` needs;
    an error message when the hard limit is below it (None when all is well)."""
    needed = open_files_needed(connection_limit)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            return (
                f"SERVE_CONNECTION_LIMIT {connection_limit} needs about {needed} open files "
                f"and this process may open {hard} (ulimit -n): lower the limit or raise "
                "ulimit -n"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        log.info("open files limit raised from %d to %d", soft, needed)
    return None


def web_server(app, host, port, threads, connection_limit, channel_timeout, backlog):
    """The waitress server of ``provisor serve`` (:class:`WebServer` on each address
    ``host`` resolves to). ``channel_timeout``: seconds an idle connection stays open."""
    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        connection_limit=connection_limit,
        channel_timeout=channel_timeout,
        cleanup_interval=max(1, min(30, channel_timeout // 2)),
        backlog=backlog,
        asyncore_use_poll=True,  # select() cannot watch more than 1,024 sockets
        # waitress buffers a chunked body whole before the app sees it: not beyond this
        max_request_body_size=app.config["MAX_BODY_BYTES"],
    )
    socket_map = {}
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    refusing = set()
    servers = [
        WebServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info, refusing=refusing)
        for info in adj.listen
    ]
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)


def listening_on(server):
    """``host:port`` texts of the addresses a :func:`web_server` listens on."""
    pairs = getattr(server, "effective_listen", None) or [
        (server.effective_host, server.effective_port)
    ]
    return [f"[{h}]:{p}" if ":" in str(h) else f"{h}:{p}" for h, p in pairs]
