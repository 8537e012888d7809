"""Benchmark 4: the tasks proxy between two real ``provisor serve`` instances on loopback.

    .venv/bin/python -m bench.proxy [--runs 3] [--comments 200] [--tasks 50] [--events 1000]
                                    [--gets 1000] [--poll 0.005] [--argon2 default|cheap]

Per run, two fresh instances (``tests.support.Instance``: ``provisor serve`` with its own
port, instance folder and SQLite database, embedded worker and scheduler): a *sender*
(department "Upstream DC", client side) and a *receiver* (department "DC", server side),
connected with the CLI exactly as ``tests.support.connect_peers`` does. Settings are the
project's defaults except ``PROXY_PULL_INTERVAL=3600`` (the scheduler must not pull while we
measure a pull) and, with ``--argon2 cheap``, the tests' cheap argon2 cost. A peer logs in
with HTTP Basic on every proxy request; the server side verifies the password with argon2
and then remembers it for a minute per process (since 781f576: before, argon2 ran once per
pushed change and once per pulled page). ``default`` (time cost 3, 64 MiB, as deployed)
shows what is left of that cost, ``cheap`` (1, 1 MiB) the rest.

(a) push latency, everything through the public HTTP API, one at a time:
    - task creation: ``--tasks`` orders of a manual-module tariff on the sender, each paid
      through the signed payment webhook (as ``Instance.order_manual_service``); time from
      sending the webhook until the receiver's ``GET /api/v1/tasks?department_id=..&limit=1``
      shows the task (polled every ``--poll`` s with one keep-alive session);
    - comments: ``--comments`` comments ``POST /api/v1/tasks/<id>/comment`` on the sender's
      forwarded tasks (round robin over them, so that the polled task stays small); time
      until the receiver's ``GET /api/v1/tasks/<remote id>`` shows it.
    A breakdown comes from the databases afterwards (same clock): the sender's outbox row
    (``proxy_outgoing.created_at`` = the change committed, ``sent_at`` = the peer answered)
    and the tasks' ``created_at`` on both sides.
(b) one pull of ``--events`` remote events: that many comments are made on the received
    tasks through the receiver's API (each a ``proxy_event`` for the sender), then
    ``provisor remotetaskctl --command checkevent`` runs on the sender (wall time of the
    command; and once more with nothing to pull: start-up + one empty page); then another
    ``--events`` comments and ``app.services.proxy.pull`` called in this process against the
    sender's database (time inside, split into HTTP calls and applying, with the SQL
    statements counted). In the same run: ``--gets`` bare ``GET /api/v1/health`` with one
    ``requests.Session``, the same without a session (a new connection each, as
    ``proxy._call`` does), and ``GET /proxy/v1/events?after=<last>`` (returns nothing; HTTP
    Basic, so one argon2 verification each) with one session.

Writes ``bench/results/proxy-<argon2>-<stamp>.json``; instances live in a temp dir that is
removed at the end (``BENCH_KEEP_LOGS=1`` keeps it, with the ``serve.log`` files).
"""

import argparse
import contextlib
import datetime as dt
import os
import pathlib
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid

import requests

from bench import common


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tasks", type=int, default=50, help="forwarded task creations timed")
    p.add_argument("--comments", type=int, default=200, help="forwarded comments timed")
    p.add_argument("--events", type=int, default=1000, help="remote events in the timed pull")
    p.add_argument("--gets", type=int, default=1000, help="bare GETs of /api/v1/health")
    p.add_argument(
        "--event-gets",
        type=int,
        default=None,
        help="bare GETs of /proxy/v1/events (default: --gets)",
    )
    p.add_argument("--poll", type=float, default=0.005, help="seconds between polls")
    p.add_argument("--timeout", type=float, default=60.0, help="for one change to arrive")
    p.add_argument(
        "--argon2",
        choices=("default", "cheap"),
        default="default",
        help="default: the project's argon2 cost (as deployed); cheap: the tests' cost",
    )
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process pull")
    args = p.parse_args(argv)
    if args.event_gets is None:
        args.event_gets = args.gets
    return args


ARGS = parse_args()

# the instances are built from this process's environment: nothing of ours may leak in
for _key in ("DATABASE_URL", "REDIS_URL", "REDIS_NAMESPACE", "SMTP_URL", "INSTANCE_PATH"):
    os.environ.pop(_key, None)
    os.environ.pop(f"PROVISOR_{_key}", None)
os.environ["PROVISOR_OUTBOUND_ALLOWED_NETWORKS"] = "127.0.0.0/8"  # the peers are on loopback

from tests.support import PEER_PASSWORD, Instance, connect_peers, signed  # noqa: E402

# the test instances' settings that differ from the project's defaults and that we put back
_TEST_ONLY = ("SWEEP_INTERVAL", "SWEEP_GRACE", "PROXY_RETRY_DELAY", "PROXY_TIMEOUT")
_CHEAP_ARGON2 = ("ARGON2_TIME_COST", "ARGON2_MEMORY_COST")
LOGIN = "bench-peer"


class BenchInstance(Instance):
    def __init__(self, tmp, name):
        super().__init__(pathlib.Path(tmp), name)
        for key in _TEST_ONLY + (_CHEAP_ARGON2 if ARGS.argon2 == "default" else ()):
            self.env.pop(key, None)
        self.api = requests.Session()

    def start(self):
        super().start()
        self.api.headers["Authorization"] = f"Bearer {self.token}"
        return self

    @property
    def db_path(self):
        return self.dir / "instance" / "provisor.sqlite3"

    def rows(self, sql, *params):
        """Read-only look at the instance's SQLite database (WAL: no locking trouble)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def post(self, path, body):
        response = self.api.post(f"{self.url}/api/v1{path}", json=body, timeout=30)
        assert response.status_code in (200, 201, 202), (path, response.status_code, response.text)
        return response.json()

    def get(self, path):
        response = self.api.get(f"{self.url}/api/v1{path}", timeout=30)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def timed_cli(self, *args):
        t = time.perf_counter()
        result = self.cli(*args)
        return time.perf_counter() - t, result.stdout

    def rss(self):
        pid = self.proc.pid if self.proc else None
        return {
            "hwm_mb": common.status_kb(pid, "VmHWM") if pid else None,
            "rss_mb": common.status_kb(pid, "VmRSS") if pid else None,
            "cpu_s": common.cpu_seconds(pid) if pid else None,
        }


def ts(value):
    """A DateTimeField as SQLite stores it (naive UTC text) -> POSIX seconds."""
    if value is None:
        return None
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in value else "%Y-%m-%d %H:%M:%S"
    return dt.datetime.strptime(value, fmt).replace(tzinfo=dt.UTC).timestamp()


def poll(session, url, predicate, what):
    """GET ``url`` until ``predicate(json)``; returns (time seen, polls, seconds per poll)."""
    deadline = time.perf_counter() + ARGS.timeout
    polls, spent = 0, 0.0
    while True:
        t = time.perf_counter()
        response = session.get(url, timeout=30)
        now = time.perf_counter()
        polls += 1
        spent += now - t
        if response.status_code == 200 and predicate(response.json()):
            return now, polls, spent / polls
        if now > deadline:
            raise TimeoutError(f"{what} did not arrive within {ARGS.timeout} s")
        time.sleep(ARGS.poll)


def stats(values, scale=1000.0):
    """p50/p95/p99/max/mean (ms by default) of a list of seconds."""
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(common.percentile(values, 50) * scale, 2),
        "p95": round(common.percentile(values, 95) * scale, 2),
        "p99": round(common.percentile(values, 99) * scale, 2),
        "max": round(max(values) * scale, 2),
        "mean": round(sum(values) / len(values) * scale, 2),
    }


# --- (a) push latency -------------------------------------------------------------------


def manual_catalog(inst, department_id):
    module = inst.post(
        "/modules",
        {"name": "By hand", "type": "manual", "config": {}, "department_id": department_id},
    )
    tariff = inst.post(
        "/tariffs",
        {
            "name": "Dedicated L",
            "product_type": "dedicated",
            "price": "120",
            "internal_name": "ded-l",
            "module_ids": [module["id"]],
        },
    )
    client = inst.post("/clients", {"name": "Reseller client", "email": "rc@example.com"})
    return tariff, client


def task_creations(sender, receiver, upstream, dc):
    """Pay ``--tasks`` manual orders one at a time; each: webhook -> task at the receiver."""
    tariff, client = manual_catalog(sender, upstream["id"])
    hook = requests.Session()
    poller = requests.Session()
    poller.headers["Authorization"] = f"Bearer {receiver.token}"
    url = f"{receiver.url}/api/v1/tasks?department_id={dc['id']}&limit=1"
    out = []
    for _ in range(ARGS.tasks):
        order = sender.post("/orders", {"client_id": client["id"], "tariff_id": tariff["id"]})
        raw, headers = signed(
            {
                "payment_id": f"p-{uuid.uuid4().hex}",
                "order_id": order["id"],
                "amount": order["amount"],
                "currency": order["currency"],
            }
        )
        title = f"Set up service #{order['service_id']} manually"
        wall0 = time.time()
        t0 = time.perf_counter()
        paid = hook.post(f"{sender.url}/api/v1/webhooks/payment", data=raw, headers=headers)
        t_paid = time.perf_counter()
        assert paid.status_code == 200, paid.text
        seen, polls, per_poll = poll(
            poller,
            url,
            lambda body, title=title: body["tasks"] and body["tasks"][0]["title"] == title,
            f"the task of service {order['service_id']}",
        )
        out.append(
            {
                "title": title,
                "service_id": order["service_id"],
                "wall0": wall0,
                "webhook_s": t_paid - t0,
                "visible_s": seen - t0,
                "polls": polls,
                "poll_s": per_poll,
            }
        )
    # breakdown from both databases (same clock): payment -> local task -> pushed -> remote
    # the sender renders its tasks' titles from the operation (its ``title`` column is
    # empty): its tasks are matched by service, the receiver's by the title it was sent
    local = {
        service_id: (tid, ts(created))
        for tid, service_id, created in sender.rows("SELECT id, service_id, created_at FROM task")
    }
    pushed = {
        tid: (ts(created), ts(sent))
        for tid, created, sent in sender.rows(
            "SELECT task_id, created_at, sent_at FROM proxy_outgoing WHERE kind = 'create'"
        )
    }
    remote = {
        title: (tid, ts(created))
        for tid, title, created in receiver.rows("SELECT id, title, created_at FROM task")
    }
    for row in out:
        tid, local_created = local[row["service_id"]]
        queued, sent = pushed.get(tid, (None, None))
        rid, remote_created = remote[row["title"]]
        row.update(
            {
                "local_id": tid,
                "remote_id": rid,
                "pay_to_local_task_s": local_created - row["wall0"],
                "outbox_to_sent_s": (sent - queued) if sent and queued else None,
                "local_task_to_remote_task_s": remote_created - local_created,
                "pay_to_sent_s": (sent - row["wall0"]) if sent else None,
            }
        )
    return out


def comment_pushes(sender, receiver, pairs):
    """``--comments`` comments on forwarded tasks; each: sender API -> visible remotely."""
    poller = requests.Session()
    poller.headers["Authorization"] = f"Bearer {receiver.token}"
    out = []
    tag = uuid.uuid4().hex[:8]
    for i in range(ARGS.comments):
        local_id, remote_id = pairs[i % len(pairs)]
        text = f"bench comment {tag}-{i}"
        t0 = time.perf_counter()
        sender.post(f"/tasks/{local_id}/comment", {"text": text})
        t_api = time.perf_counter()
        seen, polls, per_poll = poll(
            poller,
            f"{receiver.url}/api/v1/tasks/{remote_id}",
            lambda body, text=text: any(e["text"] == text for e in reversed(body["events"])),
            f"comment {i}",
        )
        out.append(
            {
                "text": text,
                "api_s": t_api - t0,
                "visible_s": seen - t0,
                "polls": polls,
                "poll_s": per_poll,
            }
        )
    sent = {
        payload_text: (ts(created), ts(sent_at))
        for payload_text, created, sent_at in sender.rows(
            "SELECT json_extract(payload, '$.text'), created_at, sent_at FROM proxy_outgoing "
            "WHERE kind = 'comment'"
        )
    }
    for row in out:
        created, sent_at = sent.get(row["text"], (None, None))
        row["outbox_to_sent_s"] = (sent_at - created) if created and sent_at else None
    return out


# --- (b) one pull of many events -----------------------------------------------------------


def make_remote_events(receiver, remote_ids, n):
    """``n`` comments on received tasks through the receiver's API: ``n`` proxy events."""
    t = time.perf_counter()
    for i in range(n):
        receiver.post(
            f"/tasks/{remote_ids[i % len(remote_ids)]}/comment", {"text": f"remote note {i}"}
        )
    return time.perf_counter() - t


def pending_events(receiver):
    return receiver.rows("SELECT count(*), max(id) FROM proxy_event")[0]


def inprocess_pull(sender, expected):
    """``proxy.pull`` in this process on the sender's database: total, HTTP, applying, SQL."""
    import peewee

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(sender.env)
    counters = {"sql": 0, "http_s": 0.0, "http_calls": 0, "apply_s": 0.0}
    try:
        from app import create_app
        from app.db import database
        from app.services import proxy

        app = create_app()
        orig_call, orig_apply, orig_exec = (
            proxy._call,
            proxy._apply_pulled,
            peewee.Database.execute_sql,
        )

        def call(*a, **kw):
            t = time.perf_counter()
            try:
                return orig_call(*a, **kw)
            finally:
                counters["http_s"] += time.perf_counter() - t
                counters["http_calls"] += 1

        def apply(*a, **kw):
            t = time.perf_counter()
            try:
                return orig_apply(*a, **kw)
            finally:
                counters["apply_s"] += time.perf_counter() - t

        def execute_sql(self, *a, **kw):
            counters["sql"] += 1
            return orig_exec(self, *a, **kw)

        with app.app_context(), database.connection_context():
            side_id = proxy.client_sides()[0].id
            proxy._call, proxy._apply_pulled = call, apply
            peewee.Database.execute_sql = execute_sql
            try:
                t = time.perf_counter()
                applied = proxy.pull(side_id)
                total = time.perf_counter() - t
            finally:
                proxy._call, proxy._apply_pulled = orig_call, orig_apply
                peewee.Database.execute_sql = orig_exec
        database.close()
        if hasattr(database.obj, "close_all"):
            database.obj.close_all()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert applied == expected, (applied, expected)
    return {
        "applied": applied,
        "total_s": total,
        "http_s": counters["http_s"],
        "http_calls": counters["http_calls"],
        "apply_s": counters["apply_s"],
        "apply_ms_per_event": counters["apply_s"] * 1000 / max(applied, 1),
        "sql_statements": counters["sql"],
        "sql_per_event": counters["sql"] / max(applied, 1),
    }


def bare_gets(receiver, cursor):
    out = {}
    session = requests.Session()
    t = time.perf_counter()
    for _ in range(ARGS.gets):
        assert session.get(f"{receiver.url}/api/v1/health", timeout=30).status_code == 200
    out["health_session_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(ARGS.gets):
        assert requests.get(f"{receiver.url}/api/v1/health", timeout=30).status_code == 200
    out["health_new_connection_s"] = time.perf_counter() - t
    session = requests.Session()
    session.auth = (LOGIN, PEER_PASSWORD)
    t = time.perf_counter()
    for _ in range(ARGS.event_gets):
        response = session.get(f"{receiver.url}/proxy/v1/events?after={cursor}", timeout=30)
        assert response.status_code == 200 and response.json()["events"] == [], response.text
    out["events_empty_session_s"] = time.perf_counter() - t
    out["events_empty_gets"] = ARGS.event_gets
    # scaled to --gets requests when fewer were made
    out["events_empty_session_s_per_gets"] = (
        out["events_empty_session_s"] * ARGS.gets / max(ARGS.event_gets, 1)
    )
    return out


def pull_phase(sender, receiver, remote_ids):
    out = {}
    # start clean: whatever the receiver has is pulled now (and the scheduler won't pull
    # again for PROXY_PULL_INTERVAL)
    out["checkevent_first_s"], _ = sender.timed_cli("remotetaskctl", "--command", "checkevent")
    out["make_events_s"] = make_remote_events(receiver, remote_ids, ARGS.events)
    count, _ = pending_events(receiver)
    wall, stdout = sender.timed_cli("remotetaskctl", "--command", "checkevent")
    applied = int(re.search(r"(\d+) events applied", stdout).group(1))
    assert applied == ARGS.events, stdout
    out["checkevent_s"] = wall
    out["checkevent_applied"] = applied
    wall, stdout = sender.timed_cli("remotetaskctl", "--command", "checkevent")
    assert ": 0 events applied" in stdout, stdout
    out["checkevent_empty_s"] = wall
    if not ARGS.no_inprocess:
        make_remote_events(receiver, remote_ids, ARGS.events)
        out["inprocess"] = inprocess_pull(sender, ARGS.events)
    count, last = pending_events(receiver)
    out["receiver_events_total"] = count
    out["bare"] = bare_gets(receiver, last)
    return out


# --- one run --------------------------------------------------------------------------------


def one_run(run_no):
    tmp = tempfile.mkdtemp(prefix="provisor-bench-proxy-")
    sender = receiver = None
    result = {"run": run_no}
    try:
        sender = BenchInstance(tmp, "sender")
        receiver = BenchInstance(tmp, "receiver")
        for inst in (sender, receiver):
            inst.env["PROXY_PULL_INTERVAL"] = "3600"
            inst.start()
        upstream = sender.post("/departments", {"name": "Upstream DC"})
        dc = receiver.post("/departments", {"name": "DC"})
        connect_peers(sender, receiver, upstream, dc, LOGIN)
        sender.cli("remotetaskctl", "--command", "checkevent")  # the scheduler's first pull

        t = time.perf_counter()
        tasks = task_creations(sender, receiver, upstream, dc)
        result["task_phase_s"] = time.perf_counter() - t
        result["tasks"] = tasks
        pairs = [(row["local_id"], row["remote_id"]) for row in tasks]
        t = time.perf_counter()
        result["comments"] = comment_pushes(sender, receiver, pairs)
        result["comment_phase_s"] = time.perf_counter() - t
        result["pull"] = pull_phase(sender, receiver, [rid for _, rid in pairs])
        result["sender_process"] = sender.rss()
        result["receiver_process"] = receiver.rss()
    finally:
        for inst in (sender, receiver):
            if inst is not None:
                with contextlib.suppress(Exception):
                    inst.stop()
        if os.environ.get("BENCH_KEEP_LOGS"):
            result["dir"] = tmp
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def summarize(run):
    tasks, comments, pull = run["tasks"], run["comments"], run["pull"]
    bare = pull["bare"]
    s = {
        "task_visible_ms": stats([r["visible_s"] for r in tasks]),
        "task_webhook_ms": stats([r["webhook_s"] for r in tasks]),
        "task_pay_to_local_task_ms": stats([r["pay_to_local_task_s"] for r in tasks]),
        "task_outbox_to_sent_ms": stats(
            [r["outbox_to_sent_s"] for r in tasks if r["outbox_to_sent_s"] is not None]
        ),
        "task_local_to_remote_created_ms": stats([r["local_task_to_remote_task_s"] for r in tasks]),
        "task_poll_ms": stats([r["poll_s"] for r in tasks]),
        "comment_visible_ms": stats([r["visible_s"] for r in comments]),
        "comment_api_ms": stats([r["api_s"] for r in comments]),
        "comment_outbox_to_sent_ms": stats(
            [r["outbox_to_sent_s"] for r in comments if r["outbox_to_sent_s"] is not None]
        ),
        "comment_poll_ms": stats([r["poll_s"] for r in comments]),
        "checkevent_s": pull["checkevent_s"],
        "checkevent_empty_s": pull["checkevent_empty_s"],
        "health_session_s": bare["health_session_s"],
        "health_new_connection_s": bare["health_new_connection_s"],
        "events_empty_session_s": bare["events_empty_session_s_per_gets"],
        "ratio_checkevent_vs_health": pull["checkevent_s"] / bare["health_session_s"],
        "ratio_checkevent_vs_events_gets": pull["checkevent_s"]
        / bare["events_empty_session_s_per_gets"],
        "sender_rss_hwm_mb": run["sender_process"]["hwm_mb"],
        "receiver_rss_hwm_mb": run["receiver_process"]["hwm_mb"],
    }
    if "inprocess" in pull:
        ip = pull["inprocess"]
        s.update(
            {
                "pull_inprocess_s": ip["total_s"],
                "pull_http_s": ip["http_s"],
                "pull_http_calls": ip["http_calls"],
                "pull_apply_s": ip["apply_s"],
                "pull_sql_per_event": ip["sql_per_event"],
                "ratio_inprocess_vs_health": ip["total_s"] / bare["health_session_s"],
                "ratio_inprocess_vs_events_gets": ip["total_s"]
                / bare["events_empty_session_s_per_gets"],
            }
        )
    return s


def main():
    info = common.machine_info()
    print(
        f"Provisor tasks proxy benchmark: argon2={ARGS.argon2}, {ARGS.tasks} task creations, "
        f"{ARGS.comments} comments, pull of {ARGS.events} events vs {ARGS.gets} bare GETs "
        f"({ARGS.event_gets} of /proxy/v1/events), poll every {ARGS.poll * 1000:g} ms",
        flush=True,
    )
    runs, summaries = [], []
    for run_no in range(1, ARGS.runs + 1):
        run = one_run(run_no)
        s = summarize(run)
        run["summary"] = s
        runs.append(run)
        summaries.append(s)
        print(
            f"  run {run_no}: task -> remote p50/p95 {s['task_visible_ms']['p50']:.0f}/"
            f"{s['task_visible_ms']['p95']:.0f} ms; comment -> remote p50/p95 "
            f"{s['comment_visible_ms']['p50']:.0f}/{s['comment_visible_ms']['p95']:.0f} ms "
            f"(outbox->sent p50 {s['comment_outbox_to_sent_ms'].get('p50', 0):.0f} ms); "
            f"checkevent {ARGS.events} events {s['checkevent_s']:.2f} s (empty "
            f"{s['checkevent_empty_s']:.2f} s)"
            + (
                f", in-process pull {s['pull_inprocess_s']:.2f} s (HTTP {s['pull_http_s']:.2f}"
                f" s in {s['pull_http_calls']} calls, {s['pull_sql_per_event']:.1f} SQL/event)"
                if "pull_inprocess_s" in s
                else ""
            )
            + f"; {ARGS.gets} GET health {s['health_session_s']:.2f} s (new connection each "
            f"{s['health_new_connection_s']:.2f} s), {ARGS.event_gets} GET events "
            f"{run['pull']['bare']['events_empty_session_s']:.2f} s",
            flush=True,
        )

    def med(path):
        values = []
        for s in summaries:
            v = s
            for key in path.split("."):
                v = v.get(key) if isinstance(v, dict) else None
            values.append(v)
        return common.median(values)

    keys = [
        "task_visible_ms.p50",
        "task_visible_ms.p95",
        "task_webhook_ms.p50",
        "task_pay_to_local_task_ms.p50",
        "task_outbox_to_sent_ms.p50",
        "task_local_to_remote_created_ms.p50",
        "task_poll_ms.p50",
        "comment_visible_ms.p50",
        "comment_visible_ms.p95",
        "comment_api_ms.p50",
        "comment_outbox_to_sent_ms.p50",
        "comment_outbox_to_sent_ms.p95",
        "comment_poll_ms.p50",
        "checkevent_s",
        "checkevent_empty_s",
        "pull_inprocess_s",
        "pull_http_s",
        "pull_apply_s",
        "pull_sql_per_event",
        "health_session_s",
        "health_new_connection_s",
        "events_empty_session_s",
        "ratio_checkevent_vs_health",
        "ratio_checkevent_vs_events_gets",
        "ratio_inprocess_vs_health",
        "ratio_inprocess_vs_events_gets",
        "sender_rss_hwm_mb",
        "receiver_rss_hwm_mb",
    ]
    summary = {k: med(k) for k in keys}
    print("\nmedians of the runs (the ratios are medians of per-run ratios):")
    rows = [[k, f"{v:.3f}" if isinstance(v, float) else v] for k, v in summary.items()]
    print(common.table(rows, ["figure", "median"]))
    path = common.write_result(
        f"proxy-{ARGS.argon2}",
        {"args": vars(ARGS), "machine": info, "summary": summary, "runs": runs},
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    sys.exit(main())
