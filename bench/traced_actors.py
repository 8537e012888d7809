"""The project's actors with tracemalloc on, for ``bench.memory --tracemalloc``.

Run as ``dramatiq bench.traced_actors``: the worker traces its allocations (10 frames)
and, whenever a file ``<BENCH_TRACE_DIR>/<name>.req`` appears, writes a snapshot to
``<name>.snap`` next to it and removes the request. Slows the worker down (for analysis
only, not for figures).
"""

import glob
import os
import threading
import time
import tracemalloc

tracemalloc.start(10)

import actors  # noqa: E402,F401  (the project's broker, middleware and actors)

TRACE_DIR = os.environ["BENCH_TRACE_DIR"]


def _serve():
    while True:
        for request in glob.glob(os.path.join(TRACE_DIR, "*.req")):
            snapshot = tracemalloc.take_snapshot()
            snapshot.dump(request[: -len(".req")] + ".snap.tmp")
            os.rename(request[: -len(".req")] + ".snap.tmp", request[: -len(".req")] + ".snap")
            os.remove(request)
        time.sleep(0.2)


threading.Thread(target=_serve, name="bench-tracemalloc", daemon=True).start()
