"""The language of a client's area and emails (``client.language``: ``en`` or ``ru``).
Existing clients keep English."""

from peewee import CharField


def up(migrator, db):
    migrator.migrate(migrator.add_column("client", "language", CharField(default="en")))
