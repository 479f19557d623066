"""The command line's shared options and the user's values: output paths, presets, method specs, model names."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import typer

from zoocodec.cli.render import note
from zoocodec.errors import ZoocodecError

MaxMemory = Annotated[str | None, typer.Option(
    "--max-memory", help="refuse files whose decoding would take more memory than this (8G, "
                         "512M, 50%; default: half of it)")]


def budgeted(command):
    """Run a command that reads .zc files under its --max-memory (zoocodec.budget)."""
    @functools.wraps(command)
    def run(*args, max_memory: str | None = None, **kwargs):
        from zoocodec import budget

        with budget.limit(budget.parse_size(max_memory) if max_memory else None):
            return command(*args, max_memory=max_memory, **kwargs)

    return run


def check_output(output: Path, inputs: list[Path], folder: bool = False) -> None:
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


def model_path(model: str) -> Path:
    """The path a model argument reads (a zoo name's file included), for check_output."""
    from zoocodec.pipeline import zoo

    try:
        return zoo.locate(model)
    except ZoocodecError:
        return Path(model)  # reported by the command itself, in its own words


def typed(*models: str) -> None:
    """Notes for the model names the user typed (a zoo name with a local file of that name)."""
    from zoocodec.pipeline import zoo

    for model in models:
        if (text := zoo.shadowed(model)) is not None:
            note(text)


def apply_preset(name: str, method: str, step, bits, per_tensor, target_bpw, target_loss) -> tuple[str, float | None]:
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


def coders_help() -> str:
    """--coder's help: the registered coders by the symbols they are made for (registry.py),
    so a new coder is listed without an edit here."""
    from zoocodec.codecs import CODERS  # numpy and the coders' modules: no torch, Ray or CuPy

    def made_for(alphabet: str) -> str:
        return ", ".join(name for name, cls in CODERS.items() if cls.alphabet == alphabet)

    return (f"symbol coder: {made_for('levels')}; masks: {made_for('flags')}; --method lossless: "
            f"{made_for('bits')} (see `zoocodec methods`)")


def build_spec(method: str, step: float | None = None, bits: int | None = None, per_tensor: bool = False,
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


def note_nvdec() -> None:
    """--hw nvdec encodes in software a stream NVDEC decodes; say so when this machine has none."""
    from zoocodec.codecs import nvdec

    if not nvdec.nvdec_available():
        note("--hw nvdec: this machine has no usable NVDEC (no NVIDIA GPU with CuPy and PyNvVideoCodec); "
             "the stream is made for NVDEC, and decoding it here runs in software")
