"""Rate-distortion optimised rounding: per value, the level among floor, ceil and 0 that
minimises (x - level)^2 + lam * bits(level | context).

x is the weight in units of the step, so distortion is in step^2 units and `lam` is
dimensionless (the high-rate slope of an entropy-coded uniform quantizer is
2 ln2 / 12 = 0.116 step^2 per bit). The rate is a table bits[context, level - origin]
fitted to the current symbols; the caller iterates fit -> decide. Every value is
decided independently. Candidates are tried in the order nearest, other neighbour, zero,
and the first of equal costs wins.

Both passes are compiled code on either device: on NumPy arrays the native engine's
(codecs/native/rdoq.cpp, rows on its threads), on CuPy arrays CUDA kernels (rdoq.cu:
`decide` one thread per value, `dq_trellis` one thread per row with the trellis in
registers, every row of a same-shape group in one launch). They make the same float64
operations in the same order (no FMA), so their levels are equal bit for bit;
`decide_emulated` and `dq_trellis_emulated` run the same algorithm in NumPy on the arrays
the kernels are given, which is how a machine without a GPU checks both
(tests/kernels/test_rdoq_kernels.py, tests/codecs/native/test_rdoq.py). One difference is
left: a level beyond the int32 range (a step 2^31 times smaller than the weights) is
saturated by the kernel, and the lowest int32 on the CPU (NumPy's cast).
"""
from __future__ import annotations

import functools

import numpy as np

from zoocodec.kernels.backend import cuda_source


def decide(x, ctx, origin: int, bits, lam: float, xp):
    """New int64 symbols for `x` (any shape; `ctx` the same shape, int) under the rate table.

    Levels outside the table cost its most expensive entry in that context plus one bit.
    """
    if xp is not np:
        return _decide_device(*_decide_inputs(x, ctx, bits, xp), origin, lam).reshape(x.shape)
    from zoocodec.codecs import native

    b, worst = _rate_tables(bits, np)
    v = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(v.shape, dtype=np.int64)
    native.engine().rdoq_decide(v, np.ascontiguousarray(ctx, dtype=np.int64), b[:, None, :], worst[:, None], origin,
                                lam, out)
    return out


# ---- dependent quantization (trellis-coded, as in VVC and NNCodec) ------------------------
# Two quantizers share the step d: Q0 reconstructs 2k*d, Q1 (2k - sgn k)*d. A 4-state
# machine walks each row; states 0 and 1 use Q0, states 2 and 3 use Q1, and the parity of
# the level picks the next state. The union of the two level sets is spaced d, but each
# quantizer alone is spaced 2d, so a level costs the bits of a 2d quantizer while the
# trellis finds reconstructions close to d-spaced ones: a packing gain no per-value
# rounding has.
NEXT_STATE = ((0, 2), (2, 0), (1, 3), (3, 1))  # [state][parity of the level]


def dq_dequantize(k, xp, by_column: bool = False):
    """Reconstruction in step units of level matrix `k` (int64): each row an independent walk from state 0
    (`by_column`: each column). NumPy arrays take the native walk (native/dq.cpp); CuPy ones a vector step
    per column of the walk."""
    if xp is np:
        from zoocodec.codecs import native

        out = np.empty(k.shape, dtype=np.float64)
        native.engine().dq_walk(np.ascontiguousarray(k, dtype=np.int64), out, by_column)
        return out
    if by_column:
        return dq_dequantize(k.T, xp).T
    state = xp.zeros(k.shape[0], dtype=xp.int64)
    out = xp.empty(k.shape, dtype=xp.float64)
    table = xp.asarray(NEXT_STATE, dtype=xp.int64)
    for j in range(k.shape[1]):
        kj = k[:, j]
        out[:, j] = xp.where(state < 2, 2 * kj, 2 * kj - xp.sign(kj)).astype(xp.float64)
        state = table[state, kj & 1]
    return out


def dq_trellis(x, ctx, origin: int, bits, lam: float, xp):
    """Viterbi over each row: int64 levels minimising
    sum (x - recon)^2 + lam * bits(level | context[, state]), x in step units (rows x cols).

    bits is [context, level - origin] or [context, states, level - origin] with states 1,
    or 4 when the entropy model prices a level by the state it is coded in.
    """
    if xp is not np:
        return _trellis_device(*_trellis_inputs(x, ctx, bits, xp), origin, lam).T
    from zoocodec.codecs import native

    b, worst = _rate_tables(bits[:, None, :] if bits.ndim == 2 else bits, np)
    v = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(v.shape, dtype=np.int64)
    native.engine().rdoq_trellis(v, np.ascontiguousarray(ctx, dtype=np.int64), b, worst, origin, lam, out)
    return out


# ---- the CUDA kernels (rdoq.cu) and their NumPy transliterations -------------------------
THREADS_DECIDE = 256
THREADS_TRELLIS = 32  # a block a warp: a group of a few thousand rows still fills the SMs
SHARED_LIMIT = 8 << 10  # bytes of rate tables a block copies to shared memory (more: read from global)


def _decide_inputs(x, ctx, bits, xp):
    """What rdoq_decide reads: flat float64 values, flat int32 contexts, bits[context, level -
    origin] and worst[context] (its largest entry plus one bit), contiguous."""
    b, worst = _rate_tables(bits, xp)
    v = xp.ascontiguousarray(x, dtype=xp.float64).reshape(-1)
    return v, xp.ascontiguousarray(ctx, dtype=xp.int32).reshape(-1), b, worst


def _trellis_inputs(x, ctx, bits, xp):
    """What dq_trellis_1/_4 read: x and contexts column-major ([col][row], float64 and int32),
    bits[context, state, level - origin] with states 1 or 4, worst[context, state]."""
    b, worst = _rate_tables(bits[:, None, :] if bits.ndim == 2 else bits, xp)
    return xp.ascontiguousarray(x.T, dtype=xp.float64), xp.ascontiguousarray(ctx.T, dtype=xp.int32), b, worst


def _rate_tables(bits, xp):
    """(bits as contiguous float64, worst: the largest entry of each table plus one bit, the price of a
    level outside it), as every decision path reads them."""
    b = xp.ascontiguousarray(bits, dtype=xp.float64)
    if b.shape[0] >= 1 << 31:
        raise ValueError(f"rdoq: {b.shape[0]} contexts do not fit the kernels' int32 context ids")
    return b, b.max(axis=-1) + 1.0


def _shared(*tables) -> int:
    """Shared-memory bytes for the rate tables, or 0 when they are read from global memory."""
    n = sum(t.size for t in tables) * 8
    return n if n <= SHARED_LIMIT else 0


def _decide_device(v, c, bits, worst, origin: int, lam: float):
    import cupy  # GPU only

    out = cupy.empty(v.size, dtype=cupy.int64)
    if v.size:
        shared = _shared(bits, worst)
        blocks = min(-(-v.size // THREADS_DECIDE), 1 << 16)
        _module().get_function("rdoq_decide")(
            (blocks,), (THREADS_DECIDE,),
            (v, c, np.int64(v.size), bits, worst, np.int64(bits.shape[0]), np.int64(bits.shape[1]), np.int64(origin),
             np.float64(lam), np.int64(shared), out), shared_mem=shared)
    return out


def _trellis_device(xt, ct, bits, worst, origin: int, lam: float):
    """Levels [col][row] (int64) from the column-major inputs of _trellis_inputs."""
    import cupy  # GPU only

    cols, rows = xt.shape
    out = cupy.empty((cols, rows), dtype=cupy.int64)
    if out.size:
        levels = cupy.empty((cols, 4, rows), dtype=cupy.int32)
        choice = cupy.empty((cols, rows), dtype=cupy.uint8)
        shared = _shared(bits, worst)
        _module().get_function("dq_trellis_4" if bits.shape[1] == 4 else "dq_trellis_1")(
            (-(-rows // THREADS_TRELLIS),), (THREADS_TRELLIS,),
            (xt, ct, np.int64(rows), np.int64(cols), bits, worst, np.int64(bits.shape[0]), np.int64(bits.shape[2]),
             np.int64(origin), np.float64(lam), np.int64(shared), levels, choice, out), shared_mem=shared)
    return out


@functools.cache
def _module():
    import cupy  # GPU only

    return cupy.RawModule(code=cuda_source("rdoq.cu"), options=("-std=c++17", "--fmad=false"))


def decide_emulated(x, ctx, origin: int, bits, lam: float) -> np.ndarray:
    """rdoq_decide in NumPy, on the arrays the kernel is given: decide()'s levels on a GPU."""
    v, c, b, worst = _decide_inputs(x, ctx, bits, np)
    size = b.shape[1]
    near = np.rint(v)
    other = np.where(near > v, near - 1.0, near + 1.0)
    table, row, w = b.reshape(-1), c.astype(np.int64) * size, worst[c]
    best, best_cost = near, _kernel_cost(v, near, near, table, row, w, origin, size, lam)
    for cand in (other, np.zeros_like(v)):
        cc = _kernel_cost(v, cand, cand, table, row, w, origin, size, lam)
        better = cc < best_cost
        best, best_cost = np.where(better, cand, best), np.where(better, cc, best_cost)
    return best.astype(np.int64).reshape(np.shape(x))


def _kernel_cost(x, recon, level, table, row, worst, origin: int, size: int, lam: float):
    """rdoq.cu's cost(): `table` the flat rate tables, `row` where each value's row starts in it."""
    idx = level.astype(np.int64) - origin
    inside = (idx >= 0) & (idx < size)
    rate = np.where(inside, table[row + np.clip(idx, 0, size - 1)], worst)
    d = x - recon
    return d * d + lam * rate


def pred_state(t: int, i: int) -> int:
    """The i-th state leading to state t (rdoq.cu's pred_state)."""
    return 2 * (t & 1) + i


def pred_parity(t: int, i: int) -> int:
    """The parity of the level on that transition (rdoq.cu's pred_parity)."""
    return i ^ (t >> 1)


def _kernel_options(q: int, a, sign, table, row, worst, origin: int, size: int, lam: float):
    """rdoq.cu's options<Q>: per parity, (best cost, best signed level)."""
    if q == 0:
        m = np.floor(a / 2.0)
        mags, recons = (m, m + 1.0), (2.0 * m, 2.0 * m + 2.0)
    else:
        m = np.floor((a + 1.0) / 2.0)
        r = 2.0 * m - 1.0
        mags, recons = (m, m + 1.0), (np.where(r < 0.0, 0.0, r), 2.0 * m + 1.0)
    zero = np.zeros_like(a)
    best_cost, best_level = [None, None], [None, None]
    for k, (mag, recon) in enumerate(zip((*mags, zero), (*recons, zero), strict=True)):
        level = sign * mag
        c = _kernel_cost(a, recon, level, table, row, worst, origin, size, lam)
        parity = mag.astype(np.int64) & 1
        for p in (0, 1):
            cp = np.where(parity == p, c, np.inf)
            if k == 0:
                best_cost[p], best_level[p] = cp, level
            else:
                better = cp < best_cost[p]
                best_cost[p] = np.where(better, cp, best_cost[p])
                best_level[p] = np.where(better, level, best_level[p])
    return best_cost, best_level


def dq_trellis_emulated(x, ctx, origin: int, bits, lam: float) -> np.ndarray:
    """dq_trellis_1/_4 in NumPy, all rows at once, step for step as each thread runs: the
    forward pass keeps per column and next state the winner's level (int32) and a choice bit,
    the walk back starts from the first cheapest state. dq_trellis()'s levels on a GPU."""
    xt, ct, b, worst = _trellis_inputs(x, ctx, bits, np)
    cols, rows = xt.shape
    states = b.shape[1]
    stateful = states == 4
    size = b.shape[2]
    table = b.reshape(-1)
    cost = np.full((4, rows), np.inf)
    cost[0] = 0.0
    levels = np.empty((cols, 4, rows), dtype=np.int32)
    choice = np.empty((cols, rows), dtype=np.uint8)
    for j in range(cols):
        v, c = xt[j], ct[j].astype(np.int64)
        a, sign = np.abs(v), np.where(v < 0, -1.0, 1.0)
        oc, ol = [], []
        for o in range(4 if stateful else 2):
            k = o if stateful else 0
            bc, bl = _kernel_options(o >> 1 if stateful else o, a, sign, table, (c * states + k) * size,
                                     worst[c, k], origin, size, lam)
            oc.append(bc)
            ol.append(bl)
        nxt = np.empty_like(cost)
        sel = np.zeros(rows, dtype=np.uint8)
        for t in range(4):
            (s0, p0), (s1, p1) = [(pred_state(t, i), pred_parity(t, i)) for i in (0, 1)]
            o0, o1 = (s0, s1) if stateful else (s0 >> 1, s1 >> 1)
            c0, c1 = cost[s0] + oc[o0][p0], cost[s1] + oc[o1][p1]
            second = c1 < c0
            nxt[t] = np.where(second, c1, np.where(np.isnan(c1), c1, c0))
            levels[j, t] = np.where(second, ol[o1][p1], ol[o0][p0]).astype(np.int32)
            sel |= second.astype(np.uint8) << np.uint8(t)
        choice[j] = sel
        cost = nxt
    state = np.zeros(rows, dtype=np.int64)
    least = cost[0].copy()
    for s in range(1, 4):
        take = ~np.isnan(least) & ((cost[s] < least) | np.isnan(cost[s]))
        state = np.where(take, s, state)
        least = np.where(take, cost[s], least)
    out = np.empty((cols, rows), dtype=np.int64)
    r = np.arange(rows)
    for j in range(cols - 1, -1, -1):
        second = (choice[j] >> state.astype(np.uint8)) & 1
        out[j] = levels[j, state, r]
        state = 2 * (state & 1) + second
    return out.T
