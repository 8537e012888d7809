"""PostgreSQL: ``provisor_expect(ok, message)``, true when ``ok`` is, else it raises
``message`` with SQLSTATE ``PV001`` (issue 14). The result of an attempt is written
without reading its operation again when nothing changed since the claim; the first
statement of its transaction checks that (``app.services.operations``), and a check that
fails must stop the transaction before its COMMIT, which goes in the same message: a
statement can only do that by raising. SQLite: nothing (its results read again, with no
round trip to save).

Frozen: no import of app.models.
"""

from peewee import SqliteDatabase

FUNCTION = """
CREATE OR REPLACE FUNCTION provisor_expect(ok boolean, message text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'PV001', MESSAGE = message;
    END IF;
    RETURN true;
END
$$
"""


def up(migrator, db):
    if not isinstance(db, SqliteDatabase):
        db.execute_sql(FUNCTION)


def down(migrator, db):
    if not isinstance(db, SqliteDatabase):
        db.execute_sql("DROP FUNCTION IF EXISTS provisor_expect(boolean, text)")
