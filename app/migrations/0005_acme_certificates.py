"""ACME certificates (the ``acme`` module type): the CA accounts, the http-01 tokens
Provisor answers while an order is pending, the issued certificates with their encrypted
private keys; the ``certificate`` product type orders a list of domain names (the first
is the common name) instead of one.

Frozen: plain peewee models and this file's own copies of the seed values.
"""

import json

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


class Frozen(Model):
    class Meta:
        legacy_table_names = False


class Service(Frozen):
    class Meta:
        table_name = "service"


class Operation(Frozen):
    class Meta:
        table_name = "operation"


class AcmeAccount(Frozen):
    identity = CharField(unique=True)
    directory_url = TextField()
    email = CharField()
    eab_kid = CharField(null=True)
    key_encrypted = TextField()
    url = TextField(null=True)
    created_at = DateTimeField()
    updated_at = DateTimeField()

    class Meta:
        table_name = "acme_account"


class AcmeChallenge(Frozen):
    token = CharField(unique=True)
    key_authorization = TextField()
    domain = CharField()
    service = ForeignKeyField(Service, null=True, on_delete="CASCADE")
    created_at = DateTimeField(index=True)

    class Meta:
        table_name = "acme_challenge"


class AcmeCertificate(Frozen):
    service = ForeignKeyField(Service, on_delete="CASCADE")
    operation = ForeignKeyField(Operation, null=True, on_delete="SET NULL")
    account = ForeignKeyField(AcmeAccount, null=True, on_delete="SET NULL")
    order_url = TextField(unique=True)
    names = TextField()
    serial = CharField(index=True)
    issuer = TextField()
    not_before = DateTimeField()
    not_after = DateTimeField()
    certificate_pem = TextField()
    chain_pem = TextField()
    key_encrypted = TextField()
    revoked_at = DateTimeField(null=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "acme_certificate"


TABLES = [AcmeAccount, AcmeChallenge, AcmeCertificate]

# what 0002_module_interface_v2 gave the certificate product type, and what it asks now
OLD_ORDER_FIELDS = [{"name": "domain", "label": "Domain name", "kind": "domain", "required": True}]
ORDER_FIELDS = [
    {
        "name": "domains",
        "label": "Domain names (the first is the common name)",
        "kind": "domains",
        "required": True,
        "max_count": 10,
    }
]


def up(migrator, db):
    with db.bind_ctx(TABLES, bind_refs=False, bind_backrefs=False):
        db.create_tables(TABLES, safe=True)
    row = db.execute_sql(
        "SELECT order_fields FROM product_type WHERE code = " + db.param, ("certificate",)
    ).fetchone()
    # a provider who changed the certificate's order fields keeps them
    if row is not None and json.loads(row[0] or "[]") == OLD_ORDER_FIELDS:
        db.execute_sql(
            "UPDATE product_type SET order_fields = %s WHERE code = %s".replace("%s", db.param),
            (json.dumps(ORDER_FIELDS, sort_keys=True), "certificate"),
        )
