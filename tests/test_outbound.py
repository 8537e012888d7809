"""Where Provisor sends requests whose answers staff read (http module endpoints, tasks
proxy peers): public addresses, and only the networks the admin allows; never where a
redirect leads; never more of an answer than it needs.

The audit's case: the http module followed redirects to other hosts and put the body of
whatever answered in the attempt log.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.config import SettingError, load
from app.db import database
from app.models import Attempt
from app.services import proxy
from tests.support import free_port


@pytest.fixture
def internal():
    """An internal service that must stay unreachable: it counts who asks."""
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            body = b'{"secret": "internal-metadata-token"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/latest/meta-data", hits
    server.shutdown()


def _open(api, endpoint, **module_fields):
    _, _, tariff, client = api.catalog("http", endpoint.config(), max_attempts=1, **module_fields)
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    return api.wait_operation(paid["operation_id"], ("manual", "done"))


def test_loopback_and_private_addresses_are_refused_unless_allowed(app, api, http_endpoint):
    app.config["OUTBOUND_ALLOWED_NETWORKS"] = ""  # the default
    op = _open(api, http_endpoint)
    assert op["status"] == "manual"
    assert op["last_error"] == (
        f"not calling {http_endpoint.url}: 127.0.0.1 is a loopback address: add it to "
        "OUTBOUND_ALLOWED_NETWORKS (e.g. 127.0.0.1/32 or the whole network) to let "
        "Provisor call it"
    )
    assert http_endpoint.requests == []  # nothing was sent
    code, body = api.post(
        "/modules",
        {"name": "p", "type": "http", "config": http_endpoint.config(), "test_connection": True},
    )
    assert code == 422 and "a loopback address" in body["error"]["fields"]["config.url"]
    app.config["OUTBOUND_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    assert _open(api, http_endpoint)["status"] == "done"
    # a denied network wins over an allowed one (the cloud metadata address by default)
    app.config["OUTBOUND_DENIED_NETWORKS"] = "127.0.0.1/32"
    op = _open(api, http_endpoint)
    assert op["status"] == "manual"
    assert (
        "127.0.0.1 is in 127.0.0.1/32, which OUTBOUND_DENIED_NETWORKS refuses" in (op["last_error"])
    )


def test_a_redirect_is_not_followed_and_nothing_of_its_target_is_logged(
    app, api, http_endpoint, internal
):
    target, hits = internal
    http_endpoint.script = ["302"]
    http_endpoint.redirect_to = target
    op = _open(api, http_endpoint)
    assert op["status"] == "manual"
    assert op["last_error"] == (
        f"endpoint answered 302 redirecting to {target}: Provisor does not follow redirects; "
        "set the module's URL to where it should post"
    )
    assert hits == []  # never asked
    with app.app_context(), database.connection_context():
        logs = "".join(a.log or "" for a in Attempt.select())
    assert "internal-metadata-token" not in logs


def test_no_more_of_an_answer_than_a_mebibyte_is_read(app, api, http_endpoint):
    http_endpoint.script = ["raw"]
    http_endpoint.raw_reply = json.dumps(
        {"status": "done", "pad": "x" * (2 * 1024 * 1024)}
    ).encode()
    op = _open(api, http_endpoint)
    assert op["status"] == "manual"
    assert op["last_error"] == "the endpoint's answer is larger than 1048576 bytes"


def test_a_proxy_peer_is_fenced_the_same_way(app):
    app.config["OUTBOUND_ALLOWED_NETWORKS"] = ""
    with app.app_context(), database.connection_context(), pytest.raises(proxy.PeerError) as err:
        proxy.remote_departments(
            {"url": f"http://127.0.0.1:{free_port()}", "login": "x", "password": "y"}
        )
    assert "127.0.0.1 is a loopback address: add it to OUTBOUND_ALLOWED_NETWORKS" in str(
        err.value.message
    )


def test_the_networks_settings_are_checked_and_normalised():
    values = load(overrides={"OUTBOUND_ALLOWED_NETWORKS": "10.0.0.0/8  192.0.2.7,fd00::/8"})
    assert [str(n) for n in values["OUTBOUND_ALLOWED_NETWORKS"]] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "fd00::/8",
    ]
    with pytest.raises(SettingError) as err:
        load(overrides={"OUTBOUND_ALLOWED_NETWORKS": "10.0.0.0/8, intranet"})
    assert str(err.value.message).startswith(
        "OUTBOUND_ALLOWED_NETWORKS must be networks such as 10.0.0.0/8"
    )
