"""The client record: contact details on ``client`` (phone, company, address, country),
staff notes (``client_note``), the log of staff viewing the client area as a client
(``impersonation``), and password reset links (``password_reset``, the token's hash).

Frozen: plain peewee models of this file's own.
"""

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


class Frozen(Model):
    class Meta:
        legacy_table_names = False


class Client(Frozen):
    class Meta:
        table_name = "client"


class User(Frozen):
    class Meta:
        table_name = "user"


class ClientNote(Frozen):
    client = ForeignKeyField(Client, on_delete="CASCADE")
    author = CharField()
    text = TextField()
    created_at = DateTimeField(index=True)

    class Meta:
        table_name = "client_note"


class Impersonation(Frozen):
    client = ForeignKeyField(Client, on_delete="CASCADE")
    staff = ForeignKeyField(User, null=True, on_delete="SET NULL")
    staff_email = CharField()
    started_at = DateTimeField(index=True)

    class Meta:
        table_name = "impersonation"


class PasswordReset(Frozen):
    user = ForeignKeyField(User, on_delete="CASCADE")
    token_hash = CharField(unique=True)
    created_by = CharField()
    created_at = DateTimeField()
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)

    class Meta:
        table_name = "password_reset"


TABLES = [ClientNote, Impersonation, PasswordReset]


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("client", "phone", CharField(default="")),
        migrator.add_column("client", "company", CharField(default="")),
        migrator.add_column("client", "address", TextField(default="")),
        migrator.add_column("client", "country", CharField(default="")),
    )
    with db.bind_ctx(TABLES, bind_refs=False, bind_backrefs=False):
        db.create_tables(TABLES, safe=True)
