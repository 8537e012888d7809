"""The postgresql module type: database hosting on a PostgreSQL server (14 or later).

What a service is, ownership, passwords and each operation: :mod:`modules.databases`.
Here: a service's role carries its mark as its ``COMMENT`` (created in one transaction
with it, so a role without the mark is never one of Provisor's); its database is owned by
that role, with ``CONNECT`` revoked from ``PUBLIC`` so no other role gets in. The password
is set as a SCRAM-SHA-256 verifier computed here, the tariff's connection limit as the
role's ``CONNECTION LIMIT``. Suspension is ``NOLOGIN`` plus ``pg_terminate_backend`` of its
sessions.

The admin role needs ``CREATEDB`` and ``CREATEROLE`` (a superuser works too, but is not
needed). Without superuser, the admin makes itself a member of each service's role (to
create the database owned by it and to end its sessions).
"""

import base64
import hashlib
import hmac
import math
import os
import re

from modules.base import ConfigField
from modules.databases import DatabaseModule, Remote, Session, config_fields, quote_identifier

# SQLSTATE classes and codes worth trying again: connection exceptions, insufficient
# resources, operator intervention (shutdown, statement timeout), system errors,
# transaction rollbacks (deadlock, serialization), lock not available, object in use,
# a read-only (standby) server
TEMPORARY_CLASSES = ("08", "53", "57", "58", "40")
TEMPORARY_CODES = {"55P03", "55006", "25006"}
# connection failures that are about the settings, not the server's health
PERMANENT_CONNECT_WORDS = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "not permitted to log in",
    "ssl",
    "certificate",
    "authentication",
)
SCRAM_ITERATIONS = 4096
_WHERE = re.compile(r'^connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed: ')


def scram_verifier(password, iterations=SCRAM_ITERATIONS, salt=None):
    """What PostgreSQL stores for ``password`` under SCRAM-SHA-256 (RFC 5802, RFC 7677):
    given to ``PASSWORD``, the clear text never reaches the server."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(data):
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _ident(name):
    return quote_identifier(name, '"')


def _literal(text):
    return "'" + text.replace("'", "''") + "'"


class PostgreSQLSession(Session):
    label = "PostgreSQL"
    rights_hint = "ALTER ROLE the admin WITH CREATEDB CREATEROLE."

    def _connect(self):
        import psycopg2

        config = self.module.config
        seconds = self.module.call_timeout()
        millis = int(seconds * 1000)
        lock_millis = max(500, int(millis * 0.8))  # a lock says so before the statement
        options = {
            "host": config.get("host"),
            "port": int(config.get("port") or 5432),
            "user": config.get("admin_user"),
            "password": config.get("admin_password") or None,
            "dbname": config.get("admin_database") or "postgres",
            "connect_timeout": max(1, math.ceil(seconds)),
            "application_name": "provisor",
            "options": f"-c statement_timeout={millis} -c lock_timeout={lock_millis}",
            # a server that stops answering: the link is found dead within seconds
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(seconds)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": int((seconds + self.module.SOCKET_MARGIN) * 1000),
        }
        tls = config.get("tls") or "off"
        if tls == "off":
            options["sslmode"] = "disable"
        elif tls == "require":
            options["sslmode"] = "require"
        else:
            options["sslmode"] = "verify-full"
            options["sslrootcert"] = self.module.tls_bundle() or "system"
        conn = psycopg2.connect(**options)
        conn.autocommit = True
        return conn

    def _execute(self, sql, params):
        with self.conn.cursor() as cursor:
            cursor.execute(sql, tuple(params) if params else None)
            return list(cursor.fetchall()) if cursor.description else []

    def describe(self, exc):
        # libpq repeats where it connected (the attempt log says so already), and puts
        # its hint on a line of its own
        lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
        text = _WHERE.sub("", "; ".join(lines))
        code = getattr(exc, "pgcode", None)
        return (f"{text[:300]} ({code})" if code else text[:300]) or exc.__class__.__name__

    def temporary(self, exc):
        import psycopg2

        code = getattr(exc, "pgcode", None)
        if code:
            return code[:2] in TEMPORARY_CLASSES or code in TEMPORARY_CODES
        if isinstance(exc, psycopg2.OperationalError):  # connecting, or the link broke
            text = str(exc).lower()
            return not any(words in text for words in PERMANENT_CONNECT_WORDS)
        return isinstance(exc, (psycopg2.InterfaceError, OSError))

    def version(self):
        return "PostgreSQL " + str(self.run("SHOW server_version")[0][0]).split()[0]

    def max_connections(self):
        return int(self.run("SHOW max_connections")[0][0])

    def _admin(self):
        return self.run(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )[0]

    def missing_rights(self):
        superuser, createdb, createrole = self._admin()
        if superuser:
            return []
        missing = []
        if not createdb:
            missing.append("CREATEDB (to create the services' databases)")
        if not createrole:
            missing.append("CREATEROLE (to create, suspend and drop the services' roles)")
        return missing

    # --- the service's objects ------------------------------------------------------------

    def lookup(self, name, mark):
        roles = self.run(
            "SELECT rolcanlogin, rolconnlimit, shobj_description(oid, 'pg_authid') "
            "FROM pg_roles WHERE rolname = %s",
            (name,),
        )
        databases = self.run(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
        )
        remote = Remote(database=bool(databases), user=bool(roles))
        if roles:
            can_login, limit, comment = roles[0]
            remote.locked = not can_login
            remote.connection_limit = None if limit < 0 else int(limit)
            if (comment or "") != mark:
                remote.foreign = f"the role {name} exists with the comment {comment!r}"
                return remote
        if databases and (not roles or databases[0][0] != name):
            remote.foreign = f"the database {name} exists, owned by {databases[0][0]!r}"
        return remote

    def _membership(self, name):
        """A non-superuser admin acts on the role's objects as a member of it (granted
        once per session)."""
        granted = self.__dict__.setdefault("_members_of", set())
        if name not in granted and not self._admin()[0]:
            self.run(f"GRANT {_ident(name)} TO CURRENT_USER")
        granted.add(name)

    def create(self, name, mark, password, limit, remote):
        verifier = self.ctx.secret(scram_verifier(password))
        limit_sql = int(limit) if limit else -1
        if not remote.user:
            # the role and its mark in one transaction: never a role without the mark
            self.run(
                f"CREATE ROLE {_ident(name)} LOGIN PASSWORD %s CONNECTION LIMIT {limit_sql}; "
                f"COMMENT ON ROLE {_ident(name)} IS %s",
                (verifier, mark),
                shown=f"CREATE ROLE {_ident(name)} LOGIN PASSWORD '********' CONNECTION LIMIT "
                f"{limit_sql}; COMMENT ON ROLE {_ident(name)} IS {_literal(mark)}",
            )
        else:
            self.run(
                f"ALTER ROLE {_ident(name)} LOGIN PASSWORD %s CONNECTION LIMIT {limit_sql}",
                (verifier,),
                shown=f"ALTER ROLE {_ident(name)} LOGIN PASSWORD '********' CONNECTION LIMIT "
                f"{limit_sql}",
            )
        self._membership(name)
        if not remote.database:
            self.run(f"CREATE DATABASE {_ident(name)} OWNER {_ident(name)}")
        self.run(
            f"COMMENT ON DATABASE {_ident(name)} IS %s",
            (mark,),
            shown=f"COMMENT ON DATABASE {_ident(name)} IS {_literal(mark)}",
        )
        self.run(f"REVOKE ALL ON DATABASE {_ident(name)} FROM PUBLIC")

    def set_login(self, name, allowed):
        self.run(f"ALTER ROLE {_ident(name)} {'LOGIN' if allowed else 'NOLOGIN'}")

    def set_limit(self, name, limit):
        self.run(f"ALTER ROLE {_ident(name)} CONNECTION LIMIT {int(limit) if limit else -1}")

    def set_password(self, name, password):
        verifier = self.ctx.secret(scram_verifier(password))
        self.run(
            f"ALTER ROLE {_ident(name)} PASSWORD %s",
            (verifier,),
            shown=f"ALTER ROLE {_ident(name)} PASSWORD '********'",
        )

    def end_sessions(self, name):
        self._membership(name)
        rows = self.run(
            "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity WHERE usename = %s",
            (int(self.module.call_timeout() * 500), name),
        )
        return sum(1 for (ended,) in rows if ended)

    def drop(self, name, remote):
        # the database first: a close that dies in between leaves the marked role, which
        # the next attempt recognises and drops
        if remote.database:
            self._membership(name)
            self.run(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
        if remote.user:
            self.run(f"DROP ROLE IF EXISTS {_ident(name)}")


class PostgreSQLModule(DatabaseModule):
    id = "postgresql"
    name = "PostgreSQL (database hosting)"
    description = (
        "A database and a role of its own for each service on a PostgreSQL server; "
        "suspension stops the role logging in and ends its sessions."
    )
    scheme = "postgresql"
    default_port = 5432
    session_class = PostgreSQLSession
    config_fields = config_fields(
        5432,
        "postgres",
        "A role with CREATEDB and CREATEROLE (need not be a superuser).",
        extra=(
            ConfigField(
                "admin_database",
                "Admin database",
                default="postgres",
                help="The database Provisor connects to as the admin.",
            ),
        ),
    )

    def _field_of(self, message):
        if "database" in message and "does not exist" in message:
            return "admin_database"
        return super()._field_of(message)
