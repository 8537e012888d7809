"""Server-side session invalidation: a user's ``session_version`` is stamped into each page
session at login, and raising it (logout, a new password) ends the sessions made before.
Existing logins start at 0."""

from peewee import IntegerField


def up(migrator, db):
    migrator.migrate(migrator.add_column("user", "session_version", IntegerField(default=0)))
