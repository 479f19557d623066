"""Subtractive dithered quantization on the lattices Z (scalar), D4 and E8 (Choi et al. 2018).

The encoder adds a dither u, uniform over the lattice's Voronoi cell, rounds to the
closest lattice point v, and stores v; the decoder regenerates u from the seed and
returns v - u. The error is then uniform over the cell and independent of the weight
(for Z: |error| <= step/2 exactly).

The dither comes from a counter-based hash (splitmix64 of seed and position), so it is
a pure function of (seed, index): identical on NumPy and CuPy and on every machine.

Lattices are scaled to one point per unit volume (D4 by 2**-1/4; Z and E8 already are),
so one `step` means the same point density, hence about the same rate, for all three.
Closest points use Conway & Sloane's algorithms (round, then fix the parity of D_n by
re-rounding the worst coordinate; E8 = D8 u (D8 + 1/2), keep the closer).
"""
from __future__ import annotations

LATTICES = {"scalar": 1, "d4": 4, "e8": 8}
SCALE = {"scalar": 1.0, "d4": 2.0 ** -0.25, "e8": 1.0}

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z, xp):
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(0x94D049BB133111EB)
    return z ^ (z >> xp.uint64(31))


def _key(seed: int) -> int:
    """The seed scrambled once (plain Python ints), so nearby seeds give unrelated streams."""
    z = (seed * _GOLDEN + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def uniform01(seed: int, count: int, xp):
    """`count` float64 values in [0, 1), a pure function of (seed, index): 53 hashed bits each."""
    idx = xp.arange(count, dtype=xp.uint64)
    z = _mix64(idx * xp.uint64(_GOLDEN) + xp.uint64(_key(seed)), xp)
    return (z >> xp.uint64(11)).astype(xp.float64) * (2.0 ** -53)


def closest_dn(x, xp):
    """Closest point of D_n (integer vectors with even sum) to each row of x (..., n)."""
    f = xp.rint(x)
    d = x - f
    k = xp.argmax(xp.abs(d), axis=-1)
    onehot = xp.arange(x.shape[-1]) == k[..., None]
    dk = xp.sum(xp.where(onehot, d, 0.0), axis=-1)
    odd = xp.remainder(xp.sum(f, axis=-1), 2.0) != 0
    flip = xp.where(dk >= 0, 1.0, -1.0) * odd
    return f + onehot * flip[..., None]


def closest_point(x, lattice: str, xp):
    """Closest lattice point to each row of x (..., dim); for Z plain rounding."""
    if lattice == "scalar":
        return xp.rint(x)
    if lattice == "d4":
        return closest_dn(x, xp)
    c0 = closest_dn(x, xp)
    c1 = closest_dn(x - 0.5, xp) + 0.5
    d0 = xp.sum((x - c0) ** 2, axis=-1)
    d1 = xp.sum((x - c1) ** 2, axis=-1)
    return xp.where((d1 < d0)[..., None], c1, c0)


def dither(seed: int, groups: int, lattice: str, xp):
    """(groups, dim) dither vectors uniform over the Voronoi cell of the unscaled lattice.

    z uniform in the cube [0, m)^n with m Z^n inside the lattice (m = 1 for Z, 2 for D4
    and E8) covers whole cells, so z minus its closest point is uniform over one cell.
    """
    n = LATTICES[lattice]
    m = 1.0 if lattice == "scalar" else 2.0
    z = m * uniform01(seed, groups * n, xp).reshape(groups, n)
    return z - closest_point(z, lattice, xp)


def padded_cols(cols: int, lattice: str) -> int:
    n = LATTICES[lattice]
    return -(-cols // n) * n


def quantize(w2, steps, lattice: str, seed: int, xp):
    """Lattice points v (rows, groups, dim; float64) and the dither u for a (rows, cols) matrix.

    steps: one step per row (or a single one). Columns are zero-padded to whole vectors.
    """
    rows, cols = w2.shape
    n = LATTICES[lattice]
    cp = padded_cols(cols, lattice)
    x = xp.zeros((rows, cp), dtype=xp.float64)
    x[:, :cols] = w2
    x = (x / (steps[:, None] * SCALE[lattice])).reshape(rows, cp // n, n)
    u = dither(seed, rows * (cp // n), lattice, xp).reshape(x.shape)
    return closest_point(x + u, lattice, xp), u


def dequantize(v, u, steps, cols: int, lattice: str, xp):
    """(v - u) * step, back to the (rows, cols) matrix."""
    rows = v.shape[0]
    x = ((v - u) * (steps[:, None, None] * SCALE[lattice])).reshape(rows, -1)
    return x[:, :cols]


def to_symbols(v, lattice: str, xp):
    """Lattice points -> integer streams with no redundancy left.

    D_n: the first n-1 coordinates, and the last one halved (its parity follows from the
    others). E8: a coset bit (integer or half-integer point), then the D8 point v - coset/2.
    Returns (head, tail, coset) as int64 arrays; unused parts are empty.
    """
    empty = xp.zeros(0, dtype=xp.int64)
    if lattice == "scalar":
        return v.astype(xp.int64).ravel(), empty, empty
    coset = empty
    if lattice == "e8":
        c = xp.remainder(xp.rint(2.0 * v[..., 0]), 2.0)
        coset = c.astype(xp.int64).ravel()
        v = v - 0.5 * c[..., None]
    y = xp.rint(v).astype(xp.int64)
    head = y[..., :-1]
    parity = xp.remainder(xp.sum(head, axis=-1), 2)
    tail = (y[..., -1] - parity) // 2
    return head.ravel(), tail.ravel(), coset


def from_symbols(head, tail, coset, shape, lattice: str, xp):
    """The inverse of to_symbols; shape is (rows, groups, dim)."""
    if lattice == "scalar":
        return head.reshape(shape).astype(xp.float64)
    n = shape[-1]
    h = head.reshape(shape[:-1] + (n - 1,))
    parity = xp.remainder(xp.sum(h, axis=-1), 2)
    last = 2 * tail.reshape(shape[:-1]) + parity
    v = xp.concatenate([h, last[..., None]], axis=-1).astype(xp.float64)
    if lattice == "e8":
        v = v + 0.5 * coset.reshape(shape[:-1])[..., None].astype(xp.float64)
    return v
