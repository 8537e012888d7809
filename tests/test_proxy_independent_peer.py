"""The tasks proxy against an independent peer (tests/independent_peer.py), written from
docs/proxy-protocol.md alone, in both directions, with a real `provisor serve`:

1. Provisor as the client side, the independent peer as the server side: tasks and their
   changes arrive once each and in order, the peer's staff changes come back and complete
   the operation; then a peer that is down, slow, answers 5xx or garbage, ignores the
   cursor or refuses a change.
2. The independent peer as the client side, Provisor as the server side.

Exactly-once is checked by counting what arrived per task against what was sent.
"""

import contextlib
import json
import re
import time
import uuid
from datetime import datetime
from itertools import pairwise

import pytest
import requests

from tests.independent_peer import (
    PERMANENT,
    PROTOCOL_HEADER,
    PeerClient,
    PeerServer,
    basic_credentials,
    classify,
)
from tests.support import Instance, signed, wait_for

RETRY_DELAY, RETRY_MAX = 1, 4  # PROXY_RETRY_DELAY / PROXY_RETRY_MAX of the instances
TIMEOUT = 3  # PROXY_TIMEOUT (tests/support.Instance)
PASSWORD = "Pässwörd-Ωμέγα-2024 密码 🔑:with a colon"  # UTF-8, several scripts, a ':'
DETAILS = {
    "hostname": "ded42.peer.example",
    "ip": "198.51.100.42",
    "username": "root",
    "password": "peer-pw-ü",
}
CLOSED_TEXT = "Closed with the detail fields."


# --- fixtures: one Provisor per direction for the whole module (each test has its own
# departments, logins and peer) ----------------------------------------------------------


@pytest.fixture(scope="module")
def reseller(tmp_path_factory):
    """Provisor as the client side (forwards departments to independent peers)."""
    instance = Instance(tmp_path_factory.mktemp("ip-reseller"), "reseller")
    instance.env.update(
        {
            "PROXY_RETRY_DELAY": str(RETRY_DELAY),
            "PROXY_RETRY_MAX": str(RETRY_MAX),
            "PROXY_TIMEOUT": str(TIMEOUT),
        }
    )
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """Provisor as the server side (receives tasks from the independent peer)."""
    instance = Instance(tmp_path_factory.mktemp("ip-provider"), "provider").start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def peer_pool():
    """Every independent peer of the module: they stay up until the module ends, because
    `remotetaskctl --command checkevent` pulls every client side of the instance."""
    pool = []
    yield pool
    for peer in pool:
        peer.stop()


@pytest.fixture
def peers(peer_pool):
    """Make independent peers (server side); after the test they behave again."""
    mine = []

    def make():
        peer = PeerServer().start()
        peer_pool.append(peer)
        mine.append(peer)
        return peer

    yield make
    for peer in mine:
        peer.refuse, peer.mode = None, None
        if not peer.up:
            peer.start()


# --- helpers ---------------------------------------------------------------------------


class Forwarding:
    """A department of ``reseller`` forwarded to an independent peer (the server side)."""

    def __init__(self, reseller, peer):
        self.reseller, self.peer = reseller, peer
        self.login = f"reseller-{uuid.uuid4().hex[:8]}"
        self.remote_department = {"id": 3, "name": "Dedicated servers"}
        peer.add_login(self.login, PASSWORD, [self.remote_department])
        self.department = reseller.department(f"Upstream {self.login}")
        out = reseller.cli(
            "proxy",
            "client-side",
            "--url",
            peer.url,
            "--login",
            self.login,
            "--password",
            PASSWORD,
            "--remote-department-id",
            "3",
            "--department-id",
            str(self.department["id"]),
        ).stdout
        self.client_side_id = int(re.search(r"Client side (\d+)", out).group(1))
        # Provisor pulls a new client side once at its next sweep: let that pull happen
        # now, so that it does not overlap what a test counts (not in the document)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: peer.sent("GET", "/events"), timeout=5, message="first pull")
        suffix = uuid.uuid4().hex[:8]
        module = reseller.call(
            "POST",
            "/modules",
            {
                "name": f"By hand {suffix}",
                "type": "manual",
                "config": {},
                "department_id": self.department["id"],
            },
        )
        self.tariff = reseller.call(
            "POST",
            "/tariffs",
            {
                "name": "Dedicated L",
                "product_type": "dedicated",
                "price": "120",
                "internal_name": f"ded-l-{suffix}",
                "module_ids": [module["id"]],
            },
        )
        self.client = reseller.call(
            "POST", "/clients", {"name": "Reseller client", "email": f"rc-{suffix}@example.com"}
        )
        self.expected = {}  # sender_task_id -> what the peer should have received, in order

    def new_task(self, wait_remote=True):
        """Order and pay a manual service: its set-up task is forwarded. Returns
        ``(local task, operation id, service id)``."""
        r = self.reseller
        order = r.call(
            "POST", "/orders", {"client_id": self.client["id"], "tariff_id": self.tariff["id"]}
        )
        raw, headers = signed(
            {
                "payment_id": f"p-{uuid.uuid4().hex}",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            }
        )
        paid = requests.post(r.url + "/api/v1/webhooks/payment", data=raw, headers=headers)
        assert paid.status_code == 200, paid.text
        op_id = paid.json()["operation_id"]

        def local():
            found = [t for t in r.tasks(self.department["id"]) if t["operation_id"] == op_id]
            return found[0] if found else None

        task = wait_for(local, timeout=15, message=f"the local task of operation {op_id}")
        self.expected[task["id"]] = [("created", task["title"])]
        if wait_remote:
            self.wait_arrived(task["id"])
        return task, op_id, order["service_id"]

    def act(self, task_id, action, **body):
        """A local staff change (``comment``, ``fields``, ``close``, ``cancel``), and what
        the peer should then receive (docs 15.1: fields and closes carry all fields)."""
        task = self.reseller.call("POST", f"/tasks/{task_id}/{action}", body)
        if action == "comment":
            self.expected[task_id].append(("comment", body["text"], {}))
        elif action == "fields":
            self.expected[task_id].append(("fields", dict(task["fields"])))
        elif action == "close":
            self.expected[task_id].append(("closed", CLOSED_TEXT, dict(task["fields"])))
        return task

    def arrived(self, task_id):
        """What the peer applied for one task, in the shape of ``expected``."""
        out = []
        for what in self.peer.arrived(self.login, task_id):
            if what[0] == "fields":
                out.append(("fields", what[2]))
            else:
                out.append(what)
        return out

    def wait_arrived(self, task_id, timeout=20):
        wait_for(
            lambda: len(self.arrived(task_id)) >= len(self.expected[task_id]),
            timeout=timeout,
            interval=0.1,
            message=f"task {task_id}'s changes at the peer (expected {self.expected[task_id]})",
        )
        assert self.arrived(task_id) == self.expected[task_id]

    def check_exactly_once(self):
        """Each task: what arrived is what was sent, once each, in order; and every
        retry of one change was the identical request (section 7.2)."""
        for task_id, expected in self.expected.items():
            assert self.arrived(task_id) == expected, task_id
        bodies = {}
        for record in self.peer.sent("POST", "/events"):
            body = record.get("body")
            if body:
                first = bodies.setdefault(body["event_id"], (record["path"], body))
                assert first == (record["path"], body), "a retry was not the identical request"

    def checkevent(self, check=True):
        return self.reseller.cli("remotetaskctl", "--command", "checkevent", check=check)

    def push_failures(self, since):
        """Provisor's log lines for this client side's failed pushes after ``since`` (a
        datetime): ``[(datetime, announced delay)]``."""
        out = []
        pattern = re.compile(
            r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*proxy push to client side "
            rf"{self.client_side_id} failed .*next try in (\d+) s",
            re.M,
        )
        for when, delay in pattern.findall(self.reseller.log()):
            stamp = datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f")
            if stamp >= since:
                out.append((stamp, int(delay)))
        return out


def local_task(instance, task_id):
    return instance.call("GET", f"/tasks/{task_id}")


def history(instance, task_id, kind=None):
    events = local_task(instance, task_id)["events"]
    return [e for e in events if kind is None or e["kind"] == kind]


def admin_session(instance):
    """A browser-like session logged in as the instance's first admin."""
    session = requests.Session()
    session.trust_env = False
    log = instance.log()
    email = re.search(r"email:\s+(\S+)", log).group(1)
    password = re.search(r"password:\s+(\S+)", log).group(1)
    token = csrf(session.get(instance.url + "/login").text)
    answer = session.post(
        instance.url + "/login",
        data={"email": email, "password": password, "csrf_token": token},
        allow_redirects=False,
    )
    assert answer.status_code == 302, answer.text[:300]
    return session


def csrf(page):
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def schedule(failures):
    """Docs 15.1: the wait after the n-th failure in a row."""
    return min(RETRY_DELAY * 2 ** (failures - 1), RETRY_MAX)


# --- 1. Provisor as the client side, the independent peer as the server side -----------


def test_provisor_forwards_tasks_and_takes_back_the_peer_staff_changes(reseller, peers):
    peer = peers()
    fw = Forwarding(reseller, peer)
    # set-up used GET /departments with UTF-8 Basic credentials (the peer refuses others)
    assert peer.sent("GET", "/departments")[0]["status"] == 200

    a, _, _ = fw.new_task()
    b, op_b, service_b = fw.new_task()
    remote_a = peer.task(fw.login, a["id"])  # docs 15.1: sender_task_id is the local id
    assert remote_a["department_id"] == 3 and remote_a["title"] == a["title"]
    form = {f["name"]: f for f in remote_a["form"]}
    assert {n for n, f in form.items() if f["required"]} == set(DETAILS)

    # the local staff work on A: each change arrives once, in order
    fw.act(a["id"], "comment", text="Please rack it in R12.")
    fw.act(a["id"], "fields", fields={"hostname": DETAILS["hostname"]})
    fw.act(a["id"], "fields", fields={"ip": DETAILS["ip"]})
    fw.act(a["id"], "comment", text="Ünïcödé ✓ 東京 — ok")
    fw.act(a["id"], "close", fields=DETAILS)
    fw.wait_arrived(a["id"])
    assert peer.task(fw.login, a["id"])["status"] == "closed"
    assert peer.task(fw.login, a["id"])["fields"] == DETAILS
    for record in peer.sent("POST"):  # sections 2.3, 6.3 and 13.2.6
        assert record["status"] in (200, 201), record
        assert record["body"].get("kind", "comment") in ("comment", "fields", "closed")
    unicode = [r["raw"] for r in peer.sent("POST") if "東京" in r["body"].get("text", "")]
    assert len(unicode) == 1 and "東京".encode() in unicode[0]  # 2.5: not \\uXXXX
    # the peer's staff work on B
    peer.staff_assign(fw.login, b["id"])
    peer.staff_comment(fw.login, b["id"], "Racking it now; ready within the hour.")
    peer.staff_fields(fw.login, b["id"], {"hostname": DETAILS["hostname"]})
    last = peer.staff_close(fw.login, b["id"], {**DETAILS, "rack": "R12-U30"})
    fw.checkevent()

    task_b = local_task(reseller, b["id"])
    assert task_b["status"] == "closed"
    assert task_b["fields"] == {**DETAILS, "rack": "R12-U30"}  # rack: an extra detail
    assert reseller.call("GET", f"/operations/{op_b}")["status"] == "done"
    service = reseller.call("GET", f"/services/{service_b}")
    assert service["status"] == "active"
    assert {k: service["details"].get(k) for k in DETAILS} == DETAILS
    comments = [e["text"] for e in task_b["events"] if e["kind"] == "comment"]
    assert comments == ["Racking it now; ready within the hour."]
    assert sum("Assigned to Bob Stone." in e["text"] for e in task_b["events"]) == 1

    # a second check repeats nothing and asks from the stored cursor
    fw.checkevent()
    gets = peer.sent("GET", "/events")
    assert f"after={last['id']}" in gets[-1]["query"]
    assert history(reseller, b["id"]) == task_b["events"]

    # C closed by the peer's staff without the required fields (8.2, 9.4): it stays open
    # locally with what came, the check says so, and a comment goes back; D is cancelled
    # there: cancelled here with its operation, and the service's setup is cancelled
    c, op_c, _ = fw.new_task()
    d, op_d, service_d = fw.new_task()
    peer.staff_close(fw.login, c["id"], {"hostname": "only.example", "rack": "R1"})
    peer.staff_assign(fw.login, d["id"])
    peer.staff_cancel(fw.login, d["id"], "No servers left in that rack.")
    result = fw.checkevent(check=False)
    assert result.returncode == 1, result
    task_c = local_task(reseller, c["id"])
    assert task_c["status"] in ("new", "in_work")
    assert task_c["fields"] == {"hostname": "only.example", "rack": "R1"}
    assert reseller.call("GET", f"/operations/{op_c}")["status"] not in ("done", "cancelled")
    wait_for(lambda: len(fw.arrived(c["id"])) == 2, message="the comment about C's close")
    assert fw.arrived(c["id"])[1][0] == "comment"
    fw.expected[c["id"]].append(fw.arrived(c["id"])[1])
    task_d = local_task(reseller, d["id"])
    assert task_d["status"] == "cancelled"
    assert reseller.call("GET", f"/operations/{op_d}")["status"] == "cancelled"
    service = reseller.call("GET", f"/services/{service_d}")
    assert service["status"] == "setup_cancelled", service
    assert "No servers left in that rack." in service["setup_cancelled_reason"], service

    # nothing pulled was pushed back (no echo)
    time.sleep(1.5)
    for task_id in (b["id"], d["id"]):
        assert fw.arrived(task_id) == fw.expected[task_id]
    fw.check_exactly_once()


def test_exactly_once_and_in_order_through_down_slow_5xx_and_garbage(reseller, peers):
    peer = peers()
    fw = Forwarding(reseller, peer)
    a, _, _ = fw.new_task()
    b, _, _ = fw.new_task()

    # down: connection refused; a new task and changes of two tasks wait
    peer.stop()
    fw.act(a["id"], "comment", text="down 1")
    fw.act(b["id"], "comment", text="down b")
    c, _, _ = fw.new_task(wait_remote=False)
    fw.act(a["id"], "fields", fields={"hostname": "down.example"})
    fw.act(c["id"], "comment", text="down c")
    time.sleep(2.5)
    peer.start()
    for task_id in (a["id"], b["id"], c["id"]):
        fw.wait_arrived(task_id, timeout=RETRY_MAX + 10)

    # slow: applied, then the answer comes after PROXY_TIMEOUT (a lost answer): the retry
    # is a replay, the next change waits for it
    peer.mode, peer.slow_seconds = "slow", TIMEOUT + 1
    fw.act(a["id"], "comment", text="slow 1")
    fw.act(a["id"], "comment", text="slow 2")
    wait_for(
        lambda: (
            len([r for r in peer.sent("POST", f"/tasks/{a['id']}/") if r.get("body")]) >= 2
            and ("comment", "slow 1", {}) in fw.arrived(a["id"])
        ),
        timeout=TIMEOUT + RETRY_MAX + 5,
        message="slow 1 applied and sent again",
    )
    assert ("comment", "slow 2", {}) not in fw.arrived(a["id"])
    peer.mode = None
    fw.wait_arrived(a["id"], timeout=TIMEOUT + RETRY_MAX + 10)
    replays = [r for r in peer.sent("POST") if (r.get("answer") or {}).get("applied") is False]
    assert replays, "the lost answer's change was sent again and answered as a replay"

    # 5xx without processing
    peer.mode, peer.fail_status, peer.apply_first = "5xx", 502, False
    since = time.monotonic()
    fw.act(b["id"], "comment", text="5xx 1")
    fw.act(b["id"], "fields", fields={"ip": "198.51.100.9"})
    wait_for(lambda: [r for r in peer.sent("POST", since=since) if r["status"] == 502])
    time.sleep(2)
    assert ("comment", "5xx 1", {}) not in fw.arrived(b["id"])
    peer.mode = None
    fw.wait_arrived(b["id"], timeout=RETRY_MAX + 10)

    # 5xx after processing (a reverse proxy's 502 after the peer applied the change)
    peer.mode, peer.fail_status, peer.apply_first = "5xx", 500, True
    fw.act(c["id"], "comment", text="500 after applying")
    wait_for(lambda: ("comment", "500 after applying", {}) in fw.arrived(c["id"]))
    time.sleep(1.5)
    peer.mode = None
    fw.act(c["id"], "comment", text="after 500")
    fw.wait_arrived(c["id"], timeout=RETRY_MAX + 10)

    # garbage: a 200 that is not JSON, after applying (the answer is lost again)
    peer.mode, peer.apply_first = "garbage", True
    fw.act(c["id"], "comment", text="garbage 1")
    fw.act(c["id"], "comment", text="garbage 2")
    wait_for(lambda: ("comment", "garbage 1", {}) in fw.arrived(c["id"]))
    time.sleep(2)
    assert ("comment", "garbage 2", {}) not in fw.arrived(c["id"])
    peer.mode = None
    fw.wait_arrived(c["id"], timeout=RETRY_MAX + 10)

    time.sleep(1)
    fw.check_exactly_once()


def test_one_attempt_per_due_time_while_the_peer_fails(reseller, peers):
    """Docs 15.1: one retry schedule per client side, PROXY_RETRY_DELAY × 2^(n−1) capped at
    PROXY_RETRY_MAX; new changes, sweeps and messages add no calls."""
    peer = peers()
    fw = Forwarding(reseller, peer)
    a, _, _ = fw.new_task()
    b, _, _ = fw.new_task()

    # down (connection refused): the peer cannot see refused connections, so the
    # attempts are counted in Provisor's log, one warning each
    peer.stop()
    since = datetime.now()
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < 9:
        fw.act((a, b)[n % 2]["id"], "comment", text=f"while down {n}")  # each pushes "at once"
        n += 1
        time.sleep(0.7)
    failures = fw.push_failures(since)
    delays = [d for _, d in failures]
    assert delays == [schedule(k) for k in range(1, len(delays) + 1)], delays
    gaps = [(t2 - t1).total_seconds() for (t1, _), (t2, _) in pairwise(failures)]
    for k, gap in enumerate(gaps, start=1):
        assert gap >= schedule(k) - 0.25, (k, gaps)  # never before its due time
    assert len(failures) >= 2, failures  # and it keeps trying (due at 0, 1, 3, 7 within 9 s)

    # 5xx: the peer counts every request; the schedule stays capped (no success between)
    peer.fail_status, peer.apply_first, peer.mode = 503, False, "5xx"
    peer.start()
    window = time.monotonic()
    n = 0
    while time.monotonic() - window < 13:
        fw.act((a, b)[n % 2]["id"], "comment", text=f"while 5xx {n}")
        n += 1
        time.sleep(0.7)
    attempts = [r["t"] for r in peer.sent("POST", since=window)]
    gaps = [t2 - t1 for t1, t2 in pairwise(attempts)]
    assert all(gap >= RETRY_MAX - 0.25 for gap in gaps), gaps  # at most one per due time
    assert len(attempts) >= 2, attempts  # and it keeps trying (~13 s, one per 4 s)
    assert peer.max_in_flight["POST"] == 1  # one attempt in flight (section 11.4)

    peer.mode = None
    for task_id in (a["id"], b["id"]):
        fw.wait_arrived(task_id, timeout=RETRY_MAX + 15)
    fw.check_exactly_once()


def test_a_peer_that_ignores_the_cursor_does_not_make_provisor_loop(reseller, peers):
    peer = peers()
    fw = Forwarding(reseller, peer)
    a, _, _ = fw.new_task()
    peer.staff_assign(fw.login, a["id"])
    peer.record_event(fw.login, a["id"], "escalated", "an unknown kind: skipped")
    peer.staff_comment(fw.login, a["id"], "first page")
    for n in range(560):  # a full first page (Provisor asks for 500): tasks it never sent
        peer.record_event(fw.login, 2_000_000_000 - n, "comment", f"not yours {n}")
    peer.staff_comment(fw.login, a["id"], "beyond the first page")
    peer.mode = "ignore_cursor"

    before = len(peer.sent("GET", "/events"))
    fw.checkevent(check=False)
    gets = peer.sent("GET", "/events")[before:]
    assert len(gets) == 2, [g["query"] for g in gets]  # a full page, then nothing newer
    comments = [e["text"] for e in history(reseller, a["id"], "comment")]
    assert comments == ["first page"]

    before = len(peer.sent("GET", "/events"))
    fw.checkevent(check=False)
    assert len(peer.sent("GET", "/events")[before:]) == 1
    assert [e["text"] for e in history(reseller, a["id"], "comment")] == ["first page"]

    # garbage on the pull: an error, reported in one line; nothing applied, cursor kept
    peer.mode = "garbage"
    result = fw.checkevent(check=False)
    output = result.stderr + result.stdout
    assert result.returncode == 1 and "Traceback" not in output
    mine = [line for line in output.splitlines() if fw.login in line]
    assert len(mine) == 1 and "error" in mine[0], output

    peer.mode = None
    before = len(peer.sent("GET", "/events"))
    fw.checkevent()
    gets = peer.sent("GET", "/events")[before:]
    assert len(gets) == 1 and "after=0" not in gets[0]["query"]
    comments = [e["text"] for e in history(reseller, a["id"], "comment")]
    assert comments == ["first page", "beyond the first page"]
    assert sum("Assigned to" in e["text"] for e in history(reseller, a["id"])) == 1


def test_a_refused_change_is_parked_and_the_rest_flows(reseller, peers):
    peer = peers()
    fw = Forwarding(reseller, peer)
    a, _, _ = fw.new_task()
    b, _, _ = fw.new_task()
    message = "we take no comments about pizza here"

    def refuse(login, sender_task_id, body):
        if "pizza" in (body.get("text") or ""):
            return 422, "validation_error", message, {"text": "No pizza."}
        return None

    peer.refuse = refuse
    fw.act(a["id"], "comment", text="pizza for the technician?")
    fw.act(a["id"], "comment", text="after the pizza")
    fw.act(b["id"], "comment", text="other task")
    fw.act(b["id"], "fields", fields={"hostname": "b.example"})
    fw.wait_arrived(b["id"])
    time.sleep(RETRY_DELAY + 1.5)  # the refusal is not retried by itself
    assert fw.arrived(a["id"]) == fw.expected[a["id"]][:1]
    tries = [r for r in peer.sent("POST", f"/tasks/{a['id']}/events")]
    assert len(tries) == 1, tries  # only the refused one, once; "after" waits behind it

    session = admin_session(reseller)
    page = session.get(reseller.url + "/proxy").text
    assert message in page
    assert message in session.get(reseller.url + f"/tasks/{a['id']}").text
    change = re.search(r'action="(/proxy/changes/\d+/retry)"', page).group(1)

    # the peer is fixed; staff retry the parked change: both arrive, in order, once
    peer.refuse = None
    answer = session.post(reseller.url + change, data={"csrf_token": csrf(page)})
    assert answer.status_code in (200, 302, 303), answer.status_code
    fw.wait_arrived(a["id"], timeout=RETRY_MAX + 10)
    fw.act(b["id"], "comment", text="still flowing")
    fw.wait_arrived(b["id"])
    fw.check_exactly_once()


def test_a_slow_pull_is_not_started_again_while_it_runs(reseller, peers):
    peer = peers()
    peer.mode, peer.mode_paths, peer.slow_seconds = "slow", ("/proxy/v1/events",), 2.5
    Forwarding(reseller, peer)  # its first pull starts at the next sweep (SWEEP_INTERVAL 1 s)
    time.sleep(4.5)
    peer.mode = None
    pulls = peer.sent("GET", "/events")
    overlapping = [
        (p["t"], q["t"]) for p, q in pairwise(pulls) if q["t"] < p.get("end", float("inf"))
    ]
    assert not overlapping and len(pulls) == 1, [(p["query"], p["t"]) for p in pulls]


def test_a_peer_whose_pushes_fail_is_still_pulled_on_schedule(tmp_path, peers):
    """A peer whose push side fails (503 to every POST) while its journal answers: the
    scheduler still pulls it every PROXY_PULL_INTERVAL (docs 15.1), so what its staff do
    comes back without anyone pressing Check now. Pushes fail every RETRY_MAX at most
    here, more often than the pull interval: failing pushes used to hold pulls back."""
    instance = Instance(tmp_path, "eager-puller")
    instance.env.update(
        {
            "PROXY_RETRY_DELAY": "1",
            "PROXY_RETRY_MAX": "2",
            "PROXY_PULL_INTERVAL": "5",
            "PROXY_TIMEOUT": str(TIMEOUT),
        }
    )
    instance.start()
    try:
        peer = peers()
        fw = Forwarding(instance, peer)
        a, _, _ = fw.new_task()
        peer.mode, peer.mode_paths = "5xx", ("/proxy/v1/tasks",)
        peer.fail_status, peer.apply_first = 503, False
        since = time.monotonic()
        fw.act(a["id"], "comment", text="while the pushes fail")
        wait_for(
            lambda: [r for r in peer.sent("POST", since=since) if r["status"] == 503],
            message="a failed push",
        )
        peer.staff_comment(fw.login, a["id"], "pulled all the same")

        def pulled():
            return [e["text"] for e in history(instance, a["id"], "comment")]

        wait_for(lambda: "pulled all the same" in pulled(), timeout=20, message="a pull")
        assert ("comment", "while the pushes fail", {}) not in fw.arrived(a["id"])
        assert len([r for r in peer.sent("POST", since=since) if r["status"] == 503]) >= 2

        peer.mode = None
        fw.wait_arrived(a["id"], timeout=15)
        fw.check_exactly_once()
        assert pulled().count("pulled all the same") == 1
    finally:
        instance.stop()


# --- 2. The independent peer as the client side, Provisor as the server side ------------

FORM = [
    {"name": "hostname", "label": "Host name", "required": True},
    {"name": "ip", "label": "IP address", "required": True},
    {"name": "username", "label": "User name", "required": True},
    {"name": "password", "label": "Password", "required": True},
    {"name": "notes", "label": "Notes"},
]


def test_the_independent_peer_as_client_side_of_provisor(provider):
    login = f"peer-{uuid.uuid4().hex[:8]}"
    dc = provider.department(f"DC {login}")
    provider.cli(
        "proxy",
        "server-side",
        "--login",
        login,
        "--password",
        PASSWORD,
        "--department-id",
        str(dc["id"]),
    )
    client = PeerClient(provider.url, login, PASSWORD)
    assert client.departments() == [{"id": dc["id"], "name": dc["name"]}]
    client.department_id = dc["id"]
    sid_a, sid_b = 41, 42
    client.send_task(sid_a, "  Set up #41 by hand  ", "Dedicated L for Example Ltd.", FORM)
    client.send_task(sid_b, "Set up #42 by hand", form=FORM, fields={"notes": "rack 12"})
    friday = client.send_change(sid_a, "comment", "The client needs it by Friday.", actor="alice")
    client.send_change(sid_a, "fields", "", {"hostname": "ded42.example"}, actor="alice")
    client.send_change(sid_b, "comment", "Second one, Ünïcödé ✓", actor="алиса")
    client.push_until_idle()
    assert [c["status"] for c in client.outbox] == [201, 201, 200, 200, 200]
    assert all(c["answer"]["applied"] for c in client.outbox[2:])

    tasks = {t["title"]: t for t in provider.tasks(dc["id"])}
    task_a, task_b = tasks["Set up #41 by hand"], tasks["Set up #42 by hand"]
    assert local_task(provider, task_a["id"])["fields"] == {"hostname": "ded42.example"}
    assert local_task(provider, task_b["id"])["fields"] == {"notes": "rack 12"}
    comments = [e["text"] for e in history(provider, task_a["id"], "comment")]
    assert comments == ["The client needs it by Friday."]
    # a repeated task: 200, created false, the first copy kept
    status, _, body, _ = client.request(
        "POST", "/tasks", {**client.outbox[0]["body"], "title": "Another title"}
    )
    assert (status, body["created"], body["task_id"]) == (200, False, task_a["id"])
    assert local_task(provider, task_a["id"])["title"] == "Set up #41 by hand"

    # Provisor's staff work on both tasks
    def staff(task, action, body=None):
        return provider.call("POST", f"/tasks/{task['id']}/{action}", body or {})

    staff(task_a, "assign")
    staff(task_a, "comment", {"text": "Racking it now."})
    staff(task_b, "assign")
    staff(task_a, "fields", {"fields": {"ip": DETAILS["ip"]}})
    staff(task_b, "comment", {"text": "Waiting for parts."})
    staff(task_a, "close", {"fields": DETAILS})

    assert client.pull(), client.last_error
    kinds = {sid: [e["kind"] for e in client.received[sid]] for sid in client.received}
    assert kinds == {
        sid_a: ["assigned", "comment", "fields", "closed"],
        sid_b: ["assigned", "comment"],
    }
    got_a = client.received[sid_a]
    assert got_a[1]["text"] == "Racking it now."
    assert got_a[2]["fields"] == {"hostname": "ded42.example", "ip": DETAILS["ip"]}  # all
    assert got_a[3]["fields"] == DETAILS
    assert client.received[sid_b][1]["text"] == "Waiting for parts."
    # nothing of the peer's own pushes came back, ids increase, the cursor is the last one
    pulled = [e for sid in client.received for e in client.received[sid]]
    assert not [e for e in pulled if e["text"] == "The client needs it by Friday."]
    assert client.cursor == max(e["id"] for e in pulled)
    gets = len(client.calls)
    assert client.pull() and len(client.calls) == gets + 1
    assert sum(len(v) for v in client.received.values()) == 6

    # another reader of the same journal, one event per page: the same events in order
    pager = PeerClient(provider.url, login, PASSWORD, limit=1, max_pages=50)
    pager.sent_tasks = {sid_a, sid_b}
    assert pager.pull() and pager.received == client.received
    assert pager.cursor == client.cursor
    assert len([c for c in pager.calls if c[1] == "/events"]) == 7  # 6 full pages, 1 empty

    # a replay (the task is closed since): 200, applied false, nothing changes
    before = history(provider, task_a["id"])
    status, _, body, _ = client.request("POST", friday["path"], friday["body"])
    assert (status, body["applied"], body["status"]) == (200, False, "closed")
    # the same event id on another task, or with another text: 409, nothing changes
    status, _, body, _ = client.request("POST", f"/tasks/{sid_b}/events", friday["body"])
    assert (status, body["error"]["code"]) == (409, "event_id_reused")
    other = {**friday["body"], "text": "Actually, Monday is fine."}
    status, _, body, _ = client.request("POST", friday["path"], other)
    assert (status, body["error"]["code"]) == (409, "event_id_reused")
    assert history(provider, task_a["id"]) == before
    assert [e["text"] for e in history(provider, task_b["id"], "comment")] == [
        "Second one, Ünïcödé ✓",
        "Waiting for parts.",
    ]

    # a close without the required fields: 422 naming them, parked; nothing changes;
    # the task's later change waits behind it while another task's change flows
    fields_b = local_task(provider, task_b["id"])["fields"]
    close_b = client.send_change(sid_b, "closed", CLOSED_TEXT, {"hostname": "ded43.example"})
    later_b = client.send_change(sid_b, "comment", "After the close.")
    client.send_change(sid_a, "comment", "Thanks!")
    client.push_until_idle()
    assert close_b["state"] == "parked" and close_b["status"] == 422
    assert set(close_b["answer"]["error"]["fields"]) == {"ip", "username", "password"}
    assert later_b["state"] == "pending"
    assert client.outbox[-1]["state"] == "sent"
    after = local_task(provider, task_b["id"])
    assert after["status"] in ("new", "in_work") and after["fields"] == fields_b
    # the event id was not used: once the server side's staff fill the fields in, the
    # identical close is applied
    staff(task_b, "fields", {"fields": {k: DETAILS[k] for k in ("ip", "username", "password")}})
    client.retry(close_b)
    client.push_until_idle()
    assert close_b["state"] == later_b["state"] == "sent"
    assert close_b["answer"]["applied"] is True
    after = local_task(provider, task_b["id"])
    assert after["status"] == "closed"
    assert after["fields"] == {
        "notes": "rack 12",
        "hostname": "ded43.example",
        **{k: DETAILS[k] for k in ("ip", "username", "password")},
    }
    # a cancel of a closed task: 409 task_not_open, parked; people skip it
    cancel_b = client.send_change(sid_b, "cancelled", "Not needed.")
    client.push_until_idle()
    assert cancel_b["state"] == "parked" and cancel_b["answer"]["error"]["code"] == "task_not_open"
    client.skip(cancel_b)
    # the pull brings the staff's fields only: not the peer's own close
    assert client.pull()
    assert [e["kind"] for e in client.received[sid_b]] == ["assigned", "comment", "fields"]


class Raw:
    """Raw calls to Provisor's /proxy/v1 as one login, checking what every answer must
    carry (sections 2.2, 2.3 and 4)."""

    def __init__(self, provider, login=None):
        self.login = login or f"peer-{uuid.uuid4().hex[:8]}"
        self.department = provider.department(f"DC {self.login}")
        provider.cli(
            "proxy",
            "server-side",
            "--login",
            self.login,
            "--password",
            PASSWORD,
            "--department-id",
            str(self.department["id"]),
        )
        self.base = provider.url + "/proxy/v1"
        self.auth = {"Authorization": basic_credentials(self.login, PASSWORD)}
        self.http = requests.Session()
        self.http.trust_env = False

    def __call__(self, method, path, expect, code=None, headers=None, **kw):
        answer = self.http.request(
            method,
            self.base + path,
            timeout=10,
            allow_redirects=False,
            headers=self.auth if headers is None else headers,
            **kw,
        )
        assert answer.status_code == expect, (path, answer.status_code, answer.text[:300])
        assert answer.headers.get(PROTOCOL_HEADER) == "1", (path, dict(answer.headers))
        assert answer.headers["Content-Type"].startswith("application/json"), answer.text[:200]
        body = answer.json()
        assert isinstance(body, dict)
        if code is not None:
            assert body["error"]["code"] == code and isinstance(body["error"]["fields"], dict)
            assert isinstance(body["error"]["message"], str)
        return answer, body


def test_provisor_server_side_answers_as_the_document_says(provider):
    call = Raw(provider)
    login, dc = call.login, call.department
    # section 3: UTF-8 Basic credentials; every refusal is the same 401 with the challenge
    wrong = {"Authorization": basic_credentials(login, PASSWORD + "x")}
    answer, _ = call("GET", "/departments", 401, "unauthorized", headers=wrong)
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="provisor-proxy", charset="UTF-8"'
    for header in ("Basic not-base64!", "Bearer x", basic_credentials("nobody", PASSWORD)):
        call("GET", "/departments", 401, "unauthorized", headers={"Authorization": header})
    call("GET", "/departments", 401, "unauthorized", headers={})
    _, body = call("GET", "/departments", 200)
    assert body["departments"] == [{"id": dc["id"], "name": dc["name"]}]
    # routes and parameters (sections 4, 6.4)
    answer, _ = call("GET", "/tasks", 405, "method_not_allowed")
    assert "POST" in answer.headers["Allow"]
    call("GET", "/nothing-here", 404, "not_found")
    for query, name in (
        ("after=-1", "after"),
        ("after=" + "9" * 19, "after"),
        ("limit=0", "limit"),
    ):
        _, body = call("GET", f"/events?{query}", 422, "validation_error")
        assert name in body["error"]["fields"], body
    _, body = call("GET", "/events?limit=501", 422, "validation_error")
    assert "limit" in body["error"]["fields"]
    _, body = call("GET", "/events?after=12345&limit=5&unknown=1", 200)
    assert body == {"events": [], "next": 12345}
    # bodies (sections 2, 4, 5)
    task = {"sender_task_id": 7, "department_id": dc["id"], "title": "Seven"}
    call("POST", "/tasks", 400, "invalid_json", data=b"{not json")
    call("POST", "/tasks", 400, "invalid_json", json=[task])
    call("POST", "/tasks", 400, "invalid_json", data=b"[" * 70 + b"]" * 70)
    latin1 = b'{"sender_task_id": 7, "department_id": %d, "title": "Caf\xe9"}' % dc["id"]
    call("POST", "/tasks", 400, "invalid_json", data=latin1)  # not UTF-8: not JSON
    _, body = call("POST", "/tasks", 422, "validation_error", json={**task, "fields": []})
    assert "fields" in body["error"]["fields"]
    _, body = call("POST", "/tasks", 422, "validation_error", json={**task, "title": "a\x00b"})
    assert "title" in body["error"]["fields"]
    _, body = call(
        "POST", "/tasks", 422, "validation_error", json={**task, "department_id": dc["id"] + 99}
    )
    assert "department_id" in body["error"]["fields"]
    form = [{"name": "a", "required": True, "secret": True}]
    _, body = call(
        "POST",
        "/tasks",
        201,
        json={**task, "form": form, "fields": {"port": 3306, "none": None}, "description": None},
    )
    assert body["created"] is True and body["status"] == "new"
    mine = {t["title"]: t for t in provider.tasks(dc["id"])}["Seven"]
    assert local_task(provider, mine["id"])["fields"] == {"port": "3306", "none": ""}
    # changes (sections 6.3, 7.2, 8.1)
    event = {"event_id": "e-1", "kind": "comment", "text": "hi"}
    for path in ("/tasks/8/events", "/tasks/0/events", f"/tasks/{2**64}/events"):
        call("POST", path, 404, "not_found", json=event)
    call("POST", "/tasks/7/events", 422, "validation_error", json={**event, "kind": "poke"})
    _, body = call("POST", "/tasks/7/events", 200, json=event)
    assert body["applied"] is True
    _, body = call("POST", "/tasks/7/events", 200, json={**event, "actor": "someone else"})
    assert body["applied"] is False  # the actor is not compared
    # a close with a blank required field is refused; with it (and a name the form does
    # not have) it is applied; the deprecated name is compared as its new name
    _, body = call(
        "POST",
        "/tasks/7/events",
        422,
        "validation_error",
        json={"event_id": "e-2", "kind": "closed", "fields": {"a": "  "}},
    )
    assert set(body["error"]["fields"]) == {"a"}
    closing = {"event_id": "e-2", "kind": "close", "text": "", "fields": {"a": "1", "z": "2"}}
    _, body = call("POST", "/tasks/7/events", 200, json=closing)
    assert body["status"] == "closed" and body["applied"] is True
    _, body = call("POST", "/tasks/7/events", 200, json={**closing, "kind": "closed"})
    assert body["applied"] is False
    fields = {"port": "3306", "none": "", "a": "1", "z": "2"}
    assert local_task(provider, mine["id"])["fields"] == fields
    _, body = call(
        "POST",
        "/tasks/7/events",
        200,
        json={"event_id": "e-3", "kind": "fields", "fields": {"a": "late"}},
    )
    assert body["applied"] is True
    assert local_task(provider, mine["id"])["fields"] == fields  # closed: a note only
    call(
        "POST",
        "/tasks/7/events",
        409,
        "task_not_open",
        json={"event_id": "e-4", "kind": "cancelled"},
    )
    # another login sees nothing of this one's (section 6)
    other = Raw(provider)
    other("POST", "/tasks/7/events", 404, "not_found", json=event)
    _, body = other("GET", "/events", 200)
    assert body == {"events": [], "next": 0}
    _, body = other("GET", "/departments", 200)
    assert [d["id"] for d in body["departments"]] == [other.department["id"]]
    # nothing the login pushed came back as an event (section 8.2)
    _, body = call("GET", "/events", 200)
    assert body == {"events": [], "next": 0}


def test_an_oversized_body_gets_the_protocol_413(provider):
    call = Raw(provider)
    task = {"sender_task_id": 1, "department_id": call.department["id"], "title": "Big"}
    big = json.dumps({**task, "pad": "x" * 1_048_576}).encode()
    _, body = call(
        "POST",
        "/tasks",
        413,
        "request_entity_too_large",
        data=big,
        headers={**call.auth, "Content-Type": "application/json"},
    )
    assert classify(413, body) == PERMANENT
