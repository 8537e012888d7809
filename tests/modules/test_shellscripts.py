"""The shellscripts module type against a real OpenSSH server: Debian's ``sshd`` started
by the tests on a free loopback port with its own host key and config (``ssh_server``),
root logging in with a throwaway key, a throwaway user with a password (``ssh_host``).

The README's example scripts (docs/examples/shellscripts: a Linux user with a home per
service) run for real; scripts of the tests' own succeed, fail temporarily, fail
permanently, hang past the limit and print garbage. A worker killed while a script runs
is re-run with the same operation id and takes over the user it made; a server whose
host key changed is refused before any credential is sent. Every user, key and process a
test makes is removed after it (``SSHHost.cleanup``).
"""

import json
import os
import signal
import time
import uuid
from datetime import timedelta

import paramiko
import pytest

from app.db import database
from app.models import Attempt, Operation, utcnow
from app.services import operations
from tests.support import (
    SSHServer,
    linux_user,
    run_operation_in_process,
    ssh_keypair,
    wait_for,
)


class Shell:
    """A shellscripts module on the test's sshd, its tariffs and orders, run by the test."""

    def __init__(self, app, api, engine, host, test_connection=False, **config):
        self.app, self.api, self.engine, self.host = app, api, engine, host
        department = api.ok("post", "/departments", {"name": f"Shell {uuid.uuid4().hex[:6]}"})
        self.module = api.ok(
            "post",
            "/modules",
            {
                "name": f"shell-{uuid.uuid4().hex[:6]}",
                "type": "shellscripts",
                "config": host.config(**config),
                "department_id": department["id"],
                "retry_delay": 1,
                "test_connection": test_connection,
            },
            status=201,
        )
        self.client = api.ok(
            "post",
            "/clients",
            {"name": 'Fran O\'Hara "$HOME" `id`', "email": f"fran-{host.tag}@example.com"},
        )

    def configure(self, **config):
        """Change the module's settings (the host's, with ``config`` over them)."""
        self.module = self.api.ok(
            "put",
            f"/modules/{self.module['id']}",
            {"name": self.module["name"], "config": self.host.config(**config)},
        )

    def tariff(self, settings=None, expect="done"):
        name = f"web-{uuid.uuid4().hex[:8]}"
        body = {
            "name": f"Hosting {name}",
            "product_type": "hosting",
            "price": "5",
            "internal_name": name,
            "module_ids": [self.module["id"]],
        }
        if settings is not None:
            body["item_settings"] = {str(self.module["id"]): {"settings": json.dumps(settings)}}
        tariff = self.api.ok("post", "/tariffs", body, status=201)
        for op in self.engine.run_all():  # ensure_item
            assert op.status == expect, op.last_error
        return tariff

    def order(self, tariff):
        order = self.api.order(self.client["id"], tariff["id"], {"domain": "fran.example.com"})
        code, paid = self.api.pay(order)
        assert code == 200, paid
        return order["service_id"], paid["operation_id"]

    def open(self, tariff):
        service_id, op_id = self.order(tariff)
        return service_id, self.engine.run(op_id)

    def request(self, service_id, kind, **params):
        op = self.api.ok("post", f"/services/{service_id}/{kind}", params, status=202)
        return self.engine.run(op["id"])

    def attempt_once(self, op_id):
        """One attempt, whatever it ends in; ``(attempt, operation)``."""
        with self.app.app_context(), database.connection_context():
            operations.run(op_id)
            attempt = (
                Attempt.select()
                .where(Attempt.operation == op_id)
                .order_by(Attempt.number.desc())[0]
            )
            return attempt, Operation.get_by_id(op_id)

    def details(self, service_id):
        return self.api.ok("get", f"/services/{service_id}")["details"]

    def log(self, op_id):
        with self.app.app_context(), database.connection_context():
            return "\n".join(
                (a.log or "") + "\n" + (a.error or "")
                for a in Attempt.select().where(Attempt.operation == op_id)
            )


def can_log_in(server, user, password):
    """Whether ``user`` gets in to the test's sshd with ``password`` (as a client would)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=server.port,
            username=user,
            password=password,
            allow_agent=False,
            look_for_keys=False,
            timeout=5,
        )
        _, stdout, _ = client.exec_command("id -un")
        return stdout.read().decode().strip() == user
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


@pytest.fixture
def shell(app, api, engine, ssh_host):
    return Shell(app, api, engine, ssh_host)


def test_the_example_scripts_make_a_linux_user_the_client_can_use(shell, ssh_host, ssh_server):
    tariff = shell.tariff(settings={"quota_mb": 0})
    service_id, op = shell.open(tariff)
    assert op.status == "done", op.last_error
    name = ssh_host.user_of(service_id)
    found = linux_user(name)
    assert found["comment"] == f"{ssh_host.owner_tag}/service-{service_id}"
    assert os.path.isdir(found["home"]) and found["home"] == f"/home/{name}"
    details = shell.details(service_id)
    assert details["username"] == name and details["home"] == found["home"]
    assert details["ip"] == "127.0.0.1" and details["domain"] == "fran.example.com"
    assert len(details["password"]) == 20
    service = shell.api.ok("get", f"/services/{service_id}")
    assert service["status"] == "active" and service["remote_id"] == name
    log = shell.log(op.id)
    assert f"SSH ssh://root@127.0.0.1:{ssh_server.port}" in log
    assert f"host key {ssh_server.host_key}" in log
    assert "RUN open:" in log and "exit 0" in log
    assert f"created the user {name}" in log  # its standard error
    assert details["password"] not in log
    # the client logs in with the details (sshd lets the tests' users in by password)
    assert can_log_in(ssh_server, name, details["password"])

    op = shell.request(service_id, "suspend")
    assert op.status == "done", op.last_error
    assert linux_user(name)["locked"] and linux_user(name)["expired"]
    assert not can_log_in(ssh_server, name, details["password"])
    assert shell.request(service_id, "resume").status == "done"
    assert can_log_in(ssh_server, name, details["password"])
    assert shell.request(service_id, "renew").status == "done"
    bigger = shell.tariff(settings={"quota_mb": 0, "plan": "bigger"})
    op = shell.request(service_id, "change_tariff", tariff_id=bigger["id"])
    assert op.status == "done", op.last_error
    assert f"now has the quota of {bigger['internal_name']}" in shell.log(op.id)

    op = shell.request(service_id, "close")
    assert op.status == "done", op.last_error
    assert linux_user(name) is None and not os.path.exists(found["home"])
    assert shell.api.ok("get", f"/services/{service_id}")["status"] == "deleted"
    assert ssh_host.made() == []


def test_the_script_gets_the_context_in_its_environment_and_on_standard_input(shell, ssh_host):
    dump = os.path.join(ssh_host.folder, "seen")
    path = ssh_host.script(
        "open-dump",
        f"""
env | grep -E '^(PROVISOR_|USER_PREFIX)' | sort > {dump}.env
cat > {dump}.json
echo '{{"remote_id": "acct-'"$PROVISOR_SERVICE_ID"'", "details": {{"username": "u1"}}}}'
""",
    )
    shell.configure(script_open=path, script_ensure_item="/bin/true")  # quotas: not here
    tariff = shell.tariff(settings={"quota_mb": 250, "label": "Web S", "ssd": True})
    service_id, op = shell.open(tariff)
    assert op.status == "done", op.last_error
    with open(dump + ".env") as fh:
        env = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    assert env["PROVISOR_OPERATION"] == "open"
    assert env["PROVISOR_OPERATION_ID"] == str(op.id)
    assert env["PROVISOR_ATTEMPT"] == "1"
    assert env["PROVISOR_SERVICE_ID"] == str(service_id)
    assert env["PROVISOR_TARIFF"] == tariff["internal_name"]
    assert env["PROVISOR_CLIENT_ID"] == str(shell.client["id"])
    assert env["PROVISOR_CLIENT_EMAIL"] == shell.client["email"]
    assert env["PROVISOR_CLIENT_NAME"] == 'Fran O\'Hara "$HOME" `id`'  # quoted, not run
    assert env["PROVISOR_PARAM_DOMAIN"] == "fran.example.com"
    assert env["PROVISOR_ITEM_QUOTA_MB"] == "250" and env["PROVISOR_ITEM_SSD"] == "1"
    assert env["USER_PREFIX"] == ssh_host.prefix  # the module's environment setting
    with open(dump + ".json") as fh:
        context = json.load(fh)
    assert context["operation"] == "open" and context["operation_id"] == op.id
    assert context["service"]["id"] == service_id
    assert context["tariff"]["internal_name"] == tariff["internal_name"]
    assert context["client"]["email"] == shell.client["email"]
    assert context["item_settings"] == {"label": "Web S", "quota_mb": 250, "ssd": True}
    assert context["params"] == {"domain": "fran.example.com"}
    service = shell.api.ok("get", f"/services/{service_id}")
    assert service["remote_id"] == f"acct-{service_id}"


def test_the_suspend_script_gets_the_reason_staff_gave(shell, ssh_host):
    dump = os.path.join(ssh_host.folder, "suspended")
    path = ssh_host.script(
        "suspend-dump",
        f"""
env | grep -E '^PROVISOR_PARAM_' | sort > {dump}.env
cat > {dump}.json
""",
    )
    opened = ssh_host.script(
        "open-simple", 'echo \'{"remote_id": "acct-\'"$PROVISOR_SERVICE_ID"\'"}\''
    )
    shell.configure(script_open=opened, script_suspend=path, script_ensure_item="/bin/true")
    service_id, op = shell.open(shell.tariff())
    assert op.status == "done", op.last_error
    op = shell.request(service_id, "suspend", reason="Unpaid invoice #7; 'quoted' $HOME")
    assert op.status == "done", op.last_error
    with open(dump + ".env") as fh:
        env = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    assert env["PROVISOR_PARAM_REASON"] == "Unpaid invoice #7; 'quoted' $HOME"  # not run
    with open(dump + ".json") as fh:
        context = json.load(fh)
    assert context["operation"] == "suspend"
    assert context["params"]["reason"] == "Unpaid invoice #7; 'quoted' $HOME"


SCRIPTS = {
    "temporary": (
        "echo 'the panel is busy, try later' >&2; exit 75",
        "retry_wait",
        "temporary_error",
        "failed temporarily (exit 75): the panel is busy, try later",
    ),
    "permanent": (
        "echo 'plan web-s does not exist on this panel' >&2; exit 3",
        "manual",
        "permanent_error",
        "failed (exit 3): plan web-s does not exist on this panel",
    ),
    "garbage": (
        "echo 'Welcome to the panel!'; echo '<html>oops</html>'; exit 0",
        "manual",
        "permanent_error",
        "exited 0 but its standard output is not the JSON answer",
    ),
    "no remote id": (
        'echo \'{"details": {"username": "x"}}\'',
        "manual",
        "permanent_error",
        "open must name a remote_id",
    ),
    "missing": (None, "manual", "permanent_error", "failed (exit 127) (not found"),
}


def test_how_a_scripts_exit_and_output_are_read(shell, ssh_host):
    """Run as the throwaway user, logged in with its password (these scripts need no root;
    ensure_item is /bin/true: it prints nothing, which is done)."""
    tariff = None
    for case, (body, status, outcome, said) in sorted(SCRIPTS.items()):
        path = (
            ssh_host.script(f"open-{case.replace(' ', '-')}", body)
            if body
            else os.path.join(ssh_host.folder, "no-such-script")
        )
        shell.configure(
            username=ssh_host.login_user,
            private_key="",
            password=ssh_host.login_password,
            script_open=path,
            script_ensure_item="/bin/true",
        )
        tariff = tariff or shell.tariff()
        _, op_id = shell.order(tariff)
        attempt, op = shell.attempt_once(op_id)
        assert (op.status, attempt.outcome) == (status, outcome), (case, attempt.error)
        assert said in attempt.error, (case, attempt.error)
        assert f"open: {path}" in attempt.error
        assert f"SSH ssh://{ssh_host.login_user}@127.0.0.1" in attempt.log
        if body and ">&2" in body:  # standard error is in the attempt log too
            assert "stderr: " + body.split("'")[1] in attempt.log, case


def test_a_scripts_output_is_read_to_its_end_after_its_exit(shell, ssh_host, ssh_server):
    """sshd sends a script's exit status when the script ends and the end of its output
    when the output is drained, in either order (Test connection once read half its probe's
    answer under the full suite's load): an answer printed by a process the script left
    running is read whole; a process that keeps the output open is let go 2 s after the
    exit, and the attempt log says so."""
    answer = '{"remote_id": "%s", "details": {"shell": "sh"}}'
    late = ssh_host.script("open-late", f"( sleep 0.5; echo '{answer % 'late-1'}' ) & exit 0")
    shell.configure(script_open=late)
    tariff = shell.tariff()
    service_id, op_id = shell.order(tariff)
    attempt, op = shell.attempt_once(op_id)
    assert op.status == "done", attempt.error
    assert shell.api.ok("get", f"/services/{service_id}")["remote_id"] == "late-1"
    assert "its output still open" not in attempt.log

    held = ssh_host.script("open-held", f"echo '{answer % 'held-1'}'; sleep 30 & exit 0")
    shell.configure(script_open=held)
    service_id, op_id = shell.order(tariff)
    attempt, op = shell.attempt_once(op_id)
    assert op.status == "done", attempt.error
    assert shell.api.ok("get", f"/services/{service_id}")["remote_id"] == "held-1"
    assert "exit 0, its output still open 2 s after: a process it started holds it" in attempt.log
    ssh_server.kill_leftovers()


def test_a_script_that_hangs_is_stopped_at_its_time_limit(shell, ssh_host, ssh_server):
    path = ssh_host.script("open-hang", "echo 'started' >&2; sleep 60; echo never")
    shell.configure(script_open=path, time_limit=1)
    _, op_id = shell.order(shell.tariff())
    started = time.monotonic()
    attempt, op = shell.attempt_once(op_id)
    elapsed = time.monotonic() - started
    assert op.status == "retry_wait" and attempt.outcome == "temporary_error", attempt.error
    assert "ran past its time limit of 1 s and was stopped on the server" in attempt.error
    assert elapsed < 6, elapsed
    assert "stderr: started" in attempt.log and "exit 124" in attempt.log
    # timeout(1) ended the script and its sleep on the server
    wait_for(lambda: not ssh_server.leftovers(), timeout=5, message="the script to be gone")


def test_without_the_servers_limit_provisor_stops_waiting(shell, ssh_host, ssh_server):
    path = ssh_host.script("open-hang-2", "sleep 60")
    shell.configure(script_open=path, time_limit=1, server_time_limit=False)
    _, op_id = shell.order(shell.tariff())
    started = time.monotonic()
    attempt, op = shell.attempt_once(op_id)
    assert time.monotonic() - started < 5
    assert attempt.outcome == "temporary_error", attempt.error
    assert "did not end within 2 s (time limit 1 s): Provisor stopped waiting" in attempt.error
    assert "may still be running on the server" in attempt.error
    ssh_server.kill_leftovers()


def test_a_worker_killed_mid_run_is_rerun_and_takes_over_the_user(app, shell, ssh_host):
    """The worker process is SIGKILLed while the open script runs (after the example made
    the user, before Provisor has the answer); the sweep reclaims the attempt and the run
    with the same operation id takes over that user: one user, a password that works."""
    marker = os.path.join(ssh_host.folder, "first-run-of")
    path = ssh_host.script(
        "open-slow-once",
        f"""
out="$("{ssh_host.config()["scripts_dir"]}/open")"; status=$?
if [ ! -e "{marker}-$PROVISOR_OPERATION_ID" ]; then
    touch "{marker}-$PROVISOR_OPERATION_ID"; sleep 30
fi
printf '%s\\n' "$out"; exit $status
""",
    )
    shell.configure(script_open=path)
    service_id, op_id = shell.order(shell.tariff())
    name = ssh_host.user_of(service_id)
    worker = run_operation_in_process(app, op_id)
    try:
        wait_for(
            lambda: os.path.exists(f"{marker}-{op_id}") or worker.poll() is not None,
            timeout=20,
            message="the first run to make the user and sleep",
        )
        assert worker.poll() is None, worker.stdout.read().decode()
        assert linux_user(name) is not None  # the first run made the user
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.stdout.close()
    with app.app_context(), database.connection_context():
        assert Operation.get_by_id(op_id).status == "running"
        Operation.update(lease_until=utcnow() - timedelta(seconds=1)).where(
            Operation.id == op_id
        ).execute()
        assert operations.sweep()["reclaimed"] == 1
    op = shell.engine.run(op_id)
    assert op.status == "done", op.last_error
    assert f"the user {name} already carries this service's mark: taken over" in shell.log(op_id)
    assert ssh_host.made() == [name]
    details = shell.details(service_id)
    assert can_log_in(ssh_host.server, name, details["password"])


def test_a_changed_host_key_is_refused_naming_both_keys(app, api, engine, ssh_host, tmp_path):
    server = SSHServer(tmp_path / "sshd").start()
    try:
        server.authorize("root", ssh_host.public_key)
        config = ssh_host.config(port=server.port, host_key="")
        shell = Shell(
            app, api, engine, ssh_host, test_connection=True, port=server.port, host_key=""
        )
        assert config["host_key"] == ""
        module = api.ok("get", f"/modules/{shell.module['id']}")
        assert module["config"]["host_key"] == server.host_key  # pinned by Test connection
        tariff = shell.tariff()
        old = server.host_key
        server.stop()
        new = server.new_host_key()  # "the server was reinstalled", same address
        server.start()
        service_id, op_id = shell.order(tariff)
        attempt, op = shell.attempt_once(op_id)
        assert op.status == "manual" and attempt.outcome == "permanent_error", attempt.error
        assert f"it presents {new}, the pinned key is {old}" in attempt.error
        assert "Refused before sending any credential" in attempt.error
        assert "Accepted publickey" not in server.log_text().split("Server listening")[-1]
        assert linux_user(ssh_host.user_of(service_id)) is None
        check = api.ok("post", f"/modules/{shell.module['id']}/check")
        assert check["ok"] is False and new in check["fields"]["config.host_key"]
        assert api.ok("get", f"/modules/{shell.module['id']}")["config"]["host_key"] == old
    finally:
        server.stop()


def test_the_pinned_keys_type_is_the_one_negotiated(api, ssh_host, tmp_path):
    """A server with an Ed25519 and an RSA host key: a module pinned to either gets in
    (only that type is negotiated); ssh-keygen -lf's line is taken as it is printed."""
    server = SSHServer(tmp_path / "sshd", rsa=True).start()
    try:
        server.authorize("root", ssh_host.public_key)
        kind, fingerprint = server.rsa_host_key.split()
        assert kind == "ssh-rsa"
        for pin, shown in (
            (f"2048 {fingerprint} root@web1 (RSA)", server.rsa_host_key),
            (server.host_key, server.host_key),
        ):
            module = api.ok(
                "post",
                "/modules",
                {
                    "name": uuid.uuid4().hex[:8],
                    "type": "shellscripts",
                    "config": ssh_host.config(port=server.port, host_key=pin),
                },
                status=201,
            )
            assert module["config"]["host_key"] == shown
            check = api.ok("post", f"/modules/{module['id']}/check")
            assert check["ok"] is True and f"host key {shown} as pinned" in check["message"]
    finally:
        server.stop()
    # the RSA key pinned, and a server that has none (the session's: Ed25519 only)
    module = api.ok(
        "post",
        "/modules",
        {
            "name": uuid.uuid4().hex[:8],
            "type": "shellscripts",
            "config": ssh_host.config(host_key=server.rsa_host_key),
        },
        status=201,
    )
    check = api.ok("post", f"/modules/{module['id']}/check")
    assert check["ok"] is False and list(check["fields"]) == ["config.host_key"], check
    assert "the server offers no host key of the pinned type ssh-rsa" in check["message"]


def test_test_connection_pins_the_key_and_checks_the_scripts(api, ssh_host, ssh_server):
    def module(**config):
        return api.ok(
            "post",
            "/modules",
            {
                "name": uuid.uuid4().hex[:8],
                "type": "shellscripts",
                "config": ssh_host.config(**config),
            },
            status=201,
        )

    unpinned = module(host_key="")
    check = api.ok("post", f"/modules/{unpinned['id']}/check")
    assert check["ok"] is True, check
    assert f"host key {ssh_server.host_key} pinned" in check["message"]
    assert "the 7 scripts are there and executable" in check["message"]
    assert api.ok("get", f"/modules/{unpinned['id']}")["config"]["host_key"] == ssh_server.host_key
    again = api.ok("post", f"/modules/{unpinned['id']}/check")
    assert f"host key {ssh_server.host_key} as pinned" in again["message"]
    # the throwaway user, by password; no scripts in its folder yet
    by_password = module(
        username=ssh_host.login_user,
        private_key="",
        password=ssh_host.login_password,
        scripts_dir=ssh_host.scripts,
        connect_timeout=15,  # a password login under the full suite's load: not what is tested
    )
    check = api.ok("post", f"/modules/{by_password['id']}/check")
    assert check["ok"] is False and list(check["fields"]) == ["config.scripts_dir"], check
    assert f"{ssh_host.scripts}/open (missing)" in check["message"]
    for kind in ("open", "suspend", "resume", "close", "change_tariff", "renew", "ensure_item"):
        ssh_host.script(kind, "exit 0")
    check = api.ok("post", f"/modules/{by_password['id']}/check")
    assert check["ok"] is True, check
    wrong = module(username=ssh_host.login_user, private_key="", password="not-the-password")
    check = api.ok("post", f"/modules/{wrong['id']}/check")
    assert check["ok"] is False and list(check["fields"]) == ["config.password"], check
    assert "refused the login with the module's password" in check["message"]
    assert "not-the-password" not in check["message"]
    other_key = module(private_key=ssh_keypair()[0])
    check = api.ok("post", f"/modules/{other_key['id']}/check")
    assert check["ok"] is False and list(check["fields"]) == ["config.private_key"], check


def test_an_unpinned_module_refuses_to_run(shell, api, ssh_host):
    shell.configure(host_key="")
    _, op_id = shell.order(shell.tariff(expect="manual"))
    attempt, op = shell.attempt_once(op_id)
    assert attempt.outcome == "permanent_error"
    assert "host key is not pinned yet: run Test connection" in attempt.error
    assert ssh_host.made() == []


def test_secrets_never_reach_the_attempt_log(shell, ssh_host):
    """A script that prints the module's password and key lines, and a details password:
    all masked in the log and the error."""
    key_line = ssh_host.private_key.splitlines()[2]
    path = ssh_host.script(
        "open-leaky",
        f"""
echo "connecting with {ssh_host.login_password} and {key_line}" >&2
echo '{{"remote_id": "r1", "details": {{"username": "u", "password": "Client-Pw-123456"}}}}'
""",
    )
    shell.configure(script_open=path, password=ssh_host.login_password)
    service_id, op = shell.open(shell.tariff())
    assert op.status == "done", op.last_error
    assert shell.details(service_id)["password"] == "Client-Pw-123456"
    leaky = ssh_host.script("close", f"echo 'failed for {ssh_host.login_password}' >&2; exit 2")
    shell.configure(script_open=path, password=ssh_host.login_password, script_close=leaky)
    close = shell.request(service_id, "close")
    assert close.status == "manual"
    text = shell.log(op.id) + shell.log(close.id) + (close.last_error or "")
    assert "connecting with ******** and ********" in text
    assert "failed for ********" in text
    for secret in (ssh_host.login_password, key_line, "Client-Pw-123456"):
        assert secret not in text
    shown = shell.api.ok("get", f"/modules/{shell.module['id']}")["config"]
    assert shown["private_key"] == shown["password"] == "********"


def test_ensure_item_says_what_the_server_lacks(shell):
    tariff = shell.tariff(settings={"quota_mb": 100}, expect="manual")
    (item,) = shell.api.ok("get", f"/tariffs/{tariff['id']}")["items"]
    assert item["status"] == "failed"
    assert (
        f"this server cannot host {tariff['internal_name']}: quota_mb is 100 but" in item["error"]
    )
    ready = shell.tariff(settings={"quota_mb": 0})
    (item,) = shell.api.ok("get", f"/tariffs/{ready['id']}")["items"]
    assert item["status"] == "ready"


def test_settings_are_checked(api, ssh_host):
    def refused(config):
        code, body = api.post(
            "/modules", {"name": uuid.uuid4().hex[:8], "type": "shellscripts", "config": config}
        )
        assert code == 422, body
        return body["error"]["fields"]

    assert "config.host_key" in refused(ssh_host.config(host_key="SHA1:abc"))
    bare = ssh_host.server.host_key.split()[1]  # the type is needed: servers have several
    assert "config.host_key" in refused(ssh_host.config(host_key=bare))
    assert "config.private_key" in refused(ssh_host.config(private_key="", password=""))
    assert "config.private_key" in refused(ssh_host.config(private_key="not a key"))
    encrypted, _ = ssh_keypair("secret-passphrase")
    fields = refused(ssh_host.config(private_key=encrypted))
    assert fields["config.key_passphrase"] == "The key is encrypted: give its passphrase."
    fields = refused(ssh_host.config(private_key=encrypted, key_passphrase="wrong"))
    assert "wrong passphrase" in fields["config.key_passphrase"]
    assert "config.environment" in refused(ssh_host.config(environment="NOT A LINE"))
    assert "config.environment" in refused(ssh_host.config(environment="PROVISOR_X=1"))
    module = api.ok(
        "post",
        "/modules",
        {"name": uuid.uuid4().hex[:8], "type": "shellscripts", "config": ssh_host.config()},
        status=201,
    )
    code, body = api.post(
        "/tariffs",
        {
            "name": "Bad settings",
            "product_type": "hosting",
            "price": "1",
            "internal_name": f"bad-{uuid.uuid4().hex[:6]}",
            "module_ids": [module["id"]],
            "item_settings": {str(module["id"]): {"settings": "[1, 2]"}},
        },
    )
    assert code == 422, body


def test_the_attempts_deadline_and_lease_cover_the_wait(app, shell, ssh_host):
    """Provisor stops waiting for a script before the attempt's deadline, and the lease
    covers the deadline and one blocking call (connecting) past it."""
    import modules

    cls = modules.get_type("shellscripts")
    for config in (
        {},
        {"time_limit": 1, "connect_timeout": 1},
        {"time_limit": 3600, "server_time_limit": False, "connect_timeout": 120},
    ):
        module = cls(cls.validate_config(ssh_host.config(**config))[0])
        connecting = 5 * module.connect_timeout()
        assert module.wait_limit() > module.time_limit()
        assert connecting + module.wait_limit() < module.timeout()
        assert module.io_timeout() == module.connect_timeout()
    _, op_id = shell.order(shell.tariff())
    with app.app_context(), database.connection_context():
        before = utcnow()
        assert operations._claim(op_id) is not None  # as a worker claims it
        lease = (Operation.get_by_id(op_id).lease_until - before).total_seconds()
    module = cls(cls.validate_config(ssh_host.config())[0])
    assert lease >= module.timeout() + module.io_timeout(), lease
