"""A cancelled setup and modules' departments.

``service.setup_cancelled_reason``: why people cancelled the setup of a service (its
``open`` operation or that operation's task), shown to staff and to the client while the
service is ``setup_cancelled``.

Every module has a department (its tasks go there): a module saved without one gets the
default department, "Support", which is made when there is none of that name.

Frozen: plain peewee models of this file's own.
"""

import datetime

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField

DEFAULT_DEPARTMENT = "Support"


class Frozen(Model):
    class Meta:
        legacy_table_names = False


class Department(Frozen):
    name = CharField(unique=True)
    notify_email = CharField(null=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "department"


class ProcessingModule(Frozen):
    department = ForeignKeyField(Department, null=True, on_delete="SET NULL")

    class Meta:
        table_name = "processing_module"


def up(migrator, db):
    migrator.migrate(migrator.add_column("service", "setup_cancelled_reason", TextField(null=True)))
    with db.bind_ctx([Department, ProcessingModule], bind_refs=False, bind_backrefs=False):
        without = ProcessingModule.select(ProcessingModule.id).where(
            ProcessingModule.department.is_null()
        )
        if not without.exists():
            return
        department = Department.get_or_none(Department.name == DEFAULT_DEPARTMENT)
        if department is None:
            department = Department.create(
                name=DEFAULT_DEPARTMENT,
                created_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
            )
        ProcessingModule.update(department=department.id).where(
            ProcessingModule.department.is_null()
        ).execute()
