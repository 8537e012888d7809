"""The database schema: frozen migrations in ``app/migrations``, run by peewee's
``playhouse.migrations.Runner`` and recorded in its ``schema_migration`` table.

``provisor db upgrade`` (and ``provisor serve`` when it starts) calls :func:`upgrade`.
Several processes may upgrade at once (scaled deployments start several): the run holds a
lock, so the second one waits and then finds nothing to do. On PostgreSQL the lock is an
advisory lock and each migration runs in its own transaction; on SQLite the whole run is
one ``BEGIN IMMEDIATE`` transaction, with foreign keys off meanwhile (SQLite rebuilds a
table to change a column; with them on, dropping the old copy would cascade) and checked
before it commits. README, "Schema changes", says how to add a migration.
"""

import logging
import os
import sys
import time
from contextlib import contextmanager

from peewee import DatabaseError, InterfaceError, OperationalError, SqliteDatabase
from playhouse.migrations import Migration, Runner

from app.db import database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
HISTORY_TABLE = "schema_migration"  # playhouse.migrations' default (pwmigrate uses it too)
PG_LOCK_KEY = 0x70726F76_6D696772  # "provmigr": the advisory lock of a schema upgrade
SQLITE_LOCK_WAIT = 600  # seconds to wait for another process's upgrade (or write) on SQLite


class UpgradeError(Exception):
    """The schema could not be upgraded; the message is one line for the operator."""


def migration_names():
    """The names of the migrations this release has, in order (``0001_initial``, ...)."""
    return [m.name for m in Migration.load_directory(MIGRATIONS_DIR)]


def _runner(db):
    return Runner(db, MIGRATIONS_DIR, table_name=HISTORY_TABLE)


def pending():
    """Names of the migrations not yet applied to the database."""
    with database.connection_context():
        return [m.name for m in _runner(database.obj).status() if not m.applied]


def upgrade():
    """Apply the pending migrations in order; return the names applied (``[]``: none).

    Raises :class:`UpgradeError` with a one-line message when a migration fails (that
    migration is rolled back; on SQLite the whole run is) or the database is unreachable.
    """
    db = database.obj
    try:
        with database.connection_context():
            lock = _sqlite_lock if isinstance(db, SqliteDatabase) else _postgres_lock
            with lock(db):
                return _apply(_runner(db))
    except UpgradeError:
        raise
    except (DatabaseError, InterfaceError) as exc:
        raise UpgradeError(f"cannot upgrade the schema: {_first_line(exc)}") from exc


def _apply(runner):
    status = runner.status()
    unknown = [m.name for m in status if m.path is None]
    if unknown:
        log.warning(
            "the database has migrations this release does not have (a newer release "
            "upgraded it?): %s",
            ", ".join(unknown),
        )
    applied = []
    for migration in status:
        if migration.applied or migration.path is None:
            continue
        try:
            applied += runner.up(target=migration.name)
        except Exception as exc:
            log.debug("migration %s failed", migration.name, exc_info=True)
            raise UpgradeError(f"migration {migration.name} failed: {_first_line(exc)}") from exc
        log.info("schema migration applied: %s", migration.name)
    return applied


@contextmanager
def _postgres_lock(db):
    (got,) = db.execute_sql("SELECT pg_try_advisory_lock(%s)", (PG_LOCK_KEY,)).fetchone()
    if not got:
        log.info("another process is upgrading the schema: waiting for it")
        db.execute_sql("SELECT pg_advisory_lock(%s)", (PG_LOCK_KEY,))
    try:
        yield
    finally:
        try:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (PG_LOCK_KEY,))
        except (DatabaseError, InterfaceError):
            # the connection is gone, and its session lock with it
            log.warning("could not release the schema upgrade lock", exc_info=True)


@contextmanager
def _sqlite_lock(db):
    foreign_keys = db.pragma("foreign_keys")
    db.pragma("foreign_keys", 0)  # only possible outside a transaction
    try:
        transaction = _begin_immediate(db)
        try:
            before = set(db.execute_sql("PRAGMA foreign_key_check").fetchall())
            yield
            broken = set(db.execute_sql("PRAGMA foreign_key_check").fetchall()) - before
            if broken:
                table, rowid, parent, _ = sorted(broken)[0]
                raise UpgradeError(
                    f"the upgrade would break {len(broken)} foreign keys (e.g. {table} "
                    f"row {rowid} -> {parent}); nothing was changed"
                )
        except BaseException:
            transaction.__exit__(*sys.exc_info())
            raise
        transaction.__exit__(None, None, None)
    finally:
        db.pragma("foreign_keys", foreign_keys)


def _begin_immediate(db):
    """BEGIN IMMEDIATE, waiting up to SQLITE_LOCK_WAIT for another writer to finish."""
    deadline = time.monotonic() + SQLITE_LOCK_WAIT
    while True:
        transaction = db.transaction(lock_type="IMMEDIATE")
        try:
            transaction.__enter__()
            return transaction
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            log.info("the database is locked (another upgrade?): waiting")


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
