"""Tasks proxy pulls.

- A failed pull is recorded by itself (``proxy_client_side.pull_failed_at``), so that the
  next pull waits a full interval after a failed *pull* only. The sweep used to wait on
  the client side's last error of any kind, and a peer whose push side kept failing (each
  failed push sets that error anew) was not pulled for as long as it failed.
- The cursor (``proxy_client_side.cursor``) holds any event id a peer may send (protocol
  1: up to 18 digits): ``bigint`` on PostgreSQL, where ``integer`` stopped every pull at
  the first event id beyond 2,147,483,647. (SQLite's integers are 64-bit already.)
"""

from peewee import BigIntegerField, DateTimeField
from playhouse.migrate import PostgresqlMigrator


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("proxy_client_side", "pull_failed_at", DateTimeField(null=True))
    )
    if isinstance(migrator, PostgresqlMigrator):
        migrator.migrate(
            migrator.alter_column_type("proxy_client_side", "cursor", BigIntegerField(default=0))
        )
