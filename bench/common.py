"""Shared helpers of the benchmarks: environment, own database and Redis db, processes,
/proc readings (RSS, CPU) and result files.

Every benchmark uses its OWN PostgreSQL database (``provisor_bench`` by default) and its
own Redis db number and namespace, and removes them at the end.
"""

import atexit
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
RESULTS = os.path.join(ROOT, "bench", "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_DB = os.environ.get("BENCH_PG_DB", "provisor_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")

# settings that the parent environment must not leak into the benchmark's processes
_SCRUB = ("DATABASE_URL", "REDIS_URL", "REDIS_NAMESPACE", "SMTP_URL", "INSTANCE_PATH")


def database_url(db=PG_DB):
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{db}"


def bench_env(database_url, redis_url=REDIS_URL, namespace=None, **extra):
    """Environment for the benchmark process and its children; also applied to os.environ
    (the project reads its settings from the environment at import / create_app time)."""
    namespace = namespace or f"provisor-bench-{uuid.uuid4().hex[:8]}"
    instance = tempfile.mkdtemp(prefix="provisor-bench-instance-")
    atexit.register(shutil.rmtree, instance, True)
    env = dict(os.environ)
    for key in _SCRUB:
        env.pop(key, None)
        env.pop(f"PROVISOR_{key}", None)
    env.update(
        {
            "DATABASE_URL": database_url,
            "PROVISOR_INSTANCE_PATH": instance,
            "SECRET_KEY": "bench-secret",
            "PAYMENT_WEBHOOK_SECRET": "bench-webhook-secret",
            "PYTHONUNBUFFERED": "1",
            "PROVISOR_LOG_LEVEL": "WARNING",
            # the benchmarks' endpoints and peers listen on loopback
            "PROVISOR_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["REDIS_NAMESPACE"] = namespace
    env.update({k: str(v) for k, v in extra.items()})
    os.environ.clear()
    os.environ.update(env)
    return env


# --- PostgreSQL ---------------------------------------------------------------------------


def _admin():
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    return conn


def recreate_database(db=PG_DB):
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (db,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{db}"')
        cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()


def drop_database(db=PG_DB):
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (db,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{db}"')
    conn.close()


def pg_db_stats(db=PG_DB):
    """Counters of pg_stat_database for our database (sessions = connections opened)."""
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT sessions, xact_commit, xact_rollback, tup_returned, tup_fetched, "
            "tup_inserted, tup_updated, tup_deleted, blks_hit, blks_read "
            "FROM pg_stat_database WHERE datname = %s",
            (db,),
        )
        row = cur.fetchone()
    conn.close()
    names = [
        "sessions",
        "xact_commit",
        "xact_rollback",
        "tup_returned",
        "tup_fetched",
        "tup_inserted",
        "tup_updated",
        "tup_deleted",
        "blks_hit",
        "blks_read",
    ]
    return dict(zip(names, row, strict=True)) if row else {}


def pg_table_stats(db=PG_DB):
    """pg_stat_user_tables of our database: seq_scan, seq_tup_read, idx_scan, idx_tup_fetch
    per table; idx_scan and idx_tup_read per index (``index <name>``)."""
    import psycopg2

    conn = psycopg2.connect(database_url(db))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup, "
            "coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_user_tables"
        )
        rows = cur.fetchall()
        cur.execute("SELECT indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes")
        indexes = cur.fetchall()
    conn.close()
    stats = {
        r[0]: {
            "seq_scan": r[1],
            "seq_tup_read": r[2],
            "idx_scan": r[3],
            "idx_tup_fetch": r[5],
            "rows": r[4],
        }
        for r in rows
    }
    for name, scans, read in indexes:  # which index read the entries
        stats[f"index {name}"] = {"idx_scan": scans, "idx_tup_read": read}
    return stats


def diff(after, before):
    return {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], (int, float))}


# --- Redis ------------------------------------------------------------------------------


def redis_client(url=REDIS_URL):
    import redis

    return redis.Redis.from_url(url)


def clean_namespace(namespace, url=REDIS_URL):
    client = redis_client(url)
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    return len(keys)


def redis_commands(url=REDIS_URL):
    return int(redis_client(url).info("stats")["total_commands_processed"])


# --- callgrind (instructions counted from inside: bench.inprocess, bench.consumer) -------


def callgrind_control(counting, *args):
    """``callgrind_control <args>`` for this process (under callgrind only)."""
    if counting:
        done = subprocess.run(
            ["callgrind_control", *args, str(os.getpid())], capture_output=True, text=True
        )
        if done.returncode != 0 or "Error" in done.stdout + done.stderr:  # it exits 0 anyway
            sys.exit("--callgrind: run this under valgrind --tool=callgrind (see its docstring)")


def callgrind_counts():
    """The instructions of each part dumped so far (``--dump=<part>``), by part: read from
    the dump files callgrind wrote for this process (``--callgrind-out-file=/tmp/cg.%p``:
    ``/tmp/cg.<pid>.<n>``; another prefix than ``/tmp/cg`` in ``CALLGRIND_OUT``)."""
    import glob

    counts = {}
    prefix = os.environ.get("CALLGRIND_OUT", "/tmp/cg")
    for path in glob.glob(f"{prefix}.{os.getpid()}.*"):
        part = total = None
        with open(path) as dump:
            for line in dump:
                if line.startswith("desc: Trigger: dump "):
                    part = line.removeprefix("desc: Trigger: dump ").strip()
                elif line.startswith("totals:"):
                    total = int(line.split()[1])
        if part and total is not None:
            counts[part] = total
    return counts


# --- /proc ------------------------------------------------------------------------------


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def descendants(pid):
    out = []
    for child in children(pid):
        out.append(child)
        out.extend(descendants(child))
    return out


def status_kb(pid, field):
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...) in MB, or None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def cpu_seconds(pid, with_reaped_children=False):
    """utime+stime of a process (plus cutime+cstime: its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    total = utime + stime + ((cutime + cstime) if with_reaped_children else 0)
    return total / CLK_TCK


def pids_by_exe(name):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == name:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _postgres_processes():
    """The pids of every ``postgres`` process, and those of them that are postmasters
    (whose parent is not a postgres process)."""
    pids = pids_by_exe("postgres")
    ppids = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppids[pid] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            pass
    return pids, [p for p in pids if ppids.get(p) not in pids]


def postgres_cpu():
    """CPU of the whole PostgreSQL server, including backends that already exited
    (the postmaster reaps them: their time is in its cutime/cstime). Includes other
    databases' work on this server: a noisy machine shows up here."""
    pids, master = _postgres_processes()
    if not pids:
        return None
    total = 0.0
    for pid in pids:
        total += cpu_seconds(pid, with_reaped_children=pid in master)
    return total


def postgres_cpu_parts(db=PG_DB, own_pids=()):
    """The PostgreSQL server's CPU by process, for :func:`postgres_cpu_split`: each live
    process's CPU seconds and part, and what the postmaster reaped (processes that ended).
    Parts: ``provisor`` (client backends on ``db``), ``benchmark`` (``own_pids``: the
    benchmark's polling connection, and backends on other databases), ``autovacuum``,
    ``server`` (the postmaster, WAL writer, checkpointer, background writer, launchers)."""
    pids, masters = _postgres_processes()
    if not pids:
        return None
    live, reaped = {}, 0.0
    for pid in pids:
        line = cmdline(pid)
        if pid in masters:
            part = "server"
            reaped += cpu_seconds(pid, with_reaped_children=True) - cpu_seconds(pid)
        elif "autovacuum" in line:
            part = "autovacuum"
        elif pid in own_pids:
            part = "benchmark"
        elif f" {db} " in f"{line} ":
            part = "provisor"
        elif "(" in line:  # "user database host(port) state": another database's client
            part = "benchmark"
        else:
            part = "server"
        live[pid] = (part, cpu_seconds(pid))
    return {"live": live, "reaped": reaped}


def postgres_cpu_split(before, after):
    """CPU seconds of each part between two :func:`postgres_cpu_parts`. A process alive at
    both counts its difference, one started since its whole time; ``ended``: the processes
    that ended in between (short-lived autovacuum workers, the benchmark's statistics
    connections, a pooled connection closed), their time in between."""
    out = {"provisor": 0.0, "benchmark": 0.0, "autovacuum": 0.0, "server": 0.0}
    for pid, (part, cpu) in after["live"].items():
        earlier = before["live"].get(pid)
        out[part] += cpu - (earlier[1] if earlier and earlier[0] == part else 0.0)
    gone_before = sum(cpu for pid, (_, cpu) in before["live"].items() if pid not in after["live"])
    out["ended"] = after["reaped"] - before["reaped"] - gone_before
    return out


def redis_cpu():
    pids = pids_by_exe("redis-server")
    return sum(cpu_seconds(p) for p in pids) if pids else None


def machine_cpu():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts) - idle) / CLK_TCK, sum(parts) / CLK_TCK


# --- processes --------------------------------------------------------------------------


class Procs:
    """Subprocesses of the benchmark, each in its own session, logs in a temp dir."""

    def __init__(self, env, logdir=None):
        self.env = env
        self.logdir = logdir or tempfile.mkdtemp(prefix="provisor-bench-logs-")
        if not os.environ.get("BENCH_KEEP_LOGS"):  # set it to look at the processes' logs
            atexit.register(shutil.rmtree, self.logdir, True)
        self.procs = {}
        self._logs = {}

    def start(self, name, argv, **env):
        log = open(os.path.join(self.logdir, f"{name}.log"), "ab")  # noqa: SIM115
        self._logs[name] = log
        proc = subprocess.Popen(
            argv,
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def stop(self, name, sig=signal.SIGTERM, timeout=60):
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self._logs.pop(name).close()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)

    def log_text(self, name):
        path = os.path.join(self.logdir, f"{name}.log")
        with open(path, errors="replace") as fh:
            return fh.read()


def worker_child(parent_pid, timeout=30):
    """The pid of the dramatiq worker process (the child doing the work) of ``parent_pid``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in descendants(parent_pid):
            if "python" in cmdline(pid) or "dramatiq" in cmdline(pid):
                return pid
        time.sleep(0.1)
    raise RuntimeError(f"no worker child of {parent_pid}")


def wait_until(predicate, timeout, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {message}")


# --- results ----------------------------------------------------------------------------


def machine_info():
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_revision(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/loadavg") as fh:
            info["loadavg"] = fh.read().split()[:3]
    except OSError:
        pass
    return info


def git_revision():
    """The checkout's HEAD and whether files were modified (read-only git commands)."""
    try:
        head = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split("\n")
        return {"head": head, "modified": [d[3:] for d in dirty if d.strip()]}
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}


def write_result(name, data):
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(RESULTS, f"{name}-{stamp}.json")
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
    return path


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100)."""
    values = sorted(values)
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(out)


def create_orders(app, tariff, clients, n):
    """``n`` unpaid orders of ``tariff`` through the services layer, the clients in turn,
    in one transaction; returns their ids."""
    from app.db import database
    from app.services import orders

    ids = []
    with app.app_context(), database.connection_context(), database.atomic():
        for i in range(n):
            order = orders.create(
                {"client_id": clients[i % len(clients)].id, "tariff_id": tariff.id}
            )
            ids.append(order.id)
    return ids


def sandbox_catalog(
    app, latency_ms=0, module_name="sandbox-bench", timeout=60, interval=0.1, wait=True
):
    """What the activation benchmarks order from: a sandbox module (``latency_ms``), a VPS
    tariff served by it and 50 clients, made through the app; returns ``(module, tariff,
    clients)`` once a worker has created the tariff's item (ensure_item: it also proves the
    worker is up) — at once with ``wait=False`` (no worker: the caller runs it)."""
    from app.db import database
    from app.models import Item
    from app.services import accounts, catalog

    with app.app_context(), database.connection_context():
        dept = catalog.create_department({"name": "Bench"})
        module = catalog.create_module(
            {
                "name": module_name,
                "type": "sandbox",
                "config": {"latency_ms": latency_ms},
                "department_id": dept.id,
            }
        )
        tariff = catalog.create_tariff(
            {
                "name": "Bench VPS",
                "product_type": "vps",
                "price": "5.00",
                "internal_name": "bench-vps",
                "module_ids": [module.id],
            }
        )
        clients = [
            accounts.create_client({"name": f"Client {i}", "email": f"c{i}@bench.example"})
            for i in range(50)
        ]

    if not wait:
        return module, tariff, clients

    def item_ready():
        with app.app_context(), database.connection_context():
            return Item.get(Item.module == module.id).status == "ready"

    wait_until(item_ready, timeout=timeout, interval=interval, message="the item to be created")
    return module, tariff, clients
