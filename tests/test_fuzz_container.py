"""Structure-aware fuzzing of .zc files: forged headers and payloads, every checksum recomputed.

Each case takes a real container, applies 1-4 forgeries (a header field set to a hostile
value or removed, an attached file or shard renamed to a path, a shape inflated over a
tiny payload, a payload replaced by a zstd bomb, garbage or a constant stream, payloads
swapped) and runs `zoocodec decompress` (or inspect, decompress-seq) in this process under
`--max-memory 256M`. It must end with exit status 2 and one line, or exit 0 with a model
whose tensors are those the header claims; nothing may appear outside the output folder;
the peak resident memory of the run may not pass the budget. The same forgeries also go through the
GPU decoder's host half (kernels/decode.jobs: the staging copy, its checks and every parser), which
must end in ZoocodecError or in jobs reading only staged bytes.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, seed, settings, strategies as st
from safetensors.torch import load_file, save_file

import zoocodec
from support import Forge, host_memory
from zoocodec.codecs import ans
from zoocodec.codecs.wire import put_svarint, put_uvarint
from zoocodec.pipeline.sequence import compress_seq

BUDGET = 256 << 20
BATCH = 500
COUNTS: Counter = Counter()


# ---- the real containers the forgeries start from -------------------------------------------------
@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("bases")
    g = torch.Generator().manual_seed(0)
    small = {"w": torch.randn(64, 80, generator=g), "z": torch.zeros(48, 96), "b": torch.randn(80, generator=g),
             "h": torch.randn(32, 160, generator=g).half()}
    zoocodec.compress(small, d / "uniform.zc", "uniform:bits=8", min_size=1000)
    zoocodec.compress(small, d / "kmeans.zc", "kmeans:k=16", overrides={"h": "lossless:coder=zstd"}, min_size=1000)
    zoocodec.compress(small, d / "float.zc", "lossless", min_size=1000)
    # the native pass's other jobs: ctx contexts (row scales make them pay), dq walks, group-wise steps, cabac
    rows = torch.rand(96, 1, generator=g) * 3
    shaped = {"w": torch.randn(96, 128, generator=g) * rows, "c": torch.randn(16, 8, 3, 3, generator=g)}
    zoocodec.compress(shaped, d / "dqctx.zc", "dq:step=0.02,coder=ctx", min_size=1000)
    zoocodec.compress(shaped, d / "groups.zc", "uniform:bits=4,group=32,zero=true,coder=ctx", min_size=1000)
    zoocodec.compress(shaped, d / "dqcabac.zc", "dq:step=0.02,coder=cabac", min_size=1000)
    hf = d / "hf"
    hf.mkdir()
    save_file({"a": torch.randn(64, 80, generator=g)}, hf / "model-1.safetensors")
    save_file({"b": torch.randn(32, 80, generator=g)}, hf / "model-2.safetensors")
    (hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors",
                                                                                "b": "model-2.safetensors"}}))
    (hf / "config.json").write_text('{"hidden_size": 80}')
    (hf / "1_Pooling").mkdir()
    (hf / "1_Pooling" / "config.json").write_text("{}")
    zoocodec.compress(hf, d / "hf.zc", "uniform:step=0.01")
    members = [{k: v + 0.01 * i for k, v in small.items() if k != "h"} for i in range(3)]
    compress_seq(members, d / "seq.zc", "uniform:bits=8", "delta", min_size=1000)
    return {p.stem: p.read_bytes() for p in d.glob("*.zc")}


# ---- hostile values and payloads -------------------------------------------------------------------
NAMES = ["../x", "../../x", "ESCAPE/abs", "", ".", "..", "a/../../x", "a\x00b", "a\\..\\x", "/", "a//b", "x" * 300,
         "ok.json", "sub/ok.json", "model.safetensors", "config.json", "1_Pooling", "m.safetensors", "../x.safetensors",
         "ESCAPE/abs.safetensors", "sub/../../x.safetensors"]
INTS = [0, 1, -1, 7, 255, 256, 2**16, 2**24, 2**31, 2**32, 2**40, 2**62, 2**63, 2**64]


def zstd_claiming(size: int) -> bytes:
    return b"\x28\xb5\x2f\xfd" + bytes([0xC0, 0x50]) + size.to_bytes(8, "little") + bytes([0x83, 0, 0, 0x20])


@functools.cache
def constant_ans(n: int) -> bytes:
    """An ANS payload of `n` copies of one symbol (of 2**20 when more are claimed)."""
    return ans.encode(np.zeros(min(n, 1 << 20), dtype=np.int8))


def packed(n: int, frame: bytes) -> bytes:
    out = bytearray([1])
    put_uvarint(out, n)
    put_svarint(out, 0)
    out.append(1)
    return bytes(out) + frame


values = st.one_of(
    st.sampled_from(INTS), st.integers(), st.floats(), st.booleans(), st.none(), st.sampled_from(NAMES),
    st.text(max_size=12), st.lists(st.sampled_from(INTS), max_size=4), st.just("DEEP"),
    st.dictionaries(st.sampled_from(["method", "version", "k", "bits", "step", "coder", "format", "shards"]),
                    st.sampled_from(INTS + NAMES[:3]), max_size=3),
)
sizes = st.sampled_from([0, 1, 16, 4096, 1 << 20, 1 << 28, 1 << 34, 1 << 40, 1 << 62])
payloads = st.one_of(
    st.binary(max_size=64),
    sizes.map(zstd_claiming),
    sizes.map(constant_ans),
    st.tuples(sizes, sizes).map(lambda t: packed(t[0], zstd_claiming(t[1]))),
    sizes.map(lambda n: zstandard.ZstdCompressor().compress(b"\0" * min(n, 1 << 22))),
)


def paths(h) -> list[list]:
    """Every path (keys and indices) into the header's JSON."""
    out, stack = [], [([], h)]
    while stack:
        p, v = stack.pop()
        out.append(p)
        if isinstance(v, dict):
            stack += [(p + [k], x) for k, x in v.items()]
        elif isinstance(v, list):
            stack += [(p + [i], x) for i, x in enumerate(v)]
    return out


@st.composite
def forgeries(draw, bases_keys):
    base = draw(st.sampled_from(bases_keys))
    ops = draw(st.lists(st.tuples(st.sampled_from(["set", "set", "del", "attach", "shard", "shape", "payload",
                                                   "swap", "flip"]), st.randoms(use_true_random=False)),
                        min_size=1, max_size=4))
    return base, ops, draw(values), draw(payloads), draw(st.sampled_from(NAMES)), draw(st.lists(sizes, max_size=3))


def apply(f: Forge, ops, value, payload, name, shape, escape: Path) -> None:
    h = f.header
    def fix(v):
        return str(escape) + v[len("ESCAPE"):] if isinstance(v, str) and v.startswith("ESCAPE") else v

    for op, rnd in ops:
        tensors = [t for t in h.get("tensors", []) if isinstance(t, dict)] if isinstance(h.get("tensors"), list) else []
        if op in ("set", "del"):
            p = rnd.choice(paths(h)[1:] or [[]])
            if not p:
                continue
            parent = h
            for k in p[:-1]:
                parent = parent[k]
            if op == "set":  # a copy: the same list set twice, once inside itself, made a cycle paths() never left
                parent[p[-1]] = fix(copy.deepcopy(value))
            elif isinstance(parent, dict):
                del parent[p[-1]]
            else:
                parent.pop(p[-1])
        elif op == "attach" and isinstance(h.get("files"), dict):
            h["files"][fix(name)] = f.add(payload if rnd.random() < 0.5 else zstandard.ZstdCompressor().compress(b"{}"))
        elif op == "shard" and isinstance(h.get("source"), dict) and isinstance(h["source"].get("layout"), dict):
            shards = h["source"]["layout"].setdefault("shards", {})
            if isinstance(shards, dict) and tensors:
                shards[str(rnd.choice(tensors).get("name"))] = fix(name)
        elif op == "shape" and tensors:
            t = rnd.choice(tensors)
            t["shape"] = list(shape)
            segs = t.get("segments")
            if isinstance(segs, dict) and segs and rnd.random() < 0.7:
                n = 1
                for s in shape:
                    n *= s
                key = rnd.choice(sorted(segs))
                segs[key] = f.add(constant_ans(n))
                side = t.get("side")
                if isinstance(side, dict) and isinstance(side.get("symbols"), dict) and rnd.random() < 0.8:
                    side["symbols"][key] = list(shape)
        elif op == "payload" and tensors:
            segs = rnd.choice(tensors).get("segments")
            if isinstance(segs, dict) and segs:
                segs[rnd.choice(sorted(segs))] = f.add(payload)
        elif op == "swap" and len(tensors) > 1:
            a, b = rnd.sample(tensors, 2)
            a["segments"], b["segments"] = b.get("segments"), a.get("segments")
        elif op == "flip" and tensors:
            segs = rnd.choice(tensors).get("segments")
            if isinstance(segs, dict) and segs:
                key = rnd.choice(sorted(segs))
                seg = segs[key]
                if isinstance(seg, list) and len(seg) == 3 and all(isinstance(x, int) for x in seg[:2]) and seg[1] > 0 \
                        and seg[0] + seg[1] <= len(f.body):
                    data = bytearray(f.body[seg[0]:seg[0] + seg[1]])
                    for _ in range(rnd.randint(1, 4)):
                        data[rnd.randrange(len(data))] ^= rnd.randint(1, 255)
                    segs[key] = f.add(bytes(data))


# ---- one case ---------------------------------------------------------------------------------------
def cli(*args) -> tuple[int, str]:
    from zoocodec.cli import main

    err = io.StringIO()
    argv, sys.argv = sys.argv, ["zoocodec", *map(str, args)]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main() or 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = argv
    return code, err.getvalue()


def rss() -> tuple[int, int]:
    """(current, peak) resident bytes of this process."""
    status = Path("/proc/self/status").read_text()
    def kb(key):
        return int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) * 1024

    return kb("VmRSS"), kb("VmHWM")


def reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def tree(root: Path, skip: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if skip not in p.parents and p != skip}


def forged(bases: dict[str, bytes], case, work: Path, escape: Path) -> tuple[Forge, Path | None]:
    """The case's forgeries applied to its base, written to work/evil.zc (None: a header JSON cannot encode)."""
    base, ops, value, payload, name, shape = case
    f = Forge(bases[base])
    apply(f, ops, value, payload, name, shape, escape)
    try:
        text = json.dumps(f.header).replace('"DEEP"', "[" * 500 + "]" * 500).encode()
    except (ValueError, RecursionError):
        return f, None
    zc = work / "evil.zc"
    zc.write_bytes(f.to_bytes(json_text=text))
    return f, zc


def run_case(root: Path, bases: dict[str, bytes], case) -> str:
    base = case[0]
    COUNTS["started"] += 1
    case_dir = root / f"case{COUNTS['started']}"
    work = case_dir / "work"
    work.mkdir(parents=True)
    escape = case_dir / "escape"
    f, zc = forged(bases, case, work, escape)
    if zc is None:
        return "unencodable"
    out = work / "out" / ("model" if base == "hf" else "m.safetensors")
    command = ["decompress-seq", zc, "--member", "1", "-o", out] if base == "seq" else \
        ["inspect", zc, "--json"] if COUNTS["cases"] % 7 == 0 else ["decompress", zc, "-o", out]
    before = tree(case_dir, work / "out")
    reset_peak()
    start, _ = rss()
    code, err = cli(*command, "--max-memory", "256M")
    _, peak = rss()
    COUNTS["cases"] += 1
    outcome = "ok" if code == 0 else "refused"
    if code not in (0, 2) or "Traceback" in err or (code == 2 and err.count("\n") != 1):
        COUNTS["tracebacks"] += 1
        outcome = f"bad exit {code}: {err[-2000:]}"
    if tree(case_dir, work / "out") - before or escape.exists() or Path("/tmp/x").exists():
        COUNTS["escapes"] += 1
        outcome = f"wrote outside the output folder: {sorted(tree(case_dir, work / 'out') - before)}"
    if peak - start > BUDGET:
        COUNTS["over_budget"] += 1
        outcome = f"peak memory {peak - start:,} bytes over the budget"
    if outcome == "ok" and command[0] != "inspect":
        outcome = check_decode(f.header, out, base)
    COUNTS[outcome if len(outcome) < 12 else "failed"] += 1
    if COUNTS["cases"] % 500 == 0:  # the slow tier runs for an hour: show where it is
        print(f"fuzz: {dict(COUNTS)}, resident {rss()[0] >> 20} MB", file=sys.__stderr__, flush=True)
    if outcome in ("ok", "refused"):
        shutil.rmtree(case_dir)
    return outcome


def check_decode(h: dict, out: Path, base: str) -> str:
    """A decode that exits 0 wrote a model holding the tensors the header claims."""
    files = [out] if out.suffix else sorted(out.glob("*.safetensors"))
    got = {}
    for p in files:
        got.update(load_file(p))
    want = {t["name"]: (tuple(t["shape"]), t["dtype"]) for t in h["tensors"]}
    have = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in got.items()}
    return "ok" if have == want else f"decoded {have} but the header claims {want}"


def fuzz(root: Path, bases: dict[str, bytes], examples: int, stop_at_first: bool) -> None:
    """Run `examples` cases. The fast tier stops at the first bad case (hypothesis shrinks it);
    the slow tier runs them all and reports the counts, keeping each bad case's folder.

    Cases run in hypothesis runs of BATCH examples, each from its own seed: one run keeps every
    example's choices (its tree of choices and its cache) until it ends, which grew the process by
    about 80 KB a case."""
    bad = []
    COUNTS.clear()

    def case(c):
        try:
            outcome = run_case(root, bases, c)
        except Exception as e:  # the harness's own check failed (e.g. a decoded file it cannot read)
            COUNTS["harness"] += 1
            outcome = f"{type(e).__name__}: {e}"
        if outcome not in ("ok", "refused", "unencodable"):
            assert not stop_at_first, outcome
            bad.append((c[0], [op for op, _ in c[1]], outcome[:300]))

    for first in range(0, examples, BATCH):
        batch = settings(max_examples=min(BATCH, examples - first), deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))(given(forgeries(sorted(bases)))(case))
        seed(first)(batch)()
    print(f"\nfuzz: {dict(COUNTS)}, resident {rss()[0] >> 20} MB")
    for b in bad[:20]:
        print("bad case:", b)
    assert not bad, f"{len(bad)} bad cases of {examples}"


def test_fuzz_forged_containers(tmp_path, bases):
    fuzz(tmp_path, bases, 200, stop_at_first=True)


@pytest.mark.slow
def test_fuzz_forged_containers_10000(tmp_path, bases):
    fuzz(tmp_path, bases, 10_000, stop_at_first=False)


def gpu_jobs_case(root: Path, bases: dict[str, bytes], case) -> str:
    """The GPU decoder's host half (kernels/decode.jobs: staging, checksums, every parser) on a
    forged file, as `decompress --device gpu` reaches it (the budget checked first, 256M): it ends
    in ZoocodecError or in jobs whose every substream lies in the staged buffer."""
    from zoocodec import budget
    from zoocodec.errors import ZoocodecError
    from zoocodec.kernels import decode
    from zoocodec.pipeline.core import Archive

    COUNTS["started"] += 1
    work = root / f"gpu{COUNTS['started']}"
    work.mkdir(parents=True)
    _, zc = forged(bases, case, work, work / "escape")
    if zc is None:
        return "unencodable"
    try:
        with budget.limit(BUDGET), Archive(zc) as a:
            a.check_budget()
            staged, found = decode.jobs(a, a.names(), host_memory)
            assert all(staged.at(b) is not None for b in decode._blobs(found))
    except ZoocodecError:
        outcome = "refused"
    else:
        outcome = "ok"
    shutil.rmtree(work)
    return outcome


def gpu_fuzz(root: Path, bases: dict[str, bytes], examples: int) -> None:
    outcomes: Counter = Counter()

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(forgeries(sorted(k for k in bases if k != "seq")))
    def case(c):
        outcomes[gpu_jobs_case(root, bases, c)] += 1

    seed(7)(case)()
    print(f"\ngpu jobs fuzz: {dict(outcomes)}")
    assert outcomes["ok"] and outcomes["refused"], outcomes


def test_fuzz_forged_containers_through_the_gpu_decoders_host_half(tmp_path, bases):
    gpu_fuzz(tmp_path, bases, 150)


@pytest.mark.slow
def test_fuzz_forged_containers_through_the_gpu_decoders_host_half_3000(tmp_path, bases):
    gpu_fuzz(tmp_path, bases, 3000)
