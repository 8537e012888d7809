"""The domain product type gets the secret detail field ``auth_code`` (the transfer
authorization code a registry keeps for a domain, which the epp module generates and the
client needs to move the domain elsewhere). A provider who already has such a field keeps
theirs."""

import json

FIELD = {
    "name": "auth_code",
    "label": "Auth code (for transfers)",
    "kind": "text",
    "required": False,
    "secret": True,
}


def up(migrator, db):
    row = db.execute_sql(
        "SELECT id, detail_fields FROM product_type WHERE code = " + db.param, ("domain",)
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
