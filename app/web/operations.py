"""Current operations: the live list of operations not yet done, and each one's attempts."""

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import Operation
from app.services import catalog, operations, tasks
from app.services.errors import Conflict
from app.web.helpers import Page, arg_choice, arg_int, redirect_back, render

bp = Blueprint("operations", __name__)


def _filters():
    return {
        "status": arg_choice("status", Operation.STATUSES, default=""),
        "module": arg_int("module"),
        "kind": arg_choice("kind", Operation.KINDS, default=""),
        "q": request.args.get("q", "").strip(),
    }


@bp.get("/operations")
@staff_required
def index():
    """Current operations; htmx polls refresh only the table (``#operations-live``)."""
    filters = _filters()
    args = (
        filters["status"] or None,
        filters["module"],
        filters["kind"] or None,
        filters["q"] or None,
    )
    page = Page(
        operations.open_operations(*args),
        count_query=operations.open_operations(*args, with_module=False),
    )
    tasks_by_operation = operations.open_tasks_by_operation(page.rows)
    return render(
        "operations/index.html",
        "operations/_rows.html",
        target="operations-live",
        page=page,
        filters=filters,
        counts=operations.counts_by_status(*args[1:]),
        modules=catalog.processing_modules,  # called by the full page only, not the partial
        statuses=Operation.STATUSES,
        open_statuses=Operation.OPEN_STATUSES,
        kinds=Operation.KINDS,
        task_of=lambda op: tasks_by_operation.get(op.id),
    )


@bp.get("/operations/<int:operation_id>")
@staff_required
def detail(operation_id):
    """One operation with every attempt; its status part polls only while it is open."""
    op = operations.get(operation_id)
    return render(
        "operations/detail.html",
        "operations/_status.html",
        target="operation-status",
        op=op,
        attempts=operations.attempts_of(op),
        task_of=operations.open_task_of,
        tasks=tasks.for_operation(op),
    )


@bp.post("/operations/<int:operation_id>/restart")
@staff_required
def restart(operation_id):
    """Run now: queue the operation for an immediate attempt."""
    operations.get_to_act(operation_id, current_user)
    try:
        op = operations.restart(operation_id, actor=current_user.email)
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"Operation #{op.id} queued to run now.", "success")
    return redirect_back(url_for("operations.detail", operation_id=operation_id))


@bp.post("/operations/<int:operation_id>/cancel")
@staff_required
def cancel(operation_id):
    """Cancel an operation that is not running (its open task is cancelled too)."""
    operations.get_to_act(operation_id, current_user)
    try:
        op = operations.cancel(operation_id, actor=current_user.email)
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash(f"Operation #{op.id} cancelled.", "success")
    return redirect_back(url_for("operations.detail", operation_id=operation_id))


@bp.post("/operations/<int:operation_id>/take-over")
@staff_required
def take_over(operation_id):
    """Set up manually: retries stop and the operation's task opens (made if none)."""
    user = current_user._get_current_object()
    operations.get_to_act(operation_id, user)
    try:
        task = operations.take_over(operation_id, user.email, user=user)
    except Conflict as exc:
        flash(exc.message, "error")
        return redirect_back(url_for("operations.detail", operation_id=operation_id))
    if tasks.can_act(user, task):
        flash(f"Task #{task.id}: do the work by hand, then close the task.", "success")
        return redirect(url_for("tasks.detail", task_id=task.id))
    where = task.department.name if task.department_id else "no department (admins)"
    flash(f"Task #{task.id} waits in {where}: its staff do it by hand.", "info")
    return redirect_back(url_for("operations.detail", operation_id=operation_id))
