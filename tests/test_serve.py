"""The embedded web server's limits: ``provisor serve`` as a real process, real sockets.

Waitress alone stops accepting at its connection limit (100 by default, not a setting):
the connections past it waited in the kernel's backlog until an open one had been idle
for two minutes — 50 clients with two keep-alive connections each saw 100 read timeouts.
The limit is a setting now (500 by default), and a connection past it gets a quick 503.
"""

import json
import resource
import socket
import subprocess
import time

import pytest

from tests.support import BIN, Instance, wait_for

HEALTH = b"GET /api/v1/health HTTP/1.1\r\nHost: provisor.test\r\n\r\n"


@pytest.fixture
def instance(tmp_path):
    started = []

    def start(*serve_args, **env):
        one = Instance(tmp_path, f"serve{len(started)}")
        one.env.update({k: str(v) for k, v in env.items()})
        started.append(one.start(*serve_args))
        return one

    yield start
    for one in started:
        one.stop()


def answer(sock, deadline):
    """``(status line, headers, body)`` of one HTTP answer read from ``sock``."""
    data = b""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("Content-Length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0], headers, body


def open_connections(port, count):
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def test_120_connections_at_once_are_all_answered(instance):
    """Past waitress's fixed limit of 100: every connection is served within seconds."""
    server = instance()
    start = time.monotonic()
    conns = open_connections(server.port, 120)
    try:
        for conn in conns:
            conn.sendall(HEALTH)
        deadline = start + 30  # a loaded machine; a connection past the limit would hang
        statuses = [answer(conn, deadline)[0] for conn in conns]
        # each connection stays open (keep-alive) and answers a second request
        for conn in conns:
            conn.sendall(HEALTH)
        statuses += [answer(conn, deadline)[0] for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert statuses == ["HTTP/1.1 200 OK"] * 240


def test_past_the_limit_a_connection_gets_a_quick_503(instance):
    server = instance("--connection-limit", "10")
    held = open_connections(server.port, 10)
    try:
        for conn in held:
            conn.sendall(HEALTH)
            assert answer(conn, time.monotonic() + 5)[0] == "HTTP/1.1 200 OK"
        for _ in range(3):
            start = time.monotonic()
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
                extra.sendall(HEALTH)
                status, headers, body = answer(extra, start + 5)
                assert extra.recv(1) == b""  # then closed
            assert time.monotonic() - start < 2  # not a hang until a connection frees up
            assert status == "HTTP/1.1 503 Service Unavailable"
            assert headers["Retry-After"] == "2" and headers["Connection"] == "close"
            assert headers["Content-Type"] == "application/json"
            # sent before the request is read: a tasks proxy peer may be the one refused
            assert headers["Provisor-Proxy-Protocol"] == "1"
            error = json.loads(body)["error"]
            assert error["code"] == "overloaded" and error["message"] and error["fields"] == {}
        # the held ones still work; once some close, new connections are served again
        held[0].sendall(HEALTH)
        assert answer(held[0], time.monotonic() + 5)[0] == "HTTP/1.1 200 OK"
        for conn in held[:2]:
            conn.close()

        def served():
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as again:
                again.sendall(HEALTH)
                return answer(again, time.monotonic() + 5)[0] == "HTTP/1.1 200 OK"

        wait_for(served, timeout=5, message="a new connection to be served")
    finally:
        for conn in held:
            conn.close()
    log = server.log()
    assert "web server: 8 threads, up to 10 connections" in log
    assert "connection limit (10) reached" in log and "Traceback" not in log


def test_the_limits_are_settings(instance):
    """The settings, overridden by the command's options; idle connections are closed."""
    server = instance(
        "--threads", "3", SERVE_CONNECTION_LIMIT=5, SERVE_CHANNEL_TIMEOUT=1, SERVE_BACKLOG=64
    )
    assert (
        "web server: 3 threads, up to 5 connections (idle ones closed after 1 s), backlog 64"
        in server.log()
    )
    idle = open_connections(server.port, 5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
        extra.sendall(HEALTH)
        assert answer(extra, time.monotonic() + 5)[0] == "HTTP/1.1 503 Service Unavailable"
    # the idle ones are closed after about a second (checked every second)
    for conn in idle:
        conn.settimeout(5)
        assert conn.recv(1) == b""
        conn.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as again:
        again.sendall(HEALTH)
        assert answer(again, time.monotonic() + 5)[0] == "HTTP/1.1 200 OK"


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--connection-limit", "0"], {}, "Invalid value for '--connection-limit'"),
        ([], {"SERVE_CONNECTION_LIMIT": "many"}, "SERVE_CONNECTION_LIMIT must be a whole number"),
        (
            ["--connection-limit", "5000"],
            {},
            "Error: SERVE_CONNECTION_LIMIT 5000 needs about 5200 open files and this process "
            "may open 256 (ulimit -n): lower the limit or raise ulimit -n",
        ),
    ],
)
def test_a_limit_that_cannot_hold_is_one_line(tmp_path, args, env, message):
    one = Instance(tmp_path, "serve")
    result = subprocess.run(
        [f"{BIN}/provisor", "serve", "--port", str(one.port), *args],
        env={**one.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
