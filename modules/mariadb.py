"""The mariadb module type: database hosting on a MariaDB server (10.5 or later: it marks
its databases with a COMMENT and reads users from ``mysql.global_priv``; MySQL has neither).

What a service is, ownership, passwords and each operation: :mod:`modules.databases`.
Here: a service's database carries its mark as its ``COMMENT`` (MariaDB 10.5+); its user
``'<name>'@'<client hosts>'`` gets ``ALL PRIVILEGES`` on that database only (the name's
``_`` escaped in the grant: unescaped, ``db_4`` would also match ``dbx4``), a password
set as its ``mysql_native_password`` hash, and ``MAX_USER_CONNECTIONS`` from the tariff.
Suspension is ``ACCOUNT LOCK`` plus ``KILL CONNECTION`` of its sessions.

The admin user needs, besides creating and dropping the databases and granting on them
(``ALL PRIVILEGES ON *.* WITH GRANT OPTION`` covers it all): ``CREATE USER``,
``PROCESS`` (to see the service's sessions), ``CONNECTION ADMIN`` or ``SUPER`` (to end
them) and ``SELECT`` on ``mysql.global_priv`` (to look users up).
"""

import hashlib
import math
import re
import ssl

import pymysql

from modules.base import ConfigField, PermanentError
from modules.databases import (
    DatabaseModule,
    Remote,
    Session,
    config_fields,
    quote_identifier,
)

# error codes worth trying again: the server is down, restarting, busy or overloaded,
# a lock or deadlock, the connection lost or timed out, a read-only (failing-over) server
TEMPORARY_CODES = {
    1040,  # too many connections
    1043,  # bad handshake
    1053,  # server shutdown in progress
    1152,  # aborted connection
    1153,  # packet too large (network)
    1158,  # network read error
    1159,  # network read timeout
    1160,  # network write error
    1161,  # network write timeout
    1203,  # user has max connections
    1205,  # lock wait timeout
    1213,  # deadlock
    1226,  # user resource exceeded
    1290,  # --read-only
    1317,  # query interrupted
    1836,  # read-only mode
    1927,  # connection killed
    1969,  # max_statement_time exceeded
    2002,  # cannot connect (socket)
    2003,  # cannot connect (TCP)
    2006,  # server has gone away
    2013,  # lost connection (timed out)
    2055,  # lost connection (system error)
}
_CONNECT_REASON = re.compile(r"\((?:\[Errno -?\d+\] )?([^()]+)\)$")
_USER_HOST = re.compile(r"^[A-Za-z0-9.%_:/-]{1,255}$")


def native_hash(password):
    """``mysql_native_password``'s stored form of ``password`` (``*`` + SHA1(SHA1))."""
    digest = hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest()
    return "*" + digest.upper()


def grant_pattern(name):
    """``name`` as a database pattern of GRANT: ``_`` and ``%`` are wildcards there."""
    return quote_identifier(re.sub(r"([_%\\])", r"\\\1", name), "`")


def _ident(name):
    return quote_identifier(name, "`")


def _literal(text):
    """A string literal for the log (the statement itself carries it as a parameter)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


class MariaDBSession(Session):
    label = "MariaDB"
    rights_hint = (
        "Grant them (ALL PRIVILEGES ON *.* WITH GRANT OPTION covers all; the README gives "
        "the least-privilege grants)."
    )

    def _connect(self):
        config = self.module.config
        seconds = self.module.call_timeout()
        # the server gives up first (a lock, a long statement), in its own words; the
        # socket's timeout is for a server that does not answer at all
        socket_seconds = seconds + self.module.SOCKET_MARGIN
        options = {
            "host": config.get("host"),
            "port": int(config.get("port") or 3306),
            "user": config.get("admin_user"),
            "password": config.get("admin_password") or "",
            "connect_timeout": seconds,
            "read_timeout": socket_seconds,
            "write_timeout": socket_seconds,
            "autocommit": True,
            "charset": "utf8mb4",
            "init_command": f"SET SESSION lock_wait_timeout = {max(1, math.floor(seconds))}, "
            f"SESSION max_statement_time = {seconds + 2:g}",
        }
        tls = config.get("tls") or "off"
        if tls == "off":
            options["ssl_disabled"] = True
        elif tls == "verify":
            options["ssl"] = ssl.create_default_context(cafile=self.module.tls_bundle())
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            options["ssl"] = context
        return pymysql.connect(**options)

    def _execute(self, sql, params):
        with self.conn.cursor() as cursor:
            cursor.execute(sql, tuple(params) if params else None)
            return list(cursor.fetchall()) if cursor.description else []

    def describe(self, exc):
        args = getattr(exc, "args", ())
        if isinstance(exc, pymysql.err.MySQLError) and len(args) >= 2:
            text = " ".join(str(args[1]).split())
            # "Can't connect to MySQL server on '10.0.0.5' ([Errno 111] Connection
            # refused)": the address is in the message already, the reason is what counts
            found = _CONNECT_REASON.search(text) if args[0] in (2002, 2003) else None
            if found:
                text = found.group(1)
            return f"{text[:300]} ({args[0]})"
        return super().describe(exc)

    def temporary(self, exc):
        text = str(exc).lower()
        if "ssl" in text or "certificate" in text:
            return False  # a TLS setting that does not fit the server: a person decides
        if isinstance(exc, pymysql.err.InterfaceError):
            return True  # the connection is closed
        args = getattr(exc, "args", ())
        if isinstance(exc, pymysql.err.MySQLError) and args and isinstance(args[0], int):
            return args[0] in TEMPORARY_CODES
        return isinstance(exc, OSError)

    def version(self):
        return "MariaDB " + str(self.run("SELECT VERSION()")[0][0]).split("-MariaDB")[0]

    def max_connections(self):
        return int(self.run("SELECT @@GLOBAL.max_connections")[0][0])

    def missing_rights(self):
        rows = self.run(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = "
            "CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', "
            "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')"
        )
        have = {str(r[0]).upper() for r in rows}
        missing = [
            f"{right} ({why})"
            for right, why in (
                ("CREATE USER", "to create the services' users"),
                ("PROCESS", "to see a suspended service's sessions"),
            )
            if right not in have
        ]
        if not have & {"CONNECTION ADMIN", "SUPER"}:
            missing.append("CONNECTION ADMIN or SUPER (to end a suspended service's sessions)")
        try:
            self.run("SELECT 1 FROM mysql.global_priv WHERE User = %s", ("",))
        except PermanentError:  # 1142: the server refused it
            missing.append("SELECT ON mysql.global_priv (to look the services' users up)")
        return missing

    # --- the service's objects ------------------------------------------------------------

    def lookup(self, name, mark):
        schema = self.run(
            "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (name,),
        )
        users = self.run(
            "SELECT Host, JSON_VALUE(Priv, '$.account_locked'), "
            "JSON_VALUE(Priv, '$.max_user_connections') FROM mysql.global_priv WHERE User = %s",
            (name,),
        )
        remote = Remote(database=bool(schema), user=bool(users))
        remote.hosts = tuple(str(u[0]) for u in users)
        remote.locked = any(str(u[1]).lower() in ("1", "true") for u in users)
        if users and users[0][2] is not None:
            remote.connection_limit = int(users[0][2])
        if schema and (schema[0][0] or "") != mark:
            remote.foreign = f"the database {name} exists with the comment {schema[0][0]!r}"
        elif not schema and users:
            remote.foreign = (
                f"the user {name} exists (@{', @'.join(remote.hosts)}) without its database"
            )
        return remote

    def _user_host(self):
        return self.module.config.get("user_host") or "%"

    def _hosts(self, name, remote=None):
        hosts = list(remote.hosts) if remote is not None else []
        if not hosts:
            hosts = [
                str(r[0])
                for r in self.run("SELECT Host FROM mysql.global_priv WHERE User = %s", (name,))
            ]
        return hosts

    def create(self, name, mark, password, limit, remote):
        if not remote.database:
            self.run(
                f"CREATE DATABASE {_ident(name)} CHARACTER SET utf8mb4 COMMENT %s",
                (mark,),
                shown=f"CREATE DATABASE {_ident(name)} CHARACTER SET utf8mb4 COMMENT "
                + _literal(mark),
            )
        host = self._user_host()
        account = f"{_literal(name)}@{_literal(host)}"
        hashed = self.ctx.secret(native_hash(password))
        if host not in remote.hosts:
            self.run(
                "CREATE USER %s@%s IDENTIFIED BY PASSWORD %s",
                (name, host, hashed),
                shown=f"CREATE USER {account} IDENTIFIED BY PASSWORD '********'",
            )
        self.run(
            "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s WITH MAX_USER_CONNECTIONS %s "
            "ACCOUNT UNLOCK",
            (name, host, hashed, int(limit)),
            shown=f"ALTER USER {account} IDENTIFIED BY PASSWORD '********' WITH "
            f"MAX_USER_CONNECTIONS {int(limit)} ACCOUNT UNLOCK",
        )
        self.run(
            f"GRANT ALL PRIVILEGES ON {grant_pattern(name)}.* TO %s@%s",
            (name, host),
            shown=f"GRANT ALL PRIVILEGES ON {grant_pattern(name)}.* TO {account}",
        )

    def _each_account(self, name, clause, remote=None):
        for host in self._hosts(name, remote):
            self.run(
                f"ALTER USER %s@%s {clause}",
                (name, host),
                shown=f"ALTER USER {_literal(name)}@{_literal(host)} {clause}",
            )

    def set_login(self, name, allowed):
        self._each_account(name, "ACCOUNT UNLOCK" if allowed else "ACCOUNT LOCK")

    def set_limit(self, name, limit):
        self._each_account(name, f"WITH MAX_USER_CONNECTIONS {int(limit)}")

    def set_password(self, name, password):
        hashed = self.ctx.secret(native_hash(password))
        for host in self._hosts(name):
            self.run(
                "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s",
                (name, host, hashed),
                shown=f"ALTER USER {_literal(name)}@{_literal(host)} IDENTIFIED BY PASSWORD "
                "'********'",
            )

    def end_sessions(self, name):
        ended = 0
        for (thread,) in self.run(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (name,)
        ):
            try:
                self.run(f"KILL CONNECTION {int(thread)}")
                ended += 1
            except Exception as exc:  # noqa: BLE001
                if "(1094)" not in str(exc):  # Unknown thread id: it ended by itself
                    raise
        return ended

    def drop(self, name, remote):
        # the user first: a close that dies in between leaves the marked database, which
        # the next attempt recognises and drops
        for host in self._hosts(name, remote) if remote.user else []:
            self.run(
                "DROP USER IF EXISTS %s@%s",
                (name, host),
                shown=f"DROP USER IF EXISTS {_literal(name)}@{_literal(host)}",
            )
        if remote.database:
            self.run(f"DROP DATABASE IF EXISTS {_ident(name)}")


class MariaDBModule(DatabaseModule):
    id = "mariadb"
    name = "MariaDB (database hosting)"
    description = (
        "A database and a user of its own for each service on a MariaDB server; "
        "suspension locks the user and ends its sessions."
    )
    scheme = "mariadb"
    default_port = 3306
    session_class = MariaDBSession
    config_fields = config_fields(
        3306,
        "root",
        "Needs CREATE USER, PROCESS, CONNECTION ADMIN, SELECT ON mysql.global_priv and ALL "
        "PRIVILEGES WITH GRANT OPTION on the prefix's databases (ALL PRIVILEGES ON *.* "
        "WITH GRANT OPTION covers them).",
        extra=(
            ConfigField(
                "user_host",
                "Clients connect from",
                default="%",
                help="The host part of the services' accounts: % (anywhere), an address, "
                "or a pattern such as 10.0.%.",
            ),
        ),
    )

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        host = cleaned.get("user_host")
        if "user_host" not in errors and host and not _USER_HOST.match(host):
            errors["user_host"] = "A host, an address or a pattern with % (e.g. 10.0.%)."
        return cleaned, errors
