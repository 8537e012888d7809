"""The outbox (staff): every email Provisor stored, its delivery status and its text."""

from flask import Blueprint

from app.auth import staff_required
from app.models import Email
from app.services import mail, provisioning
from app.web.helpers import Page, arg_choice, render

bp = Blueprint("outbox", __name__)

STATUSES = Email.STATUSES


@bp.get("/outbox")
@staff_required
def index():
    """Emails, newest first, with a status filter."""
    status = arg_choice("status", STATUSES, default="")
    return render(
        "outbox/index.html",
        "outbox/_rows.html",
        target="outbox-list",
        page=Page(mail.outbox(status or None)),
        filters={"status": status},
        statuses=STATUSES,
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
