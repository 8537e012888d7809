"""Outgoing events (webhooks): ``webhook_endpoint`` (a URL, its encrypted signing secret,
the event types it wants), ``event`` (the outbox: one row per event, written in the
transaction of the change it reports), ``event_delivery`` (one event to one endpoint)
and ``delivery_attempt`` (each POST and its answer).

Frozen: plain peewee models of this file's own.
"""

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


class Frozen(Model):
    class Meta:
        legacy_table_names = False


class WebhookEndpoint(Frozen):
    url = CharField(max_length=2000)
    secret_encrypted = TextField()
    event_types = TextField(default="[]")
    enabled = BooleanField(default=True)
    description = CharField(default="")
    created_at = DateTimeField()
    updated_at = DateTimeField()

    class Meta:
        table_name = "webhook_endpoint"


class Event(Frozen):
    uid = CharField(unique=True)
    type = CharField(index=True)
    subject = CharField()
    subject_id = BigIntegerField(null=True)
    data = TextField(default="{}")
    created_at = DateTimeField(index=True)

    class Meta:
        table_name = "event"


class EventDelivery(Frozen):
    event = ForeignKeyField(Event, on_delete="CASCADE")
    endpoint = ForeignKeyField(WebhookEndpoint, on_delete="CASCADE")
    status = CharField(default="pending", index=True)
    attempts = IntegerField(default=0)
    next_try_at = DateTimeField(null=True)
    last_status_code = IntegerField(null=True)
    last_error = TextField(null=True)
    created_at = DateTimeField()
    delivered_at = DateTimeField(null=True)

    class Meta:
        table_name = "event_delivery"
        indexes = ((("event", "endpoint"), True), (("status", "next_try_at"), False))


class DeliveryAttempt(Frozen):
    delivery = ForeignKeyField(EventDelivery, on_delete="CASCADE")
    number = IntegerField()
    started_at = DateTimeField()
    duration_ms = IntegerField(default=0)
    status_code = IntegerField(null=True)
    error = TextField(null=True)
    response_excerpt = TextField(default="")

    class Meta:
        table_name = "delivery_attempt"


TABLES = [WebhookEndpoint, Event, EventDelivery, DeliveryAttempt]


def up(migrator, db):
    with db.bind_ctx(TABLES, bind_refs=False, bind_backrefs=False):
        db.create_tables(TABLES, safe=True)
