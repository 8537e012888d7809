"""The schema: frozen migrations (``app/migrations``) on SQLite and PostgreSQL.

A fresh database gets everything; a database of the release before frozen migrations
(``tests/fixtures/legacy-v3.*.sql``, and the version-1 and version-2 states derived from
it as that release's own test did) is adopted with every row kept; models and migrated
schema match (``playhouse.schema_diff``, and column types, nullability, foreign keys and
indexes against tables made from the models); upgrading twice applies nothing; several
processes upgrading at once apply everything once; a failure is one line and rolled back.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
from peewee import Model
from playhouse.schema_diff import diff_models

from app import create_app, models, schema
from app.db import database, make_database
from tests.support import wait_for

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
BIN = os.path.dirname(sys.executable)
HISTORY = schema.HISTORY_TABLE
LEGACY = "schema_version"  # the history of the old app/schema.py
# what the old schema's version 2 added (children first), and version 3
PROXY_TABLES = [
    "proxy_link",
    "proxy_outgoing",
    "proxy_inbound",
    "proxy_received",
    "proxy_event",
    "proxy_client_side",
    "proxy_server_side",
]
TO_VERSION_2 = """
DROP INDEX attempt_finished_at;
ALTER TABLE operation DROP COLUMN redispatches;
DELETE FROM schema_version WHERE version > 2;
"""
TO_VERSION_1 = (
    TO_VERSION_2
    + "".join(f"DROP TABLE {table};\n" for table in PROXY_TABLES)
    + "DELETE FROM schema_version WHERE version > 1;\n"
)
# seed rows a later migration adds to an adopted database, by table
SEEDED_LATER = {"product_type": ["dns"]}
# what a later migration changes in the seed rows of an adopted database, by table and
# code: 0006_database_port gives the database product type's details the port
DATABASE_DETAILS = [
    {"name": name, "label": label, "required": True, "secret": name == "password"}
    for name, label in (
        ("host", "Host"),
        ("port", "Port"),
        ("database", "Database name"),
        ("username", "Username"),
        ("password", "Password"),
    )
]
CHANGED_LATER = {
    "product_type": {"database": {"detail_fields": json.dumps(DATABASE_DETAILS, sort_keys=True)}}
}


# 0012_detail_kinds: each detail field gets a kind (the built-in ones theirs, others text)
DETAIL_KINDS = {
    "hosting": {"domain": "domain", "ip": "ip", "panel_url": "url"},
    "vps": {"hostname": "hostname", "ip": "ip", "panel_url": "url"},
    "dedicated": {"hostname": "hostname", "ip": "ip", "ipmi_url": "url"},
    "domain": {"domain": "domain"},
    "dns": {"domain": "domain"},
    "database": {"host": "hostname", "port": "port"},
}


def _with_kinds(code, text):
    fields = json.loads(text or "[]")
    for field in fields:
        field.setdefault("kind", DETAIL_KINDS.get(code, {}).get(field["name"], "text"))
        if code == "custom" and field["name"] == "details":
            field["max_length"] = 2000
    return json.dumps(fields, sort_keys=True)


# 0018_domain_auth_code: the domain product type's details end with the secret auth code
DOMAIN_AUTH_CODE = {
    "name": "auth_code",
    "label": "Auth code (for transfers)",
    "kind": "text",
    "required": False,
    "secret": True,
}


# 0021_hosting_nameservers: the hosting product type's details end with the name servers
HOSTING_NAMESERVERS = {
    "name": "nameservers",
    "label": "Name servers",
    "kind": "text",
    "required": False,
    "secret": False,
}


def changed_later(table, row):
    """``row`` of the previous release as the later migrations leave it."""
    row = {**row, **CHANGED_LATER.get(table, {}).get(row.get("code"), {})}
    if table == "product_type" and "detail_fields" in row:
        row["detail_fields"] = _with_kinds(row.get("code"), row["detail_fields"])
        if row.get("code") == "domain":
            fields = [*json.loads(row["detail_fields"]), DOMAIN_AUTH_CODE]
            row["detail_fields"] = json.dumps(fields, sort_keys=True)
        if row.get("code") == "hosting":
            fields = [*json.loads(row["detail_fields"]), HOSTING_NAMESERVERS]
            row["detail_fields"] = json.dumps(fields, sort_keys=True)
    return row


# tables a later migration adds (empty in an adopted database): 0005_acme_certificates,
# 0008_sweeps, 0010_resellers, 0012_detail_kinds, 0016_events
ADDED_LATER = {
    "acme_account",
    "acme_challenge",
    "acme_certificate",
    "sweep",
    "reseller_request",
    "service_event",
    "webhook_endpoint",
    "event",
    "event_delivery",
    "delivery_attempt",
}
ADDED_LATER |= {"client_note", "impersonation", "password_reset"}  # 0014_client_records
# the seed product types of 0001, then DNS hosting (0002_module_interface_v2)
PRODUCT_TYPES = [
    "hosting",
    "vps",
    "dedicated",
    "domain",
    "certificate",
    "database",
    "custom",
    "dns",
]

# every model of app.models, found as pwmigrate finds them (``pwmigrate ... diff app.models``)
APP_MODELS = [
    value
    for value in vars(models).values()
    if isinstance(value, type)
    and issubclass(value, Model)
    and value.__module__ == models.__name__
    and value is not models.BaseModel
]


class Backend:
    """A database server kind: the test's database URL, more databases, raw SQL."""

    def __init__(self, kind, url, new_url):
        self.kind = kind
        self.url = url
        self.new_url = new_url

    def run_script(self, sql, url=None):
        """Run ``sql`` (many statements) outside the app, as psql or sqlite3 would."""
        url = url or self.url
        if self.kind == "sqlite":
            conn = sqlite3.connect(url[len("sqlite:///") :])
            conn.executescript(sql)
        else:
            import psycopg2

            conn = psycopg2.connect(url)
            with conn.cursor() as cur:
                cur.execute(sql)
        conn.commit()
        conn.close()

    def query(self, sql, url):
        if self.kind == "sqlite":
            conn = sqlite3.connect(url[len("sqlite:///") :])
            rows = conn.execute(sql).fetchall()
        else:
            import psycopg2

            conn = psycopg2.connect(url)
            with conn.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetchall()
        conn.close()
        return rows

    def load_legacy(self, url=None):
        """The database the previous release made (tests/fixtures/README.md)."""
        name = "sqlite" if self.kind == "sqlite" else "postgresql"
        with open(os.path.join(FIXTURES, f"legacy-v3.{name}.sql")) as fh:
            self.run_script(fh.read(), url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path):
    if request.param == "sqlite":
        names = iter(range(1, 100))
        yield Backend(
            "sqlite",
            f"sqlite:///{tmp_path}/provisor.sqlite3",
            lambda: f"sqlite:///{tmp_path}/other-{next(names)}.sqlite3",
        )
    else:
        yield Backend(
            "postgres",
            request.getfixturevalue("postgres_url"),
            request.getfixturevalue("make_postgres_database"),
        )
    _close(database)


def _close(db):
    if not db.is_closed():
        db.close()
    pool = getattr(db, "obj", db)
    if hasattr(pool, "close_all"):
        pool.close_all()


def _app(url):
    return create_app({"DATABASE_URL": url, "SECRET_KEY": "x", "PAYMENT_WEBHOOK_SECRET": "x"})


def _rows():
    """{table: (column names, every row as a dict, by id)} but for the two histories."""
    out = {}
    for table in sorted(database.get_tables()):
        if table in (HISTORY, LEGACY):
            continue
        cursor = database.execute_sql(f'SELECT * FROM "{table}" ORDER BY id')
        names = [d[0] for d in cursor.description]
        out[table] = (names, [dict(zip(names, row, strict=True)) for row in cursor.fetchall()])
    return out


def _structure(db, kind):
    """Per table: columns (type, length, nullability, key), foreign keys, indexes."""
    out = {}
    for table in sorted(set(db.get_tables()) - {HISTORY}):
        if kind == "sqlite":
            columns = {
                name: (type_.upper(), bool(notnull), bool(pk))
                for _, name, type_, notnull, _, pk in db.execute_sql(
                    f'PRAGMA table_info("{table}")'
                )
            }
            foreign_keys = {
                (row[3], row[2], row[4], row[6])  # from, table, to, on delete
                for row in db.execute_sql(f'PRAGMA foreign_key_list("{table}")')
            }
        else:
            columns = {
                row[0]: row[1:]
                for row in db.execute_sql(
                    "SELECT column_name, data_type, character_maximum_length, numeric_precision,"
                    " numeric_scale, is_nullable FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = %s",
                    (table,),
                )
            }
            foreign_keys = {
                row[0]
                for row in db.execute_sql(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE contype = 'f' AND conrelid = %s::regclass",
                    (f'public."{table}"',),
                )
            }
        indexes = {(i.name, tuple(i.columns), bool(i.unique)) for i in db.get_indexes(table)}
        out[table] = {"columns": columns, "foreign keys": foreign_keys, "indexes": indexes}
    return out


def _assert_matches_models(backend):
    """schema_diff finds nothing, and the tables are those the models would create."""
    difference = diff_models(database.obj, APP_MODELS)
    assert not difference, str(difference)
    reference = make_database(backend.new_url())
    try:
        with reference.bind_ctx(APP_MODELS):
            reference.create_tables(APP_MODELS)
        expected = _structure(reference, backend.kind)
    finally:
        _close(reference)
    actual = _structure(database.obj, backend.kind)
    assert sorted(actual) == sorted(expected)
    for table, shape in expected.items():
        assert actual[table] == shape, f"{table} differs from what the models would create"


def test_a_fresh_database_gets_everything(backend):
    app = _app(backend.url)
    with app.app_context():
        names = schema.migration_names()
        assert names[0] == "0001_initial"
        assert schema.pending() == names
        assert schema.upgrade() == names
        assert schema.upgrade() == []  # nothing twice
        assert schema.pending() == []
        with database.connection_context():
            assert [r[0] for r in database.execute_sql(f"SELECT name FROM {HISTORY}")] == names
            assert "redispatches" in {c.name for c in database.get_columns("operation")}
            assert "proxy_client_side" in database.get_tables()
            assert ("finished_at",) in {tuple(i.columns) for i in database.get_indexes("attempt")}
            assert LEGACY not in database.get_tables()
            _assert_matches_models(backend)
            types = {t.code: t for t in models.ProductType.select().order_by(models.ProductType.id)}
            assert list(types) == PRODUCT_TYPES
            assert {
                "name": "password",
                "label": "Root password",
                "kind": "text",
                "required": True,
                "secret": True,
            } in types["vps"].detail_fields
            assert {
                "name": "ip",
                "label": "IP address",
                "kind": "ip",
                "required": True,
                "secret": False,
            } in types["vps"].detail_fields
    # the seed rows are those the previous release made
    legacy = backend.new_url()
    backend.load_legacy(legacy)
    seed = (
        "SELECT id, code, name, detail_fields, welcome_subject, welcome_template"
        " FROM product_type WHERE id <= 7 ORDER BY id"
    )
    legacy_rows = [
        (
            id_,
            code,
            name,
            changed_later("product_type", {"code": code, "detail_fields": d})["detail_fields"],
            *rest,
        )
        for id_, code, name, d, *rest in backend.query(seed, legacy)
    ]
    assert backend.query(seed, backend.url) == legacy_rows


@pytest.mark.parametrize("version", [3, 2, 1])
def test_a_database_of_the_previous_release_is_adopted_with_every_row(backend, version):
    backend.load_legacy()
    if version < 3:
        backend.run_script(TO_VERSION_2 if version == 2 else TO_VERSION_1)
    app = _app(backend.url)
    with app.app_context():
        with database.connection_context():
            before = _rows()
            legacy_versions = [
                r[0] for r in database.execute_sql("SELECT version FROM schema_version")
            ]
        assert sorted(legacy_versions) == list(range(1, version + 1))
        empty = [table for table, (_, rows) in before.items() if not rows]
        assert not empty, f"the fixture should fill every table: {empty}"
        assert sum(len(rows) for _, rows in before.values()) > 150

        assert schema.upgrade() == schema.migration_names()
        assert schema.upgrade() == []  # nothing twice

        with database.connection_context():
            after = _rows()
            tables = set(database.get_tables())
            assert LEGACY not in tables
            history = [r[0] for r in database.execute_sql(f"SELECT name FROM {HISTORY}")]
            assert history == schema.migration_names()
            added_tables = (set(PROXY_TABLES) if version == 1 else set()) | ADDED_LATER
            assert set(after) == set(before) | added_tables
            for table, (columns, rows) in before.items():
                rows = [changed_later(table, row) for row in rows]
                kept = [{name: row[name] for name in columns} for row in after[table][1]]
                # later migrations may add seed rows (0002: the DNS hosting product type)
                added = [row for row in kept if row not in rows]
                assert [r for r in kept if r not in added] == rows, f"rows of {table} changed"
                assert [r.get("code") for r in added] == SEEDED_LATER.get(table, []), table
            for table in added_tables:
                assert after[table][1] == []
            if version < 3:  # the column version 3 added, with its default
                assert {row["redispatches"] for row in after["operation"][1]} == {0}
            # 0007_session_version: every login starts at version 0
            assert {row["session_version"] for row in after["user"][1]} == {0}
            _assert_matches_models(backend)

            # and it keeps working: new rows, new ids after the old ones
            from app.services import accounts, orders

            client = accounts.create_client({"name": "After", "email": "after@example.com"})
            tariff = models.Tariff.get(models.Tariff.internal_name == "vps-s")
            order = orders.create({"client_id": client.id, "tariff_id": tariff.id})
            assert order.id > max(row["id"] for row in before["order"][1])
            assert order.service.status == "ordered"


def test_tables_without_any_history_are_not_guessed(backend):
    app = _app(backend.url)
    with app.app_context():
        with database.connection_context():
            database.create_tables(APP_MODELS)
        with pytest.raises(schema.UpgradeError, match="0001_initial failed: .*refusing"):
            schema.upgrade()
        with database.connection_context():
            assert not models.ProductType.select().exists()
        with pytest.raises(schema.UpgradeError):
            schema.upgrade()  # and again: still nothing guessed


BROKEN = """
from peewee import BooleanField


def up(migrator, db):
    migrator.migrate(migrator.add_column("service", "broken_flag", BooleanField(default=False)))
    raise RuntimeError("the panel table is missing\\nsecond line")
"""


def test_a_failing_migration_is_one_line_and_rolled_back(backend, tmp_path, monkeypatch):
    app = _app(backend.url)
    with app.app_context():
        schema.upgrade()
        with database.connection_context():
            before = _rows()
    directory = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, directory)
    (directory / "9999_broken.py").write_text(BROKEN)
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", str(directory))
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["Error: migration 9999_broken failed: the panel table is missing"]
    with app.app_context(), database.connection_context():
        assert "broken_flag" not in {c.name for c in database.get_columns("service")}
        assert schema.pending() == ["9999_broken"]
        assert _rows() == before


def _provisor(url, *args):
    env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [f"{BIN}/provisor", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_upgrades_apply_everything_once(backend, tmp_path):
    """Three `provisor db upgrade` at once (as scaled deployments start several web
    processes): they wait for each other; one applies, the others find nothing to do."""
    if backend.kind == "sqlite":
        holder = sqlite3.connect(backend.url[len("sqlite:///") :], isolation_level=None)
        holder.execute("PRAGMA journal_mode=wal")
        holder.execute("BEGIN IMMEDIATE")  # what an upgrade in progress holds
    else:
        import psycopg2

        holder = psycopg2.connect(backend.url)
        holder.autocommit = True
        holder.cursor().execute("SELECT pg_advisory_lock(%s)", (schema.PG_LOCK_KEY,))
    procs = [_provisor(backend.url, "db", "upgrade") for _ in range(3)]
    try:
        if backend.kind == "sqlite":
            time.sleep(3)  # started, and waiting for the write lock
        else:

            def waiting():
                cur = holder.cursor()
                cur.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
                return cur.fetchone()[0] == 3

            wait_for(waiting, timeout=30, message="three upgrades waiting for the lock")
        assert [p.poll() for p in procs] == [None, None, None]
    finally:
        if backend.kind == "sqlite":
            holder.execute("ROLLBACK")
        holder.close()
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    outputs = sorted(out.strip() for out, _ in results)
    expected = "Schema upgraded: " + ", ".join(schema.migration_names()) + "."
    assert outputs == sorted([expected, "Schema is up to date.", "Schema is up to date."])
    app = _app(backend.url)
    with app.app_context(), database.connection_context():
        history = [r[0] for r in database.execute_sql(f"SELECT name FROM {HISTORY}")]
        assert history == schema.migration_names()
        assert models.ProductType.select().count() == len(PRODUCT_TYPES)


def test_an_unreachable_database_is_one_line():
    proc = _provisor("postgresql://postgres@127.0.0.1:1/nowhere", "db", "upgrade")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("Error: cannot upgrade the schema: ")
