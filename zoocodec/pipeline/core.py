"""compress / decompress / inspect: one model end to end.

compress streams the model tensor by tensor: choose a spec (pipeline/policy.py: override
pattern, else lossless for small, 1-D or non-float tensors, else the model-wide spec; the
default spec keeps every tensor at or above SAFE_SQNR_DB), encode, append the payloads to the
container, keep only statistics. Nothing else holds the weights.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zstandard

from zoocodec import __version__, budget, plan
from zoocodec.container import Container
from zoocodec.device import Device, resolve
from zoocodec.errors import ContainerError, ZoocodecError
from zoocodec.fsutil import check_output
from zoocodec.header import ITEMSIZE, Header, Source, Stats, TensorEntry
from zoocodec.kernels.backend import to_numpy
from zoocodec.methods import MethodSpec, TensorData, parse_spec
from zoocodec.methods.arrays import ErrorStats, error_stats
from zoocodec.methods.base import Coded
from zoocodec.methods.lossless import native_dtype
from zoocodec.pipeline import batch as batch_mod, zoo
from zoocodec.pipeline.modelio import (
    STREAMED_FORMATS,
    LazyTensors,
    ModelSource,
    open_model,
    output_format,
    to_torch,
    torch_dtype,
    write_model,
)
from zoocodec.pipeline.policy import DEFAULT_MIN_SIZE, DEFAULT_SPEC, Overrides, choose_spec, safe_default

if TYPE_CHECKING:  # (torch is imported by what makes torch tensors: compress reads NumPy arrays)
    import torch

# the attached files (config, tokenizer), outside the weights' ratio: on minilm's 0.76 MB, level 19
# took 163 ms of CPU, more than quantizing and coding its 91 MB of weights; level 9 14 ms for 11%
# more (+31 KB), level 3 3.6 ms for 10% more again (+30 KB). A small file costs little at 19: an ONNX graph
# without its initializers (the outside-zoo ViT's: 3,873 -> 3,411 bytes, 0.03 of its 2.9 bits/weight), a config
FILES_ZSTD_LEVEL, FILES_SMALL, FILES_LEVEL_SMALL = 3, 64 << 10, 19


@dataclass
class TensorReport:
    name: str
    shape: tuple[int, ...]
    dtype: str
    method: str
    bytes_in: int
    bytes_out: int
    mse: float = 0.0
    max_err: float = 0.0
    sqnr_db: float = math.inf
    device: str = "cpu"  # where the quantizer ran (methods without a GPU path run on the CPU)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.bytes_out / max(self.numel, 1)

    @property
    def ratio(self) -> float:
        return self.bytes_in / max(self.bytes_out, 1)


@dataclass
class Report:
    """What compress did: per-tensor sizes and errors, totals, time."""

    path: Path | None
    tensors: list[TensorReport] = field(default_factory=list)
    file_bytes: int = 0
    attached_bytes: int = 0
    seconds: float = 0.0
    device: str = "cpu"  # the device asked for, resolved (Device.label)

    @property
    def bytes_in(self) -> int:
        return sum(t.bytes_in for t in self.tensors)

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def weight_bytes(self) -> int:
        """The file's size without the attached non-weight files (config, tokenizer, graph)."""
        return self.file_bytes - self.attached_bytes

    @property
    def ratio(self) -> float:
        return self.bytes_in / max(self.weight_bytes, 1)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weight_bytes / max(self.params, 1)

    @property
    def sqnr_db(self) -> float:
        """Model-level SQNR over all lossy tensors (signal and noise energy summed)."""
        noise = sum(t.mse * t.numel for t in self.tensors)
        signal = sum(t.mse * t.numel * 10 ** (t.sqnr_db / 10) for t in self.tensors if math.isfinite(t.sqnr_db))
        return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def load(model: str | os.PathLike | dict) -> ModelSource:
    """A path, a zoo name, or a dict of tensors -> ModelSource."""
    return open_model(zoo.locate(model) if isinstance(model, (str, os.PathLike)) else model)


def compress(model: str | os.PathLike | dict, out: str | os.PathLike, spec: str | MethodSpec = DEFAULT_SPEC,
             overrides: Overrides | dict | None = None, min_size: int = DEFAULT_MIN_SIZE,
             allow_nonfinite: bool = False, progress: Callable[[str], None] | None = None,
             plan: dict[str, MethodSpec | str] | None = None, meta: dict[str, Any] | None = None,
             device: str | Device = "cpu", batch: bool = True,
             targets: dict[str, np.ndarray] | None = None,
             coded: dict[str, tuple[MethodSpec, Coded]] | None = None) -> Report:
    """Compress `model` (path, zoo name, or dict of tensors) into the container `out`.

    `device` (cpu, gpu, cuda:N, auto) is where the quantizers run; the bytes are the same.
    `batch`: tensors read ahead, quantized in same-shape groups and coded on threads
    (pipeline/batch.py); False: one tensor at a time (the least memory). The bytes are the same.

    Spec precedence per tensor: `plan` (exact names, e.g. from bit allocation), then
    `overrides` (name patterns), then lossless for small or non-float tensors, then `spec`.
    `meta` (JSON) is stored in the header, e.g. the decisions and metric of automatic mode.
    `targets` (native arrays by tensor name, same shape and dtype) are quantized in place of
    the model's values, e.g. weights already on their grid, whose indices data-aware rounding
    chose (zoocodec.tuning.calibrate); errors and SQNR are still measured against the model's own.
    A tensor of at least `min_size` weights equal to an earlier one (tied embedding and output
    head weights) is stored once: the header's `aliases` maps its name to the stored one's.
    `coded` (tensor name -> (spec, streams coded before under it), e.g. automatic mode's choice
    of a coder per tensor, which codes each candidate): a stream of a tensor written with that
    exact spec, whose symbols are the ones coded, is written from there (the same bytes).
    """
    spec = parse_spec(spec)
    plan = {k: parse_spec(v) for k, v in (plan or {}).items()}
    overrides = overrides if isinstance(overrides, Overrides) else Overrides(overrides)
    dev = resolve(device)
    check_output(Path(out))
    source = load(model)
    report = Report(Path(out), device=dev.label)
    start = time.perf_counter()
    entries = []
    floored = spec == parse_spec(DEFAULT_SPEC)
    targets, originals = dict(targets or {}), {}
    aliases: dict[str, str] = {}
    stored: dict[tuple, list[str]] = {}

    def tensors():
        for t in source.tensors():
            if t.array.size >= min_size:  # tied weights: the same values under a second name
                key = (t.dtype, t.array.shape, _sample(t.array))
                same = next((n for n in stored.get(key, ()) if _equal(t.array, source.tensor(n).array)), None)
                if same is not None:
                    aliases[t.name] = same
                    targets.pop(t.name, None)
                    continue
                stored.setdefault(key, []).append(t.name)
            moved = targets.pop(t.name, None)
            if moved is None:
                yield t
                continue
            moved = np.asarray(moved)
            if moved.shape != t.array.shape or moved.dtype != t.array.dtype:
                raise ZoocodecError(f"target values of {t.name!r}: {moved.dtype}{list(moved.shape)}, the tensor is "
                                    f"{t.array.dtype}{list(t.array.shape)}")
            originals[t.name] = t
            yield TensorData(t.name, t.dtype, moved)
        if targets:
            raise ZoocodecError(f"target values for {sorted(targets)[0]!r}, which is not a tensor of the model")

    def finish(t: TensorData, chosen: MethodSpec, q) -> tuple:  # on a coding thread (pipeline/batch.py)
        on_gpu, stats = chosen.gpu and dev.is_gpu, None
        if floored and chosen is spec:  # the default spec's floor, on the reconstruction made anyway
            stats = q.stats or error_stats(t, to_numpy(q.recon))  # (recon is None only where stats are set)
            safe = safe_default(t, spec, stats)
            if safe is not spec:
                chosen, q, on_gpu, stats = safe, safe.quantize(t), False, None
        if t.name in originals:  # moved before quantizing: the error is against the model's own values
            stats = error_stats(originals.pop(t.name), to_numpy(q.recon))
        kept = (coded or {}).get(t.name)
        # the reconstruction is dropped once measured: coding holds the tensor and its symbols only
        return t, chosen, chosen.code(t, q, recon=False, stats=stats,
                                      kept=kept[1] if kept is not None and kept[0] == chosen else None), on_gpu

    def choose(t: TensorData) -> MethodSpec:
        return choose_spec(t, spec, overrides, min_size, allow_nonfinite, plan, floor=False)

    window, threads = (None, batch_mod.THREADS) if batch else (0, 0)
    with Container.create(out) as c, dev.activate(), contextlib.closing(
            batch_mod.run(tensors(), choose, finish, dev.xp, window, threads, recon=bool(targets))) as results:
        for t, chosen, enc, on_gpu in results:
            segments = {k: c.add_segment(v) for k, v in enc.segments.items()}
            stats = enc.stats or ErrorStats(power=math.inf)  # lossless: no error
            mse, max_err, sqnr = stats.mse, stats.max_err, stats.sqnr_db
            tr = TensorReport(t.name, tuple(t.array.shape), t.dtype, str(chosen), t.array.nbytes,
                              sum(len(v) for v in enc.segments.values()), mse, max_err, sqnr,
                              dev.label if on_gpu else "cpu")
            report.tensors.append(tr)
            entries.append(TensorEntry(t.name, tr.shape, t.dtype, chosen, enc.side, segments,
                                       Stats(mse, max_err, None if math.isinf(sqnr) else sqnr)))
            if progress:
                progress(t.name)
        files = {name: c.add_segment(zstandard.ZstdCompressor(
                     level=FILES_LEVEL_SMALL if len(data) <= FILES_SMALL else FILES_ZSTD_LEVEL).compress(data))
                 for name, data in sorted(source.files.items())}
        c.head = Header(
            Source(source.format, source.path.name if source.path else None, source.layout), tuple(entries), files,
            options={"spec": spec.to_dict(), "overrides": overrides.to_list(), "min_size": min_size,
                     "planned": sorted(plan)},
            meta=meta or {}, aliases=aliases, zoocodec=__version__,
        )
    report.seconds = time.perf_counter() - start
    report.file_bytes = Path(out).stat().st_size
    report.attached_bytes = c.head.attached_bytes
    return report


def _sample(a: np.ndarray, runs: int = 64, width: int = 64) -> bytes:
    """`runs` evenly spaced runs of `width` bytes from the start to (nearly) the end:
    tensors that differ almost always differ here, and only tensors that agree are compared whole
    (a hash of every byte cost as much CPU as quantizing: 34 ms for minilm's 47 MB embedding;
    4,096 single bytes spread over the tensor 4-5 ms for the model, one cache miss each, where
    64 cache lines cost 64)."""
    b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    if b.size <= runs * width:
        return b.tobytes()
    stride = (b.size - width) // (runs - 1)
    return np.lib.stride_tricks.as_strided(b, (runs, width), (stride, 1), writeable=False).tobytes()


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Are the bytes of `a` those of `b` (the model's tensor, read again from the source)?"""
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        np.ascontiguousarray(a).reshape(-1).view(np.uint8), np.ascontiguousarray(b).reshape(-1).view(np.uint8))


class ArchiveBase:
    """An open .zc file: its header, tensor entries, attached files, and per-tensor decoding
    with every failure turned into a ContainerError naming the tensor.

    `sequence` says which kind of file a subclass reads: one model (Archive) or the members
    of a checkpoint sequence (pipeline.sequence.SeqArchive); the other kind is refused.
    """

    sequence: bool = False

    def __init__(self, path: str | os.PathLike, verify: bool = False):
        """`verify`: check every byte of the file on open (Container.verify); without it each
        tensor's bytes are checked as they are read."""
        self.container = Container.open(path, verify=verify)
        self.head = self.container.head  # the typed header (zoocodec/header.py), validated
        self.header = self.container.header  # the same as JSON
        if (self.head.sequence is not None) != self.sequence:
            self.container.close()
            raise ContainerError(
                f"{path}: not a sequence container (use zoocodec.Archive for a single model)" if self.sequence else
                f"{path}: holds a sequence of models; read it with `zoocodec decompress-seq` "
                f"or zoocodec.pipeline.sequence.SeqArchive")
        self.plan = {e.name: e for e in self.head.tensors}  # typed entries by name
        self.entries = {t["name"]: t for t in self.header["tensors"]}  # the same as JSON
        self.aliases = self.head.aliases  # tied weights: alias -> stored name

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def names(self) -> list[str]:
        return list(self.plan)

    def decode(
        self,
        name: str,
        run: Callable[[MethodSpec, dict, dict[str, memoryview], tuple[int, ...], str], np.ndarray],
        segments: dict[str, bytes] | None = None,
    ) -> np.ndarray:
        """run(spec, side, segments, shape, dtype) on tensor `name`'s entry, errors named
        (`segments`: its payloads, when the caller read them already)."""
        name = self.aliases.get(name, name)
        if name not in self.plan:
            raise ZoocodecError(f"no tensor {name!r} in {self.container.path}")
        e = self.plan[name]
        with self._named(e.where):
            spec = e.spec
            if segments is None:
                segments = dict(
                    zip(e.segments, self.container.segments([(e.where, s) for s in e.segments.values()]), strict=True)
                )
            budget.check_tensor(e.where, e.numel, native_dtype(e.dtype).itemsize)
            with np.errstate(over="raise", invalid="raise"):  # (forged side info: values past the dtype)
                array = run(spec, e.side, segments, e.shape, e.dtype)
        if array.shape != e.shape:
            raise ContainerError(
                f"{self.container.path}: {e.where} decoded to shape {array.shape}, header says {e.shape}"
            )
        return array

    @contextlib.contextmanager
    def _named(self, where: str):
        """Every failure of decoding one tensor as one ContainerError naming the file and tensor."""
        try:
            yield
        except MemoryError:
            raise ContainerError(f"{self.container.path}: {where}: out of memory decoding it") from None
        except ZoocodecError as err:
            raise ContainerError(f"{self.container.path}: {where}: {err}") from None
        except FloatingPointError:  # (np.errstate in decode: a value past its dtype's range, or NaN)
            raise ContainerError(
                f"{self.container.path}: {where} decodes to values outside its dtype's range") from None
        except (KeyError, ValueError, TypeError, IndexError, OverflowError) as err:
            raise ContainerError(
                f"{self.container.path}: {where} cannot be decoded ({type(err).__name__}: {err})"
            ) from None

    def files(self) -> dict[str, bytes]:
        """The model's attached files (ONNX graph, Hugging Face config and tokenizer)."""
        return self.container.files()

    def verify_unread(self) -> None:
        """Check every byte a full decode does not check as it reads the tensors (padding,
        attached files): with it, a decode of every tensor has checked the whole file."""
        self.container.verify(skip=[s.offset for e in self.head.tensors for s in e.segments.values()])

    def beside_load(self, dev: Device) -> None:
        """What decompress does beside a load's decoding pass: the padding check (on a GPU, done
        before), and the header's JSON freed (a load never shows it; freeing its objects took
        about 0.2 ms after the pass)."""
        if not dev.is_gpu:
            self.verify_unread()
        self.header = self.entries = self.container.header = None

    def check_budget(self, streamed: bool = False) -> None:
        """Refuse, before decoding anything, a file whose full decode would pass the memory budget
        (`streamed`: the tensors are written one at a time, so only the largest one counts)."""
        claims = [(e.numel, ITEMSIZE[e.dtype]) for e in self.head.tensors]
        if streamed and claims:
            claims = [max(claims, key=lambda c: c[0] * c[1])]
        budget.check_total(f"{self.container.path}: decoding {'its largest' if streamed else 'every'} tensor",
                           claims, sum(self.container.file_sizes().values()))


def _largest_first(e: TensorEntry) -> int:
    return -e.raw_bytes


class Archive(ArchiveBase):
    """An open .zc file of one model."""

    def read(self, name: str) -> np.ndarray:
        """Decode one tensor to its native NumPy array (bfloat16 as uint16 bits)."""
        if name not in self.plan:
            raise ZoocodecError(f"no tensor {name!r} in {self.container.path}")
        return self.read_many([name])[name]

    def read_many(self, names: list[str], threads: int = 0,
                  convert: Callable[[np.ndarray, TensorEntry], Any] | None = None,
                  beside: Callable[[], None] | None = None) -> dict[str, Any]:
        """Decode tensors to native arrays (`convert(array, entry)`: to what it returns, e.g. a
        torch tensor), a batch of up to plan.BATCH_BYTES at a time. The payloads its methods
        declare fused (zoocodec/plan.py) are entropy-decoded and dequantized into their dtype by
        the native pool straight from the mapped file into one block of huge pages (its arrays are
        views of it: the block is freed when the last of them is, or kept for the next load), a
        native pass per batch on a plan.Stream: the pass starts on the first tensors while the
        jobs of the next are built, and the views are converted (and `beside()` called, once)
        while it runs. Format 4: the batch's chunks are checked (XXH3-64) on that pass, each
        payload's just before the tasks that read it. The other tensors are decoded by their
        method's own decode (from copies: a method may keep views of what it decodes)."""
        out = {}
        on_pass = self.container.version >= 4  # chunk checksums checked on the decoding pass (plan.Stream)
        chunk = self.container.crc_chunk
        entries = [self.plan[n] for n in names]
        for e in entries:
            if budget.over_tensor(e.numel, ITEMSIZE[e.dtype]):
                with self._named(e.where):
                    budget.check_tensor(e.where, e.numel, ITEMSIZE[e.dtype])
        block = plan.outputs(entries)  # (one for all: the next load reuses it whole, plan_bind.cpp)
        for batch in plan.batches(entries):
            items, first = [], {}  # first: where each entry's payloads start in items
            for e in batch:
                first[e.name] = len(items)
                items += [(e.where, s) for s in e.segments.values()]
            views = self.container.views(items, check=not on_pass)
            stream = None
            try:
                stream = plan.Stream(block, threads, mapped=on_pass,  # (each payload checked: its pages dropped)
                                     overlap=len(batch) > 2)
                arrays, rest, segments = {}, [], {}
                try:
                    for e in sorted(batch, key=_largest_first):  # (the pass starts on the largest tensor)
                        at = first[e.name]
                        segs = segments[e.name] = dict(zip(e.segments, views[at : at + len(e.segments)], strict=True))
                        with self._named(e.where):
                            job = plan.fused_job(e.spec, e, segs)
                        if on_pass:
                            for key, seg in e.segments.items():
                                stream.check(e.where, segs[key], chunk, seg.crc)
                        if job is None:
                            rest.append(e.name)
                        else:
                            with self._named(e.where):  # (a group-wise job's side streams decode here)
                                array = stream.add(e, job, segs[job.stream])
                            arrays[e.name] = array if convert is None else convert(array, e)
                except ContainerError:
                    if on_pass:  # (side info read unchecked: a damaged payload is named as such first)
                        self.container.check(items, views)
                    raise
                if beside is not None:
                    beside()
                    beside = None
                try:
                    _, left = stream.finish()
                except ContainerError as err:
                    raise ContainerError(f"{self.container.path}: {err}") from None
                finally:
                    stream = None
                for name in rest + left:
                    e = self.plan[name]
                    if name not in left:
                        plan.give_back(block, e)  # (its slot: resident when the block was a kept one)
                    copies = {k: bytes(v) for k, v in segments.pop(name).items()}
                    self.container.drop_pages(e.segments.values())  # else mapped and copied
                    array = self.decode(name, lambda spec, side, segs, shape, dtype: spec.decode(
                        side, segs, shape, dtype, consume=True), copies)
                    arrays[name] = array if convert is None else convert(array, e)
                    del copies
            finally:
                if stream is not None:
                    stream.cancel()
                segments = None
                self.container.release(items, views, drop=not on_pass)
            out.update((e.name, arrays[e.name]) for e in batch)
        del block
        if beside is not None:  # (no batch)
            beside()
        return out

    def tensor(self, name: str, device: str | Device = "cpu") -> torch.Tensor:
        """One tensor as torch, on `device`: on a GPU, payloads whose method declares a fused
        decoder (zoocodec/plan.py: uniform, rdoq, dq, kmeans, lossless) are decoded by CUDA kernels straight into
        device memory (zoocodec/kernels/decode.py); other payloads are decoded on the host and copied."""
        name = self.aliases.get(name, name)
        dev = resolve(device)
        if dev.is_gpu:
            from zoocodec.kernels import decode

            with dev.activate():
                t = decode.tensor(self, name)
            if t is not None:
                return t
        return to_torch(self.read(name), self.plan[name].dtype).to(dev.torch)


def decompress(path: str | os.PathLike, out: str | os.PathLike | None = None, fmt: str | None = None,
               progress: Callable[[str], None] | None = None,
               device: str | Device = "cpu") -> dict[str, torch.Tensor] | Path:
    """Decode every tensor (as torch tensors on `device`). With `out`, write the model in its
    source format (or `fmt`): a file on the host, so `device` then only says where decoding runs."""
    dev = resolve(device)
    with Archive(path) as a:
        src = a.head.source
        if out is not None:
            fmt = output_format(out, src.format, a.head.files, fmt)
        a.check_budget(streamed=out is not None and fmt in STREAMED_FORMATS)
        if out is not None or dev.is_gpu:
            a.verify_unread()
        on_device = {}
        if dev.is_gpu:  # every payload the CUDA decoder takes, in one launch per dtype
            from zoocodec.kernels import decode

            with dev.activate():
                on_device = decode.tensors(a, a.names())
        def get(name: str) -> torch.Tensor:
            t = on_device.pop(name) if name in on_device else a.tensor(name, dev)
            if progress:
                progress(name)
            return t

        if out is None:  # the rest in batches of one native pass each (Archive.read_many)
            host = a.read_many([n for n in a.plan if n not in on_device],
                               convert=lambda array, e: to_torch(array, e.dtype), beside=lambda: a.beside_load(dev))
            tensors = {}
            for name in a.plan:
                if name in on_device:
                    tensors[name] = on_device.pop(name)
                else:
                    t = host.pop(name)
                    tensors[name] = t.to(dev.torch) if dev.is_gpu else t
                if progress:
                    progress(name)
            return tensors | {alias: tensors[name] for alias, name in a.aliases.items()}  # tied: one tensor
        kinds = {n: (torch_dtype(e.dtype), e.shape) for n, e in a.plan.items()}
        kinds |= {alias: kinds[name] for alias, name in a.aliases.items()}
        # safetensors and Hugging Face folders are written tensor by tensor as they are decoded
        write_model(LazyTensors(kinds, lambda n: get(a.aliases.get(n, n)).cpu()), out, src.format, src.layout,
                    a.files(), fmt)
        return Path(out)


def load_into(module: torch.nn.Module, path: str | os.PathLike, device: str | Device = "cpu",
              strict: bool = True) -> torch.nn.Module:
    """Decode a .zc into `module`'s parameters and buffers on `device`: the decoded tensors
    become the parameters (load_state_dict(assign=True)), so nothing is decoded twice or copied."""
    tensors = decompress(path, device=device)
    try:
        module.load_state_dict(tensors, strict=strict, assign=True)
    except RuntimeError as e:
        raise ZoocodecError(
            f"{path}: the tensors do not fit {type(module).__name__}: {str(e).splitlines()[0]}"
        ) from None
    return module


def inspect(path: str | os.PathLike) -> dict[str, Any]:
    """The header's totals plus per-tensor rows (shape, method, bits/weight, ratio, SQNR)."""
    with Archive(path) as a:
        h = a.head
        rows = [{
            "name": e.name, "shape": list(e.shape), "dtype": e.dtype, "method": str(e.spec),
            "lossless": e.spec.lossless,
            "bits_per_weight": 8 * e.stored_bytes / max(e.numel, 1),
            "ratio": e.raw_bytes / max(e.stored_bytes, 1), "bytes": e.stored_bytes,
            "sqnr_db": None if e.stats is None else e.stats.sqnr_db,
            "max_err": None if e.stats is None else e.stats.max_err,
        } for e in h.tensors]
        size = Path(path).stat().st_size
        weight_bytes = size - h.attached_bytes
        return {
            "path": str(path), "file_bytes": size, "weight_bytes": weight_bytes, "params": h.params,
            "bytes_in": h.raw_bytes, "ratio": h.raw_bytes / max(weight_bytes, 1),
            "bits_per_weight": 8 * weight_bytes / max(h.params, 1),
            "source": h.source.format, "zoocodec": h.zoocodec, "format_version": h.format_version,
            "options": h.options, "meta": h.meta, "tensors": rows, "aliases": h.aliases,
        }
