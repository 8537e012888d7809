"""Database hosting: what the ``mariadb`` and ``postgresql`` module types share.

A service is one database and one user of the same name on the provider's server,
``<name prefix><order prefix>_<service id>`` (``db_42``, ``db_shop_42`` when the client
gave the order field ``prefix`` "shop"), the user allowed into that database only. The
module connects as the configured admin user; every statement it sends is in the
attempt log (the admin password and the client's password masked; passwords are sent as
hashes computed here, never as clear text in SQL).

**Ownership.** The object that carries the service's mark (``<owner tag>:service-<id>``:
the database's comment on MariaDB, the role's comment on PostgreSQL) says a name is this
service's. An attempt looks the name up first and takes over what carries its mark (an
earlier attempt died after creating it) and creates only what is missing; a name that
exists without the mark (made by hand, by another Provisor with another owner tag, by
another service) is refused permanently and never touched.

**The password** is generated on the first attempt of ``open``, stored encrypted in the
operation's state before anything is created (a later attempt sets the same one), and
given to the client in the service's details (and the welcome email).

**Suspension** stops the user logging in (MariaDB ``ACCOUNT LOCK``, PostgreSQL
``NOLOGIN``) and ends its open sessions; ``resume`` lets it log in again. The data stays.
``close`` ends the sessions and drops the database and the user. ``change_tariff`` applies
the new tariff's connection limit. ``change_password`` gives the user the new password
Provisor chose (``ALTER USER``/``ALTER ROLE ... PASSWORD``, as a hash). ``ensure_item`` checks the admin's rights on the server
(it creates a trial database and user with the tariff's limits and drops them again).
"""

import contextlib
import re
import secrets
import time
from dataclasses import dataclass

from modules.base import (
    OWNER_TAG,
    OWNER_TAG_RULE,
    ConfigField,
    ConfigProblem,
    ModuleType,
    PermanentError,
    QuietLog,
    Result,
    TemporaryError,
    new_password,
    new_service_password,
    operation_password,
    pem_file,
)

NAME_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
PASSWORD_PURPOSE = "database-password"
MAX_NAME = 48  # every server takes this much (MariaDB users: 80, PostgreSQL: 63)


def _with_values(sql, params):
    """``sql`` with its ``%s`` placeholders shown as the values' literals (for the log)."""
    if not params:
        return sql
    values = iter(params)

    def literal(_):
        value = next(values, None)
        if isinstance(value, (int, float)):
            return str(value)
        return "'" + str(value).replace("'", "''") + "'"

    return re.sub(r"%s", literal, sql)


def _limit_text(limit):
    """A connection limit as clients read it."""
    return limit if limit else "unlimited (the server's maximum)"


def quote_identifier(name, quote):
    """``name`` as a quoted SQL identifier (the quote character doubled inside)."""
    return quote + name.replace(quote, quote * 2) + quote


@dataclass
class Remote:
    """What the server has under a service's name."""

    database: bool = False
    user: bool = False
    foreign: str | None = None  # why the name is someone else's (None: free or ours)
    locked: bool = False  # the user may not log in (suspended)
    connection_limit: int | None = None
    hosts: tuple = ()  # MariaDB: the host parts of the user's accounts

    @property
    def exists(self):
        return self.database or self.user


class Session:
    """One admin connection to the server; each statement is one logged remote call.

    Subclasses connect (``_connect``), say which driver errors are temporary
    (``temporary``) and implement the statements of each step."""

    label = ""  # MariaDB, PostgreSQL
    rights_hint = ""  # how to give the admin what it lacks

    def __init__(self, module, ctx=None):
        self.module = module
        self.ctx = ctx if ctx is not None else QuietLog()
        self.conn = None
        self.ctx.secret(module.config.get("admin_password"))

    def __enter__(self):
        config = self.module.config
        target = f"{self.module.scheme}://{config.get('admin_user')}@{self.module.address()}"
        with self.ctx.call("CONNECT", target) as call:
            try:
                self.conn = self._connect()
            except Exception as exc:
                call.outcome = self.describe(exc)
                raise self.error(exc, None) from None
            call.outcome = "connected"
        return self

    def __exit__(self, *exc_info):
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def run(self, sql, params=(), shown=None):
        """Execute one statement; returns its rows (a list, empty for none). ``shown``:
        the text for the log when ``sql`` carries values to keep out of it (else the
        statement with its values, as literals)."""
        shown = shown or _with_values(sql, params)
        with self.ctx.call("SQL", shown) as call:
            try:
                rows = self._execute(sql, params)
            except Exception as exc:
                call.outcome = self.describe(exc)
                raise self.error(exc, shown) from None
            reads = sql.lstrip().split(None, 1)[0].upper() in ("SELECT", "SHOW")
            call.outcome = f"{len(rows)} row(s)" if rows or reads else "ok"
        return rows

    def error(self, exc, doing):
        """The driver's exception as a Temporary- or PermanentError in the server's words
        (``doing``: the statement; None: connecting)."""
        said = self.describe(exc)
        where = f"{self.label} at {self.module.address()}"
        error = TemporaryError if self.temporary(exc) else PermanentError
        if doing is None:
            return error(f"cannot connect to {where}: {said}")
        if error is TemporaryError:
            return error(f"{where}: {said} ({doing})")
        return error(f"{self.label} refused {doing}: {said}")

    # --- what each server implements -----------------------------------------------------

    def _connect(self):
        raise NotImplementedError

    def _execute(self, sql, params):
        raise NotImplementedError

    def describe(self, exc):
        """The server's own words for an error (one line)."""
        return " ".join(str(exc).split())[:300] or exc.__class__.__name__

    def temporary(self, exc):
        raise NotImplementedError

    def version(self):
        raise NotImplementedError

    def max_connections(self):
        raise NotImplementedError

    def missing_rights(self):
        """The rights the admin user lacks to host databases, each with what it is for
        (empty: none)."""
        raise NotImplementedError

    def rights_problem(self):
        """What the admin lacks, in one sentence (None: nothing)."""
        missing = self.missing_rights()
        if not missing:
            return None
        user = self.module.config.get("admin_user")
        return f"the admin user {user!r} lacks " + "; ".join(missing) + ". " + self.rights_hint

    def lookup(self, name, mark):
        """A :class:`Remote` for ``name``, ``foreign`` set when it lacks ``mark``."""
        raise NotImplementedError

    def create(self, name, mark, password, limit, remote):
        """Create what ``remote`` lacks; give the user ``password`` and ``limit``, allow
        it to log in and into its database only."""
        raise NotImplementedError

    def set_login(self, name, allowed):
        raise NotImplementedError

    def end_sessions(self, name):
        """End the user's open sessions; returns how many there were."""
        raise NotImplementedError

    def set_limit(self, name, limit):
        raise NotImplementedError

    def set_password(self, name, password):
        """Give the user ``password`` (sent as the server's hash, never in clear)."""
        raise NotImplementedError

    def drop(self, name, remote):
        """Drop the database and the user (what ``remote`` says exists)."""
        raise NotImplementedError


def config_fields(default_port, default_admin, admin_help, extra=()):
    """The settings of a database server module type (``extra``: its own, before the
    name settings)."""
    return [
        ConfigField("host", "Server host", required=True, help="Where Provisor connects."),
        ConfigField("port", "Port", kind="int", default=default_port, minimum=1, maximum=65535),
        ConfigField(
            "admin_user", "Admin user", required=True, default=default_admin, help=admin_help
        ),
        ConfigField("admin_password", "Admin password", kind="secret"),
        ConfigField(
            "tls",
            "TLS",
            kind="choice",
            default="off",
            options=(
                ("off", "off"),
                ("require", "required (encrypted, certificate not checked)"),
                ("verify", "verified (certificate and host name checked)"),
            ),
        ),
        ConfigField(
            "ca_bundle",
            "CA bundle (PEM)",
            kind="text",
            help="For TLS verified: the root(s) the server's certificate chains up to. "
            "Empty: the system's trusted roots.",
        ),
        *extra,
        ConfigField(
            "name_prefix",
            "Name prefix",
            default="db_",
            help="Databases and users are named <prefix><order prefix>_<service id>, "
            "e.g. db_42 or db_shop_42. Up to 16 lowercase letters, digits and _.",
        ),
        ConfigField(
            "client_host",
            "Host for clients",
            help="The host name clients connect to (shown in the service's details). "
            "Empty: the server host above.",
        ),
        ConfigField(
            "owner_tag",
            "Owner tag",
            default="provisor",
            help="Objects are marked <tag>:service-<id>. Each Provisor sharing this "
            "server needs its own tag.",
        ),
        ConfigField(
            "timeout",
            "Timeout (s)",
            kind="float",
            default=10.0,
            minimum=1,
            maximum=300,
            help="For connecting and for each statement.",
        ),
    ]


class DatabaseModule(ModuleType):
    """A database server: one database and one user per service (see the module doc)."""

    scheme = ""
    default_port = 0
    default_admin = ""
    session_class = Session
    operations = frozenset(
        {"open", "suspend", "resume", "close", "change_tariff", "change_password", "ensure_item"}
    )
    client_data = ("server", "connection_limit")
    product_types = ("database",)
    state_secrets = {"password": PASSWORD_PURPOSE}
    default_timeout = 10.0
    STATEMENTS_PER_ATTEMPT = 12  # the most statements one operation sends (ensure_item)
    SOCKET_MARGIN = 5.0  # seconds a silent server gets beyond the statement timeout
    item_fields = [
        ConfigField(
            "connection_limit",
            "Connections at once",
            kind="int",
            default=0,
            minimum=0,
            maximum=100000,
            help="How many connections the service's user may have open at once "
            "(0: no limit of its own, the server's max_connections applies).",
        ),
    ]

    # --- settings -------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        prefix = cleaned.get("name_prefix")
        if "name_prefix" not in errors and prefix and not NAME_PREFIX.match(prefix):
            errors["name_prefix"] = (
                "A lowercase letter, then up to 15 lowercase letters, digits and _ (e.g. db_)."
            )
        tag = cleaned.get("owner_tag")
        if "owner_tag" not in errors and tag and not OWNER_TAG.match(tag):
            errors["owner_tag"] = OWNER_TAG_RULE
        host = cleaned.get("host") or ""
        if "host" not in errors and host and not re.match(r"^[A-Za-z0-9.:_\[\]-]+$", host):
            errors["host"] = "A host name or an IP address (no scheme, no port)."
        pem = (cleaned.get("ca_bundle") or "").strip()
        if "tls" not in errors and cleaned.get("tls") != "verify" and pem:
            errors["ca_bundle"] = "Only used with TLS verified."
        elif pem and "ca_bundle" not in errors:
            from cryptography import x509

            try:
                x509.load_pem_x509_certificates(pem.encode())
            except ValueError:
                errors["ca_bundle"] = "Not PEM certificates (-----BEGIN CERTIFICATE-----...)."
        return cleaned, errors

    def call_timeout(self):
        return float(self.config.get("timeout") or self.default_timeout)

    def timeout(self):
        """The longest an attempt may take: its statements one after another."""
        return (self.call_timeout() + self.SOCKET_MARGIN) * self.STATEMENTS_PER_ATTEMPT

    def io_timeout(self):
        """One statement: the server's own timeout, then the socket's margin."""
        return self.call_timeout() + self.SOCKET_MARGIN

    def address(self):
        host = self.config.get("host") or ""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.config.get('port') or self.default_port}"

    def session(self, ctx=None):
        return self.session_class(self, ctx)

    def mark(self, service_id):
        """What the service's objects carry: ``<owner tag>:service-<id>``."""
        return f"{self.config.get('owner_tag') or 'provisor'}:service-{service_id}"

    def name_for(self, ctx):
        """The name of the service's database and user (its recorded remote id once it
        has one: a later change of the prefix setting does not lose it)."""
        if ctx.service.remote_id:
            return ctx.service.remote_id
        prefix = self.config.get("name_prefix") or "db_"
        wanted = (ctx.params or {}).get("prefix")
        if isinstance(wanted, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,31}", wanted.strip()):
            prefix += wanted.strip() + "_"
        name = f"{prefix}{ctx.service.id}"
        if len(name) > MAX_NAME:
            name = f"{prefix[: MAX_NAME - len(str(ctx.service.id)) - 1]}_{ctx.service.id}"
        return name

    def tls_bundle(self):
        """The CA bundle as a file (for drivers that take a path), or None."""
        pem = (self.config.get("ca_bundle") or "").strip()
        return pem_file(pem) if pem else None

    # --- the pieces of every operation ----------------------------------------------------

    def _limit(self, ctx):
        settings = ctx.item_settings
        if not settings and ctx.item is not None:
            settings = ctx.item.settings
        return int((settings or {}).get("connection_limit") or 0)

    def _details(self, name, password):
        return {
            "host": self.config.get("client_host") or self.config.get("host"),
            "port": str(self.config.get("port") or self.default_port),
            "database": name,
            "username": name,
            "password": password,
        }

    @staticmethod
    def _refuse_foreign(name, remote):
        if remote.foreign:
            raise PermanentError(
                f"{remote.foreign}: the name {name} is not this service's, it is not taken over"
            )

    def _own(self, session, ctx):
        """The service's name and what the server has under it (refusing what is not
        the service's, and a name that is gone)."""
        name = self.name_for(ctx)
        remote = session.lookup(name, self.mark(ctx.service.id))
        self._refuse_foreign(name, remote)
        if not remote.exists:
            raise PermanentError(
                f"neither the database nor the user {name} is on the server (deleted by hand?)"
            )
        return name, remote

    # --- operations -----------------------------------------------------------------------

    def open(self, ctx):
        name = self.name_for(ctx)
        mark = self.mark(ctx.service.id)
        limit = self._limit(ctx)
        password = operation_password(ctx, PASSWORD_PURPOSE)
        with self.session(ctx) as session:
            remote = session.lookup(name, mark)
            self._refuse_foreign(name, remote)
            if remote.exists:
                ctx.log(f"{name} already carries this service's mark ({mark}): taking it over")
            session.create(name, mark, password, limit, remote)
            server = session.version()
            ctx.log(f"database and user {name} ready (connections at once: {_limit_text(limit)})")
        return Result.done(
            remote_id=name,
            details=self._details(name, password),
            data={"server": server, "connection_limit": _limit_text(limit)},
        )

    def suspend(self, ctx):
        with self.session(ctx) as session:
            name, _ = self._own(session, ctx)
            session.set_login(name, False)
            ended = session.end_sessions(name)
            ctx.log(f"{name} may not log in; {ended} open session(s) ended")
        return Result.done(remote_id=name)

    def resume(self, ctx):
        with self.session(ctx) as session:
            name, _ = self._own(session, ctx)
            session.set_login(name, True)
            ctx.log(f"{name} may log in again")
        return Result.done(remote_id=name)

    def close(self, ctx):
        with self.session(ctx) as session:
            name = self.name_for(ctx)
            remote = session.lookup(name, self.mark(ctx.service.id))
            if remote.foreign:
                # nothing of this service's is there (its open never made it): done
                ctx.log(f"{remote.foreign}: not this service's, left alone; nothing to drop")
                return Result.done(remote_id=name)
            if not remote.exists:
                ctx.log(f"{name} is gone already")
                return Result.done(remote_id=name)
            ended = session.end_sessions(name)
            session.drop(name, remote)
            ctx.log(f"{ended} open session(s) ended; database and user {name} dropped")
        return Result.done(remote_id=name)

    def change_tariff(self, ctx):
        limit = self._limit(ctx)
        with self.session(ctx) as session:
            name, _ = self._own(session, ctx)
            session.set_limit(name, limit)
            ctx.log(f"{name}: connections at once {_limit_text(limit)}")
        return Result.done(remote_id=name, data={"connection_limit": _limit_text(limit)})

    def change_password(self, ctx):
        password = new_service_password(ctx)
        with self.session(ctx) as session:
            name, _ = self._own(session, ctx)
            session.set_password(name, password)
            ctx.log(f"{name} has a new password (sessions already open stay open)")
        return Result.done(remote_id=name, details={"password": password})

    def ensure_item(self, ctx):
        """The admin may host databases with this tariff's limits: its rights are
        checked, then a trial database and user are created and dropped again."""
        limit = self._limit(ctx)
        with self.session(ctx) as session:
            version = self._trial(session, f"trial_{ctx.idempotency_key}", limit)
            ctx.log(
                f"{version}: a trial database and user were created with this tariff's "
                "limits, locked and dropped again"
            )
        return Result.done()

    def _trial(self, session, suffix, limit=0):
        """Check the admin's rights, then create a trial database and user (with the
        ``limit``), lock them, end their sessions and drop them: what every operation
        needs, tried for real. What the trial made is dropped whatever happens. Returns
        the server's version; raises a PermanentError saying what the admin lacks."""
        problem = session.rights_problem()
        if problem:
            raise PermanentError(f"cannot host databases: {problem}")
        most = session.max_connections()
        if most and limit > most:
            raise PermanentError(
                f"the tariff's connection limit {limit} is more than the server allows "
                f"in all (max_connections = {most})"
            )
        # never a service's name: those end in the service id
        trial = f"{self.config.get('name_prefix') or 'db_'}{suffix}_check"
        mark = f"{self.config.get('owner_tag') or 'provisor'}:item-check"
        remote = session.lookup(trial, mark)
        if remote.foreign:
            raise PermanentError(f"{remote.foreign}: the trial name {trial} is taken")
        try:
            session.create(trial, mark, new_password(), limit, remote)
            session.set_login(trial, False)
            session.end_sessions(trial)
        finally:
            left = session.lookup(trial, mark)
            if left.exists and not left.foreign:
                session.drop(trial, left)
        return session.version()

    # --- Test connection ------------------------------------------------------------------

    def check_config(self):
        started = time.monotonic()
        connected = False
        try:
            with self.session() as session:
                connected = True
                version = self._trial(session, f"trial_{secrets.token_hex(4)}")
        except (TemporaryError, PermanentError) as exc:
            if not connected:
                raise ConfigProblem(str(exc), field=self._field_of(str(exc))) from None
            raise ConfigProblem(f"connected, but {exc}", field="admin_user") from None
        elapsed = (time.monotonic() - started) * 1000
        return (
            f"{version} at {self.address()} answers ({elapsed:.0f} ms); "
            f"{self.config.get('admin_user')} created, locked and dropped a trial database "
            "and user"
        )

    def _field_of(self, message):
        """Which setting a failed connection points at."""
        lowered = message.lower()
        if any(w in lowered for w in ("ssl", "tls", "certificate")):
            return (
                "ca_bundle" if "certificate" in lowered and self.config.get("ca_bundle") else "tls"
            )
        if "password" in lowered or "access denied" in lowered:
            return "admin_password"
        if "role" in lowered or "user" in lowered:
            return "admin_user"
        if "timed out" in lowered or "timeout" in lowered:
            return "timeout"
        return "host"
