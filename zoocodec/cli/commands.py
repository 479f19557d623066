"""The commands: the typer app and one function per verb. Bad input -> one line on stderr, exit status 2."""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from zoocodec.cli import render
from zoocodec.cli.options import (
    MaxMemory,
    apply_preset,
    budgeted,
    build_spec,
    check_output,
    coders_help,
    model_path,
    note_nvdec,
    typed,
)
from zoocodec.cli.render import (
    NOTES,
    auto_lines,
    console,
    err_console,
    print_summaries,
    progress,
    seq_lines,
    show_warnings,
    sqnr_summary,
    sweep_progress,
    working,
)
from zoocodec.errors import ZoocodecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Compress neural-network weights and measure what it costs.")


@app.command()
def compress(
    model: Annotated[str, typer.Argument(help="model file or folder, or a zoo name (e.g. minilm)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .zc file to write")],
    method: Annotated[str, typer.Option(help="method name, optionally with parameters: uniform:bits=6")] = "uniform",
    step: Annotated[float | None, typer.Option(help="uniform: one step for every quantized tensor")] = None,
    bits: Annotated[int | None, typer.Option(help="uniform: bits per weight, min-max per output channel")] = None,
    per_tensor: Annotated[bool, typer.Option(help="uniform: min-max over the whole tensor")] = False,
    override: Annotated[list[str] | None, typer.Option(help="PATTERN=SPEC, e.g. "
                                                            "'*embeddings*=uniform:bits=8' (repeatable)")] = None,
    min_size: Annotated[int | None, typer.Option(
        help="tensors with fewer weights stay lossless [default: 4096; with --target-loss 64 where tensors under "
             "4096 weights hold 0.5% of the model or more, else 4096]", show_default=False)] = None,
    allow_nonfinite: Annotated[bool, typer.Option(help="keep tensors with NaN/Inf "
                                                       "lossless instead of failing")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    coder: Annotated[str | None, typer.Option(help=coders_help())] = None,
    lossless: Annotated[bool, typer.Option("--lossless", help="video: lossless coding "
                                                              "of the symbols (the default)")] = False,
    crf: Annotated[int | None, typer.Option(help="video: lossy, the encoder's constant rate factor 0..51")] = None,
    hw: Annotated[str | None, typer.Option(help="video: auto | nvdec | nvenc | cpu")] = None,
    target_loss: Annotated[str | None, typer.Option(help="automatic mode: the smallest file "
                                                         "within this loss of the task metric, e.g. 1%")] = None,
    task: Annotated[str | None, typer.Option(help="automatic mode: the zoo task to keep "
                                                  "within budget (default: the model's first)")] = None,
    target_bpw: Annotated[float | None, typer.Option(help="bit allocation: one step slope for all tensors, base step "
                                                          "searched for this size in bits/weight "
                                                          "(methods with a step: uniform, rdoq, dq)")] = None,
    preset: Annotated[str | None, typer.Option(help="near-lossless | balanced | "
                                                    "small (see `zoocodec methods`)")] = None,
    inputs: Annotated[Path | None, typer.Option(help="automatic mode on a model outside the zoo: the inputs its "
                                                     "outputs are judged on (as for evaluate)")] = None,
    calib: Annotated[Path | None, typer.Option(help="automatic mode on a model outside the zoo: calibration inputs "
                                                    "apart from --inputs (same format; "
                                                    "default: the calibration/search part of --inputs)")] = None,
    module: Annotated[str | None, typer.Option(help="automatic mode, a state dict: "
                                                    "package.module:factory that builds its torch module")] = None,
    output_kind: Annotated[str | None, typer.Option(help="automatic mode, a model outside the "
                                                         "zoo: logits | embeddings | values | tokens")] = None,
    finetune: Annotated[bool, typer.Option("--finetune", help="automatic mode: also try larger steps with the "
                                                             "steps, symbols, biases and norms fine-tuned against "
                                                             "the original's outputs on the calibration inputs "
                                                             "(kept where smaller; runs on --device)")] = False,
    finetune_steps: Annotated[int | None, typer.Option(help="automatic mode with --finetune: optimiser steps "
                                                            "per step size tried (default 60)")] = None,
    device: Annotated[str, typer.Option(help="where the work runs: cpu | gpu | cuda:N | "
                                             "auto (a missing GPU is an error); with --target-loss, the "
                                             "model's runs and --finetune (an ONNX graph's stay on the CPU)")] = "cpu",
    decode_on: Annotated[str, typer.Option(help="gpu: only methods and coders with a GPU decoder (automatic mode "
                                                "prices only those; docs/gpu.md gives the size cost) | any")] = "any",
):
    """Compress a model into a .zc container."""
    start = time.perf_counter()  # the time printed is every phase's: reading, allocation or search, coding
    from zoocodec.device import resolve
    from zoocodec.pipeline.core import compress as run, load
    from zoocodec.pipeline.policy import DEFAULT_MIN_SIZE, Overrides, for_decoder

    typed(model)
    dev = resolve(device)  # a GPU that is not there fails before any work
    if (finetune or finetune_steps is not None) and target_loss is None:
        raise ZoocodecError("--finetune belongs to automatic mode: add --target-loss")
    if finetune_steps is not None and (finetune_steps < 1 or not finetune):
        raise ZoocodecError("--finetune-steps takes a positive number of steps, with --finetune")
    check_output(output, [model_path(model)])
    if preset is not None:
        method, target_bpw = apply_preset(preset, method, step, bits, per_tensor, target_bpw, target_loss)
    choose = coder is None and ("coder=" not in method or preset is not None)  # a coder the user did not name

    if target_loss is not None:
        if step is not None or bits is not None or per_tensor:
            raise ZoocodecError(
                "automatic mode (--target-loss) chooses the steps: drop --step, --bits and --per-tensor"
            )
        unused = [flag for flag, given in (("--override", override), ("--target-bpw", target_bpw is not None),
                                           ("--allow-nonfinite", allow_nonfinite), ("--lossless", lossless),
                                           ("--crf", crf is not None), ("--hw", hw)) if given]
        if unused:
            raise ZoocodecError(f"automatic mode (--target-loss) does not take {', '.join(unused)}")
        for_decoder(build_spec(method, coder=coder), decode_on, choose)  # refused before any work
        _auto(model, output, target_loss, task, build_spec(method, coder=coder), min_size, json_out,
              inputs, module, output_kind, choose_coder=choose, start=start, calib=calib, decode_on=decode_on,
              finetune=finetune, finetune_steps=finetune_steps, device=dev.torch)
        return
    if task is not None or inputs is not None or module is not None or output_kind is not None or calib is not None:
        raise ZoocodecError("--task, --inputs, --calib, --module and --output-kind belong to automatic mode: "
                            "add --target-loss")

    spec = build_spec(method, step, bits, per_tensor, coder, lossless, crf, hw)  # bad specs fail before reading
    spec = for_decoder(spec, decode_on, choose_coder=choose)
    if hw == "nvdec":
        note_nvdec()
    min_size = DEFAULT_MIN_SIZE if min_size is None else min_size
    overrides = Overrides.parse(override or [])
    for _, _, named in overrides.rules:
        for_decoder(named, decode_on)
    plan = None
    if target_bpw is not None:
        if step is not None or bits is not None:
            raise ZoocodecError("--target-bpw chooses the steps itself: leave out --step and --bits")
        from zoocodec.tuning.allocate import allocate

        with working(f"allocating steps for {target_bpw:g} bits/weight"):
            plan = allocate(model, target_bpw=target_bpw, method=spec, min_size=min_size)
    total = len(load(model).names)
    with progress(total, "compressing") as step:
        report = run(model, output, spec, overrides, min_size, allow_nonfinite, progress=step, plan=plan, device=dev)
    summary = {"output": str(output), "spec": str(spec), "params": report.params, "bytes_in": report.bytes_in,
               "file_bytes": report.file_bytes, "weight_bytes": report.weight_bytes, "ratio": report.ratio,
               "bits_per_weight": report.bits_per_weight,
               "sqnr_db": None if math.isinf(report.sqnr_db) else report.sqnr_db,
               "seconds": time.perf_counter() - start,
               "device": report.device}
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        attached = f" (+{report.attached_bytes:,} attached)" if report.attached_bytes else ""
        console.print(f"{output}: {report.params:,} weights, {report.bytes_in:,} -> {report.weight_bytes:,} bytes"
                      f"{attached}, ratio {report.ratio:.2f}x, {report.bits_per_weight:.3f} bits/weight, "
                      f"{sqnr_summary(report)}, {summary['seconds']:.1f} s", markup=False)


def _auto(model: str, output: Path, target_loss: str, task: str | None, method, min_size: int | None,
          json_out: bool, inputs: Path | None, module: str | None, output_kind: str | None,
          choose_coder: bool, start: float, calib: Path | None = None, decode_on: str = "any",
          finetune: bool = False, finetune_steps: int | None = None, device: str = "cpu") -> None:
    """compress --target-loss: search the per-tensor steps, verify on the task (or the user's inputs), report.
    A coder the user named is kept; otherwise a context coder's method gets the cheaper context coder."""
    from zoocodec.tuning.auto import auto_compress, parse_loss

    if (module is not None or output_kind is not None) and inputs is None:
        from zoocodec.eval.anymodel import INPUTS_HELP

        raise ZoocodecError(f"--module and --output-kind judge a model outside the zoo on your inputs: {INPUTS_HELP}")
    r = auto_compress(model, output, parse_loss(target_loss), task, method=method, min_size=min_size,
                      log=lambda msg: err_console.print(msg, markup=False, highlight=False), inputs=inputs,
                      module=module, output=output_kind, choose_coder=choose_coder, calib=calib, decode_on=decode_on,
                      finetune=finetune, finetune_steps=finetune_steps, device=device)
    rep = r.report
    summary = {"output": str(output), "reference": r.reference, "task": r.task, "metric": r.metric,
               "target_loss": r.target_loss, "value": r.value, "baseline": r.baseline, "loss": r.loss,
               "loss_high": r.loss_high, "inputs": r.inputs, "within": r.within, "split": r.split,
               "base_step": r.base_step, "strength": r.strength, "method": r.method, "params": rep.params,
               "bytes_in": rep.bytes_in,
               "weight_bytes": rep.weight_bytes, "ratio": rep.ratio, "bits_per_weight": rep.bits_per_weight,
               "seconds": time.perf_counter() - start}
    if r.finetune:
        summary["finetune"] = {k: r.finetune[k] for k in ("kept", "seconds", "device")}
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        console.print(f"{output}: {r.task} {r.metric} {r.value:.4f} (original {r.baseline:.4f}, loss "
                      f"{100 * r.loss:.3f}%, 95% bound {100 * r.loss_high:.3f}% {'<=' if r.within else '>'} "
                      f"{100 * r.target_loss:g}% on the {r.inputs:,} held-back inputs of a {r.split['about']}), "
                      f"ratio {rep.ratio:.2f}x, "
                      f"{rep.bits_per_weight:.3f} bits/weight, {summary['seconds']:.1f} s", markup=False)


@app.command()
@budgeted
def evaluate(
    model: Annotated[str, typer.Argument(help="a .zc file, a model file or folder, or a zoo "
                                              "name; with COMPRESSED: the original")],
    compressed: Annotated[str | None, typer.Argument(help="a model outside the zoo: its .zc (or decoded file), judged "
                                                          "against MODEL on --inputs")] = None,
    inputs: Annotated[Path | None, typer.Option(help="inputs for a model outside the zoo: images folder or .npy/.npz "
                                                     "(ONNX), text file one example a line "
                                                     "(Hugging Face), .npy/.npz (--module)")] = None,
    module: Annotated[str | None, typer.Option(help="package.module:factory that builds "
                                                    "the torch module of a state dict")] = None,
    output_kind: Annotated[str | None, typer.Option(help="what the model outputs: logits | embeddings | values | "
                                                         "tokens (default: from the config (tokens for a "
                                                         "*ForCausalLM), else logits "
                                                         "for N x C, values otherwise)")] = None,
    task: Annotated[str | None, typer.Option(help="one of the model's zoo tasks (default: all of them)")] = None,
    reference: Annotated[str | None, typer.Option(help="the zoo model it derives from "
                                                       "(default: recognised by its tensors)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the metrics as JSON rows")] = False,
    device: Annotated[str, typer.Option(help="where the work runs: cpu | gpu | cuda:N | "
                                             "auto (a missing GPU is an error)")] = "cpu",
    max_memory: MaxMemory = None,
):
    """Evaluate a (compressed) model next to its original; print value, baseline, delta and its 95% interval.

    Zoo models run on their tasks; any other model (ONNX, Hugging Face, a state dict with
    --module) is judged by output fidelity: zoocodec evaluate ORIGINAL COMPRESSED --inputs PATH.
    """
    from zoocodec.device import resolve

    typed(model, *([compressed] if compressed else []))
    dev = resolve(device)  # a GPU that is not there fails before any work
    if compressed is not None or inputs is not None or module is not None or output_kind is not None:
        from zoocodec.eval.anymodel import INPUTS_HELP, evaluate_pair

        if compressed is None:
            raise ZoocodecError("a model outside the zoo is judged against its original: zoocodec evaluate ORIGINAL "
                                "COMPRESSED --inputs PATH")
        if inputs is None:
            raise ZoocodecError(f"{compressed} is judged against {model} on your inputs: {INPUTS_HELP}")
        if task is not None or reference is not None:
            raise ZoocodecError(
                "--task and --reference belong to zoo models; a model outside the zoo is judged on --inputs"
            )
        with working(f"evaluating {compressed} against {model}"):
            metrics = evaluate_pair(model, compressed, inputs, module, output_kind, dev)
    else:
        from zoocodec.eval import evaluate as run

        with working(f"evaluating {model}"):
            metrics = run(model, task, reference, device=dev)
    if json_out:
        print(json.dumps([m.to_dict() for m in metrics], indent=2))
        return
    render.metrics_table(str(compressed or model), metrics)


@app.command()
@budgeted
def decompress(
    container: Annotated[Path, typer.Argument(help="the .zc file")],
    output: Annotated[Path, typer.Option("-o", "--output", help="model file or folder to write")],
    format: Annotated[
        str | None, typer.Option(help="safetensors | pytorch | onnx | hf (default: from the suffix, else the source)")
    ] = None,
    device: Annotated[
        str, typer.Option(help="where the work runs: cpu | gpu | cuda:N | auto (a missing GPU is an error)")
    ] = "cpu",
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
        fmt = output_format(output, a.head.source.format, a.head.files, format)
    check_output(output, [container], folder=fmt == "hf")
    with progress(total, "decoding") as step:
        run(container, output, fmt, progress=step, device=dev)
    info = info_of(container)
    console.print(
        f"wrote {output} ({fmt}): {total} tensors, {info['params']:,} weights, "
        f"{info['weight_bytes']:,} -> {info['bytes_in']:,} bytes (ratio {info['ratio']:.2f}x, "
        f"{info['bits_per_weight']:.3f} bits/weight), {time.perf_counter() - start:.1f} s",
        highlight=False,
        markup=False,
    )
    for line in auto_lines(info.get("meta") or {}):
        console.print(line, highlight=False)


@app.command()
@budgeted
def inspect(
    container: Annotated[Path, typer.Argument(help="the .zc file")],
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    max_memory: MaxMemory = None,
):
    """Show a container's tensors (shape, method, bits/weight, ratio, SQNR), what automatic mode
    decided and verified, and a sequence file's members."""
    from zoocodec.container import Container
    from zoocodec.pipeline.core import inspect as run

    with Container.open(container, verify=False) as c:
        is_sequence = c.head.sequence is not None
    if is_sequence:
        _inspect_seq(container, json_out)
        return
    info = run(container)
    if json_out:
        print(json.dumps(info, indent=2))
        return
    render.inspect_table(container, info)


@app.command()
def verify(container: Annotated[Path, typer.Argument(help="the .zc file")]):
    """Check every byte of a container against its checksums (reading a tensor checks only its own)."""
    from zoocodec.container import Container

    with Container.open(container) as c:
        checked = c.verify()
    print(f"{container}: ok (format version {c.version}, {checked:,} bytes checked)")


def _inspect_seq(container: Path, json_out: bool) -> None:
    """A sequence file: members, mode, and per tensor and per member what it costs."""
    from zoocodec.pipeline.sequence import inspect_seq

    info = inspect_seq(container)
    if json_out:
        print(json.dumps(info, indent=2))
        return
    render.seq_table(container, info)


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="the sweep spec (YAML): models x methods x parameters")],
    address: Annotated[str | None, typer.Option(help="join this Ray cluster (auto, HOST:PORT, ray://...); default: "
                                                     "RAY_ADDRESS, else an embedded local Ray on loopback")] = None,
    out: Annotated[Path | None, typer.Option(help="results folder (default: the "
                                                  "spec's out, else results/NAME)")] = None,
    max_parallel: Annotated[int | None, typer.Option(min=1, help="at most this many work items in flight")] = None,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs of the embedded Ray (default: all)")] = None,
    report: Annotated[bool, typer.Option(help="write OUT/report.html at the end")] = True,
):
    """Run a sweep on Ray; results go to Parquet (finished work is skipped on a rerun)."""
    from zoocodec.jobs import report as rep, run as runner, spec as sweep_spec

    sw = sweep_spec.load(spec, out)
    err_console.print(f"sweep {sw.name}: {len(sw.items)} work items -> {sw.out}", markup=False)
    with sweep_progress() as progress:
        outcome = runner.run(sw, address, max_parallel, num_cpus, progress=progress)
    err_console.print(f"{outcome.where}: {outcome.ok} ok, {outcome.failed} failed, {outcome.skipped} already done, "
                      f"{outcome.seconds:.1f} s", markup=False)
    print_summaries(sw.name, rep.summaries(rep.ok_runs(sw.out, {i.work_id for i in sw.items}), sw.budgets))
    console.print(f"results: {sw.out / 'runs'} and {sw.out / 'tensors'} (Parquet)", markup=False)
    if report:
        console.print(
            f"report: {rep.write(sw.out, sw.out / 'report.html', sw.budgets, title=f'zoocodec sweep {sw.name}')}",
            markup=False,
        )


@app.command()
def regress(
    baseline: Annotated[Path, typer.Option(help="results folder of the baseline sweep")],
    current: Annotated[Path, typer.Option(help="results folder of the sweep to check")],
    tolerance: Annotated[str | None, typer.Option(help="allowed change: ratio=1%,metric=0.2%,sqnr=0.1 (dB)")] = None,
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

    check_output(output, [results])
    console.print(f"wrote {rep.write(results, output)}", markup=False)


@app.command("compress-seq")
def compress_seq(
    models: Annotated[list[str], typer.Argument(help="the members in order (files or zoo names), one architecture")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .zc file to write")],
    mode: Annotated[str, typer.Option(help="delta (member minus predecessor; the smallest in bench/bench_video.py) | "
                                           "video (inter-coded) | independent")] = "delta",
    method: Annotated[str | None, typer.Option(help="the shared grid (default uniform:bits=8)")] = None,
    coder: Annotated[str | None, typer.Option(help="video-h264 | video-hevc (video mode; default video-hevc), or ans | "
                                                   "ctx for delta/independent")] = None,
    lossless: Annotated[bool, typer.Option("--lossless", help="video: lossless (the default)")] = False,
    crf: Annotated[int | None, typer.Option(help="video: lossy, constant rate factor 0..51")] = None,
    hw: Annotated[str | None, typer.Option(help="video: auto | nvdec | nvenc | cpu")] = None,
    keyint: Annotated[int, typer.Option(min=0, help="members per group: reading one decodes "
                                                    "at most this many (0: one group)")] = 0,
    min_size: Annotated[int, typer.Option(help="tensors with fewer weights stay lossless")] = 4096,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
):
    """Compress a sequence of same-architecture models (checkpoints, fine-tunes) into one .zc."""
    start = time.perf_counter()
    from zoocodec.pipeline.sequence import compress_seq as run, inspect_seq

    typed(*models)
    check_output(output, [model_path(m) for m in models])
    spec = build_spec(method or "uniform:bits=8", coder=coder or ("video-hevc" if mode == "video" else None),
                       lossless=lossless, crf=crf, hw=hw)
    if hw == "nvdec":
        note_nvdec()
    with working(f"compressing {len(models)} members"):
        run(models, output, spec, mode, keyint, min_size=min_size)
    info = inspect_seq(output)
    seconds = time.perf_counter() - start
    if json_out:
        print(json.dumps({"output": str(output), "spec": str(spec), "mode": mode, "keyint": keyint,
                          "seconds": seconds, **{k: v for k, v in info.items() if k not in ("path", "tensors")}},
                         indent=2))
    else:
        console.print(f"{output}: {info['file_bytes']:,} bytes, {seconds:.1f} s", highlight=False, markup=False)
        for line in seq_lines(info):
            console.print(line, highlight=False, markup=False)


@app.command("decompress-seq")
@budgeted
def decompress_seq(
    container: Annotated[Path, typer.Argument(help="the sequence .zc file")],
    member: Annotated[str, typer.Option(help="the member's label or index")],
    output: Annotated[Path, typer.Option("-o", "--output", help="model file to write")],
    format: Annotated[str | None, typer.Option(help="safetensors | pytorch | onnx | hf")] = None,
    max_memory: MaxMemory = None,
):
    """Decode one member of a sequence container (random access: only its group is decoded)."""
    from zoocodec.pipeline.modelio import output_format
    from zoocodec.pipeline.sequence import SeqArchive, decompress_seq as run

    with SeqArchive(container) as a:
        which = member if member in a.labels or not member.lstrip("-").isdigit() else int(member)
        a.member_index(which)
        fmt = output_format(output, a.head.source.format, a.head.files, format)
    check_output(output, [container], folder=fmt == "hf")
    with working(f"decoding member {which}"):
        run(container, which, output, fmt)
    console.print(f"wrote {output} ({fmt}): member {which} of {container}", highlight=False, markup=False)


@app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="one method (default: all)")] = None,
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
    render.catalog_listing(listed, coders if name is None else None, presets)


@app.command("zoo")
def zoo_list(json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False):
    """List the zoo models, installed or not, with their tasks and how to install them."""
    from zoocodec import catalog

    models = catalog.zoo_models()
    if json_out:
        print(json.dumps(models, indent=2))
        return
    render.zoo_table(models)


def _version(value: bool) -> None:
    if value:
        from zoocodec import __version__

        print(f"zoocodec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Compress neural-network weights and measure what it costs."""


def main() -> int:
    """The console script (`sys.exit(main())`): the verb's status is the process's status.
    typer's non-standalone mode returns the status instead of exiting; it is passed on here.
    NumPy (not imported yet) is told not to ask for transparent huge pages (unless the user's
    environment says otherwise): a fresh process's first huge pages cost about 6 ms each on a VM
    that hands free memory back to its host; compressing smollm2 took 2-8% longer with them."""
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    show_warnings()
    interrupted = threading.Event()

    def on_sigint(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    NOTES.clear()
    try:
        code = app(standalone_mode=False)
        if code in (None, 0):
            for text in NOTES:
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
