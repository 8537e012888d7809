"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) of a worker.

    .venv/bin/python -m bench.profile_summary bench/results/profiles/<file>.txt

Prints where the worker's CPU samples went, by category (each sample counted once, in
the first category of the list below that its stack matches), and the top functions by
self and inclusive samples (py-spy leaves idle threads out by default).
"""

import collections
import re
import sys

CATEGORIES = [
    (
        "db connect/close (AppContextMiddleware, per message)",
        r"_connect \(peewee|\b_close \(peewee|psycopg2.*connect|Database\.connect|Database\.close",
    ),
    (
        "jinja: compile welcome template (from_string)",
        r"Environment\.from_string|Environment\.compile",
    ),
    ("jinja: render", r"Template\.render"),
    ("SQL commit", r"Database\.commit|_transaction\.commit"),
    ("SQL BEGIN", r"PostgresqlDatabase\.begin|SqliteDatabase\.begin"),
    (
        "SQL execute (psycopg2: round trip to PostgreSQL)",
        r"Database\._execute_cursor \(peewee[^;]*$|Database\.execute_sql \(peewee[^;]*$",
    ),
    ("peewee: build queries / convert rows", r"\(peewee\.py|\(playhouse/"),
    ("redis / broker send", r"Actor\.send_with_options|RedisBroker\.enqueue|\(redis/"),
    ("flask app context", r"\(flask/"),
    ("json", r"\(json/"),
    ("dramatiq worker/consumer machinery", r"\(dramatiq/"),
    ("app / modules code (self)", r"\((app|modules|actors)/"),
]


def load(path):
    stacks = []
    with open(path) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            try:
                stacks.append((stack, int(count)))
            except ValueError:
                continue
    return stacks


def summarise(path, top=25):
    stacks = load(path)
    total = sum(c for _, c in stacks) or 1
    cats = collections.Counter()
    compiled = [(name, re.compile(rx)) for name, rx in CATEGORIES]
    selfc = collections.Counter()
    incl = collections.Counter()
    for stack, count in stacks:
        for name, rx in compiled:
            if rx.search(stack):
                cats[name] += count
                break
        else:
            cats["other"] += count
        frames = stack.split(";")
        selfc[re.sub(r":\d+\)", ")", frames[-1])] += count
        for f in {re.sub(r":\d+\)", ")", f) for f in frames}:
            incl[f] += count
    lines = [f"{path}: {total} samples (active threads only)", "", "by category:"]
    for name, count in cats.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", f"top {top} by self samples:"]
    for name, count in selfc.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", f"top {top} app/ modules/ actors/ functions by inclusive samples:"]
    app_incl = [(n, c) for n, c in incl.items() if re.search(r"\((app|modules|actors)/", n)]
    for name, count in sorted(app_incl, key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines), dict(cats), total


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(summarise(p)[0])
        print()
