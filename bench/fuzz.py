"""Schemathesis's full run, by hand: every operation of ``/api/v1/openapi.json`` against a
real ``provisor serve`` on SQLite and on PostgreSQL, failing on any 5xx.

    .venv/bin/python -m bench.fuzz [--databases sqlite,postgres] [--max-examples 100]
                                   [--seed 1] [--workers 1] [-- <more st run options>]

Per database: one ``provisor serve`` (``tests.support.Instance``: its own instance folder;
SQLite, or the PostgreSQL database ``provisor_bench_fuzz`` made for the run and dropped
after), seeded by ``tests.support.seed_for_fuzzing`` (a service waiting on a manual task,
a sandbox tariff, a server side of the tasks proxy), then ``st run`` twice
(``tests.support.schemathesis``): ``/api/v1`` with an admin's bearer token, ``/proxy/v1``
as the server side's peer — every phase (examples, coverage, fuzzing, stateful), the only
check ``not_a_server_error`` (a 5xx, or no answer within 30 s). The CI runs the same with
4 examples (``tests/test_fuzz.py``).

Reports, per database and part: test cases generated, duration, failures (each with its
operations), errors, and whether ``provisor serve`` logged a traceback. Writes
``bench/results/fuzz-<stamp>.json`` (with schemathesis's own JSON reports).
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

from bench import common
from tests.support import Instance, schemathesis, seed_for_fuzzing

PG_DB = os.environ.get("BENCH_FUZZ_PG_DB", "provisor_bench_fuzz")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", default="1")
    parser.add_argument("extra", nargs="*", help="more options for st run (after --)")
    return parser.parse_args(argv)


def run_database(database, args, tmp):
    instance = Instance(tmp, f"fuzz-{database}")
    instance.env["PYTHONPATH"] = common.ROOT
    if database == "postgres":
        common.recreate_database(PG_DB)
        instance.env["DATABASE_URL"] = common.database_url(PG_DB)
    start = time.monotonic()
    instance.start()
    try:
        seed_for_fuzzing(instance)
        results = schemathesis(
            instance,
            str(tmp),
            "--seed",
            str(args.seed),
            "--max-examples",
            str(args.max_examples),
            "--workers",
            args.workers,
            *args.extra,
            timeout=6 * 3600,
        )
    finally:
        instance.stop()
        if database == "postgres":
            common.drop_database(PG_DB)
    log = instance.log()
    parts = {}
    names = ("api", "proxy", "reseller")[: len(results)]
    for name, (returncode, output, report) in zip(names, results, strict=True):
        report = report or {}
        parts[name] = {
            "exit_code": returncode,
            "test_cases": (report.get("test_cases") or {}).get("generated"),
            "running_time_s": round(report.get("running_time") or 0, 1),
            "failures": report.get("failures", []),
            "errors": report.get("errors", []),
            "operations": (report.get("operations") or {}).get("tested"),
            "output_tail": output[-3000:],
            "report": report,
        }
    return {
        "wall_s": round(time.monotonic() - start, 1),
        "parts": parts,
        "server_tracebacks": log.count("Traceback"),
        "server_log_tail": log[-3000:] if "Traceback" in log else "",
    }


def main(argv=None):
    args = parse_args(argv)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="provisor-bench-fuzz-"))
    os.environ.setdefault("PYTHONPATH", common.ROOT)
    results = {}
    try:
        for database in args.databases.split(","):
            results[database] = run_database(database, args, tmp)
            for name, part in results[database]["parts"].items():
                print(
                    f"{database} {name}: {part['test_cases']} cases over {part['operations']} "
                    f"operations in {part['running_time_s']} s, exit {part['exit_code']}, "
                    f"failures {len(part['failures'])}, errors {len(part['errors'])}",
                    flush=True,
                )
    finally:
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for database, result in results.items():
        for name, part in result["parts"].items():
            rows.append(
                [
                    database,
                    name,
                    part["test_cases"],
                    part["running_time_s"],
                    "; ".join(f"{f['title']} ×{f['count']}" for f in part["failures"]) or "none",
                    "; ".join(f"{e['title']} ×{e['count']}" for e in part["errors"]) or "none",
                ]
            )
        rows.append([database, "server", "", result["wall_s"], "", ""])
    print()
    print(common.table(rows, ["database", "part", "cases", "seconds", "failures", "errors"]))
    for database, result in results.items():
        if result["server_tracebacks"]:
            print(f"\n{database}: provisor serve logged {result['server_tracebacks']} tracebacks")
            print(result["server_log_tail"])
    path = common.write_result(
        "fuzz", {"args": vars(args), "results": results, "machine": common.machine_info()}
    )
    print(f"\nwritten to {path}")
    failed = any(
        part["exit_code"] or part["failures"]
        for r in results.values()
        for part in r["parts"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
