"""The processing module interface (v2).

A module *type* is a class with declared attributes and plain methods that take the
operation context. Provisor creates one instance per configured processing module (with
its validated ``config``) and calls the method named after the operation's kind::

    class MyPanel(ModuleType):
        id = "mypanel"                      # stored in processing_module.type
        name = "My panel"
        description = "Creates accounts on My panel"
        config_fields = [
            ConfigField("url", "API URL", kind="url", required=True),
            ConfigField("token", "API token", kind="secret", required=True),
            ConfigField("timeout", "Timeout (s)", kind="float", default=30, minimum=1),
        ]
        operations = {"open", "suspend", "resume", "close", "ensure_item"}  # required

        def open(self, ctx):                # ctx: OperationContext
            with ctx.call("POST", "/accounts") as call:
                account = ...
                call.outcome = "201 Created"
            return Result.done(remote_id=account.id, details={"username": account.login})

**Results.** A method returns a :class:`Result` — ``Result.done(...)``,
``Result.pending()`` (an external callback completes it), ``Result.task()`` (people do it
through a task) or ``Result.poll(after=seconds, state={...})`` ("not finished: check again
in N seconds, remember this") — or raises :class:`TemporaryError` (retried after the
module's retry delay) or :class:`PermanentError` (straight to a task, with the panel's own
message). Any other exception counts as a temporary error.

**Polling.** A long remote job (a VM being created, an ACME order being validated) must not
hold a worker: start it, then return ``Result.poll(after=10, state={"job": job_id})``. The
operation waits in ``polling``; ``state`` is stored with the operation and handed back as
``ctx.state`` on the next call, which checks the job and returns ``poll`` again or
``done``. A check is not a failed attempt; the module's ``max_wait`` (seconds, default one
hour) bounds the whole wait, after which a person gets a task.

**Take over, never duplicate.** Derive the remote object's key from the service or the
operation (``ctx.idempotency_key``, ``ctx.service.id``), look it up first, and adopt what an
earlier attempt created: a worker may die after the remote call and before its result is
recorded. ``ctx.save_state({...})`` stores ``state`` at once, before a long call.

**Capabilities** are declared on the class, never tested by type id in core code:
``operations`` (the kinds it implements: a kind it does not declare is never offered;
``ensure_item`` means it needs an item per tariff; ``change_password`` sets the password
:func:`new_service_password` gives on the panel), ``creates_items`` (False: a person
makes the items, no ``ensure_item`` method needed), ``people_do_it`` (its operations become tasks), ``accepts_callbacks``
(with :meth:`ModuleType.verify_callback` and :meth:`ModuleType.parse_callback`),
:meth:`ModuleType.check_config` ("Test connection"), :meth:`ModuleType.renew_days_before`
(renewed automatically that many days before the service expires),
:meth:`ModuleType.list_accounts` (the accounts on its panel, to import), ``client_data``
(keys of the per-service module data that the client may see), ``checks_availability``
(the order form asks :meth:`ModuleType.check_availability` whether the ordered name can
still be had, and refuses a taken one; see ``modules.epp``) and ``dns_challenges``
(it publishes ACME dns-01 TXT records for other modules: ``set_challenge(ctx, domain,
value)`` and ``clear_challenge(ctx, domain, value)``, see ``modules.powerdns``).

**Secrets.** Config fields of kind ``secret`` are write-only: never returned by the API,
never shown in forms, and masked in the attempt log together with every value the module
passes to ``ctx.secret(value)`` and the service's secret detail fields.

Third-party types register through the ``provisor.modules`` entry-point group, exactly
like the built-in ones::

    [project.entry-points."provisor.modules"]
    mypanel = "mypackage.mypanel:MyPanel"
"""

import contextlib
import datetime as dt
import json
import math
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlparse

from app.states import KIND_NAMES

ALL_OPERATIONS = frozenset(KIND_NAMES)
RESULT_STATUSES = ("done", "pending", "task", "poll")
MASK = "********"
MAX_POLL_AFTER = 24 * 3600


class ModuleError(Exception):
    """Base of the errors a module raises."""

    permanent = False


class TemporaryError(ModuleError):
    """Worth retrying: the panel is down, timed out, answered 5xx, is busy."""


class PermanentError(ModuleError):
    """Retrying will not help: bad request, unknown plan, name taken, refused by the panel."""

    permanent = True


class ConfigProblem(Exception):
    """``check_config`` found the settings do not work: ``field`` names the setting."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class Result:
    status: str  # "done", "pending", "task" or "poll"
    remote_id: str | None = None
    details: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # merged into the service's module data
    expires_at: dt.datetime | None = None  # the service's new expiry (certificates, domains)
    after: float | None = None  # poll: seconds until the next check
    state: dict | None = None  # poll (or done): the module's memory for the next call

    @classmethod
    def done(cls, remote_id=None, details=None, data=None, expires_at=None):
        return cls(
            "done",
            None if remote_id is None else str(remote_id),
            dict(details or {}),
            dict(data or {}),
            _as_datetime(expires_at),
        )

    @classmethod
    def pending(cls):
        """An external callback (``accepts_callbacks``) completes the operation."""
        return cls("pending")

    @classmethod
    def task(cls):
        """People do this operation: a task in the module's department, then done."""
        return cls("task")

    @classmethod
    def poll(cls, after, state=None):
        """Not finished: check again in ``after`` seconds, handing ``state`` back."""
        if isinstance(after, bool) or not isinstance(after, (int, float)):
            raise TypeError("Result.poll(after=...) takes seconds")
        if not math.isfinite(after):
            raise ValueError("Result.poll(after=...) must be finite")
        after = min(max(float(after), 0.2), MAX_POLL_AFTER)
        return cls("poll", after=after, state=None if state is None else dict(state))


def _as_datetime(value):
    """A naive UTC datetime from a datetime, a date or an ISO text (or None)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    raise TypeError("expires_at must be a datetime, a date or an ISO 8601 text")


KINDS = ("str", "secret", "url", "int", "float", "bool", "choice", "text")
# the owner tag of a module whose remote objects carry "<tag>:service-<id>" (powerdns,
# the database modules): Provisors sharing one server tell their objects apart by it
OWNER_TAG = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
OWNER_TAG_RULE = "Up to 16 lowercase letters, digits and -, e.g. provisor-eu."


@dataclass
class ConfigField:
    """One setting of a module type.

    ``kind``: ``str`` (one line), ``text`` (several lines: a PEM, a record template),
    ``secret`` (write-only; ``multiline`` for a key), ``url``, ``int``, ``float``, ``bool``
    or ``choice`` (one of ``options``: values, or ``(value, label)`` pairs).
    """

    name: str
    label: str
    kind: str = "str"
    required: bool = False
    default: object = None
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""
    options: tuple = ()
    max_length: int | None = None
    multiline: bool = False
    # kind ``int`` naming another processing module: the class attribute its type must
    # have true (e.g. ``dns_challenges``); the form offers those modules in a list
    module_with: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"config field {self.name}: unknown kind {self.kind!r}")
        if self.kind == "choice" and not self.options:
            raise ValueError(f"config field {self.name}: a choice needs options")
        self.options = tuple(
            (o, str(o)) if not isinstance(o, (tuple, list)) else (o[0], str(o[1]))
            for o in self.options
        )
        if self.max_length is None:
            self.max_length = 100_000 if self.kind in ("text", "secret") else 2000

    @property
    def is_secret(self):
        return self.kind == "secret"

    @property
    def is_multiline(self):
        return self.kind == "text" or (self.kind == "secret" and self.multiline)

    def clean(self, raw):
        """Return the cleaned value or raise ValueError with a message for the user."""
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            if self.kind == "bool":
                return bool(self.default)
            if self.required:
                raise ValueError("This field is required.")
            return self.default
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("Must be true or false.")
        if self.kind in ("int", "float"):
            value = _number(raw, whole=self.kind == "int")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"Must be at least {self.minimum:g}.")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"Must be at most {self.maximum:g}.")
            return value
        if self.kind == "choice":
            for value, _ in self.options:
                if raw == value or (isinstance(raw, str) and raw.strip() == str(value)):
                    return value
            raise ValueError("One of: " + ", ".join(str(v) for v, _ in self.options))
        if not isinstance(raw, str):
            raise ValueError("Must be text.")
        value = raw.strip() if not self.is_multiline else raw.strip("\n").replace("\r\n", "\n")
        if len(value) > self.max_length:
            raise ValueError(f"At most {self.max_length} characters.")
        if not self.is_multiline and ("\n" in value or "\r" in value):
            raise ValueError("Must be on one line.")
        if self.kind == "url":
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError("Must be an http:// or https:// URL.")
        return value

    def describe(self):
        data = {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "required": self.required,
            "default": self.default,
            "help": self.help,
        }
        if self.kind == "choice":
            data["options"] = [{"value": v, "label": label} for v, label in self.options]
        if self.kind in ("str", "text", "secret", "url"):
            data["max_length"] = self.max_length
        if self.is_multiline:
            data["multiline"] = True
        if self.module_with:
            data["module_with"] = self.module_with
        return data


def _number(raw, whole):
    """A finite number from user input; ``whole`` refuses fractions (1.5, not 2.0)."""
    message = "Must be a whole number." if whole else "Must be a number."
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(message)
    try:
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (ValueError, OverflowError):
        raise ValueError(message) from None
    if not math.isfinite(value) or abs(value) > 1e15:
        raise ValueError(message)
    if whole:
        if not value.is_integer():
            raise ValueError(message)
        return int(value)
    return value


def pem_file(pem):
    """A PEM text (a CA bundle) as a file, for libraries that take a path: one file per
    content in the temporary folder, written once (atomically) and reused."""
    import hashlib
    import os
    import tempfile

    data = (pem.strip() + "\n").encode()
    path = os.path.join(
        tempfile.gettempdir(), f"provisor-ca-bundle-{hashlib.sha256(data).hexdigest()[:24]}.pem"
    )
    if not os.path.exists(path):
        fd, partial = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".partial")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(partial, path)
    return path


# keys whose values are secrets in any reply, whatever the product type declares
SECRET_KEY = re.compile(
    r"password|passwd|passphrase|(^|_)pass($|_)|secret|token|api[_-]?key|private[_-]?key", re.I
)


def is_secret_key(name, declared=()):
    """Whether a reply's key ``name`` holds a secret: one of ``declared`` (the product
    type's secret detail fields) or a name that says so (password, token, api_key...)."""
    return name in declared or bool(SECRET_KEY.search(str(name)))


def secret_values(data, declared=()):
    """Every value under a secret key anywhere in JSON-like ``data`` (for masking)."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            if is_secret_key(key, declared) and isinstance(value, (str, int, float)):
                found.append(str(value))
            else:
                found.extend(secret_values(value, declared))
    elif isinstance(data, list):
        for value in data:
            found.extend(secret_values(value, declared))
    return found


def mask(text, secrets):
    """``text`` with every secret (and its JSON- and URL-escaped forms) replaced."""
    if not text or not secrets:
        return text
    forms = set()
    for secret in secrets:
        forms.add(secret)
        forms.add(json.dumps(secret)[1:-1])
        forms.add(quote(secret, safe=""))
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= 4:
            text = text.replace(form, MASK)
    return text


class RemoteCall:
    """One remote call in the attempt log (see :meth:`OperationContext.call`)."""

    def __init__(self, ctx, method, target):
        self.ctx = ctx
        self.method = method
        self.target = target
        self.outcome = None

    def note(self, line):
        self.ctx.log(f"  {line}")


class OperationContext:
    """What a module method gets: the operation and the objects it is about."""

    def __init__(
        self,
        operation,
        attempt_number,
        service=None,
        tariff=None,
        client=None,
        item=None,
        product_type=None,
        params=None,
        state=None,
        secrets=(),
        save_state=None,
        item_settings=None,
        secret_keys=(),
    ):
        self.operation = operation
        self.attempt_number = attempt_number
        self.service = service
        self.tariff = tariff
        self.client = client
        self.item = item
        self.product_type = product_type
        self.params = params or {}
        self.state = dict(state or {})
        # the settings of the tariff's item (``item_fields``): a record template, limits...
        self.item_settings = dict(item_settings or {})
        self._secrets = {str(s) for s in secrets if s not in (None, "")}
        # the product type's secret detail fields (a reply's values under them are masked)
        self.secret_keys = frozenset(secret_keys)
        self._save_state = save_state
        self._log = []

    @property
    def kind(self):
        return self.operation.kind

    @property
    def idempotency_key(self):
        return str(self.operation.id)

    @property
    def internal_name(self):
        if self.item is not None:
            return self.item.internal_name
        return self.tariff.internal_name if self.tariff is not None else None

    @property
    def service_data(self):
        """What the module stored for this service (``Result.done(data=...)``)."""
        return dict((self.service.module_data or {}) if self.service is not None else {})

    def secret(self, value):
        """Mark a value secret: it is masked wherever it appears in the attempt log."""
        if value not in (None, ""):
            self._secrets.add(str(value))
        return value

    def secrets_in(self, data):
        """Mark secret every value under a secret key of a remote's JSON-like ``data``
        (the product type's secret detail fields, password, token, api_key...); returns
        ``data``. Call it on what a remote answered before logging or raising with it."""
        for value in secret_values(data, self.secret_keys):
            self.secret(value)
        return data

    def save_state(self, state):
        """Store ``state`` with the operation now (before a long call), not only with the
        result: an attempt that dies later hands it to the next one as ``ctx.state``."""
        self.state = dict(state)
        if self._save_state is not None:
            self._save_state(self.state)

    def log(self, line):
        """Append a line to the attempt's request/response log (secrets are masked)."""
        self._log.append(str(line))

    @contextlib.contextmanager
    def call(self, method, target):
        """Log one remote call: ``> METHOD target``, then ``< outcome (N ms)``; a failure
        is logged with its exception class before it propagates."""
        record = RemoteCall(self, method, target)
        self.log(f"> {method} {target}")
        start = time.monotonic()
        try:
            yield record
        except BaseException as exc:
            elapsed = (time.monotonic() - start) * 1000
            self.log(f"< {record.outcome or exc.__class__.__name__} ({elapsed:.0f} ms)")
            raise
        elapsed = (time.monotonic() - start) * 1000
        self.log(f"< {record.outcome or 'ok'} ({elapsed:.0f} ms)")

    @property
    def secrets(self):
        return frozenset(self._secrets)

    @property
    def log_text(self):
        return mask("\n".join(self._log), self._secrets)


class ModuleType:
    id = ""
    name = ""
    description = ""
    config_fields: list = []
    # what each tariff's item holds (a record template, a connection limit, a VM plan):
    # edited on the tariff, stored on the item, ``ctx.item_settings`` in every operation
    item_fields: list = []
    operations: frozenset | None = None  # must be declared by every type
    creates_items = True  # False: the items it needs are made by a person
    people_do_it = False  # True: every operation becomes a task (the manual module)
    accepts_callbacks = False  # True: POST /api/v1/operations/<id>/callback completes it
    client_data: tuple = ()  # keys of the service's module data a client may see
    dns_challenges = False  # True: set_challenge / clear_challenge (ACME dns-01 TXT records)
    # True: ``check_availability(name)`` tells whether the order field
    # ``availability_field`` (a domain name) can still be had; the order form asks it
    checks_availability = False
    availability_field = "domain"
    # the product types (codes) it can serve; None: any (a generic endpoint, people)
    product_types: tuple | None = None
    # keys of the operation state this type stores encrypted (``app.secrets_box``), with
    # their purpose: ``provisor secrets rotate`` re-encrypts them after SECRET_KEY changes
    state_secrets: dict = {}
    default_timeout = 30.0

    def __init__(self, config):
        self.config = config
        # settings ``check_config`` learned and Provisor saves into the module's settings
        # when the test passes (e.g. the SSH host key it pinned on first contact)
        self.config_updates = {}

    # --- declarations -------------------------------------------------------------------

    @classmethod
    def declared_operations(cls):
        """The kinds this type implements (checked when the type is registered)."""
        if cls.operations is None:
            raise TypeError(f"module type {cls.id!r} must declare its operations")
        unknown = set(cls.operations) - ALL_OPERATIONS
        if unknown:
            raise TypeError(f"module type {cls.id!r} declares unknown operations {unknown}")
        # "ensure_item" without creates_items: it needs items, and a person makes them
        missing = [
            k
            for k in cls.operations
            if not callable(getattr(cls, k, None)) and (k != "ensure_item" or cls.creates_items)
        ]
        if missing:
            raise TypeError(f"module type {cls.id!r} declares {missing} without methods")
        return frozenset(cls.operations)

    @classmethod
    def supports(cls, kind):
        return kind in (cls.operations or ())

    @classmethod
    def can_check(cls):
        """Whether the type has a "Test connection" of its own."""
        return cls.check_config is not ModuleType.check_config

    @classmethod
    def secret_fields(cls):
        return [f.name for f in cls.config_fields if f.is_secret]

    @classmethod
    def validate_config(cls, data):
        """Return ``(cleaned, errors)`` for a dict of raw settings."""
        data = data or {}
        cleaned, errors = {}, {}
        known = {f.name for f in cls.config_fields}
        for name in data:
            if name not in known:
                errors[name] = "Unknown setting for this module type."
        for f in cls.config_fields:
            try:
                cleaned[f.name] = f.clean(data.get(f.name))
            except ValueError as exc:
                errors[f.name] = str(exc)
        return cleaned, errors

    @classmethod
    def validate_item(cls, data):
        """Return ``(cleaned, errors)`` for the settings of one item (``item_fields``)."""
        data = data or {}
        cleaned, errors = {}, {}
        known = {f.name for f in cls.item_fields}
        for name in data:
            if name not in known:
                errors[name] = "Unknown setting for this module type's items."
        for f in cls.item_fields:
            try:
                cleaned[f.name] = f.clean(data.get(f.name))
            except ValueError as exc:
                errors[f.name] = str(exc)
        return cleaned, errors

    @classmethod
    def describe(cls):
        return {
            "id": cls.id,
            "name": cls.name,
            "description": cls.description,
            "operations": sorted(cls.operations or ()),
            "creates_items": cls.creates_items,
            "people_do_it": cls.people_do_it,
            "accepts_callbacks": cls.accepts_callbacks,
            "product_types": None if cls.product_types is None else list(cls.product_types),
            "can_check": cls.can_check(),
            "can_list_accounts": cls.can_list_accounts(),
            "config_fields": [f.describe() for f in cls.config_fields],
            "item_fields": [f.describe() for f in cls.item_fields],
        }

    # --- hooks --------------------------------------------------------------------------

    def timeout(self):
        """Longest time one attempt may take: Provisor stops the call when it runs past
        it (``app.watchdog``), so a panel that trickles its answer cannot hold it."""
        return float(self.config.get("timeout") or self.default_timeout)

    def io_timeout(self):
        """Longest one blocking network call of this type may take (a socket read or
        connect, bounded by its own timeout): a call past its deadline is stopped once that
        returns, so the operation's lease is ``timeout() + io_timeout()`` plus a grace."""
        return self.timeout()

    def secret_values(self):
        """The values of the secret settings (masked in every attempt log)."""
        return [self.config.get(name) for name in self.secret_fields() if self.config.get(name)]

    def check_config(self):
        """ "Test connection": talk to the real server with these settings. Return a short
        text of what was verified, or raise :class:`ConfigProblem` naming the setting.
        What it learned and must be kept (a host key pinned on first contact) goes into
        ``self.config_updates``: Provisor saves it with the module's settings."""
        return None

    def check_availability(self, name):
        """``checks_availability``: ``(available, reason)`` of ``name`` (the order field
        ``availability_field``) on the remote side, e.g. a registry's ``domain:check``.
        Raise a ModuleError when it cannot be asked."""
        raise PermanentError("this module type checks no availability")

    def order_field_options(self, item_settings):
        """The choices this module offers for order fields of a tariff it serves, by field
        name, from the tariff's item settings (a VPS plan's OS images). A choice field
        named here offers these instead of the product type's own options."""
        return {}

    @classmethod
    def can_list_accounts(cls):
        """Whether the type lists the accounts on its panel (importing existing ones)."""
        return cls.list_accounts is not ModuleType.list_accounts

    def list_accounts(self):
        """The accounts that exist on the panel, for staff to import one as a service
        without running ``open`` (a provider moving to Provisor): a list of
        ``{"remote_id", "summary", "details"}`` (``details``: detail field values known
        from the panel, offered to prefill; never required). Raise a ModuleError when the
        panel cannot be asked. Optional: a type without it is imported by hand."""
        return []

    def renew_days_before(self):
        """Renew a service automatically this many days before it expires (None: never)."""
        return None

    def verify_callback(self, body, headers, tolerance, path=None):
        """``accepts_callbacks``: None when the callback is authentic, else why not
        (``path``: the URL path it was sent to, for signatures bound to it)."""
        return "this module type accepts no callbacks"

    def parse_callback(self, data):
        """``accepts_callbacks``: the callback body as a Result (raise a ModuleError for
        an error the panel reports)."""
        raise PermanentError("this module type accepts no callbacks")

    def run(self, ctx):
        method = getattr(self, ctx.kind, None)
        if not self.supports(ctx.kind) or method is None:
            raise PermanentError(f"module type {self.id!r} does not support {ctx.kind!r}")
        return method(ctx)


class PerCallTimeouts:
    """Timeouts of a type whose attempt makes up to ``CALLS_PER_ATTEMPT`` remote calls one
    after another, each bounded by the ``timeout`` setting: the attempt's deadline is their
    sum, and one blocking call (a socket read or connect) takes at most ``timeout``. Mix it
    in before :class:`ModuleType`."""

    CALLS_PER_ATTEMPT = 1

    def call_timeout(self):
        """Longest one remote call may take (the ``timeout`` setting, else the default)."""
        return float(self.config.get("timeout") or self.default_timeout)

    def timeout(self):
        return self.call_timeout() * self.CALLS_PER_ATTEMPT

    def io_timeout(self):
        return self.call_timeout()


class _QuietCall:
    outcome = None

    def note(self, line):
        pass


class QuietLog:
    """Stands for an attempt's context where there is no attempt to log to ("Test
    connection", ``ensure_item`` checks): ``call``, ``log`` and ``secret`` do nothing."""

    @contextlib.contextmanager
    def call(self, method, target):
        yield _QuietCall()

    def log(self, line):
        pass

    def secret(self, value):
        return value


PASSWORD_ALPHABET = string.ascii_letters + string.digits


def new_password(length=24):
    """A generated password: ``length`` letters and digits (24: about 143 bits)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def operation_password(ctx, purpose, length=24, key="password"):
    """The password of this operation: the one an earlier attempt generated (and may
    have set already), else a new one, stored encrypted in the operation's state (under
    ``key``, with the ``secrets_box`` key ``purpose``) before anything uses it. Masked in
    the log."""
    from app import secrets_box

    state = dict(ctx.state)
    if state.get(key):
        try:
            password = secrets_box.decrypt(state[key], purpose).decode()
        except secrets_box.Undecryptable:
            password = None
        if password:
            return ctx.secret(password)
    password = ctx.secret(new_password(length))
    state[key] = secrets_box.encrypt(password, purpose)
    ctx.save_state(state)
    return password


# ``change_password``: Provisor chooses the new password (or staff give it) when the
# operation is requested and keeps it encrypted in the operation's state under this key
NEW_PASSWORD_KEY = "new_password"
NEW_PASSWORD_PURPOSE = "service-password"


def new_service_password(ctx):
    """``change_password``: the service's new password, as Provisor stored it (encrypted)
    with the operation when it was requested; one is generated and stored first when the
    state has none. Masked in the log. Once the operation is done, Provisor puts it into
    the service's password detail field and emails it to the client."""
    return operation_password(ctx, NEW_PASSWORD_PURPOSE, key=NEW_PASSWORD_KEY)


def operation_context(ctx):
    """What a module that hands the work to someone else's code sends about an operation:
    the operation, its service, tariff, item, client and parameters, as JSON values."""
    service, tariff, client = ctx.service, ctx.tariff, ctx.client
    return {
        "operation": ctx.kind,
        "operation_id": ctx.operation.id,
        "attempt": ctx.attempt_number,
        "service": None
        if service is None
        else {
            "id": service.id,
            "status": service.status,
            "remote_id": service.remote_id,
            "details": service.details or {},
            "expires_at": service.expires_at.isoformat(timespec="seconds") + "Z"
            if service.expires_at
            else None,
        },
        "tariff": None
        if tariff is None
        else {
            "id": tariff.id,
            "name": tariff.name,
            "product_type": tariff.product_type.code,
            "internal_name": tariff.internal_name,
            "price": f"{tariff.price:.2f}",
            "period": tariff.period,
        },
        "item": None if ctx.item is None else {"internal_name": ctx.item.internal_name},
        "client": None
        if client is None
        else {"id": client.id, "name": client.name, "email": client.email},
        "params": ctx.params,
    }
