"""A .zc file's overhead beyond its payloads, split by part, and the same payloads rewritten by this writer.

For each file: padding (the zero bytes that put every segment at a 64-byte offset), the header
(zstd-compressed, and its raw JSON) with the compressed cost of each part measured by leaving it
out (tensors' stats; segments with their checksums; methods and side info; meta.auto's
sensitivities; the rest of meta.auto), and the file the current writer makes from the same
payloads and header (`after`: its stats and meta.auto's search trace at float32 precision, its zstd
level by size and share, the trailer right after the header).
`what_if` prices levers not kept, at level 19: meta.auto's sensitivities at float32 precision, and
stats at 4 significant digits.

    python bench/bench_header.py NAME=FILE.zc ... [--out header-TAG]
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import replace
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import RESULTS, machine  # noqa: E402
from zoocodec.container import ALIGN, TRAILER_SIZE, Container, header_level  # noqa: E402
from zoocodec.header import f32, f32s  # noqa: E402


def text(h: dict) -> bytes:
    return json.dumps(h, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def zlen(raw: bytes, level: int) -> int:
    return len(zstandard.ZstdCompressor(level=level).compress(raw))


def without(h: dict, part: str) -> dict:
    """The header JSON `h` less one part."""
    h = json.loads(json.dumps(h))
    auto = h.get("meta", {}).get("auto", {})
    if part == "stats":
        for t in h["tensors"]:
            t.pop("stats", None)
    elif part == "segments":
        for t in h["tensors"]:
            t["segments"] = {}
        h["files"] = {}
    elif part == "methods_side":
        for t in h["tensors"]:
            t["method"], t["side"] = {}, {}
    elif part == "auto_sensitivities":
        auto.pop("sensitivities", None)
    elif part == "auto_rest":
        h["meta"]["auto"] = {"sensitivities": auto["sensitivities"]} if "sensitivities" in auto else {}
    return h


def split(path: Path) -> dict:
    """The file's bytes by kind, and the compressed cost of each header part at levels 12 and 19."""
    with Container.open(path) as c:
        segs = [s for e in c.head.tensors for s in e.segments.values()] + list(c.head.files.values())
        payload = sum(s.length for s in segs)
        size = path.stat().st_size
        _, header_len = struct.unpack_from("<QQ", c._buffer, size - TRAILER_SIZE)
        padding = size - ALIGN - payload - header_len - TRAILER_SIZE
        raw = text(c.header)
        out = {"file_bytes": size, "segments": len(segs), "payload_bytes": payload, "padding_bytes": padding,
               "padding_under_4k_segments": sum(-s.length % ALIGN for s in segs if s.length < 4096),
               "header_bytes": header_len, "header_json_bytes": len(raw), "params": c.head.params,
               "attached_bytes": c.head.attached_bytes,
               "parts": {}}
        for level in (12, 19):
            full = zlen(raw, level)
            out[f"header_level{level}"] = full
            out["parts"][f"level{level}"] = {p: full - zlen(text(without(c.header, p)), level)
                                            for p in ("stats", "segments", "methods_side", "auto_sensitivities",
                                                      "auto_rest")}
        h = json.loads(raw)
        sens = h.get("meta", {}).get("auto", {}).get("sensitivities")
        if sens:
            for k, v in sens.items():
                sens[k] = [f32(x) for x in v]
            out["what_if"] = {"auto_sensitivities_f32": out["header_level19"] - zlen(text(h), 19)}
        h = json.loads(raw)
        for t in h["tensors"]:
            if "stats" in t:
                t["stats"] = {k: v if v is None else float(f"{v:.4g}") for k, v in t["stats"].items()}
        out.setdefault("what_if", {})["stats_4_digits"] = out["header_level19"] - zlen(text(h), 19)
        return out


def repack(src: Path, dst: Path) -> int:
    """`src`'s payloads, in their order, and its header written by this writer; the new file's bytes."""
    with Container.open(src) as c:
        head = c.head
        order = sorted([(s.offset, ("t", i, k)) for i, e in enumerate(head.tensors) for k, s in e.segments.items()]
                       + [(s.offset, ("f", None, k)) for k, s in head.files.items()])
        new: dict = {}
        with Container.create(dst) as w:
            for _, key in order:
                kind, i, k = key
                seg = head.tensors[i].segments[k] if kind == "t" else head.files[k]
                new[key] = w.add_segment(c.segment(k, seg))
            tensors = tuple(replace(e, segments={k: new[("t", i, k)] for k in e.segments})
                            for i, e in enumerate(head.tensors))
            meta = head.meta
            if "search" in meta.get("auto", {}):  # as automatic mode's write now stores its trace
                meta = meta | {"auto": meta["auto"] | {"search": f32s(meta["auto"]["search"])}}
            w.head = replace(head, tensors=tensors, files={k: new[("f", None, k)] for k in head.files}, meta=meta)
    return dst.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="NAME=FILE.zc (NAME: the zoo model and how the file was made)")
    ap.add_argument("--out", default="header-2026-12-05i")
    ap.add_argument("--work", default="/tmp")
    args = ap.parse_args()
    rows = {}
    for item in args.files:
        name, path = item.split("=", 1)
        before = split(Path(path))
        dst = Path(args.work) / f"{name}.repacked.zc"
        after_bytes = repack(Path(path), dst)
        after = split(dst)
        with Container.open(path) as a, Container.open(dst) as b:  # same payloads, same decisions
            assert [e.segments.keys() for e in a.head.tensors] == [e.segments.keys() for e in b.head.tensors]
            assert all(a.segment(k, s) == b.segment(k, t) for ea, eb in zip(a.head.tensors, b.head.tensors, strict=True)
                       for (k, s), t in zip(ea.segments.items(), eb.segments.values(), strict=True))
        p, attached = before["params"], before["attached_bytes"]  # bits/weight as inspect counts them
        rows[name] = {"before": before, "after": after, "saved_bytes": before["file_bytes"] - after_bytes,
                      "bits_per_weight_before": 8 * (before["file_bytes"] - attached) / p,
                      "bits_per_weight_after": 8 * (after_bytes - attached) / p,
                      "level_after": header_level(after["header_json_bytes"], after["payload_bytes"])}
        r = rows[name]
        print(f"{name}: {before['file_bytes']:,} -> {after_bytes:,} bytes ({r['saved_bytes']:,} saved; "
              f"{r['bits_per_weight_before']:.4f} -> {r['bits_per_weight_after']:.4f} bits/weight); padding "
              f"{before['padding_bytes']:,}, header {before['header_bytes']:,} -> {after['header_bytes']:,} "
              f"(JSON {before['header_json_bytes']:,} -> {after['header_json_bytes']:,}); parts at 19 "
              f"{before['parts']['level19']} -> {after['parts']['level19']}", flush=True)
    out = RESULTS / f"{args.out}.json"
    out.write_text(json.dumps({"machine": machine(), "files": {k: v for k, v in
                                                                (i.split("=", 1) for i in args.files)},
                               "rows": rows}, indent=2))
    print(out)


if __name__ == "__main__":
    main()
