"""The OpenAPI 3.1 description of the JSON API and the peer API (``/api/v1/openapi.json``).

Paths come from walking the app's ``url_map`` (every rule of the ``api`` and ``proxy``
blueprints), so a route cannot be left out; what each one takes and returns is said in
``OPERATIONS`` (keyed by endpoint, or ``(endpoint, value)`` for a route with an
``any(...)`` converter, which becomes one path per value). A route with no entry still
appears, marked ``x-undocumented`` (and the test suite fails on it).

The schemas (``components/schemas``) are generated from the objects' pydantic models
(``app/objects``): the same descriptions validate the input and build the answers.
"""

import copy
import re

from flask import current_app
from pydantic.json_schema import models_json_schema

from app.models import EventDelivery, Operation, Service, Task
from app.objects import http_module, inputs, outputs, peer
from app.objects.base import OpenApiSchema
from app.services.errors import Error
from app.states import KINDS

API_PREFIX = "/api/v1"
PROXY_PREFIX = "/proxy/v1"
OPENAPI_VERSION = "3.1.0"
SIGNATURE_HEADER = "X-Provisor-Signature"
REF_TEMPLATE = "#/components/schemas/{model}"
DOCUMENTED_BLUEPRINTS = ("api", "proxy")


def ref(name):
    return {"$ref": REF_TEMPLATE.format(model=name)}


# --- components: the objects (generated from app/objects) ----------------------------------


def output_models():
    return [Error, *outputs.MODELS, *peer.OUTPUTS, *http_module.OUTPUTS]


def input_models():
    return [*inputs.MODELS, *inputs.module_input_models(), *peer.INPUTS, *http_module.INPUTS]


def component_schemas():
    """``{name: JSON schema}`` of every object: outputs as they are answered, inputs as
    they are accepted."""
    models = [(m, "serialization") for m in output_models()]
    models += [(m, "validation") for m in input_models()]
    _, document = models_json_schema(
        models, ref_template=REF_TEMPLATE, schema_generator=OpenApiSchema
    )
    return dict(sorted(document["$defs"].items()))


# --- components: shared responses and parameters ----------------------------------------


def _error_example(code, message, fields=None):
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


ERRORS = {
    400: (
        "BadRequest",
        "The body is not a JSON object.",
        _error_example("invalid_json", "the body must be a JSON object"),
    ),
    401: (
        "Unauthorized",
        "No valid bearer token (on signed endpoints: a bad or old signature; on /proxy/v1: "
        "an unknown login or a wrong password).",
        _error_example("unauthorized", "a valid bearer token is required"),
    ),
    403: (
        "Forbidden",
        "The token's user may not do this (admins only, or another department's task).",
        _error_example("forbidden", "admins only"),
    ),
    404: (
        "NotFound",
        "No such object.",
        _error_example("not_found", "tariff 42 not found"),
    ),
    409: (
        "Conflict",
        "Not possible in the object's current state (or a change made at the same moment "
        "got there first).",
        _error_example("conflict", "operation 7 is done; only ... can be run now"),
    ),
    422: (
        "ValidationFailed",
        "Invalid input: a message per field in `fields`; nothing was changed.",
        _error_example(
            "validation_error",
            "price: Must be a non-negative amount such as 9.99.",
            {"price": "Must be a non-negative amount such as 9.99."},
        ),
    ),
    413: (
        "TooLarge",
        "The body is larger than `MAX_BODY_BYTES` (1 MiB by default): refused before it is read.",
        _error_example(
            "request_entity_too_large", "The data value transmitted exceeds the capacity limit."
        ),
    ),
    503: (
        "Busy",
        "Not now: the object is being changed (an attempt of its operation is running); "
        "`Retry-After` says when to try again.",
        _error_example("busy", "operation #7 is running an attempt; try again shortly"),
    ),
    429: (
        "TooManyRequests",
        "Too many failed logins from this address or for this login (/proxy/v1); "
        "`Retry-After` says in how many seconds to try again.",
        _error_example("too_many_requests", "Too many failed logins: try again in 42 seconds."),
    ),
}

RESPONSES = {
    name: {
        "description": description,
        "content": {"application/json": {"schema": ref("Error"), "example": example}},
    }
    for name, description, example in ERRORS.values()
}
RESPONSES["TooManyRequests"]["headers"] = {
    "Retry-After": {
        "description": "Seconds to wait before the next login attempt.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _query(name, schema, description):
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


PARAMETERS = {
    "limit": _query(
        "limit",
        {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100},
        "Rows per page.",
    ),
    "offset": _query(
        "offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}, "Rows to skip."
    ),
    "after": _query(
        "after",
        {"type": "integer", "minimum": 0, "default": 0},
        "The cursor: the `next` of the previous answer (0: from the start).",
    ),
    "signature": {
        "name": SIGNATURE_HEADER,
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": r"^t=\d+,v1=[0-9a-f]{64}$"},
        "description": '`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`; '
        "older than 5 minutes or wrong → 401.",
    },
}


def _param(name):
    return {"$ref": f"#/components/parameters/{name}"}


PAGING = [_param("limit"), _param("offset")]

# --- operations: what each route takes and returns --------------------------------------


def _json(schema, description):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def body(schema_name, required=True, description=None):
    spec = {"required": required, "content": {"application/json": {"schema": ref(schema_name)}}}
    if description:
        spec["description"] = description
    return spec


def op(
    tag,
    role,
    ok,
    errors=(),
    params=(),
    request=None,
    status=200,
    ok_description="Success.",
    extra=None,
):
    """An operation: ``role`` is "admin", "staff", "reseller" (a bearer token), "peer"
    (HTTP Basic as a tasks proxy server side) or None (nothing)."""
    codes = set(errors)
    if role in ("admin", "staff", "reseller"):
        codes |= {401, 403}
    elif role == "peer":
        codes |= {401, 429}
    if request is not None:
        codes |= {400}
    responses = {str(status): _json(ref(ok) if isinstance(ok, str) else ok, ok_description)}
    for code in sorted(codes):
        responses[str(code)] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    result = {"tags": [tag], "responses": responses, "x-provisor-role": role or "none"}
    if params:
        result["parameters"] = list(params)
    if request is not None:
        result["requestBody"] = request
    if role == "peer":
        result["security"] = [{"basicAuth": []}]
    if extra:
        result.update(extra)
    return result


def _enum(name, values, description):
    return _query(name, {"type": "string", "enum": list(values)}, description)


def _id_query(name, description):
    return _query(name, {"type": "integer", "minimum": 1}, description)


SIGNED = {
    "security": [],
}

OPERATIONS = {
    "api.health": op(
        "System",
        None,
        "Health",
        params=[
            _enum(
                "scope",
                ("system", "web"),
                "`system` (default): the database, the broker, the scheduler's last sweep "
                "and the operations no worker took; `web`: only the database and the "
                "broker this process uses (for a load balancer).",
            )
        ],
        extra={
            "security": [],
            "responses": {
                "200": _json(ref("Health"), "Everything works (`ok`)."),
                "422": {"$ref": "#/components/responses/ValidationFailed"},
                "503": {
                    **_json(
                        ref("Health"),
                        "Something is wrong (`degraded`): `problems` says what.",
                    ),
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds before asking again: 5 while the "
                            "database or the broker does not answer, otherwise "
                            "`SWEEP_INTERVAL` (the next sweep).",
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    },
                },
            },
        },
    ),
    "api.openapi": op(
        "System",
        None,
        {"type": "object", "description": "This OpenAPI 3.1 document."},
        ok_description="This document.",
        extra={"security": []},
    ),
    # catalog
    "api.list_tariffs": op(
        "Catalog",
        "staff",
        "TariffList",
        params=[
            _query(
                "archived",
                {"type": "string", "examples": ["1", "true"]},
                "`1` or `true`: include archived tariffs (any other value: do not).",
            )
        ],
    ),
    "api.create_tariff": op(
        "Catalog", "admin", "Tariff", [422], request=body("TariffInput"), status=201
    ),
    "api.get_tariff": op("Catalog", "staff", "Tariff", [404]),
    "api.update_tariff": op("Catalog", "admin", "Tariff", [404, 422], request=body("TariffInput")),
    "api.list_modules": op("Catalog", "admin", "ModuleList"),
    "api.create_module": op(
        "Catalog", "admin", "Module", [422], request=body("ModuleInput"), status=201
    ),
    "api.get_module": op("Catalog", "admin", "Module", [404]),
    "api.update_module": op("Catalog", "admin", "Module", [404, 422], request=body("ModuleUpdate")),
    "api.list_module_types": op("Catalog", "admin", "ModuleTypeList"),
    "api.check_module": op(
        "Catalog",
        "admin",
        "CheckResult",
        [404],
        ok_description="What the module's server said; `ok` false names the setting at fault.",
    ),
    # people
    "api.list_departments": op("People", "staff", "DepartmentList"),
    "api.create_department": op(
        "People", "admin", "Department", [422], request=body("DepartmentInput"), status=201
    ),
    "api.list_staff": op("People", "admin", "StaffList"),
    "api.create_staff": op(
        "People", "admin", "Staff", [422], request=body("StaffInput"), status=201
    ),
    "api.list_clients": op(
        "People",
        "staff",
        "ClientPage",
        [422],
        params=[_query("q", {"type": "string"}, "Search in name, email and company."), *PAGING],
    ),
    "api.create_client": op(
        "People", "admin", "Client", [422], request=body("ClientInput"), status=201
    ),
    "api.get_client": op("People", "staff", "Client", [404]),
    "api.update_client": op("People", "staff", "Client", [404, 422], request=body("ClientUpdate")),
    "api.list_client_notes": op("People", "staff", "ClientNoteList", [404]),
    "api.add_client_note": op(
        "People", "staff", "ClientNote", [404, 422], request=body("ClientNoteInput"), status=201
    ),
    # orders
    "api.create_order": op(
        "Orders", "staff", "Order", [422], request=body("OrderInput"), status=201
    ),
    "api.get_order": op("Orders", "staff", "Order", [404]),
    "api.pay_order": op(
        "Orders",
        "staff",
        "PaidOrder",
        [404, 409],
        ok_description="Paid: the service is `processing` and its `open` operation queued.",
    ),
    "api.payment_webhook": op(
        "Webhooks",
        None,
        "PaymentResult",
        [401, 404, 409, 422],
        params=[_param("signature")],
        request=body("PaymentInput"),
        ok_description="Paid (or the stored result of an earlier call with this payment_id).",
        extra=SIGNED,
    ),
    # services
    "api.list_services": op(
        "Services",
        "staff",
        "ServicePage",
        [422],
        params=[
            _enum("status", Service.STATUSES, "Only services in this status."),
            _id_query("client_id", "Only this client's services."),
            _query(
                "q",
                {"type": "string"},
                "Search client name/email, tariff name, remote id, or `#<service id>`.",
            ),
            *PAGING,
        ],
    ),
    "api.get_service": op(
        "Services",
        "staff",
        "ServiceWithOperations",
        [404],
        params=[
            _enum(
                "reveal",
                ("secrets",),
                "A deleted service's secret details (passwords) are left out; `secrets` "
                "includes them (recorded in the service's history).",
            )
        ],
    ),
    "api.edit_service": op(
        "Services",
        "staff",
        "Service",
        [404, 409, 422],
        request=body("ServiceDetailsInput"),
        ok_description="The service with its details corrected. A value not of its field's "
        'kind: 422 with `fields` `details.<name>` (e.g. "Not an IP address.").',
    ),
    "api.import_service": op(
        "Services",
        "staff",
        "Service",
        [409, 422],
        request=body("ServiceImportInput"),
        status=201,
        ok_description="The new service, `active`; its operations show an `open` completed "
        '"imported by <staff>" (nothing ran on the panel, no welcome email).',
    ),
    "api.list_module_accounts": op(
        "Services",
        "staff",
        "RemoteAccountList",
        [404, 409],
        ok_description="The accounts on the module's panel; 409 `cannot_list_accounts` when "
        "its type cannot list them (import by remote id), or 409 when the panel cannot be "
        "asked.",
    ),
    "api.retry_setup": op(
        "Services",
        "staff",
        "Operation",
        [404, 409],
        status=202,
        ok_description="A new `open` operation is queued; the service is `processing` again. "
        "409 unless the service is `setup_cancelled` (its setup was cancelled) and has no "
        "operation open.",
    ),
    # operations
    "api.list_operations": op(
        "Operations",
        "staff",
        "OperationPage",
        [422],
        params=[
            _enum(
                "status",
                Operation.STATUSES,
                "Only operations in this status (default: those not finished).",
            ),
            _enum("kind", Operation.KINDS, "Only this kind of operation."),
            _id_query("module_id", "Only this processing module's operations."),
            _id_query("service_id", "Only this service's operations."),
            *PAGING,
        ],
    ),
    "api.get_operation": op("Operations", "staff", "OperationWithAttempts", [404]),
    "api.restart_operation": op(
        "Operations",
        "staff",
        "Operation",
        [404, 409],
        status=202,
        ok_description="Queued for an attempt now.",
    ),
    "api.cancel_operation": op(
        "Operations",
        "staff",
        "Operation",
        [404, 409, 422],
        request=body("OperationCancelInput", required=False),
        ok_description="Cancelled. A service's setup (`open`) cancelled this way leaves the "
        "service `setup_cancelled` with the reason (`setup_cancelled_reason`).",
    ),
    "api.operation_callback": op(
        "Webhooks",
        None,
        "Operation",
        [401, 404, 409],
        params=[_param("signature")],
        request=body(
            "HttpModuleReply",
            description='`{"status": "done", "remote_id", "details"}` or '
            '`{"status": "error", "message", "permanent"}`; signed with the module\'s secret.',
        ),
        ok_description="The operation after the callback (a repeated `done` changes nothing).",
        extra=SIGNED,
    ),
    # tasks
    "api.list_tasks": op(
        "Tasks",
        "staff",
        "TaskPage",
        [422],
        params=[
            _id_query("department_id", "Only this department's tasks."),
            _enum(
                "status",
                Task.STATUSES + ("open",),
                "Only tasks in this status (`open`: new or in work).",
            ),
            _id_query("assignee_id", "Only tasks assigned to this user."),
            _enum("mine", ("true", "false"), "`true`: only the tasks assigned to the caller."),
            _enum("kind", Operation.KINDS, "Only tasks of operations of this kind."),
            _enum("priority", Task.PRIORITIES, "Only tasks of this priority."),
            _query(
                "q",
                {"type": "string", "maxLength": 200},
                "Text search: the title, a peer's description, what people wrote in the "
                "history (comments, reasons), the client's name or email, or `#id`.",
            ),
            _enum(
                "sort",
                ("id", "priority", "due", "status", "department", "assignee", "created", "updated"),
                "Order by this column (default `id`; `priority` by urgency; `due` with no "
                "due date last).",
            ),
            _enum("dir", ("asc", "desc"), "The order's direction (default `desc`)."),
            _id_query("operation_id", "Only the tasks of this operation."),
            *PAGING,
        ],
    ),
    "api.get_task": op("Tasks", "staff", "TaskWithEvents", [404]),
    "api.plan_task": op(
        "Tasks",
        "staff",
        "Task",
        [404, 409, 422],
        request=body("TaskPlanInput"),
        ok_description="The priority and due date are saved (and in the task's history).",
    ),
    "api.comment_task": op(
        "Tasks",
        "staff",
        "Task",
        [404, 422],
        request=body("TaskCommentInput"),
        ok_description="The comment is in the task's history.",
    ),
    "api.fill_task_fields": op(
        "Tasks",
        "staff",
        "Task",
        [404, 409, 422],
        request=body("TaskFieldsInput"),
        ok_description="The fields are saved on the task (and forwarded to a peer).",
    ),
    "api.cancel_task": op(
        "Tasks",
        "staff",
        "Task",
        [404, 409, 422],
        request=body("TaskCancelInput", required=False),
        ok_description="Cancelled; its open operation is cancelled too.",
    ),
    "api.reopen_task": op(
        "Tasks",
        "admin",
        "Task",
        [404, 409],
        ok_description="Reopened; a cancelled operation comes back for people to finish.",
    ),
    "api.take_over_operation": op(
        "Operations",
        "staff",
        "Task",
        [404, 409],
        ok_description="The operation is `manual` (no more automatic retries); its task, "
        "assigned to the caller when nobody had it yet.",
    ),
    "api.get_staff": op("People", "admin", "Staff", [404]),
    "api.update_staff": op("People", "admin", "Staff", [404, 422], request=body("StaffUpdate")),
    "api.update_department": op(
        "People", "admin", "Department", [404, 422], request=body("DepartmentInput")
    ),
    "api.assign_task": op(
        "Tasks",
        "staff",
        "Task",
        [404, 409, 422],
        request=body("TaskAssignInput", required=False),
        ok_description="Assigned (status `in_work`).",
    ),
    "api.close_task": op(
        "Tasks",
        "staff",
        "Task",
        [404, 409, 422],
        request=body("TaskCloseInput", required=False),
        ok_description="Closed; its operation is done and the service moved on.",
    ),
    # outbox
    "api.enable_reseller": op(
        "Resellers",
        "admin",
        "ResellerToken",
        [404, 409],
        status=201,
        ok_description="The client, and its new bearer token (shown once).",
    ),
    "api.disable_reseller": op(
        "Resellers", "admin", "ResellerToken", [404], ok_description="The client; token null."
    ),
    # outgoing events (webhooks)
    "api.list_webhook_endpoints": op("Events", "admin", "WebhookEndpointList"),
    "api.create_webhook_endpoint": op(
        "Events",
        "admin",
        "WebhookEndpoint",
        [422],
        request=body("WebhookEndpointInput"),
        status=201,
    ),
    "api.get_webhook_endpoint": op("Events", "admin", "WebhookEndpoint", [404]),
    "api.update_webhook_endpoint": op(
        "Events", "admin", "WebhookEndpoint", [404, 422], request=body("WebhookEndpointInput")
    ),
    "api.delete_webhook_endpoint": op(
        "Events", "admin", "WebhookEndpoint", [404], ok_description="The endpoint removed."
    ),
    "api.test_webhook_endpoint": op(
        "Events",
        "admin",
        "EventDeliveryWithAttempts",
        [404, 422],
        ok_description="The test delivery: `status` delivered or failed, the attempt says why.",
    ),
    "api.list_event_types": op("Events", "admin", "EventTypeList"),
    "api.list_event_deliveries": op(
        "Events",
        "admin",
        "EventDeliveryPage",
        [422],
        params=[
            _id_query("endpoint_id", "Only this endpoint's deliveries."),
            _enum("status", EventDelivery.STATUSES, "Only deliveries with this status."),
            _query("type", {"type": "string"}, "Only events of this type (`service.active`)."),
            *PAGING,
        ],
    ),
    "api.get_event_delivery": op("Events", "admin", "EventDeliveryWithAttempts", [404]),
    "api.retry_event_delivery": op(
        "Events",
        "admin",
        "EventDeliveryWithAttempts",
        [404, 409],
        status=202,
        ok_description="It is due now; a worker sends it.",
    ),
    "api.reseller_tariffs": op("Resellers", "reseller", "ResellerTariffList"),
    "api.reseller_order": op(
        "Resellers",
        "reseller",
        "ResellerOrder",
        [409, 422],
        request=body("ResellerOrderInput"),
        status=201,
        ok_description="The order, paid on account; the same idempotency key again "
        "answers 200 with the same order (`replayed` true).",
    ),
    "api.reseller_service": op("Resellers", "reseller", "ResellerService", [404]),
    "api.reseller_operation": op("Resellers", "reseller", "ResellerOperation", [404]),
    "api.list_emails": op(
        "Emails",
        "staff",
        "EmailPage",
        [422],
        params=[
            _enum("status", outputs.EMAIL_STATUSES, "Only emails in this status."),
            _id_query("service_id", "Only this service's emails."),
            _query(
                "kind",
                {"type": "string", "maxLength": 40},
                "Only emails of this kind (welcome, notice_suspend, task_new, ...).",
            ),
            *PAGING,
        ],
    ),
    # the tasks proxy's server side (what a peer Provisor calls)
    "proxy.departments": op(
        "Tasks proxy",
        "peer",
        "PeerDepartmentList",
        ok_description="The department this account sends to.",
    ),
    "proxy.receive_task": op(
        "Tasks proxy",
        "peer",
        "PeerTaskReceipt",
        [413, 422],
        request=body("PeerTaskInput"),
        status=201,
        ok_description="Received: a new task in the server side's department.",
    ),
    "proxy.receive_event": op(
        "Tasks proxy",
        "peer",
        "PeerEventReceipt",
        [404, 409, 413, 422, 503],
        request=body("PeerEventInput"),
        ok_description="Applied, or a replay (`applied` is false: the same event id for "
        "the same task with the same content). 409 `event_id_reused`: the event id was used "
        "for another task or other content; 409 `task_not_open`: a close or cancel of a task "
        "no longer open; 422 for a close lacking required fields (named in `fields`).",
    ),
    "proxy.events": op(
        "Tasks proxy",
        "peer",
        "PeerEventPage",
        [422],
        params=[
            _param("after"),
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 500, "default": 500},
                "Events per page at most.",
            ),
        ],
        ok_description="What people here did to this peer's tasks, after the cursor.",
    ),
}
OPERATIONS["proxy.receive_task"]["responses"]["200"] = _json(
    ref("PeerTaskReceipt"), "The sender's task id was received before: nothing new."
)


def _action_summary(kind):
    """From the kinds table (app/states.py): its summary, and the body it takes."""
    declared = KINDS.get(kind)
    if declared is None:
        return f"Request a {kind.replace('_', ' ')} operation", "ServiceActionInput", False
    if declared.params:
        return declared.summary, "ChangeTariffInput", True
    if "reason" in declared.options:
        return declared.summary, "SuspendInput", False
    if "password" in declared.options:
        return declared.summary, "ChangePasswordInput", False
    return declared.summary, "ServiceActionInput", False


def service_action(kind):
    """The entry of ``POST /services/<id>/<kind>``; a kind without a summary above (a new
    operation kind) is documented with the plain parameters body."""
    summary, schema, required = _action_summary(kind)
    return op(
        "Services",
        "staff",
        "Operation",
        [404, 409, 422],
        request=body(schema, required=required),
        status=202,
        ok_description=f"The queued `{kind}` operation.",
        extra={"summary": summary},
    )


PATH_PARAMETER_DOCS = {
    "tariff_id": "A tariff plan's id.",
    "module_id": "A processing module's id.",
    "order_id": "An order's id.",
    "service_id": "A service's id.",
    "operation_id": "An operation's id.",
    "task_id": "A task's id.",
    "sender_task_id": "The task's id at the sender (as sent in POST /proxy/v1/tasks).",
}

TAGS = [
    {"name": "System", "description": "Health and this document (no token needed)."},
    {"name": "Catalog", "description": "Tariff plans, processing modules and module types."},
    {"name": "People", "description": "Clients, departments, staff members and admins."},
    {"name": "Orders", "description": "Orders: unpaid until a payment arrives."},
    {"name": "Services", "description": "What clients bought, and actions on it."},
    {
        "name": "Operations",
        "description": "Module actions on services and items, with every attempt.",
    },
    {"name": "Tasks", "description": "Work for people: manual setup and escalations."},
    {"name": "Emails", "description": "The outbox: every email Provisor sends."},
    {
        "name": "Events",
        "description": "Outgoing events (admins): webhook endpoints, the event types they "
        "may ask for, and the delivery log with each attempt.",
    },
    {
        "name": "Webhooks",
        "description": "Signed endpoints, no bearer token: the payment webhook (signed with "
        "`PAYMENT_WEBHOOK_SECRET`) and the http module's callback (signed with the module's "
        "`secret`).",
    },
    {
        "name": "Resellers",
        "description": "`/reseller`: another Provisor (its `provisor` module type) orders "
        "and acts here for its clients, paid on account, with the bearer token of a "
        "reseller client (`provisor clients reseller`); admins make resellers.",
    },
    {
        "name": "Tasks proxy",
        "description": "`/proxy/v1`: what a peer Provisor calls to forward tasks here and "
        "to bring back what people did (HTTP Basic with a server side's login).",
    },
]

DESCRIPTION = """\
Provisor's JSON API: set up the catalog, take orders and payments, follow services,
operations and tasks.

## Authentication
Send `Authorization: Bearer <token>`. Tokens belong to a staff member or an admin and are
made on the server with `provisor tokens create --email E` (printed once). Each operation
says who may call it in `x-provisor-role`: `staff` (staff and admins), `admin` (admins
only), `reseller` (the token of a client paying on account, made with `provisor clients
reseller --client-id N`: it reaches the `/reseller` routes only, and the reseller's own
services only), `peer` (the tasks proxy: HTTP Basic with a server side's login and password, no
token) or `none` (no token: health, this document and the two signed endpoints).

## Errors
Every error is `{"error": {"code", "message", "fields"}}` with a 4xx status: 400 the body is
not a JSON object (or nests deeper than 64 levels), 401 no valid token or signature, 403
not allowed, 404 no such object or route, 405 wrong method, 409 not possible in the current
state, 413 the body is larger than MAX_BODY_BYTES, 422 invalid input with a message per
field in `fields` (nothing is changed), 429 too many failed logins (the tasks proxy's HTTP
Basic; `Retry-After` says when to try again). Lists that page take `limit` (0-1000,
default 100) and `offset` and answer with `total`, `limit`, `offset`.

## Signatures
The payment webhook, the requests Provisor sends to an http module endpoint and that
endpoint's callbacks carry the header

    X-Provisor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

made with a shared secret (`PAYMENT_WEBHOOK_SECRET`, or the http module's `secret`). The
receiver recomputes the HMAC over the exact raw body and refuses a timestamp more than 5
minutes away. In Python:

    mac = hmac.new(secret.encode(), f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest()

## Outgoing events (webhooks)
Every status change of a service, an operation or a task is an event `<object>.<status>`
(`service.active`, `service.suspended`, `service.deleted`, `operation.done`,
`operation.manual`, `operation.cancelled`, `task.in_work`, `task.closed`, ...) and every new
one `<object>.created` (`GET /api/v1/event-types` lists them all). Admins add endpoints
(`/api/v1/webhook-endpoints`: a URL, a secret, the event types, `*` for all); Provisor POSTs
each event an endpoint wants (schema `EventPayload`, under `webhooks`):

    {"id": "evt_...", "type": "service.active", "created_at": "2026-01-31T12:00:00Z",
     "data": {"object": "service", "id": 42, "status": "active",
              "previous_status": "processing", "action": "done_open", "client_id": 7, ...}}

signed with the endpoint's secret: `X-Provisor-Signature: t=<unix seconds>,v2=<hex>` (v2,
direction `event`, bound to the URL's path), with `X-Provisor-Event-Id` (the `id`) and
`X-Provisor-Event` (the `type`). A 2xx answer delivers it; anything else is retried with a
doubling delay (`EVENT_RETRY_DELAY`, up to `EVENT_RETRY_MAX`): the same `id` every time,
so deduplicate on it. `/api/v1/event-deliveries` is the delivery log with each attempt.

## The http module protocol (for panel developers)
For a panel with no built-in module, configure a processing module of type `http` with
`{"url", "secret", "timeout"}`. For each operation (`open`, `suspend`, `resume`, `close`,
`change_tariff`, `ensure_item`) Provisor POSTs JSON to `url` (schema `HttpModuleRequest`,
also described under `webhooks`):

    {"operation": "open", "operation_id": 17, "attempt": 1,
     "service": {"id", "status", "remote_id", "details"},
     "tariff": {"id", "name", "product_type", "internal_name", "price", "period"},
     "item": null, "client": {"id", "name", "email"}, "params": {...}}

with the headers `Content-Type: application/json`, `X-Provisor-Signature` (signed with
`secret`), `Idempotency-Key: <operation_id>` and `User-Agent: Provisor`. `operation_id` is
the idempotency key: a repeated attempt of the same operation must not create a second
account; answer it with the same result. `item` is set (and `service` null) for
`ensure_item`.

The endpoint answers (schema `HttpModuleReply`):
- 2xx `{"status": "done", "remote_id": "...", "details": {...}}`: the operation is done; the
  details (the product type's fields: ip, username, password, ...) go to the service and
  the welcome email.
- 2xx `{"status": "pending"}`: the operation waits (`waiting_callback`) until the endpoint
  calls `POST /api/v1/operations/<operation_id>/callback`, signed the same way with
  `secret`, with `{"status": "done", "remote_id", "details"}` or
  `{"status": "error", "message", "permanent": false}`. No callback within a day counts as a
  temporary error.
- 2xx `{"status": "error", "message", "permanent": true|false}`: a permanent or temporary
  error.
- 5xx, a timeout, a refused connection, a non-JSON or unknown reply: a temporary error; the
  operation runs again after the module's `retry_delay`, and after `max_attempts` becomes a
  manual task.
- 4xx: a permanent error: straight to a manual task in the module's department.

## The tasks proxy (`/proxy/v1`, between Provisor instances)
An instance that forwards a department's tasks (the *client side*) calls the instance that
does them (the *server side*) with HTTP Basic: the login and password of a server side
made there (`provisor proxy server-side`). `GET /proxy/v1/departments` lists the one
department that login sends to. `POST /proxy/v1/tasks` forwards a task (idempotent on
`sender_task_id`: 201 the first time, 200 after); `POST /proxy/v1/tasks/<sender task
id>/events` reports a change of it (comment, fields, closed, cancelled; idempotent on
`event_id`). What people do on the server side comes back through
`GET /proxy/v1/events?after=<cursor>&limit=<n>` → `{"events": [...], "next": <cursor>}`:
the sender stores the id of each event it applied and asks again after it, so nothing is
lost or applied twice. A task closed on the server side carries its detail fields; closing
the sender's task with them completes its operation there. Protocol version 1: every answer
carries `Provisor-Proxy-Protocol: 1`. The whole protocol, for implementers of a peer:
`docs/proxy-protocol.md`.
"""

WEBHOOKS = {
    "event": {
        "post": {
            "summary": "An outgoing event: what Provisor POSTs to each webhook endpoint",
            "description": "See *Outgoing events* in the description. `type` is "
            "`<object>.<status>` (or `<object>.created`); the body is the same on every "
            "attempt and `id` is the event's stable id: deduplicate on it.",
            "tags": ["Webhooks"],
            "parameters": [
                {
                    "name": SIGNATURE_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^t=\d+,v2=[0-9a-f]{64}$"},
                    "description": "`t=<unix seconds>,v2=<hex>`: HMAC-SHA256 with the key "
                    'HMAC-SHA256(secret, "provisor-v2:event") over `"<t>.<URL path>.<raw '
                    'body>"`.',
                },
                {
                    "name": "X-Provisor-Event-Id",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The event's id (as `id` in the body).",
                },
                {
                    "name": "X-Provisor-Event",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The event's type (as `type` in the body).",
                },
                {
                    "name": "X-Provisor-Delivery",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "`<delivery id>.<attempt number>` (differs per attempt).",
                },
            ],
            "requestBody": body("EventPayload"),
            "responses": {
                "2XX": {"description": "Delivered (the answer is kept in the delivery log)."},
                "default": {
                    "description": "Anything else (or no answer within EVENT_TIMEOUT): "
                    "retried with a doubling delay, the same event id."
                },
            },
        }
    },
    "httpModuleOperation": {
        "post": {
            "summary": "What Provisor sends to an http module endpoint",
            "description": "See *The http module protocol* in the description.",
            "tags": ["Webhooks"],
            "parameters": [
                _param("signature"),
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The operation id.",
                },
            ],
            "requestBody": body("HttpModuleRequest"),
            "responses": {
                "200": _json(ref("HttpModuleReply"), "done, pending or error (any 2xx)."),
                "4XX": {"description": "A permanent error: a manual task is created."},
                "5XX": {"description": "A temporary error: retried after retry_delay."},
            },
        }
    },
}

# --- building the document --------------------------------------------------------------

_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")


def _expand(rule):
    """``(path, any_value)`` for a werkzeug rule string; one per value of an ``any``."""
    match = next((m for m in _VARIABLE.finditer(rule) if m.group("converter") == "any"), None)
    if match is None:
        return [(_VARIABLE.sub(r"{\g<name>}", rule), None)]
    values = [v.strip().strip("'\"") for v in match.group("args").split(",")]
    return [
        (_VARIABLE.sub(r"{\g<name>}", rule[: match.start()] + value + rule[match.end() :]), value)
        for value in values
    ]


def _path_parameters(path, rule):
    converters = {m.group("name"): m.group("converter") for m in _VARIABLE.finditer(rule)}
    params = []
    for name in re.findall(r"{(\w+)}", path):
        schema = (
            {"type": "integer", "minimum": 1}
            if converters.get(name) == "int"
            else {"type": "string"}
        )
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": schema,
                "description": PATH_PARAMETER_DOCS.get(name, name),
            }
        )
    return params


def _summary(view):
    doc = (view.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def api_routes(app=None):
    """``[(path, method, endpoint, any_value, rule)]`` for every route of the documented
    blueprints (the API and the tasks proxy's server side)."""
    app = app or current_app
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.partition(".")[0] not in DOCUMENTED_BLUEPRINTS:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for path, value in _expand(rule.rule):
                routes.append((path, method.lower(), rule.endpoint, value, rule.rule))
    return routes


def _operation_id(endpoint, value):
    blueprint, _, name = endpoint.partition(".")
    prefix = "peer_" if blueprint == "proxy" else ""
    return prefix + name + (f"_{value}" if value is not None else "")


def reseller_action(kind):
    """The entry of ``POST /reseller/services/<id>/<kind>``."""
    summary, _, _ = _action_summary(kind)
    return op(
        "Resellers",
        "reseller",
        "ResellerOperation",
        [404, 409, 422],
        request=body("ResellerActionInput"),
        status=202,
        ok_description=f"The queued `{kind}` operation; the same idempotency key again "
        "answers 200 with the same operation.",
        extra={"summary": summary},
    )


def _documented(endpoint, value):
    if endpoint == "api.service_action" and value is not None:
        return service_action(value)
    if endpoint == "api.reseller_action" and value is not None:
        return reseller_action(value)
    return OPERATIONS.get(endpoint if value is None else (endpoint, value))


def spec():
    """The OpenAPI 3.1 document of the ``api`` and ``proxy`` blueprints (a dict)."""
    paths = {}
    for path, method, endpoint, value, rule in api_routes():
        documented = _documented(endpoint, value)
        view = current_app.view_functions[endpoint]
        if documented is None:
            operation = {
                "responses": {"default": _json(ref("Error"), "Not documented yet.")},
                "x-undocumented": True,
            }
        else:
            operation = copy.deepcopy(documented)
        docstring = (view.__doc__ or "").strip()
        operation.setdefault("summary", _summary(view))
        if docstring:
            operation["description"] = docstring
        operation["operationId"] = _operation_id(endpoint, value)
        path_params = _path_parameters(path, rule)
        if path_params:
            operation["parameters"] = path_params + operation.get("parameters", [])
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Provisor API",
            "version": "0.1.0",
            "summary": "Service activation for hosting providers.",
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/", "description": "This Provisor instance."}],
        "tags": copy.deepcopy(TAGS),
        "security": [{"bearerAuth": []}],
        "paths": dict(sorted(paths.items())),
        "webhooks": copy.deepcopy(WEBHOOKS),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <token>`; make a token with "
                    "`provisor tokens create --email E` (a staff member or admin).",
                },
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The tasks proxy (`/proxy/v1`): the login and password "
                    "of a server side of this instance (`provisor proxy server-side`), "
                    'encoded in UTF-8 (RFC 7617\'s `charset="UTF-8"`).',
                },
            },
            "schemas": component_schemas(),
            "responses": copy.deepcopy(RESPONSES),
            "parameters": copy.deepcopy(PARAMETERS),
        },
    }
