"""The ``provisor`` command: in-process through Flask's runner, and as a real process."""

import contextlib
import os
import re
import subprocess
import sys
import time

import pytest
import requests

from tests.support import free_port, signed, wait_for

BIN = os.path.dirname(sys.executable)


def test_create_admin_and_token(runner, client):
    result = runner.invoke(
        args=["users", "create-admin", "--email", "Boss@Example.com", "--password", "long-password"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["tokens", "create", "--email", "boss@example.com"])
    assert result.exit_code == 0
    token = result.output.strip()
    assert token.startswith("pv_")
    response = client.get("/api/v1/departments", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["users", "create-admin", "--email", "not-an-email", "--password", "long-password"],
            "email",
        ),
        (["users", "create-admin", "--email", "a@b.example", "--password", "short"], "8"),
        (["tokens", "create", "--email", "nobody@example.com"], "no user"),
        (["ops", "restart", "12345"], "not found"),
        (["ops", "list", "--status", "bogus"], "unknown status"),
        (["ops", "cancel", "777"], "not found"),
    ],
)
def test_bad_arguments_print_one_line_and_fail(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_ops_list_restart_and_sweep(runner, api):
    _, _, tariff, client = api.catalog(
        "sandbox", {"permanent_failures": True, "fail_first": 1}, retry_delay=1
    )
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("manual",))
    result = runner.invoke(args=["ops", "list"])
    assert result.exit_code == 0
    row = [line for line in result.output.splitlines() if line.strip().startswith(str(op["id"]))]
    assert row and "manual" in row[0] and f"Service #{order['service_id']}" in row[0]
    result = runner.invoke(args=["ops", "restart", str(op["id"])])
    assert result.exit_code == 0, result.output
    assert f"Operation {op['id']} queued" in result.output
    done = api.wait_operation(op["id"])  # the second attempt is past fail_first
    assert done["attempts"] == 2
    result = runner.invoke(args=["ops", "restart", str(op["id"])])
    assert result.exit_code != 0 and "done" in result.output
    result = runner.invoke(args=["ops", "sweep"])
    assert result.exit_code == 0 and "reclaimed: 0" in result.output


def _run(env, *args):
    return subprocess.run(
        [f"{BIN}/provisor", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_console_script_bad_arguments(tmp_path):
    env = {**os.environ, "PROVISOR_INSTANCE_PATH": str(tmp_path)}
    for args, expected in [
        (("ops", "restart", "not-a-number"), "not a valid integer"),
        (("users", "create-admin", "--email", "x@example.com"), "--password"),
        (("no-such-command",), "No such command"),
        (("ops", "list"), "provisor db upgrade"),  # before the schema exists
    ]:
        result = _run(env, *args)
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1, result.stderr  # one line
        assert expected in result.stderr
    result = _run(env, "db", "upgrade")
    from app.schema import migration_names

    assert result.returncode == 0 and f"{migration_names()[-1]}." in result.stdout
    assert result.stdout.startswith("Schema upgraded: ") and result.stdout.count("\n") == 1
    result = _run(env, "db", "upgrade")
    assert result.returncode == 0 and result.stdout == "Schema is up to date.\n"


CLIS = {"provisor": ["provisor"], "flask": ["flask", "--app", "app"]}


def _both(env, *args, cwd):
    """The same command through `provisor` and `flask --app app`: {name: result}."""
    return {
        name: subprocess.run(
            [f"{BIN}/{argv[0]}", *argv[1:], *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
        )
        for name, argv in CLIS.items()
    }


def test_both_clis_print_the_same_one_line_errors(tmp_path):
    """No schema yet, a database out of reach, a service error, a bad argument: one line
    on stderr and a non-zero exit, the same through `provisor` and `flask --app app`."""
    env = {**os.environ, "PROVISOR_INSTANCE_PATH": str(tmp_path / "empty")}
    for name in ("DATABASE_URL", "REDIS_URL", "SMTP_URL"):
        env.pop(name, None)
    unreachable = {**env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    for environment, args, expected in [
        (env, ("ops", "list"), "the database has no schema yet (no such table: operation); "),
        (env, ("ops", "restart", "7"), "run: provisor db upgrade"),
        (unreachable, ("ops", "list"), "cannot use the database: connection to server at"),
    ]:
        results = _both(environment, *args, cwd=tmp_path)
        for name, result in results.items():
            assert result.returncode == 1, (name, result.stderr)
            assert result.stderr.count("\n") == 1, (name, result.stderr)
            assert result.stderr.startswith("Error: ") and expected in result.stderr, name
            assert result.stdout == ""
        assert results["provisor"].stderr == results["flask"].stderr
    assert _run(env, "db", "upgrade").returncode == 0
    results = _both(env, "ops", "restart", "7", cwd=tmp_path)
    for result in results.values():
        assert (result.returncode, result.stderr) == (2, "Error: operation 7 not found\n")
    results = _both(env, "ops", "cancel", "x", cwd=tmp_path)
    for name, result in results.items():
        assert result.returncode == 2
        assert result.stderr == (
            "Error: Invalid value for 'OPERATION_ID': 'x' is not a valid integer. "
            f"(see: {name} ops cancel --help)\n"
        )


def test_serve_runs_the_whole_embedded_system(tmp_path):
    """`provisor serve` with no settings: SQLite under the instance folder, the in-process
    worker and scheduler; an order paid through the webhook becomes active."""
    port = free_port()
    env = {
        **os.environ,
        "PROVISOR_INSTANCE_PATH": str(tmp_path / "instance"),
        "PAYMENT_WEBHOOK_SECRET": "test-webhook-secret",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "SMTP_URL"):
        env.pop(name, None)
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [f"{BIN}/provisor", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), timeout=30, message="provisor serve to answer")
        output = (tmp_path / "serve.log").read_text()
        match = re.search(r"email:\s+(\S+)\s+password:\s+(\S+)", output)
        assert match, output
        assert (tmp_path / "instance" / "provisor.sqlite3").exists()
        # the printed login works
        session = requests.Session()
        login = session.get(base + "/login", timeout=5)
        assert login.status_code == 200
        token = _run(env, "tokens", "create", "--email", match.group(1)).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}

        def call(method, path, body=None):
            response = requests.request(
                method, base + "/api/v1" + path, json=body, headers=headers, timeout=10
            )
            assert response.status_code < 300, response.text
            return response.json()

        module = call("POST", "/modules", {"name": "Sandbox", "type": "sandbox", "config": {}})
        tariff = call(
            "POST",
            "/tariffs",
            {
                "name": "Web S",
                "product_type": "hosting",
                "price": "3.50",
                "internal_name": "web-s",
                "module_ids": [module["id"]],
            },
        )
        client = call("POST", "/clients", {"name": "Carol", "email": "carol@example.com"})
        order = call(
            "POST",
            "/orders",
            {
                "client_id": client["id"],
                "tariff_id": tariff["id"],
                "params": {"domain": "carol.example.com"},
            },
        )
        raw, sig = signed(
            {
                "payment_id": "p-1",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            }
        )
        paid = requests.post(base + "/api/v1/webhooks/payment", data=raw, headers=sig, timeout=10)
        assert paid.status_code == 200, paid.text
        wait_for(
            lambda: call("GET", f"/services/{order['service_id']}")["status"] == "active",
            timeout=20,
            message="the service to become active",
        )
        emails = wait_for(
            lambda: call("GET", "/emails?status=outbox")["emails"],
            message="the welcome email in the outbox",
        )
        assert emails[0]["to"] == "carol@example.com"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def _up(base):
    try:
        return requests.get(base + "/api/v1/health", timeout=1).status_code == 200
    except requests.RequestException:
        time.sleep(0.1)
        return False


def test_serve_stopped_mid_call_hands_the_attempt_back(tmp_path):
    """SIGTERM to `provisor serve` while its embedded worker waits on a slow panel: the
    attempt is handed back (interrupted, queued again, not a failure) and the process
    ends at once instead of waiting for the panel; the next start completes it."""
    import sqlite3
    import uuid

    from tests.support import Instance, ModuleEndpoint

    endpoint = ModuleEndpoint(delay=10)
    endpoint.start()
    instance = Instance(tmp_path, "serve")
    instance.env["WORKER_SHUTDOWN_GRACE"] = "1"
    try:
        instance.start()
        module = instance.call(
            "POST",
            "/modules",
            {"name": "Panel", "type": "http", "config": endpoint.config(timeout=30)},
        )
        tariff = instance.call(
            "POST",
            "/tariffs",
            {
                "name": "VPS",
                "product_type": "vps",
                "price": "5",
                "internal_name": "vps",
                "module_ids": [module["id"]],
            },
        )
        client = instance.call("POST", "/clients", {"name": "Bo", "email": "bo@example.com"})
        order = instance.call(
            "POST", "/orders", {"client_id": client["id"], "tariff_id": tariff["id"]}
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
            instance.url + "/api/v1/webhooks/payment", data=raw, headers=headers, timeout=10
        )
        op_id = paid.json()["operation_id"]
        wait_for(lambda: endpoint.calls("open"), timeout=20, message="the call to the panel")
        asked = time.monotonic()
        instance.stop()
        # it stops without waiting for the panel (it answers 10 s after the call, which
        # came before the stop)
        assert time.monotonic() - asked < 9.5
        database = sqlite3.connect(instance.dir / "instance" / "provisor.sqlite3")
        with contextlib.closing(database):
            op = database.execute(
                "SELECT status, failures FROM operation WHERE id = ?", (op_id,)
            ).fetchone()
            attempts = database.execute(
                "SELECT outcome FROM attempt WHERE operation_id = ?", (op_id,)
            ).fetchall()
        assert op == ("queued", 0) and attempts == [("interrupted",)]
        endpoint.delay = 0
        instance.start()  # the sweep of the next start sends it again
        done = wait_for(
            lambda: (o := instance.call("GET", f"/operations/{op_id}"))["status"] == "done" and o,
            timeout=30,
        )
        assert [a["outcome"] for a in done["attempt_log"]] == ["interrupted", "done"]
        assert list(endpoint.creations) == [op_id]
    finally:
        instance.stop()
        endpoint.stop()
