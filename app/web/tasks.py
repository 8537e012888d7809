"""The staff work queue: tasks of the user's departments, and everything done with one.

Staff see and act on the tasks of their own departments (admins: all); another
department's task is a 403 page, whatever the action.
"""

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import MAX_SEARCH, Attempt, Operation, Task, User
from app.services import accounts, catalog, operations, provisioning, tasks
from app.services.errors import Conflict, PermissionDenied, ValidationError
from app.web.helpers import (
    Page,
    Sorting,
    arg_choice,
    arg_int,
    csv_response,
    render,
    search_status,
)

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


CSV_HEADER = ("Task", "Title", "Status", "Priority", "Due", "Overdue", "Department")
CSV_HEADER += ("Assignee", "Client", "Tariff", "Service", "Operation", "Created", "Updated")


def _list(user):
    """The list's filters, order and query (the page and its CSV export share them)."""
    filters = {
        "status": arg_choice("status", STATUS_CHOICES, default="open"),
        "department": arg_int("department"),
        "mine": request.args.get("mine") in ("1", "on", "true"),
        "kind": arg_choice("kind", Operation.KINDS, default=""),
        "priority": arg_choice("priority", Task.PRIORITIES, default=""),
        "q": request.args.get("q", "").strip(),
    }
    sorting = Sorting(tasks.task_sorts(), default="id")
    query = tasks.search_tasks(
        None if filters["status"] == "all" else filters["status"],
        filters["department"],
        user.id if filters["mine"] else None,
        _visible_departments(user),
        kind=filters["kind"] or None,
        search=filters["q"] or None,
        priority=filters["priority"] or None,
        sort=sorting.key,
        descending=sorting.desc,
    )
    return filters, sorting, query


@bp.get("/tasks")
@staff_required
def index():
    """Tasks of my departments (admins: all), live; "My tasks" (``mine``), filters
    status, department, kind, priority, a text search, sorting by column (due date too)."""
    user = _user()
    visible = _visible_departments(user)
    errors = {}
    try:
        filters, sorting, query = _list(user)
        page = Page(query)
    except ValidationError as exc:  # a search too long: said by the field, nothing listed
        errors, page = exc.fields, Page.empty()
        filters = {"status": "open", "department": None, "mine": False, "kind": ""}
        filters.update(priority="", q=request.args.get("q", "").strip())
        sorting = Sorting(tasks.task_sorts(), default="id")
    departments = [d for d in catalog.departments() if visible is None or d.id in visible]
    return render(
        "tasks/index.html",
        "tasks/_rows.html",
        target="tasks-live",
        page=page,
        filters=filters,
        sorting=sorting,
        errors=errors,
        statuses=STATUS_CHOICES,
        kinds=Operation.KINDS,
        priorities=Task.PRIORITIES,
        departments=departments,
        no_departments=visible is not None and not visible,
        max_search=MAX_SEARCH,
    ), search_status(errors)


@bp.get("/tasks/export.csv")
@staff_required
def export():
    """The tasks list as CSV: every page, with the list's filters, search and order."""
    _, _, query = _list(_user())
    return csv_response(
        "tasks.csv",
        CSV_HEADER,
        query,
        lambda t: (
            t.id,
            t.title,
            t.status,
            t.priority,
            t.due_at,
            t.is_overdue,
            t.department.name if t.department_id else None,
            t.assignee.name if t.assignee_id else None,
            t.service.client.name if t.service_id else None,
            t.service.tariff.name if t.service_id else None,
            t.service_id,
            t.operation_id,
            t.created_at,
            t.updated_at,
        ),
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
    plan_form = form if failed_form == "plan" else {}
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
        assignable=tasks.assignable_staff(task) if task.status in Task.OPEN_STATUSES else [],
        priorities=Task.PRIORITIES,
        plan_form=plan_form,
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
    """Assign the task to me, or to a member of its department (``user_id``); if someone
    was quicker, say who. An admin, or whoever has it, hands over a task someone has
    (``force``)."""
    task = _acting_task(task_id)
    user = _user()
    assignee = None
    raw = request.form.get("user_id", "")
    if raw:
        assignee = User.get_or_none_by_id(raw)
        if assignee is None:
            return _task_page(
                task,
                errors={"user_id": "Choose a member of the task's department."},
                failed_form="assign",
                status=422,
            )
    try:
        task = tasks.assign(task_id, user, assignee, force=request.form.get("force") == "1")
    except ValidationError as exc:
        return _task_page(task, errors=exc.fields, failed_form="assign", status=422)
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        if assignee is None or assignee.id == user.id:
            flash("The task is yours.", "success")
        else:
            flash(f"Task #{task.id} assigned to {assignee.name}.", "success")
    return redirect(url_for("tasks.detail", task_id=task_id))


@bp.post("/tasks/<int:task_id>/plan")
@staff_required
def plan(task_id):
    """Set the task's priority and due date (an empty date: none)."""
    task = _acting_task(task_id)
    data = {"priority": request.form.get("priority", ""), "due_at": request.form.get("due_at", "")}
    try:
        tasks.plan(task_id, _user(), data)
    except ValidationError as exc:
        return _task_page(task, errors=exc.fields, form=data, failed_form="plan", status=422)
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"Task #{task_id}: priority and due date saved.", "success")
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
