"""Any model, judged by output fidelity: the compressed model against its original on the
user's inputs.

    evaluate_pair("model.onnx", "model.zc", "images/")            # ONNX, through onnxruntime
    evaluate_pair("bert-folder/", "bert.zc", "sentences.txt")     # Hugging Face, through transformers
    evaluate_pair("net.pt", "net.zc", "x.npz", module="mypkg.nets:make")   # a state dict + its module

Inputs: for ONNX a folder of images (shorter side scaled to the graph's input size,
centre crop, [0, 1], ImageNet mean/std for 3 channels) or .npy (a one-input graph) /
.npz (arrays named like the graph's inputs); for Hugging Face a text file, one example a
line; for a state dict .npy / .npz (arr_0, arr_1, ... positional, other names keyword).
The output kind decides the metrics: logits -> KL (primary) and top-1 agreement,
embeddings -> cosine (primary: mean; and min), tokens (a Hugging Face folder whose config
names a `*ForCausalLM` architecture: the lines of the text file are its documents,
zoocodec.eval.lm) -> token KL (primary) and perplexity, anything else -> relative L2.
Each delta carries its 95% interval from the paired inputs (zoocodec.eval.stats; for
tokens, resampling the lines).
"""
from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from zoocodec.device import CPU, Device, resolve
from zoocodec.errors import ModelFormatError, ZoocodecError
from zoocodec.eval import metrics as M
from zoocodec.eval.evaluate import Evaluator, load_weights, metric_row, run_on
from zoocodec.eval.stats import Paired

OUTPUT_KINDS = ("logits", "embeddings", "values", "tokens")
PRIMARY = {"logits": "kl", "embeddings": "cosine_mean", "values": "rel_l2", "tokens": "kl"}
LOWER_IS_BETTER = ("kl", "rel_l2", "ppl")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
BATCH = 32
INPUTS_HELP = ("give --inputs: a folder of images or .npy/.npz arrays for an ONNX model, a text file (one "
               "example a line) for a Hugging Face folder, .npy/.npz for a state dict with --module")


def compare(kind: str, out: torch.Tensor, ref: torch.Tensor) -> dict[str, Paired]:
    """The metrics of an output kind, paired per input with the original's."""
    n = len(out)
    if kind == "tokens":
        from zoocodec.eval import lm

        return lm.compare(out, ref)
    if kind == "logits":
        out, ref = out.reshape(n, -1), ref.reshape(n, -1)
        return {"kl": Paired("mean", M.kl_rows(out, ref).numpy(), np.zeros(n)),
                "agreement": Paired("binary", (out.argmax(1) == ref.argmax(1)).numpy(), np.ones(n, bool))}
    if kind == "embeddings":
        c = M.cosines(out.reshape(n, -1), ref.reshape(n, -1)).numpy()
        return {"cosine_mean": Paired("mean", c, np.ones(n)), "cosine_min": Paired("min", c, np.ones(n))}
    return {"rel_l2": Paired("mean", M.rel_l2_rows(out, ref).numpy(), np.zeros(n))}


class Runner(Protocol):
    """A model outside the zoo: runs any set of its weights on fixed inputs."""

    kind: str  # logits | embeddings | values (known after the first run for ONNX and modules)
    n: int  # inputs

    def outputs(self, weights: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def part(self, rows: np.ndarray) -> Runner: ...  # the same runner on the inputs at `rows` only


def _guess_kind(out: torch.Tensor) -> str:
    return "logits" if out.dim() == 2 and out.shape[1] >= 2 else "values"


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """.npy -> {'arr_0': a}; .npz -> its arrays (never unpickled)."""
    try:
        if path.suffix == ".npy":
            return {"arr_0": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ZoocodecError(f"{path}: unreadable .npy/.npz ({e})") from None


def _batches(arrays: dict[str, np.ndarray], batch: int):
    n = len(next(iter(arrays.values())))
    for a in arrays.values():
        if len(a) != n:
            raise ZoocodecError(f"the input arrays differ in length along the first axis ({len(a)} vs {n})")
    for s in range(0, n, batch):
        yield {k: a[s:s + batch] for k, a in arrays.items()}


# ---- ONNX --------------------------------------------------------------------------------
class OnnxRunner:
    def __init__(self, original: Path, inputs: Path, kind: str | None):
        import onnx

        from zoocodec.pipeline.modelio import open_model

        src = open_model(original)
        if src.format != "onnx":
            raise ZoocodecError(f"{original}: not an ONNX file")
        self.graph = src.files["model.onnx"]
        proto = onnx.ModelProto()
        proto.ParseFromString(self.graph)
        inits = set(src.names)
        self.inputs = [i for i in proto.graph.input if i.name not in inits]
        self.arrays = self._read_inputs(inputs)
        self.n = len(next(iter(self.arrays.values())))
        self._kind = kind
        dim0 = self.inputs[0].type.tensor_type.shape.dim[0] if self.inputs[0].type.tensor_type.shape.dim else None
        self.fixed = dim0 is not None and dim0.dim_value > 0  # the graph fixes its batch size: every run is of it
        self.batch = dim0.dim_value if self.fixed else BATCH

    def part(self, rows: np.ndarray) -> OnnxRunner:
        return _part_of_arrays(self, rows)

    def _read_inputs(self, path: Path) -> dict[str, np.ndarray]:
        names = [i.name for i in self.inputs]
        if path.is_dir():
            if len(self.inputs) != 1:
                raise ZoocodecError(f"a folder of images feeds a graph with one input; this one has {names}: "
                                    f"give an .npz with arrays named {', '.join(names)}")
            return {names[0]: _images(path, _dims(self.inputs[0]))}
        arrays = _arrays(path)
        if path.suffix == ".npy":
            if len(names) != 1:
                raise ZoocodecError(f"an .npy feeds a graph with one input; this one has {names}: give an .npz")
            return {names[0]: arrays["arr_0"]}
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ZoocodecError(f"{path}: no array named {missing[0]!r} (the graph's inputs: {', '.join(names)})")
        return {n: arrays[n] for n in names}

    def outputs(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        import onnxruntime as ort

        from zoocodec.pipeline.modelio import onnx_with_weights

        proto = onnx_with_weights(self.graph, weights)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
        try:
            sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types
            raise ModelFormatError(f"onnxruntime cannot run the graph: {str(e).splitlines()[0]}") from None
        try:
            out = np.concatenate([sess.run(None, b)[0] for b in _batches(self.arrays, self.batch)])
        except Exception as e:
            raise ZoocodecError(f"onnxruntime refused the inputs: {str(e).splitlines()[0]}") from None
        result = torch.from_numpy(out).float()
        self.kind = self._kind or _guess_kind(result)
        return result


def _part_of_arrays(run, rows: np.ndarray):
    """A copy of a runner fed the inputs at `rows` only (one side of a split)."""
    out = copy.copy(run)
    out.arrays = {k: a[rows] for k, a in run.arrays.items()}
    out.n = len(rows)
    return out


def _dims(inp) -> list[int]:
    return [d.dim_value for d in inp.type.tensor_type.shape.dim]


def _images(folder: Path, dims: list[int]) -> np.ndarray:
    """Every image of a folder (sorted), shaped for a 4-D image input (NCHW or NHWC)."""
    from PIL import Image

    from zoocodec.eval.data import IMAGENET_MEAN, IMAGENET_STD

    if len(dims) != 4:
        raise ZoocodecError(f"a folder of images feeds a 4-D image input; the graph's input has shape {dims}: "
                            f"give .npy/.npz arrays")
    channels_first = dims[1] in (1, 3)
    c, h, w = (dims[1], dims[2], dims[3]) if channels_first else (dims[3], dims[1], dims[2])
    if c not in (1, 3) or h <= 0 or w <= 0:
        raise ZoocodecError(f"the graph's input shape {dims} is not a fixed-size 1- or 3-channel image: give .npy/.npz")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ZoocodecError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    out = []
    for p in files:
        try:
            with Image.open(p) as img:
                x = torch.from_numpy(np.asarray(img.convert("RGB" if c == 3 else "L"), dtype=np.float32).copy())
        except OSError as e:
            raise ZoocodecError(f"{p}: unreadable image ({e})") from None
        x = (x if x.dim() == 3 else x.unsqueeze(-1)).permute(2, 0, 1).unsqueeze(0) / 255.0
        scale = max(h / x.shape[-2], w / x.shape[-1])
        size = (max(h, round(x.shape[-2] * scale)), max(w, round(x.shape[-1] * scale)))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        x = x[0, :, top:top + h, left:left + w]
        if c == 3:
            x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        out.append(x if channels_first else x.permute(1, 2, 0))
    return torch.stack(out).numpy()


# ---- Hugging Face ------------------------------------------------------------------------
class HfRunner:
    def __init__(self, folder: Path, inputs: Path, kind: str | None, device: Device = CPU):
        from zoocodec.eval import lm
        from zoocodec.eval.text import is_classifier

        if inputs.is_dir() or inputs.suffix in (".npy", ".npz"):
            raise ZoocodecError(f"{inputs}: a Hugging Face model takes a text file of inputs, one example a line")
        try:
            self.texts = [line for line in inputs.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ZoocodecError(f"{inputs}: unreadable text file ({e})") from None
        if not self.texts:
            raise ZoocodecError(f"{inputs}: no examples (one a line)")
        self.folder = folder
        self.classifier = is_classifier(folder)
        self.scorer = None
        if lm.is_causal_lm(folder):
            if kind not in (None, "tokens"):
                raise ZoocodecError(f"{folder}: a causal LM is judged by its next-token predictions: "
                                    f"--output-kind tokens (or leave it out), not {kind}")
            self.scorer = lm.Scorer(folder, self.texts, device=device)  # (it batches on the GPU itself)
        self.n = self.scorer.n if self.scorer else len(self.texts)
        self.kind = "tokens" if self.scorer else kind or ("logits" if self.classifier else "embeddings")

    def reference(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """The original's outputs; a causal LM's scorer keeps what the later comparisons need."""
        return self.scorer.reference(weights) if self.scorer else self.outputs(weights)

    def part(self, rows: np.ndarray) -> HfRunner:
        out = copy.copy(self)
        if self.scorer:  # a causal LM's inputs are its tokens
            out.scorer = self.scorer.part(rows)
        else:
            out.texts = [self.texts[i] for i in rows]
        out.n = len(rows)
        return out

    def outputs(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        from zoocodec.eval.text import TextModel

        if self.scorer:
            return self.scorer.outputs(weights)
        model = TextModel(self.folder, weights, classifier=self.classifier)
        return model.logits(self.texts) if self.classifier else model.encode(self.texts)


# ---- a state dict and the user's module ----------------------------------------------------
def factory(spec: str) -> Callable[[], torch.nn.Module]:
    """'package.module:function' -> the function (imported: the user names their own code)."""
    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise ZoocodecError(f"--module {spec!r}: write package.module:factory")
    try:
        made = getattr(importlib.import_module(mod), fn)
    except ImportError as e:
        raise ZoocodecError(f"--module {spec!r}: cannot import {mod} ({e})") from None
    except AttributeError:
        raise ZoocodecError(f"--module {spec!r}: {mod} has no {fn}") from None
    if not callable(made):
        raise ZoocodecError(f"--module {spec!r}: {fn} is not callable")
    return made


class TorchRunner:
    def __init__(self, module: str, inputs: Path, kind: str | None):
        self.make = factory(module)
        if inputs.suffix not in (".npy", ".npz"):
            raise ZoocodecError(f"{inputs}: a state dict with --module takes .npy/.npz inputs")
        self.arrays = _arrays(inputs)
        self.n = len(next(iter(self.arrays.values())))
        self._kind = kind

    def part(self, rows: np.ndarray) -> TorchRunner:
        return _part_of_arrays(self, rows)

    def outputs(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        result = self.forward(self.module(weights))
        self.kind = self._kind or _guess_kind(result)
        return result

    def module(self, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The user's module with `weights`, in eval mode."""
        net = self.make()
        if not isinstance(net, torch.nn.Module):
            raise ZoocodecError(f"the factory returned {type(net).__name__}, not a torch.nn.Module")
        try:
            net.load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise ModelFormatError(f"the weights do not fit the module: {str(e).splitlines()[0]}") from None
        net.eval()
        return net

    def forward(self, net: torch.nn.Module) -> torch.Tensor:
        """`net`'s outputs on the inputs, batch by batch."""
        outs = []
        with torch.no_grad():
            for b in _batches(self.arrays, BATCH):
                on = torch.get_default_device()  # the GPU inside run_on
                args = [torch.from_numpy(b[k]).to(on) for k in b if k.startswith("arr_")]
                kwargs = {k: torch.from_numpy(v).to(on) for k, v in b.items() if not k.startswith("arr_")}
                outs.append(_first(net(*args, **kwargs)).float())
        return torch.cat(outs)


def _first(out) -> torch.Tensor:
    """A forward's tensor: itself, the first of a tuple, or `logits` / the first value of a mapping."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "keys"):
        return out["logits"] if "logits" in out else next(iter(out.values()))
    raise ZoocodecError(f"the module's forward returned {type(out).__name__}, not a tensor")


def on_torch(original: str | os.PathLike, module: str | None) -> bool:
    """Whether `runner` runs the model as a torch module (a state dict with its module, a Hugging Face folder),
    which can run on a GPU; an ONNX graph runs on onnxruntime's CPU provider."""
    return module is not None or Path(original).is_dir()


def runner(original: Path, inputs: Path, module: str | None = None, kind: str | None = None,
           device: Device = CPU) -> Runner:
    """The runner for a model outside the zoo, by its format (`device`: where a causal LM's scorer batches)."""
    if kind is not None and kind not in OUTPUT_KINDS:
        raise ZoocodecError(f"--output-kind {kind!r}: use {', '.join(OUTPUT_KINDS)}")
    if not inputs.exists():
        raise ZoocodecError(f"{inputs}: no such file or directory")
    from zoocodec.pipeline.modelio import sniff

    if not original.exists():
        raise ZoocodecError(f"{original}: no such file or directory")
    if on_torch(original, module):
        return TorchRunner(module, inputs, kind) if module is not None else HfRunner(original, inputs, kind, device)
    fmt = sniff(original)
    if fmt == "onnx":
        if device.is_gpu:
            raise ZoocodecError(f"{original}: an ONNX graph runs on onnxruntime's CPU provider here: leave out "
                                f"--device")
        return OnnxRunner(original, inputs, kind)
    raise ZoocodecError(f"{original}: a {fmt} file holds weights only: name the module that builds it with "
                        f"--module package.module:factory")


class FidelityTask:
    """The task of a model outside the zoo: its outputs against the original's (as zoocodec.eval.tasks.Task)."""

    lower_is_better = LOWER_IS_BETTER
    search_limit = sensitivity_limit = None  # every input: users give as many as they want judged
    prepare = None  # nothing made ahead of calibration (Task.prepare: a zoo task's distilled images)

    def __init__(self, kind: str, inputs: Path):
        self.kind, self.primary, self.name = kind, PRIMARY[kind], f"{kind} on {inputs.name}"

    def compare(self, out: torch.Tensor, ref: torch.Tensor) -> dict[str, Paired]:
        return compare(self.kind, out, ref)

    def metrics(self, out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        return {k: p.value for k, p in self.compare(out, ref).items()}

    def distortion(self, out: torch.Tensor, ref: torch.Tensor) -> float:
        """Smooth, and linear in small weight-noise variance (for sensitivities): KL, 1 - cosine, rel. L2 squared."""
        n = len(out)
        if self.kind == "tokens":
            return float(out[:, 1].mean())
        if self.kind == "logits":
            return M.kl(out.reshape(n, -1), ref.reshape(n, -1))
        if self.kind == "embeddings":
            return float(1 - M.cosines(out.reshape(n, -1), ref.reshape(n, -1)).mean())
        return float(M.rel_l2_rows(out, ref).pow(2).mean())


class PairEvaluator(Evaluator):
    """An Evaluator for a model outside the zoo: automatic mode and sensitivities run on it unchanged."""

    def __init__(self, original: str | os.PathLike, inputs: str | os.PathLike, module: str | None = None,
                 output: str | None = None, device: str | Device = "cpu"):
        self.reference, self.limit, self.device = str(original), None, resolve(device)
        self.run = runner(Path(original), Path(inputs), module, output, self.device)
        weights = load_weights(original)
        self.ref_out = self._on(weights, self.run.reference if isinstance(self.run, HfRunner) else self.run.outputs)
        self.task = FidelityTask(self.run.kind, Path(inputs))
        self.baseline = self.task.metrics(self.ref_out, self.ref_out)

    def part(self, indices) -> PairEvaluator:
        """The same judgement on the inputs at `indices` only (one side of a split)."""
        rows = np.asarray(indices, dtype=np.int64)
        out = copy.copy(self)
        out.run, out.ref_out = self.run.part(rows), self.ref_out[torch.from_numpy(rows)]
        return out

    def _on(self, weights: dict[str, torch.Tensor], run) -> torch.Tensor:
        """`run(weights)` on the evaluator's device (a causal LM's scorer places its own tensors)."""
        return run(weights) if getattr(self.run, "scorer", None) else run_on(self.device, weights, run)

    def outputs(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self._on(weights, self.run.outputs)
        if out.shape != self.ref_out.shape:
            raise ZoocodecError(f"the compressed model's outputs have shape {tuple(out.shape)}, the original's "
                                f"{tuple(self.ref_out.shape)}: not the same model")
        return out


def evaluate_pair(original: str | os.PathLike, compressed: str | os.PathLike, inputs: str | os.PathLike,
                  module: str | None = None, output: str | None = None, device: str | Device = "cpu"):
    """Metrics of `compressed` (a .zc or a model file) against `original` on `inputs`, one
    zoocodec.eval.Metric per metric, each delta with its 95% interval; both models run on `device` (a
    state dict's module or a Hugging Face model; an ONNX graph runs on the CPU only)."""
    ev = PairEvaluator(original, inputs, module, output, device)
    t = ev.task
    return [metric_row(str(compressed), t.name, name, p, name in t.lower_is_better, name == t.primary)
            for name, p in ev.compare(load_weights(compressed)).items()]
