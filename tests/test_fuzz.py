"""Schemathesis against a real ``provisor serve`` (its own process, SQLite or PostgreSQL):
a bounded run with a fixed seed that fails on any 5xx, so what the audit's fuzzing found
stays fixed. The full run is by hand (``bench/fuzz.py``; figures in the README).
"""

import pytest

from tests.support import Instance, schemathesis, seed_for_fuzzing

SEED = "20261206"
EXAMPLES = "4"  # per operation and phase: a few hundred cases over the 51 operations


@pytest.mark.fuzz
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_schemathesis_finds_no_server_error(tmp_path, request, schemathesis_cli, database):
    instance = Instance(tmp_path, "fuzzed")
    if database == "postgres":
        instance.env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    instance.start()
    try:
        seed_for_fuzzing(instance)
        results = schemathesis(
            instance, str(tmp_path), "--seed", SEED, "--max-examples", EXAMPLES, timeout=600
        )
    finally:
        instance.stop()
    for returncode, output, report in results:
        assert returncode == 0, output[-6000:]
        assert report is not None, output[-2000:]
    log = instance.log()
    assert "Traceback" not in log, log[-4000:]
