"""What a coder per tensor saves in an automatic-mode file: its stored symbols coded again under ans, ctx and cabac.

Every tensor of the file whose method codes its levels with one of those coders has its level streams
decoded from the file and encoded again under each (the groups' steps and zero points keep their float
coder; 1-D and lossless tensors, the header and the padding stay as written). The symbols are the file's
own, so the values and the judged loss are the same under every choice. Prints and writes, per tensor
and in all, the bytes under each coder, under the file's choice and under the cheapest, with the CPU
seconds of each coder's encode (resource.getrusage: the whole process, every thread).
    python bench/bench_llm_coders.py FILE.zc [--tag 2026-12-05h]   # bench/results/llm_coders-<tag>.json
`--timing MODEL`: automatic mode's choice per tensor timed both ways on MODEL's own weights under the file's
specs, in this process (CPU seconds, the two ways alternated tensor by tensor): each tensor encoded whole under
each coder (what auto.coder_per_tensor did before 2026-12-05h) against auto._coded_sizes (quantized once, the
side streams coded once, the levels under each coder); the bytes must agree.
"""
from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import numpy as np

from bench_common import RESULTS, coded_tensors, machine

CODERS = ("ans", "ctx", "cabac")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timing(archive, model: str, names: list[str]) -> dict:
    """CPU seconds of the choice per tensor: every coder's whole encode against auto._coded."""
    import dataclasses

    from zoocodec.codecs import parse_coder
    from zoocodec.errors import SpecError
    from zoocodec.eval.evaluate import load_weights
    from zoocodec.pipeline.modelio import to_tensordata
    from zoocodec.tuning.auto import _coded

    weights = load_weights(model)
    spent = {"whole encode per coder": 0.0, "levels per coder": 0.0}
    for i, name in enumerate(names):
        spec, t = archive.plan[name].spec, to_tensordata(name, weights[name])
        whole, levels = {}, {}

        def each_whole():
            for c in CODERS:
                try:
                    o = dataclasses.replace(spec, coder=parse_coder(c))
                    whole[c] = sum(len(v) for v in o.encode(t, recon=False).segments.values())
                except SpecError:
                    continue

        def each_level():
            levels.update({c: size for c, (size, _) in _coded(spec, t, CODERS).items()})
        ways = [("whole encode per coder", each_whole), ("levels per coder", each_level)]
        for way, run in ways[::-1] if i % 2 else ways:
            t0 = cpu()
            run()
            spent[way] += cpu() - t0
        if whole != levels:
            raise SystemExit(f"{name}: {whole} against {levels}")
    return spent


def main() -> None:
    from zoocodec.codecs import parse_coder
    from zoocodec.errors import SpecError
    from zoocodec.pipeline.core import Archive

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--tag", default="2026-12-05h")
    ap.add_argument("--timing", metavar="MODEL", default=None)
    args = ap.parse_args()
    archive = Archive(args.file)
    coders = {c: parse_coder(c) for c in CODERS}
    rows, seconds = [], dict.fromkeys(CODERS, 0.0)
    for name, e, spec, coder, data in coded_tensors(archive, CODERS):
        row = {"tensor": name, "shape": list(e.shape), "written": coder.name,
               "bytes": {"written": sum(len(v) for v in data.values())}}
        shapes = e.side.get("symbols", {})
        levels = [s for s in data if spec.coder_for(s) == coder and s in shapes]  # side streams (steps) as written
        fixed = sum(len(data[s]) for s in data if s not in levels)
        symbols = {s: coder.decode(data[s], tuple(shapes[s]), spec.symbol_dtype(s, e.dtype) or np.int64,
                                   spec.trellis(s, tuple(shapes[s]))) for s in levels}
        for c, other in coders.items():
            t0 = cpu()
            try:
                row["bytes"][c] = fixed + sum(len(spec.code_stream(s, symbols[s], other)[0]) for s in levels)
            except SpecError:  # cabac beyond 2^29
                continue
            seconds[c] += cpu() - t0
        rows.append(row)
        print(f"{name:48s} {row['written']:6s} " + " ".join(f"{c} {row['bytes'].get(c, 0):>10,}" for c in CODERS),
              flush=True)
    total = {k: sum(r["bytes"].get(k, 0) for r in rows) for k in ("written", *CODERS)}
    total["cheapest per tensor"] = sum(min(r["bytes"][c] for c in CODERS if c in r["bytes"]) for r in rows)
    weight_bytes = archive.container.path.stat().st_size - sum(s.length for s in archive.head.files.values())
    out = {"machine": machine(("numpy",)), "file": str(args.file), "weight_bytes": weight_bytes,
           "coded_tensors": len(rows), "bytes": total, "encode_cpu_s": seconds,
           "weight_bytes_with": {k: weight_bytes - total["written"] + v for k, v in total.items()},
           "what": __doc__.split("\n\n")[1].strip(), "tensors": rows}
    if args.timing:
        out["choice_cpu_s"] = timing(archive, args.timing, [r["tensor"] for r in rows])
        print(out["choice_cpu_s"])
    path = RESULTS / f"llm_coders-{args.tag}.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("weight_bytes", "bytes", "encode_cpu_s", "weight_bytes_with")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
