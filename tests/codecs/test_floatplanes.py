import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.codecs import floatplanes
from zoocodec.errors import ContainerError


@given(hnp.arrays(st.sampled_from([np.float32, np.float16, np.uint16]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=20)))
@settings(max_examples=150, deadline=None)
def test_bit_exact_round_trip(a):
    coded = floatplanes.encode(a)
    back = floatplanes.decode(coded, a.size, a.dtype)
    assert back.tobytes() == a.tobytes()  # NaN payloads and signed zeros included


def test_trained_like_weights_compress():
    w = np.random.default_rng(0).laplace(0, 0.03, 200_000).astype(np.float32)
    coded = floatplanes.encode(w)
    assert len(coded) < 0.9 * w.nbytes


def test_truncated_payload_raises():
    w = np.random.default_rng(0).laplace(0, 0.03, 10_000).astype(np.float32)
    coded = floatplanes.encode(w)
    for cut in (0, 3, len(coded) // 3, len(coded) - 1):
        with pytest.raises(ContainerError):
            floatplanes.decode(coded[:cut], w.size, w.dtype)
