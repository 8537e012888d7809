"""The initial schema: the tables as the last release of ``app/schema.py`` (its versions
1-3) left them, with the seed rows of the product types.

Frozen: the models below are copies, deliberately independent of ``app.models``; never
edit this file once released, add ``0002_...`` instead (README, "Schema changes").

A database made by that release (it has a ``schema_version`` table) is adopted: whatever
its versions 2 and 3 would have added and is missing is added (tables with their indexes,
columns, indexes), every row is kept, the result is checked against the models below, and
``schema_version`` is dropped (this history replaces it).
"""

import json
import logging

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    DecimalField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)
from playhouse.migrations import MigrationError
from playhouse.schema_diff import diff_models

log = logging.getLogger("app.migrations")

LEGACY_TABLE = "schema_version"
LEGACY_VERSIONS = (1, 2, 3)


class Frozen(Model):
    class Meta:
        legacy_table_names = False


# JSON values are stored as TEXT (app.models.JSONField); datetimes are naive UTC.


class Client(Frozen):
    name = CharField()
    email = CharField(unique=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "client"


class User(Frozen):
    email = CharField(unique=True)
    name = CharField()
    password_hash = CharField(null=True)
    role = CharField(index=True, default="staff")
    client = ForeignKeyField(Client, null=True, on_delete="CASCADE")
    is_active = BooleanField(default=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "user"


class ApiToken(Frozen):
    user = ForeignKeyField(User, on_delete="CASCADE")
    token_hash = CharField(unique=True)
    name = CharField(default="")
    created_at = DateTimeField()
    last_used_at = DateTimeField(null=True)

    class Meta:
        table_name = "api_token"


class Department(Frozen):
    name = CharField(unique=True)
    notify_email = CharField(null=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "department"


class StaffMembership(Frozen):
    user = ForeignKeyField(User, on_delete="CASCADE")
    department = ForeignKeyField(Department, on_delete="CASCADE")

    class Meta:
        table_name = "staff_membership"
        indexes = ((("user", "department"), True),)


class ProductType(Frozen):
    code = CharField(unique=True)
    name = CharField()
    detail_fields = TextField(default="[]")
    welcome_subject = CharField(default="Your {{ tariff.name }} is ready")
    welcome_template = TextField(default="")

    class Meta:
        table_name = "product_type"


class ProcessingModule(Frozen):
    name = CharField(unique=True)
    type = CharField()
    config = TextField(default="{}")
    department = ForeignKeyField(Department, null=True, on_delete="SET NULL")
    retry_delay = IntegerField(default=300)
    max_attempts = IntegerField(default=3)
    max_running = IntegerField(default=0)
    priority = IntegerField(default=0)
    enabled = BooleanField(default=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "processing_module"


class Tariff(Frozen):
    name = CharField()
    product_type = ForeignKeyField(ProductType)
    price = DecimalField(max_digits=12, decimal_places=2)
    currency = CharField(default="USD")
    period = CharField(default="month")
    internal_name = CharField(index=True)
    is_archived = BooleanField(default=False)
    created_at = DateTimeField()

    class Meta:
        table_name = "tariff"


class TariffModule(Frozen):
    tariff = ForeignKeyField(Tariff, on_delete="CASCADE")
    module = ForeignKeyField(ProcessingModule, on_delete="CASCADE")

    class Meta:
        table_name = "tariff_module"
        indexes = ((("tariff", "module"), True),)


class Item(Frozen):
    module = ForeignKeyField(ProcessingModule, on_delete="CASCADE")
    internal_name = CharField()
    status = CharField(default="creating")
    remote_id = CharField(null=True)
    error = TextField(null=True)
    updated_at = DateTimeField()

    class Meta:
        table_name = "item"
        indexes = ((("module", "internal_name"), True),)


class Service(Frozen):
    client = ForeignKeyField(Client)
    tariff = ForeignKeyField(Tariff)
    module = ForeignKeyField(ProcessingModule, null=True, on_delete="SET NULL")
    status = CharField(index=True, default="ordered")
    remote_id = CharField(null=True)
    details = TextField(default="{}")
    params = TextField(default="{}")
    module_choice = TextField(null=True)
    created_at = DateTimeField()
    activated_at = DateTimeField(null=True)
    updated_at = DateTimeField()

    class Meta:
        table_name = "service"


class Order(Frozen):
    client = ForeignKeyField(Client)
    tariff = ForeignKeyField(Tariff)
    service = ForeignKeyField(Service)
    status = CharField(index=True, default="unpaid")
    amount = DecimalField(max_digits=12, decimal_places=2)
    currency = CharField(default="USD")
    created_at = DateTimeField()
    paid_at = DateTimeField(null=True)
    paid_by = CharField(null=True)

    class Meta:
        table_name = "order"


class Payment(Frozen):
    payment_id = CharField(unique=True)
    order = ForeignKeyField(Order)
    amount = DecimalField(max_digits=12, decimal_places=2)
    currency = CharField()
    result = TextField(default="{}")
    received_at = DateTimeField()

    class Meta:
        table_name = "payment"


class Operation(Frozen):
    kind = CharField()
    service = ForeignKeyField(Service, null=True, on_delete="CASCADE")
    item = ForeignKeyField(Item, null=True, on_delete="CASCADE")
    module = ForeignKeyField(ProcessingModule, null=True, on_delete="SET NULL")
    status = CharField(index=True, default="queued")
    params = TextField(default="{}")
    attempts = IntegerField(default=0)
    next_run_at = DateTimeField(null=True, index=True)
    dispatched_at = DateTimeField(null=True)
    redispatches = IntegerField(default=0)
    lease_until = DateTimeField(null=True)
    last_error = TextField(null=True)
    completed_by = CharField(null=True)
    created_at = DateTimeField(index=True)
    updated_at = DateTimeField()
    finished_at = DateTimeField(null=True)

    class Meta:
        table_name = "operation"
        indexes = ((("status", "next_run_at"), False),)


class Attempt(Frozen):
    operation = ForeignKeyField(Operation, on_delete="CASCADE")
    number = IntegerField()
    worker = CharField(default="")
    started_at = DateTimeField()
    finished_at = DateTimeField(null=True, index=True)
    outcome = CharField(null=True)
    error = TextField(null=True)
    log = TextField(default="")

    class Meta:
        table_name = "attempt"
        indexes = ((("operation", "number"), True),)


class Task(Frozen):
    department = ForeignKeyField(Department, null=True, on_delete="SET NULL")
    service = ForeignKeyField(Service, null=True, on_delete="CASCADE")
    operation = ForeignKeyField(Operation, null=True, on_delete="SET NULL")
    title = CharField()
    status = CharField(index=True, default="new")
    assignee = ForeignKeyField(User, null=True, on_delete="SET NULL")
    fields = TextField(default="{}")
    created_at = DateTimeField()
    updated_at = DateTimeField()
    closed_at = DateTimeField(null=True)
    closed_by = CharField(null=True)

    class Meta:
        table_name = "task"


class TaskEvent(Frozen):
    task = ForeignKeyField(Task, on_delete="CASCADE")
    kind = CharField()
    actor = CharField(default="system")
    text = TextField(default="")
    created_at = DateTimeField()

    class Meta:
        table_name = "task_event"


class Email(Frozen):
    to = CharField()
    subject = CharField()
    body = TextField()
    kind = CharField(default="")
    service = ForeignKeyField(Service, null=True, on_delete="SET NULL")
    status = CharField(index=True, default="queued")
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    next_try_at = DateTimeField(null=True)
    created_at = DateTimeField()
    sent_at = DateTimeField(null=True)

    class Meta:
        table_name = "email"


class SandboxResource(Frozen):
    operation_key = CharField(unique=True)
    kind = CharField()
    remote_id = CharField()
    details = TextField(default="{}")
    created_at = DateTimeField()

    class Meta:
        table_name = "sandbox_resource"


# --- tasks proxy (what the old schema's version 2 added) -----------------------------------


class ProxyServerSide(Frozen):
    login = CharField(unique=True)
    password_hash = CharField()
    department = ForeignKeyField(Department, unique=True, on_delete="CASCADE")
    enabled = BooleanField(default=True)
    created_at = DateTimeField()
    last_seen_at = DateTimeField(null=True)

    class Meta:
        table_name = "proxy_server_side"


class ProxyClientSide(Frozen):
    url = CharField()
    login = CharField()
    password_encrypted = TextField()
    remote_department_id = IntegerField()
    remote_department_name = CharField(default="")
    department = ForeignKeyField(Department, unique=True, on_delete="CASCADE")
    enabled = BooleanField(default=True)
    cursor = IntegerField(default=0)
    last_push_at = DateTimeField(null=True)
    last_pull_at = DateTimeField(null=True)
    last_error = TextField(null=True)
    last_error_at = DateTimeField(null=True)
    pushing_until = DateTimeField(null=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "proxy_client_side"


class ProxyLink(Frozen):
    task = ForeignKeyField(Task, unique=True, on_delete="CASCADE")
    client_side = ForeignKeyField(ProxyClientSide, on_delete="CASCADE")
    remote_task_id = IntegerField(null=True)
    last_synced_at = DateTimeField(null=True)
    sync_error = TextField(null=True)

    class Meta:
        table_name = "proxy_link"


class ProxyOutgoing(Frozen):
    client_side = ForeignKeyField(ProxyClientSide, on_delete="CASCADE")
    task = ForeignKeyField(Task, on_delete="CASCADE")
    event_id = CharField(unique=True)
    kind = CharField()
    payload = TextField(default="{}")
    status = CharField(index=True, default="pending")
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    created_at = DateTimeField()
    sent_at = DateTimeField(null=True)

    class Meta:
        table_name = "proxy_outgoing"


class ProxyInbound(Frozen):
    server_side = ForeignKeyField(ProxyServerSide, on_delete="CASCADE")
    sender_task_id = IntegerField()
    task = ForeignKeyField(Task, unique=True, on_delete="CASCADE")
    description = TextField(default="")
    form = TextField(default="[]")
    created_at = DateTimeField()

    class Meta:
        table_name = "proxy_inbound"
        indexes = ((("server_side", "sender_task_id"), True),)


class ProxyReceived(Frozen):
    server_side = ForeignKeyField(ProxyServerSide, on_delete="CASCADE")
    event_id = CharField()
    received_at = DateTimeField()

    class Meta:
        table_name = "proxy_received"
        indexes = ((("server_side", "event_id"), True),)


class ProxyEvent(Frozen):
    server_side = ForeignKeyField(ProxyServerSide, on_delete="CASCADE")
    sender_task_id = IntegerField()
    kind = CharField()
    actor = CharField(default="")
    text = TextField(default="")
    fields = TextField(default="{}")
    created_at = DateTimeField()

    class Meta:
        table_name = "proxy_event"


MODELS = [
    Client,
    User,
    ApiToken,
    Department,
    StaffMembership,
    ProductType,
    ProcessingModule,
    Tariff,
    TariffModule,
    Item,
    Service,
    Order,
    Payment,
    Operation,
    Attempt,
    Task,
    TaskEvent,
    Email,
    SandboxResource,
    ProxyServerSide,
    ProxyClientSide,
    ProxyLink,
    ProxyOutgoing,
    ProxyInbound,
    ProxyReceived,
    ProxyEvent,
]


# --- seed rows ------------------------------------------------------------------------------

PRODUCT_TYPES = [
    (
        "hosting",
        "Shared hosting",
        [
            ("domain", "Domain", True, False),
            ("ip", "IP address", True, False),
            ("username", "Username", True, False),
            ("password", "Password", True, True),
            ("panel_url", "Control panel URL", True, False),
        ],
    ),
    (
        "vps",
        "Virtual private server",
        [
            ("hostname", "Hostname", True, False),
            ("ip", "IP address", True, False),
            ("username", "Username", True, False),
            ("password", "Root password", True, True),
            ("panel_url", "Control panel URL", False, False),
        ],
    ),
    (
        "dedicated",
        "Dedicated server",
        [
            ("hostname", "Hostname", True, False),
            ("ip", "IP address", True, False),
            ("username", "Username", True, False),
            ("password", "Root password", True, True),
            ("ipmi_url", "IPMI / KVM URL", False, False),
        ],
    ),
    (
        "domain",
        "Domain name",
        [
            ("domain", "Domain", True, False),
            ("nameservers", "Name servers", True, False),
            ("expires_on", "Expires on", False, False),
        ],
    ),
    (
        "certificate",
        "TLS certificate",
        [
            ("common_name", "Common name", True, False),
            ("expires_on", "Expires on", False, False),
            ("certificate_url", "Certificate download URL", False, False),
        ],
    ),
    (
        "database",
        "Database",
        [
            ("host", "Host", True, False),
            ("database", "Database name", True, False),
            ("username", "Username", True, False),
            ("password", "Password", True, True),
        ],
    ),
    ("custom", "Custom service", [("details", "Details", False, False)]),
]

WELCOME_SUBJECT = "Your {{ tariff.name }} is ready (service #{{ service.id }})"

WELCOME_TEMPLATE = """Hello {{ client.name }},

your {{ product_type.name | lower }} "{{ tariff.name }}" (service #{{ service.id }}) is active.

{% for field in fields %}{{ field.label }}: {{ field.value }}
{% endfor %}
Thank you for choosing us.
"""


def _seed_product_types():
    rows = [
        {
            "code": code,
            "name": name,
            "detail_fields": json.dumps(
                [
                    {"name": n, "label": label, "required": required, "secret": secret}
                    for n, label, required, secret in fields
                ],
                sort_keys=True,
            ),
            "welcome_subject": WELCOME_SUBJECT,
            "welcome_template": WELCOME_TEMPLATE,
        }
        for code, name, fields in PRODUCT_TYPES
    ]
    ProductType.insert_many(rows).execute()


# --- the migration --------------------------------------------------------------------------


def up(migrator, db):
    tables = set(db.get_tables())
    ours = {model._meta.table_name for model in MODELS}
    with db.bind_ctx(MODELS, bind_refs=False, bind_backrefs=False):
        if LEGACY_TABLE in tables:
            _adopt(migrator, db, tables)
        elif tables & ours:
            raise MigrationError(
                "the database already has Provisor tables ("
                + ", ".join(sorted(tables & ours))
                + f") but no {LEGACY_TABLE} or migration history: refusing to guess its state"
            )
        else:
            db.create_tables(MODELS)
            _seed_product_types()


def _adopt(migrator, db, tables):
    """Bring a database of the old ``app/schema.py`` to this migration's state."""
    versions = {row[0] for row in db.execute_sql(f"SELECT version FROM {LEGACY_TABLE}")}
    latest = max(versions, default=0)
    if latest not in LEGACY_VERSIONS:
        raise MigrationError(
            f"{LEGACY_TABLE} says version {latest}; only versions "
            f"{LEGACY_VERSIONS[0]} to {LEGACY_VERSIONS[-1]} can be adopted"
        )
    log.info("adopting a database of schema version %d", latest)
    missing = [model for model in MODELS if model._meta.table_name not in tables]
    if missing:  # version 1: the tasks proxy tables (version 2), with their indexes
        log.info("adoption: creating %s", ", ".join(m._meta.table_name for m in missing))
        db.create_tables(missing)
    for model in MODELS:  # version 2: operation.redispatches (version 3)
        if model in missing:
            continue
        table = model._meta.table_name
        present = {column.name for column in db.get_columns(table)}
        for field in model._meta.sorted_fields:
            if field.column_name not in present:
                log.info("adoption: adding %s.%s", table, field.column_name)
                migrator.migrate(migrator.add_column(table, field.column_name, field))
    for model in MODELS:  # the attempt_finished_at index (version 3); by name, if missing
        model._schema.create_indexes(safe=True)
    difference = diff_models(db, MODELS)
    if difference:
        raise MigrationError(
            "after adoption the database still differs from 0001_initial: "
            + "; ".join(str(difference).splitlines())
        )
    db.execute_sql(f"DROP TABLE {LEGACY_TABLE}")
    log.info("adoption done: %s dropped, 0001_initial recorded", LEGACY_TABLE)
