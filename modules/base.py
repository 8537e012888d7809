"""The processing module interface.

A module *type* is a class with declared attributes and plain methods that take domain
objects. Provisor creates one instance per configured processing module (with its
validated ``config``) and calls the method named after the operation:

    class MyPanel(ModuleType):
        id = "mypanel"                      # stored in processing_module.type
        name = "My panel"
        description = "Creates accounts on My panel"
        config_fields = [
            ConfigField("url", "API URL", kind="url", required=True),
            ConfigField("token", "API token", kind="secret", required=True),
            ConfigField("timeout", "Timeout (s)", kind="float", default=30, minimum=1),
        ]
        operations = {"open", "suspend", "resume", "close", "change_tariff", "ensure_item"}
        creates_items = True                # False: items must be made by a person

        def open(self, ctx):                # ctx: OperationContext
            ctx.log("POST /accounts ...")
            ...
            return Result.done(remote_id="acc-42", details={"username": "u42"})

Methods return :class:`Result` (``done``, ``pending``, or ``task`` to have a person do
it through a task in the module's department) or raise
:class:`TemporaryError` (retried after the module's retry delay) or
:class:`PermanentError` (straight to a manual task). Any other exception is treated as a
temporary error. ``ctx.idempotency_key`` (the operation id) must be passed to the panel
so that a repeated attempt never creates a second account.

Third-party types register through the ``provisor.modules`` entry-point group, exactly
like the built-in ones::

    [project.entry-points."provisor.modules"]
    mypanel = "mypackage.mypanel:MyPanel"
"""

import math
from dataclasses import dataclass, field
from urllib.parse import urlparse

ALL_OPERATIONS = frozenset({"open", "suspend", "resume", "close", "change_tariff", "ensure_item"})


class ModuleError(Exception):
    """Base of the errors a module raises."""

    permanent = False


class TemporaryError(ModuleError):
    """Worth retrying: the panel is down, timed out, answered 5xx."""


class PermanentError(ModuleError):
    """Retrying will not help: bad request, unknown plan, refused by the panel."""

    permanent = True


@dataclass
class Result:
    status: str  # "done", "pending" or "task"
    remote_id: str | None = None
    details: dict = field(default_factory=dict)

    @classmethod
    def done(cls, remote_id=None, details=None):
        return cls("done", remote_id, dict(details or {}))

    @classmethod
    def pending(cls):
        return cls("pending")

    @classmethod
    def task(cls):
        """People do this operation: a task in the module's department, then done."""
        return cls("task")


@dataclass
class ConfigField:
    """One setting of a module type; ``kind`` is str, secret, url, int, float or bool."""

    name: str
    label: str
    kind: str = "str"
    required: bool = False
    default: object = None
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""

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
        if not isinstance(raw, str):
            raise ValueError("Must be text.")
        value = raw.strip()
        if self.kind == "url":
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError("Must be an http:// or https:// URL.")
        return value


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
    ):
        self.operation = operation
        self.attempt_number = attempt_number
        self.service = service
        self.tariff = tariff
        self.client = client
        self.item = item
        self.product_type = product_type
        self.params = params or {}
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

    def log(self, line):
        """Append a line to the attempt's request/response log (keep secrets out)."""
        self._log.append(str(line))

    @property
    def log_text(self):
        return "\n".join(self._log)


class ModuleType:
    id = ""
    name = ""
    description = ""
    config_fields: list = []
    operations = ALL_OPERATIONS
    creates_items = True
    default_timeout = 30.0

    def __init__(self, config):
        self.config = config

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
    def describe(cls):
        return {
            "id": cls.id,
            "name": cls.name,
            "description": cls.description,
            "operations": sorted(cls.operations),
            "creates_items": cls.creates_items,
            "config_fields": [
                {
                    "name": f.name,
                    "label": f.label,
                    "kind": f.kind,
                    "required": f.required,
                    "default": f.default,
                    "help": f.help,
                }
                for f in cls.config_fields
            ],
        }

    def timeout(self):
        """Longest time one attempt may take (the lease of a running operation)."""
        return float(self.config.get("timeout") or self.default_timeout)

    def run(self, ctx):
        method = getattr(self, ctx.kind, None)
        if ctx.kind not in self.operations or method is None:
            raise PermanentError(f"module type {self.id!r} does not support {ctx.kind!r}")
        return method(ctx)
