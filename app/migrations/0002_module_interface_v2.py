"""Module interface v2: polling operations (their module state, failures apart from
checks, a deadline), per-service module data, expiry and renewals, modules' max_wait,
order fields per product type (and the DNS hosting product type), task titles and history
entries rendered when shown (a message key with its arguments), the sandbox panel's
service and status.

Frozen: plain peewee fields and this file's own copies of the seed values.
"""

import json

from peewee import CharField, DateTimeField, IntegerField, TextField

WELCOME_TEMPLATE = """Hello {{ client.name }},

your {{ product_type.name | lower }} "{{ tariff.name }}" (service #{{ service.id }}) is active.

{% for field in fields %}{{ field.label }}: {{ field.value }}
{% endfor %}
Thank you for choosing us.
"""

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


def up(migrator, db):
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
    if steps:
        migrator.migrate(*steps)
    # failed attempts so far: what max_attempts counts from now on
    db.execute_sql(
        "UPDATE operation SET failures = (SELECT COUNT(*) FROM attempt "
        "WHERE attempt.operation_id = operation.id AND attempt.outcome IN "
        "('temporary_error', 'permanent_error', 'interrupted'))"
    )
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
