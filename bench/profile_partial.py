"""Where the time of one Current-operations partial request goes (cProfile, test client).

Needs the data of ``bench.operations_page --keep`` (PostgreSQL database
``provisor_bench_ops``; or ``--database-url sqlite:///...`` for its SQLite file):

    .venv/bin/python -m bench.profile_partial [--requests 100] [--database-url URL]
"""

import argparse
import cProfile
import io
import pstats
import time

from bench import common

p = argparse.ArgumentParser()
p.add_argument("--requests", type=int, default=100)
p.add_argument("--database-url", default=common.database_url("provisor_bench_ops"))
ARGS = p.parse_args()

common.bench_env(ARGS.database_url, redis_url=None)

from app import create_app  # noqa: E402
from bench import operations_page as op  # noqa: E402  (argparse there sees no args)


def main():
    app = create_app({"DATABASE_URL": ARGS.database_url})
    client = app.test_client()
    token = op.csrf_token(client.get("/login").get_data(as_text=True))
    client.post(
        "/login",
        data={"email": op.STAFF_EMAIL, "password": op.STAFF_PASSWORD, "csrf_token": token},
    )
    for _ in range(10):
        client.get(op.POLL_PATH, headers=op.POLL_HEADERS)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    for _ in range(ARGS.requests):
        client.get(op.POLL_PATH, headers=op.POLL_HEADERS)
    prof.disable()
    wall = (time.perf_counter() - t) / ARGS.requests * 1000
    stats = pstats.Stats(prof)
    total = stats.total_tt
    buckets = {
        "db connect (per request)": ["_connect", "connect"],
        "SQL execute": ["_execute_cursor"],
        "jinja render (templates)": ["render"],
        "flask-login user load": ["_load_user"],
    }
    print(f"{ARGS.requests} partial requests, {wall:.2f} ms each (wall, under cProfile)")
    func_stats = stats.stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    for label, names in buckets.items():
        best = 0.0
        for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in func_stats.items():
            if name in names and (
                label != "jinja render (templates)" or "jinja2/environment" in file
            ):
                if label.startswith("db connect") and "peewee" not in file:
                    continue
                best = max(best, ct)
        print(
            f"  {label:<28} {1000 * best / ARGS.requests:7.2f} ms/request "
            f"({100 * best / total:4.1f}% of profiled time)"
        )
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(45)
    print(out.getvalue())


if __name__ == "__main__":
    main()
