"""Detail fields get kinds (``app.services.detail_fields``): the built-in product types'
fields say what their values are (an IP address, a URL, a domain, a host name, a port);
every other field without a kind (a provider's own) becomes ``text``. A field that
already has a kind keeps it. And ``service_event``: a service's history of what people did
to it outside operations (details edited, an existing account imported, secrets of a
deleted service revealed).

Frozen: this file's own copies of the kinds and a plain peewee model of its own.
"""

import json

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField

KINDS = {
    "hosting": {"domain": "domain", "ip": "ip", "panel_url": "url"},
    "vps": {"hostname": "hostname", "ip": "ip", "panel_url": "url"},
    "dedicated": {"hostname": "hostname", "ip": "ip", "ipmi_url": "url"},
    "domain": {"domain": "domain"},
    "dns": {"domain": "domain"},
    "database": {"host": "hostname", "port": "port"},
}
# the free text of a custom service may be longer than one line of 200 characters
LENGTHS = {"custom": {"details": 2000}}


class Frozen(Model):
    class Meta:
        legacy_table_names = False


class Service(Frozen):
    class Meta:
        table_name = "service"


class ServiceEvent(Frozen):
    service = ForeignKeyField(Service, on_delete="CASCADE")
    kind = CharField()
    actor = CharField()
    text = TextField(default="")
    created_at = DateTimeField()

    class Meta:
        table_name = "service_event"


def with_kinds(code, fields):
    """``fields`` of the product type ``code`` with a kind each."""
    out = []
    for field in fields:
        if not isinstance(field, dict) or "name" not in field:
            out.append(field)
            continue
        field = dict(field)
        if not field.get("kind"):
            field["kind"] = KINDS.get(code, {}).get(field["name"], "text")
            length = LENGTHS.get(code, {}).get(field["name"])
            if length and field["kind"] == "text":
                field["max_length"] = length
        out.append(field)
    return out


def up(migrator, db):
    rows = db.execute_sql("SELECT id, code, detail_fields FROM product_type").fetchall()
    for id_, code, text in rows:
        try:
            fields = json.loads(text or "[]")
        except ValueError:
            continue
        if not isinstance(fields, list):
            continue
        changed = with_kinds(code, fields)
        if changed != fields:
            db.execute_sql(
                "UPDATE product_type SET detail_fields = %s WHERE id = %s".replace("%s", db.param),
                (json.dumps(changed, sort_keys=True), id_),
            )
    with db.bind_ctx([ServiceEvent], bind_refs=False, bind_backrefs=False):
        db.create_tables([ServiceEvent], safe=True)
