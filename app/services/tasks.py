"""Tasks: work for people in a department (new → in_work → closed / cancelled).

A task is opened when an operation escalates (or for every operation of a manual
module); closing it with the detail fields completes the operation.
"""

import logging

from app.db import get_for_update, write_transaction
from app.models import Operation, Task, TaskEvent, parse_id, utcnow
from app.objects.inputs import TaskCancelInput, TaskCloseInput, TaskCommentInput
from app.services.errors import Conflict, NotFound, PermissionDenied, ValidationError

log = logging.getLogger(__name__)

TITLES = {
    "open": "Set up service #{service} manually",
    "suspend": "Suspend service #{service} manually",
    "resume": "Resume service #{service} manually",
    "close": "Delete service #{service} manually",
    "change_tariff": "Change the tariff of service #{service} manually",
    "ensure_item": "Create item {item} on module {module} manually",
}


def title_for(op):
    return TITLES[op.kind].format(
        service=op.service_id,
        item=op.item.internal_name if op.item_id else "",
        module=op.module.name if op.module_id else "",
    )


def _event(task, kind, actor, text, now, fields=None):
    """Record a change in the task's history; the tasks proxy forwards it to peers."""
    from app.services import proxy

    TaskEvent.create(task=task, kind=kind, actor=actor or "system", text=text, created_at=now)
    proxy.on_task_event(task, kind, actor or "system", text, fields, now)


def get(task_id):
    task = Task.get_or_none_by_id(task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return task


def open_for_operation(op, reason, now):
    """The task for an operation that people must do (inside the caller's transaction)."""
    existing = (
        Task.select().where((Task.operation == op.id) & Task.status.in_(Task.OPEN_STATUSES)).first()
    )
    if existing is not None:
        _event(existing, "note", "system", f"Operation #{op.id}: {reason}.", now)
        return existing
    department = op.module.department_id if op.module_id else None
    task = Task.create(
        department=department,
        service=op.service_id,
        operation=op.id,
        title=title_for(op),
        status="new",
        created_at=now,
        updated_at=now,
    )
    _event(task, "created", "system", f"Operation #{op.id} ({op.kind}): {reason}.", now)
    log.info("task %s created for operation %s: %s", task.id, op.id, reason)
    _notify_department(task, reason)
    return task


def _notify_department(task, reason):
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


def close_for_operation(op, note, now, by=None):
    for task in _open_tasks_of(op):
        task.status = "closed"
        task.closed_at = now
        task.closed_by = by or "system"
        task.updated_at = now
        task.save()
        _event(task, "closed", by or "system", note, now)


def cancel_for_operation(op, note, now, actor):
    for task in _open_tasks_of(op):
        task.status = "cancelled"
        task.closed_at = now
        task.closed_by = actor
        task.updated_at = now
        task.save()
        _event(task, "cancelled", actor, note, now)


def note_for_operation(op, note, now, actor):
    for task in _open_tasks_of(op):
        _event(task, "note", actor, note, now)


def list_tasks(department_id=None, status=None, assignee_id=None, departments=None, kind=None):
    query = Task.select().order_by(Task.id.desc())
    if kind:
        query = query.join(Operation).where(Operation.kind == kind).switch(Task)
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
    from app.models import StaffMembership

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
        if task.status not in Task.OPEN_STATUSES:
            raise Conflict(f"task {task.id} is {task.status}")
        if task.assignee_id == assignee.id:
            return task
        current = task.assignee_id
        may_hand_over = force and (user.is_admin or current == user.id)
        if current is not None and not may_hand_over:
            raise Conflict(f"task {task.id} is already assigned to {task.assignee.name}")
        updated = (
            Task.update(assignee=assignee.id, status="in_work", updated_at=now)
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
        task = Task.get_by_id(task.id)
        _event(task, "assigned", user.email, f"Assigned to {assignee.name}.", now)
        if assignee.id != user.id:
            _notify_assignee(task, assignee, user.name)
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

    if task.status not in Task.OPEN_STATUSES:
        raise Conflict(f"task {task.id} is already {task.status}")
    op = get_for_update(Operation, task.operation_id) if task.operation_id else None
    if op is not None and op.status == "running":
        raise Conflict(f"operation #{op.id} is running an attempt; try again shortly")
    cleaned = clean_fields(task, op, fields)
    task.fields = {**(task.fields or {}), **cleaned}
    task.status = "closed"
    task.closed_at = now
    task.closed_by = actor
    task.updated_at = now
    if task.assignee_id is None and assignee is not None:
        task.assignee = assignee.id
    task.save()
    if comment:
        _event(task, "comment", actor, comment, now)
    _event(task, "closed", actor, "Closed with the detail fields.", now, fields=task.fields)
    if op is not None and op.is_open:
        operations.complete_manually(op, cleaned, actor, now)
    elif op is not None and op.status == "done" and cleaned and task.service_id:
        # a reopened task closed again: the details are corrected, nothing re-runs
        from app.services import provisioning

        provisioning.correct_details(task.service_id, cleaned, now)
        _event(task, "note", actor, "Service details corrected.", now)


def save_fields(task_id, user, fields):
    """Fill in (some of) the detail fields without closing the task."""
    fields, _ = _fields_and_comment(fields, "")
    now = utcnow()
    with write_transaction():
        task = _get_acting(task_id, user)
        save_fields_locked(task, user.email, fields, now)
    return task


def save_fields_locked(task, actor, fields, now):
    if task.status not in Task.OPEN_STATUSES:
        raise Conflict(f"task {task.id} is {task.status}")
    known = {f["name"] for f in form_of(task)}
    unknown = [name for name in fields if known and name not in known]
    if unknown:
        raise ValidationError({name: "Not a detail field of this task." for name in unknown})
    values = {str(k): str(v).strip() for k, v in fields.items() if v not in (None, "")}
    task.fields = {**(task.fields or {}), **values}
    task.updated_at = now
    task.save()
    _event(
        task,
        "fields",
        actor,
        "Detail fields filled in: " + ", ".join(sorted(values)),
        now,
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
        _event(task, "comment", user.email, text, now)
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


def cancel_locked(task, actor, reason, now):
    from app.services import operations

    if task.status not in Task.OPEN_STATUSES:
        raise Conflict(f"task {task.id} is already {task.status}")
    op = get_for_update(Operation, task.operation_id) if task.operation_id else None
    if op is not None and op.status == "running":
        raise Conflict(f"operation #{op.id} is running an attempt; try again shortly")
    task.status = "cancelled"
    task.closed_at = now
    task.closed_by = actor
    task.updated_at = now
    task.save()
    _event(task, "cancelled", actor, (reason or "").strip() or "Cancelled.", now)
    if op is not None and op.is_open:
        operations.cancel_locked(op, actor, now)


def reopen(task_id, user):
    """An admin reopens a closed or cancelled task; a cancelled operation comes back."""
    from app.services import operations

    if not user.is_admin:
        raise PermissionDenied("only admins reopen tasks")
    now = utcnow()
    with write_transaction():
        task = _get_acting(task_id, user)
        if task.status in Task.OPEN_STATUSES:
            raise Conflict(f"task {task.id} is {task.status}, not closed")
        op = get_for_update(Operation, task.operation_id) if task.operation_id else None
        if op is not None and op.status != "done" and op.is_open:
            raise Conflict(f"operation #{op.id} already has other work open")
        task.status = "in_work" if task.assignee_id else "new"
        task.closed_at = None
        task.closed_by = None
        task.updated_at = now
        task.save()
        _event(task, "reopened", user.email, "Reopened.", now)
        if op is not None and op.status == "cancelled":
            operations.bring_back(op, user.email, now)
    return task


def form_of(task):
    """The detail fields a person fills in for this task: the product type's for a
    service, the sender's form for a task received through the tasks proxy."""
    if task.service_id is not None:
        return task.service.tariff.product_type.detail_fields or []
    from app.models import ProxyInbound

    inbound = ProxyInbound.get_or_none(ProxyInbound.task == task.id)
    return inbound.form if inbound is not None else []


def clean_fields(task, op, fields):
    """Check the detail fields; the required ones when they set a service up."""
    declared = form_of(task)
    sets_up = (op is not None and op.kind == "open") or (
        op is None and task.service_id is None and bool(declared)
    )
    if not sets_up:
        return {str(k): str(v) for k, v in fields.items() if v not in (None, "")}
    errors, cleaned = {}, {}
    names = {f["name"] for f in declared}
    merged = {**(task.fields or {}), **fields}
    for f in declared:
        value = merged.get(f["name"])
        value = "" if value is None else str(value).strip()
        if not value and f.get("required"):
            errors[f["name"]] = f"{f.get('label') or f['name']} is required."
        elif value:
            cleaned[f["name"]] = value
    for name in fields:
        if name not in names:
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


def search_tasks(status=None, department_id=None, assignee_id=None, departments=None, kind=None):
    """The Tasks page's query: ``status`` "open" means new or in work, None any status;
    the other filters as :func:`list_tasks`."""
    if status == "open":
        return list_tasks(department_id, None, assignee_id, departments, kind=kind).where(
            Task.status.in_(Task.OPEN_STATUSES)
        )
    return list_tasks(department_id, status, assignee_id, departments, kind=kind)
