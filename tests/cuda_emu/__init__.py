"""CUDA kernels on the CPU: zoocodec's `.cu` sources compiled by g++ against emu.h (each CUDA thread
a fiber, barriers and warp operations checked), launched through a NumPy-backed stand-in for the
part of CuPy the kernels' wrappers use. On a machine without a GPU it runs the kernels' own source
(indexing, parsing, bounds checks, the shared-memory and warp protocols), where a NumPy
transliteration only runs a copy of their algorithm. Arrays made by its creation functions end
at a page nobody may touch (or, with ZOOCODEC_EMU_GUARD=start, begin after one), so a kernel reading
or writing past one (or before it) fails its launch. It says
nothing of speed, of memory ordering between blocks (blocks run one after another) or of NVRTC's
FMA contraction (the host never contracts): the real GPU runs stay the `gpu` tests. x86-64 with
g++ only."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import mmap
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
FLAGS = ["-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-fno-strict-aliasing", "-w"]
KERNEL = re.compile(r"EMU_KERNEL\s+void\s+(\w+)\s*\(")
DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w ]*?\w)\s+(\w+)\[\]\s*;")
_libc = ctypes.CDLL(None, use_errno=True)
SHARED_LIMIT = 48 << 10  # dynamic shared memory a launch gets without raising the kernel's attribute


def available() -> str | None:
    """Why the emulator cannot run here, or None."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the CUDA emulator's fibers switch x86-64 stacks ({platform.machine()} here)"
    if shutil.which("g++") is None:
        return "the CUDA emulator needs g++"
    return None


class ndarray(np.lib.mixins.NDArrayOperatorsMixin):
    """A "device" array: a NumPy array the emulated kernels read and write through its pointer. Like
    CuPy's it is not a NumPy array: host arrays mixed into its operations, and implicit conversion to
    NumPy, raise TypeError (a host/device mix-up fails here as on a GPU); reductions and indexing give
    0-d arrays, NumPy's functions on it give device arrays (__array_function__)."""

    __module__ = "cupy"  # (zoocodec tells device arrays by their type's module)

    def __init__(self, host: np.ndarray):
        self._a = host

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    device = property(lambda self: _Context())
    data = property(lambda self: types.SimpleNamespace(ptr=self._a.ctypes.data))

    def __getattr__(self, name):
        if name.startswith("__"):  # (NumPy's __array_interface__ and kin: a device array gives none)
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _device(attr)
        return lambda *args, **kwargs: _device(attr(*_host(args), **_host(kwargs)))

    def __getitem__(self, key):
        return _device(self._a[_host(key)])

    def __setitem__(self, key, value):
        self._a[_host(key)] = _host(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_device(x) for x in self._a)

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __index__(self):
        return self._a.__index__()

    def __repr__(self):
        return f"emulated device array({self._a!r})"

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _device(getattr(ufunc, method)(*_host(inputs), **_host(kwargs)))

    def __array_function__(self, func, types_, args, kwargs):
        return _device(func(*_host(args), **_host(kwargs)))

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()

    def get(self, stream=None, order="C", out=None, blocking=True):
        return asnumpy(self, order=order, out=out)

    def set(self, arr, stream=None):
        self._a[...] = np.asarray(arr).reshape(self.shape)


def _device(x):
    """NumPy results as device arrays (scalars as 0-d arrays, as CuPy gives them)."""
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_device(v) for v in x)
    if isinstance(x, list):
        return [_device(v) for v in x]
    return x


def _host(x):
    """Device arrays (nested in tuples, lists and dicts) as their NumPy arrays; a host array is refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a host array where the device takes a device array")
    if isinstance(x, (tuple, list)):
        return type(x)(_host(v) for v in x)
    if isinstance(x, dict):
        return {k: _host(v) for k, v in x.items()}
    return x


def guarded(shape, dtype=np.float64) -> np.ndarray:
    """An uninitialised C-order array whose end (to its dtype's alignment) abuts a page nobody may touch:
    a kernel reading or writing past it faults, and the launch fails naming the thread (emu.h). With
    ZOOCODEC_EMU_GUARD=start the page is before the array's first byte instead, so reads before an
    array (a negative index) fault (the slow tier runs the gpu tests both ways)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    count = math.prod(shape)
    pages = -(-count * dtype.itemsize // mmap.PAGESIZE) + 1
    block = mmap.mmap(-1, pages * mmap.PAGESIZE)
    base = np.frombuffer(block, np.uint8).ctypes.data
    start = os.environ.get("ZOOCODEC_EMU_GUARD", "end") == "start"
    guard = base if start else base + (pages - 1) * mmap.PAGESIZE
    if _libc.mprotect(ctypes.c_void_p(guard), mmap.PAGESIZE, 0):
        raise OSError(ctypes.get_errno(), "mprotect of a device array's guard page")
    at = mmap.PAGESIZE if start else (
        ((pages - 1) * mmap.PAGESIZE - count * dtype.itemsize) // dtype.alignment * dtype.alignment)
    return np.frombuffer(block, dtype, count, at).reshape(shape)


def _creation(fill):
    def make(shape, dtype=np.float64, order="C"):
        out = guarded(shape, dtype)
        if fill is not None:
            out[...] = fill
        return ndarray(out)
    return make


def asarray(a, dtype=None, order=None):
    """A host array copied to the "device" (a device array of that dtype as it is), as cupy.asarray."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    host = np.asarray(a, dtype=dtype)
    out = guarded(host.shape, host.dtype)
    out[...] = host
    return ndarray(out)


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    host = a._a if isinstance(a, ndarray) else np.asarray(a)
    if out is not None:
        out[...] = host
        return out
    return np.array(host, order=order)


class Kernel:
    """One kernel of a compiled module, called as CuPy's RawKernel: (grid, block, args, shared_mem=)."""

    def __init__(self, library, name: str):
        self.name = name
        self.max_dynamic_shared_size_bytes = SHARED_LIMIT
        try:
            self._launch = getattr(library, f"emu_launch_{name}")
        except AttributeError:
            raise KeyError(f"no kernel {name!r} in the module (CUDA_ERROR_NOT_FOUND)") from None
        self._launch.restype = ctypes.c_char_p

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        dims = [*_dims(grid), *_dims(block)]
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise ValueError(f"{self.name}: {shared_mem} bytes of dynamic shared memory, over the kernel's "
                             f"{self.max_dynamic_shared_size_bytes} (CUDA_ERROR_INVALID_VALUE)")
        keep, pointers, sizes = [], [], []
        for i, a in enumerate(args):
            if isinstance(a, ndarray):
                cell = ctypes.c_void_p(a._a.ctypes.data)
                sizes.append(-1)
            elif isinstance(a, np.ndarray):
                raise TypeError(f"{self.name}: argument {i} is a host NumPy array (CuPy refuses it)")
            else:  # CuPy's scalars: NumPy's as they are, Python's int / float / bool as int64 / float64 / bool
                s = a if isinstance(a, np.generic) else np.bool_(a) if isinstance(a, bool) else \
                    np.int64(a) if isinstance(a, int) else np.float64(a) if isinstance(a, float) else None
                if s is None:
                    raise TypeError(f"{self.name}: argument {i} of unsupported type {type(a).__name__}")
                cell = ctypes.create_string_buffer(s.tobytes())
                sizes.append(s.itemsize)
            keep.append(cell)
            pointers.append(ctypes.addressof(cell))
        error = self._launch((ctypes.c_uint * 6)(*dims), ctypes.c_ulonglong(shared_mem),
                             (ctypes.c_void_p * max(len(args), 1))(*pointers),
                             (ctypes.c_longlong * max(len(args), 1))(*sizes), len(args))
        if error is not None:
            raise RuntimeError(f"emulated kernel {self.name}: {error.decode()}")


def _dims(d) -> list[int]:
    d = (d,) if isinstance(d, int) else tuple(int(x) for x in d)
    return [*d, *[1] * (3 - len(d))]


class RawModule:
    """cupy.RawModule(code=..., options=...): the source compiled for the emulator (NVRTC's options
    do not apply: the host never contracts into FMAs, which is what --fmad=false asks)."""

    def __init__(self, code: str, options=(), name_expressions=None, backend="nvrtc"):
        self._library = _compiled(code)

    def get_function(self, name: str) -> Kernel:
        return Kernel(self._library, name)


@functools.cache
def _compiled(code: str) -> ctypes.CDLL:
    source = DYNAMIC_SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(::emu::dynamic_shared());", code)
    shim = (HERE / "emu.h").read_text() + (HERE / "include" / "cuda_fp16.h").read_text()
    key = hashlib.sha256("\0".join([source, shim, *FLAGS]).encode()).hexdigest()[:24]
    cache = Path(os.environ.get("ZOOCODEC_CUDA_EMU_CACHE", Path(tempfile.gettempdir()) / "zoocodec-cuda-emu"))
    library = cache / f"{key}.so"
    if not library.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            src = Path(tmp) / "kernels.cpp"
            include = ["-I", str(HERE / "include"), "-include", str(HERE / "emu.h")]
            src.write_text(source)
            scanned = _run(["g++", "-E", "-DEMU_SCAN", "-std=c++17", *include, str(src)])
            names = sorted(set(KERNEL.findall(scanned)))
            src.write_text(source + "\n" + "".join(
                f'extern "C" __attribute__((visibility("default"))) const char* emu_launch_{n}('
                f"const unsigned* d, unsigned long long s, void* const* a, const long long* z, int k) "
                f"{{ return ::emu::launch(&{n}, d, s, a, z, k); }}\n" for n in names))
            _run(["g++", *FLAGS, "-fvisibility=hidden", *include, str(src), "-o", str(Path(tmp) / "k.so")])
            os.replace(Path(tmp) / "k.so", library)
    return ctypes.CDLL(str(library))


def _run(command: list[str]) -> str:
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the CUDA emulator could not compile a kernel source:\n{r.stderr[-4000:]}")
    return r.stdout


class _Context:
    def __init__(self, *args, **kwargs):
        self.id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def use(self):
        return self

    def record(self):
        self.time = time.perf_counter()  # (launches run to completion: the host clock is the event's)
        return self


def _elapsed_ms(start: _Context, end: _Context) -> float:
    return (end.time - start.time) * 1e3


def _function(f):
    """NumPy's function `f` on device arrays."""
    @functools.wraps(f)
    def on_device(*args, **kwargs):
        return _device(f(*_host(args), **_host(kwargs)))
    return on_device


def modules() -> tuple[types.ModuleType, types.ModuleType]:
    """(cupy, cupyx) stand-ins: NumPy behind CuPy's names, RawModule compiled for the emulator."""
    cupy = types.ModuleType("cupy")
    cupy.__doc__ = "zoocodec's CUDA emulator (tests/cuda_emu), not CuPy"
    cupy.ndarray, cupy.RawModule, cupy.asarray, cupy.asnumpy = ndarray, RawModule, asarray, asnumpy
    cupy.array = asarray
    cupy.empty, cupy.zeros, cupy.ones = _creation(None), _creation(0), _creation(1)
    cupy.empty_like = lambda a, dtype=None: cupy.empty(a.shape, dtype or a.dtype)
    cupy.zeros_like = lambda a, dtype=None: cupy.zeros(a.shape, dtype or a.dtype)
    cupy.cuda = types.SimpleNamespace(
        Stream=_Context, Device=_Context, Event=_Context, get_current_stream=_Context, get_elapsed_time=_elapsed_ms,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0,
                                      getDeviceProperties=lambda i: {"name": b"CUDA emulator (CPU)",
                                                                     "multiProcessorCount": 2}))

    def numpy_name(name):
        attr = getattr(np, name)
        return _function(attr) if callable(attr) and not isinstance(attr, type) else attr
    cupy.__getattr__ = numpy_name
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = lambda shape, dtype=np.float64, order="C": np.empty(shape, dtype, order)
    return cupy, cupyx


def install() -> None:
    """`import cupy` and `import cupyx` give the emulator from now on (pytest --cuda-emulator)."""
    sys.modules["cupy"], sys.modules["cupyx"] = modules()
    _forget()


@contextmanager
def emulated():
    """`import cupy` gives the emulator inside the block; what zoocodec cached of the CuPy it saw
    before (compiled modules, the device probe, streams) is forgotten on the way in and out."""
    saved = {k: sys.modules.get(k) for k in ("cupy", "cupyx")}
    install()
    try:
        yield sys.modules["cupy"]
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        _forget()


def _forget() -> None:
    import zoocodec.device
    from zoocodec.kernels import rans_encode

    for module in [zoocodec.device, *(sys.modules[m] for m in list(sys.modules)
                                      if m.startswith("zoocodec.kernels."))]:
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == module.__name__:
                value.cache_clear()
    rans_encode._local.__dict__.pop("streams", None)
