"""The values of a prepared statement's EXECUTE written as SQL literals by Provisor
(``app.db._literals``) instead of by psycopg2's adapters: exactly the text the driver
makes of each of them, the same values stored and read back, and the driver left to bind
whatever is not written here (another type, a NUL character, a connection whose strings
are not standard-conforming or not UTF-8)."""

import datetime as dt
import random
import threading

import pytest

from app.db import _BEYOND_INT4, _literals, database, execute_statement, write_transaction
from app.models import Client

TRICKY_STRINGS = [
    "",
    "plain",
    "O'Brien",
    "''",
    "'",
    "\\",
    "\\'",
    "a\\'; DROP TABLE client; --",
    "E'\\x41'",
    "100%",
    "%s",
    "%(name)s",
    "%%",
    "$1",
    "$$ dollar $$",
    "-- a comment",
    "/* open",
    "line\nbreak\r\ttab",
    "naïve café ∑ 日本語 🙂",
    "\u2028\u2029",
    '"quoted identifier"',
    "; COMMIT; BEGIN",
]
NUMBERS = [0, 1, -1, 42, -42, 2**31 - 1, -(2**31)]
MOMENTS = [
    dt.datetime(2026, 12, 7, 21, 0),
    dt.datetime(2026, 12, 7, 21, 0, 0, 1),
    dt.datetime(2026, 12, 7, 21, 0, 59, 999999),
    dt.datetime(1, 1, 1),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
]


def _random_strings(count, seed=14):
    """Strings made of the characters that matter to a literal, and others, at random."""
    rng = random.Random(seed)
    alphabet = "'\\%$;-/*\"\n\r\t ()sEe0xé日🙂\u00a0"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(count)]


def _as_driver_writes(connection, value):
    with connection.cursor() as cursor:
        return cursor.mogrify("%s", (value,)).decode()


def test_the_literals_are_the_text_psycopg2_makes(pg_app):
    """Every value of a type written here comes out as the driver's own adapter writes it
    (``%`` doubled: the driver formats the statement text, with no parameters, and makes
    each ``%%`` one ``%``)."""
    values = [*TRICKY_STRINGS, *_random_strings(2000), *NUMBERS, *MOMENTS, True, False, None]
    with pg_app.app_context(), database.connection_context():
        connection = database.connection()
        for value in values:
            written = _literals(connection, [value])
            assert written is not None, value
            assert written.replace("%%", "%") == _as_driver_writes(connection, value), value
        assert _literals(connection, ["a", 1, None, True]) == "'a', 1, NULL, true"
        # beyond PostgreSQL's integer: the statement runs unprepared (finds no row)
        assert _literals(connection, ["a", 2**31]) is _BEYOND_INT4
        assert _literals(connection, [-(2**31) - 1]) is _BEYOND_INT4


def test_values_written_as_literals_round_trip(pg_app):
    """Through a prepared statement the server reads back exactly the values given, and a
    row saved with them stores them."""
    strings = [*TRICKY_STRINGS, *_random_strings(300, seed=7)]
    with pg_app.app_context(), database.connection_context():
        for value in strings:
            row = execute_statement("SELECT %s::text, length(%s::text)", (value, value)).fetchone()
            assert row == (value, len(value)), value
        for number in NUMBERS:
            assert execute_statement("SELECT %s::int - 0", (number,)).fetchone() == (number,)
        for moment in MOMENTS:
            got = execute_statement("SELECT %s::timestamp", (moment,)).fetchone()
            assert got == (moment,)
        got = execute_statement(
            "SELECT %s::boolean, %s::boolean, %s::text IS NULL", (True, False, None)
        ).fetchone()
        assert got == (True, False, True)
        with write_transaction():
            client = Client.create(name="x", email="literals@example.test")
        for value in TRICKY_STRINGS[1:]:
            client.name = value
            client.save()
            assert Client.get_by_id(client.id).name == value
            # what the server stored, read without the prepared statements
            stored = database.execute_sql("SELECT name FROM client WHERE id = %s", (client.id,))
            assert stored.fetchone() == (value,)


def test_the_driver_binds_what_is_not_written_here(pg_app):
    """Another type (a float), a NUL character (the driver's own refusal) and a
    connection whose strings are not standard-conforming: the driver adapts the values,
    and they round-trip as before."""
    with pg_app.app_context(), database.connection_context():
        connection = database.connection()
        assert _literals(connection, ["a", 1.5]) is None
        assert execute_statement("SELECT %s::text, %s::float8", ("a'b", 1.5)).fetchone() == (
            "a'b",
            1.5,
        )
        assert _literals(connection, ["a\x00b"]) is None
        with pytest.raises(ValueError, match="NUL"):
            execute_statement("SELECT %s::text", ("a\x00b",))
        database.execute_sql("SET standard_conforming_strings = off")
        try:
            assert _literals(connection, ["a\\b"]) is None
            got = execute_statement("SELECT %s::text", ("a\\'b",)).fetchone()
            assert got == ("a\\'b",)
        finally:
            database.execute_sql("RESET standard_conforming_strings")
        assert _literals(connection, ["a\\b"]) == "'a\\b'"


def test_an_activation_leaves_no_value_to_the_drivers_adapters(pg_api):
    """The worker's statements of an activation (the claim, the panel's, the result with
    its welcome email) go as ``EXECUTE name (<literals>)`` with nothing for the driver to
    bind: what the literals are for (psycopg2 spends ≈ 10,000 instructions adapting each
    value)."""
    import psycopg2.extensions

    main, seen = threading.get_ident(), []

    class Recording(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            if threading.get_ident() != main:  # the embedded worker's threads
                seen.append((query, vars))
            return super().execute(query, vars)

    database.obj.close_all()
    database.obj.connect_params["cursor_factory"] = Recording
    try:
        _, _, tariff, client = pg_api.catalog("sandbox")
        for _ in range(3):
            seen.clear()
            order = pg_api.order(client["id"], tariff["id"])
            paid = pg_api.ok("post", f"/orders/{order['id']}/pay")
            assert pg_api.wait_operation(paid["operation_id"])["status"] == "done"
        executes = [(query, vars) for query, vars in seen if "EXECUTE provisor_" in query]
        assert len(executes) >= 3, seen  # the claim, the panel's, the result
        for query, vars in executes:
            assert not vars and "%s" not in query, (query, vars)
    finally:
        database.obj.connect_params.pop("cursor_factory", None)
        database.obj.close_all()


def test_names_and_messages_from_the_server_are_decoded_by_the_c_codec(pg_app):
    """psycopg2 decodes column names, statuses and errors with the codec its encodings
    table names for UTF-8 (``app.db._utf8_in_c``): Python's UTF-8 functions themselves,
    no Python frame per name; the same text comes out, both ways."""
    import sys

    import psycopg2.extensions

    assert psycopg2.extensions.encodings["UTF8"] == "provisor_utf8"
    frames = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.endswith("utf_8.py"):
            frames.append(frame.f_code.co_name)

    with pg_app.app_context(), database.connection_context():
        connection = database.connection()
        assert connection.encoding == "UTF8"
        with connection.cursor() as cursor:
            sys.setprofile(watch)
            try:
                cursor.execute('SELECT 1 AS "naïve ∑ 日本語 🙂", %s AS "b"', ("O'Brien é",))
                row = cursor.fetchone()
                names = [column.name for column in cursor.description]
                status = cursor.statusmessage
            finally:
                sys.setprofile(None)
            assert names == ["naïve ∑ 日本語 🙂", "b"]
            assert row == (1, "O'Brien é") and status == "SELECT 1"
            with pytest.raises(Exception) as refused:
                cursor.execute('SELECT * FROM "no table ∑ 日本語"')
            assert 'relation "no table ∑ 日本語" does not exist' in str(refused.value)
        connection.rollback()
    assert frames == []  # no Python function decoded or encoded anything
