"""What cutting streams into independent substreams (2^16 symbols, the unit of parallel
decoding) costs in size, against one stream per tensor, on mnist-cnn and minilm: the
`ans` coder on uniform 8-bit symbols, and the fp32 exponent plane of the float coder.

    python bench/bench_substreams.py
"""
from __future__ import annotations

import numpy as np

from bench_common import machine, save
from zoocodec.codecs import floatplanes, native
from zoocodec.methods import parse_spec
from zoocodec.pipeline import modelio, zoo

ONE = 1 << 40  # a substream longer than any tensor: one stream


def main() -> None:
    rows = []
    spec = parse_spec("uniform:bits=8")
    for model in ("mnist-cnn", "minilm"):
        sizes = {"ans_substreams": 0, "ans_one_stream": 0, "exponent_substreams": 0, "exponent_one_stream": 0}
        for t in modelio.open_model(zoo.resolve(model)).tensors():
            if t.dtype != "float32" or t.array.size < 4096:
                continue
            s = np.asarray(next(iter(spec.quantize(t, np).symbols.values()))).ravel().astype(np.int64)
            lo, size = int(s.min()), int(s.max() - s.min()) + 1
            idx = (s - lo).astype(np.uint8 if size <= 256 else np.uint16)
            sizes["ans_substreams"] += len(native.rans_encode(idx, size))
            sizes["ans_one_stream"] += len(native.rans_encode(idx, size, chunk=ONE))
            exp = native.engine().float_split(t.array.view(np.uint32).ravel(), 0)[0]
            kw = {"max_bits": floatplanes.PRECISION}
            sizes["exponent_substreams"] += len(native.rans_encode(exp, 256, **kw))
            sizes["exponent_one_stream"] += len(native.rans_encode(exp, 256, chunk=ONE, **kw))
        rows.append({"model": model, **sizes,
                     "ans_cost_pct": 100 * (sizes["ans_substreams"] / sizes["ans_one_stream"] - 1),
                     "exponent_cost_pct": 100 * (sizes["exponent_substreams"] / sizes["exponent_one_stream"] - 1)})
        print(rows[-1])
    print(f"saved {save('substreams', {'machine': machine(('numpy',)), 'substream': native.SUBSTREAM, 'rows': rows})}")


if __name__ == "__main__":
    main()
