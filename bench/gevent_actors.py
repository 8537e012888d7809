"""The project's actors for ``dramatiq-gevent`` with psycopg2 made cooperative (psycogreen):
``dramatiq-gevent bench.gevent_actors`` (bench/slow_panels.py ``--worker gevent --psycogreen``).

``dramatiq-gevent`` has monkey-patched the standard library already; psycopg2 is a C
extension whose waits gevent cannot see, so without this a query blocks every greenlet.
"""

from psycogreen.gevent import patch_psycopg

patch_psycopg()

import actors  # noqa: E402,F401
