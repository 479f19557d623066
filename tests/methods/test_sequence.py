"""The sequence method: every mode round-trips the stacked members, and reading one member
decodes exactly what the whole decode gives, from as few streams as the mode allows."""
import numpy as np
import pytest

from support import roundtrip
from zoocodec.errors import ContainerError, SpecError
from zoocodec.methods import TensorData, parse_spec


def members(n: int = 5, seed: int = 0) -> TensorData:
    """A real-looking layer and n - 1 steps that move a tenth of its weights a little."""
    g = np.random.default_rng(seed)
    w = [g.laplace(0, 0.05, (24, 40)).astype(np.float32)]
    for _ in range(n - 1):
        w.append(w[-1] + (g.random(w[-1].shape) < 0.1) * g.normal(0, 0.002, w[-1].shape).astype(np.float32))
    return TensorData("w", "float32", np.stack(w))


SPECS = [
    "sequence:mode=delta,keyint=2,then=uniform:bits=8",
    "sequence:mode=independent,then=uniform:step=0.001;coder=ctx",
    "sequence:mode=independent,then=lossless",
    "sequence:mode=delta,then=uniform:bits=6",
]


@pytest.mark.parametrize(
    "text", SPECS + ["sequence:mode=video,keyint=3,then=uniform:bits=8;coder=video-h264(preset=ultrafast)"]
)
def test_members_round_trip_and_read_alone(text):
    if "video" in text:
        pytest.importorskip("av")
    t = members()
    spec = parse_spec(text)
    enc, _ = roundtrip(text, t)
    segments = {k: memoryview(v) for k, v in enc.segments.items()}
    for m in (4, 0, 2):
        alone = spec.decode_member(enc.side, segments, t.array.shape[1:], t.dtype, m)
        assert alone.tobytes() == enc.recon[m].tobytes()
    if "lossless" in text:
        assert enc.recon.tobytes() == t.array.tobytes()
    if spec.mode == "delta" and spec.keyint:  # member 1 needs only members 0 and 1
        part = {k: v for k, v in segments.items() if k in ("m0", "m1", "steps")}
        assert spec.decode_member(enc.side, part, t.array.shape[1:], t.dtype, 1).tobytes() == enc.recon[1].tobytes()


def test_delta_beats_independent_on_related_members():
    t = members()
    def size(text):
        return sum(len(v) for v in parse_spec(text).encode(t).segments.values())

    assert size("sequence:mode=delta,then=uniform:bits=8") < 0.6 * size("sequence:mode=independent,then=uniform:bits=8")


@pytest.mark.parametrize("text", ["sequence:mode=film", "sequence:keyint=-1", "sequence:mode=video,then=uniform",
                                  "sequence:mode=delta,then=kmeans", "sequence:then=sequence"])
def test_bad_specs(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_damaged_side_info():
    t = members()
    spec = parse_spec(SPECS[0])
    enc = spec.encode(t)
    segs = {k: memoryview(v) for k, v in enc.segments.items()}
    for side, s in [
        ({**enc.side, "symbols": None}, segs),
        (enc.side, {k: v for k, v in segs.items() if k != "m2"}),
        ({**enc.side, "rows": 3}, segs),
        ({**enc.side, "symbols": {**enc.side["symbols"], "m2": [2, 2]}}, segs),
    ]:  # m3 needs m2 and m3 only
        with pytest.raises(ContainerError):
            spec.decode_member(side, s, t.array.shape[1:], t.dtype, 3)
