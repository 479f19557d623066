"""constraints.txt (the versions the tests last passed with) agrees with pyproject.toml: every
package zoocodec names is pinned, at a version its bounds allow, and torch at 2.13.0."""
from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
UNPINNED_EXTRAS = {"gpu"}  # CUDA wheels: not installable on the CPU machine that writes the file


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(p) == 2 for p in pairs), "only exact pins, NAME==VERSION"
    return {canonicalize_name(n): v for n, v in pairs}


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for name, reqs in project["optional-dependencies"].items() if name not in UNPINNED_EXTRAS for r in reqs]
    return [Requirement(r) for r in project["dependencies"] + extras]


def test_every_dependency_is_pinned_within_its_bounds():
    pinned = pins()
    outside = {
        r.name: pinned.get(canonicalize_name(r.name))
        for r in requirements()
        if canonicalize_name(r.name) not in pinned or not r.specifier.contains(pinned[canonicalize_name(r.name)])
    }
    assert outside == {}
    assert pinned["torch"] == "2.13.0"
    assert pinned["kernels"]  # transformers 5's dependency the bench scripts once shadowed


def test_every_open_dependency_has_an_upper_bound():
    open_ended = [str(r) for r in requirements() if not any(s.operator in ("<", "<=", "==") for s in r.specifier)]
    assert open_ended == []


def test_the_installers_use_the_constraints():
    assert "-c constraints.txt" in (ROOT / "scripts/setup.sh").read_text()
    assert "-c constraints.txt" in (ROOT / "Dockerfile").read_text()
    assert "scripts/setup.sh" in (ROOT / ".ci/run").read_text()
