"""The tasks proxy protocol (``/proxy/v1``): what a peer sends and what it gets back.

The server side validates a peer's bodies with these models (``PeerTaskInput.check``);
the answers are built with them; the OpenAPI document describes ``/proxy/v1`` with them.
"""

from typing import Annotated

from pydantic import BeforeValidator, Field

from app.models import Task
from app.objects.base import Input, Missing, Output, invalid
from app.objects.fields import Choice, FreeText, Id, JsonObject, Object, OneOf, Ref, Text, Timestamp

TASK_EVENT_KINDS = ("comment", "fields", "cancel", "close")
"""What a sender reports about a task it sent (created, then these)."""
REPORTED_KINDS = ("assigned", "comment", "fields", "closed", "cancelled", "reopened")
"""What the receiving side reports back about a task it received."""

MAX_SENDER_TASK_ID = 2**31 - 1
"""A sender's task id is a task's id there: PostgreSQL's ``integer`` (and the column that
stores it here) holds at most this."""
SENDER_TASK_ID = "Required: the sender's task id."
EVENT_ID = "Required: a unique id of this event."
EVENT_KIND = "One of: " + ", ".join(TASK_EVENT_KINDS) + "."
FORM = "Must be a list of fields with names."


class PeerFormField(Output):
    """A detail field of the sender's form."""

    name: str
    label: str
    required: bool = False


def _form(value):
    if not isinstance(value, list) or any(
        not isinstance(f, dict) or not isinstance(f.get("name"), str) for f in value
    ):
        raise invalid(FORM)
    return [
        {
            "name": f["name"],
            "label": str(f.get("label") or f["name"]),
            "required": bool(f.get("required")),
        }
        for f in value
    ]


def _actor(value):
    return None if value is None else str(value)


class PeerTaskInput(Input):
    """A task a peer forwards (idempotent on `sender_task_id`)."""

    sender_task_id: Ref(SENDER_TASK_ID, maximum=MAX_SENDER_TASK_ID) = Field(
        description="The task's id at the sender."
    )
    department_id: Ref("Not a department this account may send to.") = Field(
        description="A department from GET /proxy/v1/departments."
    )
    title: Text(250, not_text="This field is required.")
    description: FreeText() = ""
    form: Annotated[list[PeerFormField], BeforeValidator(_form)] = Field(
        [], description="The detail fields a person fills in to close it."
    )
    fields: JsonObject() = Field({}, description="Detail fields already filled in.")


class PeerEventInput(Input):
    """A change of a task the peer sent (idempotent on `event_id`)."""

    event_id: Annotated[Text(100, not_text=EVENT_ID, strip=False), Missing(EVENT_ID)] = Field(
        description="A unique id of this event at the sender."
    )
    kind: Annotated[Choice(TASK_EVENT_KINDS, EVENT_KIND), Missing(EVENT_KIND)]
    actor: Annotated[str | None, BeforeValidator(_actor)] = Field(
        None, description="Who made the change at the sender."
    )
    text: FreeText() = ""
    fields: JsonObject() = {}


# --- answers ------------------------------------------------------------------------------


class PeerDepartment(Output):
    id: Id
    name: str


class PeerDepartmentList(Output):
    """What this account may send to: the department of its server side."""

    departments: list[PeerDepartment]


class PeerTaskReceipt(Output):
    """The task as received here: 201 the first time, 200 when it was here already."""

    task_id: Id = Field(description="The task's id here.")
    status: OneOf(Task.STATUSES)
    created: bool


class PeerEventReceipt(Output):
    """The task after the change; `applied` is false for an event id seen before."""

    task_id: Id
    status: OneOf(Task.STATUSES)
    applied: bool


class PeerEvent(Output):
    """A change people made here to a task the peer sent."""

    id: Id = Field(description="The cursor of this event.")
    sender_task_id: Id
    kind: OneOf(REPORTED_KINDS)
    actor: str
    text: str
    fields: Object
    created_at: Timestamp


class PeerEventPage(Output):
    """The changes after `after`, oldest first (at most 500); ask again with `next`."""

    events: list[PeerEvent]
    next: int = Field(ge=0, description="The cursor to ask with next time.")


INPUTS = [PeerTaskInput, PeerEventInput]
OUTPUTS = [PeerDepartmentList, PeerTaskReceipt, PeerEventReceipt, PeerEventPage]
"""The objects of the peer API in the OpenAPI document."""
