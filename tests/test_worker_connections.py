"""A worker's module calls hold no database connection while they wait on their panel, so
one process runs more calls at once than its pool has connections (issue 14, slow panels:
``bench/slow_panels.py`` measures it; these tests check the mechanism, not the time)."""

import threading

from app.db import database
from modules.sandbox import SandboxModule
from tests import support

WORKER_THREADS = 4  # the embedded worker of the tests (conftest ``worker``)


def test_calls_in_flight_exceed_the_pool_and_hold_no_connection(pg_api_pool_of_2, monkeypatch):
    """Pool of 2, 4 worker threads: all 4 `open` calls are in the panel at the same time
    (a barrier of 4 inside the call; with a connection held through the call the third and
    fourth would wait for one and the barrier would break), none holding a connection, and
    each operation ends with one attempt and one account at the panel."""
    api = pg_api_pool_of_2
    barrier = threading.Barrier(WORKER_THREADS, timeout=30)
    seen = []
    simulate = SandboxModule._simulate

    def in_call(self, ctx, failures=True):
        if ctx.kind == "open":
            held = not database.is_closed()
            try:
                barrier.wait()
                seen.append(("met", held))
            except threading.BrokenBarrierError:
                seen.append(("barrier broken", held))
        return simulate(self, ctx, failures)

    monkeypatch.setattr(SandboxModule, "_simulate", in_call)
    department, module, tariff, client = api.catalog("sandbox")
    op_ids = []
    for _ in range(WORKER_THREADS):
        order = api.order(client["id"], tariff["id"])
        status, body = api.pay(order)
        assert status == 200, body
        op_ids.append(body["operation_id"])
    for op_id in op_ids:
        api.wait_operation(op_id, ("done",), timeout=60)

    assert seen == [("met", False)] * WORKER_THREADS
    with api.app.app_context(), database.connection_context():
        from app.models import Attempt, SandboxResource

        for op_id in op_ids:
            attempts = list(Attempt.select().where(Attempt.operation == op_id))
            assert [a.outcome for a in attempts] == ["done"]
        accounts = SandboxResource.select().where(SandboxResource.kind == "account")
        assert len({r.service_id for r in accounts}) == accounts.count() == WORKER_THREADS


def test_a_call_on_sqlite_keeps_its_connection(api, monkeypatch):
    """SQLite has no pool (a connection per thread): nothing is handed back there."""
    seen = []
    simulate = SandboxModule._simulate

    def in_call(self, ctx, failures=True):
        if ctx.kind == "open":
            seen.append(not database.is_closed())
        return simulate(self, ctx, failures)

    monkeypatch.setattr(SandboxModule, "_simulate", in_call)
    support.paid_service(api)
    assert seen == [True]
