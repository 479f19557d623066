"""bench/ scripts never shadow an installed package. `python bench/x.py` puts bench/ first on
sys.path, so a script named like a package (bench/kernels.py once hid the `kernels` package
transformers 5 imports) breaks every library that imports that package later in the process."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py"))


def test_every_bench_module_has_a_name_no_installed_package_has():
    assert SCRIPTS and all(name.startswith("bench_") for name in SCRIPTS)
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    taken = [name for name in SCRIPTS if importlib.machinery.PathFinder.find_spec(name, elsewhere)]
    assert taken == []


def test_libraries_imported_after_every_bench_script_are_the_real_ones():
    # A fresh process laid out as `python bench/x.py` lays it out: bench/ at sys.path[0].
    probe = f"""
import importlib, sys
sys.path.insert(0, {str(BENCH)!r})
for name in {SCRIPTS!r}:
    importlib.import_module(name)
import torch, transformers, kernels
from transformers.integrations import hub_kernels
for module in (torch, transformers, kernels, hub_kernels):
    assert {str(BENCH)!r} not in str(module.__file__), module.__file__
    print(module.__name__, module.__file__)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "site-packages" in done.stdout.splitlines()[2]  # kernels: the PyPI package
