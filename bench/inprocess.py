"""CPU per payment and per attempt, in process, one thread, no broker and no worker.

    .venv/bin/python -m bench.inprocess sqlite 600     # a fresh SQLite file
    .venv/bin/python -m bench.inprocess postgres 800   # a fresh database provisor_bench_inprocess

A sandbox module (zero latency), a tariff and ``N`` orders are made through the services
layer; the orders are paid one after another (``orders.mark_paid``), then each ``open``
operation is run once (``operations.run``) as a worker thread runs it (a connection taken,
given back after). Prints the thread's CPU time per payment and per attempt: a figure
that does not depend on Dramatiq, Redis or the other threads, for comparing two versions
of the code in alternating rounds (run from that checkout: ``cd <checkout> &&
<venv>/bin/python -m bench.inprocess``; the current directory comes first on the path).

Under callgrind it counts instructions instead, which do not depend on how busy or how
fast the machine is that day (the same code gives the same count to a few parts in ten
thousand): ::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \
        .venv/bin/python -m bench.inprocess postgres 300 --callgrind

Only the payments and the attempts are counted (``callgrind_control`` switches the
counting on and off from inside, and dumps after each), and it prints the instructions
per payment and per attempt: this process's, not PostgreSQL's.
"""

import logging
import os
import sys
import tempfile
import time

from bench import common


def main():
    counting = "--callgrind" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--callgrind"]
    kind = args[0] if args else "sqlite"
    n = int(args[1]) if len(args) > 1 else 600
    if kind == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='provisor-inprocess-')}/provisor.sqlite3"
    elif kind == "postgres":
        db = os.environ.get("BENCH_INPROCESS_DB", "provisor_bench_inprocess")
        common.recreate_database(db)
        url = common.database_url(db)
    else:
        sys.exit("usage: python -m bench.inprocess sqlite|postgres [N]")
    for key in ("REDIS_URL", "DATABASE_URL", "SMTP_URL"):
        os.environ.pop(key, None)
    logging.disable(logging.WARNING)
    from app import create_app, schema
    from app.db import database, keep_connection, release
    from app.models import Operation
    from app.services import operations, orders

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-secret"})
    schema.upgrade()
    keep_connection()  # as a worker thread does (SQLite: its connection kept between messages)

    def attempt(op_id):
        database.connect(reuse_if_open=True)
        try:
            operations.run(op_id)
        finally:
            release()

    module, tariff, clients = common.sandbox_catalog(app, wait=False)
    with app.app_context():
        with database.connection_context():
            items = [op.id for op in Operation.select().where(Operation.kind == "ensure_item")]
        for op_id in items:
            attempt(op_id)
        with database.connection_context():
            ids = [
                orders.create(
                    {"client_id": clients[i % len(clients)].id, "tariff_id": tariff.id}
                ).id
                for i in range(n)
            ]
            common.callgrind_control(counting, "-i", "on")
            start = time.thread_time()
            ops = [orders.mark_paid(order_id, by="bench")[1].id for order_id in ids]
            pay = (time.thread_time() - start) / n
            common.callgrind_control(counting, "--dump=payments")
        start = time.thread_time()
        for op_id in ops:
            attempt(op_id)
        run = (time.thread_time() - start) / n
        common.callgrind_control(counting, "--dump=attempts")
        common.callgrind_control(counting, "-i", "off")
        with database.connection_context():
            done = (
                Operation.select()
                .where((Operation.kind == "open") & (Operation.status == "done"))
                .count()
            )
    if kind == "postgres":
        database.obj.close_all()
        common.drop_database(db)
    print(
        f"{kind}: {n} orders, {done} activated; CPU per payment {pay * 1000:.3f} ms, "
        f"per attempt {run * 1000:.3f} ms"
    )
    if counting:
        counts = common.callgrind_counts()
        print(
            f"{kind}: instructions per payment {counts['payments'] / n:,.0f}, "
            f"per attempt {counts['attempts'] / n:,.0f} (callgrind, this process)"
        )


if __name__ == "__main__":
    main()
