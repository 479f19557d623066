"""Layer inputs of an ONNX graph, captured with onnxruntime, for data-aware rounding.

An ONNX model has no torch module to hook, so calibrate.collect cannot measure what its layers see.
Here the data input of every node whose weight automatic mode may round (a `MatMul`'s B, a `Gemm`'s B, a
2-D `Conv`'s W, each an initializer read by that node alone) is added to the graph's outputs, the graph is
run with onnxruntime on the calibration inputs, and the same statistics are summed as the torch hooks sum
(calibrate.accumulate, through a stand-in nn.Linear or nn.Conv2d on the meta device: H = E[x x^T] over the
input dimension, a convolution's on its unfolded patches at the same strided grid of positions, one H per
group). ONNX pads (begin and end may differ; auto_pad SAME_* and VALID too) are applied before unfolding.
A text model's MatMul inputs are counted at its real tokens only: the positions an attention mask among the
graph's inputs keeps (the padding is masked out of the outputs downstream, and was 67% of minilm's calibration
positions at 128 tokens). token_tables finds word-embedding tables by structure, for automatic mode's step per row.

A MatMul's B and a Gemm's B without transB are stored (in, out): the transpose of the (out, in) view that
GPTQ rounds. OnnxDataAware hands calibrate.DataAware their transposes and transposes its targets back; with
one step per tensor the grid is the same either way, so the file's indices are those GPTQ chose. A MatMul
whose B is a Transpose (perm 1, 0) of an initializer, each read by that node alone, is a Linear exported
without constant folding (`torch.onnx.export(do_constant_folding=False)`): its initializer is the (out, in)
view itself.

Biases for the mean-error correction: a Conv's B, a Gemm's C (alpha = beta = 1), or the 1-D initializer
added to a MatMul's output by the only node that reads it. Any other initializer of two or more dimensions
(read by several nodes, by another op, inside a subgraph, or a Conv that is not 2-D) keeps nearest rounding,
and `skipped` says why.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from zoocodec.errors import ZoocodecError
from zoocodec.methods import MethodSpec
from zoocodec.tuning.calibrate import DataAware, LayerInputs, accumulate, eligible, inputs_of

BYTES = 2**28  # captured activations held at once (one onnxruntime run): the batch is sized to stay under it
UNPADDED = True  # H of a text model's MatMul inputs over its real tokens only (capture)


@dataclass(frozen=True)
class Layer:
    """One node whose weight is rounded with its captured inputs."""

    weight: str  # the initializer
    data: str  # the node's data input
    op: str  # MatMul | Gemm | Conv
    shape: tuple[int, ...]  # the weight's shape as stored
    transposed: bool = False  # stored (in, out): MatMul's B, Gemm's B without transB
    trans_a: bool = False  # Gemm's transA: the data input is (in, rows)
    bias: str | None = None
    # Conv: strides, dilations, group, pads (top, left, bottom, right), auto_pad
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    auto_pad: str = "NOTSET"
    depth: int = 1  # its topological group: 1 + the deepest group of layers its data input depends on


def layers(graph: bytes, weights: Mapping[str, torch.Tensor]) -> tuple[list[Layer], dict[str, str]]:
    """(the layers whose weights can be rounded on captured inputs, in the graph's order; the other
    initializers of 2+ dimensions -> why they keep nearest rounding) of a serialized graph whose initializers
    are `weights`."""
    import onnx

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(graph)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ZoocodecError(f"the ONNX graph is corrupt ({type(e).__name__})") from None
    g = proto.graph
    readers: dict[str, list] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, i))
    flipped = _transposed_weights(g, weights, readers)
    inner = _subgraph_names(g)
    outputs = {o.name for o in g.output}
    found: list[Layer] = []
    skipped: dict[str, str] = {}
    depth: dict[str, int] = {}  # value -> the deepest topological group of layers it depends on
    for node in g.node:
        d_in = max((depth.get(v, 0) for v in node.input if v and v not in weights), default=0)
        layer = _layer(node, weights, readers, outputs, d_in + 1, flipped)
        if layer is not None:
            found.append(layer)
        for v in node.output:
            depth[v] = d_in + 1 if layer is not None else d_in
    handled = {x.weight for x in found}
    for name, t in weights.items():
        if t.dim() < 2 or name in handled:
            continue
        uses = readers.get(name, [])
        if name in inner:
            skipped[name] = "read inside a subgraph"
        elif len(uses) > 1:
            skipped[name] = f"read by {len(uses)} nodes"
        elif not uses:
            skipped[name] = "read by no node"
        else:
            node, i = uses[0]
            skipped[name] = _why_not(node, i, t)
    return found, skipped


def _transposed_weights(g, weights, readers) -> dict[str, str]:
    """Transpose (perm 1, 0) outputs read by one MatMul as its B -> the 2-D initializer they transpose, which
    that Transpose alone reads: a Linear's (out, in) weight exported without constant folding."""
    from onnx import helper

    out = {}
    for node in g.node:
        if node.op_type != "Transpose" or len(node.input) != 1 or node.input[0] not in weights:
            continue
        perm = [helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"]
        after = readers.get(node.output[0], [])
        if (weights[node.input[0]].dim() == 2 and list(perm[0] if perm else (1, 0)) == [1, 0]
                and len(readers.get(node.input[0], ())) == 1 and len(after) == 1
                and after[0][0].op_type == "MatMul" and after[0][1] == 1):
            out[node.output[0]] = node.input[0]
    return out


def _layer(node, weights, readers, outputs, depth: int, flipped: Mapping[str, str]) -> Layer | None:
    """The Layer of `node`, where its weight is an initializer it alone reads (a MatMul's, directly or through
    a Transpose of `flipped`), in a layout handled here."""
    from onnx import helper

    att = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    ins = list(node.input)

    def own(i: int, dims: int) -> str | None:
        name = ins[i] if len(ins) > i else ""
        t = weights.get(name)
        return name if t is not None and t.dim() == dims and len(readers.get(name, ())) == 1 else None

    if node.op_type == "MatMul" and len(ins) == 2 and ins[0] not in weights:
        w, stored = own(1, 2), True  # stored (in, out)
        if w is None and ins[1] in flipped:
            w, stored = flipped[ins[1]], False  # (out, in), transposed by the graph
        if w is None:
            return None
        return Layer(w, ins[0], "MatMul", tuple(weights[w].shape), transposed=stored,
                     bias=_added_bias(node, weights, readers, outputs, weights[w].shape[1 if stored else 0]),
                     depth=depth)
    if node.op_type == "Gemm" and len(ins) >= 2 and ins[0] not in weights:
        w = own(1, 2)
        if w is None:
            return None
        trans_b = bool(att.get("transB", 0))
        out = weights[w].shape[0 if trans_b else 1]
        c = own(2, 1)
        bias = c if c and weights[c].shape[0] == out and att.get("alpha", 1.0) == 1.0 and att.get("beta", 1.0) == 1.0 \
            else None
        return Layer(w, ins[0], "Gemm", tuple(weights[w].shape), transposed=not trans_b,
                     trans_a=bool(att.get("transA", 0)), bias=bias, depth=depth)
    if node.op_type == "Conv" and ins[0] not in weights:
        w = own(1, 4)
        if w is None or att.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", b"SAME_UPPER", b"SAME_LOWER"):
            return None
        shape = tuple(weights[w].shape)
        if tuple(att.get("kernel_shape", shape[2:])) != shape[2:]:
            return None
        b = own(2, 1)
        return Layer(w, ins[0], "Conv", shape, bias=b if b and weights[b].shape[0] == shape[0] else None,
                     strides=tuple(att.get("strides", (1, 1))), dilations=tuple(att.get("dilations", (1, 1))),
                     group=int(att.get("group", 1)), pads=tuple(att.get("pads", (0, 0, 0, 0))),
                     auto_pad=att.get("auto_pad", b"NOTSET").decode(), depth=depth)
    return None


def _added_bias(node, weights, readers, outputs, out: int) -> str | None:
    """The 1-D initializer of `out` values that the only reader of a MatMul's output adds to it (a Linear's
    bias), where that reader alone reads it."""
    y = node.output[0]
    after = readers.get(y, [])
    if y in outputs or len(after) != 1 or after[0][0].op_type != "Add":
        return None
    other = [v for v in after[0][0].input if v != y]
    t = weights.get(other[0]) if len(other) == 1 else None
    if t is None or t.dim() != 1 or t.shape[0] != out or len(readers.get(other[0], ())) != 1:
        return None
    return other[0]


def _why_not(node, i: int, t: torch.Tensor) -> str:
    """Why a weight read by one node keeps nearest rounding."""
    if node.op_type not in ("MatMul", "Gemm", "Conv"):
        return f"input of {node.op_type}, not of MatMul/Gemm/Conv"
    if i != 1:
        return f"input {i} of {node.op_type}, not its weight"
    if node.op_type == "Conv" and t.dim() != 4:
        return f"a {t.dim() - 2}-D Conv's weight (2-D only)"
    return f"{node.op_type} weight of shape {tuple(t.shape)} not handled"


# ops an index tensor passes through unchanged in its values on its way to a Gather (input 0 carries them)
INDEX_PASS = ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten")
INT_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)  # TensorProto's UINT8 .. INT64 element types


def token_tables(graph: bytes, weights: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """2-D initializers that a `Gather` (axis 0) reads rows of at indices taken from an integer graph input
    (directly or through INDEX_PASS ops) -> that input: a text model's word-embedding table and its token ids,
    recognised by the graph's structure whatever the initializer is named."""
    import onnx
    from onnx import helper

    proto = onnx.ModelProto()
    proto.ParseFromString(graph)
    g = proto.graph
    ints = {i.name for i in g.input if i.name not in weights and i.type.tensor_type.elem_type in INT_TYPES}
    made = {o: node for node in g.node for o in node.output}
    out: dict[str, str] = {}
    for node in g.node:
        if node.op_type != "Gather" or len(node.input) != 2 or node.input[0] not in weights:
            continue
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        src = node.input[1]
        while src in made and made[src].op_type in INDEX_PASS:
            src = made[src].input[0]
        if axis == 0 and weights[node.input[0]].dim() == 2 and src in ints:
            out[node.input[0]] = src
    return out


def token_ids(arrays: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """The token ids fed as graph input `name`, flattened, the padded positions (real_positions) left out."""
    ids = np.asarray(arrays[name])
    keep = real_positions(arrays, ids.shape, name)
    return (ids if keep is None else ids[keep]).astype(np.int64).ravel()


def real_positions(arrays: Mapping[str, np.ndarray], shape: tuple[int, ...], but: str = "") -> np.ndarray | None:
    """Where the 2-D integer inputs of `shape` (other than `but`) that hold only 0 and 1 (attention masks) are
    all 1: the positions that are not padding. None where no input is such a mask."""
    masks = [a for k, a in arrays.items() if k != but and a.ndim == 2 and a.shape == tuple(shape)
             and (a.dtype == bool or np.issubdtype(a.dtype, np.integer)) and np.isin(a, (0, 1)).all()]
    return np.logical_and.reduce([a != 0 for a in masks]) if masks else None


def _subgraph_names(g) -> set[str]:
    """The names read by nodes inside subgraphs (If, Loop, Scan bodies)."""
    from onnx import AttributeProto

    out: set[str] = set()
    for node in g.node:
        for a in node.attribute:
            subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
            for s in subs:
                out.update(v for n in s.node for v in n.input)
                out |= _subgraph_names(s)
    return out


def capture(graph: bytes, weights: Mapping[str, torch.Tensor], arrays: Mapping[str, np.ndarray],
            found: list[Layer], batch: int, fixed: bool = False, unpadded: bool = UNPADDED) -> dict[str, LayerInputs]:
    """LayerInputs per weight of `found`, from one pass of the graph (holding `weights`) over `arrays` (the
    graph's inputs by name), `batch` inputs a run at most (fewer where the captured activations would pass
    BYTES; exactly `batch` where the graph fixes its batch size: `fixed`). `unpadded`: a MatMul's (batch,
    positions, features) input counts only the positions an attention mask among the inputs keeps
    (real_positions)."""
    import onnx
    import onnxruntime as ort

    from zoocodec.errors import ModelFormatError
    from zoocodec.pipeline.modelio import onnx_with_weights

    if not found:
        return {}
    proto = onnx_with_weights(graph, dict(weights))
    feeds = set(arrays)
    have = {o.name for o in proto.graph.output}
    wanted = list(dict.fromkeys(x.data for x in found if x.data not in feeds))
    for name in wanted:
        if name not in have:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the values named, not fused away
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        raise ModelFormatError(f"onnxruntime cannot run the graph with its layer inputs as outputs: "
                               f"{str(e).splitlines()[0]}") from None
    names = [o.name for o in sess.get_outputs()]
    at = {n: names.index(n) for n in wanted}
    n = len(next(iter(arrays.values())))
    sums: dict[str, list] = {x.weight: [None, None, 0] for x in found}
    stand = {x.weight: _stand_in(x) for x in found}
    i, size = 0, batch if fixed else 1  # a first run of one input measures what a batch would hold
    while i < n:
        feed = {k: a[i:i + size] for k, a in arrays.items()}
        try:
            got = sess.run(None, feed)
        except Exception as e:
            raise ZoocodecError(f"onnxruntime refused the calibration inputs: {str(e).splitlines()[0]}") from None
        keeps: dict[tuple[int, ...], torch.Tensor | None] = {}  # real positions per (batch, positions), once a run
        for x in found:
            v = feed[x.data] if x.data in feeds else got[at[x.data]]
            xt = _as_rows_input(x, torch.from_numpy(np.ascontiguousarray(v)))
            if unpadded and x.op == "MatMul" and xt.dim() == 3:
                shape = tuple(xt.shape[:2])
                if shape not in keeps:
                    keep = real_positions(feed, shape)
                    keeps[shape] = None if keep is None else torch.from_numpy(keep)
                if keeps[shape] is not None:  # a text model's padded positions: masked out of the outputs downstream
                    xt = xt[keeps[shape]]
            accumulate(sums[x.weight], stand[x.weight], xt)
        if i == 0 and not fixed:
            held = sum(got[at[d]].nbytes for d in at) + sum(feed[k].nbytes for k in feed)
            size = max(1, min(batch, BYTES // max(1, held)))
        i += len(next(iter(feed.values())))
    return {x.weight: inputs_of(sums[x.weight], (x.bias, 1) if x.bias else None) for x in found
            if sums[x.weight][2]}


def _stand_in(x: Layer) -> torch.nn.Module:
    """An nn.Linear / nn.Conv2d of the layer's shape on the meta device: what calibrate.accumulate unfolds by."""
    if x.op != "Conv":
        cin, cout = (x.shape if x.transposed else x.shape[::-1])
        return torch.nn.Linear(cin, cout, bias=False, device="meta")
    cout, cin_g, kh, kw = x.shape
    return torch.nn.Conv2d(cin_g * x.group, cout, (kh, kw), x.strides, 0, x.dilations, x.group, bias=False,
                           device="meta")


def _as_rows_input(x: Layer, v: torch.Tensor) -> torch.Tensor:
    """The captured data input as the stand-in's input: Gemm's transA undone, a Conv's pads applied."""
    if x.op == "Gemm" and x.trans_a:
        return v.T
    if x.op != "Conv":
        return v
    if v.dim() != 4:
        raise ZoocodecError(f"{x.weight}: a 2-D Conv's input has {v.dim()} dimensions")
    top, left, bottom, right = x.pads
    if x.auto_pad.startswith("SAME"):
        pads = []
        for size, k, s, d in zip(v.shape[2:], x.shape[2:], x.strides, x.dilations, strict=True):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            more = total - total // 2  # the odd pixel: at the end (SAME_UPPER) or the beginning (SAME_LOWER)
            pads.append((more, total // 2) if x.auto_pad == "SAME_LOWER" else (total // 2, more))
        (top, bottom), (left, right) = pads
    elif x.auto_pad == "VALID":
        top = left = bottom = right = 0
    return torch.nn.functional.pad(v, (left, right, top, bottom)) if any((top, left, bottom, right)) else v


@dataclass
class OnnxDataAware(DataAware):
    """calibrate.DataAware for weights stored (in, out): rounded as their (out, in) transposes, the targets
    transposed back. Such a weight is rounded only under one step for the whole tensor (a step per row or per
    group would be another grid once transposed): otherwise its own method's rounding stands."""

    transposed: frozenset[str] = frozenset()

    def targets(self, weights: Mapping[str, torch.Tensor], plan: Mapping[str, MethodSpec]) -> dict[str, torch.Tensor]:
        flip = {k for k in self.transposed if k in plan and _one_step(plan[k])}
        kept = {k: v for k, v in plan.items() if k not in self.transposed or k in flip}
        out = super().targets({**weights, **{k: weights[k].T for k in flip}}, kept)
        return {k: (v.T.contiguous() if k in flip else v) for k, v in out.items()}


def _one_step(spec: MethodSpec) -> bool:
    return eligible(spec) and spec.step is not None and getattr(spec, "group", None) is None


def sequential(graph: bytes, weights: Mapping[str, torch.Tensor], arrays: Mapping[str, np.ndarray],
               found: list[Layer], batch: int, fixed: bool, plan: Mapping[str, MethodSpec], rounding: OnnxDataAware,
               original: Mapping[str, LayerInputs]) -> dict[str, LayerInputs]:
    """LayerInputs of `found`, each topological group of layers (Layer.depth) captured on the graph whose
    earlier groups hold their weights rounded under `plan` (with `rounding`'s settings) and decoded: GPTQ's
    sequential order, one onnxruntime session per group. The bias correction also takes out the drift of each
    layer's mean input from `original`'s (as zoocodec.tuning.sequential does)."""
    from zoocodec.tuning.auto import reconstruct

    current = reconstruct(dict(weights), dict(plan))  # every planned tensor as decoded; the layers' replaced in order
    out: dict[str, LayerInputs] = {}
    for depth in sorted({x.depth for x in found}):
        group = [x for x in found if x.depth == depth]
        got = capture(graph, current, arrays, group, batch, fixed)
        for key, li in got.items():
            was = original.get(key)
            if was is not None and was.mean.shape == li.mean.shape:
                li.drift = was.mean - li.mean
        out.update(got)
        rounded = rounding.on(got).targets(weights, plan)
        moved = {x.weight for x in group} | set(rounded)
        decoded = reconstruct({**weights, **rounded}, {k: plan[k] for k in moved if k in plan})
        current.update({k: decoded[k] for k in moved})
    return out
