"""Actors that deliver outgoing events (webhooks) from their outbox."""

import dramatiq

from app.services import events


@dramatiq.actor(queue_name="events", max_retries=0, time_limit=300_000, log_context="delivery")
def deliver_event(delivery_id):
    """POST one event to one endpoint if it is due (a duplicate message does nothing; a
    failure plans its own retry)."""
    events.deliver(delivery_id)
