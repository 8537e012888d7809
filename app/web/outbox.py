"""The outbox (staff): every email Provisor stored, its delivery status and its text."""

from flask import Blueprint, request

from app.auth import staff_required
from app.models import MAX_SEARCH, Email
from app.services import mail, provisioning
from app.services.errors import ValidationError
from app.web.helpers import Page, Sorting, arg_choice, csv_response, render, search_status

bp = Blueprint("outbox", __name__)

STATUSES = Email.STATUSES
CSV_HEADER = ("Email", "To", "Subject", "Kind", "Status", "Attempts", "Last error")
CSV_HEADER += ("Service", "Created", "Sent")


def _list():
    """The list's filters, order and query (the page and its CSV export share them)."""
    filters = {
        "q": request.args.get("q", "").strip(),
        "status": arg_choice("status", STATUSES, default=""),
    }
    sorting = Sorting(mail.EMAIL_SORTS, default="id")
    return filters, sorting


def _query(filters, sorting):
    return mail.outbox(filters["status"] or None, filters["q"] or None, sorting.key, sorting.desc)


@bp.get("/outbox")
@staff_required
def index():
    """Emails, newest first, with a status filter, search (recipient, subject, #id),
    sorting by column and pages."""
    filters, sorting = _list()
    errors = {}
    try:
        page = Page(_query(filters, sorting))
    except ValidationError as exc:  # a search too long: said by the field, nothing listed
        errors, page = exc.fields, Page.empty()
    return render(
        "outbox/index.html",
        "outbox/_rows.html",
        target="outbox-list",
        page=page,
        filters=filters,
        sorting=sorting,
        errors=errors,
        statuses=STATUSES,
        max_search=MAX_SEARCH,
    ), search_status(errors)


@bp.get("/outbox/export.csv")
@staff_required
def export():
    """The outbox as CSV (never the bodies): every page, with the list's filters."""
    filters, sorting = _list()
    return csv_response(
        "outbox.csv",
        CSV_HEADER,
        _query(filters, sorting),
        lambda e: (
            e.id,
            e.to,
            e.subject,
            e.kind,
            e.status,
            e.attempts,
            e.last_error,
            e.service_id,
            e.created_at,
            e.sent_at,
        ),
    )


@bp.get("/outbox/<int:email_id>")
@staff_required
def detail(email_id):
    """One email with its whole body (a deleted service's passwords masked: the service
    page reveals them)."""
    email = mail.get(email_id)
    service = email.service if email.service_id else None
    body = provisioning.hidden_in(email.body, service)
    return render("outbox/detail.html", email=email, body=body, masked=body != email.body)
