"""The hosting product type gets the detail field ``nameservers`` (the name servers the
client points the domain at, which the cpanel module reads from WHM or its settings), so
that the welcome email and the service page show it under its label. A provider who
already has such a field keeps theirs."""

import json

FIELD = {
    "name": "nameservers",
    "label": "Name servers",
    "kind": "text",
    "required": False,
    "secret": False,
}


def up(migrator, db):
    row = db.execute_sql(
        "SELECT id, detail_fields FROM product_type WHERE code = " + db.param, ("hosting",)
    ).fetchone()
    if row is None:
        return
    try:
        fields = json.loads(row[1] or "[]")
    except ValueError:
        return
    if not isinstance(fields, list) or any(
        isinstance(f, dict) and f.get("name") == FIELD["name"] for f in fields
    ):
        return
    db.execute_sql(
        "UPDATE product_type SET detail_fields = %s WHERE id = %s".replace("%s", db.param),
        (json.dumps([*fields, FIELD], sort_keys=True), row[0]),
    )
