"""Notices: the emails a client gets when a service is suspended, resumed, closed, moved
to another tariff or given a new password, editable per product type
(``product_type.notice_templates``: ``{kind: {"subject", "template"}}``; an empty object
means the default texts)."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("product_type", "notice_templates", TextField(default="{}"))
    )
