"""Items carry settings: what the module type declares in ``item_fields`` (a record
template, a connection limit, a VM plan), edited on the tariff."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("item", "settings", TextField(default="{}")))
