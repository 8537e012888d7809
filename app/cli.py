"""The ``provisor`` command (the app's flask CLI; ``flask --app app ...`` works too).

Every command is registered on :data:`commands`, a :class:`flask.cli.AppGroup` (so each
one runs inside the app context), and goes through :class:`Command`, the one place that
turns errors into one line on stderr and a non-zero exit: bad arguments, a
:class:`~app.services.errors.ServiceError`, a database without a schema or out of reach,
bad settings. ``provisor <command>`` and ``flask --app app <command>`` print the same.
"""

import json
import logging
import signal
import sys
import threading

import click
from flask import current_app
from flask.cli import AppGroup, FlaskGroup, ScriptInfo

from app.db import database
from app.services.errors import ServiceError

log = logging.getLogger("provisor")


class CommandError(click.ClickException):
    """What a command prints as its one line ``Error: ...`` (exit status 1 by default)."""

    def __init__(self, message, exit_code=1):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


class OneLineUsageError(click.UsageError):
    """A bad argument, shown as one line (click shows the usage and a hint first)."""

    def show(self, file=None):
        click.echo(f"Error: {one_line(self)}", err=True)


def one_line(exc):
    """The one line for a :class:`click.ClickException` (without ``Error: ``)."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see: {ctx.command_path} --help)"
    return message


def explain(exc):
    """One line saying what went wrong, for an error a command did not expect."""
    from peewee import DatabaseError, InterfaceError, OperationalError, ProgrammingError

    if isinstance(exc, ServiceError):
        return CommandError(exc.message, exit_code=2)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if isinstance(exc, (OperationalError, ProgrammingError)) and (
        "no such table" in text or "does not exist" in text
    ):
        return CommandError(f"the database has no schema yet ({text}); run: provisor db upgrade")
    if isinstance(exc, (DatabaseError, InterfaceError)):
        return CommandError(f"cannot use the database: {text}")
    log.debug("command failed", exc_info=exc)  # the log has the traceback, the user one line
    return CommandError(f"{exc.__class__.__name__}: {text}")


class _OneLineErrors:
    """Errors of a command (or group) become a one-line :class:`click.ClickException`."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), exc.ctx) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (OneLineUsageError, click.exceptions.Exit, click.Abort):
            raise
        except click.UsageError as exc:  # e.g. "No such command" of a group
            raise OneLineUsageError(exc.format_message(), exc.ctx) from None
        except click.ClickException:
            raise
        except Exception as exc:
            raise explain(exc) from exc


class Command(_OneLineErrors, click.Command):
    """A Provisor command: its errors are one line."""


class Group(_OneLineErrors, AppGroup):
    """A group of Provisor commands: they run in the app context, their errors are one line."""

    command_class = Command

    def group(self, *args, **kwargs):
        kwargs.setdefault("cls", Group)
        return super().group(*args, **kwargs)


commands = Group("provisor", help="Provisor: service activation for hosting providers.")


def _services_call(fn, *args, **kwargs):
    """Call a service with a database connection (its errors are :class:`Command`'s)."""
    with database.connection_context():
        return fn(*args, **kwargs)


@commands.group("db", help="Database schema.")
def db_group():
    pass


@db_group.command("upgrade")
def db_upgrade():
    """Create or upgrade the schema: apply the pending migrations of app/migrations."""
    applied = _upgrade_schema()
    if applied:
        click.echo(f"Schema upgraded: {', '.join(applied)}.")
    else:
        click.echo("Schema is up to date.")


def _upgrade_schema():
    from app import schema

    try:
        return schema.upgrade()
    except schema.UpgradeError as exc:
        log.debug("schema upgrade failed", exc_info=True)
        raise CommandError(str(exc), exit_code=2) from None


@commands.group("users", help="Staff, admins and clients.")
def users_group():
    pass


@users_group.command("create-admin")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--name", default="Administrator")
def create_admin(email, password, name):
    """Create an admin who can log in and configure everything."""
    from app.services import accounts

    user = _services_call(
        accounts.create_user, {"email": email, "password": password, "name": name}, role="admin"
    )
    click.echo(f"Admin {user.email} created.")


@users_group.command("create-staff")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--name", default="")
@click.option("--department-id", "department_ids", multiple=True, type=int)
def create_staff(email, password, name, department_ids):
    """Create a staff member of the given departments."""
    from app.services import accounts

    user = _services_call(
        accounts.create_user,
        {
            "email": email,
            "password": password,
            "name": name or email,
            "department_ids": list(department_ids),
        },
    )
    click.echo(f"Staff member {user.email} created.")


@commands.group("tokens", help="API bearer tokens.")
def tokens_group():
    pass


@tokens_group.command("create")
@click.option("--email", required=True, help="A staff member or admin.")
@click.option("--name", default="cli")
def create_token(email, name):
    """Print a new bearer token for the API."""
    from app.services import accounts

    click.echo(_services_call(accounts.create_token, email, name))


@commands.group("clients", help="Clients.")
def clients_group():
    pass


@clients_group.command("reseller")
@click.option("--client-id", required=True, type=click.IntRange(1), help="The client's id.")
@click.option("--disable", is_flag=True, help="No reseller any more: its tokens stop working.")
def clients_reseller(client_id, disable):
    """Make a client a reseller paying on account and print its bearer token (once)."""
    from app.services import resellers

    if disable:
        client = _services_call(resellers.disable, client_id)
        click.echo(f"Client {client.id} ({client.email}) is no longer a reseller.")
        return
    _, token = _services_call(resellers.enable, client_id)
    click.echo(token)


@commands.group("services", help="Services.")
def services_group():
    pass


@services_group.command("accounts")
@click.option("--module-id", required=True, type=click.IntRange(1), help="The module's id.")
def services_accounts(module_id):
    """List the accounts on a module's panel (module types that can), to import one."""
    from app.services import imports

    listed = _services_call(imports.accounts, module_id)
    if not listed:
        click.echo("No accounts.")
    for account in listed:
        bound = f"service #{account['bound_to']}" if account["bound_to"] else "free"
        click.echo(f"{account['remote_id']}\t{bound}\t{account['summary']}")


@services_group.command("import")
@click.option("--client-id", required=True, type=click.IntRange(1))
@click.option("--tariff-id", required=True, type=click.IntRange(1))
@click.option("--module-id", required=True, type=click.IntRange(1))
@click.option("--remote-id", required=True, help="The account's id on the panel.")
@click.option("--detail", "details", multiple=True, help="A detail field: name=value (repeat).")
def services_import(client_id, tariff_id, module_id, remote_id, details):
    """Bind an account that already exists on a panel to a new service: active at once,
    no open operation runs."""
    from app.services import imports

    values = {}
    for pair in details:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CommandError(f"--detail {pair!r}: give name=value", exit_code=2)
        values[name.strip()] = value
    data = {
        "client_id": client_id,
        "tariff_id": tariff_id,
        "module_id": module_id,
        "remote_id": remote_id,
        "details": values,
    }
    service = _services_call(imports.import_service, data, "cli")
    click.echo(f"Service #{service.id} imported: active, bound to {service.remote_id}.")


@commands.group("ops", help="Operations.")
def ops_group():
    pass


@ops_group.command("list")
@click.option("--status", default=None, help="queued, running, retry_wait, manual, ...")
@click.option("--module-id", type=int, default=None)
@click.option("--limit", type=click.IntRange(1, 10000), default=50)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def ops_list(status, module_id, limit, as_json):
    """List operations not yet finished (or of one status)."""
    from app.models import Operation
    from app.objects.outputs import Operation as OperationObject
    from app.services import operations

    if status and status not in Operation.STATUSES:
        raise CommandError(
            f"unknown status {status!r}; use one of {', '.join(Operation.STATUSES)}", exit_code=2
        )
    with database.connection_context():
        rows = list(operations.open_operations(status, module_id).limit(limit))
        if as_json:
            for op in rows:
                click.echo(json.dumps(OperationObject.of(op)))
            return
        if not rows:
            click.echo("No operations.")
            return
        click.echo(f"{'ID':>6}  {'KIND':<13} {'STATUS':<16} {'ATT':>3}  {'SUBJECT':<14} LAST ERROR")
        for op in rows:
            error = (op.last_error or "")[:60]
            click.echo(
                f"{op.id:>6}  {op.kind:<13} {op.status:<16} {op.attempts:>3}  "
                f"{op.subject:<14} {error}"
            )


@ops_group.command("restart")
@click.argument("operation_id", type=int)
def ops_restart(operation_id):
    """Run an operation again now."""
    from app.services import operations

    op = _services_call(operations.restart, operation_id, actor="cli")
    click.echo(f"Operation {op.id} queued.")


@ops_group.command("cancel")
@click.argument("operation_id", type=int)
def ops_cancel(operation_id):
    """Cancel an operation that is not running."""
    from app.services import operations

    op = _services_call(operations.cancel, operation_id, actor="cli")
    click.echo(f"Operation {op.id} cancelled.")


@ops_group.command("sweep")
def ops_sweep():
    """Re-send due operations and emails now; reclaim stale running operations."""
    from app import scheduler

    counts, errors = scheduler.run_once(current_app)
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))
    if errors:
        failed = "; ".join(f"the {name} sweep failed: {error}" for name, error in errors.items())
        raise CommandError(failed)


@commands.command("scheduler")
def scheduler_command():
    """Run the scheduler (scaled-out mode: exactly one such process)."""
    from app import scheduler

    _configure_logging()
    thread = scheduler.Scheduler(current_app._get_current_object())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread.start()
    stop.wait()
    thread.stop()


@commands.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, type=click.IntRange(1, 65535), show_default=True)
@click.option(
    "--threads", type=click.IntRange(1, 256), help="Web server threads [SERVE_THREADS: 8]."
)
@click.option(
    "--connection-limit",
    type=click.IntRange(1, 100000),
    help="Open connections held; past it a connection gets a quick 503 "
    "[SERVE_CONNECTION_LIMIT: 500].",
)
@click.option(
    "--channel-timeout",
    type=click.IntRange(1),
    help="Seconds an idle keep-alive connection stays open [SERVE_CHANNEL_TIMEOUT: 60].",
)
@click.option(
    "--backlog",
    type=click.IntRange(1, 65535),
    help="Connections waiting to be accepted [SERVE_BACKLOG: 1024].",
)
@click.option("--no-worker", is_flag=True, help="Do not run the embedded worker and scheduler.")
def serve(host, port, threads, connection_limit, channel_timeout, backlog, no_worker):
    """Run the whole embedded system: web (waitress), worker and scheduler in one process."""
    from app import embedded, scheduler
    from app.services import accounts

    _configure_logging()
    app = current_app._get_current_object()
    limits = {
        "threads": threads or app.config["SERVE_THREADS"],
        "connection_limit": connection_limit or app.config["SERVE_CONNECTION_LIMIT"],
        "channel_timeout": channel_timeout or app.config["SERVE_CHANNEL_TIMEOUT"],
        "backlog": backlog or app.config["SERVE_BACKLOG"],
    }
    problem = embedded.ensure_open_files(limits["connection_limit"])
    if problem:
        raise CommandError(problem, 2)
    applied = _upgrade_schema()
    if applied:
        log.info("schema upgraded: %s", ", ".join(applied))
    with database.connection_context():
        first = accounts.ensure_first_admin()
    if first:
        click.echo("=" * 60)
        click.echo("First start: an admin was created. Log in with")
        click.echo(f"  email:    {first[0]}")
        click.echo(f"  password: {first[1]}")
        click.echo("=" * 60)
    sweeper = None
    if not no_worker:
        if app.config.get("REDIS_URL"):
            log.info("REDIS_URL is set: run `dramatiq actors` workers for the operations")
        embedded.start_worker(app)
        sweeper = scheduler.Scheduler(app)
        sweeper.start()
    try:
        server = embedded.web_server(app, host, port, **limits)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 2) from None
    log.info(
        "web server: %(threads)d threads, up to %(connection_limit)d connections (idle ones "
        "closed after %(channel_timeout)d s), backlog %(backlog)d",
        limits,
    )
    for address in embedded.listening_on(server):
        click.echo(f"Provisor is running on http://{address}/")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.close()
        if sweeper:
            sweeper.stop()
        if not no_worker:
            embedded.stop_worker()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _configure_logging():
    from app import logs

    logs.configure(current_app.config["LOG_LEVEL"], current_app.config["LOG_FORMAT"])


@commands.command("remotetaskctl")
@click.option(
    "--command",
    "command",
    required=True,
    type=click.Choice(["checkevent", "push"]),
    help="checkevent: pull the remote events now; push: send pending changes now.",
)
def remotetaskctl(command):
    """Tasks proxy control: bring remote task changes back now (or push pending ones)."""
    from app.services import proxy

    with database.connection_context():
        sides = proxy.client_sides()
        if not sides:
            click.echo("No client side is configured (nothing to do).")
            return
        failed = 0
        for side in sides:
            if not side.enabled:
                continue
            try:
                if command == "checkevent":
                    count = proxy.pull(side.id, wait=True)
                else:
                    count = proxy.push_now(side.id)
            except ServiceError as exc:
                failed += 1
                click.echo(f"{side.department.name} -> {side.url}: error: {exc.message}", err=True)
                continue
            what = "events applied" if command == "checkevent" else "changes sent"
            click.echo(f"{side.department.name} -> {side.url}: {count} {what}")
    if failed:
        sys.exit(1)


@commands.group("proxy", help="Tasks proxy: server sides and client sides.")
def proxy_group():
    pass


@proxy_group.command("server-side")
@click.option("--login", required=True, help="The client id the remote instance logs in as.")
@click.option("--password", required=True)
@click.option("--department-id", required=True, type=int, help="The department for its tasks.")
def proxy_server_side(login, password, department_id):
    """Accept tasks from a remote instance into a department."""
    from app.services import proxy

    side = _services_call(
        proxy.create_server_side,
        {"login": login, "password": password, "department_id": department_id},
    )
    click.echo(f"Server side {side.id}: {login} sends tasks to department {department_id}.")


@proxy_group.command("client-side")
@click.option("--url", required=True, help="URL of the remote Provisor.")
@click.option("--login", required=True)
@click.option("--password", required=True)
@click.option("--remote-department-id", required=True, type=int)
@click.option("--department-id", required=True, type=int, help="The local department.")
def proxy_client_side(url, login, password, remote_department_id, department_id):
    """Forward a local department's tasks to a remote instance's department."""
    from app.services import proxy

    side = _services_call(
        proxy.create_client_side,
        {
            "url": url,
            "login": login,
            "password": password,
            "remote_department_id": remote_department_id,
            "department_id": department_id,
        },
    )
    click.echo(
        f"Client side {side.id}: department {department_id} -> {url} "
        f"({side.remote_department_name})."
    )


@proxy_group.command("list")
def proxy_list():
    """Show the server and client sides with their last sync and errors."""
    from app.services import proxy

    with database.connection_context():
        for side in proxy.server_sides():
            click.echo(
                f"server {side.id}: login {side.login} -> {side.department.name}; "
                f"last seen {side.last_seen_at or 'never'}"
            )
        for side in proxy.client_sides():
            parked = proxy.parked_counts().get(side.id, 0)
            waiting = f"; next push {side.next_push_at}" if side.next_push_at else ""
            click.echo(
                f"client {side.id}: {side.department.name} -> {side.url} "
                f"({side.remote_department_name}); cursor {side.cursor}; last pull "
                f"{side.last_pull_at or 'never'}{waiting}; refused changes parked: {parked}; "
                f"error: {side.last_error or 'none'}"
            )


@commands.group("secrets", help="Secrets stored encrypted with a key derived from SECRET_KEY.")
def secrets_group():
    pass


@secrets_group.command("rotate")
def secrets_rotate():
    """Re-encrypt every stored secret with SECRET_KEY (after changing it, with the old key
    in SECRET_KEY_FALLBACKS); then the fallback can be removed."""
    from app.services import stored_secrets

    result = _services_call(stored_secrets.rotate)
    click.echo(
        f"Stored secrets: {result.rotated} re-encrypted with SECRET_KEY, "
        f"{result.current} already were."
    )
    if result.undecryptable:
        for name in result.undecryptable:
            click.echo(f"cannot decrypt: {name}", err=True)
        raise CommandError(
            f"{len(result.undecryptable)} stored secrets open with neither SECRET_KEY nor "
            "SECRET_KEY_FALLBACKS: left as they were (enter them again, or add the key "
            "they were made with to SECRET_KEY_FALLBACKS)"
        )


def init_app(app):
    """Register every command on ``app.cli`` (``flask --app app ...`` and ``provisor``)."""
    for command in commands.commands.values():
        app.cli.add_command(command)


def _create_app():
    from app import create_app

    return create_app()


class _Provisor(FlaskGroup):
    """``provisor``: Flask's group; ``--help`` says in one line why the app cannot load."""

    def list_commands(self, ctx):
        try:
            ctx.ensure_object(ScriptInfo).load_app()
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc)}", err=True)
            return sorted(super(FlaskGroup, self).list_commands(ctx))
        return super().list_commands(ctx)


def main():
    """The ``provisor`` console script."""
    cli = _Provisor(
        create_app=_create_app,
        add_default_commands=True,
        add_version_option=False,
        help=commands.help,
    )
    try:
        code = cli.main(prog_name="provisor", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:  # one line, non-zero
        click.echo(f"Error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # never a traceback to the user; the log has it
        error = explain(exc)
        click.echo(f"Error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
