"""Tasks for teams: a task's ``priority`` (low, normal, high, urgent; ``normal`` for the
tasks there were) and its ``due_at`` (when it should be done; none for the tasks there
were), indexed so that the tasks list sorts by due date.

Frozen: plain peewee fields of this file's own.
"""

from peewee import CharField, DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("task", "priority", CharField(default="normal")),
        migrator.add_column("task", "due_at", DateTimeField(null=True, index=True)),
    )
