"""Read a model's tensors from safetensors, PyTorch, Hugging Face folders and ONNX; write them back.

Reading streams tensor by tensor (a safetensors tensor is its own copy-on-write mapping of the
file's pages, released with the tensor; a .pt checkpoint is memory-mapped), and safetensors
files and Hugging Face folders are written tensor by tensor (LazyTensors), so neither holds the
model: peak memory follows the largest tensor (bench/bench_memory.py). PyTorch and ONNX outputs
are built whole by their libraries.
What is needed to write the model back in its own format (nesting of a checkpoint, the ONNX
graph, a Hugging Face folder's small files and shard map) travels as `layout` (JSON) and
`files` (bytes) in the container.
"""
from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoocodec.budget import ATTACHED_FILE_LIMIT
from zoocodec.errors import ModelFormatError
from zoocodec.fsutil import atomic_file, atomic_folder, check_output, inside, plain_relpath
from zoocodec.header import DTYPES
from zoocodec.methods.base import TensorData

if TYPE_CHECKING:
    import torch

# torch is imported where a torch tensor is read or made: compressing a safetensors file or a Hugging
# Face folder reads NumPy arrays and never imports it (about a second of every such process).


@cache
def torch_dtypes() -> dict:
    """torch dtype -> zoocodec's dtype name, for the dtypes zoocodec handles."""
    import torch

    return {getattr(torch, name): name for name in DTYPES}


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, name)


HF_SMALL_FILE_LIMIT = ATTACHED_FILE_LIMIT  # what a reader accepts as attached (zoocodec.budget)


@dataclass
class ModelSource:
    """A model opened for reading: names in order, a lazy tensor stream, and its layout."""

    format: str  # safetensors | pytorch | hf | onnx | dict
    path: Path | None
    names: list[str]
    _get: Any  # name -> TensorData
    layout: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    _ahead: Any = None  # name -> None: start reading a tensor's bytes from storage, in the background

    def tensor(self, name: str) -> TensorData:
        """One tensor by name, read again from the source."""
        return self._get(name)

    def torch(self, name: str) -> torch.Tensor:
        """One tensor by name as a torch tensor (imports torch)."""
        t = self._get(name)
        return to_torch(t.array, t.dtype)

    def tensors(self) -> Iterator[TensorData]:
        """Every tensor in order; while one is used, the next one's bytes are read from storage
        (safetensors), so a model larger than the page cache does not wait for its reads."""
        for i, name in enumerate(self.names):
            if self._ahead is not None and i + 1 < len(self.names):
                self._ahead(self.names[i + 1])
            yield self.tensor(name)


def to_tensordata(name: str, t: torch.Tensor) -> TensorData:
    import torch

    dtype = torch_dtypes().get(t.dtype)
    if dtype is None:
        raise ModelFormatError(f"tensor {name!r} has dtype {t.dtype}, which zoocodec does not handle")
    t = t.detach().cpu().contiguous()
    array = t.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else t.numpy()
    return TensorData(name, dtype, array)


def _numpy_tensordata(name: str, a: np.ndarray, bfloat16: bool = False) -> TensorData:
    """TensorData of a NumPy array (bfloat16: its uint16 bit patterns), refusing dtypes zoocodec does not handle."""
    dtype = "bfloat16" if bfloat16 else a.dtype.name
    if dtype not in DTYPES:
        raise ModelFormatError(f"tensor {name!r} has dtype {a.dtype}, which zoocodec does not handle")
    # (np.require keeps a 0-d array 0-d: ascontiguousarray would make it 1-d)
    return TensorData(name, dtype, np.require(a.view(np.uint16) if bfloat16 else a, requirements="C"))


def to_torch(array: np.ndarray, dtype: str) -> torch.Tensor:
    import torch

    if not (array.flags.c_contiguous and array.flags.writeable):  # (a decoded array is both: no call)
        array = np.require(array, requirements="CW")  # keeps 0-d shapes, unlike ascontiguousarray
    if dtype == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


# ---- reading ------------------------------------------------------------------------
def open_model(model: str | os.PathLike | dict) -> ModelSource:
    """A path (file or Hugging Face folder) or a dict of tensors -> ModelSource."""
    if isinstance(model, dict):
        import torch

        bad = [k for k, v in model.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise ModelFormatError(f"model dict entry {bad[0]!r} is not a torch.Tensor")
        return ModelSource("dict", None, list(model), lambda n: to_tensordata(n, model[n]))
    path = Path(model)
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file or directory")
    if path.is_dir():
        return _open_hf(path)
    kind = sniff(path)
    return {"safetensors": _open_safetensors, "pytorch": _open_pytorch, "onnx": _open_onnx}[kind](path)


def sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save's zip, or a legacy pickle (any protocol)
        return "pytorch"
    if path.suffix == ".onnx":
        return "onnx"
    raise ModelFormatError(
        f"{path}: not a model zoocodec reads (safetensors, PyTorch .pt, ONNX, or a Hugging Face folder)"
    )


def _open_safetensors(path: Path) -> ModelSource:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:  # validates the header and the offsets
            names = list(f.keys())
            meta = f.metadata() or {}
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            entries = json.loads(f.read(size))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFormatError(f"{path}: unreadable safetensors file ({e})") from None
    return ModelSource(
        "safetensors", path, names, lambda n: _read_tensor(path, 8 + size, n, entries[n]), {"metadata": meta},
        _ahead=lambda n: _read_ahead(path, 8 + size, entries[n]),
    )


_ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I8": "int8",
              "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool"}


MAP_MIN = 256 << 10  # bytes: smaller tensors are read (a mapping of their own costs more than the copy)


def _read_tensor(path: Path, start: int, name: str, entry: dict) -> TensorData:
    """One tensor of a safetensors file as a private (copy-on-write) mapping of its bytes: the page
    cache's pages, not a copy (reading minilm's 91 MB into fresh memory cost 35 ms of CPU, more than
    quantizing it). The mapping goes with the array; safetensors' own mmap would keep every tensor
    read so far resident until the file is closed. Tensors under MAP_MIN bytes, and bytes not
    aligned for their dtype, are read into the array's own memory."""
    if entry["dtype"] not in _ST_DTYPES:
        raise ModelFormatError(f"{path}: dtype {entry['dtype']}, which zoocodec does not handle")
    begin, end = entry["data_offsets"]
    dtype, shape = _ST_DTYPES[entry["dtype"]], entry["shape"]
    bits = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)  # (bfloat16 travels as its bit patterns)
    if end - begin != math.prod(shape) * bits.itemsize:
        raise ModelFormatError(f"{path}: a tensor's bytes are cut short")
    if end == begin:
        return TensorData(name, dtype, np.empty(shape, dtype=bits))
    with open(path, "rb") as f:
        if start + end > os.fstat(f.fileno()).st_size:
            raise ModelFormatError(f"{path}: a tensor's bytes are cut short")
        at = start + begin
        if at % bits.itemsize or end - begin < MAP_MIN:
            a = np.empty(shape, dtype=bits)
            f.seek(at)
            if f.readinto(memoryview(a.reshape(-1).view(np.uint8))) != end - begin:
                raise ModelFormatError(f"{path}: a tensor's bytes are cut short")
            return TensorData(name, dtype, a)
        base = at - at % mmap.ALLOCATIONGRANULARITY
        pages = mmap.mmap(f.fileno(), at + end - begin - base, access=mmap.ACCESS_COPY, offset=base)
    raw = np.frombuffer(pages, dtype=np.uint8, count=end - begin, offset=at - base)
    return TensorData(name, dtype, raw.view(bits).reshape(shape))


@cache
def _reader() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="zoocodec-read")


READ_AHEAD_MIN = 8 << 20  # bytes: smaller tensors are read when used (a hand-off costs more than it hides)


def _read_ahead(path: Path, start: int, entry: dict) -> None:
    """Ask the kernel to read a tensor's bytes into the page cache, on a thread (posix_fadvise
    WILLNEED waits while it queues the reads); nothing waits for it, and a failure changes nothing."""
    begin, end = entry["data_offsets"]
    if end - begin < READ_AHEAD_MIN:
        return

    def ahead():
        with contextlib.suppress(OSError), open(path, "rb") as f:
            os.posix_fadvise(f.fileno(), start + begin, end - begin, os.POSIX_FADV_WILLNEED)

    if hasattr(os, "posix_fadvise"):
        _reader().submit(ahead)


def _open_pytorch(path: Path) -> ModelSource:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise ModelFormatError(f"{path}: unreadable PyTorch checkpoint ({str(e).splitlines()[0]})") from None
        obj = _torch_load_plain(path)
    except pickle.UnpicklingError as e:
        raise _refused(path, e) from None
    except Exception as e:  # zipfile / EOF errors of a damaged file
        raise ModelFormatError(f"{path}: unreadable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    nest = None
    if isinstance(obj, dict) and not _is_state_dict(obj):
        nest = next((k for k in ("state_dict", "model", "model_state_dict") if _is_state_dict(obj.get(k))), None)
        if nest is None:
            raise ModelFormatError(f"{path}: no state_dict of tensors found (top-level keys: {list(obj)[:8]})")
        obj = obj[nest]
    if not _is_state_dict(obj):
        raise ModelFormatError(f"{path}: the checkpoint is a {type(obj).__name__}, not a state_dict of tensors")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    prefix = "module." if sd and all(k.startswith("module.") for k in sd) else ""
    tensors = {k[len(prefix):]: v for k, v in sd.items()}
    return ModelSource("pytorch", path, list(tensors), lambda n: to_tensordata(n, tensors[n]),
                       {"nest": nest, "prefix": prefix})


def _torch_load_plain(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, e) from None
    except Exception as e:
        raise ModelFormatError(f"{path}: unreadable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def _refused(path: Path, e: Exception) -> ModelFormatError:
    """Torch's refusal in one line: what it found, never its advice to unpickle anyway."""
    found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed global|\.\s|\.?$)", str(e), re.M)
    what = re.sub(r"\x1b\[[0-9;]*m|\s+", " ", found.group(1) if found else "objects of unknown kinds").strip()[:120]
    return ModelFormatError(f"{path}: the checkpoint holds objects other than tensors and plain containers "
                            f"({what}); zoocodec never unpickles code")


def _is_state_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and any(isinstance(v, torch.Tensor) for v in obj.values()) and all(
        isinstance(k, str) for k in obj
    )


def _open_hf(path: Path) -> ModelSource:
    root = path.resolve()
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(_confined(root, "model.safetensors.index.json").read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ModelFormatError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ModelFormatError(f"{index}: weight_map is not an object of tensor name -> shard file")
        shards = sorted(set(weight_map.values()))
    elif (path / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise ModelFormatError(f"{path}: a folder without model.safetensors or model.safetensors.index.json")
    for s in shards:
        why = plain_relpath(s)
        if why or not s.endswith(".safetensors"):
            raise ModelFormatError(f"{index}: shard name {s!r} {why or 'does not end in .safetensors'}")
    sources = {s: _open_safetensors(_confined(root, s)) for s in shards}
    owner = {n: s for s, src in sources.items() for n in src.names}
    names = [n for s in shards for n in sources[s].names]
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into linked folders
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if here != root or not d.startswith("."))
        for entry in dirnames + sorted(filenames):
            rel = (here / entry).relative_to(root).as_posix()
            if rel.startswith(".") or rel.endswith(".safetensors"):
                continue
            f = _confined(root, rel)
            if entry not in dirnames and f.is_file() and f.stat().st_size <= HF_SMALL_FILE_LIMIT:
                files[rel] = f.read_bytes()
    layout = {
        "shards": {n: owner[n] for n in names},
        "metadata": {s: src.layout["metadata"] for s, src in sources.items()},
    }
    return ModelSource("hf", path, names, lambda n: sources[owner[n]]._get(n), layout, files,
                       _ahead=lambda n: sources[owner[n]]._ahead(n))


def _confined(root: Path, rel: str) -> Path:
    """root / rel, refusing a link (or a name) that leads out of the model folder."""
    try:
        return inside(root, rel)
    except ValueError:
        raise ModelFormatError(f"{root / rel}: a link out of the model folder; zoocodec does not follow links out "
                               f"of a folder it reads (copy the folder with `cp -rL` to read it)") from None


def _open_onnx(path: Path) -> ModelSource:
    import onnx
    from onnx import numpy_helper

    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelFormatError(f"{path}: unreadable ONNX file ({type(e).__name__}: {e})") from None
    inits = {i.name: i for i in proto.graph.initializer}
    order = [i.name for i in proto.graph.initializer]
    del proto.graph.initializer[:]
    graph = proto.SerializeToString()

    def get(name: str) -> TensorData:
        a = numpy_helper.to_array(inits[name])
        return _numpy_tensordata(name, a, bfloat16=a.dtype.name == "bfloat16")

    return ModelSource("onnx", path, order, get, {}, {"model.onnx": graph})


# ---- writing ------------------------------------------------------------------------
FORMAT_SUFFIX = {".safetensors": "safetensors", ".pt": "pytorch", ".pth": "pytorch", ".bin": "pytorch", ".onnx": "onnx"}


OUTPUT_FORMATS = ("safetensors", "pytorch", "onnx", "hf")
STREAMED_FORMATS = ("safetensors", "hf")  # written tensor by tensor; the others hold the model whole


def output_format(out: str | os.PathLike, source_format: str, files, fmt: str | None = None) -> str:
    """The format write_model will use (`fmt`, else the suffix, else the source's), checked with
    the path before anything is decoded: one line for a bad format or an output that cannot be
    written. `files`: the attached files' names (the ONNX graph among them)."""
    out = Path(out)
    if fmt is not None and fmt not in OUTPUT_FORMATS:
        raise ModelFormatError(f"unknown output format {fmt!r} (formats: {', '.join(OUTPUT_FORMATS)})")
    fmt = fmt or FORMAT_SUFFIX.get(out.suffix) or ("hf" if source_format == "hf" and not out.suffix else source_format)
    fmt = "safetensors" if fmt == "dict" else fmt
    if fmt not in OUTPUT_FORMATS:
        raise ModelFormatError(f"cannot write format {fmt!r} (formats: {', '.join(OUTPUT_FORMATS)})")
    if fmt == "onnx" and "model.onnx" not in files:
        raise ModelFormatError("an ONNX file can only be written for a model that came from ONNX")
    check_output(out, folder=fmt == "hf")
    return fmt


def write_model(tensors: dict[str, torch.Tensor], out: str | os.PathLike, source_format: str,
                layout: dict, files: dict[str, bytes], fmt: str | None = None) -> str:
    """Write tensors as a model file/folder; format from `fmt`, the suffix, or the source."""
    out = Path(out)
    fmt = output_format(out, source_format, files, fmt)
    if fmt == "hf":
        _write_hf(tensors, out, layout, files)
    else:
        with atomic_file(out) as tmp:
            _WRITERS[fmt](tensors, tmp, layout, files)
    return fmt


class LazyTensors(Mapping):
    """Tensors whose dtype and shape are known before they exist: `get(name)` makes one when
    a writer asks for it, so a model is written tensor by tensor and never held whole."""

    def __init__(self, kinds: dict[str, tuple[torch.dtype, tuple[int, ...]]], get):
        self.kinds, self._get = kinds, get

    @classmethod
    def of(cls, tensors) -> LazyTensors:
        if isinstance(tensors, LazyTensors):
            return tensors
        return cls({k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}, tensors.__getitem__)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._get(name)

    def __iter__(self):
        return iter(self.kinds)

    def __len__(self) -> int:
        return len(self.kinds)

    def subset(self, names) -> LazyTensors:
        return LazyTensors({n: self.kinds[n] for n in names}, self._get)


# safetensors' own order: larger dtypes first (its Dtype enum, descending), then by name
_ST_ORDER = ["int64", "float64", "float32", "int32", "bfloat16", "float16", "int16", "int8", "uint8", "bool"]
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def _write_safetensors(tensors, path: Path, layout, files, metadata=None) -> None:
    """The bytes safetensors.torch.save_file writes (header, then the tensors in its order),
    one tensor at a time: each is made, written and released before the next."""
    import torch

    names_of = torch_dtypes()
    meta = metadata if metadata is not None else layout.get("metadata") or None
    lazy = LazyTensors.of(tensors)
    names = sorted(lazy, key=lambda n: (_ST_ORDER.index(names_of[lazy.kinds[n][0]]), n))
    header, offset = {}, 0
    if meta:
        header["__metadata__"] = {k: meta[k] for k in sorted(meta)}
    for n in names:
        dtype, shape = lazy.kinds[n]
        size = math.prod(shape) * dtype.itemsize
        header[n] = {"dtype": _ST_NAMES[names_of[dtype]], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for n in names:
            t = lazy[n]
            if (t.dtype, tuple(t.shape)) != lazy.kinds[n]:
                raise ModelFormatError(f"tensor {n!r}: {t.dtype} {tuple(t.shape)}, expected {lazy.kinds[n]}")
            if t.numel():
                f.write(memoryview(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()))
            del t


def _write_pytorch(tensors, path: Path, layout, files) -> None:
    import torch

    prefix = layout.get("prefix") or ""
    sd = {prefix + k: v for k, v in tensors.items()}
    torch.save({layout["nest"]: sd} if layout.get("nest") else sd, path)


def onnx_with_weights(graph: bytes, tensors: dict[str, torch.Tensor]):
    """An ONNX graph (serialized, without its weights) with `tensors` as its initializers: an onnx.ModelProto."""
    import onnx
    import torch
    from onnx import numpy_helper

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(graph)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelFormatError(f"the attached ONNX graph is corrupt ({type(e).__name__}: {e})") from None
    for name, t in tensors.items():
        a = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
        init = numpy_helper.from_array(a, name)
        if t.dtype == torch.bfloat16:
            init.data_type = onnx.TensorProto.BFLOAT16
        proto.graph.initializer.append(init)
    return proto


def _write_onnx(tensors, path: Path, layout, files) -> None:
    import onnx

    onnx.save(onnx_with_weights(files["model.onnx"], tensors), str(path))


def _write_hf(tensors, out: Path, layout, files) -> None:
    """A folder: the small files as they were, the weights in the same shards; it appears whole."""
    lazy = LazyTensors.of(tensors)
    groups: dict[str, list[str]] = {}
    for name in lazy:
        groups.setdefault(layout.get("shards", {}).get(name, "model.safetensors"), []).append(name)
    shards = {shard: lazy.subset(names) for shard, names in groups.items()}
    for rel in [*files, *shards]:
        why = plain_relpath(rel)
        if why or (rel in shards and not rel.endswith(".safetensors")) or (rel in files and rel in shards):
            raise ModelFormatError(f"cannot write {rel!r} into a model folder: the name "
                                   f"{why or 'is not a .safetensors shard or is used twice'}")
    _check_replaceable(out, {*files, *shards})
    with atomic_folder(out) as tmp:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        for shard, group in shards.items():
            (tmp / shard).parent.mkdir(parents=True, exist_ok=True)
            _write_safetensors(group, tmp / shard, {}, {}, metadata=layout.get("metadata", {}).get(shard) or None)


def _check_replaceable(out: Path, names: set[str]) -> None:
    """An existing folder is replaced only when it holds nothing but files this output writes."""
    if not out.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(out):
        for entry in dirnames + filenames:
            p = Path(dirpath) / entry
            rel = p.relative_to(out).as_posix()
            if p.is_symlink() or (entry in filenames and rel not in names) or (
                    entry in dirnames and not any(n.startswith(rel + "/") for n in names)):
                raise ModelFormatError(f"{out}: exists and holds {rel!r}, which this model does not write; "
                                       f"give a new folder or remove it")


_WRITERS = {"safetensors": _write_safetensors, "pytorch": _write_pytorch, "onnx": _write_onnx}
