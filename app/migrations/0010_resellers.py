"""Resellers paying on account (the ``provisor`` module type of another Provisor orders
here): ``client.on_account``, and ``reseller_request``, one row per idempotency key of a
reseller (unique per client) with the order or operation it made.

Frozen: plain peewee models of this file's own.
"""

from peewee import BooleanField, CharField, DateTimeField, ForeignKeyField, Model


class Frozen(Model):
    class Meta:
        legacy_table_names = False


class Client(Frozen):
    class Meta:
        table_name = "client"


class Order(Frozen):
    class Meta:
        table_name = "order"


class Service(Frozen):
    class Meta:
        table_name = "service"


class Operation(Frozen):
    class Meta:
        table_name = "operation"


class ResellerRequest(Frozen):
    client = ForeignKeyField(Client, on_delete="CASCADE")
    key = CharField()
    kind = CharField()
    order = ForeignKeyField(Order, null=True, on_delete="CASCADE")
    service = ForeignKeyField(Service, null=True, on_delete="CASCADE")
    operation = ForeignKeyField(Operation, null=True, on_delete="SET NULL")
    created_at = DateTimeField()

    class Meta:
        table_name = "reseller_request"
        indexes = ((("client", "key"), True),)


def up(migrator, db):
    migrator.migrate(migrator.add_column("client", "on_account", BooleanField(default=False)))
    with db.bind_ctx([ResellerRequest], bind_refs=False, bind_backrefs=False):
        db.create_tables([ResellerRequest], safe=True)
