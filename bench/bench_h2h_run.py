"""The runners of bench/bench_head_to_head.py: the model under test, the judge, and each tool
(zoocodec's settings, NNCodec in its own venv, a Deep Compression-style baseline, lossless
tools) turned into rows of (bytes, quality, speed). The frontier maths is bench_h2h_frontier,
the tables and plot bench_h2h_render."""
from __future__ import annotations

import heapq
import json
import lzma
import math
import os
import subprocess
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
# NNCodec quantizes every tensor (1-D ones nearly losslessly at qp -75). zoocodec's library
# default keeps tensors under 4,096 weights exact; here every weight matrix/filter of at least
# MIN_SIZE weights is quantized (the small classifier and stem layers of the CNNs matter at low
# rates), and 1-D tensors (biases, norms, BN statistics) stay exact, for zoocodec and the DC baseline.
# Automatic mode measures every tensor of MIN_SIZE weights, 1-D ones too (their noise keeps
# BatchNorm variances positive), and codes a 1-D tensor lossily where that takes fewer bytes.
MIN_SIZE = 64
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
    encode_cpu_s: float | None = None  # zoocodec: this process's CPU seconds per encode, all threads (wall is shared)

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
    cpu0 = time.process_time()
    _, enc_s = timed(lambda: write(path), repeat)
    enc_cpu = (time.process_time() - cpu0) / repeat
    decoded, dec_s = timed(lambda: zoocodec.decompress(path), repeat)
    row = Row(tool, setting, path.stat().st_size, subject.params, subject.fp32_bytes, enc_s, dec_s,
              encode_cpu_s=enc_cpu)
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
                      log=lambda _msg: None, budgets=(1.0, 0.5, 0.1),
                      one_embedding_step: bool = False,
                      measured: dict | None = None) -> list[tuple[str, str, object]]:
    """(tool, setting, write(path)) for the methods the registry holds now, bracketing NNCodec.

    `mode` is quick (one setting per tool), default, or full; `lean` leaves out the tools
    that never come near NNCodec (RDOQ, LNQ, k-means, DCT) and, on big models, allocation
    at fixed steps and half the dq grid (each dq encode of minilm takes minutes here). Big models get fewer settings,
    and their automatic mode searches with uniform steps + context coding (a dq search
    re-encodes the model at every trial: ~10 minutes on minilm here). Automatic mode at the
    later budgets and allocation reuse the sensitivities automatic mode measured first
    (stored in its file's header): measuring them costs one evaluation per tensor.
    `one_embedding_step` also runs automatic mode at the widest budget with one step for a text model's
    word-embedding table (`token_rows=False`), so that what a step per row gains is measured in the same run.
    `measured` (sensitivities as a file's header stores them) skips their measurement by the first automatic-mode run.
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
    if measured:
        shared["auto_sens"] = {k: np.array(v) if k in groups else v[0] for k, v in measured.items()}
        shared["sens"] = {k: v for k, v in shared["auto_sens"].items() if k in quantized}

    def sensitivities() -> dict:
        if "sens" not in shared:  # automatic mode did not run or failed: measure here
            ev = evaluator(subject.name, judge.task, judge.task.sensitivity_limit)
            shared["sens"] = measure(ev, subject.tensors, list(quantized), groups=groups)
        return shared["sens"]

    def planned(q: float):
        return lambda path: zoocodec.compress(floats, path, "uniform", min_size=0, plan={**exact, **allocate(
            quantized, sensitivities=sensitivities(), base_step=step(q), method=method, min_size=0)})

    def auto(target: float, token_rows: bool = True):
        # the whole model, so the task can run during the search; its few non-float tensors cost ~100 bytes.
        def write(path):
            # as `zoocodec compress --target-loss` runs it: its own method, rounding and coder choice
            auto_compress(subject.tensors, path, target / 100, reference=subject.name, min_size=MIN_SIZE,
                          sensitivities=shared.get("auto_sens"), token_rows=token_rows,
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
    targets = sorted(budgets, reverse=True)  # the widest budget first: its sensitivities serve the others
    for t in targets[:1] if quick else targets:
        out.append(("zoocodec auto", f"target={t}%", auto(t)))
        if one_embedding_step and judge.task.kind == "text" and t == targets[0]:
            out.append(("zoocodec auto, one embedding step", f"target={t}%", auto(t, token_rows=False)))
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
