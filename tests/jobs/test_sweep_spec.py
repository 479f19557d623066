"""Sweep specs: expansion, deterministic ids, and bad specs rejected with their line."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zoocodec.errors import SpecError
from zoocodec.jobs import spec as sweep_spec

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_file({"fc.weight": torch.randn(64, 96, generator=g), "fc.bias": torch.randn(64, generator=g)}, path)
    return path


def test_grid_expands_to_every_combination(tmp_path, tiny):
    s = sweep_spec.load(write(tmp_path, """
        name: grid
        models: [tiny.safetensors]
        methods:
          - lossless
          - method: uniform
            params: {bits: [4, 6, 8], per_tensor: [false, true]}
    """))
    assert s.name == "grid" and s.out == Path("results/grid")
    assert len(s.items) == 1 + 3 * 2
    assert {i.method for i in s.items} >= {"uniform:bits=4,per_tensor=True,coder=ans", "lossless:coder=float"}
    assert all(i.model_path == str(tiny.resolve()) for i in s.items)
    assert len({i.work_id for i in s.items}) == len(s.items)


def test_ids_are_deterministic_and_follow_the_model_content(tmp_path, tiny):
    text = "models: [tiny.safetensors]\nmethods: ['uniform:bits=6']\n"
    first = sweep_spec.load(write(tmp_path, text)).items[0].work_id
    assert sweep_spec.load(write(tmp_path, text)).items[0].work_id == first
    # the same item written differently is the same work
    same = sweep_spec.load(
        write(tmp_path, "models: [tiny.safetensors]\nmethods:\n  - method: uniform\n    params: {bits: 6}\n")
    )
    assert same.items[0].work_id == first
    other = sweep_spec.load(write(tmp_path, "models: [tiny.safetensors]\nmethods: ['uniform:bits=5']\n"))
    assert other.items[0].work_id != first
    save_file({"fc.weight": torch.zeros(64, 96), "fc.bias": torch.zeros(64)}, tiny)  # new weights: new work
    assert sweep_spec.load(write(tmp_path, text)).items[0].work_id != first


@pytest.mark.parametrize("body, line, words", [
    ("models: [tiny.safetensors, no-such-model]\nmethods: [uniform]\n", 1, "unknown model 'no-such-model'"),
    ("models: [tiny.safetensors]\nmethods:\n  - lossless\n  - wavelet:bits=3\n", 4, "unknown method 'wavelet'"),
    ("models: [tiny.safetensors]\nmethods:\n  - method: uniform\n    params:\n      bitz: [4]\n", 5,
     "unknown key 'bitz' in the params of uniform"),
    ("models: [tiny.safetensors]\nmethods:\n  - method: uniform\n    params:\n      bits: [4,\n        99]\n", 6,
     "bits must be 2..16"),
    ("models: [tiny.safetensors]\nmethods: ['uniform:bits=six']\n", 2, "not a valid"),
    ("models: [tiny.safetensors]\nmethods: [uniform]\nmax_retries: -1\n", 3, "max_retries"),
    ("models: [tiny.safetensors]\nmethod: [uniform]\n", 2, "unknown key 'method'"),
    ("models: [missing/model.pt]\nmethods: [uniform]\n", 1, "does not exist"),
    ("models: [tiny.safetensors]\nmethods:\n  - method: uniform\n    overrides: {'re:(': 'uniform:bits=8'}\n", 4,
     "bad override pattern"),
    ("models: [tiny.safetensors]\nmethods: [uniform]\nbudgets: [1, -2]\n", 3, "entry 2 of budgets must be >= 0"),
    ("models: tiny.safetensors\nmethods: [uniform]\n", 1, "models must be a list"),
    ("models: [tiny.safetensors]\nmethods: [uniform]\ntasks: some\n", 3, "tasks must be 'all' or a list"),
    ("models:\n  - model: tiny.safetensors\nmethods: [uniform]\n", 2, "a model entry needs 'inputs: PATH'"),
    ("models:\n  - model: tiny.safetensors\n    inputs: nowhere.npy\nmethods: [uniform]\n", 3, "do not exist"),
    ("models:\n  - model: mnist-cnn\n    inputs: tiny.safetensors\nmethods: [uniform]\n", 2, "is a zoo model"),
    ("models:\n  - model: tiny.safetensors\n    inputs: tiny.safetensors\n    module: nofactory\nmethods: [uniform]\n",
     4, "write package.module:factory"),
    ("models:\n  - model: tiny.safetensors\n    inputs: tiny.safetensors\n    output: probs\nmethods: [uniform]\n",
     4, "the output of model entry 1"),
    ("models:\n  - model: tiny.safetensors\n    input: x.npy\nmethods: [uniform]\n", 3, "unknown key 'input'"),
])
def test_bad_specs_name_the_line(tmp_path, tiny, body, line, words):
    path = write(tmp_path, body)
    with pytest.raises(SpecError, match=words) as e:
        sweep_spec.load(path)
    assert f"{path}:{line}:" in str(e.value)


def test_models_outside_the_zoo_name_their_inputs(tmp_path, tiny):
    """`inputs:` per model: the item is judged on them (by content: new inputs are new work), not on zoo tasks."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((4, 96), np.float32))
    text = """
        models:
          - mnist-cnn
          - model: tiny.safetensors
            inputs: x.npy
            module: mynets:make
            output: values
        methods: [uniform]
        tasks: [digits]
    """
    s = sweep_spec.load(write(tmp_path, text))
    zoo_item, outside = s.items
    assert zoo_item.tasks == ("digits",) and zoo_item.judged_on is None
    on = outside.judged_on
    assert outside.tasks == () and outside.evaluated and on.path == str((tmp_path / "x.npy").resolve())
    assert (on.module, on.output) == ("mynets:make", "values")
    np.save(tmp_path / "x.npy", np.ones((4, 96), np.float32))
    assert sweep_spec.load(write(tmp_path, text)).items[1].work_id != outside.work_id
    plain = sweep_spec.load(write(tmp_path, "models: [tiny.safetensors]\nmethods: [uniform]\n")).items[0]
    assert plain.work_id != outside.work_id and not plain.evaluated


def test_the_module_to_ship_is_found_beside_the_spec_or_on_the_path(tmp_path, tiny, monkeypatch):
    """`module:`'s top-level package (a folder) or one-file module is what the sweep ships to the
    workers; installed code (standard library, site-packages, zoocodec) and names found nowhere
    are left to the workers' environment. Nothing is imported to find it."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("raise RuntimeError('imported')")
    (tmp_path / "pkg" / "sub" / "nets.py").write_text("")
    (tmp_path / "onefile.py").write_text("raise RuntimeError('imported')")
    found = sweep_spec.module_source
    assert found("pkg.sub.nets:make", tmp_path) == str((tmp_path / "pkg").resolve())
    assert found("onefile:make", tmp_path) == str((tmp_path / "onefile.py").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert found("pkg.sub.nets:make", elsewhere) is None
    monkeypatch.syspath_prepend(str(tmp_path))  # on this process's path instead
    assert found("pkg.sub.nets:make", elsewhere) == str((tmp_path / "pkg").resolve())
    for installed in ("json:loads", "numpy.random:default_rng", "zoocodec.eval.anymodel:factory", "nowhere:make"):
        assert found(installed, tmp_path) is None, installed
    (tmp_path / "x.npy").write_bytes(b"")
    text = "models:\n  - model: tiny.safetensors\n    inputs: x.npy\n    module: onefile:make\nmethods: [uniform]\n"
    item = sweep_spec.load(write(tmp_path, text)).items[0]
    assert item.judged_on.module_source == str((tmp_path / "onefile.py").resolve())


def test_unknown_evaluation_task_is_rejected(tmp_path, tiny):
    with pytest.raises(SpecError, match=r"sweep.yaml:3: .*(unknown evaluation task 'telepathy'|lacks)"):
        sweep_spec.load(write(tmp_path, "models: [tiny.safetensors]\nmethods: [uniform]\ntasks: [telepathy]\n"))


def test_bundled_specs_load():
    for name in ("sweeps/quick.yaml", "zoocodec/jobs/nightly.yaml"):
        s = sweep_spec.load(ROOT / name)
        assert s.items and {i.model for i in s.items} >= {"mnist-cnn"}


def test_short_method_keeps_only_what_differs_from_the_defaults():
    from zoocodec.methods import parse_spec

    assert sweep_spec.short_method(parse_spec("uniform:bits=6").to_dict()) == "uniform:bits=6"
    assert sweep_spec.short_method(parse_spec("lossless").to_dict()) == "lossless"
    assert sweep_spec.short_method(parse_spec("dq:coder=ans").to_dict()) == "dq:bits=8,coder=ans"
    assert (
        sweep_spec.short_method({"method": "uniform", "version": 1, "coder": "ans"}) == "uniform:bits=8"
    )  # an old row, upgraded


def test_the_schema_comes_from_the_registry_and_accepts_the_shipped_specs():
    """Structure is checked by JSON schema (jsonschema), generated from the method registry."""
    import jsonschema
    import yaml

    from zoocodec.methods import REGISTRY

    schema = sweep_spec.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in [*ROOT.glob("sweeps/*.yaml"), ROOT / "zoocodec/jobs/nightly.yaml"]:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    entry = schema["properties"]["methods"]["items"]["then"]
    assert entry["properties"]["method"]["enum"] == sorted(REGISTRY)
