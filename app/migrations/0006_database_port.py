"""Database hosting (the ``mariadb`` and ``postgresql`` module types): the database
product type's details give the port clients connect to, after the host.

Frozen: this file's own copies of the seed values. A provider who changed the database
product type's detail fields keeps them.
"""

import json


def _fields(rows):
    return [
        {"name": n, "label": label, "required": required, "secret": secret}
        for n, label, required, secret in rows
    ]


OLD_DETAIL_FIELDS = _fields(
    [
        ("host", "Host", True, False),
        ("database", "Database name", True, False),
        ("username", "Username", True, False),
        ("password", "Password", True, True),
    ]
)
DETAIL_FIELDS = _fields(
    [
        ("host", "Host", True, False),
        ("port", "Port", True, False),
        ("database", "Database name", True, False),
        ("username", "Username", True, False),
        ("password", "Password", True, True),
    ]
)


def up(migrator, db):
    row = db.execute_sql(
        "SELECT detail_fields FROM product_type WHERE code = " + db.param, ("database",)
    ).fetchone()
    if row is not None and json.loads(row[0] or "[]") == OLD_DETAIL_FIELDS:
        db.execute_sql(
            "UPDATE product_type SET detail_fields = %s WHERE code = %s".replace("%s", db.param),
            (json.dumps(DETAIL_FIELDS, sort_keys=True), "database"),
        )
