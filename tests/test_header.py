"""The typed header (zoocodec/header.py): what the writers build is what the file holds and
what a reader parses back; what it refuses is refused in one line."""
import json

import pytest

import zoocodec
from conftest import laplace_model
from support import Forge, run_cli
from zoocodec.container import Container
from zoocodec.errors import ContainerError
from zoocodec.header import Header, Segment
from zoocodec.pipeline.sequence import compress_seq


def _files(tmp_path):
    model = laplace_model()
    zoocodec.compress(model, tmp_path / "one.zc", "uniform:bits=6", overrides={"*bias*": "lossless"}, min_size=64,
                      meta={"note": "x"})
    compress_seq([laplace_model(1), laplace_model(2)], tmp_path / "seq.zc", "uniform:bits=8", "delta", min_size=64)
    return [tmp_path / "one.zc", tmp_path / "seq.zc"]


def test_the_file_holds_what_the_model_writes_and_reads_back(tmp_path):
    for path in _files(tmp_path):
        with Container.open(path) as c:
            assert json.dumps(c.head.to_json(), sort_keys=True) == json.dumps(c.header, sort_keys=True)
            again = Header.from_json(json.loads(json.dumps(c.head.to_json())), c.version, 1 << 62, 64)
            assert again == c.head
            assert all(isinstance(s, Segment) for e in c.head.tensors for s in e.segments.values())
            assert (c.head.sequence is None) == (path.name == "one.zc")


def test_inspect_reads_the_model(tmp_path):
    one, _ = _files(tmp_path)
    info = zoocodec.inspect(one)
    with Container.open(one) as c:
        h = c.head
    assert info["params"] == h.params and info["bytes_in"] == h.raw_bytes and info["meta"] == {"note": "x"}
    rows = {r["name"]: r for r in info["tensors"]}
    for e in h.tensors:
        assert rows[e.name]["bytes"] == e.stored_bytes and rows[e.name]["lossless"] == e.spec.lossless


def test_a_sequence_tensor_coded_by_another_method_is_refused(tmp_path, monkeypatch, capsys):
    _, seq = _files(tmp_path)
    f = Forge(seq.read_bytes())
    f.header["tensors"][0]["method"] = {"method": "lossless", "version": 2,
                                        "coder": {"coder": "float", "version": 1}}
    code, _, err = run_cli(monkeypatch, capsys, "inspect", f.write(tmp_path / "bad.zc"))
    assert code == 2 and err.count("\n") == 1 and "not 'sequence'" in err, err


@pytest.mark.parametrize("field,value", [("zoocodec", 3), ("options", []), ("aliases", {"a": "nowhere"})])
def test_top_level_fields_are_checked(tmp_path, field, value):
    one, _ = _files(tmp_path)
    f = Forge(one.read_bytes())
    f.header[field] = value
    with pytest.raises(ContainerError, match="invalid header"):
        zoocodec.decompress(f.write(tmp_path / "bad.zc"))


def test_nesting_depth_is_the_parsers_with_brackets_quotes_and_escapes_in_strings():
    """schema._depth (checked before json.loads recurses) counts what the parser nests: strings
    full of brackets, quotes and backslashes do not move it."""
    import random

    from zoocodec.schema import _depth

    def depth(v) -> int:
        inner = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        return 0 if inner is None else 1 + max(map(depth, inner), default=0)

    g = random.Random(1)

    def text() -> str:
        return "".join(g.choice('[]{}"\\ab\n/u\u00e9') for _ in range(g.randint(0, 8)))

    def doc(d: int):
        r = g.random()
        if d > 6 or r < 0.3:
            return text()
        if r < 0.65:
            return [doc(d + 1) for _ in range(g.randint(0, 3))]
        return {text(): doc(d + 1) for _ in range(g.randint(0, 3))}

    for _ in range(3000):
        v = doc(0)
        assert _depth(json.dumps(v, ensure_ascii=g.random() < 0.5, indent=g.choice([None, 1])).encode()) == depth(v)


def test_itemsize_is_the_native_dtypes():
    """header.ITEMSIZE (what a load sizes its outputs and budget with, no NumPy dtype a tensor)."""
    from zoocodec.header import DTYPES, ITEMSIZE
    from zoocodec.methods.lossless import native_dtype

    assert set(ITEMSIZE) == set(DTYPES) and all(native_dtype(d).itemsize == ITEMSIZE[d] for d in DTYPES)


def test_stats_are_stored_at_float32_precision_and_show_the_same_digits(tmp_path):
    """A tensor's stats are stored as the shortest decimal of their float32 (6-9 digits, not float64's 17,
    which barely compress): they read back as the same float32, and inspect's SQNR shows the same digits."""
    import numpy as np

    from zoocodec.cli.render import sqnr
    from zoocodec.header import F32_MAX, SQNR_SHOWN, Stats, f32

    g = np.random.default_rng(0)
    for x in np.concatenate([g.uniform(-5, 90, 5000), 10.0 ** g.uniform(-40, 38, 5000)]).tolist():
        y = f32(x)
        assert np.float32(y) == np.float32(x) and len(repr(y)) <= len(repr(float(np.float32(x))))
        assert sqnr(f32(x, SQNR_SHOWN), False) == sqnr(x, False)
    assert f32(81.64999999, SQNR_SHOWN) == 81.64999999 and f32(81.64999999) == 81.65  # shown 81.6, not 81.7
    assert f32(None) is None and f32(1e300) == 1e300 and f32(-F32_MAX * 10) == -F32_MAX * 10  # float64 beyond
    out = tmp_path / "m.zc"
    zoocodec.compress(laplace_model(), out, "uniform:bits=6", min_size=64)
    with Container.open(out) as c:
        stored = [t["stats"] for t in c.header["tensors"] if t["stats"]["sqnr_db"] is not None]
    assert stored and all(len(repr(v)) <= 16 for s in stored for v in s.values())  # (float64 reprs: 17-24)
    assert Stats.from_json(stored[0], "it").to_json() == stored[0]  # stored again unchanged
