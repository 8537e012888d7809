"""Indexes for a database of a million operations (bench/million.py, issue 14):

- ``operation (service_id, created_at)``: a service's page lists its operations newest
  first, 50 at a time. With only ``service_id`` and ``created_at`` indexed apart,
  PostgreSQL walked ``created_at`` backwards through every operation to find the newest
  50 of an old service (168 ms with 1,010,000 operations);
- ``email (status, next_try_at)``: the mail sweep's due and stuck emails. SQLite does not
  use the ``status`` index when nearly every row has the same status (``sent``) and read
  the whole table twice per sweep (40 ms of SQL per sweep with 250,000 emails).

Frozen: no import of app.models.
"""


def up(migrator, db):
    migrator.migrate(
        migrator.add_index("operation", ("service_id", "created_at"), False),
        migrator.add_index("email", ("status", "next_try_at"), False),
    )
