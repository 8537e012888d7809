"""The tasks proxy protocol (``/proxy/v1``): what a peer sends and what it gets back.

The server side validates a peer's bodies with these models (``PeerTaskInput.check``);
the answers are built with them; the OpenAPI document describes ``/proxy/v1`` with them.
"""

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from app.models import Task
from app.objects.base import Input, Missing, Output, invalid
from app.objects.fields import (
    MAX_DETAIL_FIELDS,
    MAX_DETAIL_VALUE,
    DetailValues,
    FreeText,
    Id,
    Object,
    OneOf,
    Ref,
    Text,
    Timestamp,
)
from app.services.detail_fields import KINDS as DETAIL_KINDS

PROTOCOL = "1"
"""The protocol's version: ``/proxy/v1``, and the ``Provisor-Proxy-Protocol`` header."""
PROTOCOL_HEADER = "Provisor-Proxy-Protocol"

TASK_EVENT_KINDS = ("comment", "fields", "closed", "cancelled")
"""What a sender reports about a task it sent (created, then these)."""
LEGACY_KINDS = {"close": "closed", "cancel": "cancelled"}
"""Names senders used before protocol 1 was written down: still taken, as the new names."""
REPORTED_KINDS = ("assigned", "comment", "fields", "closed", "cancelled", "reopened")
"""What the receiving side reports back about a task it received (the kinds both
directions share have the same names)."""

MAX_TEXT = 10000
"""A description, a comment, a note: at most this many characters."""
MAX_FORM = MAX_DETAIL_FIELDS
MAX_DETAIL_LENGTH = MAX_DETAIL_VALUE
MAX_PAGE = 500
"""Events per page of ``GET /events`` at most (and by default)."""
MAX_CURSOR = 10**18 - 1
"""The largest event id (cursor) of ``GET /events``: ``after`` takes at most 18 digits."""

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
    kind: str = Field(
        "text",
        description="How a value is checked when the task is closed: ip, url, domain, "
        "hostname, port or text (a kind this side does not know is taken as text).",
    )
    max_length: int | None = Field(None, description="A text field's longest value.")


def _form(value):
    if not isinstance(value, list) or any(
        not isinstance(f, dict) or not isinstance(f.get("name"), str) for f in value
    ):
        raise invalid(FORM)
    if len(value) > MAX_FORM:
        raise invalid(f"At most {MAX_FORM} fields.")
    form = []
    for f in value:
        label = f.get("label")
        if label is not None and not isinstance(label, str):
            raise invalid("Each label must be text.")
        if not f["name"].strip() or len(f["name"]) > 100 or len(label or "") > 200:
            raise invalid("Each name must be 1 to 100 characters, each label at most 200.")
        if not isinstance(f.get("required", False), bool):
            raise invalid("Each required must be true or false.")
        entry = {
            "name": f["name"],
            "label": label or f["name"],
            "required": bool(f.get("required")),
        }
        kind = f.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise invalid("Each kind must be text.")
        entry["kind"] = kind if kind in DETAIL_KINDS else "text"
        length = f.get("max_length")
        if entry["kind"] == "text" and isinstance(length, int) and not isinstance(length, bool):
            if not 1 <= length <= MAX_DETAIL_LENGTH:
                raise invalid(f"Each max_length must be a number from 1 to {MAX_DETAIL_LENGTH}.")
            entry["max_length"] = length
        elif entry["kind"] == "text":  # a peer that says nothing: what detail fields hold
            entry["max_length"] = MAX_DETAIL_LENGTH
        form.append(entry)
    return form


def _actor(value):
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("Must be text or null.")
    if len(value) > 200:
        raise invalid("At most 200 characters.")
    return value


def _kind(value):
    value = LEGACY_KINDS.get(value, value) if isinstance(value, str) else value
    if value not in TASK_EVENT_KINDS:
        raise invalid(EVENT_KIND)
    return value


class PeerTaskInput(Input):
    """A task a peer forwards (idempotent on `sender_task_id`)."""

    sender_task_id: Ref(SENDER_TASK_ID, maximum=MAX_SENDER_TASK_ID) = Field(
        description="The task's id at the sender."
    )
    department_id: Ref("Not a department this account may send to.") = Field(
        description="A department from GET /proxy/v1/departments."
    )
    title: Text(250, not_text="This field is required.")
    description: FreeText(max_length=MAX_TEXT) = ""
    form: Annotated[list[PeerFormField], Field(max_length=MAX_FORM), BeforeValidator(_form)] = (
        Field([], description="The detail fields a person fills in to close it.")
    )
    fields: DetailValues() = Field({}, description="Detail fields already filled in.")


class PeerEventInput(Input):
    """A change of a task the peer sent (idempotent on `event_id`)."""

    event_id: Annotated[Text(100, not_text=EVENT_ID, strip=False), Missing(EVENT_ID)] = Field(
        description="A unique id of this event at the sender."
    )
    kind: Annotated[Literal[TASK_EVENT_KINDS], BeforeValidator(_kind), Missing(EVENT_KIND)] = Field(
        description="What changed (`close` and `cancel` are taken as `closed` and "
        "`cancelled`: deprecated)."
    )
    actor: Annotated[str | None, Field(max_length=200), BeforeValidator(_actor)] = Field(
        None, description="Who made the change at the sender."
    )
    text: FreeText(max_length=MAX_TEXT) = Field(
        "", description="The comment, the cancel reason or a note."
    )
    fields: DetailValues() = Field({}, description="Detail fields (for `fields` and `closed`).")


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
    """The task after the change; `applied` is false for a replay (the same event id for
    the same task with the same content)."""

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
    """The changes after `after`, oldest first (at most `limit`, 500 by default); ask again
    with `next` (the id of the last event, or `after` when there is none)."""

    events: list[PeerEvent]
    next: int = Field(ge=0, description="The cursor to ask with next time.")


INPUTS = [PeerTaskInput, PeerEventInput]
OUTPUTS = [PeerDepartmentList, PeerTaskReceipt, PeerEventReceipt, PeerEventPage]
"""The objects of the peer API in the OpenAPI document."""
