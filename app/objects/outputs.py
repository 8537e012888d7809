"""What the API answers: one model per object, built from a row with ``Model.of(row)``.

The models are the OpenAPI response schemas too; enums come from the models'
declarations (``Operation.KINDS``, ``Service.STATUSES``, ...). Adding a field to an
object is one line here.
"""

from typing import Any

from pydantic import AliasPath, ConfigDict, Field, create_model

from app import models as rows
from app import states
from app.objects.base import Output
from app.objects.fields import Id, Money, Object, OneOf, Timestamp
from app.services.detail_fields import KINDS as DETAIL_KINDS
from app.services.order_fields import KINDS as ORDER_FIELD_KINDS
from modules.base import KINDS as CONFIG_FIELD_KINDS

SECRET_SHOWN_AS = "********"
EMAIL_STATUSES = rows.Email.STATUSES

IdOrNull = Id | None


class Health(Output):
    """Whether the system works; ``degraded`` (HTTP 503) says why in ``problems``."""

    status: OneOf(("ok", "degraded"))
    database: str = Field(description='"ok" or "error: <exception class>"')
    broker: OneOf(("redis", "embedded"))
    redis: str | None = Field(
        description='The broker\'s answer to a PING: "ok" or "error: <exception class>" '
        "(null: the embedded broker)."
    )
    last_sweep_at: Timestamp = Field(
        description="When the scheduler last swept (null: never, or not checked)."
    )
    last_sweep_age: float | None = Field(description="Seconds since then.")
    overdue_operations: int | None = Field(
        description="Operations due for longer than twice SWEEP_INTERVAL (no worker took them)."
    )
    problems: list[str] = Field(description="What is wrong, in words (empty when ok).")
    version: str


class Client(Output):
    id: Id
    name: str
    email: str = Field(json_schema_extra={"format": "email"})
    created_at: Timestamp
    on_account: bool = Field(
        description="A reseller paying on account (/api/v1/reseller): its orders are paid at once."
    )
    language: str = Field(
        description="The language of the client area and of the client's emails (en, ru)."
    )
    phone: str = Field(description="Empty: not known.")
    company: str
    address: str
    country: str = Field(description="ISO 3166 alpha-2 code (empty: not known).")


class ClientNote(Output):
    """A staff note on a client's record."""

    id: Id
    author: str = Field(description="The email of the staff member who wrote it.")
    text: str
    created_at: Timestamp


class Department(Output):
    id: Id
    name: str
    notify_email: str | None = Field(description="Where new-task notifications go (null: none).")


class Staff(Output):
    """A staff member or admin."""

    id: Id
    email: str = Field(json_schema_extra={"format": "email"})
    name: str
    role: OneOf(rows.User.ROLES)
    is_active: bool
    department_ids: list[Id]


class Module(Output):
    """A processing module: a configured instance of a module type."""

    id: Id
    name: str
    type: str = Field(description="A module type id: see GET /module-types.")
    config: Object = Field(description="The type's settings, cleaned; secrets show as `********`.")
    department_id: IdOrNull = Field(description="The department that gets its tasks.")
    retry_delay: int = Field(description="Seconds between attempts.")
    max_attempts: int
    max_wait: int = Field(description="Seconds a polling operation may wait in all.")
    max_running: int = Field(description="0: no limit.")
    priority: int = Field(description="Lower runs first.")
    enabled: bool

    @classmethod
    def of(cls, module, **extra):
        """Secrets (config fields of kind ``secret``) are never shown."""
        import modules

        kind = modules.get_type(module.type)
        secrets = [f.name for f in kind.config_fields if f.kind == "secret"] if kind else []
        config = dict(module.config or {})
        for name in secrets:
            if config.get(name):
                config[name] = SECRET_SHOWN_AS
        return super().of(module, config=config, **extra)


class ConfigOption(Output):
    value: Any
    label: str


class ConfigField(Output):
    name: str
    label: str
    kind: OneOf(CONFIG_FIELD_KINDS)
    required: bool
    default: Any = Field(description="Any JSON value, or null.")
    help: str
    options: list[ConfigOption] | None = Field(
        None, description="For a `choice`: the values it takes."
    )
    max_length: int | None = Field(None, ge=1, description="For text kinds: the longest value.")
    multiline: bool | None = Field(None, description="A secret of several lines (a key).")
    module_with: str | None = Field(
        None,
        description="For an `int` naming another processing module: the capability its "
        "type must declare (e.g. `dns_challenges`).",
    )

    @classmethod
    def of(cls, field, **extra):
        return cls.model_validate({**field.describe(), **extra}).model_dump()


class ModuleType(Output):
    id: str
    name: str
    description: str
    operations: list[OneOf(rows.Operation.KINDS)] = Field(
        description="The kinds it implements: any other is never offered (409)."
    )
    creates_items: bool = Field(description="False: the items it needs must be made by a person.")
    people_do_it: bool = Field(description="True: every operation becomes a task for people.")
    accepts_callbacks: bool = Field(
        description="True: its endpoint may call POST /operations/{id}/callback."
    )
    product_types: list[str] | None = Field(
        description="The product types (codes) it serves; null: any."
    )
    can_check: bool = Field(description="True: POST /modules/{id}/check talks to its server.")
    can_list_accounts: bool = Field(
        description="True: GET /modules/{id}/accounts lists the accounts on its panel (import)."
    )
    config_fields: list[ConfigField]
    item_fields: list[ConfigField] = Field(
        description="What each tariff's item holds, set on the tariff (`item_settings`)."
    )

    @classmethod
    def of(cls, module_type, **extra):
        """A module type class, described."""
        return super().of(
            module_type,
            operations=sorted(module_type.operations),
            can_check=module_type.can_check(),
            can_list_accounts=module_type.can_list_accounts(),
            config_fields=[ConfigField.of(f) for f in module_type.config_fields],
            item_fields=[ConfigField.of(f) for f in module_type.item_fields],
            **extra,
        )


class CheckResult(Output):
    """The answer of Test connection."""

    ok: bool
    message: str = Field(description="The server's own words.")
    fields: dict[str, str] = Field(
        description="The setting at fault (`config.<name>`) with the message."
    )


class OrderField(Output):
    """A field the client fills in when ordering; sent as `params.<name>`."""

    name: str
    label: str
    kind: OneOf(ORDER_FIELD_KINDS)
    required: bool
    max_length: int | None = Field(None, ge=1)
    options: list[str] | None = None
    max_count: int | None = Field(None, ge=1, description="`domains`: at most this many names.")


class Item(Output):
    """What a module needs on its panel to serve tariffs of one internal name."""

    id: Id
    module_id: Id
    internal_name: str
    status: OneOf(rows.Item.STATUSES)
    remote_id: str | None
    error: str | None
    settings: Object = Field(description="Its settings (the module type's `item_fields`).")


class Tariff(Output):
    id: Id
    name: str
    product_type: OneOf(rows.ProductType.CODES) = Field(
        validation_alias=AliasPath("product_type", "code")
    )
    price: Money
    currency: str = Field(pattern="^[A-Z]{3}$")
    period: OneOf(rows.Tariff.PERIODS)
    internal_name: str
    archived: bool = Field(validation_alias="is_archived")
    module_ids: list[Id]
    orderable: bool = Field(description="True once an enabled module serves it (and not archived).")
    items: list[Item]
    order_fields: list[OrderField] = Field(
        description="What a client fills in when ordering it (POST /orders `params`): the "
        "product type's fields, with the choices its modules offer (a VPS plan's OS images)."
    )


class Order(Output):
    id: Id
    status: OneOf(rows.Order.STATUSES)
    client_id: Id
    tariff_id: Id
    service_id: Id
    amount: Money
    currency: str
    created_at: Timestamp
    paid_at: Timestamp


class PaidOrder(Order):
    operation_id: Id = Field(description="The `open` operation just queued.")


class PaymentResult(Output):
    payment_id: str
    order_id: Id
    order_status: OneOf(("paid",))
    service_id: Id
    operation_id: Id
    replayed: bool = Field(
        description="True when this payment_id was seen before (nothing new queued)."
    )


class Attempt(Output):
    number: int = Field(ge=1)
    started_at: Timestamp
    finished_at: Timestamp
    outcome: OneOf(rows.Attempt.OUTCOMES) | None
    error: str | None
    log: str = Field(description="The module's request/response log.")
    worker: str


class Operation(Output):
    """One action of a module on a service or an item."""

    id: Id
    kind: OneOf(rows.Operation.KINDS)
    operation: OneOf(rows.Operation.KINDS) = Field(
        validation_alias="kind", description="Same as `kind`."
    )
    status: OneOf(rows.Operation.STATUSES)
    service_id: IdOrNull
    item_id: IdOrNull
    module_id: IdOrNull
    attempts: int = Field(ge=0, description="Attempts started, polling checks included.")
    failures: int = Field(ge=0, description="Failed attempts: what max_attempts counts.")
    next_run_at: Timestamp
    deadline_at: Timestamp = Field(
        description="A polling operation goes to people after this (the module's max_wait)."
    )
    state: dict[str, Any] | None = Field(
        description="The module's memory between calls (staff only, never shown to clients)."
    )
    last_error: str | None
    completed_by: str | None = Field(
        description="Who completed or cancelled it by hand (null: automation)."
    )
    params: Object
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp


class OperationWithAttempts(Operation):
    attempt_log: list[Attempt]


class Service(Output):
    id: Id
    status: OneOf(rows.Service.STATUSES)
    client_id: Id
    tariff_id: Id
    module_id: IdOrNull
    remote_id: str | None
    details: Object = Field(
        description="The detail fields of the product type (ip, username, ...)."
    )
    params: Object
    module_choice: dict[str, Any] | None = Field(description="Why this module was chosen.")
    module_data: Object = Field(description="What the module keeps for this service (staff).")
    expires_at: Timestamp = Field(description="When it expires (a `renew` operation renews it).")
    setup_cancelled_reason: str | None = Field(
        description="Why its setup was cancelled (status `setup_cancelled`; the client "
        "reads it too); null otherwise."
    )
    created_at: Timestamp
    activated_at: Timestamp


class ServiceWithOperations(Service):
    operations: list[Operation] = Field(description="Newest first.")


class RemoteAccount(Output):
    """An account on a module's panel (to import as a service)."""

    remote_id: str
    summary: str = Field(description="What the panel says of it (user, address, domain).")
    details: dict[str, str] = Field(description="Detail field values known from the panel.")
    bound_to: IdOrNull = Field(description="The live service already bound to it (null: free).")


class RemoteAccountList(Output):
    accounts: list[RemoteAccount]


class Task(Output):
    id: Id
    title: str
    status: OneOf(rows.Task.STATUSES)
    department_id: IdOrNull
    service_id: IdOrNull
    operation_id: IdOrNull
    assignee_id: IdOrNull
    priority: OneOf(rows.Task.PRIORITIES)
    due_at: Timestamp = Field(description="When it should be done (null: no due date).")
    is_overdue: bool = Field(description="Still open after its due date.")
    fields: Object = Field(description="Detail fields filled in.")
    created_at: Timestamp
    updated_at: Timestamp
    closed_at: Timestamp
    closed_by: str | None


class TaskEvent(Output):
    kind: str = Field(
        description="created, assigned, comment, fields, note, closed, cancelled, reopened"
    )
    actor: str
    text: str
    created_at: Timestamp


class TaskWithEvents(Task):
    events: list[TaskEvent] = Field(description="Oldest first.")


class Email(Output):
    id: Id
    to: str
    subject: str
    body: str
    kind: str = Field(
        description="welcome, notice_<kind> (notice_suspend, notice_resume, notice_close, "
        "notice_change_tariff, notice_change_password), task_new, task_assigned, ..."
    )
    service_id: IdOrNull
    status: OneOf(EMAIL_STATUSES)
    attempts: int = Field(ge=0)
    last_error: str | None
    created_at: Timestamp
    sent_at: Timestamp


# --- outgoing events (webhooks) ---------------------------------------------------------


class WebhookEndpoint(Output):
    """Where outgoing events go; the secret is never answered back."""

    id: Id
    url: str
    event_types: list[str] = Field(description="`*` (all) or event names.")
    enabled: bool
    description: str
    created_at: Timestamp
    updated_at: Timestamp


class EventData(Output):
    """What changed: the row's kind, id, new and previous status, the action that moved
    it, and a few of its fields (service: client_id, tariff_id, module_id, remote_id;
    operation: kind, service_id, item_id, module_id, attempts, last_error; task:
    operation_id, service_id, department_id, assignee_id)."""

    model_config = ConfigDict(extra="allow")

    object: OneOf(("service", "operation", "task", "endpoint"))
    id: Id
    status: str | None = Field(None, description="The status it has now.")
    previous_status: str | None = Field(None, description="null for `<object>.created`.")
    action: str | None = Field(
        None, description="The state machine's action (`create` for a new row)."
    )


class EventPayload(Output):
    """The body of an outgoing event (POSTed to each webhook endpoint that wants it)."""

    id: str = Field(
        description="The event's stable id (`evt_...`), also in `X-Provisor-Event-Id`: "
        "the same on every attempt, so receivers deduplicate on it.",
        examples=["evt_5f0c6a3e9b0d4a8e8f1b2c3d4e5f6a7b"],
    )
    type: OneOf((*states.EVENT_TYPES, "endpoint.test"))
    created_at: Timestamp
    data: EventData


class DeliveryAttempt(Output):
    number: int = Field(ge=1)
    started_at: Timestamp
    duration_ms: int = Field(ge=0)
    status_code: int | None = Field(description="What the endpoint answered (null: no answer).")
    error: str | None = Field(description="Why it did not count as delivered (null: delivered).")
    response_excerpt: str = Field(description="The start of the endpoint's answer.")


class EventDelivery(Output):
    """One event to one endpoint, and its attempts."""

    id: Id
    endpoint_id: Id
    event_id: str = Field(validation_alias=AliasPath("event", "uid"))
    event_type: str = Field(validation_alias=AliasPath("event", "type"))
    status: OneOf(rows.EventDelivery.STATUSES)
    attempts: int = Field(ge=0)
    next_try_at: Timestamp
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp
    delivered_at: Timestamp


class EventDeliveryWithAttempts(EventDelivery):
    attempt_log: list[DeliveryAttempt] = Field(description="Newest first.")
    payload: dict[str, Any] = Field(description="The body sent (an EventPayload).")


# --- resellers (/api/v1/reseller) --------------------------------------------------------


class DetailField(Output):
    name: str
    label: str
    kind: OneOf(DETAIL_KINDS) = Field(
        default="text", description="How a value is checked: ip, url, domain, hostname, port, text."
    )
    max_length: int | None = Field(default=None, description="A text field's longest value.")
    required: bool = False
    secret: bool = False


class ResellerTariff(Output):
    """A tariff a reseller may order."""

    id: Id
    name: str
    product_type: OneOf(rows.ProductType.CODES) = Field(
        validation_alias=AliasPath("product_type", "code")
    )
    price: Money
    currency: str = Field(pattern="^[A-Z]{3}$")
    period: OneOf(rows.Tariff.PERIODS)
    order_fields: list[OrderField] = Field(
        description="What the order's `params` take (with the choices its modules offer)."
    )
    detail_fields: list[DetailField] = Field(
        validation_alias=AliasPath("product_type", "detail_fields"),
        description="The details its services get (matched by name downstream).",
    )


class ResellerToken(Output):
    """A client made a reseller paying on account (or no longer one)."""

    client: Client
    token: str | None = Field(
        description="The reseller's new bearer token, shown once (null: none)."
    )


class ResellerOperation(Output):
    """An operation on one of the reseller's services."""

    id: Id
    kind: OneOf(rows.Operation.KINDS)
    status: OneOf(rows.Operation.STATUSES)
    service_id: Id
    last_error: str | None
    created_at: Timestamp
    finished_at: Timestamp


class ResellerOrder(Output):
    """An order paid on account, and what it started."""

    order_id: Id
    status: OneOf(rows.Order.STATUSES)
    tariff_id: Id
    service_id: Id
    service_status: OneOf(rows.Service.STATUSES)
    operation_id: IdOrNull = Field(description="The `open` operation it queued.")
    amount: Money
    currency: str
    idempotency_key: str
    replayed: bool = Field(description="True: this key was used before; nothing new was made.")


class ResellerService(Output):
    """One of the reseller's services: its status and details (secret ones included)."""

    id: Id
    status: OneOf(rows.Service.STATUSES)
    tariff_id: Id
    details: Object = Field(description="The detail fields, secret ones included.")
    params: Object
    expires_at: Timestamp
    activated_at: Timestamp
    setup_cancelled_reason: str | None = Field(
        description="Why its setup was cancelled (status `setup_cancelled`); null otherwise."
    )
    operation: ResellerOperation | None = Field(description="Its newest operation.")


# --- lists and pages ----------------------------------------------------------------------


def list_of(name, key, item):
    """``{key: [item, ...]}``."""
    return create_model(name, __base__=Output, **{key: (list[item], ...)})


def page_of(name, key, item):
    """One page of ``key``: the rows, and ``total``, ``limit``, ``offset``."""
    return create_model(
        name,
        __base__=Output,
        __doc__=f"One page of {key}; page on with `offset`.",
        **{
            key: (list[item], ...),
            "total": (int, Field(ge=0, description="Rows matching the filters.")),
            "limit": (int, Field(ge=0, le=1000)),
            "offset": (int, Field(ge=0)),
        },
    )


TariffList = list_of("TariffList", "tariffs", Tariff)
ModuleList = list_of("ModuleList", "modules", Module)
ModuleTypeList = list_of("ModuleTypeList", "module_types", ModuleType)
DepartmentList = list_of("DepartmentList", "departments", Department)
StaffList = list_of("StaffList", "staff", Staff)
ClientPage = page_of("ClientPage", "clients", Client)
ClientNoteList = list_of("ClientNoteList", "notes", ClientNote)
ServicePage = page_of("ServicePage", "services", Service)
OperationPage = page_of("OperationPage", "operations", Operation)
TaskPage = page_of("TaskPage", "tasks", Task)
EmailPage = page_of("EmailPage", "emails", Email)
ResellerTariffList = list_of("ResellerTariffList", "tariffs", ResellerTariff)
WebhookEndpointList = list_of("WebhookEndpointList", "endpoints", WebhookEndpoint)
EventDeliveryPage = page_of("EventDeliveryPage", "deliveries", EventDelivery)
EventTypeList = list_of("EventTypeList", "event_types", str)

MODELS = [
    Health,
    WebhookEndpoint,
    WebhookEndpointList,
    EventData,
    EventPayload,
    DeliveryAttempt,
    EventDelivery,
    EventDeliveryWithAttempts,
    EventDeliveryPage,
    EventTypeList,
    RemoteAccount,
    RemoteAccountList,
    Client,
    Department,
    Staff,
    Module,
    ConfigField,
    ModuleType,
    ConfigOption,
    CheckResult,
    OrderField,
    Item,
    Tariff,
    Order,
    PaidOrder,
    PaymentResult,
    Attempt,
    Operation,
    OperationWithAttempts,
    Service,
    ServiceWithOperations,
    Task,
    TaskEvent,
    TaskWithEvents,
    Email,
    TariffList,
    ModuleList,
    ModuleTypeList,
    DepartmentList,
    StaffList,
    ClientPage,
    ClientNote,
    ClientNoteList,
    ServicePage,
    OperationPage,
    TaskPage,
    EmailPage,
    DetailField,
    ResellerTariff,
    ResellerTariffList,
    ResellerToken,
    ResellerOperation,
    ResellerOrder,
    ResellerService,
]
"""The output objects of the OpenAPI document."""
