"""Provisor's data model (peewee).

The database is the source of truth: broker messages only wake work up. Every state
change of a service, operation or task is written here inside a transaction by the
services layer (``app/services``).
"""

import datetime as dt
import json
import time

from flask_login import UserMixin
from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    DecimalField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from app import db, messages, states
from app.db import database


def utcnow():
    """Naive UTC now: what every DateTimeField of Provisor stores. Made as the epoch plus
    the system clock's microseconds, the clock ``datetime.now`` reads: the same value at
    a third of the cost of ``datetime.now(UTC).replace(tzinfo=None)`` (``replace`` parses
    its keywords; ≈ 10 calls per activation)."""
    return _EPOCH + dt.timedelta(0, 0, time.time_ns() // 1000)


_EPOCH = dt.datetime(1970, 1, 1)


# one encoder and one decoder, made once (``json.dumps`` with an option makes an encoder
# per call) and used by every thread (neither keeps anything between calls)
_json_text = json.JSONEncoder(sort_keys=True).encode
_json_value = json.JSONDecoder().decode


class JSONField(TextField):
    """JSON stored as text, so SQLite and PostgreSQL behave alike: the text of
    ``json.dumps(value, sort_keys=True)``, read back by ``json.loads``."""

    def db_value(self, value):
        if value is None:
            return None
        if type(value) is dict and not value:
            return "{}"  # the default of most of them
        return _json_text(value)

    def python_value(self, value):
        if value is None:
            return None
        if value == "{}":
            return {}
        return _json_value(value) if type(value) is str else json.loads(value)


MAX_ID = 2**63 - 1

# per model: its fields' names, converters and the values each keeps as they are (from_row)
_from_row_plans = {}


def parse_id(value):
    """A database id from user input (an int or ASCII digits, 1..2^63-1), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            return None
        value = int(text)
    if not isinstance(value, int):
        return None
    return value if 0 < value <= MAX_ID else None


MAX_SEARCH = 200
"""The longest search text of the lists (SQLite refuses LIKE patterns over 50,000 bytes)."""


def search_term(search):
    """The text to look for from a list's ``q`` (stripped; None when empty); a
    :class:`~app.services.errors.ValidationError` on ``q`` when it is too long."""
    from app.services.errors import ValidationError

    term = str(search or "").strip()
    if len(term) > MAX_SEARCH:
        raise ValidationError({"q": f"At most {MAX_SEARCH} characters."})
    return term or None


def sorted_by(query, columns, key, descending, tiebreak):
    """``query`` ordered by ``columns[key]`` (a column or a list of them: the caller
    checked ``key``), then by ``tiebreak`` (a unique column) the same way, so that equal
    values keep one order from page to page; NULLs last."""
    fields = columns[key]
    fields = fields if isinstance(fields, (list, tuple)) else [fields]
    nulls = "LAST"
    ordering = [f.desc(nulls=nulls) if descending else f.asc(nulls=nulls) for f in fields]
    ordering.append(tiebreak.desc() if descending else tiebreak.asc())
    return query.order_by(*ordering)


class BaseModel(Model):
    """Every model. Reading a row by its id and saving or creating a row use SQL text
    generated once per dialect and set of columns (``app.db.statement_text``), not
    rebuilt by peewee each time; what they do is peewee's own (``save`` returns the rows
    changed, the new id is set, defaults are applied, values go through each field's
    ``db_value`` and come back through its ``python_value``)."""

    class Meta:
        database = database
        legacy_table_names = False

    @classmethod
    def get_or_none_by_id(cls, pk):
        """The row with this id, or None (also for ids that are not ids at all)."""
        pk = parse_id(pk)
        return None if pk is None else cls.fetch_by_id(pk)

    @classmethod
    def get_by_id(cls, pk):
        """The row with this id; ``DoesNotExist`` if there is none (peewee's contract)."""
        row = cls.fetch_by_id(pk)
        if row is None:
            raise cls.DoesNotExist(f"{cls.__name__} instance matching query does not exist: {pk}")
        return row

    @classmethod
    def fetch_by_id(cls, pk, lock=False):
        """The row with this id, or None; ``lock``: FOR UPDATE on PostgreSQL (SQLite's write
        transactions are serialised already)."""
        meta = cls._meta
        if meta.primary_key is False or meta.composite_key:
            query = cls.select().where(meta.primary_key == pk)
            return (query.for_update() if lock and not db.is_sqlite() else query).first()
        lock = lock and not db.is_sqlite()
        text = db.statement_text((cls, "by_id", lock), lambda: db.select_by_id_text(cls, lock))
        row = db.execute_statement(text, (meta.primary_key.db_value(pk),)).fetchone()
        return None if row is None else cls.from_row(row)

    @classmethod
    def from_row(cls, values):
        """The row whose columns are ``values`` (every column, in the order of
        ``_meta.sorted_fields``, as the database gives them), each converted as peewee
        converts it; nothing to save."""
        instance = cls(__no_default__=1)
        plan = _from_row_plans.get(cls)
        if plan is None:
            plan = _from_row_plans[cls] = [
                (f.name, f.python_value, db.kept_as_they_are(f.python_value))
                for f in cls._meta.sorted_fields
            ]
        instance.__data__.update(
            (name, value if type(value) in kept else convert(value))
            for (name, convert, kept), value in zip(plan, values, strict=True)
        )
        instance._dirty.clear()
        return instance

    def save(self, force_insert=False, only=None, later=False):
        """peewee's ``save`` (an UPDATE of the row by its id, or an INSERT that sets the new
        id), with the statement's text made once per set of columns. ``later``: the UPDATE
        of a row known to be there, whose count nobody reads, may go to the server with
        the transaction's next statement (``app.db.execute_statement``); returns None. An
        INSERT with ``later`` on PostgreSQL goes the same way and leaves the new row's id
        unknown (``None`` here): for a row nobody refers to in this transaction."""
        meta = self._meta
        pk_field = meta.primary_key
        if pk_field is False or meta.composite_key or meta.only_save_dirty:
            return super().save(force_insert=force_insert, only=only)
        if self._pk is not None and not force_insert:
            text, params, names = self._update_by_id(only)
            cursor = db.execute_statement(text, params, later=later)
            self._dirty -= set(names)
            return None if later else cursor.rowcount
        if not meta.auto_increment:
            return super().save(force_insert=force_insert, only=only)
        data = self._data_to_save(only)
        pk_value = self._pk
        if pk_value is None:
            data.pop(pk_field.name, None)
        for field, default in meta.defaults.items():
            if field.name not in data and field.name != pk_field.name:
                data[field.name] = default() if callable(default) else default
        names = tuple(data)
        model, fields = type(self), meta.fields
        params = [fields[name].db_value(data[name]) for name in names]
        if later and not db.is_sqlite():
            # nobody reads the new id: the INSERT goes with the transaction's next
            # statement (or its COMMIT) and the row's id stays unknown here
            key = (model, "insert_later", names)
            text = db.statement_text(key, lambda: db.insert_text(model, names, returning=False))
            db.execute_statement(text, params, later=True)
            self._dirty -= set(data)
            return None
        text = db.statement_text((model, "insert", names), lambda: db.insert_text(model, names))
        cursor = db.execute_statement(text, params)
        new_id = cursor.lastrowid if db.is_sqlite() else cursor.fetchone()[0]
        if pk_value is None and new_id is not None:
            self._pk = new_id
            self._dirty.discard(pk_field.name)
        self._dirty -= set(data)
        return 1

    def _data_to_save(self, only):
        data = dict(self.__data__)
        if only is not None:
            wanted = {f if isinstance(f, str) else f.name for f in only}
            data = {name: value for name, value in data.items() if name in wanted}
        self._populate_unsaved_relations(data)
        return data

    def _update_by_id(self, only):
        """``(SQL text, parameters, field names)`` of the UPDATE by id that ``save(only=
        only)`` runs for this row."""
        data = self._data_to_save(only)
        pk_field = self._meta.primary_key
        data.pop(pk_field.name, None)
        if not data:
            raise ValueError("no data to save!")
        names = tuple(data)
        model, fields = type(self), self._meta.fields
        text = db.statement_text(
            (model, "update", names), lambda: db.update_by_id_text(model, names)
        )
        params = [fields[name].db_value(data[name]) for name in names]
        params.append(pk_field.db_value(self._pk))
        return text, params, names


def save_together(first, first_only, second, later=False):
    """``first.save(only=first_only)`` then ``second.save()`` — two rows already stored,
    of different tables — in one statement on PostgreSQL (the first UPDATE as a
    data-modifying ``WITH``: both run, in the same transaction, on one snapshot); one
    after the other on SQLite. Returns the rows the second changed (None with ``later``:
    see ``BaseModel.save``)."""
    simple = (
        db.is_sqlite()
        or type(first) is type(second)
        or any(
            m._meta.primary_key is False or m._meta.composite_key or m._meta.only_save_dirty
            for m in (type(first), type(second))
        )
        or first._pk is None
        or second._pk is None
    )
    if simple:
        first.save(only=first_only, later=later)
        return second.save(later=later)
    text1, params1, names1 = first._update_by_id(first_only)
    text2, params2, names2 = second._update_by_id(None)
    key = (type(first), names1, type(second), names2)
    text = db.statement_text(("together", key), lambda: f'WITH "saved_first" AS ({text1}) {text2}')
    cursor = db.execute_statement(text, [*params1, *params2], later=later)
    first._dirty -= set(names1)
    second._dirty -= set(names2)
    return None if later else cursor.rowcount


# --- people -----------------------------------------------------------------------------


class Client(BaseModel):
    # the languages of the client area and of clients' emails (catalogs in translations/)
    LANGUAGES = ("en", "ru")

    name = CharField()
    email = CharField(unique=True)
    created_at = DateTimeField(default=utcnow)
    # a reseller paying on account: its orders through /api/v1/reseller are paid at once
    on_account = BooleanField(default=False)
    # contact details staff keep on the client's record (empty: not known)
    phone = CharField(default="")
    company = CharField(default="")
    address = TextField(default="")
    country = CharField(default="")  # ISO 3166 alpha-2, upper case
    # the language of the client area and of the client's emails (app.i18n.LANGUAGES)
    language = CharField(default="en")


class User(BaseModel, UserMixin):
    """A login. flask-login's protocol comes from ``UserMixin`` (after ``BaseModel``, so
    equality and hashing stay peewee's, by primary key); ``is_active`` is the column.

    ``session_version`` is stamped into every page session at login; raising it (logout,
    a new password) ends every session made before (``app.auth``)."""

    ROLES = ("admin", "staff", "client")

    email = CharField(unique=True)
    name = CharField()
    password_hash = CharField(null=True)
    role = CharField(default="staff", index=True)
    client = ForeignKeyField(Client, null=True, backref="users", on_delete="CASCADE")
    is_active = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)
    session_version = IntegerField(default=0)

    get_id = UserMixin.get_id  # flask-login's (the id as text), not peewee's Model.get_id

    @property
    def is_admin(self):
        return self.role == "admin"

    @property
    def is_staff(self):
        return self.role in ("admin", "staff")


class ClientNote(BaseModel):
    """What staff note on a client's record (who wrote it and when)."""

    client = ForeignKeyField(Client, backref="notes", on_delete="CASCADE")
    author = CharField()  # the staff member's email
    text = TextField()
    created_at = DateTimeField(default=utcnow, index=True)


class Impersonation(BaseModel):
    """A staff member started viewing the client area as a client (read-only)."""

    client = ForeignKeyField(Client, backref="impersonations", on_delete="CASCADE")
    staff = ForeignKeyField(User, null=True, backref="impersonations", on_delete="SET NULL")
    staff_email = CharField()  # kept when the staff member's login is removed
    started_at = DateTimeField(default=utcnow, index=True)


class PasswordReset(BaseModel):
    """A password reset link: only the hash of its token is kept; it works once, until
    ``expires_at``."""

    user = ForeignKeyField(User, backref="password_resets", on_delete="CASCADE")
    token_hash = CharField(unique=True)
    created_by = CharField()  # "self" (Forgot password?) or the staff member's email
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)


class ApiToken(BaseModel):
    user = ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    token_hash = CharField(unique=True)
    name = CharField(default="")
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)


class Department(BaseModel):
    name = CharField(unique=True)
    notify_email = CharField(null=True)
    created_at = DateTimeField(default=utcnow)


class StaffMembership(BaseModel):
    user = ForeignKeyField(User, backref="memberships", on_delete="CASCADE")
    department = ForeignKeyField(Department, backref="memberships", on_delete="CASCADE")

    class Meta:
        indexes = ((("user", "department"), True),)


# --- catalog ----------------------------------------------------------------------------


class ProductType(BaseModel):
    """hosting, vps, dedicated, domain, certificate, database, custom.

    ``detail_fields`` is a list of ``{"name", "label", "kind", "required", "secret",
    "max_length"}``: what a module or a person fills in and what the welcome email shows
    (the kinds: ``app.services.detail_fields``). ``order_fields`` is a
    list of ``{"name", "label", "kind", "required", "max_length", "options"}``: what a
    client fills in when ordering (see ``app.services.order_fields``).
    """

    CODES = ("hosting", "vps", "dedicated", "domain", "dns", "certificate", "database", "custom")

    code = CharField(unique=True)
    name = CharField()
    detail_fields = JSONField(default=list)
    order_fields = JSONField(default=list)
    welcome_subject = CharField(default="Your {{ tariff.name }} is ready")
    welcome_template = TextField(default="")
    # the emails a client gets when an operation is done (suspend, resume, close, change
    # tariff, change password): ``{kind: {"subject", "template"}}``; a kind not here uses
    # the default text (``app.services.mail.NOTICE_DEFAULTS``)
    notice_templates = JSONField(default=dict)


class ProcessingModule(BaseModel):
    name = CharField(unique=True)
    type = CharField()
    config = JSONField(default=dict)
    department = ForeignKeyField(Department, null=True, backref="modules", on_delete="SET NULL")
    retry_delay = IntegerField(default=300)
    max_attempts = IntegerField(default=3)
    max_wait = IntegerField(default=3600)  # seconds a polling operation may wait in all
    max_running = IntegerField(default=0)
    priority = IntegerField(default=0)
    enabled = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)


class Tariff(BaseModel):
    PERIODS = ("month", "quarter", "year", "once")

    name = CharField()
    product_type = ForeignKeyField(ProductType, backref="tariffs")
    price = DecimalField(max_digits=12, decimal_places=2)
    currency = CharField(default="USD")
    period = CharField(default="month")
    internal_name = CharField(index=True)
    is_archived = BooleanField(default=False)
    created_at = DateTimeField(default=utcnow)


class TariffModule(BaseModel):
    tariff = ForeignKeyField(Tariff, backref="tariff_modules", on_delete="CASCADE")
    module = ForeignKeyField(ProcessingModule, backref="tariff_modules", on_delete="CASCADE")

    class Meta:
        indexes = ((("tariff", "module"), True),)


class Item(BaseModel):
    """What a module needs on its panel to serve tariffs of one internal name."""

    STATUSES = states.ITEM.statuses

    module = ForeignKeyField(ProcessingModule, backref="items", on_delete="CASCADE")
    internal_name = CharField()
    status = CharField(default="creating")
    remote_id = CharField(null=True)
    error = TextField(null=True)
    settings = JSONField(default=dict)  # the module type's item_fields, edited on the tariff
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("module", "internal_name"), True),)


# --- orders and services ----------------------------------------------------------------


class Service(BaseModel):
    STATUSES = states.SERVICE.statuses

    client = ForeignKeyField(Client, backref="services")
    tariff = ForeignKeyField(Tariff, backref="services")
    module = ForeignKeyField(ProcessingModule, null=True, backref="services", on_delete="SET NULL")
    status = CharField(default="ordered", index=True)
    remote_id = CharField(null=True)
    details = JSONField(default=dict)
    params = JSONField(default=dict)
    module_choice = JSONField(null=True)
    # what the module keeps for later (a certificate's expiry, a VM's UUID, a contact id);
    # staff see it, clients only the keys the module type lists in ``client_data``
    module_data = JSONField(default=dict)
    expires_at = DateTimeField(null=True, index=True)
    renewal_queued_for = DateTimeField(null=True)  # the expiry a renew was queued for
    # why people cancelled its setup (status setup_cancelled); shown to the client too
    setup_cancelled_reason = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    activated_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)


class ServiceEvent(BaseModel):
    """A service's history of what people did to it outside operations: details or the
    remote id edited, an existing account imported, secrets of a deleted service
    revealed. ``text`` says what (names of fields, never a secret's value)."""

    KINDS = ("details_edited", "imported", "secrets_revealed")

    service = ForeignKeyField(Service, backref="events", on_delete="CASCADE")
    kind = CharField()
    actor = CharField()
    text = TextField(default="")
    created_at = DateTimeField(default=utcnow)


class Order(BaseModel):
    STATUSES = ("unpaid", "paid", "cancelled")

    client = ForeignKeyField(Client, backref="orders")
    tariff = ForeignKeyField(Tariff, backref="orders")
    service = ForeignKeyField(Service, backref="orders")
    status = CharField(default="unpaid", index=True)
    amount = DecimalField(max_digits=12, decimal_places=2)
    currency = CharField(default="USD")
    created_at = DateTimeField(default=utcnow)
    paid_at = DateTimeField(null=True)
    paid_by = CharField(null=True)


class Payment(BaseModel):
    """A payment notification, kept so that a replay returns the same answer."""

    payment_id = CharField(unique=True)
    order = ForeignKeyField(Order, backref="payments")
    amount = DecimalField(max_digits=12, decimal_places=2)
    currency = CharField()
    result = JSONField(default=dict)
    received_at = DateTimeField(default=utcnow)


class Operation(BaseModel):
    KINDS = states.KIND_NAMES
    STATUSES = states.OPERATION.statuses
    OPEN_STATUSES = states.OPERATION.open

    kind = CharField()
    service = ForeignKeyField(Service, null=True, backref="operations", on_delete="CASCADE")
    item = ForeignKeyField(Item, null=True, backref="operations", on_delete="CASCADE")
    module = ForeignKeyField(
        ProcessingModule, null=True, backref="operations", on_delete="SET NULL"
    )
    status = CharField(default="queued", index=True)
    params = JSONField(default=dict)
    attempts = IntegerField(default=0)  # attempts started (polling checks included)
    failures = IntegerField(default=0)  # failed attempts: what max_attempts counts
    state = JSONField(null=True)  # the module's own memory between calls (never shown to clients)
    deadline_at = DateTimeField(null=True)  # a polling operation escalates after this
    next_run_at = DateTimeField(null=True, index=True)
    dispatched_at = DateTimeField(null=True)
    redispatches = IntegerField(default=0)  # re-sent by the sweep since last claimed
    lease_until = DateTimeField(null=True)
    last_error = TextField(null=True)
    completed_by = CharField(null=True)
    created_at = DateTimeField(default=utcnow, index=True)
    updated_at = DateTimeField(default=utcnow)
    finished_at = DateTimeField(null=True)

    class Meta:
        # a service's operations newest first: migration 0020
        indexes = ((("status", "next_run_at"), False), (("service", "created_at"), False))

    @property
    def is_open(self):
        return self.status in self.OPEN_STATUSES

    @property
    def subject(self):
        if self.service_id:
            return f"Service #{self.service_id}"
        if self.item_id:
            return f"Item {self.item.internal_name}"
        return "-"


class Attempt(BaseModel):
    OUTCOMES = (
        "done",
        "pending",
        "poll",
        "task",
        "temporary_error",
        "permanent_error",
        "interrupted",
    )

    operation = ForeignKeyField(Operation, backref="attempt_rows", on_delete="CASCADE")
    number = IntegerField()
    worker = CharField(default="")
    started_at = DateTimeField(default=utcnow)
    finished_at = DateTimeField(null=True, index=True)
    outcome = CharField(null=True)
    error = TextField(null=True)
    log = TextField(default="")

    class Meta:
        indexes = ((("operation", "number"), True),)


class Task(BaseModel):
    STATUSES = states.TASK.statuses
    OPEN_STATUSES = states.TASK.open
    PRIORITIES = ("low", "normal", "high", "urgent")  # in this order of urgency

    department = ForeignKeyField(Department, null=True, backref="tasks", on_delete="SET NULL")
    service = ForeignKeyField(Service, null=True, backref="tasks", on_delete="CASCADE")
    operation = ForeignKeyField(Operation, null=True, backref="tasks", on_delete="SET NULL")
    # only a title that cannot be made from the operation (a task received from a peer)
    stored_title = CharField(column_name="title", null=True)
    status = CharField(default="new", index=True)
    assignee = ForeignKeyField(User, null=True, backref="tasks", on_delete="SET NULL")
    fields = JSONField(default=dict)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    closed_at = DateTimeField(null=True)
    closed_by = CharField(null=True)
    priority = CharField(default="normal")  # one of PRIORITIES
    due_at = DateTimeField(null=True, index=True)  # when it should be done (UTC)

    @property
    def is_overdue(self):
        """Still open after its due date."""
        return (
            self.due_at is not None and self.status in self.OPEN_STATUSES and self.due_at < utcnow()
        )

    @property
    def title(self):
        """Rendered from the operation when shown (``stored_title`` for a peer's task)."""
        if self.stored_title:
            return self.stored_title
        return states.task_title(self.operation) if self.operation_id else f"Task #{self.id}"

    @title.setter
    def title(self, value):
        self.stored_title = value


class TaskEvent(BaseModel):
    """The history of a task: created, assigned, commented, closed...

    Provisor's own entries are a ``message`` key with ``args`` (see ``app.messages``),
    rendered when shown; what people write is kept in ``stored_text``.
    """

    task = ForeignKeyField(Task, backref="events", on_delete="CASCADE")
    kind = CharField()
    actor = CharField(default="system")
    stored_text = TextField(column_name="text", default="")
    message = CharField(null=True)
    args = JSONField(null=True)
    created_at = DateTimeField(default=utcnow)

    @property
    def text(self):
        if self.message:
            return messages.render(self.message, self.args)
        return self.stored_text

    @text.setter
    def text(self, value):
        self.stored_text = value


class Email(BaseModel):
    """Outbox: every email Provisor sends is stored first, then delivered."""

    STATUSES = states.EMAIL.statuses

    to = CharField()
    subject = CharField()
    body = TextField()
    kind = CharField(default="")
    service = ForeignKeyField(Service, null=True, backref="emails", on_delete="SET NULL")
    status = CharField(default="queued", index=True)
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    next_try_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)

    class Meta:
        # the mail sweep's due and stuck emails (migration 0020)
        indexes = ((("status", "next_try_at"), False),)


class Sweep(BaseModel):
    """The scheduler's heartbeat: when each sweep (``operations``, ``mail``, ``proxy``)
    last ran, read by ``/api/v1/health`` and ``/metrics`` on any machine."""

    name = CharField(unique=True)
    last_run_at = DateTimeField()  # when its last run ended, whatever the outcome
    last_ok_at = DateTimeField(null=True)  # when a run last ended without failing as a whole
    last_error = TextField(null=True)  # why the last run failed as a whole (null: it did not)
    failed_rows = IntegerField(default=0)  # rows of the last run that failed (each recorded)
    duration = FloatField(default=0)  # seconds the last run took
    scheduler = CharField(default="")  # host:pid of the process that ran it


class SandboxResource(BaseModel):
    """State of the built-in simulated panel: one row per creation, keyed by operation."""

    operation_key = CharField(unique=True)
    kind = CharField()
    remote_id = CharField()
    details = JSONField(default=dict)
    service_id = IntegerField(null=True, index=True)
    status = CharField(default="active")
    created_at = DateTimeField(default=utcnow)


# --- tasks proxy ------------------------------------------------------------------------


class ProxyServerSide(BaseModel):
    """This instance receives tasks: a peer logs in as ``login`` and its tasks go to
    ``department`` (one department per server side)."""

    login = CharField(unique=True)
    password_hash = CharField()
    department = ForeignKeyField(
        Department, unique=True, backref="proxy_server_side", on_delete="CASCADE"
    )
    enabled = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField(null=True)


class ProxyClientSide(BaseModel):
    """This instance sends the tasks of ``department`` to a peer's department."""

    url = CharField()
    login = CharField()
    password_encrypted = TextField()
    remote_department_id = IntegerField()
    remote_department_name = CharField(default="")
    department = ForeignKeyField(
        Department, unique=True, backref="proxy_client_side", on_delete="CASCADE"
    )
    enabled = BooleanField(default=True)
    cursor = BigIntegerField(default=0)  # the last remote event pulled (up to 18 digits)
    last_push_at = DateTimeField(null=True)
    last_pull_at = DateTimeField(null=True)
    last_error = TextField(null=True)
    last_error_at = DateTimeField(null=True)
    pushing_until = DateTimeField(null=True)  # a pusher's lease (keeps events in order)
    next_push_at = DateTimeField(null=True)  # while the peer fails: when to try again
    push_failures = IntegerField(default=0)  # failed pushes in a row (the backoff's step)
    pulling_until = DateTimeField(null=True)  # a puller's lease (one pull at a time)
    pull_failed_at = DateTimeField(null=True)  # the last failed pull (the next waits)
    created_at = DateTimeField(default=utcnow)


class ProxyLink(BaseModel):
    """A local task forwarded through a client side: which remote task it is."""

    task = ForeignKeyField(Task, unique=True, backref="proxy_links", on_delete="CASCADE")
    client_side = ForeignKeyField(ProxyClientSide, backref="links", on_delete="CASCADE")
    remote_task_id = IntegerField(null=True)
    last_synced_at = DateTimeField(null=True)
    sync_error = TextField(null=True)


class ProxyOutgoing(BaseModel):
    """A change of a forwarded task waiting to be pushed (in id order, exactly once)."""

    client_side = ForeignKeyField(ProxyClientSide, backref="outgoing", on_delete="CASCADE")
    task = ForeignKeyField(Task, backref="proxy_outgoing", on_delete="CASCADE")
    event_id = CharField(unique=True)
    kind = CharField()  # create, comment, fields, cancelled, closed (older rows: cancel, close)
    payload = JSONField(default=dict)
    status = CharField(default="pending", index=True)  # PROXY_OUTGOING: pending, sent, ...
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)


class ProxyInbound(BaseModel):
    """A task received through a server side: the sender's task id and the local task."""

    server_side = ForeignKeyField(ProxyServerSide, backref="inbound", on_delete="CASCADE")
    sender_task_id = IntegerField()
    task = ForeignKeyField(Task, unique=True, backref="proxy_inbound", on_delete="CASCADE")
    description = TextField(default="")
    form = JSONField(default=list)  # the sender's detail fields: name, label, required
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("server_side", "sender_task_id"), True),)


class ProxyReceived(BaseModel):
    """Event ids already applied on the server side (pushes are idempotent on them)."""

    server_side = ForeignKeyField(ProxyServerSide, on_delete="CASCADE")
    event_id = CharField()
    sender_task_id = BigIntegerField(null=True)  # which task it was about (older rows: None)
    digest = CharField(null=True)  # of its kind, text and fields: a replay has the same
    received_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("server_side", "event_id"), True),)


class ProxyEvent(BaseModel):
    """A change made here to a received task, for the sender to pull (id = cursor)."""

    server_side = ForeignKeyField(ProxyServerSide, backref="events", on_delete="CASCADE")
    sender_task_id = IntegerField()
    kind = CharField()  # assigned, comment, fields, closed, cancelled, reopened
    actor = CharField(default="")
    text = TextField(default="")
    fields = JSONField(default=dict)
    created_at = DateTimeField(default=utcnow)


# --- ACME certificates (modules/acme.py, app/services/certificates.py) -----------------


class AcmeAccount(BaseModel):
    """An account at an ACME certification authority, one per module configuration.

    ``identity`` is derived from the settings that make an account (directory URL, email,
    the External Account Binding): every module and item with those settings shares the
    account, and "Test connection" finds the one the operations use. The account key is
    stored encrypted (``app.secrets_box``)."""

    identity = CharField(unique=True)
    directory_url = TextField()
    email = CharField()
    eab_kid = CharField(null=True)
    key_encrypted = TextField()
    url = TextField(null=True)  # the account's URL at the CA, once registered
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class AcmeChallenge(BaseModel):
    """An http-01 token Provisor answers at ``/.well-known/acme-challenge/<token>`` while
    its order is pending; removed once the order is decided."""

    token = CharField(unique=True)
    key_authorization = TextField()
    domain = CharField()
    service = ForeignKeyField(Service, null=True, backref="acme_challenges", on_delete="CASCADE")
    created_at = DateTimeField(default=utcnow, index=True)


class AcmeCertificate(BaseModel):
    """A certificate an ACME order issued for a service (a renewal adds one): the PEMs,
    and its private key, generated by Provisor, stored encrypted."""

    service = ForeignKeyField(Service, backref="acme_certificates", on_delete="CASCADE")
    operation = ForeignKeyField(
        Operation, null=True, backref="acme_certificates", on_delete="SET NULL"
    )
    account = ForeignKeyField(AcmeAccount, null=True, backref="certificates", on_delete="SET NULL")
    order_url = TextField(unique=True)
    names = JSONField(default=list)
    serial = CharField(index=True)
    issuer = TextField(default="")
    not_before = DateTimeField()
    not_after = DateTimeField()
    certificate_pem = TextField()
    chain_pem = TextField(default="")
    key_encrypted = TextField()
    revoked_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)


class ResellerRequest(BaseModel):
    """What a reseller asked through ``/api/v1/reseller`` under one idempotency key: the
    same key again answers with the same order or operation, never a second one."""

    client = ForeignKeyField(Client, backref="reseller_requests", on_delete="CASCADE")
    key = CharField()
    kind = CharField()  # "order", or the operation kind (suspend, resume, close, ...)
    order = ForeignKeyField(Order, null=True, backref="reseller_requests", on_delete="CASCADE")
    service = ForeignKeyField(Service, null=True, backref="reseller_requests", on_delete="CASCADE")
    operation = ForeignKeyField(
        Operation, null=True, backref="reseller_requests", on_delete="SET NULL"
    )
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("client", "key"), True),)


# --- outgoing events (webhooks) ---------------------------------------------------------


class WebhookEndpoint(BaseModel):
    """Where outgoing events go (``app.services.events``): a URL, its signing secret
    (encrypted, ``app.secrets_box``) and the event types it wants (``*``: all)."""

    url = CharField(max_length=2000)
    secret_encrypted = TextField()
    event_types = JSONField(default=list)
    enabled = BooleanField(default=True)
    description = CharField(default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    def wants(self, event_type):
        return "*" in (self.event_types or ()) or event_type in (self.event_types or ())


class Event(BaseModel):
    """An outgoing event, written in the transaction of the change it reports: ``uid`` is
    its stable id (in the body and the ``X-Provisor-Event-Id`` header, the same on every
    attempt), ``data`` what changed."""

    uid = CharField(unique=True)
    type = CharField(index=True)
    subject = CharField()  # service, operation, task (or endpoint for a test event)
    subject_id = BigIntegerField(null=True)
    data = JSONField(default=dict)
    created_at = DateTimeField(default=utcnow, index=True)  # the sweep prunes by it


class EventDelivery(BaseModel):
    """One event to one endpoint: the outbox row a worker sends (``states.DELIVERY``)."""

    STATUSES = states.DELIVERY.statuses

    event = ForeignKeyField(Event, backref="deliveries", on_delete="CASCADE")
    endpoint = ForeignKeyField(WebhookEndpoint, backref="deliveries", on_delete="CASCADE")
    status = CharField(default="pending", index=True)
    attempts = IntegerField(default=0)
    next_try_at = DateTimeField(null=True)
    last_status_code = IntegerField(null=True)
    last_error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    delivered_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("event", "endpoint"), True), (("status", "next_try_at"), False))


class DeliveryAttempt(BaseModel):
    """One POST of a delivery: what the endpoint answered (or why there was no answer)."""

    delivery = ForeignKeyField(EventDelivery, backref="attempt_rows", on_delete="CASCADE")
    number = IntegerField()
    started_at = DateTimeField(default=utcnow)
    duration_ms = IntegerField(default=0)
    status_code = IntegerField(null=True)
    error = TextField(null=True)
    response_excerpt = TextField(default="")
