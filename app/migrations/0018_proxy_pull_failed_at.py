"""Tasks proxy: a failed pull is recorded by itself (``proxy_client_side.pull_failed_at``),
so that the next pull waits a full interval after a failed *pull* only. The sweep used to
wait on the client side's last error of any kind, and a peer whose push side kept failing
(each failed push sets that error anew) was not pulled for as long as it failed."""

from peewee import DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("proxy_client_side", "pull_failed_at", DateTimeField(null=True))
    )
