"""The project's actors with the candidate fixes of ``bench.experiments`` applied
(``BENCH_PATCHES``). Run: ``dramatiq bench.patched_actors --processes 1 --threads N``."""

from bench import experiments

experiments.apply()

import actors  # noqa: E402,F401  (the project's broker and actors)
