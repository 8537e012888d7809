"""Count and time what peewee sends to the database, per unit of work (a message, a call).

Importing this module patches peewee (execute_sql, commit, connect, close), Actor
sending and the welcome template's compilation with timers that add to the thread-local
"current" record (:func:`begin` / :func:`end`, or ``with measure(kind):``).
For analysis only: it slows things down a little.
"""

import collections
import contextlib
import os
import re
import threading
import time

import dramatiq
import peewee

_local = threading.local()
_lock = threading.Lock()
_stats = {}


def shape(sql):
    """``SELECT operation JOIN service,...`` / ``UPDATE attempt`` / ``INSERT INTO email``: a
    statement by its tables (subqueries in the select list left out; a prepared
    statement's EXECUTE by the text it stands for, marked "prepared")."""
    m = re.match(r"^\s*EXECUTE\s+(\w+)", sql, re.I)
    if m:
        from app.db import prepared_text

        text = prepared_text(m.group(1))
        return f"{shape(text)} (prepared)" if text else "EXECUTE"
    if sql.lstrip().upper().startswith("PREPARE"):
        return "PREPARE"
    m = re.match(r'^\s*WITH\s+"\w+"\s+AS\s+\(', sql, re.I)
    if m:  # one CTE: ``INSERT INTO attempt WITH UPDATE operation``
        depth, end = 1, m.end()
        while depth and end < len(sql):
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        return f"{shape(sql[end:])} WITH {shape(sql[m.end() : end - 1])}"
    while True:  # parentheses (subqueries, conditions) emptied, innermost first
        stripped = re.sub(r"\([^()]*\)", "_", sql)
        if stripped == sql:
            break
        sql = stripped
    m = re.match(r"^\s*(INSERT INTO|UPDATE|DELETE FROM)\s+\"(\w+)\"", sql, re.I)
    if m:
        return f"{m.group(1).upper()} {m.group(2)}"
    stripped = sql.lstrip()
    m = re.search(r'\bFROM\s+"(\w+)"', sql, re.I)
    if m and stripped.upper().startswith("SELECT"):
        joins = re.findall(r'JOIN\s+"(\w+)"', sql, re.I)
        extra = f" JOIN {','.join(joins)}" if joins else ""
        return f"SELECT {m.group(1)}{extra}"
    return stripped.split()[0].upper() if stripped else "?"


def _new():
    return {
        "t_sql": 0.0,
        "n_sql": 0,
        "n_trip": 0,
        "t_commit": 0.0,
        "n_commit": 0,
        "t_connect": 0.0,
        "n_connect": 0,
        "t_close": 0.0,
        "n_close": 0,
        "t_send": 0.0,
        "n_send": 0,
        "t_jinja_compile": 0.0,
        "n_jinja_compile": 0,
        "shapes": collections.Counter(),
        "samples": {},
        # BENCH_PG_CPU=1: the PostgreSQL backend's CPU (ns, /proc/<pid>/schedstat) during
        # each round trip, by what the trip carried ("BEGIN + SELECT operation ...")
        "pg_ns": collections.Counter(),
        "pg_trips": collections.Counter(),
    }


def _timed(name, fn):
    def wrapper(*args, **kwargs):
        cur = getattr(_local, "cur", None)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if cur is not None:
                cur["t_" + name] += time.perf_counter() - start
                cur["n_" + name] += 1

    return wrapper


_orig_execute_sql = peewee.Database.execute_sql
PG_CPU = os.environ.get("BENCH_PG_CPU") == "1"


def _backend_ns(db):
    """CPU time (ns) the server process of ``db``'s connection in this thread has used, or
    None (not PostgreSQL, not measuring, not readable)."""
    if not PG_CPU:
        return None
    conn = getattr(db._state, "conn", None)
    if conn is None or not hasattr(conn, "get_backend_pid"):
        return None
    try:
        with open(f"/proc/{conn.get_backend_pid()}/schedstat") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError):
        return None


def _add_pg(cur, key, before, db):
    if before is None:
        return
    after = _backend_ns(db)
    if after is not None:
        cur["pg_ns"][key] += after - before
        cur["pg_trips"][key] += 1


def statements(sql):
    """The statements of one message: ``app.db.PostgresqlPool`` sends a transaction's
    BEGIN and the writes sent later with the next statement, joined by ``"; "`` (split
    outside quoted values)."""
    if "; " not in sql:
        return [sql]
    parts, start, quoted = [], 0, False
    for i, char in enumerate(sql):
        if char == "'":
            quoted = not quoted
        elif not quoted and sql.startswith("; ", i):
            parts.append(sql[start:i])
            start = i + 2
    parts.append(sql[start:])
    return parts


def _execute_sql(self, sql, params=None, *args, **kwargs):
    cur = getattr(_local, "cur", None)
    pg_before = _backend_ns(self) if cur is not None else None
    start = time.perf_counter()
    try:
        return _orig_execute_sql(self, sql, params, *args, **kwargs)
    finally:
        if cur is not None:
            cur["t_sql"] += time.perf_counter() - start
            cur["n_trip"] += 1
            trip = []
            for part in statements(sql):
                if part == "BEGIN":  # not counted when it went alone either
                    trip.append("BEGIN")
                    continue
                if part == "COMMIT":  # a COMMIT that carried writes sent later
                    cur["n_commit"] += 1
                    trip.append("COMMIT")
                    continue
                cur["n_sql"] += 1
                key = shape(part)
                trip.append(key)
                cur["shapes"][key] += 1
                cur["samples"].setdefault(key, part[:500])
            _add_pg(cur, " + ".join(trip), pg_before, self)


def _commit(fn):
    """peewee's own COMMIT (one round trip): its server CPU counted as "COMMIT"."""

    def wrapper(self, *args, **kwargs):
        cur = getattr(_local, "cur", None)
        pg_before = _backend_ns(self) if cur is not None else None
        try:
            return fn(self, *args, **kwargs)
        finally:
            if cur is not None:
                _add_pg(cur, "COMMIT", pg_before, self)

    return wrapper


def _trip(fn):
    """``fn`` sends one message to the server and waits for its answer: counted."""

    def wrapper(*args, **kwargs):
        cur = getattr(_local, "cur", None)
        if cur is not None:
            cur["n_trip"] += 1
        return fn(*args, **kwargs)

    return wrapper


peewee.Database.execute_sql = _execute_sql
# round trips outside execute_sql: peewee's own BEGIN, COMMIT and ROLLBACK, and its pool's
# SELECT 1 when it hands out an idle connection (app.db.PostgresqlPool sends none of these
# on their own, except COMMIT / ROLLBACK after a statement went)
peewee.Database.commit = _commit(_trip(peewee.Database.commit))
peewee.Database.rollback = _trip(peewee.Database.rollback)
peewee.PostgresqlDatabase.begin = _trip(peewee.PostgresqlDatabase.begin)
try:
    from playhouse import pool as _pool

    _pool._PooledPostgresqlDatabase._is_closed = _trip(_pool._PooledPostgresqlDatabase._is_closed)
except Exception:  # pragma: no cover
    pass
peewee.Database.commit = _timed("commit", peewee.Database.commit)
for _cls in (peewee.PostgresqlDatabase, peewee.SqliteDatabase):
    _cls._connect = _timed("connect", _cls._connect)
peewee.Database._close = _timed("close", peewee.Database._close)
dramatiq.Actor.send_with_options = _timed("send", dramatiq.Actor.send_with_options)

try:  # the welcome email template is compiled per activation: time it
    from app.services import mail as _mail

    _mail._templates.from_string = _timed("jinja_compile", _mail._templates.from_string)
except Exception:  # pragma: no cover
    pass


def begin():
    _local.cur = _new()
    _local.start = time.perf_counter()


def end():
    cur = getattr(_local, "cur", None)
    _local.cur = None
    if cur is None:
        return None, 0.0
    return cur, time.perf_counter() - _local.start


def add(kind, cur, elapsed, exception=False):
    with _lock:
        agg = _stats.setdefault(kind, {"messages": 0, "t_wall": 0.0, "exceptions": 0, **_new()})
        agg["messages"] += 1
        agg["t_wall"] += elapsed
        agg["exceptions"] += bool(exception)
        for key, value in cur.items():
            if key in ("shapes", "pg_ns", "pg_trips"):
                agg[key].update(value)
            elif key == "samples":
                for k, v in value.items():
                    agg["samples"].setdefault(k, v)
            else:
                agg[key] += value


@contextlib.contextmanager
def measure(kind):
    begin()
    try:
        yield
    finally:
        cur, elapsed = end()
        if cur is not None:
            add(kind, cur, elapsed)


def snapshot():
    with _lock:
        return {
            k: {**v, **{c: dict(v[c]) for c in ("shapes", "pg_ns", "pg_trips")}}
            for k, v in _stats.items()
        }


def reset():
    with _lock:
        _stats.clear()


def report(stats):
    """Readable lines: per unit, statements by shape and the time split."""
    lines = []
    for kind, v in sorted(stats.items()):
        n = v["messages"] or 1
        lines.append(
            f"{kind}: {v['messages']} x; per unit: wall {1000 * v['t_wall'] / n:.2f} ms, "
            f"SQL {v['n_sql'] / n:.1f} stmts {1000 * v['t_sql'] / n:.2f} ms, "
            f"round trips {v.get('n_trip', 0) / n:.1f}, "
            f"commits {v['n_commit'] / n:.1f} ({1000 * v['t_commit'] / n:.2f} ms), "
            f"connects {v['n_connect'] / n:.2f} ({1000 * v['t_connect'] / n:.2f} ms), "
            f"sends {v['n_send'] / n:.2f} ({1000 * v['t_send'] / n:.2f} ms), "
            f"jinja compiles {v['n_jinja_compile'] / n:.1f} "
            f"({1000 * v['t_jinja_compile'] / n:.2f} ms)"
        )
        for key, count in sorted(v["shapes"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {count / n:5.2f}  {key}")
        pg_ns = v.get("pg_ns") or {}
        if pg_ns:
            lines.append(
                f"  PostgreSQL backend CPU per unit {sum(pg_ns.values()) / n / 1e6:.3f} ms, "
                "by round trip (trips per unit, µs per unit):"
            )
            for key, ns in sorted(pg_ns.items(), key=lambda kv: -kv[1]):
                trips = v["pg_trips"].get(key, 0)
                lines.append(f"    {trips / n:5.2f}  {ns / n / 1000:7.1f}  {key}")
    return "\n".join(lines)
