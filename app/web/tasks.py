"""The staff work queue: tasks of the user's departments, and everything done with one.

Staff see and act on the tasks of their own departments (admins: all); another
department's task is a 403 page, whatever the action.
"""

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import Attempt, Operation, Task
from app.services import accounts, catalog, operations, provisioning, tasks
from app.services.errors import Conflict, PermissionDenied, ValidationError
from app.web.helpers import Page, arg_choice, arg_int, render

bp = Blueprint("tasks", __name__)

STATUS_CHOICES = ("open", "all") + Task.STATUSES
FAILED = tuple(o for o in Attempt.OUTCOMES if o.endswith("error") or o == "interrupted")
# while the task's operation has an attempt under way, its part of the task page polls
IN_FLIGHT = ("queued", "running", "retry_wait", "waiting_callback")


def _user():
    return current_user._get_current_object()


def _visible_departments(user):
    """Department ids whose tasks the user sees (None: all, for admins)."""
    return None if user.is_admin else accounts.department_ids_of(user)


def _acting_task(task_id):
    """The task, if the user may see and act on it (else NotFound / PermissionDenied)."""
    task = tasks.get(task_id)
    if not tasks.can_act(_user(), task):
        raise PermissionDenied("this task belongs to a department you are not in")
    return task


@bp.get("/tasks")
@staff_required
def index():
    """Tasks of my departments (admins: all), live; filters status, department, mine, kind."""
    user = _user()
    visible = _visible_departments(user)
    filters = {
        "status": arg_choice("status", STATUS_CHOICES, default="open"),
        "department": arg_int("department"),
        "mine": request.args.get("mine") in ("1", "on", "true"),
        "kind": arg_choice("kind", Operation.KINDS, default=""),
    }
    query = tasks.search_tasks(
        None if filters["status"] == "all" else filters["status"],
        filters["department"],
        user.id if filters["mine"] else None,
        visible,
        kind=filters["kind"] or None,
    )
    departments = [d for d in catalog.departments() if visible is None or d.id in visible]
    return render(
        "tasks/index.html",
        "tasks/_rows.html",
        target="tasks-live",
        page=Page(query),
        filters=filters,
        statuses=STATUS_CHOICES,
        kinds=Operation.KINDS,
        departments=departments,
        no_departments=visible is not None and not visible,
    )


def _task_page(task, errors=None, form=None, failed_form=None, status=200):
    """The task page (or, for its poll, the operation part); ``errors`` belong to the form
    named ``failed_form`` ("close", "comment" or "cancel") and ``form`` holds its values."""
    op = task.operation if task.operation_id else None
    attempts = operations.attempts_of(op) if op is not None else []
    service = task.service if task.service_id else None
    # the form (the product type's detail fields, or the sender's for a received task)
    # matters when the task sets something up; other operations need no fields
    fields = tasks.form_of(task) if op is None or op.kind == "open" else []
    form = form or {}
    if failed_form == "close":
        values = form
    else:
        values = {**((service.details or {}) if service else {}), **(task.fields or {})}
    events = tasks.events_of(task)
    return render(
        "tasks/detail.html",
        "tasks/_operation.html",
        target="task-operation",
        task=task,
        is_open=task.status in Task.OPEN_STATUSES,
        op=op,
        in_flight=op is not None and op.status in IN_FLIGHT,
        service=service,
        failed_attempts=[a for a in attempts if a.outcome in FAILED],
        events=events,
        comments=[e for e in events if e.kind == "comment"],
        fields=fields,
        values=values,
        form=form,
        failed_form=failed_form,
        errors=errors or {},
        actions=operations.available_actions(op) if op is not None else [],
        # a deleted service's passwords are hidden here too (revealed on the service page)
        hidden=provisioning.secret_names(service)
        if service is not None and service.status == "deleted"
        else set(),
    ), status


@bp.get("/tasks/<int:task_id>")
@staff_required
def detail(task_id):
    """A task: the service, the operation and its errors, comments, history, the forms."""
    task = _acting_task(task_id)
    was = request.args.get("was")
    if (
        request.htmx
        and not request.htmx.boosted
        and request.htmx.target == "task-operation"
        and was in Task.OPEN_STATUSES
        and task.status not in Task.OPEN_STATUSES
    ):
        # the operation ran again and closed the task: show the whole page anew
        return "", 200, {"HX-Refresh": "true"}
    return _task_page(task)


@bp.post("/tasks/<int:task_id>/assign")
@staff_required
def assign(task_id):
    """Assign the task to me (if someone was quicker, say who); an admin may take over a
    task someone else has (``force``)."""
    _acting_task(task_id)
    try:
        tasks.assign(task_id, _user(), force=request.form.get("force") == "1")
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash("The task is yours.", "success")
    return redirect(url_for("tasks.detail", task_id=task_id))


@bp.post("/tasks/<int:task_id>/close")
@staff_required
def close(task_id):
    """Close the task with the detail fields: the operation completes."""
    task = _acting_task(task_id)
    declared = tasks.form_of(task)
    fields = {
        f["name"]: request.form.get(f"field.{f['name']}", "")
        for f in declared
        if f"field.{f['name']}" in request.form
    }
    comment = request.form.get("comment", "").strip()
    try:
        tasks.close(task_id, _user(), fields, comment)
    except ValidationError as exc:
        names = {f["name"] for f in declared}
        errors = {(f"field.{k}" if k in names else k): v for k, v in exc.fields.items()}
        return _task_page(
            task,
            errors=errors,
            form={**fields, "comment": comment},
            failed_form="close",
            status=422,
        )
    except Conflict as exc:
        flash(exc.message, "error")
        return redirect(url_for("tasks.detail", task_id=task_id))
    flash(f"Task #{task_id} closed.", "success")
    return redirect(url_for("tasks.index"))


@bp.post("/tasks/<int:task_id>/comment")
@staff_required
def comment(task_id):
    """Add a comment to the task's history."""
    task = _acting_task(task_id)
    text = request.form.get("text", "")
    try:
        tasks.comment(task_id, _user(), text)
    except ValidationError as exc:
        return _task_page(
            task, errors=exc.fields, form={"text": text}, failed_form="comment", status=422
        )
    flash("Comment added.", "success")
    return redirect(url_for("tasks.detail", task_id=task_id, _anchor="comments"))


@bp.post("/tasks/<int:task_id>/cancel")
@staff_required
def cancel(task_id):
    """Nobody will do it: cancel the task (and its open operation), with a reason."""
    task = _acting_task(task_id)
    reason = request.form.get("reason", "")
    try:
        tasks.cancel(task_id, _user(), reason)
    except ValidationError as exc:
        return _task_page(
            task, errors=exc.fields, form={"reason": reason}, failed_form="cancel", status=422
        )
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"Task #{task_id} cancelled.", "success")
    return redirect(url_for("tasks.detail", task_id=task_id))


@bp.post("/tasks/<int:task_id>/reopen")
@staff_required
def reopen(task_id):
    """Admins reopen a closed or cancelled task (staff get a 403 page)."""
    _acting_task(task_id)
    try:
        tasks.reopen(task_id, _user())
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"Task #{task_id} reopened.", "success")
    return redirect(url_for("tasks.detail", task_id=task_id))


@bp.post("/tasks/<int:task_id>/restart")
@staff_required
def restart(task_id):
    """Run the task's operation again now (if it succeeds, the task closes itself)."""
    task = _acting_task(task_id)
    if task.operation_id is None:
        flash("This task has no operation to run.", "error")
    else:
        try:
            operations.restart(task.operation_id, actor=_user().email)
        except Conflict as exc:
            flash(exc.message, "error")
        else:
            flash(f"Operation #{task.operation_id} queued to run now.", "success")
    return redirect(url_for("tasks.detail", task_id=task_id))
