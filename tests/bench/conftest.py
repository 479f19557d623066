"""bench/ goes at the END of sys.path, so its scripts import as `bench_*` modules and can never
shadow an installed package (test_bench_imports.py checks no name collides either way)."""
from __future__ import annotations

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:
    sys.path.append(BENCH)
