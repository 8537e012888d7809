"""No request body is read beyond ``MAX_BODY_BYTES``, on any route, before anything is
parsed or checked. The audit: four unauthenticated 200 MB posts to the payment webhook
took the server from 62 MB to 661 MB."""

import http.client
import socket
import threading
import time

import pytest
from werkzeug.serving import make_server

from tests.support import free_port


@pytest.fixture
def served(app):
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(5)


@pytest.mark.parametrize("path", ["/api/v1/webhooks/payment", "/api/v1/operations/1/callback"])
def test_a_body_over_the_limit_is_413_json_before_it_is_read(served, path):
    """A 200 MB Content-Length is refused at once, without sending the body (routes
    that need a login say 401 first, without reading it either)."""
    conn = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
    started = time.monotonic()
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(200 * 1024 * 1024))
    conn.endheaders()
    conn.send(b"{" * 1024)  # a little of it; the server must not wait for the rest
    response = conn.getresponse()
    body = response.read()
    assert response.status == 413, body
    assert time.monotonic() - started < 5
    assert b'"code": "request_entity_too_large"' in body or b'"request_entity_too_large"' in body
    conn.close()


def test_a_chunked_body_is_cut_off_at_the_limit(served):
    """Without a Content-Length the stream itself is limited."""
    sock = socket.create_connection(("127.0.0.1", served), timeout=10)
    sock.sendall(
        b"POST /api/v1/webhooks/payment HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * 8192
    try:
        for _ in range(100):  # 800 KB, well over the 64 KB limit
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass  # the server answered and closed meanwhile
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_form_over_the_limit_is_413_too(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 4096
    response = client.post("/login", data={"email": "a@example.com", "password": "x" * 10000})
    assert response.status_code == 413


def test_the_limit_is_a_setting_applied_to_every_route(app):
    from app import create_app

    assert app.config["MAX_BODY_BYTES"] == 1048576
    assert app.config["MAX_CONTENT_LENGTH"] == 1048576  # werkzeug enforces this one
    other = create_app({**app.config, "MAX_BODY_BYTES": 4096})
    assert other.config["MAX_CONTENT_LENGTH"] == 4096
