"""Helpers for tests: API client, real loopback servers, waiting for the worker."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from app import signing

WEBHOOK_SECRET = "test-webhook-secret"
ENDPOINT_SECRET = "endpoint-secret"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message} (last: {last!r})")


def order_params(order_fields):
    """Plausible values for the required order fields of a product type."""
    n = time.monotonic_ns() % 10**8
    samples = {
        "domain": f"site{n}.example.com",
        "hostname": f"srv{n}.example.com",
        "slug": f"db{n}",
        "text": "test",
    }
    params = {}
    for f in order_fields:
        if f.get("required"):
            params[f["name"]] = (f.get("options") or [None])[0] or samples[f.get("kind", "text")]
    return params


def signed(body, secret=WEBHOOK_SECRET, timestamp=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, {
        "Content-Type": "application/json",
        signing.HEADER: signing.sign(secret, raw, timestamp),
    }


class Api:
    """The Flask test client with a bearer token; methods return (status, json)."""

    def __init__(self, client, token):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.token = token

    def _call(self, method, path, body=None, headers=None):
        response = getattr(self.client, method)(
            "/api/v1" + path, json=body, headers={**self.headers, **(headers or {})}
        )
        return response.status_code, response.get_json(silent=True)

    def get(self, path, **kw):
        return self._call("get", path, **kw)

    def post(self, path, body=None, **kw):
        return self._call("post", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self._call("put", path, body, **kw)

    def ok(self, method, path, body=None, status=(200, 201, 202)):
        code, data = self._call(method, path, body)
        assert code in ((status,) if isinstance(status, int) else status), (code, data)
        return data

    # set-up shortcuts used by many tests
    def catalog(self, module_type="sandbox", config=None, product_type="vps", **module_fields):
        department = self.ok("post", "/departments", {"name": f"Support {time.monotonic_ns()}"})
        module = self.ok(
            "post",
            "/modules",
            {
                "name": f"{module_type}-{time.monotonic_ns()}",
                "type": module_type,
                "config": config or {},
                "department_id": department["id"],
                **module_fields,
            },
        )
        tariff = self.ok(
            "post",
            "/tariffs",
            {
                "name": "VPS S",
                "product_type": product_type,
                "price": "9.99",
                "internal_name": f"vps-s-{time.monotonic_ns()}",
                "module_ids": [module["id"]],
            },
        )
        client = self.ok(
            "post",
            "/clients",
            {"name": "Alice Client", "email": f"alice{time.monotonic_ns()}@example.com"},
        )
        return department, module, tariff, client

    def order(self, client_id, tariff_id, params=None):
        if params is None:
            fields = self.ok("get", f"/tariffs/{tariff_id}").get("order_fields", [])
            params = order_params(fields)
        return self.ok(
            "post",
            "/orders",
            {"client_id": client_id, "tariff_id": tariff_id, "params": params},
            status=201,
        )

    def pay(self, order, payment_id=None, secret=WEBHOOK_SECRET):
        raw, headers = signed(
            {
                "payment_id": payment_id or f"pay-{order['id']}",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            },
            secret,
        )
        response = self.client.post("/api/v1/webhooks/payment", data=raw, headers=headers)
        return response.status_code, response.get_json(silent=True)

    def wait_operation(self, op_id, statuses=("done",), timeout=15):
        def check():
            data = self.ok("get", f"/operations/{op_id}")
            return data if data["status"] in statuses else None

        return wait_for(check, timeout, message=f"operation {op_id} in {statuses}")


class ModuleEndpoint:
    """A panel endpoint for the http module: a real HTTP server on loopback.

    ``script`` is a list of behaviours used one per request of ``script_kinds`` ("500",
    "timeout", "400", "pending", "done", "close"); other requests, and every request once
    it runs out, are answered "done".
    Creations are recorded by operation id, as a real panel keyed on the idempotency key.
    """

    def __init__(self, secret=ENDPOINT_SECRET, script=None, delay=0.0, script_kinds=("open",)):
        self.secret = secret
        self.script = list(script or [])
        self.script_kinds = set(script_kinds)
        self.delay = delay
        self.requests = []
        self.creations = {}  # operation_id -> remote_id
        self.bad_signatures = 0
        self.before_reply = None  # called with (payload, behaviour) before answering
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/provision"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if signing.verify(endpoint.secret, raw, self.headers.get(signing.HEADER)):
                    endpoint.bad_signatures += 1
                    return self._reply(401, {"error": "bad signature"})
                payload = json.loads(raw)
                with endpoint.lock:
                    endpoint.requests.append(payload)
                    scripted = endpoint.script and payload["operation"] in endpoint.script_kinds
                    behaviour = endpoint.script.pop(0) if scripted else "done"
                if endpoint.delay:
                    time.sleep(endpoint.delay)
                if endpoint.before_reply is not None:
                    endpoint.before_reply(payload, behaviour)
                if behaviour == "timeout":
                    time.sleep(3)
                    return self._reply(200, {"status": "done"})
                if behaviour.isdigit():
                    return self._reply(int(behaviour), {"error": f"scripted {behaviour}"})
                if behaviour == "pending":
                    return self._reply(202, {"status": "pending"})
                if behaviour == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                op_id = payload["operation_id"]
                with endpoint.lock:
                    if payload["operation"] == "open":
                        remote = endpoint.creations.setdefault(
                            op_id, f"acct-{len(endpoint.creations) + 1}"
                        )
                    else:
                        remote = f"r-{op_id}"
                return self._reply(
                    200,
                    {
                        "status": "done",
                        "remote_id": remote,
                        "details": {
                            "ip": "198.51.100.7",
                            "username": f"user{op_id}",
                            "password": "s3cret-pw",
                            "hostname": "vps7.example.net",
                            "panel_url": "https://panel.example.net/",
                        },
                    },
                )

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def config(self, **extra):
        return {"url": self.url, "secret": self.secret, "timeout": 2, **extra}

    def calls(self, kind=None):
        return [r for r in self.requests if kind is None or r["operation"] == kind]


class SmtpHandler:
    """Collects the messages the SMTP server receives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes, policy

        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": str(message["Subject"]),
                "body": message.get_body(("plain",)).get_content(),
            }
        )
        return "250 Message accepted for delivery"


def start_smtp(port):
    from aiosmtpd.controller import Controller

    handler = SmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    handler.url = f"smtp://127.0.0.1:{port}"
    return controller, handler
