"""Candidate fixes for the Current operations partial, measured side by side.

Needs the data of ``bench.operations_page --keep`` (database ``provisor_bench_ops``, or
``--database-url sqlite:///<its temp dir>/provisor.sqlite3``).

    .venv/bin/python -m bench.partial_experiments [--requests 200] [--database-url URL]

Variants, each timed with the test client in the same run (p50/p95 of N requests,
interleaved round-robin so that machine noise hits all alike):

- ``as is``: the project's code;
- ``Page: no bool() on count_query``: ``app.web.helpers.Page`` picks the count query with
  ``count_query if count_query is not None else query`` instead of ``count_query or
  query``. A peewee query has no ``__bool__``, so ``or`` calls its ``__len__``, which
  *executes the whole unpaginated query and fetches every row* (all open operations, in
  ``created_at`` order: on SQLite a scan of the whole ``operation`` table through its
  ``created_at`` index) before the real ``COUNT`` runs.

The earlier candidates (no per-row macro import, the page's tasks in one query, pooled
connection, count without the join) landed in 6afc4db / 3d96fc1 and were removed.
"""

import argparse
import math
import statistics
import time

from bench import common

p = argparse.ArgumentParser()
p.add_argument("--requests", type=int, default=200)
p.add_argument("--database-url", default=common.database_url("provisor_bench_ops"))
ARGS = p.parse_args()

common.bench_env(ARGS.database_url, redis_url=None)

from bench import operations_page as op  # noqa: E402


def fixed_page_class():
    from flask import current_app, request

    from app.web import helpers

    class Page(helpers.Page):
        def __init__(self, query, number=None, size=None, count_query=None):
            size = size or current_app.config["PAGE_SIZE"]
            try:
                number = int(number or request.args.get("page", 1))
            except (TypeError, ValueError):
                number = 1
            self.total = (count_query if count_query is not None else query).count()
            self.size = size
            self.pages = max(1, math.ceil(self.total / size))
            self.number = min(max(1, number), self.pages)
            self.rows = list(query.paginate(self.number, size))

    return Page


def login(app):
    client = app.test_client()
    token = op.csrf_token(client.get("/login").get_data(as_text=True))
    r = client.post(
        "/login",
        data={"email": op.STAFF_EMAIL, "password": op.STAFF_PASSWORD, "csrf_token": token},
    )
    assert r.status_code in (302, 303), r.status_code
    return client


def main():
    import app.web.operations as view
    from app import create_app
    from app.web import helpers

    app = create_app({"DATABASE_URL": ARGS.database_url})
    client = login(app)
    variants = [("as is", helpers.Page), ("Page: no bool() on count_query", fixed_page_class())]
    samples = {name: [] for name, _ in variants}
    bodies = {}
    for _ in range(10):
        for name, page_class in variants:
            view.Page = page_class
            r = client.get(op.POLL_PATH, headers=op.POLL_HEADERS)
            op.check_partial(r.status_code, r.get_data(as_text=True))
            bodies[name] = r.get_data()
    assert len({b for b in bodies.values()}) == 1, "the variants answer differently"
    for _ in range(ARGS.requests):
        for name, page_class in variants:
            view.Page = page_class
            t = time.perf_counter()
            client.get(op.POLL_PATH, headers=op.POLL_HEADERS)
            samples[name].append(time.perf_counter() - t)
    view.Page = helpers.Page
    rows = []
    base = statistics.median(samples["as is"])
    result = {}
    for name, values in samples.items():
        s = op.stats_ms(values)
        result[name] = {**s, "bytes": len(bodies[name])}
        rows.append(
            [
                name,
                s["p50_ms"],
                s["p95_ms"],
                s["p99_ms"],
                f"{statistics.median(values) / base:.2f}",
                len(bodies[name]),
            ]
        )
    print(f"database: {ARGS.database_url}")
    print(common.table(rows, ["variant", "p50 ms", "p95 ms", "p99 ms", "p50 vs as is", "bytes"]))
    path = common.write_result(
        "partial-experiments",
        {"machine": common.machine_info(), "database_url": ARGS.database_url, "variants": result},
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
