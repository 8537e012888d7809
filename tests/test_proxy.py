"""The tasks proxy between real Provisor instances: each its own `provisor serve` process
with its own database, talking over HTTP on loopback."""

import subprocess
import time

import pytest
import requests

from tests.support import BIN, PEER_PASSWORD, Instance, connect_peers, wait_for


@pytest.fixture
def instances(tmp_path):
    started = []

    def make(name):
        instance = Instance(tmp_path, name).start()
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.stop()


DETAILS = {
    "hostname": "ded42.upstream.example",
    "ip": "198.51.100.42",
    "username": "root",
    "password": "upstream-pw",
}


def test_forward_work_remotely_and_bring_the_result_back(instances):
    reseller, provider = instances("reseller"), instances("provider")
    upstream = reseller.department("Upstream DC")
    dc = provider.department("DC")
    connect_peers(reseller, provider, upstream, dc, "reseller-1")

    order, op_id = reseller.order_manual_service(upstream["id"])
    local = wait_for(lambda: reseller.tasks(upstream["id"]), message="the local task")[0]
    remote = wait_for(
        lambda: provider.tasks(dc["id"]), timeout=15, message="the task at the provider"
    )[0]
    assert remote["title"] == local["title"] == f"Set up service #{order['service_id']} manually"

    # the provider's staff work on it there
    provider.call("POST", f"/tasks/{remote['id']}/assign", {})
    provider.call("POST", f"/tasks/{remote['id']}/comment", {"text": "racking it now"})
    provider.call("POST", f"/tasks/{remote['id']}/fields", {"fields": {"hostname": "ded42"}})
    code = requests.post(
        f"{provider.url}/api/v1/tasks/{remote['id']}/close",
        json={"fields": {"ip": "198.51.100.42"}},
        timeout=10,
        headers={"Authorization": f"Bearer {provider.token}"},
    )
    assert code.status_code == 422  # the reseller's form: required fields are enforced there
    provider.call("POST", f"/tasks/{remote['id']}/close", {"fields": DETAILS})

    # nothing comes back until the reseller pulls (every 5 minutes, or now)
    assert reseller.call("GET", f"/tasks/{local['id']}")["status"] == "new"
    result = reseller.cli("remotetaskctl", "--command", "checkevent")
    assert "events applied" in result.stdout
    task = reseller.call("GET", f"/tasks/{local['id']}")
    assert task["status"] == "closed"
    history = [(e["kind"], e["text"]) for e in task["events"]]
    assert any(kind == "comment" and text == "racking it now" for kind, text in history)
    assert any(kind == "note" and "hostname" in text for kind, text in history)
    assert [k for k, _ in history].count("closed") == 1
    assert reseller.call("GET", f"/operations/{op_id}")["status"] == "done"
    service = reseller.call("GET", f"/services/{order['service_id']}")
    assert service["status"] == "active" and service["details"] == DETAILS
    welcome = wait_for(
        lambda: reseller.call("GET", f"/emails?service_id={service['id']}")["emails"],
        message="the welcome email at the reseller",
    )[0]
    assert "198.51.100.42" in welcome["body"]
    # a second check finds nothing new
    again = reseller.cli("remotetaskctl", "--command", "checkevent").stdout
    assert ": 0 events applied" in again


def test_peer_down_then_back_everything_arrives_once_in_order(instances):
    reseller, provider = instances("reseller"), instances("provider")
    upstream = reseller.department("Upstream DC")
    dc = provider.department("DC")
    connect_peers(reseller, provider, upstream, dc, "reseller-2")
    provider.stop()

    orders = [reseller.order_manual_service(upstream["id"])[0] for _ in range(3)]
    local = wait_for(lambda: len(t := reseller.tasks(upstream["id"])) == 3 and t)
    first = min(local, key=lambda t: t["id"])
    for text in ("first note", "second note", "third note"):
        reseller.call("POST", f"/tasks/{first['id']}/comment", {"text": text})
    last = max(local, key=lambda t: t["id"])
    reseller.call("POST", f"/tasks/{last['id']}/cancel", {"reason": "client withdrew"})
    time.sleep(2.5)  # pushes fail meanwhile and are retried
    proxy_list = reseller.cli("proxy", "list").stdout
    assert "cannot reach" in proxy_list  # the failing peer is visible, not only in logs

    provider.start()
    remote = wait_for(
        lambda: len(t := provider.tasks(dc["id"])) == 3 and t,
        timeout=20,
        message="all three tasks at the provider",
    )
    by_title = {t["title"]: t for t in remote}
    assert sorted(by_title) == sorted(f"Set up service #{o['service_id']} manually" for o in orders)
    remote_first = by_title[first["title"]]
    events = wait_for(
        lambda: (
            [
                e
                for e in provider.call("GET", f"/tasks/{remote_first['id']}")["events"]
                if e["kind"] == "comment"
            ]
            if len(
                [
                    e
                    for e in provider.call("GET", f"/tasks/{remote_first['id']}")["events"]
                    if e["kind"] == "comment"
                ]
            )
            == 3
            else None
        ),
        timeout=15,
        message="three comments",
    )
    assert [e["text"] for e in events] == ["first note", "second note", "third note"]
    remote_last = provider.call("GET", f"/tasks/{by_title[last['title']]['id']}")
    wait_for(
        lambda: provider.call("GET", f"/tasks/{remote_last['id']}")["status"] == "cancelled",
        message="the cancel to arrive",
    )
    time.sleep(1.5)  # give a duplicate every chance to show up
    assert len(provider.tasks(dc["id"])) == 3  # no duplicate task
    comments = [
        e
        for e in provider.call("GET", f"/tasks/{remote_first['id']}")["events"]
        if e["kind"] == "comment"
    ]
    assert len(comments) == 3  # exactly once

    # the cursor survives a restart: nothing is applied twice
    provider.call("POST", f"/tasks/{remote_first['id']}/close", {"fields": DETAILS})
    assert "events applied" in reseller.cli("remotetaskctl", "--command", "checkevent").stdout
    assert reseller.call("GET", f"/tasks/{first['id']}")["status"] == "closed"
    reseller.stop()
    reseller.start()
    assert ": 0 events applied" in reseller.cli("remotetaskctl", "--command", "checkevent").stdout
    assert reseller.call("GET", f"/tasks/{first['id']}")["status"] == "closed"


def test_wrong_password_unknown_login_and_no_leaks(instances):
    reseller, provider = instances("reseller"), instances("provider")
    upstream = reseller.department("Upstream DC")
    dc = provider.department("DC")
    private = provider.department("Private")
    provider.cli(
        "proxy",
        "server-side",
        "--login",
        "reseller-3",
        "--password",
        PEER_PASSWORD,
        "--department-id",
        str(dc["id"]),
    )
    provider.cli(
        "proxy",
        "server-side",
        "--login",
        "someone-else",
        "--password",
        PEER_PASSWORD,
        "--department-id",
        str(private["id"]),
    )

    # the server answers 401 to a wrong password and to a login it does not know
    for login, password in (("reseller-3", "wrong-password"), ("nobody", PEER_PASSWORD)):
        response = requests.get(
            provider.url + "/proxy/v1/departments", auth=(login, password), timeout=5
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    # the client side says so plainly, in one line, and saves nothing
    bad = reseller.cli(
        "proxy",
        "client-side",
        "--url",
        provider.url,
        "--login",
        "reseller-3",
        "--password",
        "wrong-password",
        "--remote-department-id",
        str(dc["id"]),
        "--department-id",
        str(upstream["id"]),
        check=False,
    )
    assert bad.returncode != 0 and "wrong login or password" in bad.stderr
    assert bad.stderr.count("\n") == 1
    down = reseller.cli(
        "proxy",
        "client-side",
        "--url",
        "http://127.0.0.1:9",
        "--login",
        "x",
        "--password",
        "y",
        "--remote-department-id",
        "1",
        "--department-id",
        str(upstream["id"]),
        check=False,
    )
    assert down.returncode != 0 and "cannot reach" in down.stderr
    # a peer is offered its own department only, and cannot send elsewhere
    offered = requests.get(
        provider.url + "/proxy/v1/departments", auth=("reseller-3", PEER_PASSWORD), timeout=5
    ).json()
    assert offered == {"departments": [{"id": dc["id"], "name": "DC"}]}

    def client_side(remote_department, check=False):
        return reseller.cli(
            "proxy",
            "client-side",
            "--url",
            provider.url,
            "--login",
            "reseller-3",
            "--password",
            PEER_PASSWORD,
            "--remote-department-id",
            str(remote_department["id"]),
            "--department-id",
            str(upstream["id"]),
            check=check,
        )

    wrong_dept = client_side(private)
    assert wrong_dept.returncode != 0 and "does not offer" in wrong_dept.stderr
    client_side(dc, check=True)
    again = client_side(dc)
    assert again.returncode != 0 and "already forwarded" in again.stderr
    dup = provider.cli(
        "proxy",
        "server-side",
        "--login",
        "third",
        "--password",
        PEER_PASSWORD,
        "--department-id",
        str(dc["id"]),
        check=False,
    )
    assert dup.returncode != 0 and "already serves" in dup.stderr

    reseller.order_manual_service(upstream["id"])
    remote = wait_for(lambda: provider.tasks(dc["id"]), timeout=15)[0]
    provider.call("POST", f"/tasks/{remote['id']}/comment", {"text": "for reseller-3 only"})
    # another account sees none of it
    theirs = requests.get(
        provider.url + "/proxy/v1/events?after=0", auth=("someone-else", PEER_PASSWORD), timeout=5
    ).json()
    assert theirs == {"events": [], "next": 0}
    mine = requests.get(
        provider.url + "/proxy/v1/events?after=0", auth=("reseller-3", PEER_PASSWORD), timeout=5
    ).json()
    assert [e["kind"] for e in mine["events"]] == ["comment"]
    assert provider.tasks(private["id"]) == []
    # the password is never shown back or logged
    assert PEER_PASSWORD not in reseller.cli("proxy", "list").stdout
    assert PEER_PASSWORD not in reseller.log() and PEER_PASSWORD not in provider.log()


def test_remotetaskctl_bad_arguments(instances):
    reseller = instances("reseller")
    for args in (("remotetaskctl",), ("remotetaskctl", "--command", "explode")):
        result = reseller.cli(*args, check=False)
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    ok = reseller.cli("remotetaskctl", "--command", "checkevent")
    assert "No client side" in ok.stdout
    flask = subprocess.run(
        [f"{BIN}/flask", "--app", "app", "remotetaskctl", "--command", "checkevent"],
        env=reseller.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert flask.returncode == 0 and "No client side" in flask.stdout


def test_chain_a_to_b_to_c(instances):
    """A forwards to B, B forwards the same tasks on to C; closed at C, it closes at B and
    then at A."""
    a, b, c = instances("a"), instances("b"), instances("c")
    a_dept = a.department("Upstream")
    b_in = b.department("From A")
    c_dc = c.department("DC")
    connect_peers(a, b, a_dept, b_in, "a-login")
    connect_peers(b, c, b_in, c_dc, "b-login")

    order, op_id = a.order_manual_service(a_dept["id"])
    at_c = wait_for(lambda: c.tasks(c_dc["id"]), timeout=20, message="the task at C")[0]
    at_b = b.tasks(b_in["id"])[0]
    assert at_c["title"] == at_b["title"] == f"Set up service #{order['service_id']} manually"
    c.call("POST", f"/tasks/{at_c['id']}/close", {"fields": DETAILS})

    # (B's scheduler may have pulled it already: its first pull runs as soon as it starts)
    assert "events applied" in b.cli("remotetaskctl", "--command", "checkevent").stdout
    assert b.call("GET", f"/tasks/{at_b['id']}")["status"] == "closed"
    assert "events applied" in a.cli("remotetaskctl", "--command", "checkevent").stdout
    assert a.call("GET", f"/operations/{op_id}")["status"] == "done"
    service = a.call("GET", f"/services/{order['service_id']}")
    assert service["status"] == "active" and service["details"]["ip"] == DETAILS["ip"]


def test_the_scheduler_pulls_by_itself(tmp_path):
    """Without checkevent: the scheduler brings remote changes back every
    PROXY_PULL_INTERVAL seconds (300 by default; 2 here)."""
    reseller, provider = Instance(tmp_path, "reseller"), Instance(tmp_path, "provider")
    reseller.env["PROXY_PULL_INTERVAL"] = "2"
    try:
        reseller.start()
        provider.start()
        upstream = reseller.department("Upstream DC")
        dc = provider.department("DC")
        connect_peers(reseller, provider, upstream, dc, "reseller-5")
        order, op_id = reseller.order_manual_service(upstream["id"])
        remote = wait_for(lambda: provider.tasks(dc["id"]), timeout=15)[0]
        provider.call("POST", f"/tasks/{remote['id']}/close", {"fields": DETAILS})
        wait_for(
            lambda: reseller.call("GET", f"/operations/{op_id}")["status"] == "done",
            timeout=20,
            message="the scheduled pull to close the local task",
        )
        service = reseller.call("GET", f"/services/{order['service_id']}")
        assert service["status"] == "active"
    finally:
        reseller.stop()
        provider.stop()
