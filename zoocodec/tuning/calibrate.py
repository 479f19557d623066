"""Data-aware rounding: the integer indices of a uniform grid chosen with the model's inputs.

Automatic mode's quantizer is a uniform grid (k * step, one step per tensor). Rounding
each weight to its nearest level minimises the weight error; what the task feels is the
error of each layer's *outputs*, ||(W - W_hat) X||^2 over real inputs X. Two classic
corrections aim at that, with the decoder and the file format unchanged (the same
grid, the same dequantization: a reader cannot tell):

- error feedback (GPTQ, Frantar et al. 2023; OBQ): the columns of a Linear weight (of
  a Conv's (Cout, Cin/groups*kh*kw) view, matching its unfolded input patches) are
  rounded in order, and each column's rounding error is spread onto the columns not yet
  rounded through the Cholesky factor of H^-1, H = E[x x^T] of the layer's inputs
  (dampened by DAMP of its mean diagonal). A grouped convolution (depthwise: one group
  per channel) has one H per group: each output channel sees only its group's inputs.
  Optionally rate-aware (lam > 0): the objective gains lam * rate_price * order-0 bits, rate_price
  the objective's scale per symbol (s^2 x mean 1/u_jj^2, so lam means the same in every tensor;
  a step's own trade of error for bits is about 0.12 of it). Each index is then the one among
  floor, ceil and 0 that minimises it under the order-0 model of the nearest-rounded symbols, and
  the descent below lowers the same objective, bits priced from the current symbols. Off (RATE_LAM
  0): minilm at 9 fixed plans, lam 0.1 and 0.3 level, 0.6 1.4% larger at equal loss (bench/results/
  h2h-levers-2026-12-05k-minilm-rate*.json; at ~4 bits/weight neighbouring levels' prices barely differ);
- act-order and coordinate descent (ACT_ORDER, SWEEPS): GPTQ is a greedy solution (Babai's nearest
  plane) of each row's integer least squares min_k (w - k s) H (w - k s)^T. Its columns are taken in
  decreasing diag(H) order (GPTQ's desc_act; one order per group; DataAware can keep it to some layer
  kinds: level on effnet-lite0 without it on the depthwise layers, -effnet-actdense.json), and from its
  symbols each symbol then moves by +-1 wherever that lowers the same objective on the same dampened H
  (CDQuant, Nair & Suggala 2024; `descend`), two sweeps. At fixed plans, bits/weight at equal loss (bench/results/
  h2h-levers-2026-12-05j-*-cd*.json): effnet-lite0 -0.6% with the descent (17 plans, 2.6 standard
  errors), -0.7% with both (1.9 SE; act-order on top level there); minilm -0.6% and -1.7% (9 plans, 6 and
  7 SE). About 1.5 CPU-seconds per effnet-lite0 plan;
- bias correction (Nagel et al. 2019, DFQ): the mean output error (W - W_hat) E[x] is
  added to the layer's bias, or subtracted from the running mean of the BatchNorm that
  follows a bias-free convolution.

H and E[x] are measured on the original model with calibration inputs (zoocodec.eval.tasks:
never the judged inputs), with torch forward hooks on the nn.Linear and nn.Conv2d modules
whose weights are quantized. Layers are rounded independently, each against its original
inputs, or (collect_on, or zoocodec.tuning.sequential: automatic mode's `sequential`) against
the inputs of the model quantized at a chosen step. A layer whose H was measured on fewer input
vectors than its size has a singular H: with GPTQ's 1% dampening, error feedback would push the
error where the calibration inputs never look, so it is dampened by its whole mean diagonal
(FEW_DAMP): effnet-lite0's classifier, 1,280 inputs seen on 256 crops, then has 0.79x nearest
rounding's output error on the features of the task's calibration/search photos (a step of 0.5 or
1 x its RMS; 0.3 x the mean diagonal 0.78-0.79x, 10x 0.81-0.83x; GPTQ's 1%: 1.04-1.05x). A task whose
calibration inputs are few in kind dampens one kind of layer more (DataAware.kind_damp, from the task's
`rounding_damp`): effnet-lite0's pointwise layers, fitted at 1% to crops of three photos, leave 0.446x nearest
rounding's output error on the search photos at 0.3 against 0.488x at 1%; fitted to crops of 34 photos
(2026-12-05j) they are dampened by 0.1, which is 1.0% smaller at equal KL than three photos at 0.3.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from zoocodec.codecs import native
from zoocodec.codecs.base import Order0
from zoocodec.methods import MethodSpec

DAMP = 0.01  # of the mean diagonal of H, added to its diagonal (GPTQ's default)
BLOCK = 128  # columns rounded between two rank-BLOCK updates of the rest
POSITIONS = 1024  # output positions per image and convolution whose input patches H is measured on
SCRATCH = 2**20  # values of a convolution's unfolded patches summed at a time
# a layer measured on fewer input vectors than its size (effnet-lite0's 1,280-input classifier, 256 crops): H is
# singular, so it is dampened by its mean diagonal, not 1% of it (error feedback in the directions the calibration
# inputs span, a plain rounding elsewhere); None: nearest rounding for such layers (what was done before)
FEW_DAMP: float | None = 1.0
RATE_LAM = 0.0  # lam of rate-aware rounding: the objective plus lam * rate_price * order-0 bits; 0: none
ACT_ORDER = True  # round the columns in decreasing diag(H) order (GPTQ's desc_act)
SWEEPS = 2  # passes of coordinate descent after the feedback (CDQuant); 0: GPTQ's symbols as they are


@dataclass
class LayerInputs:
    """Second moment and mean of one layer's inputs (columns of its weight's 2-D view)."""

    h: np.ndarray  # groups x d x d, E[x x^T] of each group's inputs (groups = 1 but for grouped convolutions)
    mean: np.ndarray  # groups x d
    count: int  # input vectors measured (per group)
    # the 1-D tensor that absorbs the mean output error: (name, +1) a bias, (name, -1) a BN running mean
    bias: tuple[str, int] | None = None
    # groups x d: the original model's mean input minus this one (inputs measured on a quantized model, whose
    # drift W @ drift the bias correction also takes out); None: measured on the original
    drift: np.ndarray | None = None


def collect(net: torch.nn.Module, run: Callable[[torch.nn.Module], object],
            names: Mapping[str, str], progress: Callable[[int], None] | None = None) -> dict[str, LayerInputs]:
    """LayerInputs per weight name of `net`'s Linear/Conv2d modules, from one `run(net)`.

    `names` maps the module's own parameter names (`fc.weight`) to the names of the
    model's tensors (they differ where a wrapper adds a prefix); modules whose weight is
    not in it are left alone. `progress(n)` after each forward of `net` itself, n its inputs (the leading
    dimension of its first argument or of `input_ids`): the run's batches, for a time-left estimate."""
    modules = dict(net.named_modules())
    order = list(modules)
    sums: dict[str, list] = {}
    hooks = []
    for mname, mod in modules.items():
        pname = f"{mname}.weight" if mname else "weight"
        if pname not in names or not _supported(mod):
            continue
        key = names[pname]
        sums[key] = [None, None, 0]
        hooks.append(mod.register_forward_hook(lambda m, args, _out, key=key: accumulate(sums[key], m, args[0])))
    if progress is not None:  # (after the layers' hooks: the root's forward ends last)
        def counted(_net, args, kwargs, _out) -> None:
            x = args[0] if args else kwargs.get("input_ids")
            if isinstance(x, torch.Tensor) and x.dim():
                progress(len(x))
        hooks.append(net.register_forward_hook(counted, with_kwargs=True))
    try:
        with torch.no_grad():
            run(net)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for mname, mod in modules.items():
        pname = f"{mname}.weight" if mname else "weight"
        key = names.get(pname)
        if key not in sums or sums[key][2] == 0:
            continue
        out[key] = inputs_of(sums[key], _bias_of(mname, mod, modules, order, names))
    return out


def accumulate(acc: list, mod: torch.nn.Module, x: torch.Tensor) -> None:
    """Add the sums of `mod`'s input batch `x` to `acc` ([sum x x^T, sum x, count], per group): float32
    sums over a block of inputs, summed over blocks in float64."""
    if acc[0] is None:  # groups x d: d the columns of a group's part of the weight's 2-D view
        g, d = getattr(mod, "groups", 1), math.prod(mod.weight.shape[1:])
        acc[0], acc[1] = torch.zeros(g, d, d, dtype=torch.float64), torch.zeros(g, d, dtype=torch.float64)
    for first, a in _blocks(mod, x.detach().float()):
        part = slice(first, first + len(a))
        acc[0][part] += (a @ a.transpose(1, 2)).double()
        acc[1][part] += a.sum(2).double()
        if first == 0:
            acc[2] += a.shape[2]


def inputs_of(acc: list, bias: tuple[str, int] | None) -> LayerInputs:
    """The LayerInputs of accumulated sums."""
    xtx, s, n = acc
    return LayerInputs((xtx / n).numpy(), (s / n).numpy(), n, bias)


def collect_on(net: torch.nn.Module, run: Callable[[torch.nn.Module], object], names: Mapping[str, str],
               weights: Mapping[str, torch.Tensor]) -> dict[str, LayerInputs]:
    """collect() with `weights` loaded into `net` first. Given the quantized model, each layer's H and
    mean are those of the inputs the quantized layers before it produce: rounding against them is GPTQ's
    sequential order, up to one refresh (the layers before were rounded against the original's inputs)."""
    net.load_state_dict({own: weights[name] for own, name in names.items() if name in weights}, strict=False)
    return collect(net, run, names)


def _supported(mod: torch.nn.Module) -> bool:
    if isinstance(mod, torch.nn.Linear):
        return True
    return isinstance(mod, torch.nn.Conv2d) and isinstance(mod.padding, tuple)


def _blocks(mod: torch.nn.Module, x: torch.Tensor):
    """(first group, groups x d x rows) blocks of the layer's inputs: each row (one input vector) a column
    matching the columns of its group's part of the weight's 2-D view, so that a @ a^T sums x x^T.

    A convolution contributes at most POSITIONS output positions per image (a strided grid:
    neighbouring patches add little to H, and unfolding a 112 x 112 depthwise layer whole
    costs minutes here). One that pads its input itself before F.conv2d (EfficientNet's
    Conv2dStaticSamePadding: a `static_padding` module) is given that padding first. Its patches are
    copied tap by tap into one block of about SCRATCH values, reused (whole images, or a depthwise layer's
    channels of one image; each block holds until the next is asked for): it stays in cache and in memory
    already mapped, where unfolding a batch whole ran at this VM's fresh-page write speed (effnet-lite0's
    measuring: 79 s before, 22 s since; torch's unfold into such blocks is 3.5x slower than the copies). A
    1x1 convolution on every position is its input as it is."""
    if isinstance(mod, torch.nn.Linear):
        yield 0, x.reshape(-1, x.shape[-1]).t().unsqueeze(0)
        return
    if isinstance(getattr(mod, "static_padding", None), torch.nn.Module):
        x = mod.static_padding(x)
    if any(mod.padding):
        mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
        x = torch.nn.functional.pad(x, mod._reversed_padding_repeated_twice, mode=mode)
    (kh, kw), (sh, sw), (dh, dw) = mod.kernel_size, mod.stride, mod.dilation
    ho, wo = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    every = max(1, math.ceil(math.sqrt(ho * wo / POSITIONS)))
    ho, wo = -(-ho // every), -(-wo // every)  # the positions measured
    (n, c), g = x.shape[:2], mod.groups
    if kh * kw == 1 and (ho, wo) == tuple(x.shape[2:]):
        yield 0, x.transpose(0, 1).reshape(g, c // g, n * ho * wo)
        return
    per_group = c // g * kh * kw * ho * wo  # values one group of one image unfolds to
    images = max(1, SCRATCH // (g * per_group))
    groups = g if images > 1 else max(1, SCRATCH // per_group)
    block = None
    for i in range(0, n, images):
        for first in range(0, g, groups):
            part = x[i:i + images, first * c // g:min(g, first + groups) * c // g].transpose(0, 1)
            if block is None or block.shape[0] != part.shape[0] or block.shape[2] != part.shape[1]:
                block = x.new_empty(part.shape[0], kh * kw, part.shape[1], ho, wo)  # (c, i, j) x (image, row)
            for t in range(kh * kw):
                r, q = divmod(t, kw)
                block[:, t].copy_(part[:, :, r * dh::sh * every, q * dw::sw * every][:, :, :ho, :wo])
            yield first, block.view(-1, c // g * kh * kw, block.shape[2] * ho * wo)


def _bias_of(mname: str, mod: torch.nn.Module, modules: dict, order: list[str],
             names: Mapping[str, str]) -> tuple[str, int] | None:
    """Where the layer's mean output error goes: its own bias, else the BatchNorm right after it."""
    prefix = f"{mname}." if mname else ""
    if getattr(mod, "bias", None) is not None and f"{prefix}bias" in names:
        return names[f"{prefix}bias"], 1
    # the next module that is not part of this one (its padding)
    nxt = next((n for n in order[order.index(mname) + 1:] if not n.startswith(prefix)), None) if prefix else None
    bn = modules.get(nxt) if nxt is not None else None
    if (isinstance(bn, torch.nn.modules.batchnorm._BatchNorm) and bn.track_running_stats
            and bn.num_features == mod.weight.shape[0] and f"{nxt}.running_mean" in names):
        return names[f"{nxt}.running_mean"], -1
    return None


def gptq(w: np.ndarray, steps: np.ndarray, h: np.ndarray, damp: float = DAMP, lam: float = 0.0,
         act_order: bool = False, sweeps: int = 0, prepared: Prepared | None = None,
         feedback_rate: bool = True) -> np.ndarray:
    """int64 indices of the rows x d matrix `w` on the grid k * steps[row] (or one step),
    rounded column by column with error feedback through H: d x d for every row, or
    groups x d x d for consecutive equal groups of rows (a grouped convolution's).

    lam > 0: the objective is sum over rows of (w - q s) H (w - q s)^T + lam * price * bits(q), price
    the tensor's rate_price. The feedback (unless not `feedback_rate`) takes for each index the cheapest of
    floor, ceil and 0 under it, bits from the order-0 model of the nearest-rounded symbols; the descent
    then lowers the same objective, bits from the order-0 model of the current symbols. act_order: the
    columns rounded in decreasing diag(H) order (GPTQ's desc_act; per group). sweeps > 0: that many passes
    of coordinate descent after it (descend). `prepared`: prepare(h, damp, act_order), where already computed."""
    w = np.array(w, dtype=np.float64)
    rows, d = w.shape
    step = np.broadcast_to(np.asarray(steps, dtype=np.float64).reshape(-1, 1), (rows, 1))[:, 0]
    prepared = prepare(h, damp, act_order) if prepared is None else prepared
    u = prepared.u
    # rows x d: each row's columns in the order they are rounded (its group's)
    cols = None if prepared.order is None else np.repeat(prepared.order, rows // len(prepared.order), axis=0)
    wp = w.copy() if cols is None else np.take_along_axis(w, cols, axis=1)  # the feedback updates it in place
    table = None
    price = rate_price(u, step) if lam > 0 else 0.0
    if lam > 0 and feedback_rate:
        rounded = np.rint(w / step[:, None]).astype(np.int64)
        table = Order0().rates(rounded)
        diag = np.diagonal(u if len(u) == 1 else np.repeat(u, rows // len(u), axis=0), axis1=1, axis2=2)
        # in step units, (x - k)^2 weighs s^2 / u_jj^2 of the objective (column j's error through the feedback)
        per_bit = lam * price / (step[:, None] ** 2 / diag**2)
    q = np.zeros((rows, d), dtype=np.int64)

    def on_grid(j: int, column: np.ndarray) -> np.ndarray:
        q[:, j] = k = _cheapest(column / step, table, per_bit[:, j])
        return k * step

    if table is None:  # nearest rounding: the column loop in the native engine
        feedback(wp, u, BLOCK, nearest=(np.ascontiguousarray(step), q))
    else:
        feedback(wp, u, BLOCK, on_grid)
    if cols is not None:
        q = _put(q, cols)
    return descend(w, q, step, prepared.h, sweeps, lam * price) if sweeps else q


def rate_price(u: np.ndarray, steps: np.ndarray) -> float:
    """The objective's scale, per bit of lam: mean s^2 x mean 1/u_jj^2 over the tensor (`u`: factors(), one or
    one per group). GPTQ's rounding error of column j in step units weighs s^2 / u_jj^2 in the objective, and is
    about uniform over a step: the objective's slope against bits is then about 2 ln 2 / 12 = 0.12 of this
    scale, whatever the tensor's step and inputs. One price per tensor: a bit costs the same in all its rows."""
    return float(np.mean(np.asarray(steps, dtype=np.float64) ** 2)
                 * np.mean(1.0 / np.diagonal(u, axis1=1, axis2=2) ** 2))


@dataclass(frozen=True)
class Prepared:
    """What rounding one layer takes from its H, computed once per layer (H is fixed, the steps are not)."""

    u: np.ndarray  # groups x d x d: factors() of H, its columns in `order`
    h: np.ndarray  # groups x d x d: H as dampened for them, in the columns' own order (coordinate descent's objective)
    order: np.ndarray | None  # groups x d: the order the columns are rounded in; None: their own


def prepare(h: np.ndarray, damp: float = DAMP, act_order: bool = False) -> Prepared:
    """Prepared of H; act_order: the columns in decreasing order of H's diagonal (per group; stable)."""
    d = np.shape(h)[-1]
    hs = np.array(h, dtype=np.float64).reshape(-1, d, d)
    # inputs that were always 0: decoupled, so their weights get nearest rounding and no feedback. Not
    # zeroed (GPTQ's choice): a channel dead on the calibration inputs may well be alive on others
    g, j = np.nonzero(np.diagonal(hs, axis1=1, axis2=2) <= 0)
    hs[g, j, j] = 1.0
    # dampening adds one constant to a group's whole diagonal: the order of H's diagonal is the dampened one's
    order = np.argsort(-np.diagonal(hs, axis1=1, axis2=2), axis=1, kind="stable") if act_order else None
    pairs = [_dampen(x, damp, None if order is None else order[i]) for i, x in enumerate(hs)]
    return Prepared(np.stack([u for _, u in pairs]), np.stack([x for x, _ in pairs]), order)


def descend(w: np.ndarray, q: np.ndarray, steps: np.ndarray, h: np.ndarray, sweeps: int,
            rate: float = 0.0) -> np.ndarray:
    """int64 indices q after up to `sweeps` passes of greedy coordinate descent (CDQuant, Nair & Suggala 2024)
    on sum over rows of (w - q s) H (w - q s)^T (+ rate * the order-0 code length of q, in bits): column by
    column, every row whose symbol moved by +1 or -1 lowers it takes the better move. Per row g = H (w - q s)^T
    is kept: a move's gain is O(1), applying it O(d). `h`: one d x d or groups x d x d (consecutive equal groups
    of rows, as gptq). No symbol leaves the range of q (the tensor's symbol width and the coder's alphabet stay
    what GPTQ gave).

    rate > 0: a symbol's bits are -log2 of its level's share of q's symbols, the shares taken afresh at each
    column (a level no symbol holds is not entered). The moves of one column lower the objective under the
    shares they were priced at, and the true code length of the shares after them is lower still (the
    empirical shares minimise it, Gibbs), so the rate-augmented objective never rises."""
    w, q = np.asarray(w, dtype=np.float64), np.array(q, dtype=np.int64)
    rows, d = w.shape
    s = np.broadcast_to(np.asarray(steps, dtype=np.float64).reshape(-1), (rows,))
    hs = np.asarray(h, dtype=np.float64).reshape(-1, d, d)
    per = rows // len(hs)
    e = (w - q * s[:, None]).reshape(len(hs), per, d)
    # (a BLAS product: einsum's own loop took 25 of minilm's 250 s at 1%; the two differ in the last bits of g, not
    # in the moves taken there, whose thresholds sit at 1e-12 of the curvature: the same file)
    g = np.matmul(e, hs).reshape(rows, d)
    group = np.arange(rows) // per
    curve = s**2 * np.diagonal(hs, axis1=1, axis2=2)[group].T  # d x rows: the objective's curvature per symbol
    lo, hi = (q.min(), q.max()) if q.size else (0, 0)
    # per level lo - 1 .. hi + 1 (the two outside: never entered), how many symbols hold it
    counts = np.bincount((q - lo + 1).ravel(), minlength=hi - lo + 3) if rate > 0 else None
    if counts is None:  # rows move independently: each row's passes in the native engine, the same operations
        native.engine().gptq_descend(np.ascontiguousarray(s), g, q, np.ascontiguousarray(hs),
                                     np.ascontiguousarray(curve), int(lo), int(hi), sweeps)
        return q
    for _ in range(sweeps):
        moved = 0
        for j in range(d):
            slope = 2 * s * g[:, j]  # the objective moves by -slope * delta + curve * delta^2
            if counts is None:
                delta = np.where(slope > 0, 1, -1)
                gain = curve[j] - np.abs(slope)
                ok = (gain < -1e-12 * curve[j]) & (q[:, j] + delta >= lo) & (q[:, j] + delta <= hi)
            else:
                with np.errstate(divide="ignore"):
                    bits = -np.log2(counts / q.size)  # inf where no symbol holds the level
                bits[[0, -1]] = np.inf
                k = q[:, j] - lo + 1
                up = curve[j] - slope + rate * (bits[k + 1] - bits[k])
                down = curve[j] + slope + rate * (bits[k - 1] - bits[k])
                delta = np.where(up < down, 1, -1)
                gain = np.minimum(up, down)
                ok = gain < -1e-12 * curve[j]
            r = np.nonzero(ok)[0]
            if r.size:
                if counts is not None:
                    np.subtract.at(counts, q[r, j] - lo + 1, 1)
                    np.add.at(counts, q[r, j] + delta[r] - lo + 1, 1)
                q[r, j] += delta[r]
                g[r] -= (delta[r] * s[r])[:, None] * (hs[0, j] if len(hs) == 1 else hs[group[r], j])
                moved += r.size
        if not moved:
            break
    return q


def _put(q: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The columns of q (in the order `cols` gave them, per row) back in their own order."""
    out = np.empty_like(q)
    np.put_along_axis(out, cols, q, axis=1)
    return out


def feedback(w: np.ndarray, u: np.ndarray, block: int, on_grid: Callable[[int, np.ndarray], np.ndarray] | None = None,
             nearest: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """GPTQ's column loop over the rows x d matrix `w` (updated in place): column j becomes on_grid(j, column),
    its error fed through `u` (factors(): one, or one per consecutive equal group of rows) to the columns after
    it, `block` columns between two rank-`block` updates of the rest. nearest=(step per row, q) instead of
    on_grid: nearest rounding, indices written to q, each block's column loop in the native engine (rows on its
    threads; the same operations as the loop below)."""
    rows, d = w.shape
    # per row: its group's factor (one shared factor stays one matrix: the block updates are then one product)
    u_rows = u if len(u) == 1 else np.repeat(u, rows // len(u), axis=0)
    diag = np.diagonal(u_rows, axis1=1, axis2=2)  # 1 or rows x d
    for b0 in range(0, d, block):
        b1 = min(b0 + block, d)
        err = np.zeros((rows, b1 - b0))
        if nearest is not None:
            native.engine().gptq_nearest_block(w, np.ascontiguousarray(u, dtype=np.float64), nearest[0], b0, b1,
                                               nearest[1], err)
        else:
            for j in range(b0, b1):
                e = (w[:, j] - on_grid(j, w[:, j])) / diag[:, j]
                err[:, j - b0] = e
                if j + 1 < b1:
                    w[:, j + 1 : b1] -= e[:, None] * u_rows[:, j, j + 1 : b1]
        if b1 < d:
            w[:, b1:] -= err @ u[0, b0:b1, b1:] if len(u) == 1 else (err[:, None] @ u_rows[:, b0:b1, b1:])[:, 0]


def factors(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """groups x d x d: per group, the upper Cholesky factor of its dampened H^-1 (what the feedback runs through)."""
    return prepare(h, damp).u


def _dampen(h: np.ndarray, damp: float, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(H + damp * mean(diag H) * I, the upper Cholesky factor of its inverse with the columns in `order`),
    dampened more until both exist."""
    d = h.shape[0]
    base = float(np.mean(np.diag(h)))
    for extra in (1, 10, 100, 1000):
        hd = h + np.eye(d) * damp * extra * base
        try:
            return hd, _upper_inverse_cholesky(hd if order is None else hd[np.ix_(order, order)])
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("H is not positive definite even when dampened")


def _upper_inverse_cholesky(hd: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor of hd^-1."""
    hinv = np.linalg.inv(np.linalg.cholesky(hd))  # L^-1: H^-1 = L^-T L^-1
    return np.linalg.cholesky(hinv.T @ hinv).T


def _cheapest(x: np.ndarray, table, lam: np.ndarray) -> np.ndarray:
    """Per value, the level among floor, ceil and 0 with the least (x - k)^2 + lam * bits(k)."""
    lo = np.floor(x)
    cands = np.stack([lo, lo + 1, np.zeros_like(x)])
    bits = _bits(table, cands.astype(np.int64))
    cost = (x[None] - cands) ** 2 + lam * bits
    return cands[np.argmin(cost, axis=0), np.arange(x.size)]


def _bits(table, k: np.ndarray) -> np.ndarray:
    """Order-0 rate of levels k (outside the table: its dearest level plus one bit)."""
    rates = table.bits[0, 0]
    i = k - table.origin
    inside = (i >= 0) & (i < rates.size)
    return np.where(inside, rates[np.clip(i, 0, rates.size - 1)], rates.max() + 1.0)


def eligible(spec: MethodSpec) -> bool:
    """Specs whose own quantizer reproduces indices handed over as values on its grid: uniform
    (rint(k * step / step) = k), and dq walking columns at lam 0 (walks_columns); rdoq and dq
    otherwise choose their own levels."""
    return spec.rounds_nearest or walks_columns(spec)


def walks_columns(spec: MethodSpec) -> bool:
    """dq with each column a walk, at lam 0, without row groups' steps: its trellis then returns the walk
    nearest the values handed over, which for values on a walk (gptq_walks') is that walk itself (distortion
    0, every other walk at least a step away somewhere)."""
    return spec.name == "dq" and spec.lam == 0 and spec.axis == 0 and spec.group_steps is None


def for_rounding(spec: MethodSpec) -> MethodSpec:
    """The spec data-aware rounding can hand its levels to: dq walks columns at lam 0 (walks_columns); others
    as they are."""
    if spec.name != "dq":
        return spec
    return replace(spec, lam=0.0, axis=0)


def gptq_walks(w: np.ndarray, step: float, prepared: Prepared) -> np.ndarray:
    """int64 dq levels of the rows x d matrix `w` on one step, each column one walk of dq's state machine
    down the rows: the columns in `prepared`'s order (one H: act-order applies, a walk being one column),
    each rounded whole by the trellis at lam 0 (the walk nearest its values as the feedback left them),
    its error then fed to the columns after it as GPTQ does. Against uniform rounding with act-order and
    coordinate descent at equal layer-output error: 0.954-0.977x the coded bits on minilm's matrices
    (bench/bench_dq_walks.py)."""
    from zoocodec.kernels import rdoq as R

    w = np.array(w, dtype=np.float64)
    rows, d = w.shape
    if prepared.order is not None and len(prepared.order) > 1:
        raise ValueError("gptq_walks: one column order for every row (a walk is a whole column)")
    cols = None if prepared.order is None else np.broadcast_to(prepared.order[0], (rows, d))
    wp = w if cols is None else np.take_along_axis(w, cols, axis=1)
    q = np.zeros((rows, d), dtype=np.int64)
    none, no_rates = np.zeros((1, rows), dtype=np.int64), np.zeros((1, 1, 1))

    def on_grid(j: int, column: np.ndarray) -> np.ndarray:
        k = R.dq_trellis((column / step)[None, :], none, 0, no_rates, 0.0, np)
        q[:, j] = k[0]
        return R.dq_dequantize(k, np)[0] * step

    feedback(wp, prepared.u, BLOCK, on_grid)
    return q if cols is None else _put(q, cols)


@dataclass
class DataAware:
    """Rounds a plan's eligible tensors with error feedback (and corrects biases) from measured layer inputs."""

    inputs: dict[str, LayerInputs]
    lam: float = RATE_LAM
    bias_correction: bool = True
    damp: float = DAMP
    # a dampening per layer kind (kind_of: "dense", "grouped"), where it differs from `damp`
    kind_damp: Mapping[str, float] = field(default_factory=dict)
    # True / False: act-order for every layer or none; a tuple of kinds (kind_of): for those kinds only
    act_order: bool | tuple[str, ...] = ACT_ORDER
    sweeps: int = SWEEPS
    feedback_rate: bool = True  # lam > 0: the feedback prices bits too (else only the descent does)
    _factors: dict[str, Prepared] = field(default_factory=dict, repr=False)  # per layer: H is fixed, steps are not

    def on(self, inputs: dict[str, LayerInputs]) -> DataAware:
        """The same rounding against other layer inputs (its factors of H belong to the old ones)."""
        return replace(self, inputs=inputs, _factors={})

    def _prepared(self, name: str, h: np.ndarray, damp: float, act_order: bool) -> Prepared:
        """prepare() of layer `name`'s H, once: H is fixed while the plans' steps change."""
        if name not in self._factors:
            self._factors[name] = prepare(h, damp, act_order)
        return self._factors[name]

    def targets(self, weights: Mapping[str, torch.Tensor], plan: Mapping[str, MethodSpec]) -> dict[str, torch.Tensor]:
        """The tensors to hand the quantizers instead of the originals: eligible planned
        weights snapped onto their grid (k * step, so the method's rounding returns k),
        and the 1-D tensors that absorb the mean output errors. Others are left out."""
        out: dict[str, torch.Tensor] = {}
        shifts: dict[str, np.ndarray] = {}
        for name, li in self.inputs.items():
            spec = plan.get(name)
            grouped = getattr(spec, "group", None) is not None  # a causal LM's group candidates (tuning.groupwise)
            rows = spec is not None and spec.name == "rdoq" and spec.lam == 0  # uniform rounding, a step per row
            walks = spec is not None and walks_columns(spec)
            if spec is None or not (eligible(spec) or rows) or (spec.step is None and not grouped):
                continue
            w = weights[name]
            w2 = w.detach().to(torch.float64).reshape(w.shape[0], -1).numpy()
            kind = kind_of(li)
            damp = FEW_DAMP if kind == "few" else self.kind_damp.get(kind, self.damp)
            if w2.shape[1] != li.h.shape[-1] or w2.shape[0] % len(li.h) or damp is None:
                continue
            act = self.act_order if isinstance(self.act_order, bool) else kind in self.act_order
            act = act and not (walks and len(li.h) > 1)  # a walk is a whole column: one order for all rows
            if walks:
                q = gptq_walks(w2, spec.step, self._prepared(name, li.h, damp, act))
                snapped = spec.levels(q, by_column=True) * spec.step
            elif grouped:  # min-max groups: natural order (a group's columns are rounded together)
                from zoocodec.tuning.gptq import round_groups

                snapped = round_groups(w2, spec, lambda n=name, h=li.h, d=damp: self._prepared(n, h, d, False).u)
                if snapped is None:
                    continue
            else:
                steps = spec.row_steps(w2) if rows else np.array([spec.step])
                q = gptq(w2, steps, li.h, damp, self.lam, act, self.sweeps, self._prepared(name, li.h, damp, act),
                         self.feedback_rate)
                snapped = (q * steps[:, None]).astype(np.float64)
            out[name] = torch.from_numpy(snapped.reshape(tuple(w.shape))).to(w.dtype)
            if self.bias_correction and li.bias is not None:
                # the decoded weights, not the float64 grid: what the model will multiply by
                hat = out[name].to(torch.float64).reshape(w.shape[0], -1).numpy()
                bname, sign = li.bias
                mean_error = np.einsum("gpd,gd->gp", _by_group(w2 - hat, li), li.mean)
                if li.drift is not None:
                    mean_error = mean_error + np.einsum("gpd,gd->gp", _by_group(w2, li), li.drift)
                shifts[bname] = shifts.get(bname, 0.0) + sign * mean_error.ravel()
        for bname, delta in shifts.items():
            b = weights[bname]
            out[bname] = (b.detach().to(torch.float64) + torch.from_numpy(delta)).to(b.dtype)
        return out

    def describe(self, moved: list[str]) -> dict[str, object]:
        """For the header: the settings, the tensors rounded and the 1-D tensors corrected (`moved`: targets' names)."""
        return {"rounding": "gptq", "rate_lam": self.lam, "bias_correction": self.bias_correction, "damp": self.damp,
                **({"damp_by_kind": dict(self.kind_damp)} if self.kind_damp else {}),
                "few_inputs_damp": FEW_DAMP,
                **({"act_order": self.act_order if isinstance(self.act_order, bool) else list(self.act_order)}
                   if self.act_order else {}),
                **({"descent_sweeps": self.sweeps} if self.sweeps else {}),
                **({"feedback_rate": False} if self.lam > 0 and not self.feedback_rate else {}),
                "rounded": [k for k in moved if k in self.inputs],
                "bias_corrected": [k for k in moved if k not in self.inputs]}


def kind_of(li: LayerInputs) -> str:
    """"few": measured on fewer input vectors than its size (FEW_DAMP); "grouped": a grouped (depthwise)
    convolution, one H per group; "dense": the rest (pointwise and full convolutions, Linear layers)."""
    if li.count < li.h.shape[-1]:
        return "few"
    return "grouped" if len(li.h) > 1 else "dense"


def output_error(w: np.ndarray, w_hat: np.ndarray, li: LayerInputs) -> float:
    """E ||(W - W_hat) x||^2 over the layer's calibration inputs: the sum over rows of e H e^T."""
    e = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1) - np.asarray(w_hat, dtype=np.float64).reshape(
        w.shape[0], -1)
    e = _by_group(e, li)
    return float(np.einsum("gpd,gde,gpe->", e, li.h, e))


def _by_group(e: np.ndarray, li: LayerInputs) -> np.ndarray:
    """rows x d -> groups x rows per group x d: each row beside its group's H and mean."""
    return e.reshape(len(li.h), -1, e.shape[1])

