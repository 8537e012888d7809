"""Current operations: the live list of operations not yet done, and each one's attempts."""

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth import staff_required
from app.models import MAX_SEARCH, Operation
from app.services import catalog, operations, tasks
from app.services.errors import Conflict, ValidationError
from app.web.helpers import (
    Page,
    Sorting,
    arg_choice,
    arg_int,
    csv_response,
    redirect_back,
    render,
    search_status,
)

bp = Blueprint("operations", __name__)


def _filters():
    return {
        "status": arg_choice("status", Operation.STATUSES, default=""),
        "module": arg_int("module"),
        "kind": arg_choice("kind", Operation.KINDS, default=""),
        "q": request.args.get("q", "").strip(),
    }


CSV_HEADER = ("Operation", "Kind", "Status", "Service", "Client", "Email", "Tariff")
CSV_HEADER += ("Module", "Attempts", "Next run", "Last error", "Created")


def _args(filters):
    return (
        filters["status"] or None,
        filters["module"],
        filters["kind"] or None,
        filters["q"] or None,
    )


def _sorting():
    return Sorting(operations.operation_sorts(), default="created")


def _rows_context(filters, sorting, selected=()):
    """What ``operations/_rows.html`` shows (the page, its htmx poll, a bulk action's
    answer)."""
    errors = {}
    try:
        page = Page(
            operations.open_operations(*_args(filters), sort=sorting.key, descending=sorting.desc),
            count_query=operations.open_operations(*_args(filters), with_module=False),
        )
        # the chips count with the rows' own filters, so that a chip and its rows agree
        counts = operations.counts_by_status(*_args(filters)[1:])
    except ValidationError as exc:  # a search too long: said by the field, nothing listed
        errors, page, counts = exc.fields, Page.empty(), {}
    tasks_by_operation = operations.open_tasks_by_operation(page.rows)
    return {
        "page": page,
        "filters": filters,
        "sorting": sorting,
        "errors": errors,
        "selected": set(selected),
        "counts": counts,
        "open_statuses": Operation.OPEN_STATUSES,
        "task_of": lambda op: tasks_by_operation.get(op.id),
    }


def _selected(source):
    return {n for n in (arg_int("x", {"x": v}) for v in source.getlist("ids")) if n}


@bp.get("/operations")
@staff_required
def index():
    """Current operations; htmx polls refresh only the table (``#operations-live``),
    keeping the rows ticked for a bulk action (``ids``)."""
    context = _rows_context(_filters(), _sorting(), _selected(request.args))
    return render(
        "operations/index.html",
        "operations/_rows.html",
        target="operations-live",
        modules=catalog.processing_modules,  # called by the full page only, not the partial
        statuses=Operation.STATUSES,
        kinds=Operation.KINDS,
        max_search=MAX_SEARCH,
        **context,
    ), search_status(context["errors"])


@bp.get("/operations/export.csv")
@staff_required
def export():
    """Current operations as CSV: every page, with the list's filters, search and order."""
    sorting = _sorting()
    query = operations.open_operations(
        *_args(_filters()), sort=sorting.key, descending=sorting.desc
    )
    return csv_response(
        "operations.csv",
        CSV_HEADER,
        query,
        lambda op: (
            op.id,
            op.kind,
            op.status,
            op.service_id,
            op.service.client.name if op.service_id else None,
            op.service.client.email if op.service_id else None,
            op.service.tariff.name if op.service_id else None,
            op.module.name if op.module_id else None,
            op.attempts,
            op.next_run_at,
            op.last_error,
            op.created_at,
        ),
    )


@bp.post("/operations/bulk")
@staff_required
def bulk():
    """Run now or cancel the ticked operations, each through the same service as its
    own button; the answer says what was done and what was refused, and why."""
    action = request.form.get("action", "")
    ids = request.form.getlist("ids")
    try:
        done, refused = operations.act_on_many(ids, action, current_user._get_current_object())
    except ValidationError as exc:
        error, done, refused = next(iter(exc.fields.values()), exc.message), [], []
    else:
        error = None
    summary = {
        "action": action,
        "verb": "queued to run now" if action == "restart" else "cancelled",
        "done": [op.id for op in done],
        "refused": refused,
        "error": error,
    }
    if not request.htmx:
        flash(_summary_text(summary), "error" if error else "success" if not refused else "info")
        return redirect_back(url_for("operations.index"))
    # htmx: the summary goes above the list, and the list reloads (nothing ticked)
    headers = {} if error else {"HX-Trigger": "operations-changed"}
    return render_template("operations/_bulk.html", summary=summary), 200, headers


def _summary_text(summary):
    if summary["error"]:
        return summary["error"]
    text = f"{len(summary['done'])} operation(s) {summary['verb']}"
    if summary["refused"]:
        why = "; ".join(f"#{number}: {reason}" for number, reason in summary["refused"])
        text += f"; {len(summary['refused'])} refused ({why})"
    return text + "."


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
