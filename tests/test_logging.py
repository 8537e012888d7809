"""Logging: one format in every process, the operation (or task, email...) id on each
record logged while handling it, JSON lines as an option. Real processes: `provisor
serve` here, a `dramatiq actors` worker in tests/test_scaled.py."""

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import uuid

import requests

from tests.support import free_port, signed, wait_for

BIN = os.path.dirname(sys.executable)


def _up(base):
    try:
        return requests.get(base + "/api/v1/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_serve_logs_json_lines_with_the_operation_id(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PROVISOR_INSTANCE_PATH": str(tmp_path / "instance"),
        "PAYMENT_WEBHOOK_SECRET": "test-webhook-secret",
        "PROVISOR_LOG_FORMAT": "json",
        "SWEEP_INTERVAL": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "SMTP_URL"):
        env.pop(name, None)
    out, err = open(tmp_path / "serve.out", "w"), open(tmp_path / "serve.err", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [f"{BIN}/provisor", "serve", "--port", str(port)], env=env, stdout=out, stderr=err
    )
    try:
        wait_for(lambda: _up(base), timeout=30, message="provisor serve to answer")
        email = re.search(r"email:\s+(\S+)", (tmp_path / "serve.out").read_text()).group(1)
        token = subprocess.run(
            [f"{BIN}/provisor", "tokens", "create", "--email", email],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()

        def call(method, path, body=None):
            response = requests.request(
                method,
                f"{base}/api/v1{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert response.status_code < 300, response.text
            return response.json()

        module = call(
            "POST",
            "/modules",
            {"name": "Sandbox", "type": "sandbox", "config": {"fail_first": 1}, "retry_delay": 1},
        )
        tariff = call(
            "POST",
            "/tariffs",
            {
                "name": "VPS S",
                "product_type": "vps",
                "price": "3.50",
                "internal_name": "vps-s",
                "module_ids": [module["id"]],
            },
        )
        client = call("POST", "/clients", {"name": "Ann", "email": "ann@example.com"})
        order = call("POST", "/orders", {"client_id": client["id"], "tariff_id": tariff["id"]})
        raw, headers = signed(
            {
                "payment_id": f"p-{uuid.uuid4().hex}",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            }
        )
        paid = requests.post(base + "/api/v1/webhooks/payment", data=raw, headers=headers)
        op_id = paid.json()["operation_id"]
        wait_for(lambda: call("GET", f"/operations/{op_id}")["status"] == "done", timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        out.close()
        err.close()

    lines = (tmp_path / "serve.err").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line of stderr is a JSON record
    assert records and all(
        {"time", "level", "logger", "message", "process", "thread"} <= set(r) for r in records
    )
    mine = [(r["level"], r["message"]) for r in records if r.get("operation") == op_id]
    assert (
        "WARNING",
        "open, attempt 1: temporary_error: sandbox: simulated failure of attempt 1",
    ) in mine
    assert ("INFO", "open, attempt 2: done") in mine
    assert all(r["attempt"] in (1, 2) for r in records if r.get("operation") == op_id)
    # and what had nothing to do with it does not carry it
    started = next(r for r in records if r["message"].startswith("scheduler: sweeping every"))
    assert "operation" not in started


def test_debug_logging_never_writes_sql_parameters(app, api, http_endpoint):
    """PROVISOR_LOG_LEVEL=DEBUG: records at DEBUG are written, but not peewee's SQL with
    its parameters, which would carry a module's secret (and passwords) in clear."""
    from app import logs
    from tests.support import ENDPOINT_SECRET

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logs._handler)
    out = io.StringIO()
    handler = logs.configure("DEBUG", stream=out)
    try:
        api.catalog("http", http_endpoint.config())  # an INSERT carrying the secret
        logging.getLogger("app.test").debug("a debug record")
    finally:
        root.removeHandler(handler)
        for existing in saved[1]:
            if existing not in root.handlers:
                root.addHandler(existing)
        root.setLevel(saved[0])
        logs._handler = saved[2]
        logging.getLogger("peewee").setLevel(logging.NOTSET)
    text = out.getvalue()
    assert "a debug record" in text
    assert ENDPOINT_SECRET not in text


def test_a_web_request_about_an_operation_or_task_logs_its_id(app):
    """What the web logs while handling a request about one operation (or task) carries
    its id, and only while handling it."""
    from app import logs

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.getMessage(), record.context_fields))

    handler = Keep()
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger("app.test.requests")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    @app.get("/test-log/operations/<int:operation_id>")
    def about_an_operation(operation_id):
        logger.info("about an operation")
        return "ok"

    @app.get("/test-log/tasks/<int:task_id>")
    def about_a_task(task_id):
        logger.info("about a task")
        return "ok"

    try:
        client = app.test_client()
        assert client.get("/test-log/operations/12").status_code == 200
        assert client.get("/test-log/tasks/7").status_code == 200
        logger.info("after the requests")
    finally:
        logger.removeHandler(handler)
    assert seen == [
        ("about an operation", {"operation": 12}),
        ("about a task", {"task": 7}),
        ("after the requests", {}),
    ]
