"""The one deferred database of Provisor and its Flask wiring.

``database`` is a :class:`peewee.DatabaseProxy`; :func:`init_db` binds it to the URL in
the configuration (SQLite by default, PostgreSQL when ``DATABASE_URL`` says so).
Requests open a connection on first use and close it at teardown; workers do the same per
message (see ``actors.middleware``).
"""

import codecs
import datetime
import hashlib
import logging
import os
import select
import threading
import weakref
from contextlib import contextmanager

import peewee
from peewee import SQL, DatabaseProxy, NodeList, SqliteDatabase
from playhouse.db_url import connect, register_database
from playhouse.pool import PooledPostgresqlDatabase

log = logging.getLogger(__name__)


class _DatabaseProxy(DatabaseProxy):
    """peewee's proxy, with the database methods an activation calls most forwarded by
    name. peewee's own forwards every attribute through ``__getattr__``, which Python
    calls only once the attribute was not found — an ``AttributeError`` made and thrown
    away each time, ≈ 30 times per activation (from Provisor and from peewee's own
    transactions, which hold the proxy). Anything else still goes through
    ``__getattr__``. (No ``__slots__`` of its own: peewee's ``__setattr__`` allows the
    names in the class's ``__slots__``, which are then its parent's.)"""

    def connect(self, reuse_if_open=False):
        return self.obj.connect(reuse_if_open)

    def close(self):
        return self.obj.close()

    def is_closed(self):
        return self.obj.is_closed()

    def connection(self):
        return self.obj.connection()

    def execute_sql(self, sql, params=None):
        return self.obj.execute_sql(sql, params)

    def in_transaction(self):
        return self.obj.in_transaction()

    def transaction_depth(self):
        return self.obj.transaction_depth()

    def push_transaction(self, transaction):
        return self.obj.push_transaction(transaction)

    def pop_transaction(self):
        return self.obj.pop_transaction()

    def _run_commit_callbacks(self):
        return self.obj._run_commit_callbacks()

    def begin(self, *args, **kwargs):
        return self.obj.begin(*args, **kwargs)

    def commit(self):
        return self.obj.commit()

    def rollback(self):
        return self.obj.rollback()

    @property
    def quote(self):
        return self.obj.quote

    @property
    def param(self):
        return self.obj.param


database = _DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 15000,
    "foreign_keys": 1,
    "synchronous": "normal",
}


class PostgresqlPool(PooledPostgresqlDatabase):
    """peewee's pool of PostgreSQL connections, without its round trip per checkout.

    peewee asks the server ``SELECT 1`` each time it hands out an idle connection: two of
    an activation's round trips (its message and its welcome email's). A connection the
    server ended while it sat in the pool (a restart, ``pg_terminate_backend``, the server
    killed) has the server's notice or the socket's end waiting to be read: a poll of the
    socket with no wait sees it, and the connection is dropped as peewee drops one whose
    ``SELECT 1`` fails. An idle connection has nothing to read otherwise (Provisor does
    not LISTEN)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._waiting = threading.local()

    # Statements that wait to go with the next one, in the same message (one round trip):
    # a transaction's BEGIN ("BEGIN; <its first statement>": four of an activation's round
    # trips) and the writes whose result nobody reads (``execute_statement(later=True)``),
    # which go with the transaction's next statement or its COMMIT. The server runs them
    # in order before that statement; one that fails fails the message, and so the
    # transaction, which is rolled back as before. A transaction with nothing sent sends
    # neither BEGIN nor COMMIT.

    def _take_waiting(self):
        """The statements this thread's connection has waiting (taken: they go now), as
        ``(texts, params)``: their texts in order and all their parameters, in order."""
        conn, texts = getattr(self._waiting, "conn", None), getattr(self._waiting, "texts", None)
        params = getattr(self._waiting, "params", None)
        self._waiting.conn = self._waiting.texts = self._waiting.params = None
        return (texts, params) if texts and conn is self._state.conn else ([], [])

    def begin(self, isolation_level=None):
        if isolation_level is not None or self._isolation_level:
            return super().begin(isolation_level)
        self._waiting.conn = self.connection()  # opened now, as peewee's BEGIN would
        self._waiting.texts, self._waiting.params = ["BEGIN"], []

    def send_later(self, sql, params):
        """``sql`` with ``params`` goes to the server with this transaction's next
        statement or its COMMIT, in the same message: the texts are joined and their
        parameters put one after another, and the driver binds them all at once (peewee
        always has it bind, even no parameters, so every text's ``%%`` means what it
        meant alone)."""
        conn = self.connection()
        if getattr(self._waiting, "conn", None) is not conn or self._waiting.texts is None:
            self._waiting.conn, self._waiting.texts, self._waiting.params = conn, [], []
        self._waiting.texts.append(sql)
        self._waiting.params.extend(params)

    def execute_sql(self, sql, params=None):
        texts, waiting_params = self._take_waiting()
        if texts:
            sql = "; ".join([*texts, sql])
            params = [*waiting_params, *(params or ())]
        return super().execute_sql(sql, params)

    def commit(self):
        texts, params = self._take_waiting()
        if texts == ["BEGIN"]:
            return  # nothing was sent: nothing to commit
        if texts:
            super().execute_sql("; ".join([*texts, "COMMIT"]), params)
        else:
            super().commit()

    def rollback(self):
        texts, _ = self._take_waiting()
        if texts[:1] != ["BEGIN"]:  # else nothing was sent: the server has no transaction
            super().rollback()

    def _is_closed(self, conn):
        adapter = self._adapter
        if conn.closed:
            return True
        status = adapter.txn_status(conn)
        if status == adapter.txn_unknown:
            return True
        if status != adapter.txn_idle:  # as peewee: a transaction left open is rolled back
            try:
                adapter.rollback(conn)
            except Exception:
                return True
            return False
        try:
            poll = select.poll()
            poll.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poll.poll(0))
        except (OSError, ValueError):
            return True


register_database(PostgresqlPool, "provisor+postgresql+pool")


def make_database(url, pool_size=None):
    """Build a peewee database for ``url`` with Provisor's connection settings.

    ``pool_size``: PostgreSQL connections kept per process (default: the
    ``PROVISOR_DB_POOL_SIZE`` setting)."""
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        path = url[len("sqlite:///") :]
        directory = os.path.dirname(path)
        if directory:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                from app.config import SettingError

                raise SettingError(
                    f"DATABASE_URL: cannot create the folder {directory}: {exc.strerror or exc}"
                ) from None
    if url.startswith("sqlite"):
        return connect(url, pragmas=SQLITE_PRAGMAS)
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        _utf8_in_c()
        # a pool: a new PostgreSQL backend per request or message costs more than the work;
        # database.close() hands the connection back to the pool
        if pool_size is None:
            from app import config

            pool_size = config.read("DB_POOL_SIZE")
        return connect(
            f"provisor+postgresql+pool://{rest}",
            max_connections=pool_size,
            stale_timeout=300,
            timeout=30,
        )
    return connect(url)


_UTF8_CODEC = "provisor_utf8"


def _utf8_codec(name):
    """Python's UTF-8 codec as its two C functions (a codec search function)."""
    if name == _UTF8_CODEC:
        return codecs.CodecInfo(codecs.utf_8_encode, codecs.utf_8_decode, name=_UTF8_CODEC)
    return None


def _utf8_in_c():
    """psycopg2 turns what the server names — every column of every result, the
    command's status, a notice or an error — into ``str`` by calling the connection's
    codec, and the SQL text into bytes the same way; for UTF-8 that is
    ``encodings.utf_8.decode``, a Python function around ``codecs.utf_8_decode``:
    ≈ 100 Python calls per activation. Its encodings table
    (``psycopg2.extensions.encodings``, PostgreSQL's name → Python's) is pointed at a
    codec of those C functions themselves. The same bytes give the same text; the one
    difference, a UTF-8 sequence cut at the end of the bytes (decoded without
    ``final``), does not come from a server whose client encoding is UTF-8. The values
    in rows were never decoded this way (psycopg2 decodes them in C already)."""
    import psycopg2.extensions

    if psycopg2.extensions.encodings.get("UTF8") != _UTF8_CODEC:
        codecs.register(_utf8_codec)
        psycopg2.extensions.encodings["UTF8"] = _UTF8_CODEC


def init_db(url, pool_size=None, prepared=None):
    """Bind the deferred database to ``url`` (once per process or test). ``prepared``:
    whether PostgreSQL runs the hot statements prepared (default: the
    ``PROVISOR_DB_PREPARED_STATEMENTS`` setting)."""
    if prepared is None:
        from app import config

        prepared = config.read("DB_PREPARED_STATEMENTS")
    _options["prepared"] = prepared
    if database.obj is not None:
        if not database.is_closed():
            database.close()
        if hasattr(database.obj, "close_all"):
            database.obj.close_all()
    database.initialize(make_database(url, pool_size))
    return database


def is_sqlite():
    return isinstance(database.obj, SqliteDatabase)


def keep_connection():
    """This thread (a worker thread) keeps an SQLite connection between its messages:
    opening one costs a file open and four PRAGMAs, about as much as a whole no-op
    message, and an idle one holds nothing (no transaction is open between messages).
    PostgreSQL connections go back to the pool instead; an in-memory SQLite database
    lives and dies with its connection, so it is not kept either."""
    _local.keeps = True


def release():
    """The end of a request or a message: close this thread's connection (back to the
    pool on PostgreSQL), unless it is kept (:func:`keep_connection`)."""
    if database.is_closed():
        return
    if (
        getattr(_local, "keeps", False)
        and is_sqlite()
        and database.obj.database != ":memory:"
        and not database.in_transaction()
    ):
        return
    database.close()


_local = threading.local()


@contextmanager
def write_transaction():
    """A transaction meant to write; :func:`after_commit` callbacks run once it commits.

    On SQLite it takes the write lock at once (BEGIN IMMEDIATE): a deferred transaction
    that reads and then writes can fail with "database is locked" when another thread
    writes meanwhile, while an immediate one waits for the lock (``busy_timeout``).
    """
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        _local.callbacks = []
        _local.memo = {}
    _local.depth = depth + 1
    try:
        if depth == 0 and is_sqlite() and not database.in_transaction():
            block = database.atomic(lock_type="IMMEDIATE")
        else:
            block = database.atomic()
        with block:
            yield
    except BaseException:
        if depth == 0:
            _local.callbacks = []
        raise
    finally:
        _local.depth = depth
        if depth == 0:
            _local.memo = {}
    if depth == 0:
        callbacks, _local.callbacks = _local.callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                log.exception("after-commit callback failed")


def is_pooled():
    """Whether connections come from a pool (PostgreSQL: ``PROVISOR_DB_POOL_SIZE`` per
    process), so that a thread holding one keeps it from every other thread."""
    return hasattr(database.obj, "close_all")


def release_connection():
    """Hand this thread's pooled connection back (a thread about to wait on something else,
    e.g. a module's call to its panel, holds none meanwhile); the next query takes one
    again. Does nothing inside a transaction, on SQLite (a connection per thread, no
    pool), or when no connection is open."""
    if is_pooled() and not database.is_closed() and not database.in_transaction():
        database.close()


def get_for_update(model, pk):
    """``model`` row ``pk`` locked until the transaction ends (FOR UPDATE on PostgreSQL;
    SQLite's write transactions are serialised already). None if there is no such row."""
    return model.fetch_by_id(pk, lock=True)


# --- statements whose SQL text is generated once ----------------------------------------
#
# peewee builds the SQL text of a query from its expression tree every time it runs it:
# for a row read or saved by its id that is 5-8 times the cost of running the statement
# (bench/README.md, issue 14). The statements below have a text that depends only on the
# dialect and on which columns they name, so it is made once and only the values are
# bound each time (converted by each field's ``db_value`` / ``python_value``, as peewee
# does).

_texts = {}


def statement_text(key, build):
    """The SQL text ``build()`` makes, generated once per dialect (the database class)
    and ``key``."""
    full_key = (type(database.obj), key)
    text = _texts.get(full_key)
    if text is None:
        text = _texts[full_key] = build()
    return text


def execute_statement(text, params, later=False):
    """Run ``text`` (one of the statements above, made once) with ``params``.

    On PostgreSQL it runs as a prepared statement of this connection (``PREPARE`` the
    first time a connection runs it, then ``EXECUTE``): PostgreSQL then parses and plans
    it once per connection instead of every time (planning the attempt's 7-table SELECT
    took 0.5 ms, ten times running it). SQLite's driver keeps its statements prepared
    already. The EXECUTE's values are written as SQL literals here (:func:`_literals`:
    the text psycopg2's adapters make of them, at a tenth of the cost: psycopg2 spends
    ≈ 10,000 instructions on each value it adapts, 81 of them in an activation); the
    driver binds those of other types.

    ``later``: nobody reads the statement's result (returns None). On PostgreSQL inside
    a transaction it goes to the server with the transaction's next statement or its
    COMMIT, in the same round trip (:class:`PostgresqlPool`); if it fails, that
    statement's call raises its error and the transaction is rolled back. Only for a write
    whose failure ends the transaction anyway (no savepoint or ``except`` around it)."""
    if is_sqlite() or not _options["prepared"]:
        return _run(text, params, later)
    named = _prepared_names.get(text)
    if named is None:
        named = _prepared_names[text] = _name_statement(text)
    if named is False:  # a text this cannot prepare: as it is
        return _run(text, params, later)
    name, prepare, execute = named
    connection = database.connection()
    literals = _literals(connection, params) if params else None
    if literals is _BEYOND_INT4 or (
        literals is None and any(type(p) is int and not _INT4_MIN <= p <= _INT4_MAX for p in params)
    ):
        # a number beyond PostgreSQL's integer (an id from outside, 2^63 - 1 at most):
        # the prepared form would refuse it as "out of range" for its integer column,
        # where the statement as text compares it and finds no row
        return _run(text, params, later)
    prepared = _prepared_on.get(connection)
    if prepared is None:
        prepared = _prepared_on[connection] = set()
    if name not in prepared:
        database.execute_sql(prepare)
        prepared.add(name)
    if literals is None:
        return _run(execute, params, later)
    return _run(f"EXECUTE {name} ({literals})", (), later)


def _run(sql, params, later):
    obj = database.obj
    if later and isinstance(obj, PostgresqlPool) and obj.in_transaction():
        obj.send_later(sql, params)
        return None
    cursor = database.execute_sql(sql, params)
    return None if later else cursor


def _literals(connection, params):
    """``params`` written as the SQL literals psycopg2 would make of them, joined with
    ``", "`` (and ``%`` doubled: the driver still formats the text, with no parameters),
    or None when one of them is not of a type written here or the connection does not
    allow it — then the driver binds them itself; ``_BEYOND_INT4`` for a number beyond
    PostgreSQL's integer (the statement then runs unprepared: see
    :func:`execute_statement`)."""
    if (
        connection.encoding != "UTF8"
        or connection.get_parameter_status("standard_conforming_strings") != "on"
    ):
        return None
    parts = []
    for value in params:
        kind = type(value)
        if kind is str:
            if "\x00" in value:
                return None  # the driver refuses it, with its own message
            parts.append("'" + value.replace("'", "''").replace("%", "%%") + "'")
        elif kind is int:
            if not _INT4_MIN <= value <= _INT4_MAX:
                return _BEYOND_INT4
            parts.append(str(value) if value >= 0 else f" {value}")
        elif value is None:
            parts.append("NULL")
        elif kind is datetime.datetime and value.tzinfo is None:
            text = _timestamps.get(value)
            parts.append(_timestamp_literal(value) if text is None else text)
        elif kind is bool:
            parts.append("true" if value else "false")
        else:
            return None
    return ", ".join(parts)


def _timestamp_literal(value):
    """The literal of a naive datetime, kept for the next statements that bind the same
    moment: an attempt binds 13 datetimes, 8 of them distinct (the result's ``now`` is
    the operation's, the attempt's, the service's and the email's time), and
    ``datetime.isoformat`` is ≈ 7,000 instructions a call. At most 256 are kept (the
    moments of the statements in flight); equal datetimes have the same text."""
    if len(_timestamps) >= 256:
        _timestamps.clear()
    text = _timestamps[value] = f"'{value.isoformat()}'::timestamp"
    return text


_timestamps = {}
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1
_BEYOND_INT4 = object()
_options = {"prepared": True}
_prepared_names = {}
_prepared_on = weakref.WeakKeyDictionary()  # a driver connection -> the names it prepared


def _name_statement(text):
    """``(name, PREPARE text, EXECUTE text)`` for ``text`` with ``%s`` placeholders, or
    False when it holds another ``%`` (kept out of the prepared form: it would need
    unescaping)."""
    if "%" in text.replace("%s", ""):
        return False
    count = text.count("%s")
    numbered = text
    for number in range(1, count + 1):
        numbered = numbered.replace("%s", f"${number}", 1)
    name = "provisor_" + hashlib.sha1(text.encode()).hexdigest()[:20]
    arguments = f" ({', '.join(['%s'] * count)})" if count else ""
    return name, f"PREPARE {name} AS {numbered}", f"EXECUTE {name}{arguments}"


def _quote(name):
    """An identifier in the dialect's quotes (peewee's ``Database.quote``: the pair of
    characters, ``""`` on SQLite and PostgreSQL)."""
    begin, end = database.quote
    return f"{begin}{name.replace(end, end + end)}{end}"


def _quoted_table(model):
    return _quote(model._meta.table_name)


def select_by_id_text(model, lock):
    """``SELECT <every column> FROM <table> WHERE <id> = ?`` (``FOR UPDATE`` if ``lock``)."""
    fields = model._meta.sorted_fields
    columns = ", ".join(_quote(f.column_name) for f in fields)
    pk = _quote(model._meta.primary_key.column_name)
    text = f"SELECT {columns} FROM {_quoted_table(model)} WHERE {pk} = {database.param}"
    return text + (" FOR UPDATE" if lock else "")


def update_by_id_text(model, names):
    """``UPDATE <table> SET <column> = ?, ... WHERE <id> = ?`` for the fields ``names``."""
    fields = model._meta.fields
    sets = ", ".join(f"{_quote(fields[n].column_name)} = {database.param}" for n in names)
    pk = _quote(model._meta.primary_key.column_name)
    return f"UPDATE {_quoted_table(model)} SET {sets} WHERE {pk} = {database.param}"


def insert_text(model, names, returning=True):
    """``INSERT INTO <table> (<columns>) VALUES (?, ...)``, returning the new id on
    PostgreSQL unless ``returning`` is false (SQLite gives it as the cursor's
    ``lastrowid``)."""
    fields = model._meta.fields
    columns = ", ".join(_quote(fields[n].column_name) for n in names)
    values = ", ".join([database.param] * len(names))
    text = f"INSERT INTO {_quoted_table(model)} ({columns}) VALUES ({values})"
    if returning and not is_sqlite():
        text += f" RETURNING {_quote(model._meta.primary_key.column_name)}"
    return text


def next_id_column(model, alias):
    """A select-list column (PostgreSQL) with the id the next row of ``model`` will have,
    taken from its sequence once per statement (a scalar subquery), named ``alias``: a
    transaction that reads it inserts that row with its id and needs no ``RETURNING``, so
    the INSERT can go with the COMMIT. An id taken and not used leaves a gap."""
    sequence = f"pg_get_serial_sequence('{model._meta.table_name}', 'id')"
    return SQL(f"(SELECT nextval({sequence}))").alias(alias)


def unindexed(field):
    """``field`` as an expression no index serves (``field || ''``), for a condition that
    only checks the row a statement finds by its primary key (``WHERE id = ? AND status =
    ?``). PostgreSQL plans a prepared statement once for any values (its generic plan);
    made while a table has no statistics yet (a new install, before autovacuum's first
    ANALYZE), that plan picked the status index over the primary key and read every row
    of that status: the claim read all queued operations, the payment all unpaid orders
    (bench.activation: 1,100 index entries per statement). For text columns."""
    return NodeList((field, SQL("|| ''")))


def cached_write(key, build, params, later=False):
    """Run the peewee write query (UPDATE, DELETE) that ``build()`` returns with its SQL
    text generated once per dialect and ``key`` (``build`` returns ``(query,
    placeholders)``, as for :func:`cached_query_rows`; the values must be given as each
    column's ``db_value`` would make them); returns the rows changed. ``later``: as for
    :func:`execute_statement` (returns None)."""
    _, text = _built_once(key, build)
    cursor = execute_statement(text, params, later=later)
    return None if later else cursor.rowcount


def _built_once(key, build):
    """``(query, SQL text)`` of ``build()``, made once per dialect and ``key``; the query's
    parameters must be exactly the placeholders ``build`` says it used, in order."""
    full_key = (type(database.obj), key)
    cached = _queries.get(full_key)
    if cached is None:
        query, placeholders = build()
        text, found = query.sql()
        if list(found) != list(placeholders):
            raise RuntimeError(f"{key}: the query's parameters are {found}, not {placeholders}")
        cached = _queries[full_key] = (query, text)
    return cached


def prepared_text(name):
    """The statement text a prepared statement's ``name`` stands for (None: unknown);
    for instruments that report statements by their text."""
    for text, named in list(_prepared_names.items()):
        if named and named[0] == name:
            return text
    return None


_queries = {}


def cached_query_rows(key, build, params):
    """The rows of the peewee query ``build()`` returns, as peewee makes them (model
    instances with their joined rows), with its SQL text generated once per dialect and
    ``key``: ``build()`` is given no values, so its query is built with placeholders —
    ``build`` returns ``(query, placeholders)`` and the placeholders must be exactly the
    parameters peewee finds in it, in order; ``params`` are bound in their place."""
    query, text = _built_once(key, build)
    cursor = execute_statement(text, params)
    full_key = (type(database.obj), key)
    layout = _layouts.get(full_key)
    if isinstance(layout, _RowMaker):
        return layout.rows(cursor.fetchall())
    wrapper = query._get_cursor_wrapper(cursor)
    if layout is not None:
        wrapper.__dict__.update(layout)
        wrapper.initialized = True
        return list(wrapper)
    fresh = set(wrapper.__dict__)
    rows = list(wrapper)
    if wrapper.initialized:
        # what peewee worked out from the first row's columns (which row instance each
        # column goes to, its converter, how the joined instances link): the same for
        # every run of this text, and only read when rows are made; working it out again
        # for every SELECT was 14 % of a worker's CPU
        layout = {k: v for k, v in wrapper.__dict__.items() if k not in fresh}
        _layouts[full_key] = _RowMaker.of(wrapper) or layout
    return rows


_layouts = {}


class _RowMaker:
    """The rows of a joined model SELECT made as peewee's ``ModelCursorWrapper.process_row``
    makes them — each selected model's instance, its columns converted by the same
    converters, the joined instances linked by the same rules — from the layout peewee
    worked out for the first row, with each field's value put straight into the
    instance's data instead of through one attribute assignment per column (5 % of an
    attempt's instructions, 9 % of a payment's: bench/README.md, issue 14, eleventh pass).
    A column that is not a plain field (a computed value, a foreign key's id under
    another name than peewee's own) is still assigned as peewee assigns it."""

    __slots__ = ("_models", "_root", "_columns", "_assigned", "_links", "_reachable")

    @classmethod
    def of(cls, wrapper):
        """The maker for the rows ``wrapper`` made (None: a kind of rows it does not make;
        peewee goes on making them)."""
        if type(wrapper) is not peewee.ModelCursorWrapper:
            return None
        if not all(is_model for _, _, is_model in wrapper._constructor_list):
            return None
        keys = [key for key, _, _ in wrapper._constructor_list]
        models = [model for _, model, _ in wrapper._constructor_list]
        if any(model.__init__ is not peewee.Model.__init__ for model in models):
            return None  # a model that does more when it is made: made by peewee
        maker = cls()
        maker._models = models
        maker._root = keys.index(wrapper.model)
        maker._columns, maker._assigned = [], []
        for index, key, column, converter in wrapper._row_spec:
            slot = keys.index(key) if key in keys else maker._root
            accessor = _class_attribute(models[slot], column)
            kept = kept_as_they_are(converter)
            if type(accessor) is peewee.FieldAccessor:
                maker._columns.append((index, slot, accessor.name, converter or _same, kept))
                continue
            if type(accessor) is peewee.ObjectIdAccessor and isinstance(  # a key's id
                _class_attribute(models[slot], accessor.field.name), peewee.ForeignKeyAccessor
            ):
                maker._columns.append((index, slot, accessor.field.name, converter or _same, kept))
                continue
            maker._assigned.append((index, slot, column, converter))
        maker._links = [
            (keys.index(src), attr, keys.index(dest), is_outer, is_fk)
            for src, attr, dest, is_dict, is_outer, is_fk in wrapper.src_to_dest
            if not is_dict
        ]
        if len(maker._links) != len(wrapper.src_to_dest):
            return None
        maker._reachable = {
            keys.index(dest): {keys.index(k) for k in reachable if k in keys}
            for dest, reachable in wrapper._dest_reachable.items()
            if dest in keys
        }
        return maker

    def rows(self, values):
        """The instances (of the root model, the others linked from it) of ``values``, the
        rows as the cursor gave them."""
        return [self._row(row) for row in values]

    def _row(self, row):
        instances = []
        for model in self._models:
            instance = model.__new__(model)
            instance.__data__, instance._dirty, instance.__rel__ = {}, set(), {}
            instances.append(instance)
        datas = [instance.__data__ for instance in instances]
        filled = set()
        for index, slot, name, converter, kept in self._columns:
            value = row[index]
            if value is not None:
                filled.add(slot)
            datas[slot][name] = value if type(value) in kept else converter(value)
        for index, slot, column, converter in self._assigned:
            value = row[index]
            if value is not None:
                filled.add(slot)
            setattr(instances[slot], column, value if converter is None else converter(value))
        for src, attr, dest, is_outer, is_fk in self._links:
            joined = instances[dest]
            reachable = self._reachable.get(dest)
            if dest not in filled and not (reachable and reachable & filled):
                if not is_outer:
                    continue
                joined = None
            if src not in filled and dest not in filled and is_outer:
                continue
            if joined is None and is_fk:
                instances[src].__rel__[attr] = None  # as peewee: known absent, id kept
            else:
                setattr(instances[src], attr, joined)
        for instance in instances:
            instance._dirty.clear()
        return instances[self._root]


def _same(value):
    return value


def kept_as_they_are(converter):
    """The types of value that ``converter`` — the ``python_value`` of a peewee field of a
    plain type, the driver's value in — gives back unchanged (it need not be called for
    them): None and, for a text field, a ``str``; for an integer or a foreign key to one,
    an ``int``; for a date and time, a ``datetime``; for a boolean, a ``bool``. None of
    them for a field of another type or of a subclass (its own conversion)."""
    field = getattr(converter, "__self__", None)
    python_value = getattr(type(field), "python_value", None)  # a field's, if it is one
    if field is None or getattr(converter, "__func__", None) is not python_value:
        return ()
    if type(field) is peewee.ForeignKeyField:
        field = field.rel_field
        if type(field).python_value is not peewee.Field.python_value:
            return ()
    kept = _KEPT_TYPES.get(type(field))
    return () if kept is None else (type(None), kept)


# peewee's plain field classes and the type of value each gives back unchanged
_KEPT_TYPES = {
    peewee.CharField: str,
    peewee.TextField: str,
    peewee.IntegerField: int,
    peewee.BigIntegerField: int,
    peewee.AutoField: int,
    peewee.BigAutoField: int,
    peewee.BooleanField: bool,
    peewee.DateTimeField: datetime.datetime,
}


def _class_attribute(cls, name):
    """``name``'s attribute in ``cls`` or its bases, as stored (a descriptor itself)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


# --- what a transaction reads once, and what runs after it commits ----------------------


def once_per_transaction(key, load):
    """``load()``, read once per outermost :func:`write_transaction` and reused by the
    rest of it (a value several state changes of one transaction need, such as the
    enabled webhook endpoints); outside one, ``load()`` every time. Whoever changes what
    ``load`` reads calls :func:`forget` in the same transaction."""
    if getattr(_local, "depth", 0) == 0:
        return load()
    memo = _local.memo
    if key not in memo:
        memo[key] = load()
    return memo[key]


def remember(key, value):
    """What :func:`once_per_transaction` returns for ``key`` for the rest of this
    transaction, known already (read as part of another statement); nothing outside one."""
    if getattr(_local, "depth", 0) > 0:
        _local.memo[key] = value


def forget(key):
    """The value of ``key`` is read again by the next :func:`once_per_transaction`."""
    memo = getattr(_local, "memo", None)
    if memo:
        memo.pop(key, None)


def after_commit(fn):
    """Run ``fn`` once the outermost :func:`write_transaction` commits (now if none)."""
    if getattr(_local, "depth", 0) > 0:
        _local.callbacks.append(fn)
    else:
        fn()


# endpoints that use the database on their own terms (the health check reports a database
# that does not answer instead of failing on the way in)
OWN_CONNECTION = {"api.health", "metrics.metrics", "static"}


def init_app(app):
    """Wire the database into a Flask app: connect per request, close at teardown."""
    from flask import request

    init_db(
        app.config["DATABASE_URL"],
        app.config.get("DB_POOL_SIZE"),
        app.config.get("DB_PREPARED_STATEMENTS"),
    )

    @app.before_request
    def _connect():
        if request.endpoint not in OWN_CONNECTION:
            database.connect(reuse_if_open=True)

    @app.teardown_appcontext
    def _close(exc):
        release()
