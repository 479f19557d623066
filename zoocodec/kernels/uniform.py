"""Uniform scalar quantization: symbols = round(w / step), w_hat = symbols * step.

One step for the whole tensor (or model), or one step per output channel (axis 0).
Arithmetic is float64 so that |w - w_hat| <= step/2 holds up to one float64 ulp.
"""
from __future__ import annotations

import functools

import numpy as np

from zoocodec.kernels.backend import cuda_source


def absmax_steps(w, bits: int, per_channel: bool, xp):
    """Symmetric min-max steps for `bits`-bit signed levels: absmax / (2**(bits-1) - 1).

    Per channel: one step per row of the 2-D view (out_channels x rest). Rows that are
    all zero get step 1 so they still quantize to 0; an empty tensor gets one step.
    """
    levels = (1 << (bits - 1)) - 1
    if w.size == 0:
        return xp.ones((1,), dtype=xp.float64)
    w2 = w.reshape(w.shape[0], -1) if (per_channel and w.ndim >= 2) else w.reshape(1, -1)
    amax = xp.max(xp.abs(w2), axis=1).astype(xp.float64)
    return xp.where(amax > 0, amax / levels, 1.0)


def quantize(w, steps, xp):
    """Nearest-level symbols (int64) for `w` given one step per row of its 2-D view."""
    rows = steps.shape[0]
    w2 = w.reshape(rows, -1).astype(xp.float64)
    return xp.rint(w2 / steps[:, None]).astype(xp.int64).reshape(w.shape)


def dequantize(symbols, steps, xp):
    """float64 reconstruction symbols * step (steps: one per row of the 2-D view)."""
    rows = steps.shape[0]
    s2 = symbols.reshape(rows, -1).astype(xp.float64)
    return (s2 * steps[:, None]).reshape(symbols.shape)


# ---- group-wise steps (and offsets) along a row ------------------------------------------
# A row of the 2-D view is cut into groups of `group` consecutive weights (the last one
# shorter when `group` does not divide the row). Side values come one per group,
# as arrays of shape (rows, groups).

def group_count(cols: int, group: int) -> int:
    return -(-cols // group)


def group_ranges(w2, group: int, xp):
    """(min, max) of every group of the float64 rows `w2`, each (rows, groups); the last,
    shorter group is padded with its own last value, which moves neither."""
    rows, cols = w2.shape
    pad = group_count(cols, group) * group - cols
    if pad:
        w2 = xp.concatenate([w2, xp.repeat(w2[:, -1:], pad, axis=1)], axis=1)
    g = w2.reshape(rows, -1, group)
    return g.min(axis=2), g.max(axis=2)


def expand(per_group, group: int, cols: int, xp):
    """(rows, groups) -> (rows, cols): each group's value over its weights."""
    return xp.repeat(per_group, group, axis=1)[:, :cols]


def quantize_groups(w2, steps, zeros, group: int, xp):
    """symbols = rint((w - zero) / step) per group (int64); `steps` (rows, groups) or a
    scalar array, `zeros` (rows, groups) or None."""
    cols = w2.shape[1]
    s = expand(steps, group, cols, xp) if steps.ndim == 2 else steps
    x = w2 - expand(zeros, group, cols, xp) if zeros is not None else w2
    return xp.rint(x / s).astype(xp.int64)


def dequantize_groups(s2, steps, zeros, group: int, xp):
    """float64 reconstruction symbols * step + zero per group (the inverse of quantize_groups)."""
    cols = s2.shape[1]
    s = expand(steps, group, cols, xp) if steps.ndim == 2 else steps
    r = s2.astype(xp.float64) * s
    return r + expand(zeros, group, cols, xp) if zeros is not None else r


# ---- device-resident quantization (uniform.cu) and its NumPy transliteration --------------
# NumPy sums a float64 array pairwise: a block of up to 128 values with 8 accumulators, a
# longer range split at n/2 rounded down to a multiple of 8. The leaves of that tree, and the
# sums of the leaves added up the tree, give np.sum's float bit for bit.
PW_BLOCK = 128


def leaves(n: int, block: int = PW_BLOCK) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(start, count) of the leaves of np.sum's tree over n values, in order, and the split
    masks level by level (for combine()). block > PW_BLOCK: the nodes of the tree that hold at
    most `block` values and whose parent holds more (np.sum's tree is the same above them)."""
    start, count = np.zeros(1 if n else 0, np.int64), np.full(1 if n else 0, n, np.int64)
    splits = []
    while count.size and (count > block).any():
        split = count > block
        half = count // 2
        half -= half % 8
        left_count = np.where(split, half, count)
        right_count = count - half
        reps = np.where(split, 2, 1)
        out_start = np.repeat(start, reps)
        out_count = np.repeat(left_count, reps)
        first = np.cumsum(reps) - reps  # where each segment's (left) child sits
        right = first[split] + 1
        out_start[right] = (start + half)[split]
        out_count[right] = right_count[split]
        splits.append(split)
        start, count = out_start, out_count
    return start, count, splits


def combine(values: np.ndarray, splits: list[np.ndarray]) -> float:
    """A leaf sum per leaf -> the root's sum, added up the tree (left + right), then to 0.0 as
    np.add.reduce starts from its identity."""
    if not values.size:
        return 0.0
    for split in reversed(splits):
        reps = np.where(split, 2, 1)
        first = np.cumsum(reps) - reps
        out = values[first].copy()
        out[split] = values[first[split]] + values[first[split] + 1]
        values = out
    return float(0.0 + values[0])


# The leaf sums are added up the tree in two steps: on the device, one thread per node of at
# most NODE values (pairwise_nodes in uniform.cu: the node's subtree, left + right, from its
# first leaf), then on the host the few nodes above (combine). Per tensor only a value per
# NODE weights comes back, and the host's work no longer grows with the leaves (8M of them for
# a 1B-weight model: about 0.5 s of NumPy on the main thread).
NODE = 1 << 14  # (at most 2^29: pairwise_nodes walks a depth of 24)


@functools.lru_cache(maxsize=32)
def tree(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """np.sum's tree over n values, cut in two (read-only arrays, cached: a model has few
    sizes): (leaf start, leaf count, node count, the node's first leaf, the nodes' split masks)."""
    start, count, _ = leaves(n)
    _, node_count, node_splits = leaves(n, NODE)
    per_node = np.array([leaf_count(int(c)) for c in node_count], dtype=np.int64)
    first = np.concatenate([np.zeros(1, np.int64), np.cumsum(per_node)[:-1]]) if per_node.size else per_node
    for a in (start, count, node_count, first, *node_splits):
        a.flags.writeable = False
    return start, count, node_count, first, node_splits


@functools.lru_cache(maxsize=4096)
def leaf_count(count: int) -> int:
    """Leaves of np.sum's tree over `count` values."""
    if count <= PW_BLOCK:
        return 1
    half = count // 2
    half -= half % 8
    return leaf_count(half) + leaf_count(count - half)


def node_sums_emulated(values: np.ndarray, node_count: np.ndarray, first: np.ndarray) -> np.ndarray:
    """pairwise_nodes in NumPy, thread by thread: each node's leaf sums added up its subtree
    (left + right) by the kernel's loop over an explicit stack."""
    out = np.empty(node_count.size, dtype=np.float64)
    for t, (c, nxt) in enumerate(zip(node_count.tolist(), first.tolist(), strict=True)):
        right, left, has_left = [], [], []
        while True:
            while c > PW_BLOCK:
                half = c // 2
                half -= half % 8
                right.append(c - half)
                left.append(0.0)
                has_left.append(False)
                c = half
            v = values[nxt]
            nxt += 1
            while right:
                if not has_left[-1]:
                    left[-1], has_left[-1], c = v, True, right[-1]
                    break
                v = left.pop() + v
                right.pop()
                has_left.pop()
            else:
                out[t] = v
                break
    return out


def tree_sums_device(leaf_values: list, n: int) -> list[float]:
    """Each array of leaf sums (CuPy, one per leaf of tree(n)) added up np.sum's tree."""
    import cupy  # GPU only

    _, _, node_count, first, splits = tree(n)
    k = node_count.size
    if not k:
        return [0.0 for _ in leaf_values]
    _, _, count_d, first_d = device_tree(n, cupy.cuda.Device().id)
    out = cupy.empty((len(leaf_values), k), dtype=cupy.float64)
    threads = 128
    for i, v in enumerate(leaf_values):
        _module().get_function("pairwise_nodes")(((k + threads - 1) // threads,), (threads,),
                                                 (v, first_d, count_d, np.uint64(k), out[i]))
    return [combine(row, splits) for row in cupy.asnumpy(out)]


@functools.lru_cache(maxsize=32)
def device_tree(n: int, device: int):
    """tree(n) on a device (cached: a model has few sizes): leaf starts (uint64), leaf counts
    (uint32), node counts and first leaves (uint64)."""
    import cupy  # GPU only

    start, count, node_count, first, _ = tree(n)
    with cupy.cuda.Device(device):
        return (cupy.asarray(start.astype(np.uint64)), cupy.asarray(count.astype(np.uint32)),
                cupy.asarray(node_count.astype(np.uint64)), cupy.asarray(first.astype(np.uint64)))


def leaf_sums(v: np.ndarray, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """NumPy's block sum of each leaf of float64 values `v` (the transliteration of what one
    thread of uniform.cu adds): 8 accumulators over the multiple of 8, combined, then the tail."""
    k = start.size
    idx = start[:, None] + np.arange(PW_BLOCK)[None, :]
    valid = np.arange(PW_BLOCK)[None, :] < count[:, None]
    block = np.where(valid, v[np.minimum(idx, max(v.size - 1, 0))] if v.size else 0.0, 0.0)
    main = np.where(count < 8, 0, count - count % 8)
    r = block[:, :8].copy()
    for i in range(8, PW_BLOCK, 8):
        inside = (i < main)[:, None]
        r = np.where(inside, r + block[:, i : i + 8], r)
    combined = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    res = np.where(main > 0, combined, 0.0)
    for t in range(8):
        pos = main + t
        take = pos < count
        res = np.where(take, res + block[np.arange(k), np.minimum(pos, PW_BLOCK - 1)], res)
    return res


KERNELS = {("float32", "int8"): "uniform_f32_i8", ("float32", "int16"): "uniform_f32_i16",
           ("float32", "int32"): "uniform_f32_i32", ("bfloat16", "int8"): "uniform_bf16_i8",
           ("bfloat16", "int16"): "uniform_bf16_i16", ("bfloat16", "int32"): "uniform_bf16_i32"}


def quantize_device(bits, dtype: str, steps: np.ndarray, cols: int, symbol_dtype, recon: bool):
    """uniform.cu on CuPy: `bits` (the tensor's float32 / bfloat16 bits, flat, on the device),
    float64 steps (one per row of `cols`, or one) -> (symbols on the device, recon bits on the
    device or None, (sum err^2, sum w^2, max |err|) as np.sum would give them)."""
    import cupy  # GPU only

    n = bits.size
    start, count, _, _ = device_tree(n, cupy.cuda.Device().id)
    k = start.size
    symbols = cupy.empty(n, dtype=symbol_dtype)
    out = cupy.empty_like(bits) if recon else None
    err2, power, top = (cupy.empty(k, dtype=cupy.float64) for _ in range(3))
    if k:
        threads = 128
        _module().get_function(KERNELS[dtype, np.dtype(symbol_dtype).name])(
            ((k + threads - 1) // threads,), (threads,),
            (bits, cupy.asarray(steps, dtype=cupy.float64), np.uint64(steps.size), np.uint64(max(cols, 1)),
             start, count, np.uint64(k), symbols, out if out is not None else 0, err2, power, top))
    stats = (*tree_sums_device([err2, power], n), float(top.max()) if k else 0.0)
    return symbols, out, stats


def quantize_emulated(bits: np.ndarray, dtype: str, steps: np.ndarray, cols: int, symbol_dtype):
    """quantize_device's algorithm in NumPy, leaf by leaf as the kernel's threads run it: the
    test that the device path gives the CPU's symbols and statistics on a machine without a GPU."""
    n = bits.size
    x = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64) if dtype == "bfloat16" else \
        bits.view(np.float32).astype(np.float64)
    row = np.arange(n) // max(cols, 1) if steps.size > 1 else np.zeros(n, np.int64)
    step = steps[row]
    q = np.rint(x / step).astype(symbol_dtype)
    f = (q.astype(np.float64) * step).astype(np.float32)
    if dtype == "bfloat16":
        b = f.view(np.uint32)
        r = ((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint32)
        back = (r << np.uint32(16)).view(np.float32).astype(np.float64)
    else:
        back = f.astype(np.float64)
    e = x - back
    stats = (*tree_sums_emulated([e * e, x * x], n), float(np.abs(e).max()) if n else 0.0)
    return q, stats


def tree_sums_emulated(values: list[np.ndarray], n: int) -> list[float]:
    """tree_sums_device's two steps on the leaf sums of float64 arrays of n values (NumPy)."""
    start, count, node_count, first, splits = tree(n)
    if not node_count.size:
        return [0.0 for _ in values]
    return [combine(node_sums_emulated(leaf_sums(v, start, count), node_count, first), splits) for v in values]


@functools.cache
def _module():
    import cupy  # GPU only

    return cupy.RawModule(code=cuda_source("uniform.cu"), options=("-std=c++17",))
