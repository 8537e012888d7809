"""Tasks: work for people in a department (new → in_work → closed / cancelled).

A task is opened when an operation escalates (or for every operation of a manual
module); closing it with the detail fields completes the operation. The statuses and
transitions are declared in ``app.states.TASK``. Every change is recorded in the task's
history (:func:`record_event`) and announced with the :data:`task_changed` signal, which
the tasks proxy listens to.

Titles and Provisor's own history texts are not stored as English: a task's title is
made from its operation's kind when shown, a history entry keeps a message key and its
arguments (``app.messages``).
"""

import logging
import re

from blinker import Namespace
from peewee import JOIN, Case

from app.db import get_for_update, write_transaction
from app.models import (
    Client,
    Department,
    Operation,
    ProxyInbound,
    Service,
    StaffMembership,
    Tariff,
    Task,
    TaskEvent,
    User,
    parse_id,
    search_term,
    sorted_by,
    utcnow,
)
from app.objects.fields import MAX_DETAIL_VALUE
from app.objects.inputs import (
    TaskCancelInput,
    TaskCloseInput,
    TaskCommentInput,
    TaskPlanInput,
)
from app.services import detail_fields, events
from app.services.errors import Conflict, NotFound, PermissionDenied, ValidationError
from app.states import KINDS, TASK

log = logging.getLogger(__name__)

signals = Namespace()
#: sent for every history event of a task, inside its transaction:
#: ``task_changed.send(task, kind=..., actor=..., text=..., fields=..., now=...)``
task_changed = signals.signal("task-changed")


def record_event(task, kind, actor, now, text="", message=None, args=None, fields=None):
    """Record a change in the task's history and announce it (``task_changed``).

    ``message`` and ``args`` for Provisor's own words (rendered when shown), ``text`` for
    what a person wrote.
    """
    event = TaskEvent.create(
        task=task,
        kind=kind,
        actor=actor or "system",
        stored_text="" if message else (text or ""),
        message=message,
        args=args if message else None,
        created_at=now,
    )
    task_changed.send(
        task, kind=kind, actor=actor or "system", text=event.text, fields=fields, now=now
    )
    return event


def get(task_id):
    task = Task.get_or_none_by_id(task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return task


def open_for_operation(op, reason, now):
    """The task for an operation that people must do (inside the caller's transaction).

    ``reason`` is an ``app.messages.Reason``."""
    existing = (
        Task.select().where((Task.operation == op.id) & Task.status.in_(Task.OPEN_STATUSES)).first()
    )
    if existing is not None:
        record_event(
            existing,
            "note",
            "system",
            now,
            message="operation_note",
            args={"operation": op.id, **reason.as_args()},
        )
        return existing
    department = op.module.department_id if op.module_id else None
    task = Task.create(
        department=department,
        service=op.service_id,
        operation=op.id,
        status="new",
        created_at=now,
        updated_at=now,
    )
    events.created("task", task)
    record_event(
        task,
        "created",
        "system",
        now,
        message="task_created",
        args={"operation": op.id, "kind": op.kind, **reason.as_args()},
    )
    log.info("task %s created for operation %s: %s", task.id, op.id, reason)
    notify_department(task, reason)
    return task


def notify_department(task, reason):
    """A department that asked for it gets an email on each new task."""
    department = task.department
    if department is None or not department.notify_email:
        return
    from app.services import mail

    body = (
        f"A new task is waiting in {department.name}:\n\n  #{task.id} {task.title}\n\n"
        f"Why: {reason}.\n"
    )
    mail.queue(
        department.notify_email,
        f"New task #{task.id}: {task.title}",
        body,
        kind="task_new",
        service=task.service_id,
    )


def _notify_assignee(task, assignee, by):
    """The person a task is handed to (by someone else) gets an email."""
    from app.services import mail

    body = f"Hello {assignee.name},\n\n{by} handed you task #{task.id}: {task.title}.\n"
    mail.queue(
        assignee.email,
        f"Task #{task.id} is yours: {task.title}",
        body,
        kind="task_assigned",
        service=task.service_id,
    )


def _open_tasks_of(op):
    return list(
        Task.select().where((Task.operation == op.id) & Task.status.in_(Task.OPEN_STATUSES))
    )


def close_for_operation(op, now, by=None):
    """The operation is done: its open tasks close (by the person who did it, or as
    done automatically)."""
    message, args = (
        ("completed_by", {"operation": op.id, "actor": by})
        if by
        else ("completed_automatically", {"operation": op.id})
    )
    for task in _open_tasks_of(op):
        TASK.move(task, "close")
        task.closed_at = now
        task.closed_by = by or "system"
        task.updated_at = now
        task.save()
        record_event(task, "closed", by or "system", now, message=message, args=args)


def cancel_for_operation(op, now, actor):
    for task in _open_tasks_of(op):
        TASK.move(task, "cancel")
        task.closed_at = now
        task.closed_by = actor
        task.updated_at = now
        task.save()
        record_event(
            task,
            "cancelled",
            actor,
            now,
            message="cancelled_by",
            args={"operation": op.id, "actor": actor},
        )


def note_for_operation(op, now, actor, message, args):
    for task in _open_tasks_of(op):
        record_event(task, "note", actor, now, message=message, args=args)


def task_sorts():
    """The columns the tasks list sorts by (priority by urgency, not by name)."""
    rank = Case(Task.priority, [(p, n) for n, p in enumerate(Task.PRIORITIES)], 1)
    return {
        "id": Task.id,
        "priority": rank,
        "due": Task.due_at,
        "status": Task.status,
        "department": Department.name,
        "assignee": User.name,
        "created": Task.created_at,
        "updated": Task.updated_at,
    }


def _title_kinds(term):
    """The operation kinds whose task title (without its placeholders) holds ``term``."""
    needle = term.lower()
    return [
        name
        for name, kind in KINDS.items()
        if needle in re.sub(r"\{[^}]*\}", "", kind.task_title).lower()
    ]


def list_tasks(
    department_id=None,
    status=None,
    assignee_id=None,
    departments=None,
    kind=None,
    search=None,
    priority=None,
    sort="id",
    descending=True,
):
    """Tasks with their operation, department, assignee, service, client and tariff
    (one query). ``search``: the title, the description a peer sent, what people wrote
    in the history (comments, reasons), the client, or ``#id`` (the task's or its
    service's); ``sort`` a key of :func:`task_sorts`."""
    # the operation comes with each row: a task's title is made from it when shown
    query = (
        Task.select(Task, Operation, Department, User, Service, Client, Tariff)
        .join(Operation, JOIN.LEFT_OUTER)
        .switch(Task)
        .join(Department, JOIN.LEFT_OUTER)
        .switch(Task)
        .join(User, JOIN.LEFT_OUTER)
        .switch(Task)
        .join(Service, JOIN.LEFT_OUTER)
        .join(Client, JOIN.LEFT_OUTER)
        .switch(Service)
        .join(Tariff, JOIN.LEFT_OUTER)
        .switch(Task)
    )
    term = search_term(search)
    if term:
        cond = (
            Task.stored_title.contains(term)
            | Client.name.contains(term)
            | Client.email.contains(term)
            | Task.id.in_(
                ProxyInbound.select(ProxyInbound.task).where(
                    ProxyInbound.description.contains(term)
                )
            )
            | Task.id.in_(
                TaskEvent.select(TaskEvent.task).where(
                    TaskEvent.message.is_null() & TaskEvent.stored_text.contains(term)
                )
            )
        )
        kinds = _title_kinds(term)
        if kinds:
            cond = cond | (Task.stored_title.is_null() & Operation.kind.in_(kinds))
        number = parse_id(term.lstrip("#"))
        if number is not None:
            cond = cond | (Task.id == number) | (Task.service == number)
        query = query.where(cond)
    if priority:
        query = query.where(Task.priority == priority)
    sorts = task_sorts()
    query = sorted_by(query, sorts, sort if sort in sorts else "id", descending, Task.id)
    if kind:
        query = query.where(Operation.kind == kind)
    if department_id:
        query = query.where(Task.department == department_id)
    if departments is not None:
        query = query.where(Task.department.in_(departments))
    if status:
        query = query.where(Task.status == status)
    if assignee_id:
        query = query.where(Task.assignee == assignee_id)
    return query


def can_act(user, task):
    """Admins act on every task; staff on the tasks of their departments."""
    if user.is_admin:
        return True
    if not user.is_staff:
        return False
    return (
        task.department_id is not None
        and StaffMembership.select()
        .where(
            (StaffMembership.user == user.id) & (StaffMembership.department == task.department_id)
        )
        .exists()
    )


def assign(task_id, user, assignee=None, force=False):
    """Give the task to ``assignee`` (default: ``user``).

    A task that is already someone else's is only handed over with ``force`` (an admin or
    the current assignee): when two people click "Assign to me" at once, one gets it and
    the other is told who did.
    """
    assignee = assignee or user
    now = utcnow()
    with write_transaction():
        task = get(task_id)
        if not can_act(user, task):
            raise PermissionDenied("this task belongs to a department you are not in")
        if not TASK.allows("assign", task.status):
            raise Conflict(f"task {task.id} is {task.status}")
        if assignee.id != user.id and not may_be_assigned(task, assignee):
            raise ValidationError(
                {"user_id": "Choose a member of the task's department (or an admin)."}
            )
        if task.assignee_id == assignee.id:
            return task
        current = task.assignee_id
        may_hand_over = force and (user.is_admin or current == user.id)
        if current is not None and not may_hand_over:
            raise Conflict(f"task {task.id} is already assigned to {task.assignee.name}")
        updated = (
            Task.update(
                assignee=assignee.id, status=TASK.target("assign", task.status), updated_at=now
            )
            .where(
                (Task.id == task.id)
                & (Task.assignee.is_null() if current is None else (Task.assignee == current))
            )
            .execute()
        )
        if updated != 1:
            task = Task.get_by_id(task.id)
            who = task.assignee.name if task.assignee_id else "someone"
            raise Conflict(f"task {task.id} was just assigned to {who}")
        previous = task.status
        task = Task.get_by_id(task.id)
        TASK.moved(task, "assign", previous)
        record_event(
            task, "assigned", user.email, now, message="assigned", args={"name": assignee.name}
        )
        if assignee.id != user.id:
            _notify_assignee(task, assignee, user.name)
    return task


def assign_locked(task, user, now):
    """Give an open task nobody has yet to ``user`` (inside the caller's transaction): the
    one who clicked "Set up manually" does it. A task someone has already stays theirs."""
    if task.assignee_id is not None or not TASK.allows("assign", task.status):
        return task
    if not can_act(user, task):
        return task  # another department's task: its staff take it
    TASK.move(task, "assign")
    task.assignee = user.id
    task.updated_at = now
    task.save()
    record_event(task, "assigned", user.email, now, message="assigned", args={"name": user.name})
    return task


def close(task_id, user, fields=None, comment=""):
    """Close a task with the detail fields: the operation completes, the service moves on."""
    fields, comment = _fields_and_comment(fields, comment)
    now = utcnow()
    with write_transaction():
        task = _get_acting(task_id, user)
        close_locked(task, user.email, fields, comment, now, assignee=user)
    return task


def _fields_and_comment(fields, comment):
    values = TaskCloseInput.parse({"fields": fields, "comment": comment})
    return values["fields"], values["comment"]


def close_locked(task, actor, fields, comment, now, assignee=None):
    """Close ``task`` (locked by the caller) as ``actor``; the operation completes."""
    from app.services import operations

    if not TASK.allows("close", task.status):
        raise Conflict(f"task {task.id} is already {task.status}")
    op = get_for_update(Operation, task.operation_id) if task.operation_id else None
    if op is not None and op.status == "running":
        raise Conflict(f"operation #{op.id} is running an attempt; try again shortly")
    cleaned = clean_fields(task, op, fields)
    task.fields = {**(task.fields or {}), **cleaned}
    TASK.move(task, "close")
    task.closed_at = now
    task.closed_by = actor
    task.updated_at = now
    if task.assignee_id is None and assignee is not None:
        task.assignee = assignee.id
    task.save()
    if comment:
        record_event(task, "comment", actor, now, text=comment)
    record_event(task, "closed", actor, now, message="closed_with_fields", fields=task.fields)
    if op is not None and op.is_open:
        operations.complete_manually(op, cleaned, actor, now)
    elif op is not None and op.status == "done" and cleaned and task.service_id:
        # a reopened task closed again: the details are corrected, nothing re-runs
        from app.services import provisioning

        provisioning.correct_details(task.service_id, cleaned, now)
        record_event(task, "note", actor, now, message="details_corrected")


def save_fields(task_id, user, fields):
    """Fill in (some of) the detail fields without closing the task."""
    fields, _ = _fields_and_comment(fields, "")
    now = utcnow()
    with write_transaction():
        task = _get_acting(task_id, user)
        save_fields_locked(task, user.email, fields, now)
    return task


def save_fields_locked(task, actor, fields, now):
    if not TASK.allows("fill", task.status):
        raise Conflict(f"task {task.id} is {task.status}")
    known = {f["name"] for f in form_of(task)}
    unknown = [name for name in fields if known and name not in known]
    if unknown:
        raise ValidationError({name: "Not a detail field of this task." for name in unknown})
    values = detail_fields.clean(form_of(task), {str(k): v for k, v in fields.items()})
    task.fields = {**(task.fields or {}), **values}
    task.updated_at = now
    task.save()
    record_event(
        task,
        "fields",
        actor,
        now,
        message="fields_filled",
        args={"names": ", ".join(sorted(values))},
        fields=task.fields,
    )


def _get_acting(task_id, user):
    task = get_for_update(Task, parse_id(task_id)) if parse_id(task_id) else None
    if task is None:
        raise NotFound(f"task {task_id} not found")
    if not can_act(user, task):
        raise PermissionDenied("this task belongs to a department you are not in")
    return task


def comment(task_id, user, text):
    """Add a comment to the task's history."""
    text = TaskCommentInput.parse({"text": text})["text"]
    now = utcnow()
    with write_transaction():
        task = _get_acting(task_id, user)
        record_event(task, "comment", user.email, now, text=text)
        task.updated_at = now
        task.save()
    return task


def cancel(task_id, user, reason=""):
    """Nobody will do this by hand: the task is cancelled, and its open operation too."""
    reason = TaskCancelInput.parse({"reason": reason})["reason"]
    now = utcnow()
    with write_transaction():
        task = _get_acting(task_id, user)
        cancel_locked(task, user.email, reason, now)
    return task


def cancel_locked(task, actor, reason, now, default_message="cancelled"):
    from app.services import operations

    if not TASK.allows("cancel", task.status):
        raise Conflict(f"task {task.id} is already {task.status}")
    op = get_for_update(Operation, task.operation_id) if task.operation_id else None
    if op is not None and op.status == "running":
        raise Conflict(f"operation #{op.id} is running an attempt; try again shortly")
    TASK.move(task, "cancel")
    task.closed_at = now
    task.closed_by = actor
    task.updated_at = now
    task.save()
    if (reason or "").strip():
        record_event(task, "cancelled", actor, now, text=reason.strip())
    else:
        record_event(task, "cancelled", actor, now, message=default_message)
    if op is not None and op.is_open:
        operations.cancel_locked(op, actor, now, (reason or "").strip())


def reopen(task_id, user):
    """An admin reopens a closed or cancelled task; a cancelled operation comes back."""
    from app.services import operations

    if not user.is_admin:
        raise PermissionDenied("only admins reopen tasks")
    now = utcnow()
    with write_transaction():
        task = _get_acting(task_id, user)
        action = "reopen_assigned" if task.assignee_id else "reopen"
        if not TASK.allows(action, task.status):
            raise Conflict(f"task {task.id} is {task.status}, not closed")
        op = get_for_update(Operation, task.operation_id) if task.operation_id else None
        if op is not None and op.status != "done" and op.is_open:
            raise Conflict(f"operation #{op.id} already has other work open")
        TASK.move(task, action)
        task.closed_at = None
        task.closed_by = None
        task.updated_at = now
        task.save()
        record_event(task, "reopened", user.email, now, message="reopened")
        if op is not None and op.status == "cancelled":
            operations.bring_back(op, user.email, now)
    return task


def form_of(task):
    """The detail fields a person fills in for this task: the product type's for a
    service, the sender's form for a task received through the tasks proxy."""
    if task.service_id is not None:
        return task.service.tariff.product_type.detail_fields or []
    inbound = ProxyInbound.get_or_none(ProxyInbound.task == task.id)
    if inbound is None:
        return []
    # a form received before kinds (or from a peer that sends none): its text fields
    # hold what the protocol's detail fields hold, not this side's default 200
    return [
        {**f, "max_length": f.get("max_length") or MAX_DETAIL_VALUE}
        if detail_fields.kind_of(f) == "text"
        else f
        for f in inbound.form or []
    ]


def clean_fields(task, op, fields):
    """Check the detail fields by their kinds (an IP address, a URL...); when they set a
    service up, the required ones too, and names the form does not declare are refused."""
    declared = form_of(task)
    sets_up = (op is not None and op.kind == "open") or (
        op is None and task.service_id is None and bool(declared)
    )
    if not sets_up:
        return detail_fields.clean(declared, fields)
    merged = {**(task.fields or {}), **fields}
    known = {f["name"] for f in declared}
    try:
        cleaned = detail_fields.clean(
            declared, {k: v for k, v in merged.items() if k in known}, required=True
        )
    except ValidationError as exc:
        errors = exc.fields
    else:
        errors = {}
    for name in fields:
        if name not in known:
            errors[name] = "Not a detail field of this product type."
    if errors:
        raise ValidationError(errors)
    return cleaned


def events_of(task):
    """The history of a task, oldest first."""
    return list(
        TaskEvent.select()
        .where(TaskEvent.task == task.id)
        .order_by(TaskEvent.created_at, TaskEvent.id)
    )


def for_operation(op):
    """Every task of an operation, newest first."""
    return list(Task.select().where(Task.operation == op.id).order_by(Task.id.desc()))


def search_tasks(
    status=None, department_id=None, assignee_id=None, departments=None, kind=None, **more
):
    """The Tasks page's query: ``status`` "open" means new or in work, None any status;
    the other filters (and ``search``, ``priority``, ``sort``, ``descending``) as
    :func:`list_tasks`."""
    if status == "open":
        return list_tasks(department_id, None, assignee_id, departments, kind=kind, **more).where(
            Task.status.in_(Task.OPEN_STATUSES)
        )
    return list_tasks(department_id, status, assignee_id, departments, kind=kind, **more)


def assignable_staff(task):
    """Who ``task`` may be handed to: the active staff of its department, and admins
    (they act on every task), by name."""
    members = StaffMembership.select(StaffMembership.user).where(
        StaffMembership.department == task.department_id
    )
    where = User.role == "admin"
    if task.department_id is not None:
        where = where | ((User.role == "staff") & User.id.in_(members))
    return list(User.select().where(User.is_active & where).order_by(User.name, User.id))


def may_be_assigned(task, person):
    """Whether ``person`` may get ``task``: an admin, or staff of its department."""
    if not person.is_active or not person.is_staff:
        return False
    if person.is_admin:
        return True
    return (
        task.department_id is not None
        and StaffMembership.select()
        .where(
            (StaffMembership.user == person.id) & (StaffMembership.department == task.department_id)
        )
        .exists()
    )


def plan(task_id, user, data):
    """Set the task's ``priority`` and ``due_at`` (a key ``data`` leaves out stays; an
    empty ``due_at`` removes the due date); the change goes into the history."""
    values = TaskPlanInput.parse(data)
    given = {k for k in ("priority", "due_at") if k in (data or {})}
    now = utcnow()
    with write_transaction():
        task = _get_acting(task_id, user)
        if task.status not in Task.OPEN_STATUSES:
            raise Conflict(f"task {task.id} is {task.status}")
        changed = {}
        if "priority" in given and values["priority"] and values["priority"] != task.priority:
            changed["priority"] = task.priority = values["priority"]
        if "due_at" in given and values["due_at"] != task.due_at:
            task.due_at = values["due_at"]
            changed["due_at"] = task.due_at
        if changed:
            task.updated_at = now
            task.save()
            due = task.due_at.strftime("%Y-%m-%d %H:%M UTC") if task.due_at else "none"
            record_event(
                task,
                "planned",
                user.email,
                now,
                message="planned",
                args={"priority": task.priority, "due": due},
            )
    return task
