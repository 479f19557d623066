"""Helpers shared by the method tests: the float-array strategy and the exact round trip."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.methods import Encoded, TensorData, parse_spec

floats = hnp.arrays(
    st.sampled_from(["float32", "float16"]),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=9),
    elements=st.floats(-100, 100, width=16),
)


def roundtrip(text: str, t: TensorData) -> tuple[Encoded, np.ndarray]:
    """Encode and decode `t`; the decoder must return byte for byte what the encoder reported.

    Returns the Encoded and the decoded values as float64.
    """
    spec = parse_spec(text)
    enc = spec.encode(t)
    back = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    assert back.dtype == t.array.dtype and back.shape == t.array.shape
    assert back.tobytes() == enc.recon.tobytes()
    return enc, TensorData(t.name, t.dtype, back).float64()


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `zoocodec ARGS` in this process: (exit status, stdout, stderr)."""
    import sys

    from zoocodec.cli import main

    monkeypatch.setattr(sys, "argv", ["zoocodec", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err
