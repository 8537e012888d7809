"""Settings: one typed table, one reader.

Every setting of Provisor is declared once in :data:`SETTINGS` with its kind (a whole
number with bounds, true/false, text, a URL with its allowed schemes, one of a few
choices), its default and a one-line description, and is read only through
:func:`load` (the app factory, ``actors.broker`` and the CLI all use it). Each may be set
as an environment variable ``PROVISOR_<NAME>`` or ``<NAME>`` (the prefixed one wins);
settings marked ``prefixed_only`` are read from ``PROVISOR_<NAME>`` only, their plain
names being too generic.

A bad value stops start-up with :class:`SettingError`, one line naming the variable and
the rule: ``SWEEP_INTERVAL must be a whole number ≥ 1, got "abc"``. It is a
:class:`click.ClickException`, so ``provisor <command>`` and ``flask --app app <command>``
print it as one ``Error: ...`` line; gunicorn and ``dramatiq actors`` show it as the last
line of their start-up failure.
"""

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import click

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class SettingError(click.ClickException):
    """A setting has a value its rule does not allow (one line, exit status 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Setting:
    """One setting: ``kind`` is ``int``, ``bool``, ``text``, ``url``, ``choice``,
    ``networks`` (addresses or CIDR networks separated by commas or spaces, read as a tuple
    of :mod:`ipaddress` networks), ``list`` (comma-separated text, or a list in
    ``test_config``) or ``limit`` (a rate limit such as ``10/minute;60/hour``, as
    Flask-Limiter reads it).

    ``default_text`` says in words what an unset setting means when its default is not a
    plain value (None: computed at start-up, or the feature is off); the README's settings
    table shows exactly that text (checked by ``tests/test_config.py``).
    """

    name: str
    kind: str
    default: object
    doc: str
    min: int | None = None
    max: int | None = None
    schemes: tuple = ()
    choices: tuple = ()
    default_text: str | None = None
    prefixed_only: bool = False

    @property
    def env_names(self):
        prefixed = f"PROVISOR_{self.name}"
        return (prefixed,) if self.prefixed_only else (prefixed, self.name)

    @property
    def documented_name(self):
        """The name the README's table uses: the variable to set."""
        return self.env_names[-1]

    @property
    def shown_default(self):
        """The default as the README's table shows it."""
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)

    def rule(self):
        """The rule a value must follow, in words (used in error messages)."""
        if self.kind == "int":
            if self.min is not None and self.max is not None:
                return f"a whole number from {self.min} to {self.max}"
            if self.min is not None:
                return f"a whole number ≥ {self.min}"
            return "a whole number"
        if self.kind == "bool":
            return f"true or false ({'/'.join(TRUE)} or {'/'.join(FALSE)})"
        if self.kind == "url":
            schemes = [f"{s}://" for s in self.schemes]
            listed = (
                ", ".join(schemes[:-1]) + f" or {schemes[-1]}" if len(schemes) > 1 else schemes[0]
            )
            return f"a URL starting with {listed}"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "networks":
            return "networks such as 10.0.0.0/8, 192.0.2.7 (separated by commas or spaces)"
        if self.kind == "list":
            return "a comma-separated list"
        if self.kind == "limit":
            return 'a rate limit such as "10/minute" or "10/minute;60/hour"'
        return "some text"

    def parse(self, raw, source=None):
        """The value of ``raw`` (text from the environment, or an already typed value from
        ``create_app(test_config)``); :class:`SettingError` when it breaks the rule."""
        source = source or self.name
        if self.kind == "int":
            value = raw
            if isinstance(raw, str):
                text = raw.strip()
                value = int(text) if text.lstrip("+-").isdigit() else None
            if isinstance(value, bool) or not isinstance(value, int):
                self._fail(source, raw)
            if (self.min is not None and value < self.min) or (
                self.max is not None and value > self.max
            ):
                self._fail(source, raw)
            return value
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in TRUE:
                return True
            if text in FALSE:
                return False
            self._fail(source, raw)
        if self.kind == "list":
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                self._fail(source, raw)
            return tuple(i.strip() for i in items if i.strip())
        if self.kind == "networks" and isinstance(raw, (tuple, list)):
            raw = ",".join(str(item) for item in raw)
        if not isinstance(raw, str):
            self._fail(source, raw)
        if self.kind == "networks":
            try:
                return tuple(
                    ipaddress.ip_network(part, strict=False)
                    for part in re.split(r"[\s,]+", raw.strip())
                    if part
                )
            except ValueError:
                self._fail(source, raw)
        if self.kind == "limit":
            from limits import parse_many

            try:
                parsed = parse_many(raw)
            except ValueError:
                parsed = None
            if not parsed or any(limit.amount < 1 for limit in parsed):
                self._fail(source, raw)
            return raw.strip()
        if self.kind == "url":
            scheme = urlsplit(raw.strip()).scheme.lower()
            if scheme not in self.schemes:
                self._fail(source, raw)
            return raw.strip()
        if self.kind == "choice":
            value = raw.strip().upper()
            if value not in self.choices:
                self._fail(source, raw)
            return value
        return raw

    def _fail(self, source, raw):
        raise SettingError(f"{source} must be {self.rule()}, got {_shown(self, raw)}")


def _shown(setting, raw):
    """``raw`` quoted for an error message, without a URL's password."""
    text = str(raw)
    if setting.kind == "url" and isinstance(raw, str):
        try:
            parts = urlsplit(text)
            if parts.password:
                netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
                text = urlunsplit(parts._replace(netloc=netloc))
        except ValueError:
            text = "(not a URL)"
    return f'"{text}"'


def _int(name, default, doc, min=None, max=None, **kw):  # noqa: A002 (the rule's words)
    return Setting(name, "int", default, doc, min=min, max=max, **kw)


SETTINGS = {
    s.name: s
    for s in [
        # where things live
        Setting(
            "INSTANCE_PATH",
            "text",
            None,
            "where the SQLite file and generated secrets live",
            default_text="instance/ beside app/ in a source checkout, ./instance when installed",
            prefixed_only=True,
        ),
        Setting(
            "DATABASE_URL",
            "url",
            None,
            "the database: sqlite:///<path> (embedded) or postgresql://... (scaled out)",
            schemes=("sqlite", "postgresql", "postgres"),
            default_text="sqlite:///<instance path>/provisor.sqlite3",
        ),
        _int(
            "DB_POOL_SIZE",
            32,
            "PostgreSQL connections kept per process",
            min=1,
            max=1000,
            prefixed_only=True,
        ),
        Setting(
            "DB_PREPARED_STATEMENTS",
            "bool",
            True,
            "PostgreSQL: the hot statements run as prepared statements of each connection;"
            " false behind a pooler that shares connections between transactions",
            prefixed_only=True,
        ),
        Setting(
            "REDIS_URL",
            "url",
            None,
            "the broker when scaled out: redis://host:port/db",
            schemes=("redis", "rediss", "unix"),
            default_text="unset: in-process broker",
        ),
        Setting("REDIS_NAMESPACE", "text", "provisor", "key prefix of the broker's queues"),
        # security
        Setting(
            "SECRET_KEY",
            "text",
            None,
            "signs sessions and CSRF tokens; set the same one on every machine when scaled out",
            default_text="generated into <instance path>/secret_key",
        ),
        Setting(
            "PAYMENT_WEBHOOK_SECRET",
            "text",
            None,
            "signs /api/v1/webhooks/payment",
            default_text="generated into <instance path>/payment_webhook_secret",
        ),
        Setting(
            "SECRET_KEY_FALLBACKS",
            "list",
            (),
            "earlier SECRET_KEYs, comma-separated: sessions and stored secrets made with them"
            " still open (provisor secrets rotate re-encrypts the secrets)",
            default_text="none",
        ),
        _int(
            "PAYMENT_WEBHOOK_TOLERANCE",
            300,
            "seconds a signed webhook or callback stays valid",
            min=1,
        ),
        Setting(
            "OUTBOUND_ALLOWED_NETWORKS",
            "networks",
            (),
            "networks besides public addresses that module endpoints and proxy peers may "
            "be in (loopback, private and link-local addresses are refused otherwise)",
            default_text="none: only public addresses",
        ),
        Setting(
            "OUTBOUND_DENIED_NETWORKS",
            "networks",
            (ipaddress.ip_network("169.254.169.254/32"),),
            "networks module endpoints and proxy peers may never be in, even if allowed",
            default_text="169.254.169.254/32",
        ),
        _int(
            "MAX_BODY_BYTES",
            1048576,
            "the largest request body accepted on any route (larger: 413 before it is read)",
            min=1024,
        ),
        # logins, sessions, headers
        Setting(
            "LOGIN_LIMIT_PER_ADDRESS",
            "limit",
            "10/minute;60/hour",
            "failed logins allowed from one client address (login form and tasks proxy)",
        ),
        Setting(
            "LOGIN_LIMIT_PER_ACCOUNT",
            "limit",
            "100/hour",
            "failed logins allowed for one account from all addresses together",
        ),
        Setting(
            "AVAILABILITY_CHECK_LIMIT",
            "limit",
            "20/minute;200/hour",
            "availability checks of an order field (a registry's domain:check) one client may"
            " make from the order form",
        ),
        _int(
            "SESSION_LIFETIME",
            43200,
            "seconds a login to the pages lasts at most, active or not",
            min=60,
        ),
        _int(
            "SESSION_IDLE_TIMEOUT",
            3600,
            "seconds without a request after which a login to the pages ends",
            min=1,
        ),
        Setting(
            "COOKIE_SECURE",
            "choice",
            "AUTO",
            "Secure session cookie: AUTO (when the request came over HTTPS), ALWAYS or NEVER",
            choices=("AUTO", "ALWAYS", "NEVER"),
        ),
        _int(
            "TRUSTED_PROXY_HOPS",
            0,
            "reverse proxies in front of Provisor whose X-Forwarded-For/-Proto/-Host/-Port"
            " headers are believed",
            min=0,
            max=10,
        ),
        _int(
            "HSTS_MAX_AGE",
            31536000,
            "Strict-Transport-Security max-age on HTTPS answers (0: no header)",
            min=0,
        ),
        # mail
        Setting(
            "SMTP_URL",
            "url",
            None,
            "where emails go: smtp://user:pass@host:25, smtps://...:465, smtp+starttls://...:587",
            schemes=("smtp", "smtps", "smtp+starttls"),
            default_text="unset: emails stay in the outbox",
        ),
        Setting(
            "MAIL_FROM", "text", "Provisor <noreply@provisor.localhost>", "sender of every email"
        ),
        Setting(
            "PUBLIC_URL",
            "url",
            None,
            "the address people reach Provisor at, for links in emails (password resets)",
            schemes=("http", "https"),
            default_text="unset: the address the request came to",
        ),
        _int(
            "MAIL_RETRY_DELAY",
            60,
            "seconds before the first retry of a failed delivery (doubles, up to 64×)",
            min=1,
        ),
        _int("MAIL_TIMEOUT", 10, "seconds an SMTP delivery may take", min=1),
        # outgoing events (webhooks)
        _int("EVENT_TIMEOUT", 10, "seconds a webhook endpoint may take to answer", min=1),
        _int(
            "EVENT_RETRY_DELAY",
            30,
            "seconds before the first retry of a failed event delivery (doubles each time)",
            min=1,
        ),
        _int(
            "EVENT_RETRY_MAX",
            3600,
            "the longest wait between two attempts of an event delivery, in seconds",
            min=1,
        ),
        _int(
            "EVENT_KEEP_DAYS",
            30,
            "days the delivery log keeps an event once every delivery of it is delivered or failed",
            min=1,
        ),
        _int(
            "EVENT_MAX_ATTEMPTS",
            30,
            "attempts of an event delivery before it is marked failed (Retry now sends it again)",
            min=1,
        ),
        # operations
        _int("SWEEP_INTERVAL", 15, "seconds between sweeps of the scheduler", min=1),
        _int("SWEEP_GRACE", 10, "a due operation not picked up for this long is re-sent", min=0),
        _int(
            "LEASE_GRACE",
            60,
            "seconds an attempt may exceed its module's timeout before it is reclaimed",
            min=0,
        ),
        _int(
            "CALLBACK_TIMEOUT",
            86400,
            "seconds a pending http operation waits for its callback",
            min=1,
        ),
        _int(
            "RECENT_ERROR_WINDOW",
            900,
            "module choice: a failed attempt this recent (seconds) counts as a recent error",
            min=0,
        ),
        _int("WORKER_THREADS", 4, "threads of the embedded worker", min=1, max=256),
        _int(
            "WORKER_SHUTDOWN_GRACE",
            5,
            "seconds a stopping worker lets its running attempts finish before handing them back",
            min=0,
            max=3600,
        ),
        # the embedded web server (provisor serve; gunicorn has its own settings)
        _int("SERVE_THREADS", 8, "threads of provisor serve's web server", min=1, max=256),
        _int(
            "SERVE_CONNECTION_LIMIT",
            500,
            "open connections provisor serve holds; past it a connection gets a quick 503",
            min=1,
            max=100000,
        ),
        _int(
            "SERVE_CHANNEL_TIMEOUT",
            60,
            "seconds an idle keep-alive connection to provisor serve stays open",
            min=1,
        ),
        _int(
            "SERVE_BACKLOG",
            1024,
            "connections waiting to be accepted by provisor serve (listen backlog)",
            min=1,
            max=65535,
        ),
        # tasks proxy
        _int(
            "PROXY_PULL_INTERVAL",
            300,
            "seconds between pulls of a peer's task changes (tasks proxy)",
            min=1,
        ),
        _int(
            "PROXY_RETRY_DELAY",
            10,
            "seconds before a failed push to a peer is tried again (doubling while it fails)",
            min=1,
        ),
        _int(
            "PROXY_RETRY_MAX",
            600,
            "the longest wait between two pushes to a peer that keeps failing",
            min=1,
        ),
        _int(
            "PROXY_PULL_MAX_PAGES",
            20,
            "pages of a peer's events one pull reads at most (the rest: the next pull)",
            min=1,
            max=10000,
        ),
        _int("PROXY_TIMEOUT", 10, "seconds a call to a peer may take", min=1),
        # pages
        Setting(
            "SANDBOX_PAYMENTS", "bool", False, 'a "Pay now (sandbox)" button in the client area'
        ),
        Setting("ALLOW_REGISTRATION", "bool", True, "clients may register themselves"),
        _int("PAGE_SIZE", 25, "rows per page of the lists", min=1, max=1000),
        # password hashing (argon2id); the defaults are argon2-cffi's own
        _int("ARGON2_TIME_COST", 3, "argon2id passes per password hash", min=1),
        _int(
            "ARGON2_MEMORY_COST",
            65536,
            "argon2id memory per password hash, in KiB",
            min=32,  # argon2 needs 8 KiB per lane, argon2-cffi uses 4 lanes
        ),
        # health and metrics
        Setting(
            "METRICS_TOKEN",
            "text",
            None,
            "bearer token Prometheus sends to /metrics (and to the workers' metrics port)",
            default_text="unset",
        ),
        Setting(
            "METRICS_ALLOW",
            "networks",
            (),
            "addresses or networks allowed to read /metrics, e.g. 10.0.0.0/8,127.0.0.1",
            default_text="unset",
        ),
        _int(
            "WORKER_METRICS_PORT",
            0,
            "port where each `dramatiq actors` serves its processes' metrics (0: none)",
            min=0,
            max=65535,
        ),
        # logging
        Setting(
            "LOG_LEVEL",
            "choice",
            "INFO",
            "log level of every process: web, workers, scheduler, serve",
            choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
            prefixed_only=True,
        ),
        Setting(
            "LOG_FORMAT",
            "choice",
            "TEXT",
            "log lines as text or as one JSON object per line",
            choices=("TEXT", "JSON"),
            prefixed_only=True,
        ),
    ]
}


def read(name, environ=None):
    """One setting from the environment (its default when unset); SettingError if bad."""
    setting = SETTINGS[name]
    environ = os.environ if environ is None else environ
    for env_name in setting.env_names:
        raw = environ.get(env_name)
        if raw not in (None, ""):
            return setting.parse(raw, env_name)
    return setting.default


def load(environ=None, overrides=None):
    """Every setting: defaults, overridden by the environment, then by ``overrides`` (the
    ``test_config`` of ``create_app``, checked by the same rules; other keys pass through).

    ``INSTANCE_PATH`` comes back absolute and ``DATABASE_URL`` filled in when unset.
    """
    config = {name: read(name, environ) for name in SETTINGS}
    for key, value in (overrides or {}).items():
        setting = SETTINGS.get(key)
        if setting is not None and value is not None:
            value = setting.parse(value, key)
        config[key] = value
    config["INSTANCE_PATH"] = os.path.abspath(config["INSTANCE_PATH"] or default_instance_path())
    if not config["DATABASE_URL"]:
        path = os.path.join(config["INSTANCE_PATH"], "provisor.sqlite3")
        config["DATABASE_URL"] = "sqlite:///" + path
    return config


def set_environ(name, value):
    """Write an environment variable a library reads its own setting from (the one place
    that touches the environment, like :func:`read`): prometheus_client's
    ``PROMETHEUS_MULTIPROC_DIR`` in ``dramatiq actors`` worker processes."""
    os.environ[name] = value


def default_instance_path():
    """``instance/`` beside the ``app`` package in a source checkout (where it has always
    been, whatever the working directory), ``./instance`` in an installed copy (beside
    the package would be inside site-packages)."""
    package = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(package, "templates")):  # a wheel ships them inside
        return os.path.abspath("instance")
    return os.path.join(os.path.dirname(package), "instance")


def instance_secret(instance_path, name):
    """A random secret kept in the instance folder, made on first use."""
    path = os.path.join(instance_path, name)
    try:
        os.makedirs(instance_path, exist_ok=True)
        if os.path.exists(path):
            with open(path) as fh:
                return fh.read().strip()
        value = secrets.token_hex(32)
        with open(path, "w") as fh:
            fh.write(value)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise SettingError(
            f"PROVISOR_INSTANCE_PATH: cannot keep {path}: {exc.strerror or exc}"
        ) from None
    return value
