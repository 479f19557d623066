"""The registry: one per kind, duplicates refused, ranges declared once and shown as they are
checked, older spec versions upgraded and newer ones refused, docs tables current, and a new
method covered by the conformance suite and `zoocodec methods` with no edit outside its file."""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import run_cli
from zoocodec import catalog
from zoocodec.codecs import CODERS, coder_from_dict
from zoocodec.errors import SpecError
from zoocodec.methods import REGISTRY, MethodSpec, parse_spec, spec_from_dict
from zoocodec.methods.uniform import Uniform
from zoocodec.registry import Registry, ints

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="'uniform' is registered twice"):
        REGISTRY.register(dataclass(frozen=True)(type("Again", (Uniform,), {"name": "uniform"})))
    assert REGISTRY["uniform"] is Uniform


def test_a_range_for_a_field_that_does_not_exist_is_refused():
    cls = dataclass(frozen=True)(type("Typo", (MethodSpec,), {"name": "typo", "ranges": {"bitz": ints(2, 16)},
                                                              "__annotations__": {"bits": int}, "bits": 8}))
    with pytest.raises(TypeError, match="bitz"):
        Registry("method").register(cls)


def test_ranges_are_checked_and_listed_from_one_declaration(monkeypatch, capsys):
    with pytest.raises(SpecError, match=r"^uniform: bits must be 2\.\.16, got 1$"):
        parse_spec("uniform:bits=1")
    with pytest.raises(SpecError, match="must be 2..16"):
        spec_from_dict({**parse_spec("uniform").to_dict(), "bits": 8.5})  # (a float where an int belongs)
    code, out, _ = run_cli(monkeypatch, capsys, "methods", "--json")
    listed = {m["name"]: m for m in json.loads(out)["methods"]}
    bits = next(p for p in listed["uniform"]["params"] if p["name"] == "bits")
    assert code == 0 and bits["range"] == str(Uniform.ranges["bits"]) == "2..16"
    assert listed["uniform"]["capabilities"] == ["gpu", "steppable", "rounds_nearest", "shared_grid", "gpu_decode"]
    assert listed["lossless"]["capabilities"] == ["lossless", "gpu_decode"]


VERSION_1 = [  # specs as version 1 wrote them (before coders were nested specs)
    ({"method": "uniform", "version": 1, "bits": 6, "step": None, "per_tensor": False, "coder": "ctx"},
     "uniform:bits=6,coder=ctx"),
    ({"method": "dq", "version": 1, "step": 0.01, "bits": None, "lam": 0.2, "iters": 2, "coder": "ans",
      "group_steps": None}, "dq:step=0.01,lam=0.2,coder=ans"),
    ({"method": "kmeans", "version": 1, "k": 8, "coder": "ans"}, "kmeans:k=8"),
    ({"method": "dct", "version": 1, "bits": 3.0, "coder": "ctx"}, "dct:bits=3,coder=ctx"),
    ({"method": "lossless", "version": 1, "coder": "zstd", "level": 3}, "lossless:coder=zstd(level=3)"),
    ({"method": "lossless", "version": 1, "coder": "float", "level": 19}, "lossless:coder=float(planes=rans)"),
    ({"method": "prune", "version": 1, "sparsity": 0.9, "then": "uniform", "per_row": False, "coder": "ans"},
     "prune:sparsity=0.9"),
]


@pytest.mark.parametrize("old, now", VERSION_1, ids=[d["method"] for d, _ in VERSION_1])
def test_older_versions_upgrade(old, now):
    spec = parse_spec(now)
    upgraded = MethodSpec.upgrade(old, 1)  # (the JSON's method picks the class)
    assert type(spec).upgrade(old, 1) == upgraded
    assert upgraded["version"] == spec.version and spec_from_dict(upgraded) == spec == spec_from_dict(old)


def test_only_newer_or_unknown_versions_are_refused():
    d = parse_spec("uniform").to_dict()
    for version, message in [(3, "newer than this zoocodec"), (0, "not a version"), ("2", "not a version"),
                             (None, "not a version"), (True, "not a version")]:
        with pytest.raises(SpecError, match=message):
            spec_from_dict({**d, "version": version})
    with pytest.raises(SpecError, match="newer than this zoocodec"):
        coder_from_dict({"coder": "ans", "version": 2})
    # a class with no declared upgrade from an old version refuses it, naming what it reads
    cls = dataclass(frozen=True)(type("V3", (Uniform,), {"version": 3}))
    with pytest.raises(SpecError, match="version 1 is not supported"):
        cls.upgrade({"method": "uniform", "version": 1}, 1)


def test_allocation_reads_declared_capabilities():
    assert parse_spec("uniform:bits=4").with_step(0.01) == parse_spec("uniform:step=0.01")
    assert parse_spec("dq").with_step(0.01, (0.01, 0.02)).group_steps == (0.01, 0.02)
    with pytest.raises(SpecError, match="takes no group steps"):
        parse_spec("uniform").with_step(0.01, (0.01, 0.02))
    with pytest.raises(SpecError, match="takes no step"):
        parse_spec("kmeans").with_step(0.01)


def test_docs_tables_are_the_generated_ones():
    doc = (ROOT / "docs" / "methods.md").read_text()
    assert catalog.with_tables(doc) == doc, "run: python -m zoocodec.catalog docs/methods.md"
    assert all(f"| `{name}` |" in doc for name in [*REGISTRY, *CODERS])


@pytest.fixture
def toy():
    """tests/methods/toy_sign.py imported (so registered) for one test."""
    sys.path.insert(0, str(HERE))
    try:
        yield importlib.import_module("toy_sign").Sign
    finally:
        sys.path.remove(str(HERE))
        sys.modules.pop("toy_sign", None)
        REGISTRY.unregister("sign")


def test_a_new_method_is_listed_and_covered_with_no_edit_outside_its_file(toy, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "methods", "--json")
    sign = next(m for m in json.loads(out)["methods"] if m["name"] == "sign")
    assert code == 0 and sign["params"][0] == {"name": "dead", "type": "float", "default": 0.0, "range": "in [0, 1]"}
    with pytest.raises(SpecError, match=r"sign: dead must be in \[0, 1\], got 2"):
        parse_spec("sign:dead=2")
    assert "| `sign` |" in catalog.docs_tables()  # the one row the docs then ask for
    # the conformance suite, as CI runs it, with the toy's file on the path and nothing else changed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "toy_sign", "-p", "no:cacheprovider",
                          "-k", "sign", str(HERE / "test_conformance.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    passed = int(run.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 2 * len(dataclasses.fields(toy)) + 10, run.stdout[-500:]
