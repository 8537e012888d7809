"""A poll-based module type for the tests, and the panel it talks to.

:class:`JobPanel` is a real HTTP server on loopback that creates accounts as *jobs*: a
creation returns a job id at once and the account is ready after a number of status
checks, as VM managers, certificate authorities and registrars behave. It is NOT
idempotent: a second ``POST /jobs`` makes a second job, so a module that does not look up
first would be caught creating twice.

:class:`JobPanelModule` (type ``jobpanel``) does it right: it looks the job up by a key
derived from the service, creates it only when there is none, stores the job id
(``ctx.save_state``) and returns ``Result.poll`` until the panel reports it done.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

from modules.base import (
    ConfigField,
    ConfigProblem,
    ModuleType,
    PermanentError,
    Result,
    TemporaryError,
)
from tests.support import free_port


class JobPanel:
    """The panel: ``POST /jobs``, ``GET /jobs?key=``, ``GET /jobs/<id>``, ``DELETE``."""

    def __init__(self, token="panel-token-0123456789", checks_needed=2):
        self.token = token
        self.checks_needed = checks_needed
        self.jobs = {}  # id -> {"id", "key", "checks", "status"}
        self.creations = []  # keys, in the order jobs were created
        self.status_calls = 0
        self.hang_next_status = 0.0  # seconds the next status check hangs
        self.hanging = threading.Event()  # set while a status check hangs
        self.refuse = None  # a message: creations are refused (422) with it
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        panel = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self):
                if self.headers.get("Authorization") != f"Bearer {panel.token}":
                    self._reply(401, {"error": "invalid token"})
                    return False
                return True

            def do_GET(self):
                if not self._authorised():
                    return
                parts = urlsplit(self.path)
                if parts.path == "/health":
                    return self._reply(200, {"status": "ok", "version": "jobpanel 1.0"})
                if parts.path == "/jobs":
                    key = parse_qs(parts.query).get("key", [""])[0]
                    with panel.lock:
                        found = [j for j in panel.jobs.values() if j["key"] == key]
                    return self._reply(200, {"jobs": found})
                job_id = parts.path.removeprefix("/jobs/")
                with panel.lock:
                    panel.status_calls += 1
                    hang, panel.hang_next_status = panel.hang_next_status, 0.0
                if hang:
                    panel.hanging.set()
                    time.sleep(hang)
                with panel.lock:
                    job = panel.jobs.get(job_id)
                    if job is None:
                        return self._reply(404, {"error": f"no job {job_id}"})
                    job["checks"] += 1
                    if job["checks"] >= panel.checks_needed and job["status"] == "running":
                        job["status"] = "done"
                    answer = dict(job)
                return self._reply(200, answer)

            def do_POST(self):
                if not self._authorised():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if panel.refuse:
                    return self._reply(422, {"error": panel.refuse})
                with panel.lock:
                    job_id = f"job-{len(panel.jobs) + 1}"
                    panel.jobs[job_id] = {
                        "id": job_id,
                        "key": body.get("key", ""),
                        "checks": 0,
                        "status": "running",
                    }
                    panel.creations.append(body.get("key", ""))
                return self._reply(201, {"id": job_id, "status": "running"})

            def do_DELETE(self):
                if not self._authorised():
                    return
                job_id = urlsplit(self.path).path.removeprefix("/jobs/")
                with panel.lock:
                    job = panel.jobs.get(job_id)
                    if job is not None:
                        job["status"] = "deleted"
                return self._reply(200, {"id": job_id, "status": "deleted"})

        self.handler = Handler
        self.server = None

    def start(self):
        """Serve (again, on the same port, with the same jobs after :meth:`stop`)."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def config(self, **extra):
        return {"url": self.url, "token": self.token, "poll_after": 0.3, "timeout": 2, **extra}

    def jobs_for(self, key):
        return [j for j in self.jobs.values() if j["key"] == key]


class JobPanelModule(ModuleType):
    id = "jobpanel"
    name = "Job panel (test)"
    description = "A panel whose accounts are long jobs: the open operation polls."
    operations = frozenset({"open", "close"})
    config_fields = [
        ConfigField("url", "API URL", kind="url", required=True),
        ConfigField("token", "API token", kind="secret", required=True),
        ConfigField("poll_after", "Check every (s)", kind="float", default=1.0, minimum=0.2),
        ConfigField("timeout", "Timeout (s)", kind="float", default=5.0, minimum=0.5),
    ]

    def _request(self, ctx, method, path, **kwargs):
        url = self.config["url"] + path
        headers = {"Authorization": f"Bearer {self.config['token']}"}
        with ctx.call(method, url) as call:
            try:
                reply = requests.request(
                    method, url, headers=headers, timeout=self.timeout(), **kwargs
                )
            except requests.RequestException as exc:
                call.outcome = exc.__class__.__name__
                raise TemporaryError(f"cannot reach the panel: {exc.__class__.__name__}") from None
            call.outcome = f"{reply.status_code} {reply.reason}"
        if reply.status_code >= 500:
            raise TemporaryError(f"the panel answered {reply.status_code}")
        if reply.status_code >= 400:
            raise PermanentError(f"the panel refused: {reply.json().get('error')}")
        return reply.json()

    @staticmethod
    def key(ctx):
        return f"service-{ctx.service.id}"

    def open(self, ctx):
        job_id = ctx.state.get("job")
        if job_id is None:
            # take over: a job an earlier attempt started is found by the service's key
            found = self._request(ctx, "GET", "/jobs", params={"key": self.key(ctx)})["jobs"]
            if found:
                job_id = found[0]["id"]
                ctx.log(f"taking over job {job_id}")
            else:
                job_id = self._request(ctx, "POST", "/jobs", json={"key": self.key(ctx)})["id"]
            ctx.save_state({"job": job_id})
        job = self._request(ctx, "GET", f"/jobs/{job_id}")
        if job["status"] != "done":
            return Result.poll(after=self.config.get("poll_after") or 1.0, state={"job": job_id})
        return Result.done(
            job_id,
            {"hostname": f"{job_id}.jobs.test", "ip": "203.0.113.9", "username": "root"},
            data={"job": job_id},
        )

    def close(self, ctx):
        self._request(ctx, "DELETE", f"/jobs/{ctx.service.remote_id}")
        return Result.done(ctx.service.remote_id)

    def check_config(self):
        try:
            reply = requests.get(
                self.config["url"] + "/health",
                headers={"Authorization": f"Bearer {self.config['token']}"},
                timeout=self.timeout(),
            )
        except requests.RequestException as exc:
            raise ConfigProblem(
                f"cannot reach the panel: {exc.__class__.__name__}", "url"
            ) from None
        if reply.status_code == 401:
            raise ConfigProblem(f"the panel refused the token: {reply.json()['error']}", "token")
        return reply.json()["version"]
