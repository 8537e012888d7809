"""Actors that run operations. They take ids only and are idempotent."""

import dramatiq

from app.services import operations


@dramatiq.actor(
    queue_name="operations",
    max_retries=3,
    min_backoff=1000,
    max_backoff=30000,
    time_limit=3_600_000,
    log_context="operation",
)
def run_operation(operation_id):
    """Run one attempt of an operation if it is due (a duplicate message does nothing)."""
    operations.run(operation_id)


@dramatiq.actor(queue_name="maintenance", max_retries=0, time_limit=600_000)
def sweep_operations():
    """Every sweep once (what the scheduler does), each on its own."""
    from app import scheduler

    scheduler.sweep_all()
