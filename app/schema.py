"""Schema versions: ``provisor db upgrade`` (and the first ``serve``) applies what is missing.

Each migration is a function taking the database; they run in order inside one
transaction each and are recorded in ``schema_version``. Add new ones at the end, never
edit an applied one.
"""

import logging

from app import models
from app.db import database

log = logging.getLogger(__name__)

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

WELCOME_TEMPLATE = """Hello {{ client.name }},

your {{ product_type.name | lower }} "{{ tariff.name }}" (service #{{ service.id }}) is active.

{% for field in fields %}{{ field.label }}: {{ field.value }}
{% endfor %}
Thank you for choosing us.
"""


def _v1_initial(db):
    db.create_tables(models.ALL_MODELS)
    for code, name, fields in PRODUCT_TYPES:
        models.ProductType.create(
            code=code,
            name=name,
            detail_fields=[
                {"name": n, "label": label, "required": req, "secret": secret}
                for n, label, req, secret in fields
            ],
            welcome_subject="Your {{ tariff.name }} is ready (service #{{ service.id }})",
            welcome_template=WELCOME_TEMPLATE,
        )


def _v2_tasks_proxy(db):
    db.create_tables(models.PROXY_MODELS)


def _v3_sweep_backoff_and_error_index(db):
    from peewee import IntegerField
    from playhouse.migrate import SchemaMigrator, migrate

    migrator = SchemaMigrator.from_database(db)
    columns = {c.name for c in db.get_columns("operation")}
    indexes = {i.name for i in db.get_indexes("attempt")}
    steps = []
    if "redispatches" not in columns:
        steps.append(migrator.add_column("operation", "redispatches", IntegerField(default=0)))
    if "attempt_finished_at" not in indexes:
        steps.append(migrator.add_index("attempt", ("finished_at",), False))
    migrate(*steps)


ORDER_FIELDS = {
    "hosting": [
        {"name": "domain", "label": "Domain name", "kind": "domain", "required": True},
    ],
    "vps": [
        {"name": "hostname", "label": "Hostname", "kind": "hostname", "required": False},
        {
            "name": "os_image",
            "label": "Operating system",
            "kind": "choice",
            "required": False,
            "options": ["debian-12", "ubuntu-24.04", "almalinux-9"],
        },
    ],
    "dedicated": [
        {"name": "hostname", "label": "Hostname", "kind": "hostname", "required": False},
    ],
    "domain": [{"name": "domain", "label": "Domain name", "kind": "domain", "required": True}],
    "dns": [{"name": "domain", "label": "Domain name", "kind": "domain", "required": True}],
    "certificate": [
        {"name": "domain", "label": "Domain name", "kind": "domain", "required": True},
    ],
    "database": [
        {
            "name": "prefix",
            "label": "Database name prefix",
            "kind": "slug",
            "required": False,
            "max_length": 16,
        },
    ],
    "custom": [],
}

DNS_PRODUCT_TYPE = (
    "dns",
    "DNS hosting",
    [
        ("domain", "Domain", True, False),
        ("nameservers", "Name servers", True, False),
    ],
)


def _v4_module_interface_v2(db):
    """Polling operations, per-service module data, expiry and renewals, order fields,
    task titles and history rendered when shown."""
    from peewee import CharField, DateTimeField, IntegerField, TextField
    from playhouse.migrate import SchemaMigrator, migrate

    migrator = SchemaMigrator.from_database(db)
    columns = {t: {c.name for c in db.get_columns(t)} for t in db.get_tables()}
    wanted = [
        ("operation", "failures", IntegerField(default=0)),
        ("operation", "state", TextField(null=True)),
        ("operation", "deadline_at", DateTimeField(null=True)),
        ("service", "module_data", TextField(default="{}")),
        ("service", "expires_at", DateTimeField(null=True)),
        ("service", "renewal_queued_for", DateTimeField(null=True)),
        ("processing_module", "max_wait", IntegerField(default=3600)),
        ("product_type", "order_fields", TextField(default="[]")),
        ("task_event", "message", CharField(null=True)),
        ("task_event", "args", TextField(null=True)),
        ("sandbox_resource", "service_id", IntegerField(null=True)),
        ("sandbox_resource", "status", CharField(default="active")),
    ]
    steps = [
        migrator.add_column(table, name, field)
        for table, name, field in wanted
        if name not in columns[table]
    ]
    title = next(c for c in db.get_columns("task") if c.name == "title")
    if not title.null:
        steps.append(migrator.drop_not_null("task", "title"))
    for table, column in (("service", "expires_at"), ("sandbox_resource", "service_id")):
        if f"{table}_{column}" not in {i.name for i in db.get_indexes(table)}:
            steps.append(migrator.add_index(table, (column,), False))
    migrate(*steps)
    # failed attempts so far: what max_attempts counts from now on
    db.execute_sql(
        "UPDATE operation SET failures = (SELECT COUNT(*) FROM attempt "
        "WHERE attempt.operation_id = operation.id AND attempt.outcome IN "
        "('temporary_error', 'permanent_error', 'interrupted'))"
    )
    import json

    code, name, fields = DNS_PRODUCT_TYPE
    exists = db.execute_sql("SELECT 1 FROM product_type WHERE code = " + db.param, (code,))
    if exists.fetchone() is None:
        db.execute_sql(
            "INSERT INTO product_type (code, name, detail_fields, order_fields, welcome_subject, "
            "welcome_template) VALUES (%s, %s, %s, %s, %s, %s)".replace("%s", db.param),
            (
                code,
                name,
                json.dumps(
                    [
                        {"name": n, "label": label, "required": req, "secret": secret}
                        for n, label, req, secret in fields
                    ],
                    sort_keys=True,
                ),
                "[]",
                "Your {{ tariff.name }} is ready (service #{{ service.id }})",
                WELCOME_TEMPLATE,
            ),
        )
    for code, order_fields in ORDER_FIELDS.items():
        db.execute_sql(
            "UPDATE product_type SET order_fields = %s WHERE code = %s".replace("%s", db.param),
            (json.dumps(order_fields, sort_keys=True), code),
        )


MIGRATIONS = [
    _v1_initial,
    _v2_tasks_proxy,
    _v3_sweep_backoff_and_error_index,
    _v4_module_interface_v2,
]


def current_version():
    if not database.table_exists(models.SchemaVersion._meta.table_name):
        return 0
    row = models.SchemaVersion.select().order_by(models.SchemaVersion.version.desc()).first()
    return row.version if row else 0


def upgrade():
    """Apply the missing migrations; return the list of versions applied."""
    applied = []
    with database.connection_context():
        start = current_version()
        for number, migration in enumerate(MIGRATIONS, start=1):
            if number <= start:
                continue
            with database.atomic():
                migration(database)
                models.SchemaVersion.create(version=number)
            log.info("schema upgraded to version %d (%s)", number, migration.__name__)
            applied.append(number)
    return applied


def latest_version():
    return len(MIGRATIONS)
