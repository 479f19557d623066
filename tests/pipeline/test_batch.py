"""Batched compress (pipeline/batch.py): same-shape groups quantized together and coded on
threads write the bytes of coding one tensor at a time, in the model's order."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import zoocodec
from conformance import same
from conftest import laplace_model, zoo_path
from zoocodec.errors import SpecError
from zoocodec.methods import REGISTRY, parse_spec
from zoocodec.pipeline import batch
from zoocodec.pipeline.core import load
from zoocodec.pipeline.policy import DEFAULT_MIN_SIZE, DEFAULT_SPEC, Overrides, choose_spec


def shapes_model() -> dict[str, torch.Tensor]:
    """Interleaved shapes and dtypes, so groups reorder tensors inside a window."""
    g = np.random.default_rng(5)
    m = laplace_model()
    for i in range(5):
        m[f"l{i}.q.weight"] = torch.from_numpy(g.laplace(0, 0.03, (48, 64)).astype(np.float32))
        up = torch.from_numpy(g.laplace(0, 0.03, (96, 64)).astype(np.float32))
        m[f"l{i}.up.weight"] = up.to(torch.bfloat16) if i % 2 else up
    m["out.weight"] = torch.from_numpy(g.laplace(0, 0.03, (64, 200)).astype(np.float32))
    m["wide.weight"] = torch.from_numpy(g.laplace(0, 0.03, (3, 3000)).astype(np.float32))  # rdoq/dq: fewer rows
    return m


# every method whose tensors group (batch_key, on a GPU or on the CPU), in each mode it declares
SPECS = [text for name, cls in sorted(REGISTRY.items()) if cls.gpu or cls.batch_on_cpu
         for text in (name, *cls.examples)]


@pytest.mark.parametrize("spec", SPECS)
def test_batched_bytes_equal_one_tensor_at_a_time(spec, tmp_path):
    m = shapes_model()
    one = zoocodec.compress(m, tmp_path / "one.zc", spec, min_size=100, batch=False)
    many = zoocodec.compress(m, tmp_path / "many.zc", spec, min_size=100)
    assert (tmp_path / "one.zc").read_bytes() == (tmp_path / "many.zc").read_bytes()
    assert [t.name for t in many.tensors] == list(m) == [t.name for t in one.tensors]
    assert [(t.method, t.mse, t.sqnr_db) for t in one.tensors] == [(t.method, t.mse, t.sqnr_db) for t in many.tensors]


# (quantize_many equal to quantize, for every method: tests/methods/test_conformance.py)


def test_minilm_groups(minilm_path):
    """minilm under the default spec: the 30 matrices with 384-long rows (q, k, v, o, up)
    are one group on a GPU (on the CPU, uniform quantizes one tensor at a time)."""
    spec = parse_spec(DEFAULT_SPEC)
    tensors = list(load(minilm_path).tensors())
    groups = batch._groups([(t, choose_spec(t, spec, Overrides(), DEFAULT_MIN_SIZE, False, floor=False))
                            for t in tensors], gpu=True)
    largest = max(groups, key=lambda g: len(g[1]))[1]
    assert len(largest) >= 30 and {tensors[i].array.shape[1] for i in largest} == {384}


def test_mnist_bytes(tmp_path, mnist_path):
    zoocodec.compress(mnist_path, tmp_path / "one.zc", batch=False)
    zoocodec.compress(mnist_path, tmp_path / "many.zc")
    assert (tmp_path / "one.zc").read_bytes() == (tmp_path / "many.zc").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name,spec", [("minilm", DEFAULT_SPEC), ("minilm", "uniform:step=0.002"),
                                       ("minilm", "kmeans:k=16,per=channel"), ("minilm", "rdoq:bits=6"),
                                       ("mpnet", DEFAULT_SPEC), ("mpnet", "kmeans:k=16")])
def test_zoo_bytes(name, spec, tmp_path):
    path = zoo_path(name)
    zoocodec.compress(path, tmp_path / "one.zc", spec, batch=False)
    zoocodec.compress(path, tmp_path / "many.zc", spec)
    assert (tmp_path / "one.zc").read_bytes() == (tmp_path / "many.zc").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("spec", [DEFAULT_SPEC, "uniform:bits=4,per_tensor=true", "kmeans:k=16",
                                  "kmeans:k=16,per=channel"])
def test_minilm_quantize_many(spec, minilm_path):
    """minilm's groups (as a GPU forms them) quantized together with NumPy: quantize()'s results."""
    s = parse_spec(spec)
    ts = [t for t in load(minilm_path).tensors() if t.is_float and t.array.ndim >= 2]
    for _, members in batch._groups([(t, s) for t in ts], gpu=True):
        group = [ts[i] for i in members]
        for t, q in zip(group, s.quantize_many(group), strict=True):
            assert same(q, s.quantize(t)), t.name


@pytest.mark.slow
def test_minilm_attention_dq_bytes(tmp_path, minilm_path):
    """dq on minilm's 24 attention matrices (384x384): one trellis pass over all of them, the
    bytes of one at a time."""
    m = {t.name: torch.from_numpy(t.array) for t in load(minilm_path).tensors()
         if "attention" in t.name and t.array.shape == (384, 384)}
    assert len(m) == 24
    zoocodec.compress(m, tmp_path / "one.zc", "dq:bits=6", batch=False)
    zoocodec.compress(m, tmp_path / "many.zc", "dq:bits=6")
    assert (tmp_path / "one.zc").read_bytes() == (tmp_path / "many.zc").read_bytes()


def test_windows_keep_order_and_bound(tmp_path):
    """A window of ~1 tensor still yields every tensor once, in order; results are those of run()."""
    m = shapes_model()
    ts = list(load(m).tensors())
    spec = parse_spec("uniform:bits=6")
    seen = list(batch.run(iter(ts), lambda t: spec, lambda t, s, q: (t.name, s.code(t, q).segments),
                          window=1, threads=3))
    alone = [(t.name, spec.encode(t).segments) for t in ts]
    assert seen == alone


@pytest.mark.parametrize("threads", [0, 2])
def test_results_come_as_chunks_finish(threads, monkeypatch):
    """dq on 12 same-shape tensors of one window, quantized 2 tensors (chunk) at a time: the
    first result comes after the first chunk, not after the window (inline coding), and the
    results are those of one tensor at a time, in order."""
    g = np.random.default_rng(1)
    ts = list(load({f"l{i}.weight": torch.from_numpy(g.laplace(0, 0.03, (32, 64)).astype(np.float32))
                    for i in range(12)}).tensors())
    spec = parse_spec("dq:bits=6")
    calls = []
    real = type(spec).quantize_many
    monkeypatch.setattr(type(spec), "quantize_many", lambda self, group, xp=np, recon=True: calls.append(len(group))
                        or real(self, group, xp))
    results = batch.run(iter(ts), lambda t: spec, lambda t, s, q: (t.name, s.code(t, q).segments),
                        threads=threads, chunk=2 * 32 * 64)
    first = next(results)
    if not threads:
        assert calls == [2]
    seen = [first, *results]
    assert calls == [2] * 6
    assert seen == [(t.name, spec.encode(t).segments) for t in ts]


def test_cpu_chunks_bound_a_group():
    """On the CPU a group is cut into runs of about CPU_CHUNK weights (at least one tensor)."""
    items = [(t, None) for t in load({f"l{i}": torch.zeros(512, 1024) for i in range(9)}).tensors()]
    parts = list(batch._chunks(list(range(9)), items, batch.CPU_CHUNK))
    assert [len(p) for p in parts] == [2, 2, 2, 2, 1] and sum(parts, []) == list(range(9))
    assert list(batch._chunks([0, 1], [(t, None) for t in load({"big": torch.zeros(2048, 1024), "b": torch.zeros(4, 4)})
                                       .tensors()], batch.CPU_CHUNK)) == [[0], [1]]
    assert list(batch._chunks(list(range(9)), items, 0)) == [list(range(9))]


def test_errors_reach_the_caller_and_leave_no_file(tmp_path):
    m = shapes_model()
    m["l3.q.weight"][0, 0] = 1e6  # its centroid overflows float16: raised while its group quantizes
    with pytest.raises(SpecError, match="l3.q.weight"):
        zoocodec.compress(m, tmp_path / "m.zc", "kmeans:k=4,codebook=float16", min_size=100)
    assert not (tmp_path / "m.zc").exists()

    def finish(t, spec, q):  # raised on a worker thread
        if t.name == "l2.up.weight":
            raise SpecError("coding failed")
        return t.name

    ts = list(load(shapes_model()).tensors())
    spec = parse_spec("uniform:bits=6")
    with pytest.raises(SpecError, match="coding failed"):
        list(batch.run(iter(ts), lambda t: spec, finish, threads=2))
