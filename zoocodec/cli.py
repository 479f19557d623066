"""The command line: one command per verb. Bad input -> one line on stderr, exit status 2."""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from zoocodec.errors import ZoocodecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Compress neural-network weights and measure what it costs.")


def _console(stderr: bool = False) -> Console:
    """A terminal's own width; anywhere else (a log, a pipe) no width limit, so tables and
    lines are never cut or wrapped at 80 columns."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=LOG_WIDTH)


LOG_WIDTH = 10_000
console = _console()
err_console = _console(stderr=True)
PLAIN_PROGRESS_SECONDS = 10.0


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[str], None]]:
    """Progress over `total` named steps: a bar on a terminal, else a plain line every few
    seconds (and the last one) once work has run that long, so logs show that work is moving
    and short commands stay quiet. Yields step(name)."""
    if err_console.is_terminal:
        with Progress(TextColumn(f"{what} [cyan]{{task.fields[name]}}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("", total=total, name="")
            yield lambda name: bar.update(task, advance=1, name=name)
        return
    done, start = 0, time.monotonic()
    last = start

    def step(name: str) -> None:
        nonlocal done, last
        done += 1
        now = time.monotonic()
        if now - last >= PLAIN_PROGRESS_SECONDS or (done == total and last > start):
            last = now
            err_console.print(f"{what} {done}/{total} {name} ({now - start:.0f} s)", markup=False,
                              highlight=False, soft_wrap=True)

    yield step


@contextmanager
def _working(what: str) -> Iterator[None]:
    """A step whose progress cannot be counted (evaluation, bit allocation): a spinner on a
    terminal, else a plain line every few seconds that it is still running."""
    if err_console.is_terminal:
        with err_console.status(what):
            yield
        return
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(PLAIN_PROGRESS_SECONDS):
            err_console.print(f"{what} ({time.monotonic() - start:.0f} s)", markup=False, highlight=False,
                              soft_wrap=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _check_output(output: Path, inputs: list[Path], folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written or would replace an input:
    a file output that is a folder (`-o .`), an output whose folder does not exist (a file
    and a model folder alike: zoocodec creates the output, never missing folders above it,
    so a mistyped path fails instead of leaving new folders behind), a folder we cannot
    write in, an output that is one of the inputs."""
    where = output.parent if output.name else output
    if output.is_dir() and not folder:
        raise ZoocodecError(f"-o {output}: is a folder; name the file to write (e.g. {output / 'model.zc'})")
    if output.exists() and folder and not output.is_dir():
        raise ZoocodecError(f"-o {output}: is a file; this writes a model folder")
    if not where.resolve().is_dir():
        raise ZoocodecError(f"-o {output}: folder {where} does not exist" if not where.exists()
                            else f"-o {output}: {where} is not a folder")
    if not os.access(where.resolve(), os.W_OK | os.X_OK):
        raise ZoocodecError(f"-o {output}: cannot write in folder {where}")
    for src in inputs:
        if src.exists() and (output.resolve() == src.resolve() or (output.exists() and output.samefile(src))):
            raise ZoocodecError(f"-o {output} is the input {src}; write to another path")


def _model_path(model: str) -> Path:
    """The path a model argument reads (a zoo name's file included), for _check_output."""
    from zoocodec.pipeline import zoo

    try:
        return zoo.locate(model)
    except ZoocodecError:
        return Path(model)  # reported by the command itself, in its own words


MaxMemory = Annotated[Optional[str], typer.Option(
    "--max-memory", help="refuse files whose decoding would take more memory than this (8G, 512M, 50%; default: half of it)")]


def _budgeted(command):
    """Run a command that reads .zc files under its --max-memory (zoocodec.budget)."""
    @functools.wraps(command)
    def run(*args, max_memory: str | None = None, **kwargs):
        from zoocodec import budget

        with budget.limit(budget.parse_size(max_memory) if max_memory else None):
            return command(*args, max_memory=max_memory, **kwargs)

    return run


def _sqnr(x: float | None, lossless: bool) -> str:
    """An SQNR in dB, or why there is none: a lossless method's output is `lossless`; a quantizer
    that made no error found every value already on its grid (a decompressed file compressed
    again with its own spec), and says so instead of claiming a lossless method."""
    if x is not None and math.isfinite(x):
        return f"{x:.1f}"
    return "lossless" if lossless else "on grid"


def _is_lossless(method: str) -> bool:
    return method.partition(":")[0] == "lossless"


@app.command()
def compress(
    model: Annotated[str, typer.Argument(help="model file or folder, or a zoo name (e.g. minilm)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .zc file to write")],
    method: Annotated[str, typer.Option(help="method name, optionally with parameters: uniform:bits=6")] = "uniform",
    step: Annotated[Optional[float], typer.Option(help="uniform: one step for every quantized tensor")] = None,
    bits: Annotated[Optional[int], typer.Option(help="uniform: bits per weight, min-max per output channel")] = None,
    per_tensor: Annotated[bool, typer.Option(help="uniform: min-max over the whole tensor")] = False,
    override: Annotated[Optional[list[str]], typer.Option(help="PATTERN=SPEC, e.g. '*embeddings*=uniform:bits=8' (repeatable)")] = None,
    min_size: Annotated[int, typer.Option(help="tensors with fewer weights stay lossless")] = 4096,
    allow_nonfinite: Annotated[bool, typer.Option(help="keep tensors with NaN/Inf lossless instead of failing")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    coder: Annotated[Optional[str], typer.Option(help="symbol coder: ans, ctx, cabac, video-h264, video-hevc; masks: flags; "
                                                      "--method lossless: float, zstd, raw (see `zoocodec methods`)")] = None,
    lossless: Annotated[bool, typer.Option("--lossless", help="video: lossless coding of the symbols (the default)")] = False,
    crf: Annotated[Optional[int], typer.Option(help="video: lossy, the encoder's constant rate factor 0..51")] = None,
    hw: Annotated[Optional[str], typer.Option(help="video: auto | nvdec | nvenc | cpu")] = None,
    target_loss: Annotated[Optional[str], typer.Option(help="automatic mode: the smallest file within this loss of the task metric, e.g. 1%")] = None,
    task: Annotated[Optional[str], typer.Option(help="automatic mode: the zoo task to keep within budget (default: the model's first)")] = None,
    target_bpw: Annotated[Optional[float], typer.Option(help="bit allocation: one step slope for all tensors, base step searched for this size in bits/weight (methods with a step: uniform, rdoq, dq)")] = None,
    preset: Annotated[Optional[str], typer.Option(help="near-lossless | balanced | small (see `zoocodec methods`)")] = None,
    inputs: Annotated[Optional[Path], typer.Option(help="automatic mode on a model outside the zoo: the inputs its outputs are judged on (as for evaluate)")] = None,
    module: Annotated[Optional[str], typer.Option(help="automatic mode, a state dict: package.module:factory that builds its torch module")] = None,
    output_kind: Annotated[Optional[str], typer.Option(help="automatic mode, a model outside the zoo: logits | embeddings | values")] = None,
    device: Annotated[str, typer.Option(help="where the work runs: cpu | gpu | cuda:N | auto (a missing GPU is an error)")] = "cpu",
):
    """Compress a model into a .zc container."""
    start = time.perf_counter()  # the time printed is every phase's: reading, allocation or search, coding
    from zoocodec.pipeline.policy import Overrides
    from zoocodec.device import resolve
    from zoocodec.pipeline.core import compress as run, load

    _typed(model)
    dev = resolve(device)  # a GPU that is not there fails before any work
    if dev.is_gpu and target_loss is not None:
        raise ZoocodecError("automatic mode (--target-loss) runs on the CPU only; leave out --device")
    _check_output(output, [_model_path(model)])
    if preset is not None:
        method, target_bpw = _preset(preset, method, step, bits, per_tensor, target_bpw, target_loss)

    if target_loss is not None:
        if step is not None or bits is not None or per_tensor:
            raise ZoocodecError("automatic mode (--target-loss) chooses the steps: drop --step, --bits and --per-tensor")
        unused = [flag for flag, given in (("--override", override), ("--target-bpw", target_bpw is not None),
                                           ("--allow-nonfinite", allow_nonfinite), ("--lossless", lossless),
                                           ("--crf", crf is not None), ("--hw", hw)) if given]
        if unused:
            raise ZoocodecError(f"automatic mode (--target-loss) does not take {', '.join(unused)}")
        _auto(model, output, target_loss, task, _build_spec(method, coder=coder), min_size, json_out,
              inputs, module, output_kind, choose_coder=coder is None and "coder=" not in method, start=start)
        return
    if task is not None or inputs is not None or module is not None or output_kind is not None:
        raise ZoocodecError("--task, --inputs, --module and --output-kind belong to automatic mode: add --target-loss")

    spec = _build_spec(method, step, bits, per_tensor, coder, lossless, crf, hw)  # bad specs fail before reading
    if hw == "nvdec":
        _note_nvdec()
    overrides = Overrides.parse(override or [])
    plan = None
    if target_bpw is not None:
        if step is not None or bits is not None:
            raise ZoocodecError("--target-bpw chooses the steps itself: leave out --step and --bits")
        from zoocodec.tuning.allocate import allocate

        with _working(f"allocating steps for {target_bpw:g} bits/weight"):
            plan = allocate(model, target_bpw=target_bpw, method=spec, min_size=min_size)
    total = len(load(model).names)
    with _progress(total, "compressing") as step:
        report = run(model, output, spec, overrides, min_size, allow_nonfinite, progress=step, plan=plan, device=dev)
    summary = {"output": str(output), "spec": str(spec), "params": report.params, "bytes_in": report.bytes_in,
               "file_bytes": report.file_bytes, "weight_bytes": report.weight_bytes, "ratio": report.ratio, "bits_per_weight": report.bits_per_weight,
               "sqnr_db": None if math.isinf(report.sqnr_db) else report.sqnr_db, "seconds": time.perf_counter() - start,
               "device": report.device}
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        console.print(f"{output}: {report.params:,} weights, {report.bytes_in:,} -> {report.weight_bytes:,} bytes, "
                      f"ratio {report.ratio:.2f}x, {report.bits_per_weight:.3f} bits/weight, "
                      f"{_sqnr_summary(report)}, {summary['seconds']:.1f} s", markup=False)


def _sqnr_summary(report) -> str:
    """The model's SQNR for the summary line (see _sqnr)."""
    if math.isfinite(report.sqnr_db):
        return f"SQNR {report.sqnr_db:.1f} dB"
    if all(_is_lossless(t.method) for t in report.tensors):
        return "lossless"
    return "exact: every quantized value already sat on its grid"


def _note_nvdec() -> None:
    """--hw nvdec encodes in software a stream NVDEC decodes; say so when this machine has none."""
    from zoocodec.codecs import nvdec

    if not nvdec.nvdec_available():
        _note("--hw nvdec: this machine has no usable NVDEC (no NVIDIA GPU with CuPy and PyNvVideoCodec); "
              "the stream is made for NVDEC, and decoding it here runs in software")


def _preset(name: str, method: str, step, bits, per_tensor, target_bpw, target_loss) -> tuple[str, float | None]:
    """A named preset's method and size target; it refuses options it would override."""
    from zoocodec.catalog import PRESETS

    if name not in PRESETS:
        raise ZoocodecError(f"unknown preset {name!r} (presets: {', '.join(PRESETS)})")
    if method != "uniform" or step is not None or bits is not None or per_tensor or target_bpw is not None \
            or target_loss is not None:
        raise ZoocodecError("--preset sets the method and its size: leave out --method, --step, --bits, "
                            "--per-tensor, --target-bpw and --target-loss")
    options = PRESETS[name][0]
    return options["method"], options.get("target_bpw")


def _auto(model: str, output: Path, target_loss: str, task: str | None, method, min_size: int,
          json_out: bool, inputs: Path | None, module: str | None, output_kind: str | None,
          choose_coder: bool, start: float) -> None:
    """compress --target-loss: search the per-tensor steps, verify on the task (or the user's inputs), report.
    A coder the user named is kept; otherwise a context coder's method gets the cheaper context coder."""
    from zoocodec.tuning.auto import auto_compress, parse_loss

    if (module is not None or output_kind is not None) and inputs is None:
        from zoocodec.eval.anymodel import INPUTS_HELP

        raise ZoocodecError(f"--module and --output-kind judge a model outside the zoo on your inputs: {INPUTS_HELP}")
    r = auto_compress(model, output, parse_loss(target_loss), task, method=method, min_size=min_size,
                      log=lambda msg: err_console.print(msg, markup=False, highlight=False), inputs=inputs,
                      module=module, output=output_kind, choose_coder=choose_coder)
    rep = r.report
    summary = {"output": str(output), "reference": r.reference, "task": r.task, "metric": r.metric,
               "target_loss": r.target_loss, "value": r.value, "baseline": r.baseline, "loss": r.loss,
               "loss_high": r.loss_high, "inputs": r.inputs,
               "base_step": r.base_step, "strength": r.strength, "method": r.method, "params": rep.params, "bytes_in": rep.bytes_in,
               "weight_bytes": rep.weight_bytes, "ratio": rep.ratio, "bits_per_weight": rep.bits_per_weight,
               "seconds": time.perf_counter() - start}
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        console.print(f"{output}: {r.task} {r.metric} {r.value:.4f} (original {r.baseline:.4f}, loss "
                      f"{100 * r.loss:.3f}%, 95% bound {100 * r.loss_high:.3f}% <= {100 * r.target_loss:g}% on "
                      f"{r.inputs:,} inputs), ratio {rep.ratio:.2f}x, "
                      f"{rep.bits_per_weight:.3f} bits/weight, {summary['seconds']:.1f} s", markup=False)


@app.command()
@_budgeted
def evaluate(
    model: Annotated[str, typer.Argument(help="a .zc file, a model file or folder, or a zoo name; with COMPRESSED: the original")],
    compressed: Annotated[Optional[str], typer.Argument(help="a model outside the zoo: its .zc (or decoded file), judged against MODEL on --inputs")] = None,
    inputs: Annotated[Optional[Path], typer.Option(help="inputs for a model outside the zoo: images folder or .npy/.npz (ONNX), text file one example a line (Hugging Face), .npy/.npz (--module)")] = None,
    module: Annotated[Optional[str], typer.Option(help="package.module:factory that builds the torch module of a state dict")] = None,
    output_kind: Annotated[Optional[str], typer.Option(help="what the model outputs: logits | embeddings | values (default: from the config, else logits for N x C, values otherwise)")] = None,
    task: Annotated[Optional[str], typer.Option(help="one of the model's zoo tasks (default: all of them)")] = None,
    reference: Annotated[Optional[str], typer.Option(help="the zoo model it derives from (default: recognised by its tensors)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the metrics as JSON rows")] = False,
    device: Annotated[str, typer.Option(help="where the work runs: cpu | gpu | cuda:N | auto (a missing GPU is an error)")] = "cpu",
    max_memory: MaxMemory = None,
):
    """Evaluate a (compressed) model next to its original; print value, baseline, delta and its 95% interval.

    Zoo models run on their tasks; any other model (ONNX, Hugging Face, a state dict with
    --module) is judged by output fidelity: zoocodec evaluate ORIGINAL COMPRESSED --inputs PATH.
    """
    from zoocodec.device import resolve

    _typed(model, *([compressed] if compressed else []))
    dev = resolve(device)  # a GPU that is not there fails before any work
    if compressed is not None or inputs is not None or module is not None or output_kind is not None:
        if dev.is_gpu:
            raise ZoocodecError("--device: models outside the zoo are evaluated on the CPU only; leave out --device")
        from zoocodec.eval.anymodel import INPUTS_HELP, evaluate_pair

        if compressed is None:
            raise ZoocodecError("a model outside the zoo is judged against its original: zoocodec evaluate ORIGINAL "
                                "COMPRESSED --inputs PATH")
        if inputs is None:
            raise ZoocodecError(f"{compressed} is judged against {model} on your inputs: {INPUTS_HELP}")
        if task is not None or reference is not None:
            raise ZoocodecError("--task and --reference belong to zoo models; a model outside the zoo is judged on --inputs")
        with _working(f"evaluating {compressed} against {model}"):
            metrics = evaluate_pair(model, compressed, inputs, module, output_kind)
    else:
        from zoocodec.eval import evaluate as run

        with _working(f"evaluating {model}"):
            metrics = run(model, task, reference, device=dev)
    if json_out:
        print(json.dumps([m.to_dict() for m in metrics], indent=2))
        return
    table = Table(title=escape(str(compressed or model)))
    for col in ("task", "metric", "value", "original", "delta", "95% interval", "inputs"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right", no_wrap=True)
    for m in metrics:
        interval = "-" if m.low is None else f"[{m.low:+.5f}, {m.high:+.5f}]"
        table.add_row(m.task, m.metric + (" *" if m.primary else ""), f"{m.value:.5f}", f"{m.baseline:.5f}",
                      f"{m.delta:+.5f}", interval, f"{m.n:,}")
    console.print(table)
    console.print("* primary metric (budgets apply to the pessimistic end of its interval); intervals: "
                  "paired bootstrap over inputs, Newcombe paired score for 0/1 outcomes (top-k, agreement)")


def _build_spec(method: str, step: float | None = None, bits: int | None = None, per_tensor: bool = False,
                coder: str | None = None, lossless: bool = False, crf: int | None = None, hw: str | None = None):
    """The method spec from --method and the sugar options (--step/--bits/--per-tensor for uniform,
    --coder with --lossless/--crf/--hw for video), as fields of typed specs, never by editing text."""
    import dataclasses

    from zoocodec.codecs import parse_coder
    from zoocodec.methods import parse_spec

    spec = parse_spec(method)
    if step is not None or bits is not None or per_tensor:
        if spec.name != "uniform":
            raise ZoocodecError("--step, --bits and --per-tensor belong to --method uniform")
        fields = {"per_tensor": True} if per_tensor else {}
        if step is not None or bits is not None:
            fields.update(step=step, bits=bits)
        spec = dataclasses.replace(spec, **fields)
    if lossless and crf is not None:
        raise ZoocodecError("--lossless and --crf exclude each other")
    video_options = {k: v for k, v in (("crf", crf), ("hw", hw)) if v is not None}
    if (lossless or video_options) and not (coder or "").startswith("video-"):
        raise ZoocodecError("--lossless, --crf and --hw belong to video coding: add --coder video-h264 or video-hevc")
    if coder:
        if "coder" not in {f.name for f in dataclasses.fields(spec)}:
            raise ZoocodecError(f"method {spec.name!r} takes no --coder")
        spec = dataclasses.replace(spec, coder=dataclasses.replace(parse_coder(coder), **video_options))
    spec.validate()
    return spec


@app.command()
@_budgeted
def decompress(
    container: Annotated[Path, typer.Argument(help="the .zc file")],
    output: Annotated[Path, typer.Option("-o", "--output", help="model file or folder to write")],
    format: Annotated[Optional[str], typer.Option(help="safetensors | pytorch | onnx | hf (default: from the suffix, else the source)")] = None,
    device: Annotated[str, typer.Option(help="where the work runs: cpu | gpu | cuda:N | auto (a missing GPU is an error)")] = "cpu",
    max_memory: MaxMemory = None,
):
    """Decode a .zc container back into a model file in its original format."""
    start = time.perf_counter()
    from zoocodec.device import resolve
    from zoocodec.pipeline.core import Archive, decompress as run, inspect as info_of
    from zoocodec.pipeline.modelio import output_format

    dev = resolve(device)
    with Archive(container) as a:
        total = len(a.names())
        fmt = output_format(output, a.header["source"]["format"], a.header["files"], format)
    _check_output(output, [container], folder=fmt == "hf")
    with _progress(total, "decoding") as step:
        run(container, output, fmt, progress=step, device=dev)
    info = info_of(container)
    console.print(f"wrote {output} ({fmt}): {total} tensors, {info['params']:,} weights, "
                  f"{info['weight_bytes']:,} -> {info['bytes_in']:,} bytes (ratio {info['ratio']:.2f}x, "
                  f"{info['bits_per_weight']:.3f} bits/weight), {time.perf_counter() - start:.1f} s", highlight=False, markup=False)
    for line in _auto_lines(info.get("meta") or {}):
        console.print(line, highlight=False)


def _auto_lines(meta: dict) -> list[str]:
    """What automatic mode decided and verified, as stored in the header."""
    auto = meta.get("auto")
    if not isinstance(auto, dict):
        return []
    v = auto.get("verified") or {}
    lines = [f"automatic mode: {meta.get('zoo', '?')} {auto.get('task')} {auto.get('metric')} kept within "
             f"{100 * auto.get('target_loss', 0):g}% with {auto.get('method')}, base step {auto.get('base_step', 0):.4g}"]
    if v:
        lines.append(f"  verified on all inputs: {v.get('value', 0):.5f} vs original {v.get('baseline', 0):.5f} "
                     f"(loss {100 * v.get('loss', 0):.3f}%)")
    if auto.get("search"):
        lines.append(f"  search: {len(auto['search'])} steps tried on {auto.get('search_inputs')} inputs")
    return lines


@app.command()
@_budgeted
def inspect(
    container: Annotated[Path, typer.Argument(help="the .zc file")],
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    max_memory: MaxMemory = None,
):
    """Show a container's tensors (shape, method, bits/weight, ratio, SQNR), what automatic mode
    decided and verified, and a sequence file's members."""
    from zoocodec.container import Container
    from zoocodec.pipeline.core import inspect as run

    c = Container.open(container, verify=False)
    try:
        is_sequence = isinstance(c.header.get("meta", {}).get("sequence"), dict)
    finally:
        c.close()
    if is_sequence:
        _inspect_seq(container, json_out)
        return
    info = run(container)
    if json_out:
        print(json.dumps(info, indent=2))
        return
    table = Table(title=escape(f"{container}  ({info['source']}, zoocodec {info['zoocodec']})"))
    for col in ("tensor", "shape", "dtype", "method", "bits/w", "ratio", "SQNR dB"):
        table.add_column(col, justify="right" if col in ("bits/w", "ratio", "SQNR dB") else "left")
    for r in info["tensors"]:
        table.add_row(r["name"], "x".join(map(str, r["shape"])), r["dtype"], r["method"],
                      f"{r['bits_per_weight']:.3f}", f"{r['ratio']:.2f}", _sqnr(r["sqnr_db"], _is_lossless(r["method"])))
    console.print(table)
    if any(_sqnr(r["sqnr_db"], _is_lossless(r["method"])) == "on grid" for r in info["tensors"]):
        console.print("on grid: the tensor's values already sat exactly on its quantization grid (no error; "
                      "a decompressed file compressed again)", highlight=False, markup=False)
    console.print(f"{info['params']:,} weights, {info['bytes_in']:,} -> {info['weight_bytes']:,} bytes "
                  f"(+{info['file_bytes'] - info['weight_bytes']:,} attached), "
                  f"ratio {info['ratio']:.2f}x, {info['bits_per_weight']:.3f} bits/weight", highlight=False, markup=False)
    for line in _auto_lines(info["meta"]):
        console.print(line, highlight=False)


@app.command()
def verify(container: Annotated[Path, typer.Argument(help="the .zc file")]):
    """Check every byte of a container against its checksums (reading a tensor checks only its own)."""
    from zoocodec.container import Container

    with Container.open(container) as c:
        checked = c.verify()
    print(f"{container}: ok (format version {c.version}, {checked:,} bytes checked)")


def _seq_info(container: Path) -> dict:
    """A sequence file's numbers, one definition for compress-seq and inspect: per member, the
    bytes of its own streams (every tensor, quantized or exact) over its weights; on average,
    the whole file (shared steps and header included) over all members' weights."""
    from zoocodec.methods import spec_from_dict
    from zoocodec.pipeline.core import native_dtype
    from zoocodec.pipeline.sequence import SeqArchive, member_bytes

    with SeqArchive(container) as a:
        h, labels = a.header, a.labels
        n = len(labels)
        rows, per_member = [], [0] * n
        for e in h["tensors"]:
            numel = math.prod(e["shape"])
            segs = e["segments"]
            if "video" in segs:  # one stream: each member's frames
                sizes = member_bytes({"video": a.container.segment(e["name"], tuple(segs["video"]))}, n)
            else:  # member i's streams are m{i} (on the grid) or m{i}.NAME (each member coded alone)
                sizes = [sum(v[1] for k, v in segs.items() if k.split(".")[0] == f"m{i}") for i in range(n)]
            for i, b in enumerate(sizes):
                per_member[i] += b
            seq = spec_from_dict(e["method"])
            coding = str(seq.inner) if seq.mode == "independent" else f"{seq.mode} {seq.inner}"
            rows.append({"name": e["name"], "shape": e["shape"], "dtype": e["dtype"], "coding": coding,
                         "bytes": sum(v[1] for v in e["segments"].values()),
                         "bits_per_weight": 8 * sum(v[1] for v in e["segments"].values()) / max(numel * n, 1)})
    params = sum(math.prod(e["shape"]) for e in h["tensors"])
    bytes_in = n * sum(math.prod(e["shape"]) * native_dtype(e["dtype"]).itemsize for e in h["tensors"])
    size = container.stat().st_size
    weight_bytes = size - sum(seg[1] for seg in h["files"].values())
    seq = h["meta"]["sequence"]
    return {"path": str(container), "sequence": {"members": labels, "mode": seq["mode"], "keyint": seq.get("keyint", 0)},
            "params_per_member": params, "file_bytes": size, "weight_bytes": weight_bytes, "bytes_in": bytes_in,
            "ratio": bytes_in / max(weight_bytes, 1), "bits_per_weight": 8 * weight_bytes / max(params * n, 1),
            "member_bytes": dict(zip(labels, per_member)), "shared_bytes": weight_bytes - sum(per_member),
            "member_bits_per_weight": {k: 8 * v / max(params, 1) for k, v in zip(labels, per_member)},
            "tensors": rows}


def _seq_lines(info: dict) -> list[str]:
    """The summary lines compress-seq and inspect print for a sequence file."""
    n, params = len(info["member_bytes"]), info["params_per_member"]
    return [f"members (own streams): " + ", ".join(f"{k} {v:.3f}" for k, v in info["member_bits_per_weight"].items())
            + f" bits/weight; shared by all (steps, header): {info['shared_bytes']:,} bytes",
            f"{n} members x {params:,} weights, {info['bytes_in']:,} -> {info['weight_bytes']:,} bytes, "
            f"ratio {info['ratio']:.2f}x, {info['bits_per_weight']:.3f} bits/weight on average (whole file)"]


def _inspect_seq(container: Path, json_out: bool) -> None:
    """A sequence file: members, mode, and per tensor and per member what it costs."""
    info = _seq_info(container)
    if json_out:
        print(json.dumps(info, indent=2))
        return
    seq = info["sequence"]
    table = Table(title=escape(f"{container}  (sequence of {len(seq['members'])}, mode {seq['mode']}, keyint {seq['keyint']})"))
    for col in ("tensor", "shape", "dtype", "coding", "bytes", "bits/w per member"):
        table.add_column(col, justify="right" if col in ("bytes", "bits/w per member") else "left")
    for r in info["tensors"]:
        table.add_row(r["name"], "x".join(map(str, r["shape"])), r["dtype"], r["coding"], f"{r['bytes']:,}",
                      f"{r['bits_per_weight']:.3f}")
    console.print(table)
    for line in _seq_lines(info):
        console.print(line, highlight=False, markup=False)


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="the sweep spec (YAML): models x methods x parameters")],
    address: Annotated[Optional[str], typer.Option(help="join this Ray cluster (auto, HOST:PORT, ray://...); default: RAY_ADDRESS, else an embedded local Ray on loopback")] = None,
    out: Annotated[Optional[Path], typer.Option(help="results folder (default: the spec's out, else results/NAME)")] = None,
    max_parallel: Annotated[Optional[int], typer.Option(min=1, help="at most this many work items in flight")] = None,
    num_cpus: Annotated[Optional[int], typer.Option(min=1, help="CPUs of the embedded Ray (default: all)")] = None,
    report: Annotated[bool, typer.Option(help="write OUT/report.html at the end")] = True,
):
    """Run a sweep on Ray; results go to Parquet (finished work is skipped on a rerun)."""
    from zoocodec.jobs import report as rep, run as runner, spec as sweep_spec

    sw = sweep_spec.load(spec, out)
    err_console.print(f"sweep {sw.name}: {len(sw.items)} work items -> {sw.out}", markup=False)
    with _sweep_progress() as progress:
        outcome = runner.run(sw, address, max_parallel, num_cpus, progress=progress)
    err_console.print(f"{outcome.where}: {outcome.ok} ok, {outcome.failed} failed, {outcome.skipped} already done, "
                      f"{outcome.seconds:.1f} s", markup=False)
    _print_summaries(sw.name, rep.summaries(rep.ok_runs(sw.out, {i.work_id for i in sw.items}), sw.budgets))
    console.print(f"results: {sw.out / 'runs'} and {sw.out / 'tensors'} (Parquet)", markup=False)
    if report:
        console.print(f"report: {rep.write(sw.out, sw.out / 'report.html', sw.budgets, title=f'zoocodec sweep {sw.name}')}", markup=False)


def _print_summaries(name: str, summaries) -> None:
    """A sweep's summary tables, their text printed as written (`tasks: [lee, wordsim]` is no markup)."""
    for s in summaries:
        table = Table(title=escape(f"sweep {name}: {s.note}"))
        for col in s.columns:
            table.add_column(escape(col))
        for row in s.rows:
            table.add_row(*map(escape, row))
        console.print(table)


@contextmanager
def _sweep_progress() -> Iterator[Callable[[int, int, int, int], None]]:
    """A sweep's counts: a bar on a terminal, else a plain line every few seconds (and the last)."""
    if err_console.is_terminal:
        with Progress(TextColumn("[green]{task.fields[ok]} ok [red]{task.fields[failed]} failed "
                                 "[cyan]{task.fields[running]} running"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err_console) as bar:
            task = bar.add_task("", total=None, ok=0, failed=0, running=0)
            yield lambda ok, failed, running, total: bar.update(task, completed=ok + failed, total=total, ok=ok,
                                                                failed=failed, running=running)
        return
    start = time.monotonic()
    last = start

    def update(ok: int, failed: int, running: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PLAIN_PROGRESS_SECONDS or (ok + failed == total and last > start):
            last = now
            err_console.print(f"sweep: {ok + failed}/{total} done ({ok} ok, {failed} failed), {running} running "
                              f"({now - start:.0f} s)", markup=False, highlight=False, soft_wrap=True)

    yield update


@app.command()
def regress(
    baseline: Annotated[Path, typer.Option(help="results folder of the baseline sweep")],
    current: Annotated[Path, typer.Option(help="results folder of the sweep to check")],
    tolerance: Annotated[Optional[str], typer.Option(help="allowed change: ratio=1%,metric=0.2%,sqnr=0.1 (dB)")] = None,
):
    """Compare two sweeps by work id; print a markdown table; exit 1 on a regression."""
    from zoocodec.jobs import regress as rg

    result = rg.compare(baseline, current, rg.parse_tolerance(tolerance))
    print(result.markdown(), end="")
    if result.regressions:
        raise typer.Exit(1)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="results folder of a sweep")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the HTML file to write")] = Path("report.html"),
):
    """Write an HTML report: summary, rate-distortion plots and Pareto fronts per model."""
    from zoocodec.jobs import report as rep

    _check_output(output, [results])
    console.print(f"wrote {rep.write(results, output)}", markup=False)


@app.command("compress-seq")
def compress_seq(
    models: Annotated[list[str], typer.Argument(help="the members in order (files or zoo names), one architecture")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .zc file to write")],
    mode: Annotated[str, typer.Option(help="delta (member minus predecessor; the smallest in bench/bench_video.py) | video (inter-coded) | independent")] = "delta",
    method: Annotated[Optional[str], typer.Option(help="the shared grid (default uniform:bits=8)")] = None,
    coder: Annotated[Optional[str], typer.Option(help="video-h264 | video-hevc (video mode; default video-hevc), or ans | ctx for delta/independent")] = None,
    lossless: Annotated[bool, typer.Option("--lossless", help="video: lossless (the default)")] = False,
    crf: Annotated[Optional[int], typer.Option(help="video: lossy, constant rate factor 0..51")] = None,
    hw: Annotated[Optional[str], typer.Option(help="video: auto | nvdec | nvenc | cpu")] = None,
    keyint: Annotated[int, typer.Option(min=0, help="members per group: reading one decodes at most this many (0: one group)")] = 0,
    min_size: Annotated[int, typer.Option(help="tensors with fewer weights stay lossless")] = 4096,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
):
    """Compress a sequence of same-architecture models (checkpoints, fine-tunes) into one .zc."""
    start = time.perf_counter()
    from zoocodec.pipeline.sequence import compress_seq as run

    _typed(*models)
    _check_output(output, [_model_path(m) for m in models])
    spec = _build_spec(method or "uniform:bits=8", coder=coder or ("video-hevc" if mode == "video" else None),
                       lossless=lossless, crf=crf, hw=hw)
    if hw == "nvdec":
        _note_nvdec()
    with _working(f"compressing {len(models)} members"):
        run(models, output, spec, mode, keyint, min_size=min_size)
    info = _seq_info(output)
    seconds = time.perf_counter() - start
    if json_out:
        print(json.dumps({"output": str(output), "spec": str(spec), "mode": mode, "keyint": keyint,
                          "seconds": seconds, **{k: v for k, v in info.items() if k not in ("path", "tensors")}},
                         indent=2))
    else:
        console.print(f"{output}: {info['file_bytes']:,} bytes, {seconds:.1f} s", highlight=False, markup=False)
        for line in _seq_lines(info):
            console.print(line, highlight=False, markup=False)


@app.command("decompress-seq")
@_budgeted
def decompress_seq(
    container: Annotated[Path, typer.Argument(help="the sequence .zc file")],
    member: Annotated[str, typer.Option(help="the member's label or index")],
    output: Annotated[Path, typer.Option("-o", "--output", help="model file to write")],
    format: Annotated[Optional[str], typer.Option(help="safetensors | pytorch | onnx | hf")] = None,
    max_memory: MaxMemory = None,
):
    """Decode one member of a sequence container (random access: only its group is decoded)."""
    from zoocodec.pipeline.sequence import SeqArchive, decompress_seq as run

    from zoocodec.pipeline.modelio import output_format

    with SeqArchive(container) as a:
        which = member if member in a.labels or not member.lstrip("-").isdigit() else int(member)
        a.member_index(which)
        fmt = output_format(output, a.header["source"]["format"], a.header["files"], format)
    _check_output(output, [container], folder=fmt == "hf")
    with _working(f"decoding member {which}"):
        run(container, which, output, fmt)
    console.print(f"wrote {output} ({fmt}): member {which} of {container}", highlight=False, markup=False)


@app.command()
def methods(
    name: Annotated[Optional[str], typer.Argument(help="one method (default: all)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
):
    """List every method and coder with its parameters, defaults and ranges, and the presets."""
    from zoocodec import catalog

    listed = catalog.methods()
    if name is not None:
        listed = [m for m in listed if m["name"] == name]
        if not listed:
            raise ZoocodecError(f"unknown method {name!r} (known: {', '.join(m['name'] for m in catalog.methods())})")
    coders = catalog.coders()
    presets = {k: {"options": o, "about": a} for k, (o, a) in catalog.PRESETS.items()}
    if json_out:
        print(json.dumps({"methods": listed, "coders": coders, "presets": presets}, indent=2))
        return
    for m in listed:
        _print_spec(m, "lossless" if m["lossless"] else "")
    if name is None:
        console.print("[bold]coders[/bold] (a method's coder=NAME or coder=NAME(key=value,...))")
        for c in coders:
            _print_spec(c, "")
        console.print("[bold]presets[/bold] (compress --preset NAME)")
        for k, p in presets.items():
            opts = " ".join(f"--{o.replace('_', '-')} {v}" for o, v in p["options"].items())
            console.print(f"  {k:<14} {opts}: {p['about']}", highlight=False, markup=False)


def _print_spec(m: dict, note: str) -> None:
    console.print(f"[bold]{m['name']}[/bold] (version {m['version']}{', ' + note if note else ''}): {m['about']}",
                  highlight=False)
    if m["params"]:
        table = Table(box=None, padding=(0, 2))
        for col in ("parameter", "type", "default", "range"):
            table.add_column(col)
        for p in m["params"]:
            table.add_row(p["name"], p["type"], "none" if p["default"] is None else str(p["default"]), p["range"])
        console.print(table)


@app.command("zoo")
def zoo_list(json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False):
    """List the zoo models, installed or not, with their tasks and how to install them."""
    from zoocodec import catalog

    models = catalog.zoo_models()
    if json_out:
        print(json.dumps(models, indent=2))
        return
    table = Table(title="zoo models")
    for col in ("name", "installed", "tasks", "format", "about", "install"):
        table.add_column(col)
    for m in models:
        table.add_row(m["name"], "yes" if m["installed"] else "no", ", ".join(m["tasks"]), m["format"], m["about"],
                      "" if m["installed"] else m["install"])
    console.print(table)


def _version(value: bool) -> None:
    if value:
        from zoocodec import __version__

        print(f"zoocodec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Compress neural-network weights and measure what it costs."""


_NOTES: list[str] = []


def _note(text: str) -> None:
    """A `note:` line for stderr, printed once the command has succeeded: a failed or
    interrupted command prints its one error line alone."""
    if text not in _NOTES:
        _NOTES.append(text)


def _typed(*models: str) -> None:
    """Notes for the model names the user typed (a zoo name with a local file of that name)."""
    from zoocodec.pipeline import zoo

    for model in models:
        if (note := zoo.shadowed(model)) is not None:
            _note(note)


class _Notes(logging.Handler):
    """zoocodec's warnings (e.g. NVDEC falling back to software) as notes."""

    def emit(self, record: logging.LogRecord) -> None:
        _note(record.getMessage())


def _show_warnings() -> None:
    logger = logging.getLogger("zoocodec")
    if not any(isinstance(h, _Notes) for h in logger.handlers):
        logger.addHandler(_Notes(logging.WARNING))
        logger.setLevel(logging.WARNING)


def main() -> int:
    """The console script (`sys.exit(main())`): the verb's status is the process's status.
    typer's non-standalone mode returns the status instead of exiting; it is passed on here."""
    _show_warnings()
    interrupted = threading.Event()

    def on_sigint(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    _NOTES.clear()
    try:
        code = app(standalone_mode=False)
        if code in (None, 0):
            for text in _NOTES:
                err_console.print(f"note: {text}", markup=False, highlight=False, soft_wrap=True)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except Exception as e:
        if interrupted.is_set():  # Ctrl-C inside C code (torch, safetensors) can surface as any error
            code = 130
        elif isinstance(e, ZoocodecError):
            err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
            return 2
        elif isinstance(e, MemoryError):
            err_console.print("error: out of memory (files that claim more than they hold are refused up front; "
                              "see --max-memory)", markup=False, highlight=False, soft_wrap=True)
            return 2
        elif isinstance(e, typer.TyperException):  # usage errors: missing or bad options
            e.show()
            return 2
        else:
            raise
    if code == 130:  # typer turns Ctrl-C into Exit(130)
        err_console.print("interrupted", markup=False, highlight=False)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
