"""Wake workers up: send broker messages for operations, emails and outgoing events after
commit.

The database is the source of truth; a message that cannot be sent (broker down) is only
logged, since the scheduler's sweep re-sends whatever is due.
"""

import contextlib
import logging

from app.db import after_commit

log = logging.getLogger(__name__)

#: messages sent to Redis in one round trip (see ``actors.broker.BatchingRedisBroker``)
BATCH = 500


def _send(actor_name, ids, delay):
    if not ids:
        return
    import actors
    from actors.broker import batch

    actor = getattr(actors, actor_name)
    options = {}
    if delay:
        options["delay"] = max(0, int(delay * 1000) + 50)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        try:
            with batch(actors.broker) if len(chunk) > 1 else contextlib.nullcontext():
                for obj_id in chunk:
                    actor.send_with_options(args=(obj_id,), **options)
        except Exception as exc:
            log.warning(
                "cannot send %s(%s) to the broker (%s); the sweep will",
                actor_name,
                chunk[0] if len(chunk) == 1 else f"{chunk[0]} … {chunk[-1]}, {len(chunk)} ids",
                exc,
            )


def operations(ids, delay=None):
    """Send ``run_operation`` for each id once the current transaction commits."""
    ids = list(ids)
    after_commit(lambda: _send("run_operation", ids, delay))


def operation(op_id, delay=None):
    operations([op_id], delay=delay)


def proxy_push(side_id, delay=None):
    after_commit(lambda: _send("push_proxy", [side_id], delay))


def proxy_pull(side_id, delay=None):
    after_commit(lambda: _send("pull_proxy", [side_id], delay))


def events(ids, delay=None):
    """Send ``deliver_event`` for each delivery id once the current transaction commits."""
    ids = list(ids)
    after_commit(lambda: _send("deliver_event", ids, delay))


def emails(ids, delay=None):
    ids = list(ids)
    after_commit(lambda: _send("send_email", ids, delay))
