"""The staff work queue: tasks of the user's departments, assigning and closing them."""

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import Attempt, Task
from app.services import accounts, catalog, operations, tasks
from app.services.errors import Conflict, PermissionDenied, ValidationError
from app.web.helpers import Page, arg_choice, arg_int, render

bp = Blueprint("tasks", __name__)

STATUS_CHOICES = ("open", "all") + Task.STATUSES
FAILED = tuple(o for o in Attempt.OUTCOMES if o.endswith("error") or o == "interrupted")


def _user():
    return current_user._get_current_object()


def _visible_departments(user):
    """Department ids whose tasks the user sees (None: all, for admins)."""
    return None if user.is_admin else accounts.department_ids_of(user)


@bp.get("/tasks")
@staff_required
def index():
    """Open tasks of my departments (admins: all), live; filters status, department, mine."""
    user = _user()
    visible = _visible_departments(user)
    filters = {
        "status": arg_choice("status", STATUS_CHOICES, default="open"),
        "department": arg_int("department"),
        "mine": request.args.get("mine") in ("1", "on", "true"),
    }
    assignee = user.id if filters["mine"] else None
    if filters["status"] == "open":
        query = tasks.list_open_tasks(filters["department"], assignee, visible)
    else:
        status = None if filters["status"] == "all" else filters["status"]
        query = tasks.list_tasks(filters["department"], status, assignee, visible)
    departments = [d for d in catalog.departments() if visible is None or d.id in visible]
    return render(
        "tasks/index.html",
        "tasks/_rows.html",
        target="tasks-live",
        page=Page(query),
        filters=filters,
        statuses=STATUS_CHOICES,
        departments=departments,
    )


def _task_page(task, errors=None, form=None, status=200):
    user = _user()
    if not tasks.can_act(user, task):
        raise PermissionDenied("this task belongs to a department you are not in")
    op = task.operation if task.operation_id else None
    attempts = operations.attempts_of(op) if op is not None else []
    service = task.service if task.service_id else None
    show_fields = service is not None and (op is None or op.kind == "open")
    fields = service.tariff.product_type.detail_fields if show_fields else []
    if form is not None:
        values = form
    elif service is not None:
        values = {**(service.details or {}), **(task.fields or {})}
    else:
        values = {}
    return render_template(
        "tasks/detail.html",
        task=task,
        op=op,
        service=service,
        failed_attempts=[a for a in attempts if a.outcome in FAILED],
        events=tasks.events_of(task),
        fields=fields,
        values=values,
        comment=(form or {}).get("_comment", ""),
        errors=errors or {},
        actions=operations.available_actions(op) if op is not None else [],
    ), status


@bp.get("/tasks/<int:task_id>")
@staff_required
def detail(task_id):
    """A task: what to do, the operation's errors, the history and the form to close it."""
    return _task_page(tasks.get(task_id))


@bp.post("/tasks/<int:task_id>/assign")
@staff_required
def assign(task_id):
    """Assign the task to me (if someone was quicker, say who)."""
    try:
        tasks.assign(task_id, _user())
    except (Conflict, PermissionDenied) as exc:
        flash(exc.message, "error")
    else:
        flash("The task is yours.", "success")
    return redirect(url_for("tasks.detail", task_id=task_id))


@bp.post("/tasks/<int:task_id>/close")
@staff_required
def close(task_id):
    """Close the task with the detail fields: the operation completes."""
    task = tasks.get(task_id)
    service = task.service if task.service_id else None
    declared = service.tariff.product_type.detail_fields if service is not None else []
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
        form = {**fields, "_comment": comment}
        return _task_page(task, errors=errors, form=form, status=422)
    except (Conflict, PermissionDenied) as exc:
        flash(exc.message, "error")
        return redirect(url_for("tasks.detail", task_id=task_id))
    flash(f"Task #{task_id} closed.", "success")
    return redirect(url_for("tasks.index"))


@bp.post("/tasks/<int:task_id>/restart")
@staff_required
def restart(task_id):
    """Run the task's operation again now."""
    task = tasks.get(task_id)
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
