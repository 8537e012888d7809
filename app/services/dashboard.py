"""The staff dashboard: what needs attention now, and the first-run checklist."""

import datetime as dt

from app.models import (
    Department,
    Email,
    Operation,
    Order,
    ProcessingModule,
    ProxyClientSide,
    Service,
    Tariff,
    TariffModule,
    utcnow,
)
from app.services import accounts, tasks

STUCK_AFTER = dt.timedelta(hours=1)  # a service still being set up after this is stuck


def stuck_before(now=None):
    """Services in setup (processing) since before this are stuck."""
    return (now or utcnow()) - STUCK_AFTER


def stuck_services(now=None):
    """Services still being set up (processing) for longer than :data:`STUCK_AFTER`."""
    return Service.select().where(
        (Service.status == "processing") & (Service.updated_at < stuck_before(now))
    )


def attention(user):
    """The counts that need someone, for ``user`` (open tasks of their departments; the
    tasks proxy's peers only for admins): ``{name: count}``."""
    departments = None if user.is_admin else accounts.department_ids_of(user)
    counts = {
        "manual_operations": Operation.select().where(Operation.status == "manual").count(),
        "open_tasks": tasks.search_tasks("open", departments=departments).count(),
        "failed_emails": Email.select().where(Email.status == "retry_wait").count(),
        "stuck_services": stuck_services().count(),
    }
    if user.is_admin:
        counts["peers_in_error"] = (
            ProxyClientSide.select()
            .where(ProxyClientSide.enabled & ProxyClientSide.last_error.is_null(False))
            .count()
        )
    return counts


def checklist():
    """The first-run steps (department, module, tariff, test order), each with whether
    it is done; in order."""
    return [
        ("department", Department.select().exists()),
        ("module", ProcessingModule.select().exists()),
        (
            "tariff",
            Tariff.select().join(TariffModule).where(~Tariff.is_archived).exists(),
        ),
        ("order", Order.select().exists()),
    ]
