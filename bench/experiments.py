"""Candidate fixes applied as monkeypatches, to measure their effect before changing code.

``BENCH_PATCHES`` (comma-separated) chooses them; ``bench.activation --patches ...`` sets it
for the worker (``bench.patched_actors``) and applies the same ones in the benchmark process
(the payment side). Nothing here is meant to be copied as is: each patch shows what a
real change in the project would buy. Without ``--patches`` the code runs as it is.

The first four candidates (``pool``, ``jinja_cache``, ``outbox_direct``, ``rank_single``)
landed in the project (3d96fc1 and before: pooled PostgreSQL connections in
``app.db.make_database``, ``mail._compiled``, no ``send_email`` message without
``SMTP_URL``, no ranking queries for a single module) and were removed from here; asking
for them is an error, so that an old command line does not silently measure nothing.
"""

import logging
import os

log = logging.getLogger(__name__)

LANDED = {
    "pool": "app/db.py: PostgreSQL URLs give a pooled database (3d96fc1)",
    "jinja_cache": "app/services/mail.py: _compiled() caches the welcome templates",
    "outbox_direct": "app/services/mail.py: no send_email message without SMTP_URL (3d96fc1)",
    "rank_single": "app/services/provisioning.py: no ranking queries for one module (3d96fc1)",
}

AVAILABLE = {}  # name -> function applying it (none pending at the moment)


def patches():
    return {p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()}


def check(chosen):
    landed = sorted(chosen & set(LANDED))
    if landed:
        raise SystemExit(
            "these candidate fixes are in the code now (run without --patches): "
            + "; ".join(f"{p}: {LANDED[p]}" for p in landed)
        )
    unknown = sorted(chosen - set(AVAILABLE))
    if unknown:
        raise SystemExit(f"unknown patches: {', '.join(unknown)}")


def apply():
    chosen = patches()
    check(chosen)
    for name in sorted(chosen):
        AVAILABLE[name]()
    return chosen
