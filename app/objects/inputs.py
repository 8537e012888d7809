"""The bodies the services take (from the API and from the pages' forms alike).

A service validates its dict with ``SomeInput.check(data)`` (or ``.parse``); the same
model is the OpenAPI request schema. What needs the database (an existing department, a
name already taken) stays in the service.
"""

import functools
import re
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BeforeValidator, ConfigDict, Field, RootModel, create_model, field_validator

from app.models import Client, ProductType, Tariff, Task
from app.objects import currencies
from app.objects.base import Input, Missing, NotBlank, invalid, missing
from app.objects.fields import (
    EMAIL,
    Amount,
    Choice,
    DetailValues,
    DueDate,
    EmailAddress,
    Flag,
    FreeText,
    IdList,
    JsonObject,
    Password,
    Ref,
    StrictFlag,
    Text,
    WholeNumber,
)
from app.states import EVENT_TYPES

MAX_WEBHOOK_SECRET = 200
INTERNAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STAFF_ROLES = ("staff", "admin")

Name = Text(100)
PersonName = Text(100, not_text="This field is required.")
NotifyEmail = Text(
    200, pattern="@", pattern_message="Must be an email address.", schema={"format": "email"}
)
DepartmentIds = IdList("Must be a list of department ids.", "Unknown department {!r}.")
Role = Choice(STAFF_ROLES, "Must be staff or admin.")
Language = Choice(Client.LANGUAGES, "Choose English or Russian.")


# --- people -----------------------------------------------------------------------------


class ClientInput(Input):
    """A client; with `password` the client can log in to the client area."""

    name: PersonName
    email: EmailAddress()
    password: Password | None = Field(
        None, description="Optional: with it the client can log in to the client area."
    )
    language: Language = Field(
        "en", description="The language of the client area and of the client's emails."
    )


PHONE = r"^\+?[0-9][0-9 ()./-]{3,38}[0-9]$"
COUNTRY = r"^[A-Za-z]{2}$"


class ClientNoteInput(Input):
    """A staff note on a client's record."""

    text: Annotated[Text(5000, not_text="Write a note."), Missing("Write a note.")]


class PasswordReset(Input):
    """A new password (from a reset link, or set by staff)."""

    password: Password
    password_repeat: str = ""


class DepartmentInput(Input):
    """A department; `notify_email` gets an email on each new task."""

    name: Name
    notify_email: NotifyEmail | None = Field(
        None, description="Where new-task notifications go (null: none)."
    )


class StaffInput(Input):
    """A staff member (`role: admin` makes an admin) and their departments."""

    email: EmailAddress()
    name: PersonName | None = Field(None, description="Defaults to the email.")
    password: Password
    department_ids: DepartmentIds = []
    role: Role = "staff"


def _no_default(schema):
    """Not given means "unchanged": there is no default value to show."""
    schema.pop("default", None)


# an email address as EmailAddress() checks it, its schema's format set by the field (a
# Field's dict and callable json_schema_extra do not compose)
ChangedEmail = Annotated[
    str,
    Field(max_length=200, pattern=EMAIL.pattern),
    next(a for a in get_args(EmailAddress())[1:] if isinstance(a, BeforeValidator)),
]


def _email_no_default(schema):
    schema.pop("default", None)
    schema["format"] = "email"


class ClientUpdate(Input):
    """Change a client: what is not given stays as it is; an optional contact field given
    empty (`""` or null) is emptied. A new `email` moves the client's login too."""

    name: Annotated[PersonName, NotBlank()] = Field(
        None, description="A new name (omitted: unchanged).", json_schema_extra=_no_default
    )
    email: Annotated[ChangedEmail, NotBlank()] = Field(
        None,
        description="A new email (omitted: unchanged); the client's login moves with it.",
        json_schema_extra=_email_no_default,
    )
    language: Annotated[Language, NotBlank()] = Field(
        None,
        description="The language of the client area and of the client's emails (omitted: "
        "unchanged).",
        json_schema_extra=_no_default,
    )
    phone: (
        Text(
            40,
            pattern=PHONE,
            pattern_message="Must be a phone number: digits, spaces and + ( ) . / - only.",
        )
        | None
    ) = Field(None, description="Omitted: unchanged; empty or null: emptied.")
    company: Text(200) | None = Field(None, description="Omitted: unchanged; empty: emptied.")
    address: Text(1000) | None = Field(
        None, description="The postal address, several lines (omitted: unchanged)."
    )
    country: (
        Text(
            2,
            pattern=COUNTRY,
            pattern_message="Must be a two-letter country code (ISO 3166), e.g. DE.",
            transform=str.upper,
        )
        | None
    ) = Field(None, description="ISO 3166 alpha-2 code, e.g. DE (omitted: unchanged).")


class StaffUpdate(Input):
    """Change a staff member: what is not given stays as it is."""

    name: Annotated[PersonName, NotBlank()] = Field(
        None, description="A new name (omitted: unchanged).", json_schema_extra=_no_default
    )
    password: Password | None = Field(None, description="A new password (omitted: unchanged).")
    department_ids: DepartmentIds | None = Field(
        None, description="Replaces the departments (omitted: unchanged)."
    )
    role: Role | None = None
    is_active: StrictFlag() | None = None


class PasswordChange(Input):
    """A new password of one's own; the current one proves it is really them."""

    current_password: str = ""
    password: Password
    password_repeat: str = ""


# --- processing modules -----------------------------------------------------------------


def _choose_module_type():
    import modules

    return "Choose a module type: " + ", ".join(modules.types())


def _module_type(value):
    import modules

    if not isinstance(value, str) or modules.get_type(value) is None:
        raise invalid(f"Unknown module type {value!r}.")
    return value


ModuleTypeId = Annotated[str, BeforeValidator(_module_type), Missing(_choose_module_type)]


class ModuleSettings(Input):
    """The fields of a processing module but its type."""

    name: Name
    config: JsonObject("Must be an object of settings.") = Field(
        {},
        description="The type's settings, validated against its schema (GET /module-types); "
        "errors come keyed `config.<setting>`; an unknown setting is an error.",
    )
    department_id: Ref("Choose an existing department.") | None = Field(
        None,
        description="The department that gets its tasks: every module has one. Omitted: "
        "the module's own (on PUT), else the default department `Support` (made if there "
        "is none); null is refused (422).",
    )
    retry_delay: WholeNumber(1, 7 * 86400) = Field(300, description="Seconds between attempts.")
    max_attempts: WholeNumber(1, 100) = 3
    max_wait: WholeNumber(1, 30 * 86400) = Field(
        3600, description="Seconds a polling operation may wait in all, then a task."
    )
    max_running: WholeNumber(0, 100000) = Field(
        0, description="Operations it may run at once (0: no limit)."
    )
    priority: WholeNumber(-1000, 1000) = Field(0, description="Lower runs first.")
    enabled: Flag = True
    test_connection: Flag = Field(
        False,
        description="Test the connection first (POST /modules/{id}/check); a failing test "
        "saves nothing and answers 422 with the server's words by the setting.",
    )


class ModuleFields(ModuleSettings):
    """The fields of a processing module; see ModuleInput for each type."""

    type: ModuleTypeId = Field(
        description="A module type id (GET /module-types); it cannot change later."
    )


class ModuleUpdate(ModuleSettings):
    """Every field, like POST /modules (a missing one takes its default); the type cannot
    change, and a secret left blank keeps the stored one."""


_CONFIG_KINDS = {
    "str": (str, {}),
    "text": (str, {}),
    "secret": (str, {"writeOnly": True}),
    "url": (str, {"format": "uri", "pattern": "^https?://"}),
    "int": (int, {}),
    "float": (float, {}),
    "bool": (bool, {}),
}


def _or_null(extra, schema):
    """A setting that is not required takes null (or "") for its default."""
    schema.update(extra)
    if isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]


def _schema_name(type_id, suffix):
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", type_id)) + suffix


def config_model(cls):
    """The model of a module type's ``config``, generated from its ``config_fields``.

    The type itself validates a config (``validate_config``, from the same declarations);
    this model describes it in the OpenAPI document. A kind this table does not know is
    described as any value.
    """
    fields = {}
    for f in cls.config_fields:
        kind, extra = _CONFIG_KINDS.get(f.kind, (Any, {}))
        if f.kind == "choice":
            values = tuple(value for value, _ in f.options)
            kind, extra = Any, {"enum": [*values] if f.required else [*values, "", None]}
            # not required: null or "" takes the default
        elif kind is str and f.max_length:
            extra = {**extra, "maxLength": f.max_length}
        options = {"title": f.label, "description": f.help or None}
        if kind in (int, float):
            if f.minimum is not None:
                options["ge"] = f.minimum
            if f.maximum is not None:
                options["le"] = f.maximum
        if f.required:
            if kind is str:
                options["min_length"] = 1
            fields[f.name] = (kind, Field(..., json_schema_extra=extra or None, **options))
        else:
            fields[f.name] = (
                kind,
                Field(f.default, json_schema_extra=functools.partial(_or_null, extra), **options),
            )
    return create_model(
        _schema_name(cls.id, "Config"),
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Settings of the `{cls.id}` module type: {cls.description}",
        **fields,
    )


@functools.lru_cache(maxsize=8)
def _module_input_models(types):
    models = []
    for type_id, cls in types:
        config = config_model(cls)
        needs_config = any(f.required for f in cls.config_fields)
        models.append(
            create_model(
                _schema_name(type_id, "ModuleInput"),
                __base__=ModuleFields,
                __doc__=f"A processing module of type `{type_id}` ({cls.name}).",
                type=(Literal[type_id], ...),
                config=(config, ... if needs_config else Field(default_factory=dict)),
            )
        )
    union = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
    root = create_model(
        "ModuleInput",
        __base__=RootModel[Annotated[union, Field(discriminator="type")]],
        __doc__="A processing module; `type` decides what `config` holds.",
    )
    return [*models, root]


def module_input_models():
    """Per known module type its ``...ModuleInput`` body, and ``ModuleInput`` (one of them)."""
    import modules

    return _module_input_models(tuple(modules.types().items()))


# --- tariffs, orders, payments ----------------------------------------------------------


def _code_or_id(value):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise invalid("Choose a product type.")
    return value


ProductTypeRef = Annotated[
    Annotated[str, Field(json_schema_extra={"enum": list(ProductType.CODES)})]
    | Annotated[int, Field(ge=1)],
    BeforeValidator(_code_or_id),
    Field(description="A product type's code (or id)."),
]


def _iso_currency(value):
    """An ISO 4217 code, as it is typed ("usd" is USD): never cut to three letters."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise missing()
    code = value.strip().upper() if isinstance(value, str) else value
    if not currencies.is_currency(code):
        raise invalid(currencies.MESSAGE)
    return code


class TariffInput(Input):
    """A tariff plan (POST and PUT alike)."""

    name: Name
    product_type: ProductTypeRef
    price: Amount(
        "Must be a non-negative amount such as 9.99.",
        maximum=9999999999,
        places=2,
        places_message="At most 2 decimal places, such as 9.99: a price is kept in cents.",
        description="A non-negative amount such as 9.99 (a string keeps it exact).",
    )
    currency: Annotated[
        str,
        Field(min_length=3, max_length=3, json_schema_extra={"enum": sorted(currencies.ISO_4217)}),
        BeforeValidator(_iso_currency),
    ] = Field("USD", description="An ISO 4217 currency code (USD, EUR...).")
    period: Choice(Tariff.PERIODS) = "month"
    internal_name: Text(
        64, pattern=INTERNAL_NAME.pattern, pattern_message="Letters, digits, '.', '_' and '-' only."
    ) = Field(description="The key of the modules' items: tariffs sharing it share items.")
    module_ids: IdList() | None = Field(
        None,
        description="Processing modules serving it; linking an enabled one queues its "
        "ensure_item operation. Omitted or null: none (on PUT this unlinks all).",
    )
    item_settings: JsonObject("Must be an object of settings per module id.") | None = Field(
        None,
        description="Per module id (as text), the settings of its item for this plan, as "
        "its type declares them (GET /module-types `item_fields`): a record template, "
        "limits... Tariffs sharing an internal name share the item. Omitted: unchanged.",
    )


class OrderInput(Input):
    """Order a tariff for a client."""

    client_id: Ref("Choose an existing client.")
    tariff_id: Ref("Choose an existing tariff.") = Field(
        description="An orderable tariff (an enabled module serves it)."
    )
    params: JsonObject() = Field(
        {}, description="Order parameters passed to the module (e.g. domain)."
    )

    @field_validator("params")
    @classmethod
    def _short_names(cls, params):
        if any(not isinstance(k, str) or len(k) > 64 for k in params):
            raise invalid("Parameter names must be short strings.")
        return params


PAYMENT_ID = "Required: the payment's id at the payment provider."
CURRENCY = "Required: a three-letter currency code."


def _payment_id(value):
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise invalid(PAYMENT_ID)
    if len(str(value)) > 200:
        raise invalid("At most 200 characters.")
    return str(value).strip()


def _currency(value):
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value.strip()):
        raise invalid(CURRENCY)
    return value.strip().upper()


class PaymentInput(Input):
    """A payment notification (the payment webhook's body)."""

    payment_id: Annotated[
        Annotated[str, Field(min_length=1, max_length=200)] | int,
        BeforeValidator(_payment_id),
        Missing(PAYMENT_ID),
    ] = Field(description="The payment's id at the payment provider (idempotency key).")
    order_id: Ref("Required: the id of the order.")
    amount: Annotated[
        Amount(
            "Must be an amount such as 9.99, at most 9999999999.",
            maximum=9999999999,  # what the database's amounts hold (an order costs no more)
        ),
        Missing("Required: the amount paid, such as 9.99."),
    ] = Field(description="At least the order's amount.")
    currency: Annotated[
        str, Field(pattern=r"^[A-Za-z]{3}$"), BeforeValidator(_currency), Missing(CURRENCY)
    ]


# --- services and tasks -----------------------------------------------------------------


class ServiceActionInput(Input):
    """Optional parameters, stored on the operation and passed to the module."""

    model_config = ConfigDict(extra="allow")


class ChangeTariffInput(ServiceActionInput):
    """The new tariff; other keys are stored on the operation and passed to the module."""

    tariff_id: Ref("Choose an existing tariff.") = Field(
        description="A different tariff of the same product type."
    )


class SuspendInput(ServiceActionInput):
    """Why the service is suspended; other keys are stored on the operation and passed to
    the module."""

    reason: FreeText(max_length=500) | None = Field(
        None,
        description="Why (at most 500 characters): passed to the module (`params.reason`), "
        "shown to the client in the client area and in the suspension email.",
    )


class ChangePasswordInput(Input):
    """The new password of the service's access: generated by Provisor unless given."""

    password: str | None = Field(
        None,
        min_length=12,
        max_length=128,
        pattern=r"^[!-~]+$",
        description="12 to 128 printable ASCII characters, no spaces (default: generated). "
        "Stored encrypted with the operation, never in its parameters; the client gets it "
        "by email once the module has set it.",
    )


class TaskAssignInput(Input):
    """Assign a task (to the caller unless `user_id` says whom)."""

    user_id: Ref("Choose a staff member.") | None = Field(
        None,
        description="A member of the task's department (or an admin) to assign (default: the caller).",
    )
    force: Flag = Field(
        False, description="Hand over a task already assigned (admins or its assignee)."
    )


class TaskPlanInput(Input):
    """A task's priority and due date (a key left out stays as it is)."""

    priority: Choice(Task.PRIORITIES) | None = Field(
        None, description="low, normal, high or urgent."
    )
    due_at: DueDate() | None = Field(
        None,
        description="When it should be done: a day (due at its end, UTC) or a UTC time; "
        "null or empty: no due date.",
    )


class TaskCommentInput(Input):
    """A comment for the task's history."""

    text: Annotated[Text(10000, not_text="Write a comment."), Missing("Write a comment.")]


DetailFields = DetailValues()


class TaskFieldsInput(Input):
    """Detail fields filled in (the task stays open)."""

    fields: DetailFields = {}


MAX_CANCEL_REASON = 1000


class TaskCancelInput(Input):
    """Why nobody will do the task."""

    reason: FreeText(max_length=MAX_CANCEL_REASON) | None = Field(
        None,
        description="At most 1,000 characters; for the history (and, for a service's "
        "setup, shown to its client).",
    )


class OperationCancelInput(Input):
    """Why the operation is cancelled (optional)."""

    reason: FreeText(max_length=MAX_CANCEL_REASON) | None = Field(
        None,
        description="At most 1,000 characters. Cancelling a service's setup (`open`): "
        "the service is `setup_cancelled` and its client reads this reason.",
    )


class TaskCloseInput(Input):
    """Close a task with the detail fields of the product type."""

    fields: DetailFields = Field(
        {},
        description="The detail fields of the product type; closing the task of an `open` "
        "operation needs every required one.",
    )
    comment: FreeText(max_length=10000) = ""


class ServiceDetailsInput(Input):
    """Correct a service's detail fields and remote id (no module is called; recorded in
    the service's history)."""

    details: JsonObject() = Field(
        {},
        description="Detail fields of the product type, checked by their kinds (an `ip` must "
        "be an IP address, a `url` http or https...): each given one is set, a blank or null "
        "one cleared, one not given unchanged. A name the product type does not declare is "
        "refused (`details.<name>`).",
    )
    remote_id: str | None = Field(
        None,
        max_length=255,
        description="The account's id on the panel (leave it out: unchanged). One already "
        "bound to another live service of the same module: 409 `remote_id_bound`.",
    )


class ServiceImportInput(Input):
    """Bind an account that already exists on a panel to a new service: active at once,
    no `open` operation runs (one is recorded as done, "imported by <staff>")."""

    client_id: Ref("Choose an existing client.")
    tariff_id: Ref("Choose an existing tariff.")
    module_id: Ref("Choose a module.") = Field(description="A module that serves the tariff.")
    remote_id: str = Field(
        max_length=255,
        description="The account's id on the panel (GET /modules/{id}/accounts lists them "
        "for module types that can). Already bound to another live service of the same "
        "module: 409 `remote_id_bound`.",
    )
    details: JsonObject() = Field(
        {}, description="Detail fields of the product type, checked by their kinds."
    )


# --- resellers (/api/v1/reseller) --------------------------------------------------------

IDEMPOTENCY_KEY = Field(
    pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$",
    description="Your own unique id of this request: the same key again answers with what "
    "the first request made (200), never a second order or operation.",
)


class ResellerOrderInput(Input):
    """Order a tariff paid on account."""

    model_config = ConfigDict(extra="forbid")

    tariff_id: Ref("Choose an existing tariff.") = Field(
        description="An orderable tariff (GET /reseller/tariffs)."
    )
    params: JsonObject() = Field({}, description="The tariff's order fields.")
    idempotency_key: str = IDEMPOTENCY_KEY


class ResellerActionInput(Input):
    """An operation on one of your services; `change_tariff` takes `tariff_id`."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: str = IDEMPOTENCY_KEY
    tariff_id: Ref("Choose a tariff you can order.") | None = Field(
        None, description="change_tariff: the new tariff (of the same product type)."
    )
    reason: FreeText(max_length=500) | None = Field(
        None, description="suspend: why (passed to the module, shown to the client)."
    )


# --- outgoing events (webhooks) ---------------------------------------------------------


def _event_types(value):
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("Must be a list of event types.")
    if not value:
        raise invalid("Choose at least one event (or * for all).")
    unknown = [v for v in value if v != "*" and v not in EVENT_TYPES]
    if unknown:
        raise invalid(f"Unknown event {unknown[0]!r}: one of *, " + ", ".join(EVENT_TYPES))
    return list(dict.fromkeys(value))


EventTypes = Annotated[
    list[Literal[("*", *EVENT_TYPES)]],
    Field(min_length=1),
    BeforeValidator(_event_types),
]


class WebhookEndpointInput(Input):
    """A webhook endpoint: where outgoing events go, signed with `secret`.

    The URL must pass Provisor's outbound checks (OUTBOUND_ALLOWED_NETWORKS); on a change a
    blank `secret` keeps the current one."""

    url: Text(2000) = Field(description="http:// or https:// URL the events are POSTed to.")
    secret: Text(MAX_WEBHOOK_SECRET) | None = Field(
        None,
        description="The signing secret (16-200 characters); required when creating, "
        "omitted on a change: unchanged. Never answered back.",
    )
    event_types: EventTypes = Field(
        description="The events it gets: `*` for all, or names such as `service.active`."
    )
    enabled: Flag = True
    description: Text(200) | None = None


MODELS = [
    ClientInput,
    ClientUpdate,
    ClientNoteInput,
    DepartmentInput,
    StaffInput,
    StaffUpdate,
    ModuleFields,
    ModuleUpdate,
    TariffInput,
    OrderInput,
    PaymentInput,
    ServiceActionInput,
    ChangeTariffInput,
    SuspendInput,
    ChangePasswordInput,
    TaskAssignInput,
    TaskPlanInput,
    TaskCommentInput,
    TaskFieldsInput,
    TaskCancelInput,
    OperationCancelInput,
    TaskCloseInput,
    ServiceDetailsInput,
    ServiceImportInput,
    ResellerOrderInput,
    WebhookEndpointInput,
    ResellerActionInput,
]
"""The input bodies of the OpenAPI document (with :func:`module_input_models`)."""
