"""The OpenAPI 3.1 description of the JSON API (served at ``/api/v1/openapi.json``).

Paths come from walking the app's ``url_map`` (every rule of the ``api`` blueprint), so a
route cannot be left out; what each one takes and returns is written here by hand in
``OPERATIONS`` (keyed by endpoint, or ``(endpoint, value)`` for a route with an
``any(...)`` converter, which becomes one path per value). A route with no entry still
appears, marked ``x-undocumented`` (and the test suite fails on it).
"""

import copy
import re

from flask import current_app

from app.models import Attempt, Email, Item, Operation, Order, Service, Task
from app.services.catalog import INTERNAL_NAME, PERIODS
from app.services.order_fields import KINDS as ORDER_FIELD_KINDS
from app.states import KINDS, REQUESTABLE
from modules.base import KINDS as CONFIG_KINDS

API_PREFIX = "/api/v1"
OPENAPI_VERSION = "3.1.0"
SIGNATURE_HEADER = "X-Provisor-Signature"
PRODUCT_TYPES = (
    "hosting",
    "vps",
    "dedicated",
    "domain",
    "dns",
    "certificate",
    "database",
    "custom",
)
ROLES = ("admin", "staff", "client")

# --- small schema helpers ---------------------------------------------------------------


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema):
    """``schema`` or null (OpenAPI 3.1 / JSON Schema 2020-12 style)."""
    schema = dict(schema)
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties, required=None, description=None, additional=None):
    """An object schema; every property is required unless ``required`` says otherwise."""
    schema = {
        "type": "object",
        "required": list(properties) if required is None else list(required),
        "properties": properties,
    }
    if description:
        schema["description"] = description
    if additional is not None:
        schema["additionalProperties"] = additional
    return schema


ID = {"type": "integer", "minimum": 1}
TIME = {"type": "string", "format": "date-time", "description": "UTC, e.g. 2025-01-31T12:00:00Z"}
TIME_OR_NULL = nullable(TIME)
TEXT_OR_NULL = {"type": ["string", "null"]}
ID_OR_NULL = {"type": ["integer", "null"], "minimum": 1}
NAME = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"\S"}
EMAIL = {
    "type": "string",
    "format": "email",
    "maxLength": 200,
    "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJECT = {"type": "object"}


def page_of(key, item):
    return obj(
        {
            key: {"type": "array", "items": ref(item)},
            "total": {"type": "integer", "minimum": 0, "description": "Rows matching the filters."},
            "limit": {"type": "integer", "minimum": 0, "maximum": 1000},
            "offset": {"type": "integer", "minimum": 0},
        },
        description=f"One page of {key}; page on with `offset`.",
    )


def list_of(key, item):
    return obj({key: {"type": "array", "items": ref(item)}})


# --- components: the objects of the API (app/api/serializers.py) ------------------------

SCHEMAS = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {
                        "type": "string",
                        "description": "Machine-readable: unauthorized, forbidden, not_found, "
                        "conflict, validation_error, invalid_json, bad_signature, "
                        "method_not_allowed, ...",
                    },
                    "message": {"type": "string", "description": "For people."},
                    "fields": {
                        **STRINGS,
                        "description": "A message per invalid input field (keys such as "
                        "`price`, `module_ids` or `config.failure_rate`); empty when the "
                        "error is not about one field.",
                    },
                }
            )
        },
        description='Every error: `{"error": {"code", "message", "fields"}}` with a 4xx status.',
    ),
    "Health": obj(
        {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "database": {"type": "string", "description": '"ok" or "error: <exception>"'},
            "broker": {"type": "string", "enum": ["redis", "embedded"]},
            "version": {"type": "string"},
        }
    ),
    "Client": obj(
        {
            "id": ID,
            "name": {"type": "string"},
            "email": {"type": "string", "format": "email"},
            "created_at": TIME_OR_NULL,
        }
    ),
    "Department": obj(
        {
            "id": ID,
            "name": {"type": "string"},
            "notify_email": {
                **TEXT_OR_NULL,
                "description": "Where new-task notifications go (null: none).",
            },
        }
    ),
    "Staff": obj(
        {
            "id": ID,
            "email": {"type": "string", "format": "email"},
            "name": {"type": "string"},
            "role": {"type": "string", "enum": list(ROLES)},
            "is_active": {"type": "boolean"},
            "department_ids": {"type": "array", "items": ID},
        },
        description="A staff member or admin.",
    ),
    "Module": obj(
        {
            "id": ID,
            "name": {"type": "string"},
            "type": {"type": "string", "description": "A module type id: see GET /module-types."},
            "config": {
                "type": "object",
                "description": "The type's settings, cleaned; secrets show as `********`.",
            },
            "department_id": {**ID_OR_NULL, "description": "The department that gets its tasks."},
            "retry_delay": {"type": "integer", "description": "Seconds between attempts."},
            "max_attempts": {"type": "integer"},
            "max_wait": {
                "type": "integer",
                "description": "Seconds a polling operation may wait in all.",
            },
            "max_running": {"type": "integer", "description": "0: no limit."},
            "priority": {"type": "integer", "description": "Lower runs first."},
            "enabled": {"type": "boolean"},
        },
        description="A processing module: a configured instance of a module type.",
    ),
    "ConfigField": obj(
        {
            "name": {"type": "string"},
            "label": {"type": "string"},
            "kind": {"type": "string", "enum": list(CONFIG_KINDS)},
            "required": {"type": "boolean"},
            "default": {"description": "Any JSON value, or null."},
            "help": {"type": "string"},
            "options": {
                "type": "array",
                "items": obj({"value": {}, "label": {"type": "string"}}),
                "description": "For a `choice`: the values it takes.",
            },
            "max_length": {"type": "integer", "minimum": 1},
            "multiline": {"type": "boolean", "description": "A secret of several lines."},
        },
        required=["name", "label", "kind", "required", "default", "help"],
    ),
    "CheckResult": obj(
        {
            "ok": {"type": "boolean"},
            "message": {"type": "string", "description": "The server's own words."},
            "fields": {
                **STRINGS,
                "description": "The setting at fault (`config.<name>`) with the message.",
            },
        },
        description="The answer of Test connection.",
    ),
    "OrderField": obj(
        {
            "name": {"type": "string"},
            "label": {"type": "string"},
            "kind": {"type": "string", "enum": list(ORDER_FIELD_KINDS)},
            "required": {"type": "boolean"},
            "max_length": {"type": "integer", "minimum": 1},
            "options": {"type": "array", "items": {"type": "string"}},
        },
        required=["name", "label", "kind", "required"],
        description="A field the client fills in when ordering; sent as `params.<name>`.",
    ),
    "ModuleType": obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "operations": {
                "type": "array",
                "items": {"type": "string", "enum": list(Operation.KINDS)},
            },
            "creates_items": {
                "type": "boolean",
                "description": "False: the items it needs must be made by a person.",
            },
            "people_do_it": {
                "type": "boolean",
                "description": "True: every operation becomes a task for people.",
            },
            "accepts_callbacks": {
                "type": "boolean",
                "description": "True: its endpoint may call POST /operations/{id}/callback.",
            },
            "can_check": {
                "type": "boolean",
                "description": "True: POST /modules/{id}/check talks to its server.",
            },
            "config_fields": {"type": "array", "items": ref("ConfigField")},
        }
    ),
    "Item": obj(
        {
            "id": ID,
            "module_id": ID,
            "internal_name": {"type": "string"},
            "status": {"type": "string", "enum": list(Item.STATUSES)},
            "remote_id": TEXT_OR_NULL,
            "error": TEXT_OR_NULL,
        },
        description="What a module needs on its panel to serve tariffs of one internal name.",
    ),
    "Tariff": obj(
        {
            "id": ID,
            "name": {"type": "string"},
            "product_type": {"type": "string", "enum": list(PRODUCT_TYPES)},
            "price": {"type": "string", "pattern": r"^\d+\.\d{2}$", "examples": ["9.99"]},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "period": {"type": "string", "enum": list(PERIODS)},
            "internal_name": {"type": "string"},
            "archived": {"type": "boolean"},
            "order_fields": {"type": "array", "items": ref("OrderField")},
            "module_ids": {"type": "array", "items": ID},
            "orderable": {
                "type": "boolean",
                "description": "True once an enabled module serves it (and not archived).",
            },
            "items": {"type": "array", "items": ref("Item")},
        }
    ),
    "Order": obj(
        {
            "id": ID,
            "status": {"type": "string", "enum": list(Order.STATUSES)},
            "client_id": ID,
            "tariff_id": ID,
            "service_id": ID,
            "amount": {"type": "string", "pattern": r"^\d+\.\d{2}$"},
            "currency": {"type": "string"},
            "created_at": TIME_OR_NULL,
            "paid_at": TIME_OR_NULL,
        }
    ),
    "PaidOrder": {
        "allOf": [
            ref("Order"),
            obj({"operation_id": {**ID, "description": "The `open` operation just queued."}}),
        ]
    },
    "PaymentResult": obj(
        {
            "payment_id": {"type": "string"},
            "order_id": ID,
            "order_status": {"type": "string", "enum": ["paid"]},
            "service_id": ID,
            "operation_id": ID,
            "replayed": {
                "type": "boolean",
                "description": "True when this payment_id was seen before (nothing new queued).",
            },
        }
    ),
    "Attempt": obj(
        {
            "number": {"type": "integer", "minimum": 1},
            "started_at": TIME_OR_NULL,
            "finished_at": TIME_OR_NULL,
            "outcome": nullable(
                {
                    "type": "string",
                    "enum": list(Attempt.OUTCOMES),
                }
            ),
            "error": TEXT_OR_NULL,
            "log": {"type": "string", "description": "The module's request/response log."},
            "worker": {"type": "string"},
        }
    ),
    "Operation": obj(
        {
            "id": ID,
            "kind": {"type": "string", "enum": list(Operation.KINDS)},
            "operation": {
                "type": "string",
                "enum": list(Operation.KINDS),
                "description": "Same as `kind`.",
            },
            "status": {"type": "string", "enum": list(Operation.STATUSES)},
            "service_id": ID_OR_NULL,
            "item_id": ID_OR_NULL,
            "module_id": ID_OR_NULL,
            "attempts": {
                "type": "integer",
                "minimum": 0,
                "description": "Attempts started, polling checks included.",
            },
            "failures": {
                "type": "integer",
                "minimum": 0,
                "description": "Failed attempts: what the module's max_attempts counts.",
            },
            "next_run_at": TIME_OR_NULL,
            "deadline_at": {
                **TIME_OR_NULL,
                "description": "A polling operation goes to people after this (max_wait).",
            },
            "state": nullable(
                {"type": "object", "description": "The module's memory between calls (staff)."}
            ),
            "last_error": TEXT_OR_NULL,
            "completed_by": {
                **TEXT_OR_NULL,
                "description": "Who completed or cancelled it by hand (null: automation).",
            },
            "params": ANY_OBJECT,
            "created_at": TIME_OR_NULL,
            "updated_at": TIME_OR_NULL,
            "finished_at": TIME_OR_NULL,
        },
        description="One action of a module on a service or an item.",
    ),
    "OperationWithAttempts": {
        "allOf": [
            ref("Operation"),
            obj({"attempt_log": {"type": "array", "items": ref("Attempt")}}),
        ]
    },
    "Service": obj(
        {
            "id": ID,
            "status": {"type": "string", "enum": list(Service.STATUSES)},
            "client_id": ID,
            "tariff_id": ID,
            "module_id": ID_OR_NULL,
            "remote_id": TEXT_OR_NULL,
            "details": {
                "type": "object",
                "description": "The detail fields of the product type (ip, username, ...).",
            },
            "params": ANY_OBJECT,
            "module_choice": nullable(
                {"type": "object", "description": "Why this module was chosen."}
            ),
            "module_data": {
                "type": "object",
                "description": "What the module keeps for this service (staff only).",
            },
            "expires_at": {
                **TIME_OR_NULL,
                "description": "When the service expires (renewed by a `renew` operation).",
            },
            "created_at": TIME_OR_NULL,
            "activated_at": TIME_OR_NULL,
        }
    ),
    "ServiceWithOperations": {
        "allOf": [
            ref("Service"),
            obj(
                {
                    "operations": {
                        "type": "array",
                        "items": ref("Operation"),
                        "description": "Newest first.",
                    }
                }
            ),
        ]
    },
    "Task": obj(
        {
            "id": ID,
            "title": {"type": "string"},
            "status": {"type": "string", "enum": list(Task.STATUSES)},
            "department_id": ID_OR_NULL,
            "service_id": ID_OR_NULL,
            "operation_id": ID_OR_NULL,
            "assignee_id": ID_OR_NULL,
            "fields": {**STRINGS, "description": "Detail fields filled in."},
            "created_at": TIME_OR_NULL,
            "closed_at": TIME_OR_NULL,
            "closed_by": TEXT_OR_NULL,
        }
    ),
    "TaskEvent": obj(
        {
            "kind": {
                "type": "string",
                "description": "created, assigned, comment, note, closed, cancelled, reopened",
            },
            "actor": {"type": "string"},
            "text": {"type": "string"},
            "created_at": TIME_OR_NULL,
        }
    ),
    "TaskWithEvents": {
        "allOf": [
            ref("Task"),
            obj(
                {
                    "events": {
                        "type": "array",
                        "items": ref("TaskEvent"),
                        "description": "Oldest first.",
                    }
                }
            ),
        ]
    },
    "Email": obj(
        {
            "id": ID,
            "to": {"type": "string"},
            "subject": {"type": "string"},
            "body": {"type": "string"},
            "kind": {"type": "string", "description": "welcome, task, ..."},
            "service_id": ID_OR_NULL,
            "status": {"type": "string", "enum": list(Email.STATUSES)},
            "attempts": {"type": "integer", "minimum": 0},
            "last_error": TEXT_OR_NULL,
            "created_at": TIME_OR_NULL,
            "sent_at": TIME_OR_NULL,
        }
    ),
    "TariffList": list_of("tariffs", "Tariff"),
    "ModuleList": list_of("modules", "Module"),
    "ModuleTypeList": list_of("module_types", "ModuleType"),
    "DepartmentList": list_of("departments", "Department"),
    "StaffList": list_of("staff", "Staff"),
    "ClientPage": page_of("clients", "Client"),
    "ServicePage": page_of("services", "Service"),
    "OperationPage": page_of("operations", "Operation"),
    "TaskPage": page_of("tasks", "Task"),
    "EmailPage": page_of("emails", "Email"),
    # --- request bodies -----------------------------------------------------------------
    "ClientInput": obj(
        {
            "name": NAME,
            "email": EMAIL,
            "password": {
                "type": "string",
                "minLength": 8,
                "description": "Optional: with it the client can log in to the client area.",
            },
        },
        required=["name", "email"],
    ),
    "DepartmentInput": obj(
        {
            "name": NAME,
            "notify_email": nullable({"type": "string", "format": "email", "maxLength": 200}),
        },
        required=["name"],
    ),
    "StaffInput": obj(
        {
            "email": EMAIL,
            "name": {
                "type": "string",
                "maxLength": 100,
                "description": "Defaults to the email.",
            },
            "password": {"type": "string", "minLength": 8},
            "department_ids": {"type": "array", "items": ID},
            "role": {"type": "string", "enum": ["staff", "admin"], "default": "staff"},
        },
        required=["email", "password"],
    ),
    "ModuleFields": obj(
        {
            "name": NAME,
            "type": {
                "type": "string",
                "description": "A module type id (GET /module-types); it cannot change later.",
            },
            "config": {
                "type": "object",
                "description": "The type's settings, validated against its schema (GET "
                "/module-types); errors come keyed `config.<setting>`; an unknown setting "
                "is an error.",
            },
            "department_id": {**ID_OR_NULL, "description": "The department for its tasks."},
            "retry_delay": {"type": "integer", "minimum": 1, "maximum": 604800, "default": 300},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
            "max_wait": {"type": "integer", "minimum": 1, "maximum": 2592000, "default": 3600},
            "max_running": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 0},
            "priority": {"type": "integer", "minimum": -1000, "maximum": 1000, "default": 0},
            "enabled": {"type": "boolean", "default": True},
        },
        required=["name", "type"],
        description="The fields of a processing module; see ModuleInput for each type.",
    ),
    "ModuleUpdate": obj(
        {
            "name": NAME,
            "config": {
                "type": "object",
                "description": "The type's settings (the type cannot change); a secret left "
                "blank keeps the stored one.",
            },
            "department_id": ID_OR_NULL,
            "retry_delay": {"type": "integer", "minimum": 1, "maximum": 604800, "default": 300},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
            "max_wait": {"type": "integer", "minimum": 1, "maximum": 2592000, "default": 3600},
            "max_running": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 0},
            "priority": {"type": "integer", "minimum": -1000, "maximum": 1000, "default": 0},
            "enabled": {"type": "boolean", "default": True},
        },
        required=["name"],
        description="Every field, like POST /modules (a missing one takes its default).",
    ),
    "TariffInput": obj(
        {
            "name": NAME,
            "product_type": {"type": "string", "enum": list(PRODUCT_TYPES)},
            "price": {
                "description": "A non-negative amount such as 9.99 (a string keeps it exact).",
                "anyOf": [
                    {"type": "string", "pattern": r"^\d{1,10}(\.\d+)?$"},
                    {"type": "number", "minimum": 0, "maximum": 9999999999},
                ],
            },
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$", "default": "USD"},
            "period": {"type": "string", "enum": list(PERIODS), "default": "month"},
            "internal_name": {
                "type": "string",
                "pattern": INTERNAL_NAME.pattern,
                "description": "The key of the modules' items: tariffs sharing it share items.",
            },
            "module_ids": {
                "type": ["array", "null"],
                "items": ID,
                "description": "Processing modules serving it; linking an enabled one queues "
                "its ensure_item operation. Omitted or null: none (on PUT this unlinks all).",
            },
        },
        required=["name", "product_type", "price", "internal_name"],
    ),
    "OrderInput": obj(
        {
            "client_id": ID,
            "tariff_id": {**ID, "description": "An orderable tariff (an enabled module)."},
            "params": {
                "type": "object",
                "description": "Order parameters passed to the module (e.g. domain).",
            },
        },
        required=["client_id", "tariff_id"],
    ),
    "PaymentInput": obj(
        {
            "payment_id": {
                "description": "The payment's id at the payment provider (idempotency key).",
                "anyOf": [
                    {"type": "string", "minLength": 1, "maxLength": 200},
                    {"type": "integer"},
                ],
            },
            "order_id": ID,
            "amount": {
                "description": "At least the order's amount.",
                "anyOf": [
                    {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
                    {"type": "number", "minimum": 0},
                ],
            },
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
        }
    ),
    "ServiceActionInput": {
        "type": "object",
        "description": "Optional parameters, stored on the operation and passed to the module.",
    },
    "ChangeTariffInput": obj(
        {"tariff_id": {**ID, "description": "A different tariff of the same product type."}},
        description="Other keys are stored on the operation and passed to the module.",
    ),
    "TaskAssignInput": obj(
        {
            "user_id": {
                **ID,
                "description": "A staff member to assign (default: the caller).",
            },
            "force": {
                "type": "boolean",
                "description": "Hand over a task already assigned (admins or its assignee).",
            },
        },
        required=[],
    ),
    "TaskCommentInput": obj({"text": {"type": "string", "minLength": 1, "maxLength": 10000}}),
    "TaskFieldsInput": obj(
        {"fields": {"type": "object", "additionalProperties": {"type": ["string", "number"]}}}
    ),
    "TaskCancelInput": obj({"reason": {"type": "string"}}, required=[]),
    "StaffUpdate": obj(
        {
            "name": NAME,
            "password": {"type": "string", "minLength": 8},
            "department_ids": {"type": "array", "items": ID},
            "role": {"type": "string", "enum": ["staff", "admin"]},
            "is_active": {"type": "boolean"},
        },
        required=[],
    ),
    "TaskCloseInput": obj(
        {
            "fields": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                "description": "The detail fields of the product type; closing the task of an "
                "`open` operation needs every required one.",
            },
            "comment": {"type": "string"},
        },
        required=[],
    ),
    # --- the http module protocol -----------------------------------------------------------
    "HttpModuleRequest": obj(
        {
            "operation": {"type": "string", "enum": list(Operation.KINDS)},
            "operation_id": {**ID, "description": "The idempotency key."},
            "attempt": {"type": "integer", "minimum": 1},
            "service": nullable(
                obj(
                    {
                        "id": ID,
                        "status": {"type": "string", "enum": list(Service.STATUSES)},
                        "remote_id": TEXT_OR_NULL,
                        "details": ANY_OBJECT,
                    }
                )
            ),
            "tariff": nullable(
                obj(
                    {
                        "id": ID,
                        "name": {"type": "string"},
                        "product_type": {"type": "string"},
                        "internal_name": {"type": "string"},
                        "price": {"type": "string"},
                        "period": {"type": "string"},
                    }
                )
            ),
            "item": nullable(
                obj({"internal_name": {"type": "string"}}, description="For ensure_item.")
            ),
            "client": nullable(
                obj({"id": ID, "name": {"type": "string"}, "email": {"type": "string"}})
            ),
            "params": {
                "type": "object",
                "description": "The order's params merged with the operation's (for "
                "change_tariff: `tariff_id` and `tariff_internal_name` of the new tariff; "
                "`requested_by` for staff actions).",
            },
        },
        description="What Provisor POSTs to an http module's `url` for each operation.",
    ),
    "HttpModuleReply": {
        "description": "The endpoint's 2xx reply, and the body of a callback.",
        "oneOf": [
            obj(
                {
                    "status": {"const": "done"},
                    "remote_id": {
                        "type": ["string", "integer", "null"],
                        "description": "The id on the panel (stored on the service/item).",
                    },
                    "details": {
                        "type": "object",
                        "description": "Detail fields for the service (ip, username, ...).",
                    },
                },
                required=["status"],
            ),
            obj({"status": {"const": "pending"}}),
            obj(
                {
                    "status": {"const": "error"},
                    "message": {"type": "string"},
                    "permanent": {
                        "type": "boolean",
                        "description": "True: no retry, straight to a manual task.",
                    },
                },
                required=["status"],
            ),
        ],
    },
}

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
        "No valid bearer token (or, on signed endpoints, a bad or old signature).",
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
        "Not possible in the object's current state.",
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
}

RESPONSES = {
    name: {
        "description": description,
        "content": {"application/json": {"schema": ref("Error"), "example": example}},
    }
    for name, description, example in ERRORS.values()
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
    """An operation: ``role`` is "admin", "staff" or None (no bearer token)."""
    codes = set(errors)
    if role is not None:
        codes |= {401, 403}
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
        extra={
            "security": [],
            "responses": {
                "200": _json(ref("Health"), "Everything answers."),
                "503": _json(ref("Health"), "The database does not answer (`degraded`)."),
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
        params=[_query("q", {"type": "string"}, "Search in name and email."), *PAGING],
    ),
    "api.create_client": op(
        "People", "admin", "Client", [422], request=body("ClientInput"), status=201
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
    "api.get_service": op("Services", "staff", "ServiceWithOperations", [404]),
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
        "Operations", "staff", "Operation", [404, 409], ok_description="Cancelled."
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
            _enum("status", Task.STATUSES, "Only tasks in this status."),
            _id_query("assignee_id", "Only tasks assigned to this user."),
            _enum("kind", Operation.KINDS, "Only tasks of operations of this kind."),
            _id_query("operation_id", "Only the tasks of this operation."),
            *PAGING,
        ],
    ),
    "api.get_task": op("Tasks", "staff", "TaskWithEvents", [404]),
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
        ok_description="The operation is `manual` (no more automatic retries); its task.",
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
    "api.list_emails": op(
        "Emails",
        "staff",
        "EmailPage",
        [422],
        params=[
            _enum("status", Email.STATUSES, "Only emails in this status."),
            _id_query("service_id", "Only this service's emails."),
            *PAGING,
        ],
    ),
}

_ACTION_SUMMARIES = {
    name: (
        KINDS[name].summary,
        "ChangeTariffInput" if KINDS[name].params else "ServiceActionInput",
        bool(KINDS[name].params),
    )
    for name in REQUESTABLE
}
for _kind, (_summary, _input, _required) in _ACTION_SUMMARIES.items():
    OPERATIONS[("api.service_action", _kind)] = op(
        "Services",
        "staff",
        "Operation",
        [404, 409, 422],
        request=body(_input, required=_required),
        status=202,
        ok_description=f"The queued `{_kind}` operation.",
        extra={"summary": _summary},
    )

PATH_PARAMETER_DOCS = {
    "tariff_id": "A tariff plan's id.",
    "module_id": "A processing module's id.",
    "order_id": "An order's id.",
    "service_id": "A service's id.",
    "operation_id": "An operation's id.",
    "task_id": "A task's id.",
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
        "name": "Webhooks",
        "description": "Signed endpoints, no bearer token: the payment webhook (signed with "
        "`PAYMENT_WEBHOOK_SECRET`) and the http module's callback (signed with the module's "
        "`secret`).",
    },
]

DESCRIPTION = """\
Provisor's JSON API: set up the catalog, take orders and payments, follow services,
operations and tasks.

## Authentication
Send `Authorization: Bearer <token>`. Tokens belong to a staff member or an admin and are
made on the server with `provisor tokens create --email E` (printed once). Each operation
says who may call it in `x-provisor-role`: `staff` (staff and admins), `admin` (admins
only) or `none` (no token: health, this document and the two signed endpoints).

## Errors
Every error is `{"error": {"code", "message", "fields"}}` with a 4xx status: 400 the body is
not a JSON object, 401 no valid token or signature, 403 not allowed, 404 no such object or
route, 405 wrong method, 409 not possible in the current state, 422 invalid input with a
message per field in `fields` (nothing is changed). Lists that page take `limit` (0-1000,
default 100) and `offset` and answer with `total`, `limit`, `offset`.

## Signatures
The payment webhook, the requests Provisor sends to an http module endpoint and that
endpoint's callbacks carry the header

    X-Provisor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

made with a shared secret (`PAYMENT_WEBHOOK_SECRET`, or the http module's `secret`). The
receiver recomputes the HMAC over the exact raw body and refuses a timestamp more than 5
minutes away. In Python:

    mac = hmac.new(secret.encode(), f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest()

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
"""

WEBHOOKS = {
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
    }
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
    """``[(path, method, endpoint, any_value, rule)]`` for every route of the api blueprint."""
    app = app or current_app
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api."):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for path, value in _expand(rule.rule):
                routes.append((path, method.lower(), rule.endpoint, value, rule.rule))
    return routes


KIND_SCHEMAS = {
    "str": {"type": "string"},
    "text": {"type": "string"},
    "choice": {},
    "secret": {"type": "string", "writeOnly": True},
    "url": {"type": "string", "format": "uri", "pattern": "^https?://"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
}


def _schema_name(type_id, suffix):
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", type_id)) + suffix


def config_schema(cls):
    """The JSON schema of a module type's ``config``, from its declared ``config_fields``."""
    properties, required = {}, []
    for field in cls.config_fields:
        prop = {**KIND_SCHEMAS.get(field.kind, {}), "title": field.label}
        if field.kind == "choice":
            prop["enum"] = [value for value, _ in field.options]
        elif field.max_length and prop.get("type") == "string":
            prop["maxLength"] = field.max_length
        if field.required:
            required.append(field.name)
            if prop.get("type") == "string":
                prop["minLength"] = 1
        elif field.kind == "choice":
            prop["enum"] = [*prop["enum"], None, ""]  # null or "": the default
        else:
            prop["type"] = [prop["type"], "null"]  # null or "": the default
            if field.default is not None:
                prop["default"] = field.default
        if field.minimum is not None:
            prop["minimum"] = field.minimum
        if field.maximum is not None:
            prop["maximum"] = field.maximum
        if field.help:
            prop["description"] = field.help
        properties[field.name] = prop
    return obj(
        properties,
        required=required,
        additional=False,
        description=f"Settings of the `{cls.id}` module type: {cls.description}",
    )


def module_type_schemas():
    """``{name: schema}``: per known module type its config and its POST /modules body."""
    import modules

    schemas, variants = {}, []
    for type_id, cls in modules.types().items():
        config_name = _schema_name(type_id, "Config")
        input_name = _schema_name(type_id, "ModuleInput")
        schemas[config_name] = config_schema(cls)
        needs_config = any(f.required for f in cls.config_fields)
        schemas[input_name] = {
            "allOf": [ref("ModuleFields")],
            "type": "object",
            "required": ["name", "type", "config"] if needs_config else ["name", "type"],
            "properties": {"type": {"const": type_id}, "config": ref(config_name)},
            "description": f"A processing module of type `{type_id}` ({cls.name}).",
        }
        variants.append(ref(input_name))
    schemas["ModuleInput"] = {
        "oneOf": variants,
        "description": "A processing module; `type` decides what `config` holds.",
    }
    return schemas


def spec():
    """The OpenAPI 3.1 document of the ``api`` blueprint (a dict)."""
    paths = {}
    for path, method, endpoint, value, rule in api_routes():
        key = endpoint if value is None else (endpoint, value)
        documented = OPERATIONS.get(key)
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
        operation["operationId"] = endpoint.removeprefix("api.") + (
            f"_{value}" if value is not None else ""
        )
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
                }
            },
            "schemas": {**copy.deepcopy(SCHEMAS), **module_type_schemas()},
            "responses": copy.deepcopy(RESPONSES),
            "parameters": copy.deepcopy(PARAMETERS),
        },
    }
