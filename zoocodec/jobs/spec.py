"""Sweep specs: a YAML file -> validated work items, each with a deterministic id.

    name: quick                       # names the results folder (results/quick)
    models: [mnist-cnn, effnet-lite0, ./my/model.safetensors]
    methods:
      - uniform:bits=8                # a method spec string, as on the command line
      - method: uniform               # or a grid: every combination of the listed values
        params: {bits: [4, 6], per_tensor: [false, true]}
        overrides: {"*embeddings*": "uniform:bits=8"}
        resources: {GPU: 1}           # Ray resources per item (GPU, nvenc, ...); default 1 CPU
    tasks: [digits, lee]              # evaluation tasks (zoocodec.eval), each run on the models
                                      # that have it in the zoo; `all`: every model's own tasks
    budgets: [0.5, 1, 5]              # accuracy budgets of the summary: max metric drop, percent
    max_retries: 2                    # retries after a worker crash or a retryable error

Everything is checked before anything runs: unknown models, methods, parameters and
tasks are rejected with the file and line that is wrong (the YAML is composed into
nodes, which keep their marks). The id of a work item hashes the normalised item (model,
method spec, overrides, tasks), the model's content and the container format version,
so a rerun recognises finished work and a changed model file is new work.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoocodec.container import FORMAT_VERSION
from zoocodec.errors import SpecError, ZoocodecError
from zoocodec.methods import REGISTRY, MethodSpec, Overrides, parse_spec, spec_from_dict
from zoocodec.pipeline import zoo

TOP_KEYS = {"name", "out", "models", "methods", "tasks", "budgets", "max_retries", "min_size"}
METHOD_KEYS = {"method", "params", "overrides", "resources"}
DEFAULT_BUDGETS = [0.5, 1.0, 5.0]


@dataclass(frozen=True)
class WorkItem:
    """One model compressed with one method spec: the unit of work, retry and resume."""

    work_id: str
    model: str  # as written in the spec: a zoo name or a path
    model_path: str | None  # absolute path for file models; None: a zoo name, resolved on the worker
    spec: dict[str, Any]  # MethodSpec.to_dict()
    overrides: list = field(default_factory=list)  # Overrides.to_list()
    min_size: int = 4096
    tasks: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)
    content: str = ""  # content_hash of the model when planned ("zoo:NAME": not installed there)

    @property
    def method(self) -> str:
        return str(spec_from_dict(self.spec))


@dataclass
class Sweep:
    name: str
    out: Path
    items: list[WorkItem]
    tasks: list[str]
    budgets: list[float]
    max_retries: int
    source: Path


def load(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Sweep:
    """Read and check a sweep spec; every error names `file:line`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ZoocodecError(f"cannot read sweep spec {path}: {e.strerror}") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    return _Checker(path).sweep(root, out)


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, node: yaml.Node, message: str) -> SpecError:
        return SpecError(f"{self.path}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, what: str, allowed: set[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out = {}
        for k, v in node.value:
            key = self.scalar(k)
            if key not in allowed:
                raise self.fail(k, f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})")
            out[key] = (k, v)
        return out

    def seq(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return node.value

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, "expected a single value")
        return yaml.safe_load(yaml.serialize(node))

    def value(self, node: yaml.Node) -> Any:
        return yaml.safe_load(yaml.serialize(node))

    def sweep(self, root: yaml.Node | None, out: str | os.PathLike | None) -> Sweep:
        if root is None:
            raise SpecError(f"{self.path}: the sweep spec is empty")
        top = self.mapping(root, "the sweep spec", TOP_KEYS)
        for key in ("models", "methods"):
            if key not in top:
                raise self.fail(root, f"the sweep spec needs a {key!r} list")
        name = str(self.scalar(top["name"][1])) if "name" in top else self.path.stem
        if out is None:
            out = self.scalar(top["out"][1]) if "out" in top else Path("results") / name
        tasks = self.tasks(top["tasks"][1]) if "tasks" in top else []
        models = [self.model(n) for n in self.seq(top["models"][1], "models")]
        if tasks and tasks != ["all"]:
            used = {t for m, path, _ in models for t in _model_tasks(m, path, tasks)}
            for t in tasks:
                if t not in used:
                    raise self.fail(top["tasks"][1], f"evaluation task {t!r} applies to none of the models")
        budgets = [self.number(n, "a budget", lo=0) for n in self.seq(top["budgets"][1], "budgets")] \
            if "budgets" in top else DEFAULT_BUDGETS
        retries = int(self.number(top["max_retries"][1], "max_retries", lo=0, integer=True)) \
            if "max_retries" in top else 2
        min_size = int(self.number(top["min_size"][1], "min_size", lo=0, integer=True)) \
            if "min_size" in top else 4096
        methods = [m for n in self.seq(top["methods"][1], "methods") for m in self.methods(n)]
        if not models or not methods:
            raise self.fail(root, "a sweep needs at least one model and one method")
        items = []
        seen = set()
        for (model, model_path, fingerprint), (spec, overrides, resources) in itertools.product(models, methods):
            item = _item(model, model_path, fingerprint, spec, overrides, min_size,
                         _model_tasks(model, model_path, tasks), resources)
            if item.work_id not in seen:
                seen.add(item.work_id)
                items.append(item)
        return Sweep(name, Path(out), items, tasks, sorted(budgets), retries, self.path)

    def number(self, node: yaml.Node, what: str, lo: float, integer: bool = False) -> float:
        v = self.scalar(node)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)) or v < lo:
            raise self.fail(node, f"{what} must be a{'n integer' if integer else ' number'} >= {lo}, got {v!r}")
        return v

    def tasks(self, node: yaml.Node) -> list[str]:
        if isinstance(node, yaml.ScalarNode) and self.scalar(node) == "all":
            return ["all"]
        names = [(n, self.scalar(n)) for n in self.seq(node, "tasks")]
        if not names:
            return []
        known = known_tasks()
        if known is None:
            raise self.fail(node, "evaluation tasks need zoocodec.eval, which this installation lacks")
        for n, task in names:
            if task not in known:
                raise self.fail(n, f"unknown evaluation task {task!r} (known: {', '.join(sorted(known))})")
        return [t for _, t in names]

    def model(self, node: yaml.Node) -> tuple[str, str | None, str]:
        text = self.scalar(node)
        if not isinstance(text, str) or not text:
            raise self.fail(node, f"a model is a zoo name or a path, got {text!r}")
        if zoo.is_zoo_name(text):
            try:
                return text, None, content_hash(zoo.locate(text))
            except ZoocodecError:
                return text, None, f"zoo:{text}"  # not installed here: the worker resolves it
        path = (self.path.parent / text).expanduser()
        if not zoo.is_model_path(text):
            raise self.fail(node, f"unknown model {text!r}: not a zoo name ({', '.join(sorted(zoo.registry()))}) "
                                  "and not a path")
        if not path.exists():
            raise self.fail(node, f"model file {str(path)!r} does not exist")
        return text, str(path.resolve()), content_hash(path.resolve())

    def methods(self, node: yaml.Node) -> list[tuple[MethodSpec, Overrides, dict[str, float]]]:
        if isinstance(node, yaml.ScalarNode):
            return [(self.parse(node, self.scalar(node)), Overrides(), {})]
        entry = self.mapping(node, "a method entry", METHOD_KEYS)
        if "method" not in entry:
            raise self.fail(node, "a method entry needs 'method: NAME'")
        name_node = entry["method"][1]
        name = self.scalar(name_node)
        if name not in REGISTRY:
            raise self.fail(name_node, f"unknown method {name!r} (known: {', '.join(sorted(REGISTRY))})")
        grid: dict[str, list[tuple[yaml.Node, Any]]] = {}
        if "params" in entry:
            for k, v in self.mapping(entry["params"][1], f"the params of {name}", _param_names(name)).values():
                values = self.seq(v, f"parameter {self.scalar(k)}") if isinstance(v, yaml.SequenceNode) else [v]
                grid[self.scalar(k)] = [(n, self.scalar(n)) for n in values]
        overrides = Overrides()
        if "overrides" in entry:
            onode = entry["overrides"][1]
            try:
                overrides = Overrides({str(self.scalar(k)): self.scalar(v)
                                       for k, v in self.mapping(onode, "overrides", _Any()).values()})
            except SpecError as e:
                raise self.fail(onode, str(e)) from None
        resources = {}
        if "resources" in entry:
            for k, v in self.mapping(entry["resources"][1], "resources", _Any()).values():
                resources[str(self.scalar(k))] = float(self.number(v, f"resource {self.scalar(k)}", lo=0))
        specs = []
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            text = name + (":" + ",".join(f"{k}={_text(v)}" for k, (_, v) in zip(keys, combo)) if keys else "")
            where = combo[-1][0] if combo else name_node
            specs.append((self.parse(where, text), overrides, resources))
        return specs

    def parse(self, node: yaml.Node, text: Any) -> MethodSpec:
        if not isinstance(text, str):
            raise self.fail(node, f"a method is a spec string like 'uniform:bits=6', got {text!r}")
        try:
            return parse_spec(text)
        except SpecError as e:
            raise self.fail(node, str(e)) from None


class _Any(set):
    """Accepts every key (for user-named overrides and resources)."""

    def __contains__(self, key) -> bool:
        return True


def short_method(spec: dict[str, Any] | str) -> str:
    """A spec as text with only the parameters that differ from their defaults: uniform:bits=6."""
    d = json.loads(spec) if isinstance(spec, str) else spec
    try:
        s = spec_from_dict(d)
    except SpecError:  # e.g. a row written by an older zoocodec
        return str(d.get("method"))
    params = [f"{f.name}={_text(getattr(s, f.name))}" for f in dataclasses.fields(s) if getattr(s, f.name) != f.default]
    return s.name + (":" + ",".join(params) if params else "")


def _param_names(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(REGISTRY[method])}


def _text(v: Any) -> str:
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _item(model, model_path, fingerprint, spec: MethodSpec, overrides: Overrides, min_size, tasks, resources) -> WorkItem:
    key = {"model": model, "content": fingerprint, "spec": spec.to_dict(), "overrides": overrides.to_list(),
           "min_size": min_size, "tasks": list(tasks), "format_version": FORMAT_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return WorkItem(digest, model, model_path, spec.to_dict(), overrides.to_list(), min_size, tuple(tasks), resources,
                    fingerprint)


def known_tasks() -> set[str] | None:
    """The evaluation tasks zoocodec.eval offers, or None when it is not installed."""
    try:
        from zoocodec.eval.tasks import TASKS  # noqa: PLC0415
    except ImportError:
        return None
    return set(TASKS)


def _model_tasks(model: str, model_path: str | None, tasks: list[str]) -> list[str]:
    """The sweep's tasks this model has (a zoo model's own tasks for `all`; a file: as listed)."""
    if model_path is not None:
        return [] if tasks == ["all"] else list(tasks)
    own = zoo.registry()[model].get("tasks") or []
    return list(own) if tasks == ["all"] else [t for t in tasks if t in own]


@functools.lru_cache(maxsize=64)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def content_hash(path: Path) -> str:
    """SHA-256 of a model file, or of every file of a model folder (names and contents)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if path.is_dir() else p.name}\0".encode())
        h.update(_file_hash(str(p), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()
