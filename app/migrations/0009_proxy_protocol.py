"""Tasks proxy protocol 1: one retry schedule per client side (``next_push_at``,
``push_failures``: a capped backoff; ``pulling_until``: one pull at a time), and event ids checked per sender task and content
(``sender_task_id``, ``digest`` on each received event id: a replay is answered as one, a
reuse for another task or other content is refused instead of dropped). Rows received
before have neither and count as replays of anything with their id."""

from peewee import BigIntegerField, CharField, DateTimeField, IntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("proxy_client_side", "next_push_at", DateTimeField(null=True)),
        migrator.add_column("proxy_client_side", "push_failures", IntegerField(default=0)),
        migrator.add_column("proxy_client_side", "pulling_until", DateTimeField(null=True)),
        migrator.add_column("proxy_received", "sender_task_id", BigIntegerField(null=True)),
        migrator.add_column("proxy_received", "digest", CharField(null=True)),
    )
