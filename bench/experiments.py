"""Candidate fixes applied as monkeypatches, to measure their effect before changing code.

``BENCH_PATCHES`` (comma-separated) chooses them; ``bench.activation --patches ...`` sets it
for the worker (``bench.patched_actors``) and applies the same ones in the benchmark process
(the payment side). Nothing here is meant to be copied as is: each patch shows what a
real change in the project would buy.

- ``pool``: PostgreSQL connections from a pool (``playhouse.pool``) instead of a new
  connection per message (AppContextMiddleware connects / closes around every message).
- ``jinja_cache``: compile each welcome subject/body template once (``from_string`` is
  called twice per activation and compiles every time).
- ``outbox_direct``: without ``SMTP_URL`` store the welcome email as ``outbox`` at once
  instead of sending a ``send_email`` message whose only job is to flip the status.
- ``rank_single``: module choice skips its three ranking queries (recent errors over
  operation JOIN attempt, running counts, items) when only one module serves the tariff.
"""

import functools
import logging
import os

log = logging.getLogger(__name__)


def patches():
    return {p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()}


def apply():
    chosen = patches()
    if "pool" in chosen:
        _pool()
    if "jinja_cache" in chosen:
        _jinja_cache()
    if "outbox_direct" in chosen:
        _outbox_direct()
    if "rank_single" in chosen:
        _rank_single()
    return chosen


def _pool():
    from playhouse.db_url import connect

    from app import db

    original = db.make_database

    def make_database(url):
        if url.startswith(("postgresql://", "postgres://")):
            scheme, rest = url.split("://", 1)
            return connect(
                f"{scheme}+pool://{rest}", max_connections=64, stale_timeout=300, timeout=10
            )
        return original(url)

    db.make_database = make_database


def _jinja_cache():
    from app.services import mail

    env = mail._templates
    original = env.from_string
    compile_once = functools.lru_cache(maxsize=256)(original)

    def from_string(source, *args, **kwargs):
        if args or kwargs:
            return original(source, *args, **kwargs)
        return compile_once(source)

    env.from_string = from_string


def _outbox_direct():
    from flask import current_app

    from app.models import Email, utcnow
    from app.services import dispatch, mail

    def queue(to, subject, body, kind="", service=None):
        direct = not current_app.config.get("SMTP_URL")
        email = Email.create(
            to=to,
            subject=subject[:250],
            body=body,
            kind=kind,
            service=service,
            status="outbox" if direct else "queued",
            next_try_at=None if direct else utcnow(),
        )
        if not direct:
            dispatch.emails([email.id])
        return email

    mail.queue = queue


def _rank_single():
    import modules
    from app.models import ProcessingModule, TariffModule
    from app.services import provisioning

    original = provisioning.rank_modules

    def rank_modules(service, kind="open"):
        tariff = service.tariff
        candidates = [
            m
            for m in ProcessingModule.select()
            .join(TariffModule)
            .where((TariffModule.tariff == tariff.id) & (ProcessingModule.enabled == True))  # noqa: E712
            if (t := modules.get_type(m.type)) is not None and kind in t.operations
        ]
        if len(candidates) != 1:
            return original(service, kind)
        m = candidates[0]
        return [
            (
                m,
                {
                    "module_id": m.id,
                    "module": m.name,
                    "item": "not checked (only candidate)",
                    "item_blocked": False,
                    "recent_errors": None,
                    "over_limit": None,
                    "running": None,
                    "current": m.id == service.module_id,
                    "priority": m.priority,
                },
            )
        ]

    provisioning.rank_modules = rank_modules
