"""Benchmark 6: the tasks proxy's requests toward a peer that is down, and the catch-up after.

    .venv/bin/python -m bench.proxy_down                 # 10 minutes down, default settings
    .venv/bin/python -m bench.proxy_down --quick         # 60 s down, delay 1 s, max 8 s
    .venv/bin/python -m bench.proxy_down [--variants 503,closed] [--down 600] [--every 30]
                                         [--delay 10] [--max 600] [--before 2] [--retry-after N]

Per variant (``503`` and ``closed``, run side by side, each with its own instances), one
real ``provisor serve`` (``tests.support.Instance``: its own port, instance folder and
SQLite file, embedded worker and scheduler) is the *sender*: department "Upstream DC" with
a client side (made with the CLI) pointing at a *peer* on loopback that this script runs —
a small HTTP server (``http.server``) speaking ``/proxy/v1`` as docs/proxy-protocol.md
says (departments, idempotent ``POST /tasks`` and ``POST /tasks/<id>/events``, an empty
``GET /events``) and recording every request with its time. Every setting is the
project's default (``PROXY_RETRY_DELAY`` 10, ``PROXY_RETRY_MAX`` 600, ``SWEEP_INTERVAL``
15, ``PROXY_PULL_INTERVAL`` 300, ``PROXY_TIMEOUT`` 10, argon2 as deployed) unless given
(``--delay``/``--max``; ``--quick``: 1 / 8 s, 60 s down, a change every 5 s).

1. Up: ``--before`` orders of a manual-module tariff, each paid through the signed payment
   webhook (its setup becomes a task, forwarded: a ``create``), and a comment on each; all
   delivered before going on.
2. Down for ``--down`` s: the peer answers every request ``503`` with a JSON error and no
   ``Retry-After`` (``503``; ``--retry-after N`` sends one), or is stopped, so that its
   port refuses connections (``closed``). Meanwhile, through the public API, one order
   every ``--every`` s (a new task: a ``create``) and, half-way between, one comment on a
   forwarded task (round robin): new changes keep arriving and must not cause attempts.
3. Up again at the same port (nobody presses "Retry now"); the clock runs until the peer
   has every change the sender made.

Attempts are counted at the peer (``503``: every request it answers) and, for both
variants, at the sender: its client side row is read every 0.2 s (each new
``last_error_at`` is a failed push or pull, ``push_failures`` and ``next_push_at`` the
schedule it keeps) and its log's ``proxy push to client side N failed`` lines. Printed
per variant: each push attempt's time and the gap to the previous one against the
expected backoff (``delay × 2^(n-1)``, at most ``max``), attempts per minute against the
expected count, the pulls, and after the peer comes back how long until everything was
delivered (against the next due time of the schedule), with the changes made vs
delivered (exactly once: every ``create`` and ``event_id`` applied once, no replays; in
order: per task, the order the sender made them).

Writes ``bench/results/proxy-down-<stamp>.json``; instances live in a temp dir that is
removed at the end (``BENCH_KEEP_LOGS=1`` keeps it, with the ``serve.log`` files).
"""

import argparse
import contextlib
import datetime as dt
import http.server
import json
import math
import os
import pathlib
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import traceback

from bench import common


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="60 s down, delay 1 s, max 8 s, every 5 s")
    p.add_argument("--variants", default="503,closed", help="503 and/or closed, side by side")
    p.add_argument("--down", type=float, default=None, help="seconds the peer is down (600)")
    p.add_argument("--every", type=float, default=None, help="seconds between orders (30)")
    p.add_argument("--delay", type=int, default=None, help="PROXY_RETRY_DELAY (default: 10)")
    p.add_argument("--max", type=int, default=None, help="PROXY_RETRY_MAX (default: 600)")
    p.add_argument("--before", type=int, default=2, help="orders delivered before the outage")
    p.add_argument("--retry-after", type=int, default=None, help="503 with this Retry-After")
    p.add_argument("--analyse", metavar="JSON", help="print the figures of a saved result again")
    p.add_argument(
        "--catch-up", type=float, default=None, help="seconds to wait for the delivery (max+120)"
    )
    args = p.parse_args(argv)
    quick = {"down": 60.0, "every": 5.0, "delay": 1, "max": 8}
    full = {"down": 600.0, "every": 30.0, "delay": None, "max": None}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    assert set(args.variants) <= {"503", "closed"}, args.variants
    return args


ARGS = parse_args()

for _key in ("DATABASE_URL", "REDIS_URL", "REDIS_NAMESPACE", "SMTP_URL", "INSTANCE_PATH"):
    os.environ.pop(_key, None)
    os.environ.pop(f"PROVISOR_{_key}", None)
os.environ["PROVISOR_OUTBOUND_ALLOWED_NETWORKS"] = "127.0.0.0/8"  # the peer is on loopback

from tests.support import Instance, free_port  # noqa: E402

# every setting the tests' instances change is put back to the project's default
_TEST_ONLY = (
    "SWEEP_INTERVAL",
    "SWEEP_GRACE",
    "PROXY_RETRY_DELAY",
    "PROXY_PULL_INTERVAL",
    "PROXY_TIMEOUT",
    "ARGON2_TIME_COST",
    "ARGON2_MEMORY_COST",
)
DEFAULT_DELAY, DEFAULT_MAX = 10, 600
LOGIN, PASSWORD = "bench-reseller", "bench-peer-pässword"
REMOTE_DEPARTMENT = 7


def delay_setting():
    return ARGS.delay or DEFAULT_DELAY


def max_setting():
    return ARGS.max or DEFAULT_MAX


def backoff(failures):
    """What app.services.proxy.backoff computes with these settings (seconds)."""
    step = delay_setting() * 2 ** min(max(failures - 1, 0), 30)
    return min(step, max(max_setting(), delay_setting()))


# --- the peer ---------------------------------------------------------------------------------


class Peer:
    """A tasks proxy server side on loopback (docs/proxy-protocol.md), written for this
    benchmark: ``up`` answers as the protocol says, ``503`` answers every request 503,
    ``closed`` is no server at all (the port refuses connections)."""

    def __init__(self, variant):
        self.variant = variant
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.requests = []  # (time, method, path, status answered, what)
        self.tasks = {}  # sender_task_id -> remote id
        self.applied = {}  # sender_task_id -> ["create", event_id, ...] in arrival order
        self.events_seen = {}  # event_id -> times applied
        self.replays = []  # (time, what) answered created/applied false
        self.mode = "up"
        self.server = None
        self.start()

    # server life
    def start(self):
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                peer.handle(self, "GET")

            def do_POST(self):
                peer.handle(self, "POST")

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def down(self):
        if self.variant == "closed":
            self.stop()
        self.mode = self.variant

    def up(self):
        self.mode = "up"
        if self.server is None:
            self.start()

    # answers
    def handle(self, h, method):
        now = time.time()
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = h.path.split("?", 1)[0].removeprefix("/proxy/v1")
        if self.mode == "503":
            status, payload = (
                503,
                {
                    "error": {
                        "code": "unavailable",
                        "message": "down for the benchmark",
                        "fields": {},
                    }
                },
            )
            what = "down"
        else:
            status, payload, what = self.answer(method, path, body, now)
        with self.lock:
            self.requests.append((now, method, path, status, what))
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Provisor-Proxy-Protocol", "1")
        if status == 503 and ARGS.retry_after is not None:
            h.send_header("Retry-After", str(ARGS.retry_after))
        h.end_headers()
        h.wfile.write(data)

    def answer(self, method, path, body, now):
        if method == "GET" and path == "/departments":
            return 200, {"departments": [{"id": REMOTE_DEPARTMENT, "name": "DC"}]}, "departments"
        if method == "GET" and path == "/events":
            return 200, {"events": [], "next": 0}, "pull"
        if method == "POST" and path == "/tasks" and isinstance(body, dict):
            sid = body.get("sender_task_id")
            with self.lock:
                created = sid not in self.tasks
                if created:
                    self.tasks[sid] = 1000 + len(self.tasks)
                    self.applied.setdefault(sid, []).append("create")
                else:
                    self.replays.append((now, f"create {sid}"))
                remote = self.tasks[sid]
            return (
                (201 if created else 200),
                {"task_id": remote, "status": "new", "created": created},
                f"create {sid}",
            )
        match = re.fullmatch(r"/tasks/(\d+)/events", path)
        if method == "POST" and match and isinstance(body, dict):
            sid = int(match.group(1))
            with self.lock:
                if sid not in self.tasks:
                    return (
                        404,
                        {"error": {"code": "not_found", "message": "no such task", "fields": {}}},
                        f"event for unknown task {sid}",
                    )
                eid = body.get("event_id")
                applied = eid not in self.events_seen
                self.events_seen[eid] = self.events_seen.get(eid, 0) + 1
                if applied:
                    self.applied.setdefault(sid, []).append(eid)
                else:
                    self.replays.append((now, f"event {eid}"))
                remote = self.tasks[sid]
            return (
                200,
                {"task_id": remote, "status": "new", "applied": applied},
                f"{body.get('kind')} {sid}",
            )
        return 404, {"error": {"code": "not_found", "message": "no route", "fields": {}}}, "?"


# --- the sender ---------------------------------------------------------------------------------


class Sender(Instance):
    def __init__(self, tmp, name):
        super().__init__(pathlib.Path(tmp), name)
        for key in _TEST_ONLY:
            self.env.pop(key, None)
        if ARGS.delay is not None:
            self.env["PROXY_RETRY_DELAY"] = str(ARGS.delay)
        if ARGS.max is not None:
            self.env["PROXY_RETRY_MAX"] = str(ARGS.max)

    @property
    def db_path(self):
        return self.dir / "instance" / "provisor.sqlite3"

    def rows(self, sql, *params):
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


def ts(value):
    """A DateTimeField as SQLite stores it (naive UTC text) -> POSIX seconds."""
    if value is None:
        return None
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in value else "%Y-%m-%d %H:%M:%S"
    return dt.datetime.strptime(value, fmt).replace(tzinfo=dt.UTC).timestamp()


class SideWatcher(threading.Thread):
    """Reads the client side's row every 0.2 s; each new ``last_error_at`` is an attempt
    that failed (push or pull: the error's prefix says), with the schedule it left."""

    def __init__(self, sender):
        super().__init__(daemon=True)
        self.sender = sender
        self.stop_flag = threading.Event()
        self.changes = []  # (last_error_at, kind, push_failures, next_push_at, error)
        self.samples = 0

    def run(self):
        last = None
        while not self.stop_flag.is_set():
            with contextlib.suppress(sqlite3.Error):
                row = self.sender.rows(
                    "SELECT last_error_at, last_error, push_failures, next_push_at "
                    "FROM proxy_client_side ORDER BY id LIMIT 1"
                )
                self.samples += 1
                if row and row[0][0] and row[0][0] != last:
                    last = row[0][0]
                    error = row[0][1] or ""
                    kind = error.split(":", 1)[0] if ":" in error else "?"
                    self.changes.append((ts(last), kind, row[0][2], ts(row[0][3]), error))
            time.sleep(0.2)


LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) WARNING .*proxy push to client side \d+ failed "
    r"\((.*)\); next try in (\d+) s"
)


def log_attempts(sender):
    out = []
    for line in sender.log().splitlines():
        m = LOG_LINE.match(line)
        if m:
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            out.append((t, int(m.group(4)), m.group(3)))
    return out


# --- one variant --------------------------------------------------------------------------------


def say(variant, text):
    print(f"[{variant}] {text}", flush=True)


def local_tasks(sender):
    return [r[0] for r in sender.rows("SELECT id FROM task ORDER BY id")]


def outgoing(sender):
    return sender.rows(
        "SELECT id, task_id, kind, event_id, status, json_extract(payload, '$.text') "
        "FROM proxy_outgoing ORDER BY id"
    )


def delivered_all(sender, peer, made_orders):
    rows = outgoing(sender)
    if len(local_tasks(sender)) < made_orders or any(r[4] != "sent" for r in rows):
        return False
    with peer.lock:
        have = sum(len(v) for v in peer.applied.values())
    return have >= len(rows)


def run_variant(variant, tmp, result):
    peer = Peer(variant)
    sender = Sender(tmp, f"sender-{variant}")
    watcher = SideWatcher(sender)
    result.update({"variant": variant, "peer_url": peer.url})
    try:
        sender.start()
        upstream = sender.call("POST", "/departments", {"name": "Upstream DC"})
        sender.cli(
            "proxy",
            "client-side",
            "--url",
            peer.url,
            "--login",
            LOGIN,
            "--password",
            PASSWORD,
            "--remote-department-id",
            str(REMOTE_DEPARTMENT),
            "--department-id",
            str(upstream["id"]),
        )
        made = {"orders": 0, "comments": 0}
        comment_no = [0]

        def order():
            sender.order_manual_service(upstream["id"])
            made["orders"] += 1

        def comment(task_id):
            comment_no[0] += 1
            sender.call(
                "POST", f"/tasks/{task_id}/comment", {"text": f"bench note {comment_no[0]}"}
            )
            made["comments"] += 1

        # 1. up: a few changes delivered
        for _ in range(ARGS.before):
            order()
        common.wait_until(
            lambda: len(local_tasks(sender)) >= ARGS.before, 60, message="the first tasks"
        )
        for task_id in local_tasks(sender):
            comment(task_id)
        common.wait_until(
            lambda: delivered_all(sender, peer, made["orders"]), 60, message="the first changes"
        )
        result["before"] = dict(made)
        say(variant, f"{made['orders']} orders and {made['comments']} comments delivered; down")

        # 2. down, with changes arriving
        watcher.start()
        t_down = time.time()
        peer.down()
        result["t_down"] = t_down
        schedule = []
        k = 0
        while k * ARGS.every < ARGS.down:
            schedule.append((k * ARGS.every, "order"))
            if k * ARGS.every + ARGS.every / 2 < ARGS.down:
                schedule.append((k * ARGS.every + ARGS.every / 2, "comment"))
            k += 1
        rr = 0
        actions = []
        for offset, kind in schedule:
            wait = t_down + offset - time.time()
            if wait > 0:
                time.sleep(wait)
            t = time.time()
            if kind == "order":
                order()
            else:
                tasks_now = local_tasks(sender)
                comment(tasks_now[rr % len(tasks_now)])
                rr += 1
            actions.append((t - t_down, kind, time.time() - t))
        wait = t_down + ARGS.down - time.time()
        if wait > 0:
            time.sleep(wait)
        side = sender.rows(
            "SELECT push_failures, next_push_at, last_error FROM proxy_client_side LIMIT 1"
        )[0]
        t_up = time.time()
        peer.up()
        result.update(
            {
                "t_up": t_up,
                "actions": actions,
                "made": dict(made),
                "side_at_up": {
                    "push_failures": side[0],
                    "next_push_at": ts(side[1]),
                    "next_push_in_s": (ts(side[1]) - t_up) if side[1] else None,
                    "last_error": side[2],
                },
            }
        )
        say(
            variant,
            f"up after {t_up - t_down:.0f} s; {made['orders']} orders, {made['comments']} "
            f"comments made; sender: {side[0]} failures, next try in "
            f"{result['side_at_up']['next_push_in_s'] or 0:.1f} s",
        )

        # 3. catch-up, without "Retry now"
        catch_up = ARGS.catch_up or (max_setting() + 120)
        try:
            common.wait_until(
                lambda: delivered_all(sender, peer, made["orders"]),
                catch_up,
                interval=0.05,
                message="everything delivered",
            )
            result["t_all_delivered"] = time.time()
        except TimeoutError:
            result["t_all_delivered"] = None
        time.sleep(1.0)  # late duplicates, if any, would show now
        watcher.stop_flag.set()
        watcher.join(timeout=5)
        with peer.lock:
            result["peer_requests"] = list(peer.requests)
            result["peer_applied"] = {str(k): list(v) for k, v in peer.applied.items()}
            result["peer_replays"] = list(peer.replays)
            result["events_seen_twice"] = [e for e, n in peer.events_seen.items() if n > 1]
        result["outgoing"] = outgoing(sender)
        result["side_changes"] = watcher.changes
        result["log_attempts"] = log_attempts(sender)
        result["side_end"] = sender.rows(
            "SELECT push_failures, next_push_at, last_error, last_push_at, last_pull_at "
            "FROM proxy_client_side LIMIT 1"
        )[0]
        result["sender_tasks"] = len(local_tasks(sender))
    except Exception:
        result["error"] = traceback.format_exc()
        say(variant, "FAILED:\n" + result["error"])
    finally:
        watcher.stop_flag.set()
        with contextlib.suppress(Exception):
            sender.stop()
        with contextlib.suppress(Exception):
            peer.stop()


# --- analysis ------------------------------------------------------------------------------------


def analyse(r):
    """The figures of one variant (times in seconds from the moment the peer went down)."""
    t0, t_up = r["t_down"], r["t_up"]
    down_requests = [q for q in r["peer_requests"] if t0 <= q[0] < t_up]
    # attempts: at the peer (503) or at the sender (the row's failures; the log's lines)
    if r["variant"] == "503":
        pushes = [q[0] for q in down_requests if q[1] == "POST"]
        pulls = [q[0] for q in down_requests if q[1] == "GET"]
        source = "peer"
    else:
        pushes = [c[0] for c in r["side_changes"] if c[1] == "push" and t0 <= c[0] < t_up]
        pulls = [c[0] for c in r["side_changes"] if c[1] == "pull" and t0 <= c[0] < t_up]
        source = "sender's client side row"
    log_pushes = [a[0] for a in r["log_attempts"] if t0 <= a[0] < t_up + 0.5]
    row_pushes = [c[0] for c in r["side_changes"] if c[1] == "push" and t0 <= c[0] < t_up + 0.5]
    attempts = []
    for n, t in enumerate(pushes, 1):
        gap = t - pushes[n - 2] if n > 1 else None
        expected = backoff(n - 1) if n > 1 else None
        attempts.append(
            {
                "n": n,
                "at_s": round(t - t0, 2),
                "gap_s": round(gap, 2) if gap is not None else None,
                "expected_gap_s": expected,
                "late_s": round(gap - expected, 2) if gap is not None else None,
            }
        )
    # the first attempt after the comeback (it delivers): its gap is the last backoff
    after = [q for q in r["peer_requests"] if q[0] >= t_up]
    first_post = next((q[0] for q in after if q[1] == "POST"), None)
    if first_post is not None and pushes:
        gap = first_post - pushes[-1]
        attempts.append(
            {
                "n": len(pushes) + 1,
                "at_s": round(first_post - t0, 2),
                "gap_s": round(gap, 2),
                "expected_gap_s": backoff(len(pushes)),
                "late_s": round(gap - backoff(len(pushes)), 2),
                "delivered": True,
            }
        )
    # too early = an attempt before its due time (a half second of slack for clocks)
    early = [a for a in attempts if a["late_s"] is not None and a["late_s"] < -0.5]
    # the ideal schedule from the first attempt: how many per minute
    ideal = []
    if pushes:
        t, n = pushes[0], 1
        while t < t_up:
            ideal.append(t)
            t += backoff(n)
            n += 1
    minutes = max(1, math.ceil((t_up - t0 - 1) / 60))  # the last second: the comeback
    per_minute = []
    for m in range(minutes):
        lo, hi = t0 + 60 * m, t0 + 60 * (m + 1)
        per_minute.append(
            {
                "minute": m + 1,
                "pushes": sum(lo <= t < hi for t in pushes),
                "expected": sum(lo <= t < hi for t in ideal),
                "pulls": sum(lo <= t < hi for t in pulls),
            }
        )
    # after the comeback
    first_ok = next((q[0] for q in after if q[1] == "POST" and q[3] < 300), None)
    next_due = (pushes[-1] + backoff(len(pushes))) if pushes else None
    # exactly once and in order: per task, the sender's order against the peer's arrivals
    sent_order = {}
    for _id, task_id, kind, event_id, _status, _text in r["outgoing"]:
        sent_order.setdefault(str(task_id), []).append("create" if kind == "create" else event_id)
    applied = r["peer_applied"]
    in_order = all(applied.get(k) == v for k, v in sent_order.items()) and set(applied) == set(
        sent_order
    )
    kinds = {}
    for row in r["outgoing"]:
        kinds[row[2]] = kinds.get(row[2], 0) + 1
    made = r["made"]
    delivered = sum(len(v) for v in applied.values())
    return {
        "variant": r["variant"],
        "counted_at": source,
        "down_s": round(t_up - t0, 1),
        "push_attempts": len(pushes),
        "expected_attempts": len(ideal),
        "push_attempts_log": len(log_pushes),
        "push_attempts_row": len(row_pushes),
        "push_failures_at_up": r["side_at_up"]["push_failures"],
        "pulls_while_down": [round(t - t0, 1) for t in pulls],
        "attempts": attempts,
        "early": early,
        "pulls_after_up": [round(q[0] - t_up, 1) for q in after if q[1] == "GET"],
        "max_late_s": max((a["late_s"] for a in attempts if a["late_s"] is not None), default=None),
        "per_minute": per_minute,
        "next_due_after_up_s": round(next_due - t_up, 1) if next_due else None,
        "first_delivery_after_up_s": round(first_ok - t_up, 2) if first_ok else None,
        "all_delivered_after_up_s": (
            round(r["t_all_delivered"] - t_up, 2) if r.get("t_all_delivered") else None
        ),
        "requests_after_up": len(after),
        "made_changes": made["orders"] + made["comments"],
        "made_orders": made["orders"],
        "made_comments": made["comments"],
        "outgoing_rows": len(r["outgoing"]),
        "outgoing_by_kind": kinds,
        "delivered": delivered,
        "replays": len(r["peer_replays"]),
        "duplicates": len(r["events_seen_twice"]),
        "in_order": in_order,
        "exactly_once": delivered == len(r["outgoing"]) and not r["events_seen_twice"],
    }


def report(a):
    v = a["variant"]
    print(
        f"\n=== peer {'answering 503' if v == '503' else 'refusing connections'} "
        f"for {a['down_s']:.0f} s (attempts counted at the {a['counted_at']}) ==="
    )
    rows = [
        [
            f"{x['n']} (delivers)" if x.get("delivered") else x["n"],
            f"{x['at_s']:.2f}",
            "" if x["gap_s"] is None else f"{x['gap_s']:.2f}",
            "" if x["expected_gap_s"] is None else x["expected_gap_s"],
            "" if x["late_s"] is None else f"{x['late_s']:+.2f}",
        ]
        for x in a["attempts"]
    ]
    print(
        common.table(rows, ["push attempt", "at (s)", "gap (s)", "expected gap", "gap - expected"])
    )
    print(
        f"push attempts while down: {a['push_attempts']} (expected {a['expected_attempts']}; "
        f"the sender's log: {a['push_attempts_log']}, its row: {a['push_attempts_row']}, "
        f"push_failures when the peer came back: {a['push_failures_at_up']}); "
        f"before their due time: {len(a['early'])}; latest: {a['max_late_s']} s after due"
    )
    print(f"pulls while down at (s): {a['pulls_while_down']}")
    rows = [[m["minute"], m["pushes"], m["expected"], m["pulls"]] for m in a["per_minute"]]
    print(common.table(rows, ["minute", "push attempts", "expected", "pulls"]))
    print(
        f"after the peer came back: pulls at {a['pulls_after_up']} s; "
        f"next due time in {a['next_due_after_up_s']} s; first "
        f"change delivered after {a['first_delivery_after_up_s']} s, everything after "
        f"{a['all_delivered_after_up_s']} s ({a['requests_after_up']} requests)"
    )
    print(
        f"changes: made {a['made_changes']} ({a['made_orders']} orders, {a['made_comments']} "
        f"comments) -> {a['outgoing_rows']} outgoing rows {a['outgoing_by_kind']}; delivered "
        f"{a['delivered']}; replays {a['replays']}, duplicates {a['duplicates']}; exactly once: "
        f"{a['exactly_once']}, in order per task: {a['in_order']}"
    )


def main():
    if ARGS.analyse:
        with open(ARGS.analyse) as fh:
            saved = json.load(fh)
        for key in ("delay", "max"):
            setattr(ARGS, key, saved["args"][key])
        for r in saved["raw"].values():
            if "t_up" in r:
                report(analyse(r))
        return 0
    info = common.machine_info()
    print(
        f"Provisor tasks proxy, a peer down: variants {', '.join(ARGS.variants)}, "
        f"{ARGS.down:g} s down, an order every {ARGS.every:g} s and a comment between, "
        f"PROXY_RETRY_DELAY {delay_setting()}, PROXY_RETRY_MAX {max_setting()}",
        flush=True,
    )
    tmp = tempfile.mkdtemp(prefix="provisor-bench-proxy-down-")
    results = {v: {} for v in ARGS.variants}
    threads = [
        threading.Thread(target=run_variant, args=(v, tmp, results[v]), daemon=True)
        for v in ARGS.variants
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"instances kept in {tmp}")
    analyses = {}
    for v, r in results.items():
        if "error" in r or "t_up" not in r:
            print(f"\n[{v}] no figures: {r.get('error', 'did not finish')}")
            continue
        analyses[v] = analyse(r)
        report(analyses[v])
    path = common.write_result(
        "proxy-down",
        {"args": vars(ARGS), "machine": info, "analyses": analyses, "raw": results},
    )
    print(f"\nresults: {path}")
    return 0 if analyses and all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
