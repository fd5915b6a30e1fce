"""The benchmarks are scripts under bench/, not a package: their modules import each other by
file name, so the tests put bench/ on the path the way the scripts do."""

from __future__ import annotations

import sys

from tests.conftest import REPO

BENCH = REPO / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
