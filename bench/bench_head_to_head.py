"""Head to head: zoocodec vs NNCodec, a Deep Compression-style baseline and lossless tools.

    python bench/bench_head_to_head.py            # the zoo models, judged on the held-back half of their test sets
    python bench/bench_head_to_head.py --quick    # mnist-cnn, one setting per tool
    python bench/bench_head_to_head.py --full     # also mpnet
    python bench/bench_head_to_head.py --lean     # only the tools that compete with NNCodec (quantize + code),
                                                  # timed once

Every tool codes the same float tensors of the same real model in the same run; every
decoded model is evaluated the same way (task metric and output fidelity against the
uncompressed model). Sizes count every byte a decoder needs (zoocodec: the whole .zc
file; NNCodec: its whole bitstream) over the model's float parameters.
The comparison is made at equal quality: along each tool's rate-distortion front, the
bits/weight needed for a metric loss of 0.1%, 0.5% and 1% and for each NNCodec point's
output fidelity. A loss is judged by the pessimistic end of its 95% interval from the
paired inputs (zoocodec.eval.stats); a budget narrower than the intervals is reported as
"not resolvable with N inputs".

NNCodec runs in its own virtual environment (bench/peers/setup_nncodec.sh builds it;
NNCODEC_PYTHON or .venv-nncodec/bin/python); without it the NNCodec rows are skipped
and the summary says so.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import json
import lzma
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import zstandard

import zoocodec
from bench_common import machine as _machine
from zoocodec.kernels import kmeans as kmeans_kernels, prune as prune_kernels
from zoocodec.methods import REGISTRY
from zoocodec.pipeline.core import load
from zoocodec.pipeline.modelio import to_torch


def machine() -> dict:
    return _machine(("numpy", "torch", "zstandard", "zipnn", "constriction"))

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RUNNER = ROOT / "bench" / "peers" / "nncodec_runner.py"
LOSS_POINTS = (0.1, 0.5, 1.0)  # metric loss, % of the baseline
# NNCodec quantizes every tensor (1-D ones nearly losslessly at qp -75). zoocodec's library
# default keeps tensors under 4,096 weights exact; here every weight matrix/filter of at least
# MIN_SIZE weights is quantized (the small classifier and stem layers of the CNNs matter at low
# rates), and 1-D tensors (biases, norms, BN statistics) stay exact, for zoocodec and the DC baseline.
MIN_SIZE = 64
# Automatic mode measures every tensor of MIN_SIZE weights, 1-D ones too (their noise keeps
# BatchNorm variances positive), and codes a 1-D tensor lossily where that takes fewer bytes.
HEAVY = 5e6  # fp32 bytes above which a model gets fewer settings (effnet-lite0, minilm): time on 2 shared cores
# qp / step grids are set for minilm and the MNIST CNNs; effnet-lite0 (depthwise convolutions,
# budgeted by output KL 0.001-0.01) reaches KL 0.003 already at NNCodec's qp -39: its grids sit
# 6 qp finer (NNCodec qp -46..-33).
SHIFT = {"effnet-lite0": -6}
ZOO = ["mnist-cnn", "fmnist-cnn", "effnet-lite0", "minilm", "mpnet"]  # run and table order


# ---- the model under test ---------------------------------------------------------------
@dataclass
class Subject:
    """One zoo model: every tensor, and the float ones the codecs compete on."""

    name: str
    tensors: dict[str, torch.Tensor]
    float_names: list[str]

    @classmethod
    def load(cls, name: str) -> Subject:
        src = load(name)
        tensors = {t.name: to_torch(t.array, t.dtype).clone() for t in src.tensors()}
        floats = [n for n, t in tensors.items() if t.is_floating_point()]
        return cls(name, tensors, floats)

    @property
    def exact_names(self) -> list[str]:
        """Float tensors every lossy tool but NNCodec keeps exact: 1-D or under MIN_SIZE weights."""
        return [n for n in self.float_names if self.tensors[n].dim() < 2 or self.tensors[n].numel() < MIN_SIZE]

    @property
    def floats(self) -> dict[str, torch.Tensor]:
        return {n: self.tensors[n] for n in self.float_names}

    @property
    def params(self) -> int:
        return sum(self.tensors[n].numel() for n in self.float_names)

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.params

    def with_floats(self, decoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The full model with its float tensors replaced by decoded ones (same dtype)."""
        out = dict(self.tensors)
        for n in self.float_names:
            out[n] = decoded[n].to(self.tensors[n].dtype).reshape(self.tensors[n].shape)
        return out


@dataclass
class Row:
    tool: str
    setting: str
    bytes: int
    params: int
    bytes_in: int
    encode_s: float | None
    decode_s: float | None
    lossless: bool = False
    quality: dict = field(default_factory=dict)
    note: str = ""
    load: float = field(default_factory=lambda: os.getloadavg()[0])  # 1-min load average: timings are shared-CPU
    header_bytes: int | None = None  # zoocodec: container header + alignment (file minus payloads)
    exact_bytes: int | None = None  # zoocodec: payloads of the tensors kept exact

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.bytes / self.params

    @property
    def ratio(self) -> float:
        return self.bytes_in / self.bytes

    def mbps(self, seconds: float | None) -> float | None:
        return None if not seconds else self.bytes_in / seconds / 1e6

    def to_dict(self) -> dict:
        return {**asdict(self), "bits_per_weight": self.bits_per_weight, "ratio": self.ratio,
                "encode_mbps": self.mbps(self.encode_s), "decode_mbps": self.mbps(self.decode_s)}


# ---- quality ----------------------------------------------------------------------------
class Judge:
    """Scores a decoded model with zoocodec.eval: its zoo task's primary metric and output fidelity.

    The task is the model's first zoo task (the one automatic mode budgets): its primary
    metric gives the loss in % of the baseline (zoocodec.eval's definition); fidelity is
    KL of logits vs the original for classifiers, the mean embedding cosine for encoders.
    The loss carries its 95% interval; its pessimistic end (`loss_high_pct`) is what the
    equal-quality comparison uses. Every tool is scored on the held-back part of automatic
    mode's seeded split of the test set (zoocodec.tuning.auto.split: half of the inputs,
    whole photos), which automatic mode never decides on: its search and calibration see
    none of the inputs it is judged on.
    """

    def __init__(self, subject: Subject):
        from zoocodec.eval.evaluate import evaluator, tasks_of
        from zoocodec.tuning.auto import SPLIT_SEED, split

        self.subject = subject
        self.task = tasks_of(subject.name)[0]
        whole = evaluator(subject.name, self.task, None)
        self.total = len(whole.ref_out)
        _, held = split(self.total, whole.compare(None)[self.task.primary].groups, SPLIT_SEED)
        self.ev = whole.part(held)
        self.inputs = len(held)
        self.seed = SPLIT_SEED
        self.baseline = {k: p.baseline for k, p in self.ev.compare(None).items()}
        self.metric = self.task.primary
        self.fidelity = "kl" if "kl" in self.baseline else "cosine_mean"
        self.seconds = 0.0

    def describe(self) -> str:
        inputs = f"the {self.inputs:,} held-back inputs of {self.total:,}, seed {self.seed}"
        return (f"task {self.task.name} ({inputs}), metric {self.metric} baseline {self.baseline[self.metric]:.4f}, "
                f"fidelity {self.fidelity}")

    def __call__(self, decoded: dict[str, torch.Tensor]) -> dict:
        t0 = time.perf_counter()
        full = self.subject.with_floats(decoded)
        from zoocodec.eval.evaluate import metric_row

        paired = self.ev.compare(full)
        scores = {k: p.value for k, p in paired.items()}
        m = metric_row(self.subject.name, self.task.name, self.metric, paired[self.metric],
                       self.metric in self.task.lower_is_better, True)
        fid = scores[self.fidelity]
        self.seconds += time.perf_counter() - t0
        return {"sqnr_db": sqnr_db(self.subject.floats, {n: full[n] for n in self.subject.float_names}),
                "scores": scores, "metric": scores[self.metric], "loss_pct": 100 * m.loss,
                "loss_low_pct": 100 * m.loss_low, "loss_high_pct": 100 * m.loss_high, "inputs": m.n,
                "fidelity": fid, "distortion": fid if self.fidelity == "kl" else 1 - fid}


def sqnr_db(ref: dict[str, torch.Tensor], dec: dict[str, torch.Tensor]) -> float:
    signal = sum(float(ref[n].double().pow(2).sum()) for n in ref)
    noise = sum(float((ref[n].double() - dec[n].double()).pow(2).sum()) for n in ref)
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


# ---- zoocodec ---------------------------------------------------------------------------
def timed(fn, repeat: int):
    """(result, fastest seconds of `repeat` calls): the CPU is shared, the minimum is the signal."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_zoocodec(subject: Subject, judge: Judge, tool: str, setting: str, write, work: Path, repeat: int = 1) -> Row:
    """Time `write(path)` (encode) and decompress (decode), then score the decoded model."""
    path = work / "model.zc"
    _, enc_s = timed(lambda: write(path), repeat)
    decoded, dec_s = timed(lambda: zoocodec.decompress(path), repeat)
    row = Row(tool, setting, path.stat().st_size, subject.params, subject.fp32_bytes, enc_s, dec_s)
    info = zoocodec.inspect(path)
    row.header_bytes = info["file_bytes"] - sum(t["bytes"] for t in info["tensors"])
    row.exact_bytes = sum(t["bytes"] for t in info["tensors"] if t["method"].startswith("lossless"))
    row.quality = judge(decoded)
    path.unlink()
    return row


def step(q: float) -> float:
    """The step of NNCodec's qp scale (qp_density 2): 2**(q/4)."""
    return 2.0 ** (q / 4)


def best_method() -> str:
    """What allocation and automatic mode plug in: trellis (dq) or RD-optimised rounding under
    the context coder when they exist (dq measured smallest at equal SQNR here), else uniform.
    Automatic mode then prices `ctx` against `cabac` itself."""
    from zoocodec.codecs import CODERS

    coder = ",coder=ctx" if "ctx" in CODERS else ""
    return next((f"{m}:{coder[1:]}" if coder else m for m in ("dq", "rdoq") if m in REGISTRY), "uniform")


def zoocodec_settings(subject: Subject, judge: Judge, mode: str, lean: bool = False,
                      log=lambda _msg: None) -> list[tuple[str, str, object]]:
    """(tool, setting, write(path)) for the methods the registry holds now, bracketing NNCodec.

    `mode` is quick (one setting per tool), default, or full; `lean` leaves out the tools
    that never come near NNCodec (RDOQ, LNQ, k-means, DCT) and, on big models, allocation
    at fixed steps and half the dq grid (each dq encode of minilm takes minutes here). Big models get fewer settings,
    and their automatic mode searches with uniform steps + context coding (a dq search
    re-encodes the model at every trial: ~10 minutes on minilm here). Automatic mode at the
    later budgets and allocation reuse the sensitivities automatic mode measured first
    (stored in its file's header): measuring them costs one evaluation per tensor.
    """
    from zoocodec.eval.evaluate import evaluator
    from zoocodec.tuning.allocate import allocate
    from zoocodec.tuning.auto import auto_compress
    from zoocodec.tuning.sensitivity import embedding_groups, measure

    floats, big, quick = subject.floats, subject.fp32_bytes > HEAVY, mode == "quick"
    method = best_method()
    ctx = ",coder=ctx" if "ctx" in method else ""

    exact = {n: "lossless" for n in subject.exact_names}
    quantized = {n: t for n, t in floats.items() if n not in exact}

    def spec(text: str):
        return lambda path: zoocodec.compress(floats, path, text, min_size=0, plan=exact)

    groups = embedding_groups(subject.tensors)
    shared: dict = {}

    def sensitivities() -> dict:
        if "sens" not in shared:  # automatic mode did not run or failed: measure here
            ev = evaluator(subject.name, judge.task, judge.task.sensitivity_limit)
            shared["sens"] = measure(ev, subject.tensors, list(quantized), groups=groups)
        return shared["sens"]

    def planned(q: float):
        return lambda path: zoocodec.compress(floats, path, "uniform", min_size=0, plan={**exact, **allocate(
            quantized, sensitivities=sensitivities(), base_step=step(q), method=method, min_size=0)})

    def auto(target: float):
        # the whole model, so the task can run during the search; its few non-float tensors cost ~100 bytes.
        def write(path):
            # as `zoocodec compress --target-loss` runs it: its own method, rounding and coder choice
            auto_compress(subject.tensors, path, target / 100, reference=subject.name, min_size=MIN_SIZE,
                          sensitivities=shared.get("auto_sens"),
                          log=lambda m: log(f"{subject.name}: auto {target}%: {m}"))
            if "auto_sens" not in shared:
                with zoocodec.Archive(path) as a:
                    stored = a.header["meta"]["auto"]["sensitivities"]
                shared["auto_sens"] = {k: np.array(v) if k in groups else v[0] for k, v in stored.items()}
                shared.setdefault("sens", {k: v for k, v in shared["auto_sens"].items() if k in quantized})
        return write

    shift = SHIFT.get(subject.name, 0)

    def pick(grid, shifted=True):
        grid = [q + shift for q in grid] if shifted else grid
        return grid[len(grid) // 2:len(grid) // 2 + 1] if quick else grid

    qs = pick([-36, -30, -26] if big else [-38, -30, -22, -16])
    out = [("zoocodec uniform", f"step=2^({q}/4)", spec(f"uniform:step={step(q)}")) for q in qs]
    if "rdoq" in REGISTRY and not big and not lean:
        out += [(f"zoocodec rdoq{ctx.replace(',coder=', '+')}", f"step=2^({q}/4)", spec(f"rdoq:step={step(q)}{ctx}"))
                for q in pick([-34, -26, -18])]
    if "dq" in REGISTRY:
        dq_qs = pick(([-36, -30] if lean else [-38, -34, -30, -26]) if big else [-38, -30, -24, -18, -14])
        out += [(f"zoocodec dq{ctx.replace(',coder=', '+')}", f"step=2^({q}/4)", spec(f"dq:step={step(q)}{ctx}"))
                for q in dq_qs]
        from zoocodec.codecs import CODERS

        if "cabac" in CODERS and not big:  # the context coder automatic mode may pick instead of ctx
            out += [("zoocodec dq+cabac", f"step=2^({q}/4)", spec(f"dq:step={step(q)},coder=cabac"))
                    for q in pick([-30, -24, -18, -14])]
    if "lnq" in REGISTRY and not lean:
        out += [
            ("zoocodec LNQ", f"step=2^({q}/4)", spec(f"lnq:step={step(q)}")) for q in pick([-30] if big else [-30, -22])
        ]
    if "kmeans" in REGISTRY and not lean:
        out += [
            ("zoocodec k-means", f"k={k}", spec(f"kmeans:k={k}"))
            for k in pick([64, 256] if shift else [16, 64] if big else [4, 8, 16, 32], False)
        ]
    if "dct" in REGISTRY and not lean:
        out += [
            ("zoocodec DCT", f"bits={b}", spec(f"dct:bits={b}"))
            for b in pick([5, 7] if shift else [3, 5] if big else [1, 2, 3, 4], False)
        ]
    targets = [1.0, 0.5, 0.1]  # the widest budget first: its sensitivities serve the others
    out += [("zoocodec auto", f"target={t}%", auto(t)) for t in (targets[:1] if quick else targets)]
    if not quick and not (lean and big):
        alloc_qs = pick([-34, -30, -27, -24] if big else [-34, -28, -22, -16, -12])
        out += [(f"zoocodec alloc+{method.split(':')[0]}{ctx.replace(',coder=', '+')}", f"base=2^({q}/4)", planned(q))
                for q in alloc_qs]
    return out


# ---- NNCodec ----------------------------------------------------------------------------
def nncodec_python() -> Path | None:
    env = os.environ.get("NNCODEC_PYTHON")
    path = Path(env) if env else ROOT / ".venv-nncodec" / "bin" / "python"
    return path if path.exists() else None


def run_nncodec(subject: Subject, judge: Judge, qps: list[int], work: Path, repeat: int = 1) -> list[Row]:
    from safetensors.numpy import load_file, save_file

    python = nncodec_python()
    src = work / "nncodec_in.safetensors"
    save_file({n: t.float().numpy() for n, t in subject.floats.items()}, str(src))
    # same priority as this process (a `nice` here would slow NNCodec down against zoocodec)
    cmd = [str(python), str(RUNNER), str(src), str(work / "nncodec"), "--qp", *map(str, qps),
           "--repeat", str(repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"NNCodec runner failed: {done.stderr.strip()[-2000:]}")
    rows = []
    for line in done.stdout.splitlines():
        r = json.loads(line)
        decoded = {n: torch.from_numpy(a) for n, a in load_file(r["path"]).items()}
        row = Row(
            "NNCodec", f"qp={r['qp']}", r["bytes"], subject.params, subject.fp32_bytes, r["encode_s"], r["decode_s"]
        )
        row.quality = judge(decoded)
        rows.append(row)
        Path(r["path"]).unlink()
    src.unlink()
    return rows


# ---- Deep Compression-style: prune + k-means + Huffman ------------------------------------
def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code lengths of a real Huffman tree over the nonzero counts (0 for absent symbols)."""
    lengths = np.zeros(len(counts), dtype=np.int64)
    heap = [(int(c), i, [i]) for i, c in enumerate(counts) if c > 0]
    if len(heap) == 1:
        lengths[heap[0][2]] = 1
        return lengths
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def deep_compression(subject: Subject, judge: Judge, sparsity: float, bits: int) -> Row:
    """Han et al.: magnitude pruning, k = 2**bits shared values per layer, Huffman-coded indices.

    Built from zoocodec's kernels (magnitude mask, batched k-means). Pruned weights are
    symbol 0 of a (k+1)-symbol alphabet (a generous stand-in for Han's relative-index
    sparse format); size = Huffman code lengths x counts + fp32
    codebook, no retraining (Han retrains; no tool here does). Small tensors stay fp32.
    The size is that of a real Huffman code, but no bitstream is written: no decode time.
    """
    t0 = time.perf_counter()
    total_bits, decoded = 0, {}
    for n, t in subject.floats.items():
        w = t.double().numpy().ravel()
        if n in subject.exact_names:
            total_bits += 32 * w.size
            decoded[n] = t
            continue
        keep = prune_kernels.magnitude_mask(w, sparsity, np)
        c, idx = kmeans_kernels.kmeans(w[keep].astype(np.float32)[None], 2**bits)
        c, idx = c[0].astype(np.float64), idx[0].astype(np.int64)
        symbols = np.zeros(w.size, dtype=np.int64)
        symbols[keep] = idx + 1
        counts = np.bincount(symbols, minlength=2**bits + 1)
        total_bits += int((huffman_lengths(counts) * counts).sum()) + 32 * len(c) + 8 * len(c)  # + code lengths
        r = np.zeros(w.size)
        r[keep] = c[idx]
        decoded[n] = torch.from_numpy(r.reshape(t.shape)).float()
    enc = time.perf_counter() - t0
    row = Row("Deep Compression-style", f"prune={sparsity:.0%},k={2**bits}", math.ceil(total_bits / 8),
              subject.params, subject.fp32_bytes, enc, None, note="ideal Huffman lengths; no retraining")
    row.quality = judge(decoded)
    return row


# ---- lossless -----------------------------------------------------------------------------
def lossless_rows(subject: Subject, dtype: torch.dtype, work: Path, lzma_too: bool, repeat: int = 1) -> list[Row]:
    """zoocodec lossless vs zstd-19, lzma-9 and zipnn on the same bytes; every decode checked bit-exact."""
    tensors = {n: t.to(dtype).contiguous() for n, t in subject.floats.items()}
    raw = b"".join(
        t.view(torch.int16 if dtype == torch.bfloat16 else t.dtype).numpy().tobytes() for t in tensors.values()
    )
    label = "bf16" if dtype == torch.bfloat16 else "fp32"
    rows = []

    def add(tool, enc, dec, check, enc_repeat=repeat):
        blob, enc_s = timed(enc, enc_repeat)
        back, dec_s = timed(lambda: dec(blob), repeat)
        if not check(back):
            raise AssertionError(f"{tool} {label}: decode is not bit-exact")
        rows.append(Row(tool, label, len(blob), subject.params, len(raw), enc_s, dec_s, lossless=True))

    path = work / "lossless.zc"

    def zc_enc():
        zoocodec.compress(tensors, path, "lossless", min_size=0)
        return path.read_bytes()

    def zc_dec(_blob):
        return zoocodec.decompress(path)

    def bits(t: torch.Tensor) -> torch.Tensor:  # bf16 compared bit for bit
        return t.view(torch.int16) if dtype == torch.bfloat16 else t

    add("zoocodec lossless", zc_enc, zc_dec,
        lambda back: all(torch.equal(bits(back[n]), bits(t)) for n, t in tensors.items()))
    path.unlink()
    add("zstd-19", lambda: zstandard.ZstdCompressor(level=19).compress(raw),
        lambda b: zstandard.ZstdDecompressor().decompress(b), lambda back: back == raw, enc_repeat=1)
    if lzma_too:  # ~2 minutes on minilm's fp32 here: in --full only for big models
        add("lzma-9", lambda: lzma.compress(raw, preset=9), lzma.decompress, lambda back: back == raw, enc_repeat=1)
    zipnn = _zipnn(label)
    if zipnn is not None:
        add("zipnn", lambda: bytes(zipnn.compress(bytearray(raw))),  # zipnn overwrites its input: a copy
            lambda b: bytes(zipnn.decompress(b)), lambda back: back == raw)
    return rows


def _zipnn(label: str):
    try:
        from zipnn import ZipNN
    except ImportError:
        return None
    return ZipNN(
        input_format="byte", bytearray_dtype="bfloat16" if label == "bf16" else "float32", threads=os.cpu_count()
    )


# ---- equal-quality comparison --------------------------------------------------------------
def front(rows: list[Row], key) -> list[tuple[float, float]]:
    """The (distortion, bits/weight) Pareto front, distortion ascending."""
    pts = sorted((key(r), r.bits_per_weight) for r in rows if key(r) is not None and math.isfinite(key(r)))
    out: list[tuple[float, float]] = []
    for d, b in pts:
        if not out or b < out[-1][1]:
            out.append((d, b))
    return out


def bits_at(rows: list[Row], key, target: float) -> tuple[float | None, str]:
    """Bits/weight a tool needs for distortion <= target, interpolated along its front.

    Returns (bits, how): 'measured' at a point, 'interpolated' between two, 'upper bound'
    when the target lies beyond the tool's cheapest point (it needs at most that), or
    (None, 'not reached') when no setting was that good.
    """
    f = front(rows, key)
    if not f or target < f[0][0]:
        return None, "not reached"
    exact = [b for d, b in f if d == target]
    if exact:
        return exact[-1], "measured"
    for (d0, b0), (d1, b1) in itertools.pairwise(f):
        if d0 <= target <= d1:
            return (b0 + (b1 - b0) * (target - d0) / (d1 - d0) if d1 > d0 else b1), "interpolated"
    return f[-1][1], "upper bound"


def fidelity_key(row: Row) -> float | None:
    """Output distortion: KL vs the original's logits, or 1 - mean embedding cosine."""
    return row.quality.get("distortion")


def loss_key(row: Row) -> float | None:
    """The metric loss at the pessimistic end of its 95% interval, in %."""
    return row.quality.get("loss_high_pct")


def unresolvable(rows: list[Row], target: float) -> str | None:
    """'not resolvable with N inputs' when no row is within `target` by its pessimistic bound
    but one is by its point value, with an interval wider than the target."""
    if any((loss_key(r) or math.inf) <= target for r in rows):
        return None
    for r in rows:
        q = r.quality
        if (
            q.get("loss_pct") is not None
            and q["loss_pct"] <= target
            and q["loss_high_pct"] - q["loss_low_pct"] > target
        ):
            return f"not resolvable with {q['inputs']:,} inputs"
    return None


def tool_speeds(rows: list[Row]) -> dict[str, float | None]:
    """Median encode and decode MB/s over a tool's settings."""
    def median(attr):
        v = [r.mbps(getattr(r, attr)) for r in rows if getattr(r, attr)]
        return float(np.median(v)) if v else None
    return {"encode_mbps": median("encode_s"), "decode_mbps": median("decode_s")}


def best_zoocodec(by_tool: dict[str, list[Row]], key, target: float) -> dict:
    """The zoocodec tool needing the fewest bits/weight at `target`, each interpolated along its own curve."""
    best = {"bpw": None, "how": "not reached", "tool": None}
    for tool, rows in by_tool.items():
        bits, how = bits_at(rows, key, target)
        if bits is not None and (best["bpw"] is None or bits < best["bpw"]):
            best = {"bpw": bits, "how": how, "tool": tool}
    return best


def compare(rows: list[Row]) -> dict:
    """zoocodec vs NNCodec at equal metric loss and at NNCodec's own output fidelities.

    Each tool's bits/weight at a target is interpolated along its own RD front; zoocodec's
    value is its best tool there, and the speed ratio is that tool's (median over its
    settings) vs NNCodec's. Also every tool's bits/weight at every target (per_tool).
    """
    lossy = [r for r in rows if not r.lossless]
    by_tool: dict[str, list[Row]] = {}
    for r in lossy:
        by_tool.setdefault(r.tool, []).append(r)
    ours = {t: rs for t, rs in by_tool.items() if t.startswith("zoocodec")}
    nnc = by_tool.get("NNCodec", [])
    targets = [(f"loss {t}%", loss_key, t) for t in LOSS_POINTS] + [
        (f"fid {r.setting}", fidelity_key, fidelity_key(r)) for r in nnc]
    out: dict = {"columns": [label for label, _, _ in targets], "per_tool": {}, "points": []}
    for tool, rs in by_tool.items():
        out["per_tool"][tool] = {"bpw": [bits_at(rs, key, t)[0] for _, key, t in targets], **tool_speeds(rs)}
    if not nnc:
        return out
    nnc_speed = tool_speeds(nnc)
    for label, key, target in targets:
        b_nnc, how_nnc = bits_at(nnc, key, target)
        zc = best_zoocodec(ours, key, target)
        point = {"target": label, "value": target, "nncodec_bpw": b_nnc, "nncodec_how": how_nnc,
                 "zoocodec_bpw": zc["bpw"], "zoocodec_how": zc["how"], "zoocodec_tool": zc["tool"],
                 "size_ratio": b_nnc / zc["bpw"] if zc["bpw"] and b_nnc else None,
                 "note": unresolvable(lossy, target) if key is loss_key else None}
        if zc["tool"]:
            speed = out["per_tool"][zc["tool"]]
            for attr in ("encode_mbps", "decode_mbps"):
                point[f"{attr[:6]}_speedup"] = speed[attr] / nnc_speed[attr] if speed[attr] else None
        out["points"].append(point)
    return out


def lossless_summary(rows: list[Row]) -> list[dict]:
    out = []
    for label in ("fp32", "bf16"):
        by = {r.tool: r for r in rows if r.lossless and r.setting == label}
        zc = by.get("zoocodec lossless")
        if not zc:
            continue
        entry = {"dtype": label, "zoocodec_ratio": zc.ratio}
        for peer in ("zstd-19", "lzma-9", "zipnn"):
            if peer in by:
                entry[f"size_vs_{peer}"] = by[peer].bytes / zc.bytes
                entry[f"decode_speed_vs_{peer}"] = zc.mbps(zc.decode_s) / by[peer].mbps(by[peer].decode_s)
        out.append(entry)
    return out


# ---- output --------------------------------------------------------------------------------
def fmt(x, spec=".3f", none="-"):
    return none if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def table(model: dict) -> str:
    lines = [f"### {model['model']} ({model['params']:,} float parameters; {model['evaluation']}; "
             f"run {model.get('date', '?')})", "",
             "| tool | setting | bits/weight | ratio | metric | metric loss % [95% interval] | fidelity | SQNR dB "
             "| encode MB/s | decode MB/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in model["rows"]:
        q = r["quality"]
        lines.append(
            f"| {r['tool']} | {r['setting']} | {r['bits_per_weight']:.3f} | {r['ratio']:.2f}x | "
            f"{fmt(q.get('metric'), '.4f', 'exact' if r['lossless'] else '-')} | {fmt(q.get('loss_pct'), '.2f')}"
            f"{_bracket(q)} | "
            f"{fmt(q.get('fidelity'), '.5f')} | {fmt(q.get('sqnr_db'), '.1f')} | "
            f"{fmt(r['encode_mbps'], '.1f')} | {fmt(r['decode_mbps'], '.1f')} |"
        )
    return "\n".join(lines)


def _bracket(q: dict) -> str:
    if q.get("loss_low_pct") is None:
        return ""
    return f" [{q['loss_low_pct']:.2f}, {q['loss_high_pct']:.2f}]"


def per_tool_table(model: dict) -> str:
    """Each tool's bits/weight at the equal-quality points (- where it never got that good), and speed."""
    c = model["compare"]
    cols = c["columns"]
    lines = ["| tool: bits/weight at | " + " | ".join(cols) + " | encode MB/s | decode MB/s |",
             "| --- |" + " ---: |" * (len(cols) + 2)]
    for tool, v in c["per_tool"].items():
        lines.append(f"| {tool} | " + " | ".join(fmt(b) for b in v["bpw"]) +
                     f" | {fmt(v['encode_mbps'], '.2f')} | {fmt(v['decode_mbps'], '.1f')} |")
    return "\n".join(lines)


def summary_text(model: dict) -> str:
    c, lines = model["compare"], []
    if not c["points"]:
        lines.append("- NNCodec not run: " + model.get("nncodec_skipped", "no rows"))
    for p in c["points"]:
        if p.get("note"):
            lines.append(f"- {p['target']}: {p['note']}")
            continue
        lines.append(f"- {p['target']}: zoocodec {fmt(p['zoocodec_bpw'])} bpw ({p['zoocodec_tool'] or '-'}, "
                     f"{p['zoocodec_how']}) vs NNCodec {fmt(p['nncodec_bpw'])} ({p['nncodec_how']}): "
                     f"**{fmt(p['size_ratio'], '.2f')}x** smaller; that tool encodes "
                     f"{fmt(p.get('encode_speedup'), '.1f')}x and decodes {fmt(p.get('decode_speedup'), '.1f')}x "
                     f"as fast as NNCodec")
    for f in model.get("failures", []):
        lines.append(f"- FAILED: {f['tool']} {f['setting']}: {f['error']}")
    for e in model["lossless"]:
        parts = [f"{k[8:]} {v:.3f}x" for k, v in e.items() if k.startswith("size_vs_")]
        speeds = [f"{k[16:]} {v:.2f}x" for k, v in e.items() if k.startswith("decode_speed_vs_")]
        lines.append(f"- lossless {e['dtype']}: zoocodec {e['zoocodec_ratio']:.3f}x; peer size / zoocodec size: "
                     f"{', '.join(parts)}; zoocodec decode speed / peer: {', '.join(speeds)}")
    return "\n".join(lines)


def plot(models: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 8), squeeze=False)
    for j, m in enumerate(models):
        tools = sorted({r["tool"] for r in m["rows"] if not r["lossless"]})
        panels = (
            ("loss_pct", "metric loss % (lower is better)"),
            ("distortion", "output distortion: KL or 1 - cosine"),
        )
        for i, (key, label) in enumerate(panels):
            ax = axes[i][j]
            for tool in tools:
                pts = sorted((r["bits_per_weight"], r["quality"].get(key)) for r in m["rows"]
                             if r["tool"] == tool and not r["lossless"] and r["quality"].get(key) is not None)
                if key == "distortion":
                    pts = [(b, max(v, 1e-7)) for b, v in pts]
                if pts:
                    ax.plot(*zip(*pts, strict=True), "o-", label=tool, ms=4, lw=2.5 if tool == "NNCodec" else 1.2,
                            color="black" if tool == "NNCodec" else None)
            if key == "distortion":
                ax.set_yscale("log")
            ax.set_xlabel("bits/weight")
            ax.set_ylabel(label)
            ax.set_title(f"{m['model']}")
            ax.grid(alpha=0.3)
        axes[0][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------
def bench_model(name: str, mode: str, log, lean: bool = False) -> dict:
    subject = Subject.load(name)
    big = subject.fp32_bytes > 20e6
    judge = Judge(subject)
    quick = mode == "quick"
    repeat = 2 if not quick and not lean and subject.fp32_bytes < 5e6 else 1
    rows: list[Row] = []
    result = {"model": name, "mode": mode + (" lean" if lean else ""), "params": subject.params,
              "evaluation": judge.describe(), "date": machine()["date"],
              "baseline": judge.baseline, "failures": []}
    with tempfile.TemporaryDirectory(prefix="h2h-") as d:
        work = Path(d)
        if nncodec_python():
            qps = [-32] if quick else ([-40, -36, -33, -30, -27] if subject.fp32_bytes > HEAVY else
                                       [-38, -30, -24, -18, -14, -10])
            qps = [q + SHIFT.get(name, 0) for q in qps]
            log(f"{name}: NNCodec qp {qps}")
            rows += run_nncodec(subject, judge, qps, work, repeat)
        else:
            result["nncodec_skipped"] = "no NNCodec environment (run bench/peers/setup_nncodec.sh)"
        for tool, setting, write in zoocodec_settings(subject, judge, mode, lean, log):
            log(f"{name}: {tool} {setting}")
            try:
                rows.append(run_zoocodec(subject, judge, tool, setting, write, work, 1 if "auto" in tool else repeat))
            except Exception as e:  # one method's failure must not cost the whole run: record it
                result["failures"].append({"tool": tool, "setting": setting, "error": f"{type(e).__name__}: {e}"})
                log(f"{name}: {tool} {setting} FAILED: {type(e).__name__}: {e}")
        dc = [] if lean else [(0.5, 5)] if quick else [(0.0, 5), (0.5, 5), (0.7, 4)]
        for sparsity, bits in dc:
            log(f"{name}: Deep Compression-style prune {sparsity} bits {bits}")
            rows.append(deep_compression(subject, judge, sparsity, bits))
        for dtype in () if lean else (torch.float32, torch.bfloat16):
            log(f"{name}: lossless {dtype}")
            rows += lossless_rows(subject, dtype, work, lzma_too=mode == "full" or not big, repeat=repeat)
    result["evaluation_s"] = judge.seconds
    result["rows"] = [r.to_dict() for r in rows]
    result["compare"] = compare(rows)
    result["lossless"] = lossless_summary(rows)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="mnist-cnn, one setting per tool")
    p.add_argument("--full", action="store_true", help="also mpnet")
    p.add_argument("--models", nargs="+", help="zoo models to run (default: the zoo)")
    p.add_argument("--lean", action="store_true",
                   help="only NNCodec and the zoocodec tools that compete with it; encode and decode timed once")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON, markdown and PNG")
    p.add_argument("--merge", action="store_true",
                   help="replace these models' entries in the existing results instead of starting anew")
    a = p.parse_args(argv)
    if a.models:
        models = a.models
    elif a.quick:
        models = ["mnist-cnn"]
    else:
        models = ZOO[:-1] + (ZOO[-1:] if a.full else [])
    mode = "quick" if a.quick else "full" if a.full else "default"
    stem = "head_to_head_quick" if a.quick else "head_to_head"
    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    results = {"machine": machine(), "mode": mode, "nncodec_python": str(nncodec_python() or ""),
               "methods_registered": sorted(REGISTRY), "models": []}
    previous = a.out / f"{stem}.json"
    if a.merge and previous.exists():
        old = json.loads(previous.read_text())
        results["models"] = [m for m in old["models"] if m["model"] not in models]
        start -= old.get("seconds", 0)
    for name in models:
        results["models"].append(bench_model(name, mode, log, a.lean))
        results["models"].sort(key=lambda m: ZOO.index(m["model"]) if m["model"] in ZOO else len(ZOO))
        results["seconds"] = time.perf_counter() - start
        save(results, a.out, stem)  # after every model: a long run that dies keeps what it measured
    print((a.out / f"{stem}.md").read_text())
    return results


def headline(results: dict) -> str:
    """One row per model: zoocodec's size and speed ratios vs NNCodec, and the lossless ratios."""
    lines = [
        "| model | size vs NNCodec at loss 0.1% / 0.5% / 1% | at NNCodec's fidelities (min-max, bounds left out) | "
        "encode / decode speedup at those points (min-max) | lossless fp32, bf16: zipnn size / ours | "
        "zstd-19 size / ours | our decode speed / zipnn's |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def span(values, spec=".2f"):
        v = [x for x in values if x is not None]
        return f"{min(v):{spec}}-{max(v):{spec}}x" if v else "-"

    def exact(p):  # both sides measured or interpolated: not a bound
        return p["zoocodec_how"] in ("measured", "interpolated") and p["nncodec_how"] in ("measured", "interpolated")

    for m in results["models"]:
        pts = m["compare"]["points"]
        loss = [p for p in pts if p["target"].startswith("loss")]
        fid = [p for p in pts if p["target"].startswith("fid") and exact(p)]
        ll = {e["dtype"]: e for e in m["lossless"]}
        lossless = [" / ".join(fmt(ll.get(d, {}).get(k), ".3f") + "x" for d in ("fp32", "bf16"))
                    for k in ("size_vs_zipnn", "size_vs_zstd-19", "decode_speed_vs_zipnn")]
        lines.append(f"| {m['model']} | " + " / ".join(p["note"] if p.get("note") else
                                                   fmt(p["size_ratio"], ".2f") + ("x" if exact(p) else "x (bound)")
                                                   for p in loss) +
                     f" | {span(p['size_ratio'] for p in fid)} | {span((p.get('encode_speedup') for p in pts), '.1f')}"
                     f" / {span((p.get('decode_speedup') for p in pts), '.1f')} | " + " | ".join(lossless) + " |")
    return "\n".join(lines)


def save(results: dict, out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    m = results["machine"]
    md = ["# Head to head: zoocodec vs NNCodec, Deep Compression-style, lossless tools", "",
          f"{m['date']}, {m['cpu']} ({m['cores']} cores shared with other work: see the load column "
          f"of the JSON), {results['seconds'] / 60:.1f} minutes; mode: "
          + ", ".join(f"{x['model']} {x.get('mode', results['mode'])}" for x in results["models"]) + ".", "",
          *([results["note"], ""] if results.get("note") else []), headline(results), ""]
    for model in results["models"]:
        md += [table(model), "", per_tool_table(model), "", summary_text(model), ""]
    _write(out / f"{stem}.json", json.dumps(results, indent=1, default=str))
    _write(out / f"{stem}.md", "\n".join(md))
    plot(results["models"], out / f"{stem}.png")


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
