"""Actors that deliver email from the outbox."""

import dramatiq

from app.services import mail


@dramatiq.actor(
    queue_name="mail",
    max_retries=3,
    min_backoff=1000,
    max_backoff=60000,
    time_limit=120_000,
    log_context="email",
)
def send_email(email_id):
    """Deliver a stored email if it is due (a sent or claimed one is skipped)."""
    mail.deliver(email_id)
