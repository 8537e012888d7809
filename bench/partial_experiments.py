"""Candidate fixes for the Current operations partial, measured on a COPY of the templates.

Needs the data of ``bench.operations_page --keep`` (database ``provisor_bench_ops``).

    .venv/bin/python -m bench.partial_experiments [--requests 200] [--database-url URL]

Variants, each timed with the test client in the same run (p50/p95 of N requests,
interleaved round-robin so that machine noise hits all alike):

- ``as is``: the project's templates and code;
- ``no per-row macro import``: ``templates/operations/_actions.html`` without its own
  ``{% import "macros.html" as m with context %}`` (the including template's ``m`` is
  used; importing *with context* re-runs the macros module for every row);
- ``+ tasks in one query``: ``task_of`` answered from one query for the page's rows
  instead of one query per manual row;
- ``+ pooled connection``: PostgreSQL connection from a pool instead of a connect per
  request.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

from bench import common

p = argparse.ArgumentParser()
p.add_argument("--requests", type=int, default=200)
p.add_argument("--database-url", default=common.database_url("provisor_bench_ops"))
ARGS = p.parse_args()

common.bench_env(ARGS.database_url, redis_url=None)

from bench import operations_page as op  # noqa: E402


def patched_templates():
    src = os.path.join(common.ROOT, "templates")
    dst = tempfile.mkdtemp(prefix="provisor-bench-templates-")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    path = os.path.join(dst, "operations", "_actions.html")
    with open(path) as fh:
        text = fh.read()
    new = text.replace('{% import "macros.html" as m with context %}\n', "", 1)
    if new == text:
        raise SystemExit("_actions.html has no per-row macro import any more: nothing to try")
    with open(path, "w") as fh:
        fh.write(new)
    return dst


def make_app(templates=None, pool=False, batch_tasks=False):
    import jinja2

    from app import db

    original = db.make_database
    if pool:
        from bench import experiments

        experiments._pool()
    from app import create_app

    app = create_app({"DATABASE_URL": ARGS.database_url})
    db.make_database = original
    if templates:
        app.jinja_loader = jinja2.FileSystemLoader(templates)
    if batch_tasks:
        from app.models import Task
        from app.services import operations
        from app.web import helpers

        original_render = helpers.render

        def render(template, partial=None, target=None, **context):
            rows = context.get("page").rows if context.get("page") is not None else []
            ids = [r.id for r in rows if r.status in ("manual", "waiting_task")]
            found = {}
            if ids:
                for task in Task.select().where(
                    Task.operation.in_(ids) & Task.status.in_(Task.OPEN_STATUSES)
                ):
                    found.setdefault(task.operation_id, task)
            context["task_of"] = lambda o: found.get(o.id)
            return original_render(template, partial, target, **context)

        # the view imported ``render`` by name: patch it there
        import app.web.operations as view

        view.render = render
        _ = operations
    return app


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
    templates = patched_templates()
    import app.web.operations as view

    original_view_render = view.render
    variants = []
    # each variant needs its own app (and the view's render restored in between)
    specs = [
        ("as is", {}),
        ("no per-row macro import", {"templates": templates}),
        ("+ tasks in one query", {"templates": templates, "batch_tasks": True}),
        ("+ pooled connection", {"templates": templates, "batch_tasks": True, "pool": True}),
    ]
    from app.db import database

    for name, kw in specs:
        view.render = original_view_render
        app = make_app(**kw)
        # the database proxy is global: keep each variant's own database object and
        # bind it before each of its requests
        variants.append((name, database.obj, login(app), view.render))
    samples = {name: [] for name, *_ in variants}
    bodies = {}
    for _ in range(10):
        for name, dbobj, client, render in variants:
            view.render = render
            database.initialize(dbobj)
            r = client.get(op.POLL_PATH, headers=op.POLL_HEADERS)
            op.check_partial(r.status_code, r.get_data(as_text=True))
            bodies[name] = len(r.get_data())
    for _ in range(ARGS.requests):
        for name, dbobj, client, render in variants:
            view.render = render
            database.initialize(dbobj)
            t = time.perf_counter()
            client.get(op.POLL_PATH, headers=op.POLL_HEADERS)
            samples[name].append(time.perf_counter() - t)
    view.render = original_view_render
    rows = []
    base = statistics.median(samples["as is"])
    result = {}
    for name, values in samples.items():
        s = op.stats_ms(values)
        result[name] = {**s, "bytes": bodies[name]}
        rows.append(
            [
                name,
                s["p50_ms"],
                s["p95_ms"],
                s["p99_ms"],
                f"{statistics.median(values) / base:.2f}",
                bodies[name],
            ]
        )
    print(common.table(rows, ["variant", "p50 ms", "p95 ms", "p99 ms", "p50 vs as is", "bytes"]))
    path = common.write_result(
        "partial-experiments",
        {"machine": common.machine_info(), "database_url": ARGS.database_url, "variants": result},
    )
    print(f"\nresults: {path}")
    shutil.rmtree(templates, ignore_errors=True)


if __name__ == "__main__":
    main()
