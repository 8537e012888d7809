"""Plain helpers for tests (fixtures live in conftest.py): the API client, real loopback
servers, waiting for the worker, page helpers, whole Provisor instances as processes.

Test modules and the benchmarks import from here; no test module imports another.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from app import signing
from app.db import database

WEBHOOK_SECRET = "test-webhook-secret"
ENDPOINT_SECRET = "endpoint-secret"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentServer:
    """A server that accepts connections and never says a word (a hung daemon, a stuck
    tunnel): on a loopback TCP port (``port``), or on a unix socket (``path``) with
    ``unix=True``. Closing it hangs up on every connection it holds."""

    def __init__(self, unix=False):
        self.held = []
        self.path = None
        if unix:
            self.folder = tempfile.mkdtemp(prefix="provisor-silent-")
            self.path = f"{self.folder}/sock"
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(self.path)
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.close()
        if self.path:
            shutil.rmtree(self.folder, ignore_errors=True)


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
        "domains": f"site{n}.example.com, www.site{n}.example.com",
        "hostname": f"srv{n}.example.com",
        "slug": f"db{n}",
        "text": "test",
    }
    params = {}
    for f in order_fields:
        if f.get("required"):
            params[f["name"]] = (f.get("options") or [None])[0] or samples[f.get("kind", "text")]
    return params


def signed(body, secret=WEBHOOK_SECRET, timestamp=None, **v2):
    """``(raw body, headers)`` signed v1 (and v2 with ``direction``, ``path``; ``v1=False``
    for v2 alone)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, {
        "Content-Type": "application/json",
        signing.HEADER: signing.sign(secret, raw, timestamp, **v2),
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

    def delete(self, path, body=None, **kw):
        return self._call("delete", path, body, **kw)

    def ok(self, method, path, body=None, status=(200, 201, 202)):
        code, data = self._call(method, path, body)
        assert code in ((status,) if isinstance(status, int) else status), (code, data)
        return data

    # set-up shortcuts used by many tests
    def catalog(
        self,
        module_type="sandbox",
        config=None,
        product_type="vps",
        item_settings=None,
        **module_fields,
    ):
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
                **(
                    {"item_settings": {str(module["id"]): item_settings}}
                    if item_settings is not None
                    else {}
                ),
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
    "timeout", "400", "pending", "done", "close", "trickle": one byte every
    ``trickle_interval`` seconds, "raw": ``raw_reply`` as the body, "hang": no answer for
    ``hang_seconds``); other requests are answered "done", and requests of
    ``script_kinds`` once it runs out as ``fallback`` says ("done" unless a test sets it:
    the soak benchmark switches it for a while). ``first_call``, when set, is the behaviour
    of the first request of each operation (of ``script_kinds``) whatever order the
    operations' requests arrive in; the script is not consumed by those.
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
        self.trickle_bytes, self.trickle_interval = 40, 0.25  # the "trickle" behaviour
        self.raw_reply, self.raw_status = b"{}", 200  # the "raw" behaviour's answer
        self.redirect_to = None  # the Location of a scripted 3xx
        self.hang_seconds = 30.0  # the "hang" behaviour
        self.fallback = "done"  # the behaviour of script_kinds once the script is empty
        self.first_call = None  # the behaviour of each operation's first request, if set
        self.seen_operations = set()  # operation ids of script_kinds requests so far
        self.received = []  # (raw body, signature header) of every request, as sent
        self.busy = 0  # requests being answered now
        self.v2_only = False  # verify requests as v2 (direction request) only
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/provision"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                with endpoint.lock:
                    endpoint.busy += 1
                try:
                    return self._answer()
                except (BrokenPipeError, ConnectionResetError):
                    return None  # the caller went away (killed, or it timed out)
                finally:
                    with endpoint.lock:
                        endpoint.busy -= 1

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                header = self.headers.get(signing.HEADER)
                endpoint.received.append((raw, header))
                v2 = {"direction": "request", "path": "/provision"} if endpoint.v2_only else {}
                if signing.verify(endpoint.secret, raw, header, v1=not endpoint.v2_only, **v2):
                    endpoint.bad_signatures += 1
                    return self._reply(401, {"error": "bad signature"})
                payload = json.loads(raw)
                with endpoint.lock:
                    endpoint.requests.append(payload)
                    first = payload["operation_id"] not in endpoint.seen_operations
                    if payload["operation"] in endpoint.script_kinds:
                        endpoint.seen_operations.add(payload["operation_id"])
                    if payload["operation"] not in endpoint.script_kinds:
                        behaviour = "done"
                    elif endpoint.first_call is not None and first:
                        behaviour = endpoint.first_call
                    elif endpoint.script:
                        behaviour = endpoint.script.pop(0)
                    else:
                        behaviour = endpoint.fallback
                if endpoint.delay:
                    time.sleep(endpoint.delay)
                if endpoint.before_reply is not None:
                    endpoint.before_reply(payload, behaviour)
                if behaviour == "hang":  # no answer at all, far past any timeout
                    time.sleep(endpoint.hang_seconds)
                    return None
                if behaviour == "timeout":
                    time.sleep(3)
                    return self._reply(200, {"status": "done"})
                if behaviour == "raw":  # whatever bytes the test wants, as JSON
                    self.send_response(endpoint.raw_status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(endpoint.raw_reply)))
                    self.end_headers()
                    self.wfile.write(endpoint.raw_reply)
                    return None
                if behaviour == "trickle":  # every read is quick, the answer never ends
                    return self._trickle(endpoint.trickle_bytes, endpoint.trickle_interval)
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

            def _trickle(self, count, interval):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(count))
                self.end_headers()
                try:
                    for _ in range(count):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(interval)
                except OSError:
                    pass  # the caller hung up

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                if 300 <= status < 400 and endpoint.redirect_to:
                    self.send_header("Location", endpoint.redirect_to)
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


def start_smtp(port, handler=None):
    """An aiosmtpd server on ``port``: ``(controller, handler)``. Pass the ``handler`` of a
    server stopped before to start it again on the same port, keeping its messages."""
    from aiosmtpd.controller import Controller

    handler = handler or SmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    handler.url = f"smtp://127.0.0.1:{port}"
    return controller, handler


class RedisServer:
    """A Redis server of the test's own (Debian ``redis-server``) on a free loopback port,
    with no persistence: for tests that stop or kill the broker (the machine's Redis is
    shared)."""

    BINARY = "/usr/bin/redis-server"

    def __init__(self, folder):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    @classmethod
    def available(cls):
        return os.path.exists(cls.BINARY)

    def start(self):
        self.process = subprocess.Popen(
            [
                self.BINARY,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10, message="redis-server to answer")
        return self

    def _answers(self):
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def kill(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self):
        """Start again on the same port, empty (nothing is persisted): a Redis killed with
        its data and brought back."""
        self.kill()
        return self.start()


# --- pages through the test client -------------------------------------------------

ADMIN = ("admin@example.com", "admin-password")
HTMX = {"HX-Request": "true"}


@contextmanager
def db(app):
    """An app context with a database connection, for calling services in a test."""
    with app.app_context(), database.connection_context():
        yield


def login(client, email, password):
    response = client.post("/login", data={"email": email, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return response


def html(response):
    return response.get_data(as_text=True)


def make_client_login(app, email="carol@example.com", name="Carol", password="carol-password"):
    from app.services import accounts

    with db(app):
        client = accounts.create_client(
            {"name": name, "email": email, "password": password}, with_login=True
        )
        return client.id


def make_staff(app, email, department_ids=(), password="staff-password"):
    from app.services import accounts

    with db(app):
        user = accounts.create_user(
            {
                "email": email,
                "name": email.split("@")[0].title(),
                "password": password,
                "department_ids": list(department_ids),
            }
        )
        return user.id


def paid_service(api, module_fields=None, config=None, wait=("done",)):
    """Catalog + order + payment; wait for the open operation. Returns ids."""
    department, module, tariff, client = api.catalog(
        "sandbox", config=config or {}, **(module_fields or {})
    )
    order = api.order(client["id"], tariff["id"])
    status, body = api.pay(order)
    assert status == 200, body
    op = api.wait_operation(body["operation_id"], wait) if wait else {"id": body["operation_id"]}
    return {
        "department": department,
        "module": module,
        "tariff": tariff,
        "client": client,
        "order": order,
        "service_id": order["service_id"],
        "operation_id": op["id"],
    }


# --- a real browser -------------------------------------------------------------------

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# --- whole instances (`provisor serve` processes) for the tasks proxy ------------------

BIN = os.path.dirname(sys.executable)
PEER_PASSWORD = "peer-password-1"


class Instance:
    """One Provisor: `provisor serve` on its own port, SQLite file and instance folder."""

    def __init__(self, tmp_path, name):
        self.name = name
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PROVISOR_INSTANCE_PATH": str(self.dir / "instance"),
            "SECRET_KEY": f"secret-{name}",
            "PAYMENT_WEBHOOK_SECRET": "test-webhook-secret",
            "SWEEP_INTERVAL": "1",
            "SWEEP_GRACE": "1",
            "PROXY_RETRY_DELAY": "1",
            "PROXY_PULL_INTERVAL": "3600",
            "PROXY_TIMEOUT": "3",
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_COST": "1024",
            "PYTHONUNBUFFERED": "1",
        }
        for key in ("DATABASE_URL", "REDIS_URL", "SMTP_URL"):
            self.env.pop(key, None)
        self.proc = None
        self.token = None

    def cli(self, *args, check=True):
        result = subprocess.run(
            [f"{BIN}/provisor", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def start(self, *serve_args):
        """Start ``provisor serve`` (with ``serve_args``, e.g. ``--connection-limit 10``)."""
        log = open(self.dir / "serve.log", "a")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen(
            [f"{BIN}/provisor", "serve", "--port", str(self.port), *serve_args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._up, timeout=30, interval=0.1, message=f"{self.name} to start")
        if self.token is None:
            email = re.search(r"email:\s+(\S+)", self.log()).group(1)
            self.token = self.cli("tokens", "create", "--email", email).stdout.strip()
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None

    def log(self):
        return (self.dir / "serve.log").read_text(errors="replace")

    def _up(self):
        try:
            return requests.get(self.url + "/api/v1/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def call(self, method, path, body=None, status=(200, 201, 202)):
        response = requests.request(
            method,
            f"{self.url}/api/v1{path}",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code in status, (
            self.name,
            path,
            response.status_code,
            response.text,
        )
        return response.json()

    def department(self, name):
        return self.call("POST", "/departments", {"name": name})

    def tasks(self, department_id, status=None):
        query = f"/tasks?department_id={department_id}" + (f"&status={status}" if status else "")
        return self.call("GET", query)["tasks"]

    def order_manual_service(self, department_id):
        """A dedicated server on a manual module of this department: its setup is a task."""
        if not hasattr(self, "_tariff"):
            module = self.call(
                "POST",
                "/modules",
                {"name": "By hand", "type": "manual", "config": {}, "department_id": department_id},
            )
            self._tariff = self.call(
                "POST",
                "/tariffs",
                {
                    "name": "Dedicated L",
                    "product_type": "dedicated",
                    "price": "120",
                    "internal_name": "ded-l",
                    "module_ids": [module["id"]],
                },
            )
            self._client = self.call(
                "POST", "/clients", {"name": "Reseller client", "email": "rc@example.com"}
            )
        order = self.call(
            "POST", "/orders", {"client_id": self._client["id"], "tariff_id": self._tariff["id"]}
        )
        raw, headers = signed(
            {
                "payment_id": f"p-{uuid.uuid4().hex}",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            }
        )
        paid = requests.post(
            self.url + "/api/v1/webhooks/payment", data=raw, headers=headers, timeout=10
        )
        assert paid.status_code == 200, paid.text
        return order, paid.json()["operation_id"]


class System:
    """A running scaled-out Provisor: web (gunicorn), workers (`dramatiq actors`) and the
    scheduler as subprocesses on PostgreSQL and Redis (``tests/test_scaled.py``,
    ``tests/test_faults.py``, ``bench/soak.py``)."""

    def __init__(self, tmp_path, database_url, redis_url, extra_env=None):
        self.tmp = tmp_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.namespace = f"provisor-test-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": self.namespace,
            "PROVISOR_INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "scaled-secret",
            "PAYMENT_WEBHOOK_SECRET": "test-webhook-secret",
            "LEASE_GRACE": "2",
            "SWEEP_INTERVAL": "1",
            "SWEEP_GRACE": "1",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.procs = {}
        self.logs = {}

    def cli(self, *args):
        result = subprocess.run(
            [f"{BIN}/provisor", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def start(self, name, argv):
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 (closed in down())
        self.logs[name] = log
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=log, start_new_session=True
        )

    def start_worker(self, name="worker", processes=1):
        self.start(
            name, [f"{BIN}/dramatiq", "actors", "--processes", str(processes), "--threads", "4"]
        )

    def stop(self, name, sig=signal.SIGTERM):
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def up(self):
        self.cli("db", "upgrade")
        self.cli(
            "users", "create-admin", "--email", "admin@example.com", "--password", "admin-pass"
        )
        self.token = self.cli("tokens", "create", "--email", "admin@example.com")
        self.start(
            "web",
            [
                f"{BIN}/gunicorn",
                "--workers",
                "2",
                "--threads",
                "4",
                "--bind",
                f"127.0.0.1:{self.port}",
                "app:create_app()",
            ],
        )
        self.start_worker()
        self.start_scheduler()
        wait_for(self._healthy, timeout=30, message="gunicorn to answer")

    def start_scheduler(self, name="scheduler"):
        self.start(name, [f"{BIN}/provisor", "scheduler"])

    def _healthy(self):
        try:
            return requests.get(self.base + "/api/v1/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def down(self):
        for name in list(self.procs):
            self.stop(name)
        for log in self.logs.values():
            log.close()

    def log_text(self, name):
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    # API
    def call(self, method, path, body=None, status=(200, 201, 202)):
        response = requests.request(
            method,
            self.base + "/api/v1" + path,
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code in status, (response.status_code, response.text)
        return response.json()

    def setup_catalog(self, module_type, config, **fields):
        department = self.call("POST", "/departments", {"name": f"Dept {uuid.uuid4().hex[:6]}"})
        module = self.call(
            "POST",
            "/modules",
            {
                "name": f"m-{uuid.uuid4().hex[:6]}",
                "type": module_type,
                "config": config,
                "department_id": department["id"],
                **fields,
            },
        )
        tariff = self.call(
            "POST",
            "/tariffs",
            {
                "name": "VPS",
                "product_type": "vps",
                "price": "5.00",
                "module_ids": [module["id"]],
                "internal_name": f"vps-{uuid.uuid4().hex[:6]}",
            },
        )
        client = self.call(
            "POST", "/clients", {"name": "Bob", "email": f"bob-{uuid.uuid4().hex[:6]}@example.com"}
        )
        return department, module, tariff, client

    def order_and_pay(self, client, tariff):
        order = self.call("POST", "/orders", {"client_id": client["id"], "tariff_id": tariff["id"]})
        raw, headers = signed(
            {
                "payment_id": f"p-{uuid.uuid4().hex}",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            }
        )
        response = requests.post(
            self.base + "/api/v1/webhooks/payment", data=raw, headers=headers, timeout=10
        )
        assert response.status_code == 200, response.text
        return order, response.json()["operation_id"]

    def operation(self, op_id):
        return self.call("GET", f"/operations/{op_id}")

    def wait_done(self, op_id, timeout=30, statuses=("done",)):
        return wait_for(
            lambda: (op := self.operation(op_id))["status"] in statuses and op,
            timeout=timeout,
            interval=0.2,
            message=f"operation {op_id} {statuses}",
        )

    # --- the fault scenarios (tests/test_faults.py, bench/soak.py) ---

    def answered(self, method, path, body=None, patience=120, **kwargs):
        """A request retried while the web answers 503 or not at all (connection refused),
        as a payment provider retries its webhook: the final response."""
        deadline = time.monotonic() + patience
        while True:
            try:
                response = requests.request(method, self.base + path, json=body, **kwargs)
                if response.status_code != 503:
                    return response
                wait = float(response.headers.get("Retry-After") or 1)
            except requests.ConnectionError:
                wait = 0.5
            if time.monotonic() + wait > deadline:
                raise AssertionError(f"{method} {path}: no answer but 503 for {patience} s")
            self.retried = getattr(self, "retried", 0) + 1
            time.sleep(min(wait, 1.0))

    def place_order(self, tariff, patience=120):
        """A paid order of ``tariff`` by a client of its own (so that each welcome email
        has an address of its own); requests retried as :meth:`answered` says. Returns
        ``{"client", "order", "operation_id"}``."""
        auth = {"Authorization": f"Bearer {self.token}"}

        def api(path, body):
            response = self.answered(
                "POST", "/api/v1" + path, body, patience, headers=auth, timeout=30
            )
            assert response.status_code in (200, 201), (response.status_code, response.text)
            return response.json()

        email = f"client-{uuid.uuid4().hex[:12]}@example.com"
        client = api("/clients", {"name": "Fault", "email": email})
        order = api("/orders", {"client_id": client["id"], "tariff_id": tariff["id"]})
        raw, headers = signed(
            {
                "payment_id": f"p-{order['id']}",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            }
        )
        response = self.answered(
            "POST",
            "/api/v1/webhooks/payment",
            None,
            patience,
            data=raw,
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, (response.status_code, response.text)
        return {"client": client, "order": order, "operation_id": response.json()["operation_id"]}

    def facts(self, placed, endpoints, smtp):
        """The invariants of the fault scenarios over the ``placed`` orders, counted
        (straight from the database, the endpoints' records and the SMTP server's):

        - ``active``: services active; ``done``: their ``open`` operations done;
          ``unfinished``: operations of the whole system (``ensure_item`` included) not
          done nor cancelled — none may be lost;
        - ``created_once``: services created exactly once at their endpoint, with the
          remote id the endpoint gave; ``created_twice``: more than once (a second
          creation), ``not_created``: never;
        - ``emailed_once``: clients who got exactly one email (their welcome email);
          ``emailed_twice``: more than one, ``not_emailed``: none.

        All is well when ``active == done == created_once == emailed_once == orders`` and
        the other counts are 0 (:func:`all_well`)."""
        import psycopg2

        service_ids = [p["order"]["service_id"] for p in placed]
        conn = psycopg2.connect(self.env["DATABASE_URL"], connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT id, status, remote_id FROM service WHERE id = ANY(%s)", (service_ids,)
                )
                services = {row[0]: row[1:] for row in cursor.fetchall()}
                cursor.execute(
                    "SELECT service_id FROM operation "
                    "WHERE kind = 'open' AND status = 'done' AND service_id = ANY(%s)",
                    (service_ids,),
                )
                done = {row[0] for row in cursor.fetchall()}
                cursor.execute(
                    "SELECT count(*) FROM operation WHERE status NOT IN ('done', 'cancelled')"
                )
                unfinished = cursor.fetchone()[0]
        finally:
            conn.close()
        creations = {}  # service id -> remote ids the endpoints created for it
        for endpoint in endpoints:
            with endpoint.lock:
                service_of = {
                    r["operation_id"]: r["service"]["id"]
                    for r in endpoint.requests
                    if r["operation"] == "open"
                }
                for op_id, remote in endpoint.creations.items():
                    creations.setdefault(service_of[op_id], []).append(remote)
        received = {}
        for message in list(smtp.messages):
            for to in message["to"]:
                received[to] = received.get(to, 0) + 1
        counts = [received.get(p["client"]["email"], 0) for p in placed]
        return {
            "orders": len(placed),
            "active": sum(1 for s in services.values() if s[0] == "active"),
            "done": len(done),
            "unfinished": unfinished,
            "created_once": sum(
                1 for sid, (_, remote) in services.items() if creations.get(sid) == [remote]
            ),
            "created_twice": sum(1 for sid in service_ids if len(creations.get(sid, ())) > 1),
            "not_created": sum(1 for sid in service_ids if not creations.get(sid)),
            "emailed_once": counts.count(1),
            "emailed_twice": sum(1 for n in counts if n > 1),
            "not_emailed": counts.count(0),
        }

    def settle(self, placed, endpoints, smtp, timeout=60):
        """Wait until :meth:`facts` say all is well (or ``timeout``), then a moment more
        for a late second creation or email; returns the facts."""
        deadline = time.monotonic() + timeout
        while True:
            facts = self.facts(placed, endpoints, smtp)
            if all_well(facts) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(1.5)
        return self.facts(placed, endpoints, smtp)


def all_well(facts):
    """Every service active, every operation done and none left, one creation and one
    welcome email each."""
    n = facts["orders"]
    return facts == {
        **facts,
        "active": n,
        "done": n,
        "unfinished": 0,
        "created_once": n,
        "created_twice": 0,
        "not_created": 0,
        "emailed_once": n,
        "emailed_twice": 0,
        "not_emailed": 0,
    }


def connect_peers(sender, receiver, sender_department, receiver_department, login):
    """Server side on ``receiver``, client side on ``sender`` (both through the CLI)."""
    receiver.cli(
        "proxy",
        "server-side",
        "--login",
        login,
        "--password",
        PEER_PASSWORD,
        "--department-id",
        str(receiver_department["id"]),
    )
    sender.cli(
        "proxy",
        "client-side",
        "--url",
        receiver.url,
        "--login",
        login,
        "--password",
        PEER_PASSWORD,
        "--remote-department-id",
        str(receiver_department["id"]),
        "--department-id",
        str(sender_department["id"]),
    )


class PowerDNS:
    """A real PowerDNS authoritative server (Debian ``pdns-server`` with the sqlite3
    backend) on free loopback ports, with its HTTP API; its own config folder and database.
    ``stop()`` then ``start()`` again is the same server on the same ports, with its zones.
    """

    SCHEMA = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"
    BINARY = "/usr/sbin/pdns_server"

    def __init__(self, folder):
        import secrets as _secrets

        self.folder = folder
        self.api_key = _secrets.token_hex(16)
        self.dns_port = free_port()
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.process = None

    @classmethod
    def available(cls):
        import os

        return os.path.exists(cls.BINARY) and os.path.exists(cls.SCHEMA)

    def start(self):
        import os
        import sqlite3
        import subprocess

        os.makedirs(self.folder, exist_ok=True)
        database = os.path.join(self.folder, "pdns.sqlite3")
        if not os.path.exists(database):  # started again after stop(): the same zones
            with open(self.SCHEMA) as fh, sqlite3.connect(database) as conn:
                conn.executescript(fh.read())
        with open(os.path.join(self.folder, "pdns.conf"), "w") as fh:
            fh.write(
                "\n".join(
                    [
                        "launch=gsqlite3",
                        f"gsqlite3-database={database}",
                        "local-address=127.0.0.1",
                        f"local-port={self.dns_port}",
                        "api=yes",
                        f"api-key={self.api_key}",
                        "webserver=yes",
                        "webserver-address=127.0.0.1",
                        f"webserver-port={self.api_port}",
                        "webserver-allow-from=127.0.0.0/8",
                        f"socket-dir={self.folder}",
                        "daemon=no",
                        "guardian=no",
                        "disable-syslog=yes",
                        "loglevel=4",
                        "setuid=",
                        "setgid=",
                        "cache-ttl=0",
                        "negquery-cache-ttl=0",
                        "query-cache-ttl=0",
                        "zone-cache-refresh-interval=0",
                        "",
                    ]
                )
            )
        self.log = open(os.path.join(self.folder, "pdns.log"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.BINARY, f"--config-dir={self.folder}"], stdout=self.log, stderr=self.log
        )
        wait_for(self._answers, timeout=20, message="PowerDNS to answer its API")
        return self

    def _answers(self):
        import requests

        try:
            reply = requests.get(
                f"{self.api_url}/api/v1/servers/localhost",
                headers={"X-API-Key": self.api_key},
                timeout=1,
            )
            return reply.status_code == 200
        except requests.RequestException:
            return False

    def api(self, method, path, **kwargs):
        import requests

        return requests.request(
            method,
            f"{self.api_url}/api/v1/servers/localhost{path}",
            headers={"X-API-Key": self.api_key},
            timeout=10,
            **kwargs,
        )

    def query(self, name, rdtype="SOA"):
        """Ask the server over DNS (dnspython); the answer's records as text, [] if none."""
        import dns.message
        import dns.query
        import dns.rcode

        reply = dns.query.udp(
            dns.message.make_query(name, rdtype), "127.0.0.1", port=self.dns_port, timeout=3
        )
        if reply.rcode() != dns.rcode.NOERROR:
            return []
        return sorted(r.to_text() for rrset in reply.answer for r in rrset)

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
            self.log.close()


class Dns:
    """A powerdns module with its own owner tag, tariffs, orders, and the test's zones
    (the ``pdns`` fixture of tests/modules/conftest.py); ``engine`` runs the operations."""

    def __init__(self, app, api, engine, powerdns):
        self.app, self.api, self.engine, self.pdns = app, api, engine, powerdns
        self.tag = f"t-{uuid.uuid4().hex[:10]}"
        self.foreign = []  # zones made by the test itself
        department = api.ok("post", "/departments", {"name": f"DNS {self.tag}"})
        self.module = api.ok(
            "post",
            "/modules",
            {
                "name": f"pdns-{self.tag}",
                "type": "powerdns",
                "config": self.config(),
                "department_id": department["id"],
                "retry_delay": 1,
                "test_connection": True,
            },
            status=201,
        )
        self.client = api.ok(
            "post", "/clients", {"name": "Dana", "email": f"dana-{self.tag}@example.com"}
        )

    def config(self, **extra):
        return {
            "api_url": self.pdns.api_url,
            "api_key": self.pdns.api_key,
            "nameservers": "ns1.example.net, ns2.example.net",
            "soa_contact": "hostmaster@example.net",
            "owner_tag": self.tag,
            "timeout": 5,
            **extra,
        }

    def instance(self, **extra):
        import modules

        cls = modules.get_type("powerdns")
        cleaned, errors = cls.validate_config(self.config(**extra))
        assert not errors, errors
        return cls(cleaned)

    def tariff(self, records="", ip="192.0.2.10", ipv6="2001:db8::10", name=None):
        name = name or f"dns-{uuid.uuid4().hex[:8]}"
        tariff = self.api.ok(
            "post",
            "/tariffs",
            {
                "name": f"DNS {name}",
                "product_type": "dns",
                "price": "2",
                "internal_name": name,
                "module_ids": [self.module["id"]],
                "item_settings": {
                    str(self.module["id"]): {"records": records, "ip": ip, "ipv6": ipv6}
                },
            },
            status=201,
        )
        for op in self.engine.run_all():  # ensure_item
            assert op.status == "done", op.last_error
        return tariff

    def domain(self):
        return f"z{uuid.uuid4().hex[:12]}.example.test"

    def open(self, tariff, domain=None, client=None):
        domain = domain or self.domain()
        order = self.api.order((client or self.client)["id"], tariff["id"], {"domain": domain})
        code, paid = self.api.pay(order)
        assert code == 200, paid
        return order["service_id"], domain, self.engine.run(paid["operation_id"])

    def request(self, service_id, kind, **params):
        op = self.api.ok("post", f"/services/{service_id}/{kind}", params, status=202)
        return self.engine.run(op["id"])

    def zone(self, domain):
        reply = self.pdns.api("GET", f"/zones/{domain}.")
        return reply.json() if reply.status_code == 200 else None

    def make_foreign_zone(self, domain, account, records=()):
        reply = self.pdns.api(
            "POST",
            "/zones",
            json={
                "name": domain + ".",
                "kind": "Native",
                "account": account,
                "nameservers": ["ns.other.example."],
                "rrsets": list(records),
            },
        )
        assert reply.status_code == 201, reply.text
        self.foreign.append(domain + ".")

    def cleanup(self):
        for zone in self.pdns.api("GET", "/zones").json():
            if (zone.get("account") or "").startswith(f"{self.tag}:") or (
                zone["id"] in self.foreign
            ):
                self.pdns.api("DELETE", f"/zones/{zone['id']}")


# --- database servers for the mariadb and postgresql module types ---------------------

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
# what an admin password must survive: quotes, a backslash, a comment, a semicolon
TRICKY_PASSWORD = "ad'm\"in;\\--pw "


class DatabaseTenant:
    """What one test makes on a database server, all named with its own prefix and owner
    tag (service ids restart at 1 in every test's Provisor database): an admin of its own
    for the module, and the services' databases and users; :meth:`cleanup` drops them."""

    type_id = ""
    admin_prefix = "prvadm_"

    def __init__(self):
        self.tag = uuid.uuid4().hex[:8]
        self.prefix = f"t{self.tag}_"
        self.owner_tag = f"t-{self.tag}"
        self.admin_user = f"{self.admin_prefix}{self.tag}"
        self.admin_password = TRICKY_PASSWORD + self.tag
        self.admins = []

    def config(self, **extra):
        """Settings of a module of this type that work (the tenant's admin)."""
        return {
            "host": self.host,
            "port": self.port,
            "admin_user": self.admin_user,
            "admin_password": self.admin_password,
            "name_prefix": self.prefix,
            "owner_tag": self.owner_tag,
            "timeout": 5,
            **extra,
        }

    def login(self, details, **kwargs):
        """Log in as a service's user with its details (the driver's connection)."""
        return self.connect(
            user=details["username"],
            password=details["password"],
            database=details["database"],
            **kwargs,
        )

    def state(self, name):
        """The service's objects: "active", "suspended" or None (neither the database nor the user exists)."""
        found = self.lookup(name)
        if not found["database"] and not found["user"]:
            return None
        return "suspended" if found["locked"] else "active"


class MariaDBTenant(DatabaseTenant):
    """The machine's MariaDB (root without password on loopback)."""

    type_id = "mariadb"

    def __init__(self, settings=MARIADB):
        super().__init__()
        self.settings = dict(settings)
        self.host, self.port = settings["host"], settings["port"]

    def connect(self, user=None, password=None, database=None, **kwargs):
        import pymysql

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=user or self.settings["user"],
            password=self.settings["password"] if user is None else password,
            database=database,
            autocommit=True,
            connect_timeout=5,
            read_timeout=10,
            ssl_disabled=True,
            **kwargs,
        )

    def sql(self, statement, params=None):
        """Run a statement as root; its rows."""
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, params)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def make_admin(self, grants=("ALL PRIVILEGES ON *.* TO {} WITH GRANT OPTION",), user=None):
        """An admin user (from 127.0.0.1) with these grants; returns its name."""
        user = user or self.admin_user
        self.sql("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (user, self.admin_password))
        self.admins.append(user)
        for grant in grants:
            self.sql("GRANT " + grant.format("%s@'127.0.0.1'"), (user,))
        return user

    def lookup(self, name):
        schema = self.sql(
            "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (name,),
        )
        users = self.sql(
            "SELECT JSON_VALUE(Priv, '$.account_locked'), "
            "JSON_VALUE(Priv, '$.max_user_connections') FROM mysql.global_priv WHERE User = %s",
            (name,),
        )
        return {
            "database": bool(schema),
            "comment": schema[0][0] if schema else None,
            "user": bool(users),
            "locked": any(str(u[0]).lower() in ("1", "true") for u in users),
            "connection_limit": int(users[0][1] or 0) if users else None,
        }

    def names(self):
        like = self.prefix.replace("_", "\\_") + "%"
        databases = [
            r[0]
            for r in self.sql(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                (like,),
            )
        ]
        users = [
            (r[0], r[1])
            for r in self.sql(
                "SELECT User, Host FROM mysql.global_priv WHERE User LIKE %s", (like,)
            )
        ]
        return databases, users

    def cleanup(self):
        databases, users = self.names()
        for user, host in users:
            self.sql("DROP USER IF EXISTS %s@%s", (user, host))
        for name in databases:
            self.sql(f"DROP DATABASE IF EXISTS `{name}`")
        for user in self.admins:
            self.sql("DROP USER IF EXISTS %s@'127.0.0.1'", (user,))


class PostgresCluster:
    """A PostgreSQL server of the tests' own: ``initdb`` in a temporary folder (run as the
    ``postgres`` system user when the tests run as root), on a free loopback port, with
    SCRAM password authentication and TLS (a certificate made here, :attr:`ca_pem`).
    The machine's server trusts every loopback login, so it cannot show a password being
    checked; this one can."""

    SUPERUSER = "postgres"

    def __init__(self, folder):
        self.folder = str(folder)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.password = "cluster-" + uuid.uuid4().hex
        self.data = os.path.join(self.folder, "data")
        self.ca_pem = None

    @classmethod
    def binaries(cls):
        import glob

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        return os.path.dirname(found[-1]) if found else None

    @classmethod
    def available(cls):
        if cls.binaries() is None:
            return False
        if os.geteuid() != 0:
            return True
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return True

    def _as_owner(self, *command):
        if os.geteuid() == 0:
            command = ("runuser", "-u", "postgres", "--", *command)
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def start(self):
        import shutil

        binaries = self.binaries()
        os.makedirs(self.folder, exist_ok=True)
        self.ca_pem = make_tls_certificate(self.folder)
        password_file = os.path.join(self.folder, "password")
        with open(password_file, "w") as fh:
            fh.write(self.password)
        os.chmod(os.path.join(self.folder, "key.pem"), 0o600)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            for name in ("password", "key.pem", "cert.pem", "ca.pem"):
                shutil.chown(os.path.join(self.folder, name), "postgres")
        done = self._as_owner(
            f"{binaries}/initdb",
            "-D",
            self.data,
            "-U",
            self.SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        assert done.returncode == 0, done.stderr
        return self.run()

    def run(self):
        """Start the server on its data folder (made by :meth:`start`)."""
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.folder}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c max_connections=40",
                "-c ssl=on",
                f"-c ssl_cert_file={self.folder}/cert.pem",
                f"-c ssl_key_file={self.folder}/key.pem",
            ]
        )
        done = self._as_owner(
            f"{self.binaries()}/pg_ctl",
            "-D",
            self.data,
            "-o",
            options,
            "-w",
            "-l",
            os.path.join(self.folder, "server.log"),
            "start",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return self

    def stop(self, mode="immediate"):
        """Stop the server (``immediate``: every backend killed at once, as a crash; the
        next start recovers). :meth:`run` starts it again with the same data."""
        return self._as_owner(f"{self.binaries()}/pg_ctl", "-D", self.data, "-m", mode, "stop")

    def restart(self, mode="immediate"):
        self.stop(mode)
        return self.run()

    def url(self, database="postgres"):
        """A URL of the superuser for one of its databases (password, no TLS needed)."""
        return f"postgresql://{self.SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name):
        """A new empty database; returns its URL."""
        import psycopg2

        conn = psycopg2.connect(self.url(), connect_timeout=5)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)


class PostgresTenant(DatabaseTenant):
    """A PostgreSQL server: the tests' own :class:`PostgresCluster` (``cluster``), or
    the machine's (127.0.0.1:5432, superuser ``postgres``, trusting loopback logins)."""

    type_id = "postgresql"

    def __init__(self, cluster=None):
        super().__init__()
        self.cluster = cluster
        if cluster is not None:
            self.host, self.port = cluster.host, cluster.port
            self.superuser, self.superuser_password = cluster.SUPERUSER, cluster.password
        else:
            self.host, self.port = "127.0.0.1", 5432
            self.superuser = os.environ.get("PGUSER", "postgres")
            self.superuser_password = None

    def connect(self, user=None, password=None, database="postgres", **kwargs):
        import psycopg2

        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=user or self.superuser,
            password=(self.superuser_password if user is None else password) or None,
            dbname=database,
            connect_timeout=5,
            sslmode="disable",
            **kwargs,
        )
        conn.autocommit = True
        return conn

    def sql(self, statement, params=None, database="postgres"):
        conn = self.connect(database=database)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, params)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def make_admin(self, rights="CREATEDB CREATEROLE", user=None):
        """A login role for the module with these attributes; returns its name."""
        user = user or self.admin_user
        self.sql(f'CREATE ROLE "{user}" LOGIN {rights} PASSWORD %s', (self.admin_password,))
        self.admins.append(user)
        return user

    def lookup(self, name):
        roles = self.sql(
            "SELECT rolcanlogin, rolconnlimit, shobj_description(oid, 'pg_authid') "
            "FROM pg_roles WHERE rolname = %s",
            (name,),
        )
        databases = self.sql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
        )
        return {
            "database": bool(databases),
            "owner": databases[0][0] if databases else None,
            "user": bool(roles),
            "comment": roles[0][2] if roles else None,
            "locked": bool(roles) and not roles[0][0],
            "connection_limit": roles[0][1] if roles else None,
        }

    def names(self):
        like = self.prefix.replace("_", "\\_") + "%"
        databases = [
            r[0] for r in self.sql("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,))
        ]
        roles = [
            r[0] for r in self.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (like,))
        ]
        return databases, roles

    def cleanup(self):
        databases, roles = self.names()
        for name in databases:
            self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for role in [*roles, *self.admins]:
            self.sql(f'DROP ROLE IF EXISTS "{role}"')


# --- ACME: Let's Encrypt's test CA ------------------------------------------------------


def make_tls_certificate(folder, names=("localhost",), ips=("127.0.0.1",)):
    """A throw-away CA and a server certificate it signed (cryptography), written to
    ``folder`` as ca.pem, cert.pem, key.pem; returns the CA's PEM text."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Provisor tests TLS root")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.DNSName(n) for n in names] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips
    ]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem).decode()
    with open(os.path.join(folder, "ca.pem"), "w") as fh:
        fh.write(ca_pem)
    with open(os.path.join(folder, "cert.pem"), "wb") as fh:
        fh.write(leaf.public_bytes(pem))
    with open(os.path.join(folder, "key.pem"), "wb") as fh:
        fh.write(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return ca_pem


def current_test_app(environ, start_response):
    """WSGI: whichever app the running test made (the ``app`` fixture sets it), so that
    one server on a fixed port, such as the one a CA's http-01 check connects to, serves
    each test's own app and database."""
    from actors.middleware import AppContextMiddleware

    return AppContextMiddleware.app(environ, start_response)


def serve_wsgi(wsgi_app, port=None):
    """A real threaded HTTP server (werkzeug) on loopback; returns (server, port)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port or free_port(), wsgi_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_port


class Pebble:
    """Let's Encrypt's test CA (Debian ``pebble`` 2.4) on free loopback ports.

    It has no TLS certificate of its own: one is made here (:func:`make_tls_certificate`),
    and its root is what the acme module gets as ``ca_bundle``. ``pebble-challtestsrv``
    is its DNS server (``-dnsserver``), answering every name with 127.0.0.1, so its
    http-01 validation fetches ``http://<name>:<http_port>/.well-known/acme-challenge/``
    from whatever listens on 127.0.0.1:``http_port`` (Provisor, in the tests). No random
    validation delay (``PEBBLE_VA_NOSLEEP``), no rejected nonces unless asked.
    ``eab=True``: External Account Binding required, with :attr:`eab_kid` and
    :attr:`eab_hmac_key`. ``validity``: seconds its certificates last (default 5 years).
    ``blocklist``: names it refuses to issue for. ``env``: more PEBBLE_* settings.
    ``dns_server`` (``"127.0.0.1:PORT"``, e.g. a :class:`PowerDNS`'s ``dns_port``): pebble
    asks that server instead, so its dns-01 check reads the real TXT records there (and
    its http-01 check connects wherever that server points the name); pebble-challtestsrv
    is not started then.
    """

    BINARY = "/usr/bin/pebble"
    DNS_BINARY = "/usr/bin/pebble-challtestsrv"

    def __init__(
        self, folder, http_port, eab=False, validity=None, blocklist=(), env=None, dns_server=None
    ):
        import base64
        import secrets as _secrets

        self.folder = str(folder)
        self.http_port = http_port
        self.eab = eab
        self.validity = validity
        self.blocklist = list(blocklist)
        self.env = dict(env or {})
        self.eab_kid = "provisor-test-kid"
        self.eab_hmac_key = base64.urlsafe_b64encode(_secrets.token_bytes(32)).decode().rstrip("=")
        self.acme_port = free_port()
        self.management_port = free_port()
        self.dns_port = free_port()
        self.dns_server = dns_server
        self.directory_url = f"https://127.0.0.1:{self.acme_port}/dir"
        self.management_url = f"https://127.0.0.1:{self.management_port}"
        self.processes = []
        self.ca_bundle = None

    @classmethod
    def available(cls):
        return os.path.exists(cls.BINARY) and os.path.exists(cls.DNS_BINARY)

    def start(self):
        os.makedirs(self.folder, exist_ok=True)
        self.ca_bundle = make_tls_certificate(self.folder)
        config = {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": os.path.join(self.folder, "cert.pem"),
            "privateKey": os.path.join(self.folder, "key.pem"),
            "httpPort": self.http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": self.eab,
        }
        if self.eab:
            config["externalAccountMACKeys"] = {self.eab_kid: self.eab_hmac_key}
        if self.validity:
            config["certificateValidityPeriod"] = int(self.validity)
        if self.blocklist:
            config["domainBlocklist"] = self.blocklist
        path = os.path.join(self.folder, "pebble.json")
        with open(path, "w") as fh:
            json.dump({"pebble": config}, fh)
        self.log = open(os.path.join(self.folder, "pebble.log"), "ab")  # noqa: SIM115
        if self.dns_server is None:
            self.processes.append(self._challtestsrv())
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_WFE_ORDERS_PER_PAGE": "1000",
            **self.env,
        }
        dns_server = self.dns_server or f"127.0.0.1:{self.dns_port}"
        self.processes.append(
            subprocess.Popen(
                [self.BINARY, "-config", path, "-dnsserver", dns_server],
                stdout=self.log,
                stderr=self.log,
                env=env,
            )
        )
        wait_for(self._answers, timeout=20, message="pebble to answer its directory")
        return self

    def _challtestsrv(self):
        """pebble-challtestsrv as pebble's DNS server: every name is 127.0.0.1."""
        return subprocess.Popen(
            [
                self.DNS_BINARY,
                "-dns01",
                f"127.0.0.1:{self.dns_port}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{free_port()}",
                "-defaultIPv6",
                "",
            ],
            stdout=self.log,
            stderr=self.log,
        )

    def _answers(self):
        if any(p.poll() is not None for p in self.processes):
            raise AssertionError(f"pebble stopped: see {self.folder}/pebble.log")
        try:
            return self.get(self.directory_url).status_code == 200
        except requests.RequestException:
            return False

    def get(self, url):
        return requests.get(url, verify=os.path.join(self.folder, "ca.pem"), timeout=5)

    def config(self, **extra):
        """Settings of an acme module for this CA."""
        config = {
            "directory_url": self.directory_url,
            "email": "certs@provisor.example",
            "ca_bundle": self.ca_bundle,
            "poll_interval": 0.2,
            "timeout": 5,
        }
        if self.eab:
            config.update(eab_kid=self.eab_kid, eab_hmac_key=self.eab_hmac_key)
        return {**config, **extra}

    def root_pem(self):
        """The root this run of pebble issues under (management API)."""
        return self.get(f"{self.management_url}/roots/0").text

    def intermediate_pem(self):
        return self.get(f"{self.management_url}/intermediates/0").text

    def certificate_status(self, serial):
        """ "Valid" or "Revoked", as pebble's management API reports the serial (hex)."""
        reply = self.get(f"{self.management_url}/cert-status-by-serial/{serial}")
        reply.raise_for_status()
        return reply.json()["Status"]

    def stop(self):
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if hasattr(self, "log"):
            self.log.close()


class AcmeAccountClient:
    """Requests to pebble signed with one of Provisor's CA accounts (its stored key):
    what the tests ask the CA itself (the account's orders, an order, a revocation)."""

    def __init__(self, pebble, key_pem, account_url):
        import josepy as jose
        from acme import client, messages
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(key_pem, password=None)
        self.account_url = account_url
        self.net = client.ClientNetwork(
            jose.JWKEC(key=key), alg=jose.ES256, verify_ssl=os.path.join(pebble.folder, "ca.pem")
        )
        self.net.account = messages.RegistrationResource(
            uri=account_url, body=messages.Registration()
        )
        self.directory = messages.Directory.from_json(pebble.get(pebble.directory_url).json())
        self.client = client.ClientV2(self.directory, self.net)

    def get(self, url):
        """POST-as-GET ``url``: the requests response."""
        return self.net.post(url, None, new_nonce_url=self.directory["newNonce"])

    def orders(self):
        """The URLs of every order pebble holds for the account."""
        account = self.get(self.account_url).json()
        return self.get(account["orders"]).json()["orders"]

    def order(self, url):
        return self.get(url).json()

    def revoke(self, certificate_pem):
        from cryptography import x509

        self.client.revoke(x509.load_pem_x509_certificate(certificate_pem.encode()), 0)


# --- schemathesis against a real instance (tests/test_fuzz.py, bench/fuzz.py) ------------------

FUZZ_PEER = "fuzz-peer"


def seed_for_fuzzing(instance):
    """Something for generated ids to find: a service set up by hand (a manual module: its
    open operation waits on task 1), a sandbox tariff, and a server side for /proxy/v1."""
    department = instance.department("Fuzzed")
    instance.order_manual_service(department["id"])
    module = instance.call("POST", "/modules", {"name": "Sandbox", "type": "sandbox"})
    tariff = instance.call(
        "POST",
        "/tariffs",
        {
            "name": "VPS S",
            "product_type": "vps",
            "price": "9.99",
            "internal_name": "vps-s",
            "module_ids": [module["id"]],
        },
    )
    # a reseller paying on account, with a service of its own (/api/v1/reseller)
    shop = instance.call("POST", "/clients", {"name": "Shop", "email": "shop@fuzz.example"})
    instance.reseller_token = instance.cli(
        "clients", "reseller", "--client-id", str(shop["id"])
    ).stdout.strip()
    ordered = requests.post(
        f"{instance.url}/api/v1/reseller/orders",
        json={"tariff_id": tariff["id"], "params": {}, "idempotency_key": "fuzz-1"},
        headers={"Authorization": f"Bearer {instance.reseller_token}"},
        timeout=10,
    )
    assert ordered.status_code == 201, ordered.text
    receiving = instance.department("From peers")
    instance.cli(
        "proxy",
        "server-side",
        "--login",
        FUZZ_PEER,
        "--password",
        PEER_PASSWORD,
        "--department-id",
        str(receiving["id"]),
    )


def schemathesis(instance, report_dir, *options, timeout=3600):
    """``st run`` against ``instance``'s OpenAPI document, failing on any 5xx (and on a
    request that gets no answer): ``/api/v1`` with the admin's bearer token, then
    ``/proxy/v1`` as the server side's peer, then ``/api/v1/reseller`` with the reseller's
    token (when :func:`seed_for_fuzzing` made one). ``options`` go to every run
    (``--seed``, ``--max-examples``...). Returns ``[(returncode, output, report)]``: the
    JSON report of each run (``report_dir``), None when it wrote none."""
    results = []
    runs = [
        ("api", ["-H", f"Authorization: Bearer {instance.token}"], "--exclude-path-regex"),
        ("proxy", ["-a", f"{FUZZ_PEER}:{PEER_PASSWORD}"], "--include-path-regex"),
    ]
    if getattr(instance, "reseller_token", None):
        runs.append(
            (
                "reseller",
                ["-H", f"Authorization: Bearer {instance.reseller_token}"],
                "--include-path-regex",
            )
        )
    for name, auth, scope in runs:
        path = os.path.join(report_dir, f"{name}.json")
        result = subprocess.run(
            [
                f"{BIN}/st",
                "run",
                f"{instance.url}/api/v1/openapi.json",
                *auth,
                scope,
                "^/api/v1/reseller/" if name == "reseller" else "^/proxy/",
                "--checks",
                "not_a_server_error",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
                "--no-color",
                "--report",
                "json",
                "--report-json-path",
                path,
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        )
        report = None
        if os.path.exists(path):
            with open(path) as fh:
                report = json.load(fh)
        results.append((result.returncode, result.stdout + result.stderr, report))
    return results


class ScriptedPeer:
    """A tasks proxy peer on loopback whose answers each test scripts: ``answer(request)``
    returns ``(status, body)`` (a dict or list is sent as JSON, bytes as they are) or None
    for the well-behaved default. Every request is recorded (method, path, query, JSON
    body, login and password as the peer decoded them, headers)."""

    def __init__(self):
        self.requests = []
        self.answer = lambda request: None
        self.events = []  # what GET /events serves by default (a well-behaved peer)
        self.lock = threading.Lock()
        self.server, port = serve_wsgi(self)
        self.url = f"http://127.0.0.1:{port}"

    def __call__(self, environ, start_response):
        import json
        from urllib.parse import parse_qs

        from werkzeug.wrappers import Request

        request = Request(environ)
        raw = request.get_data()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        auth = request.authorization
        record = {
            "method": request.method,
            "path": request.path,
            "query": {k: v[0] for k, v in parse_qs(request.query_string.decode()).items()},
            "json": body,
            "login": auth.username if auth else None,
            "password": auth.password if auth else None,
            "headers": dict(request.headers),
            "raw": raw,
        }
        with self.lock:
            self.requests.append(record)
        answer = self.answer(record) or self.default(record)
        status, payload = answer[0], answer[1]
        headers = list(answer[2]) if len(answer) > 2 else []
        if isinstance(payload, (dict, list)):
            data = json.dumps(payload).encode()
            headers.append(("Content-Type", "application/json"))
        else:
            data = payload if isinstance(payload, bytes) else str(payload).encode()
        start_response(f"{status} X", headers + [("Content-Length", str(len(data)))])
        return [data]

    def default(self, record):
        path = record["path"].removeprefix("/proxy/v1")
        if path == "/departments":
            return 200, {"departments": [{"id": 1, "name": "Upstream DC"}]}
        if path == "/tasks" and record["method"] == "POST":
            return 201, {
                "task_id": 100 + record["json"]["sender_task_id"],
                "status": "new",
                "created": True,
            }
        if path.startswith("/tasks/") and path.endswith("/events"):
            return 200, {"task_id": 1, "status": "new", "applied": True}
        if path == "/events":
            after = int(record["query"].get("after", "0"))
            limit = int(record["query"].get("limit", "500"))
            page = [e for e in self.events if e["id"] > after][:limit]
            return 200, {"events": page, "next": page[-1]["id"] if page else after}
        return 404, {"error": {"code": "not_found", "message": "no such route", "fields": {}}}

    def sent(self, path_part=None, method=None):
        with self.lock:
            return [
                r
                for r in self.requests
                if (path_part is None or path_part in r["path"])
                and (method is None or r["method"] == method)
            ]

    def stop(self):
        self.server.shutdown()


# --- shellscripts: Debian's OpenSSH server, throwaway keys and users ---------------------

EXAMPLE_SCRIPTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples", "shellscripts"
)
TEST_USER_PREFIX = "pvt"  # every Linux user a test makes starts so (sshd lets them log in)


def ssh_keypair(passphrase=None):
    """A throwaway Ed25519 key: ``(private key in OpenSSH format, authorized_keys line)``;
    with ``passphrase``, encrypted as ssh-keygen does (bcrypt, few rounds: quick to open)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    encryption = serialization.NoEncryption()
    if passphrase:
        encryption = (
            serialization.PrivateFormat.OpenSSH.encryption_builder()
            .kdf_rounds(4)
            .build(passphrase.encode())
        )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode() + " provisor-test"


def ssh_fingerprint(public_line):
    """``<type> SHA256:<base64>`` of an OpenSSH public key line (as ssh-keygen -lf)."""
    import base64
    import hashlib

    kind, blob = public_line.split()[:2]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return f"{kind} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def _proc_children():
    """``{pid: parent pid}`` of every process."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    found[int(name)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return found


def _environ_has(pid, entry):
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return entry in fh.read().split(b"\0")
    except OSError:
        return False


class SSHServer:
    """Debian's OpenSSH server (``/usr/sbin/sshd -D``) on a free loopback port, run as root
    with a config, a host key and authorized keys of its own in ``folder`` (no PAM; root by
    key only; the tests' throwaway users by password). Every session it starts carries
    ``PROVISOR_TEST_SSHD=<tag>`` in its environment (sshd's ``SetEnv``): :meth:`stop` ends
    whatever still runs with it (a script cut off mid-run), then sshd itself.
    ``new_host_key()`` then ``start()`` again is "the server was reinstalled"."""

    BINARY = "/usr/sbin/sshd"
    PRIVSEP_DIR = "/run/sshd"

    def __init__(self, folder, port=None, rsa=False):
        self.folder = str(folder)
        self.port = port or free_port()
        self.tag = uuid.uuid4().hex
        self.process = None
        self.host_key_path = os.path.join(self.folder, "ssh_host_ed25519_key")
        self.keys_dir = os.path.join(self.folder, "authorized_keys")
        os.makedirs(self.keys_dir, exist_ok=True)
        self.new_host_key()
        self.rsa_key_path = self.rsa_host_key = None
        if rsa:  # a second host key, of another type (as most servers have)
            self.rsa_key_path = os.path.join(self.folder, "ssh_host_rsa_key")
            self.rsa_host_key = self._write_key(self.rsa_key_path, "rsa")

    @classmethod
    def unavailable(cls):
        """Why the tests cannot run sshd here (None: they can)."""
        if not os.path.exists(cls.BINARY):
            return "OpenSSH's sshd is not installed (apt-get install openssh-server)"
        if os.geteuid() != 0:
            return "sshd must run as root to log users in (run the tests as root)"
        return None

    def new_host_key(self):
        """A new Ed25519 host key (the previous one is gone); its fingerprint."""
        self.host_key = self._write_key(self.host_key_path, "ed25519")
        return self.host_key

    @staticmethod
    def _write_key(path, kind):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        if kind == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        if os.path.exists(path):
            os.remove(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return ssh_fingerprint(public.decode())

    def authorize(self, user, public_line):
        """Let ``user`` log in with the key of ``public_line``."""
        with open(os.path.join(self.keys_dir, user), "a") as fh:
            fh.write(public_line.strip() + "\n")

    def start(self):
        config = os.path.join(self.folder, "sshd_config")
        with open(config, "w") as fh:
            fh.write(
                "\n".join(
                    [
                        f"Port {self.port}",
                        "ListenAddress 127.0.0.1",
                        f"HostKey {self.host_key_path}",
                        f"HostKey {self.rsa_key_path}" if self.rsa_key_path else "",
                        f"PidFile {os.path.join(self.folder, 'sshd.pid')}",
                        f"AuthorizedKeysFile {self.keys_dir}/%u",
                        "UsePAM no",
                        "StrictModes no",  # the folder is under /tmp (world-writable)
                        "PermitRootLogin prohibit-password",
                        "PasswordAuthentication yes",
                        "KbdInteractiveAuthentication no",
                        "PubkeyAuthentication yes",
                        f"AllowUsers root {TEST_USER_PREFIX}*",
                        f"SetEnv PROVISOR_TEST_SSHD={self.tag}",
                        "UseDNS no",
                        "PrintMotd no",
                        "MaxStartups 100",
                        "MaxSessions 100",
                        "LogLevel VERBOSE",
                        "",
                    ]
                )
            )
        # sshd's privilege separation directory (compiled in): made when missing, never
        # removed — another sshd of these tests (another xdist worker, another run on this
        # machine) may still need it for its next connection
        os.makedirs(self.PRIVSEP_DIR, mode=0o755, exist_ok=True)
        self.log = open(os.path.join(self.folder, "sshd.log"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.BINARY, "-D", "-e", "-f", config], stdout=self.log, stderr=self.log
        )
        wait_for(self._answers, timeout=10, message="sshd to answer")
        return self

    def _answers(self):
        if self.process.poll() is not None:
            raise AssertionError(f"sshd exited: {self.log_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def log_text(self):
        with open(os.path.join(self.folder, "sshd.log"), errors="replace") as fh:
            return fh.read()

    def leftovers(self):
        """Processes still running that a session of this server started (by id)."""
        entry = f"PROVISOR_TEST_SSHD={self.tag}".encode()
        return [pid for pid in _proc_children() if _environ_has(pid, entry)]

    def kill_leftovers(self):
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self):
        if self.process is None:
            return
        parents = _proc_children()
        sessions = [pid for pid, parent in parents.items() if parent == self.process.pid]
        self.process.terminate()
        self.process.wait(timeout=10)
        for pid in sessions:  # its connections' processes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.kill_leftovers()
        self.process = None
        self.log.close()


def linux_user(name):
    """``{"comment", "home", "locked", "expired"}`` of a Linux user, None if there is none."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    locked = expired = False
    with open("/etc/shadow") as fh:
        for line in fh:
            fields = line.rstrip("\n").split(":")
            if fields[0] == name:
                locked = fields[1].startswith("!")
                expired = fields[7] not in ("",) and int(fields[7]) <= 1
    return {"comment": entry.pw_gecos, "home": entry.pw_dir, "locked": locked, "expired": expired}


def linux_users(prefix):
    """The names of the Linux users whose names start with ``prefix``."""
    import pwd

    return sorted(entry.pw_name for entry in pwd.getpwall() if entry.pw_name.startswith(prefix))


def remove_linux_user(name):
    """Remove a user the tests made, its processes and its home."""
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    subprocess.run(["userdel", "--remove", name], capture_output=True)


class SSHHost:
    """What a shellscripts test works with: the session's sshd (``ssh_server``), a
    throwaway key authorized for root, a throwaway user with a password, the example
    scripts, and a user prefix and owner tag of the test's own (service ids restart at 1 in
    every test's database), so that :meth:`cleanup` removes exactly the users it made."""

    def __init__(self, server):
        import tempfile

        self.server = server
        # its own folder, readable by the throwaway user (pytest's folders are root's only)
        self.folder = tempfile.mkdtemp(prefix="provisor-ssh-")
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"{TEST_USER_PREFIX}{self.tag}s"  # the example scripts' users
        self.owner_tag = f"t-{self.tag}"
        self.private_key, self.public_key = ssh_keypair()
        server.authorize("root", self.public_key)
        self.extra_keys = []  # other keys a test authorized for root (removed after)
        self.users = []
        self.login_user = f"{TEST_USER_PREFIX}{self.tag}l"
        self.login_password = "pw-" + uuid.uuid4().hex
        self.make_login_user()
        self.scripts = os.path.join(self.folder, "scripts")
        os.makedirs(self.scripts, exist_ok=True)
        os.chmod(self.folder, 0o755)

    def make_login_user(self):
        """A user with a password and a home in the test's folder (the password login's
        tests)."""
        home = os.path.join(self.folder, "home")
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", home, "--shell", "/bin/sh", self.login_user],
            check=True,
        )
        self.users.append(self.login_user)
        subprocess.run(
            ["chpasswd"], input=f"{self.login_user}:{self.login_password}\n", text=True, check=True
        )

    def environment(self):
        return "\n".join(
            [
                f"USER_PREFIX={self.prefix}",
                f"OWNER_TAG={self.owner_tag}",
                "SERVER_IP=127.0.0.1",
                f"LOCK_DIR={self.folder}",
            ]
        )

    def config(self, **extra):
        """Settings of a shellscripts module running the example scripts as root, the host
        key pinned."""
        return {
            "host": "127.0.0.1",
            "port": self.server.port,
            "username": "root",
            "private_key": self.private_key,
            "host_key": self.server.host_key,
            "scripts_dir": EXAMPLE_SCRIPTS,
            "environment": self.environment(),
            "time_limit": 10,
            "connect_timeout": 5,
            **extra,
        }

    def script(self, name, body):
        """A script of the test's own (``#!/bin/sh`` and ``body``); its path."""
        path = os.path.join(self.scripts, name)
        with open(path, "w") as fh:
            fh.write("#!/bin/sh\n" + body.strip() + "\n")
        os.chmod(path, 0o755)
        return path

    def user_of(self, service_id):
        return f"{self.prefix}{service_id}"

    def made(self):
        """The users the example scripts made for this test."""
        return linux_users(self.prefix)

    def cleanup(self):
        import shutil

        self.server.kill_leftovers()
        for name in self.made() + self.users:
            remove_linux_user(name)
        shutil.rmtree(self.folder, ignore_errors=True)
        path = os.path.join(self.server.keys_dir, "root")
        if os.path.exists(path):
            mine = {key.strip() for key in [self.public_key, *self.extra_keys]}
            with open(path) as fh:
                kept = [line for line in fh if line.strip() not in mine]
            with open(path, "w") as fh:
                fh.writelines(kept)


def run_operation_in_process(app, op_id):
    """``operations.run(op_id)`` in a worker process of its own, on the test app's
    database (the caller may SIGKILL it mid-attempt); the ``Popen``."""
    script = (
        "import json, sys\n"
        "from app import create_app\n"
        "from app.db import database\n"
        "from app.services import operations\n"
        "app = create_app(json.loads(sys.argv[1]))\n"
        "with app.app_context(), database.connection_context():\n"
        "    operations.run(int(sys.argv[2]))\n"
    )
    config = {
        key: app.config[key]
        for key in ("TESTING", "DATABASE_URL", "SECRET_KEY", "PAYMENT_WEBHOOK_SECRET")
    }
    return subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(config), str(op_id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


# --- libvirt: a daemon of the tests' own ----------------------------------------------------
# A libvirt daemon of the tests' own, for the libvirt module type.
#
# ``libvirtd`` runs unprivileged (as ``nobody`` when the tests run as root) with its home,
# runtime, config and cache folders in a temporary folder: its sockets, its state and its
# logs are there, and the machine's own libvirt (if any) is never touched. Through its
# socket the tests and the workers reach:
#
# - libvirt's **test driver** (``test+unix:///default?socket=...``): domains, pools,
#   volumes and networks held in the daemon's memory, shared by every connection to it.
#   That state lives as long as one connection is open: the daemon object keeps one
#   (``keeper``) until it is stopped. Its default host has the pool ``default-pool`` and
#   the network ``default``; ``start`` adds the base image ``base.qcow2`` (1 GiB).
# - the **QEMU session driver** (``qemu+unix:///session?socket=...``) for a real VM under
#   QEMU emulation, when qemu-system-x86 is installed.
#
# ``stop`` ends the daemon (every domain of the test driver goes with it; QEMU guests are
# destroyed by the tests that start them) and removes the folder.

LIBVIRT_BASE_IMAGE = "base.qcow2"
LIBVIRT_POOL = "default-pool"
LIBVIRT_NETWORK = "default"


def libvirtd_binary():
    return shutil.which("libvirtd") or (
        "/usr/sbin/libvirtd" if os.path.exists("/usr/sbin/libvirtd") else None
    )


def libvirt_python_binding():
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return False
    return True


class LibvirtDaemon:
    def __init__(self, folder=None):
        self.folder = folder or tempfile.mkdtemp(
            prefix="lvd-"
        )  # short: QEMU socket paths end up under it
        self.process = None
        self.keeper = None
        self.log_path = os.path.join(self.folder, "libvirtd.log")

    @classmethod
    def available(cls):
        return libvirtd_binary() is not None and libvirt_python_binding()

    @property
    def socket(self):
        return os.path.join(self.folder, "run", "libvirt", "libvirt-sock")

    @property
    def uri(self):
        return f"test+unix:///default?socket={self.socket}"

    @property
    def qemu_uri(self):
        return f"qemu+unix:///session?socket={self.socket}"

    def _env(self):
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": self.folder,
            "XDG_RUNTIME_DIR": os.path.join(self.folder, "run"),
            "XDG_CONFIG_HOME": os.path.join(self.folder, "config"),
            "XDG_CACHE_HOME": os.path.join(self.folder, "cache"),
            "XDG_DATA_HOME": os.path.join(self.folder, "data"),
            "LIBVIRT_LOG_OUTPUTS": f"3:file:{self.log_path}",
        }
        return env

    def start(self):
        import libvirt

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        command = [libvirtd_binary()]
        if os.geteuid() == 0:
            # a root libvirtd is the system daemon (/run/libvirt, the host's networks):
            # run it as nobody, a session daemon whose everything is in the folder
            os.chown(self.folder, 65534, 65534)
            os.chmod(self.folder, 0o700)
            command = [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                *command,
            ]
        self.process = subprocess.Popen(
            command,
            env=self._env(),
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._connect()
        pool = self.keeper.storagePoolLookupByName(LIBVIRT_POOL)
        pool.createXML(
            f"<volume><name>{LIBVIRT_BASE_IMAGE}</name><capacity unit='G'>1</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
        return self

    def _connect(self, timeout=20.0):
        import libvirt

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"libvirtd exited ({self.process.returncode}): {self.log()}")
            if os.path.exists(self.socket):
                try:
                    self.keeper = libvirt.open(self.uri)
                    return
                except libvirt.libvirtError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not answer on {self.socket}: {self.log()}")
            time.sleep(0.1)

    def connect(self, uri=None):
        import libvirt

        return libvirt.open(uri or self.uri)

    def log(self):
        try:
            with open(self.log_path) as fh:
                return fh.read()[-3000:]
        except OSError:
            return ""

    def pause(self):
        """The daemon stops answering (SIGSTOP): connections to it hang."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def cont(self):
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self):
        """The daemon dies: the test driver's state is gone with it."""
        if self.keeper is not None:
            with contextlib.suppress(Exception):
                self.keeper.close()
            self.keeper = None
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        with contextlib.suppress(OSError):
            os.unlink(self.socket)

    def restart(self):
        """Start again after ``kill`` (a fresh test driver: its default host, the base
        image added again)."""
        self.kill()
        return self.start()

    def stop(self):
        if self.keeper is not None:
            with contextlib.suppress(Exception):
                self.keeper.close()
            self.keeper = None
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- what the tests look at -----------------------------------------------------------

    def domains(self, prefix):
        return [d for d in self.keeper.listAllDomains() if d.name().startswith(prefix)]

    def volumes(self, prefix):
        pool = self.keeper.storagePoolLookupByName(LIBVIRT_POOL)
        pool.refresh(0)
        return [v for v in pool.listVolumes() if v.startswith(prefix)]

    def cleanup(self, prefix):
        """Every domain and volume whose name starts with ``prefix`` removed."""
        import libvirt

        for dom in self.domains(prefix):
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
        pool = self.keeper.storagePoolLookupByName(LIBVIRT_POOL)
        for name in self.volumes(prefix):
            with contextlib.suppress(libvirt.libvirtError):
                pool.storageVolLookupByName(name).delete(0)


class EventReceiver:
    """A webhook endpoint for Provisor's outgoing events: a real HTTP server on loopback.

    Every request is recorded (``requests``: raw body, headers, the JSON, whether the
    signature verifies with ``secret`` for the direction ``event`` and the path). It
    answers as ``script`` says, one behaviour per request ("500", "404", "timeout": an
    answer after ``slow`` seconds), 200 once the script runs out. ``stop()`` then
    ``start()`` again serves on the same port: an endpoint that was down and is back.
    """

    def __init__(self, secret="event-secret-0123456789abcdef", path="/hooks/provisor"):
        self.secret = secret
        self.path = path
        self.script = []
        self.slow = 3.0
        self.requests = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.server = None

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                header = self.headers.get(signing.HEADER)
                reason = signing.verify(
                    receiver.secret, raw, header, direction="event", path=self.path, v1=False
                )
                with receiver.lock:
                    behaviour = receiver.script.pop(0) if receiver.script else "200"
                    receiver.requests.append(
                        {
                            "raw": raw,
                            "headers": dict(self.headers),
                            "json": json.loads(raw),
                            "verified": reason is None,
                            "behaviour": behaviour,
                            "at": time.monotonic(),
                        }
                    )
                status = 200
                if behaviour == "timeout":
                    time.sleep(receiver.slow)
                elif behaviour.isdigit():
                    status = int(behaviour)
                data = json.dumps({"received": status == 200, "behaviour": behaviour}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # Provisor gave up waiting

        return Handler

    def start(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def events(self, event_type=None):
        """The JSON of every request that was answered 200 (delivered), in order."""
        with self.lock:
            return [
                r["json"]
                for r in self.requests
                if r["behaviour"] == "200"
                and (event_type is None or r["json"]["type"] == event_type)
            ]

    def received(self, event_type=None):
        """Every request (any answer), in order."""
        with self.lock:
            return [
                r for r in self.requests if event_type is None or r["json"]["type"] == event_type
            ]


def counting_cursor(sent, thread=None):
    """A psycopg2 cursor class (a connection's ``cursor_factory``) that appends the text of
    every message it sends to ``sent`` (values not filled in); with ``thread`` (an ident,
    or a function giving the ident at the time), only those that thread sends (not the
    embedded worker's, or only one worker thread's)."""
    import psycopg2.extensions

    def wanted():
        return threading.get_ident() == (thread() if callable(thread) else thread)

    class Counted(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            if thread is None or wanted():
                sent.append(query if isinstance(query, str) else query.decode())
            return super().execute(query, vars)

    return Counted
