"""The scheduler's heartbeat: one row per sweep (operations, mail, proxy) saying when it
last ran, whether it failed as a whole and how many of its rows failed, so that
``/api/v1/health`` and ``/metrics`` on any machine can tell a stopped scheduler.

Frozen: a plain peewee model of this file's own.
"""

from peewee import CharField, DateTimeField, FloatField, IntegerField, Model, TextField


class Sweep(Model):
    name = CharField(unique=True)
    last_run_at = DateTimeField()
    last_ok_at = DateTimeField(null=True)
    last_error = TextField(null=True)
    failed_rows = IntegerField(default=0)
    duration = FloatField(default=0)
    scheduler = CharField(default="")

    class Meta:
        table_name = "sweep"
        legacy_table_names = False


def up(migrator, db):
    with db.bind_ctx([Sweep], bind_refs=False, bind_backrefs=False):
        db.create_tables([Sweep], safe=True)
