"""Sweep specs: a YAML file -> validated work items, each with a deterministic id.

    name: quick                       # names the results folder (results/quick)
    models:
      - mnist-cnn                     # a zoo name, judged on its zoo tasks
      - ./my/model.safetensors        # a path (relative to the spec)
      - model: ./my/net.onnx          # a model outside the zoo, judged by output fidelity
        inputs: ./my/inputs.npz       # against the original on these inputs (as for
        module: mypkg.nets:make       # `zoocodec evaluate ORIGINAL COMPRESSED --inputs`);
        output: logits                # module (state dicts) and output kind optional
    methods:
      - uniform:bits=8                # a method spec string, as on the command line
      - method: uniform               # or a grid: every combination of the listed values
        params: {bits: [4, 6], per_tensor: [false, true]}
        overrides: {"*embeddings*": "uniform:bits=8"}
        resources: {GPU: 1}           # Ray resources per item (GPU, nvenc, ...); default 1 CPU
        device: auto                  # cpu | gpu | cuda:N | auto; default auto with a GPU resource,
                                      # else cpu (zoocodec/device.py; a missing GPU fails the item)
    tasks: [digits, lee]              # evaluation tasks (zoocodec.eval), each run on the models
                                      # that have it in the zoo; `all`: every model's own tasks
    budgets: [0.5, 1, 5]              # accuracy budgets of the summary: max metric drop, percent
    max_retries: 2                    # retries after a worker crash or a retryable error

Everything is checked before anything runs: unknown models, methods, parameters and
tasks are rejected with the file and line that is wrong (the YAML is composed into
nodes, which keep their marks). The id of a work item hashes the normalised item (model,
method spec, overrides, tasks, inputs), the model's and the inputs' content and the
container format version, so a rerun recognises finished work and a changed model or
inputs file is new work.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.machinery
import itertools
import json
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoocodec.container import FORMAT_VERSION
from zoocodec.device import name as device_name
from zoocodec.errors import SpecError, ZoocodecError
from zoocodec.methods import REGISTRY, MethodSpec, parse_spec, spec_from_dict
from zoocodec.pipeline import zoo
from zoocodec.pipeline.policy import Overrides

TOP_KEYS = {"name", "out", "models", "methods", "tasks", "budgets", "max_retries", "min_size"}
METHOD_KEYS = {"method", "params", "overrides", "resources", "device"}
MODEL_KEYS = {"model", "inputs", "module", "output"}
DEFAULT_BUDGETS = [0.5, 1.0, 5.0]


@dataclass(frozen=True)
class Inputs:
    """What a model outside the zoo is judged on: zoocodec.eval.anymodel.evaluate_pair's arguments."""

    path: str  # absolute: a folder of images, .npy/.npz, or a text file
    module: str | None = None  # package.module:factory for a state dict
    output: str | None = None  # logits | embeddings | values (default: from the model)
    content: str = ""  # content_hash of the inputs when planned
    # the module's top-level package (its folder) or one-file module found on the planning machine,
    # shipped to the Ray workers (zoocodec.jobs.run); None: the workers' environment provides it
    module_source: str | None = None


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
    device: str = "cpu"  # where the worker quantizes and evaluates; not part of the id (same bytes)
    judged_on: Inputs | None = None  # a model outside the zoo: judged by output fidelity on these

    @property
    def evaluated(self) -> bool:
        return bool(self.tasks) or self.judged_on is not None

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
    if root is None:
        raise SpecError(f"{path}: the sweep spec is empty")
    checker = _Checker(path, root)
    checker.check_schema()
    return checker.sweep(out)


def schema() -> dict[str, Any]:
    """The JSON schema of a sweep spec, generated from the method registry (each method's
    params are its spec's fields)."""
    scalar = {"type": ["string", "number", "boolean", "null"]}
    params = {"type": "object", "additionalProperties": {"if": {"type": "array"}, "then": {"items": scalar},
                                                         "else": scalar}}
    entry = {
        "type": "object", "required": ["method"], "additionalProperties": False,
        "properties": {"method": {"type": "string", "enum": sorted(REGISTRY)}, "params": params,
                       "overrides": {"type": "object", "additionalProperties": {"type": "string"}},
                       "resources": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
                       "device": {"type": "string"}},  # its form is checked by zoocodec.device.name
        "allOf": [{"if": {"properties": {"method": {"const": name}}, "required": ["method"]},
                   "then": {"properties": {"params": {"propertyNames": {"enum": sorted(_param_names(name))}}}}}
                  for name in sorted(REGISTRY)],
    }
    text = {"type": "string", "minLength": 1}
    model = {"type": "object", "required": ["model", "inputs"], "additionalProperties": False,
             "properties": {"model": text, "inputs": text, "module": text,
                            "output": {"type": "string", "enum": ["logits", "embeddings", "values"]}}}
    return {
        "type": "object", "required": ["models", "methods"], "additionalProperties": False,
        "properties": {
            "name": {"type": ["string", "number"]}, "out": {"type": "string"},
            "models": {"type": "array", "minItems": 1,
                       "items": {"if": {"type": "object"}, "then": model, "else": {"type": "string", "minLength": 1}}},
            "methods": {"type": "array", "minItems": 1,
                        "items": {"if": {"type": "object"}, "then": entry, "else": {"type": "string"}}},
            "tasks": {"if": {"type": "string"}, "then": {"const": "all"},
                      "else": {"type": ["array", "null"], "items": {"type": "string"}}},
            "budgets": {"type": ["array", "null"], "items": {"type": "number", "minimum": 0}},
            "max_retries": {"type": "integer", "minimum": 0},
            "min_size": {"type": "integer", "minimum": 0},
        },
    }


_TYPES = {"object": "a mapping", "array": "a list", "string": "text", "integer": "an integer", "number": "a number"}


class _Checker:
    """The spec's data checked against schema(), then its meaning (models, methods, tasks);
    errors point at the YAML node's line (the document is composed into nodes, which keep marks)."""

    def __init__(self, path: Path, root: yaml.Node):
        self.path, self.root = path, root
        self.data = yaml.safe_load(yaml.serialize(root))

    def fail(self, node: yaml.Node, message: str) -> SpecError:
        return SpecError(f"{self.path}:{node.start_mark.line + 1}: {message}")

    def node(self, where) -> yaml.Node:
        """The node at a path of keys and indexes (as far as it exists)."""
        node = self.root
        for step in where:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if self.value(k) == step), node)
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
        return node

    def key_node(self, where, key) -> yaml.Node:
        node = self.node(where)
        if isinstance(node, yaml.MappingNode):
            return next((k for k, _ in node.value if self.value(k) == key), node)
        return node

    @staticmethod
    def value(node: yaml.Node) -> Any:
        return yaml.safe_load(yaml.serialize(node))

    def what(self, where) -> str:
        where = list(where)
        if not where:
            return "the sweep spec"
        if where[0] == "models" and len(where) == 3:
            return f"the {where[2]} of model entry {where[1] + 1}"
        if where[0] == "methods" and len(where) >= 2:
            if len(where) == 2:
                return "a method entry"
            method = (self.data["methods"][where[1]] or {}).get("method", "?")
            return f"the {where[2]} of {method}" if len(where) == 3 else f"{where[2]} {where[3]!r} of {method}"
        if len(where) == 2 and isinstance(where[1], int):
            return f"entry {where[1] + 1} of {where[0]}"
        return str(where[-1])

    def check_schema(self) -> None:
        import jsonschema

        validator = jsonschema.Draft202012Validator(schema())
        errors = list(validator.iter_errors(self.data))
        # an unknown key first: a misspelt key also leaves a required one missing
        error = next((e for e in errors if e.validator == "additionalProperties"), None) \
            or jsonschema.exceptions.best_match(errors)
        if error is None:
            return
        where, v, inst = list(error.absolute_path), error.validator, error.instance
        node = self.node(where)
        if "propertyNames" in error.absolute_schema_path:  # a key the method's spec does not have
            raise self.fail(self.key_node(where, inst), f"unknown key {inst!r} in {self.what(where)} "
                                                        f"(allowed: {', '.join(error.validator_value)})")
        if v == "additionalProperties":
            allowed = error.schema.get("properties") or {}
            key = next(k for k in self.node_keys(where) if k not in allowed)
            raise self.fail(self.key_node(where, key),
                            f"unknown key {key!r} in {self.what(where)} (allowed: {', '.join(sorted(allowed))})")
        if v == "required":
            missing = next(k for k in error.validator_value if k not in (inst or {}))
            hint = "a method entry needs 'method: NAME'" if missing == "method" else \
                f"a model entry needs '{missing}: PATH' (a mapping is a model outside the zoo with its inputs)" \
                if where[:1] == ["models"] else f"{self.what(where)} needs a {missing!r} list"
            raise self.fail(node, hint)
        if v == "enum" and where[-1:] == ["method"]:
            raise self.fail(node, f"unknown method {inst!r} (known: {', '.join(sorted(REGISTRY))})")
        if v == "const" and where == ["tasks"]:
            raise self.fail(node, f"tasks must be 'all' or a list of task names, got {inst!r}")
        if v == "minItems":
            raise self.fail(node, "a sweep needs at least one model and one method")
        if v == "minimum":
            raise self.fail(node, f"{self.what(where)} must be >= {error.validator_value}, got {inst!r}")
        if v == "type":
            kinds = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
            raise self.fail(node, f"{self.what(where)} must be "
                                  f"{' or '.join(_TYPES.get(k, k) for k in kinds if k != 'null')}, got {inst!r}")
        raise self.fail(node, f"{self.what(where)}: {error.message}")

    def node_keys(self, where) -> list[Any]:
        node = self.node(where)
        return [self.value(k) for k, _ in node.value] if isinstance(node, yaml.MappingNode) else []

    def sweep(self, out: str | os.PathLike | None) -> Sweep:
        d = self.data
        name = str(d.get("name", self.path.stem))
        if out is None:
            out = d.get("out") or Path("results") / name
        tasks = self.tasks(d.get("tasks"))
        models = [self.model(i, text) for i, text in enumerate(d["models"])]
        if tasks and tasks != ["all"]:
            used = {t for m, path, _, judged in models if judged is None for t in _model_tasks(m, path, tasks)}
            for t in tasks:
                if t not in used:
                    raise self.fail(self.node(["tasks"]), f"evaluation task {t!r} applies to none of the models")
        budgets = d.get("budgets") or DEFAULT_BUDGETS
        retries = d.get("max_retries", 2)
        min_size = d.get("min_size", 4096)
        methods = [m for i, entry in enumerate(d["methods"]) for m in self.methods(i, entry)]
        items = []
        seen = set()
        for (model, model_path, fingerprint, judged), (spec, overrides, resources, device) in \
                itertools.product(models, methods):
            own = _model_tasks(model, model_path, tasks) if judged is None else []  # its inputs are its task
            item = _item(model, model_path, fingerprint, spec, overrides, min_size, own, resources, device, judged)
            if item.work_id not in seen:
                seen.add(item.work_id)
                items.append(item)
        return Sweep(name, Path(out), items, tasks, sorted(budgets), retries, self.path)

    def tasks(self, value: Any) -> list[str]:
        if value == "all":
            return ["all"]
        names = list(value or [])
        if not names:
            return []
        known = known_tasks()
        if known is None:
            raise self.fail(self.node(["tasks"]), "evaluation tasks need zoocodec.eval, which this installation lacks")
        for i, task in enumerate(names):
            if task not in known:
                raise self.fail(self.node(["tasks", i]),
                                f"unknown evaluation task {task!r} (known: {', '.join(sorted(known))})")
        return names

    def model(self, i: int, entry: str | dict) -> tuple[str, str | None, str, Inputs | None]:
        if isinstance(entry, dict):
            return self.outside(i, entry)
        return (*self.model_path(self.node(["models", i]), entry), None)

    def outside(self, i: int, entry: dict) -> tuple[str, str | None, str, Inputs]:
        """A model outside the zoo with the inputs it is judged on (paths relative to the spec)."""
        where = ["models", i]
        text = entry["model"]
        if zoo.is_zoo_name(text):
            raise self.fail(self.node([*where, "model"]), f"{text!r} is a zoo model, judged on its zoo tasks: "
                                                          "list it by name (inputs are for models outside the zoo)")
        model, model_path, fingerprint = self.model_path(self.node([*where, "model"]), text)
        inputs = (self.path.parent / entry["inputs"]).expanduser()
        if not inputs.exists():
            raise self.fail(self.node([*where, "inputs"]), f"inputs {str(inputs)!r} do not exist")
        module = entry.get("module")
        if module is not None and (":" not in module or not all(module.partition(":")[::2])):
            raise self.fail(self.node([*where, "module"]), f"module {module!r}: write package.module:factory")
        return model, model_path, fingerprint, Inputs(str(inputs.resolve()), module, entry.get("output"),
                                                      content_hash(inputs.resolve()),
                                                      module_source(module, self.path.parent) if module else None)

    def model_path(self, node: yaml.Node, text: str) -> tuple[str, str | None, str]:
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

    def methods(self, i: int, entry: str | dict) -> list[tuple[MethodSpec, Overrides, dict[str, float], str]]:
        where = ["methods", i]
        if isinstance(entry, str):
            return [(self.parse(self.node(where), entry), Overrides(), {}, "cpu")]
        name = entry["method"]
        grid = {k: (v if isinstance(v, list) else [v]) for k, v in (entry.get("params") or {}).items()}
        try:
            overrides = Overrides(dict(entry.get("overrides") or {}))
        except SpecError as e:
            raise self.fail(self.node([*where, "overrides"]), str(e)) from None
        resources = {str(k): float(v) for k, v in (entry.get("resources") or {}).items()}
        device = "auto" if resources.get("GPU", 0) > 0 else "cpu"
        if "device" in entry:
            try:
                device = device_name(entry["device"])
            except ZoocodecError as e:
                raise self.fail(self.node([*where, "device"]), str(e)) from None
        specs = []
        keys = list(grid)
        for combo in itertools.product(*(range(len(grid[k])) for k in keys)):
            text = name + (
                ":" + ",".join(f"{k}={_text(grid[k][j])}" for k, j in zip(keys, combo, strict=True)) if keys else ""
            )
            last = [*where, "params", keys[-1]] + ([combo[-1]] if isinstance(entry["params"][keys[-1]], list) else []) \
                if keys else [*where, "method"]
            specs.append((self.parse(self.node(last), text), overrides, resources, device))
        return specs

    def parse(self, node: yaml.Node, text: Any) -> MethodSpec:
        try:
            return parse_spec(text)
        except SpecError as e:
            raise self.fail(node, str(e)) from None


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


def _item(model, model_path, fingerprint, spec: MethodSpec, overrides: Overrides, min_size, tasks, resources,
          device="cpu", judged_on: Inputs | None = None) -> WorkItem:
    key = {"model": model, "content": fingerprint, "spec": spec.to_dict(), "overrides": overrides.to_list(),
           "min_size": min_size, "tasks": list(tasks), "format_version": FORMAT_VERSION}
    if judged_on is not None:  # the inputs by content: a moved inputs file is the same work
        key["inputs"] = {"content": judged_on.content, "module": judged_on.module, "output": judged_on.output}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return WorkItem(digest, model, model_path, spec.to_dict(), overrides.to_list(), min_size, tuple(tasks), resources,
                    fingerprint, device, judged_on)


def module_source(module: str, spec_dir: Path) -> str | None:
    """Where the top-level package of `module` (package.module:factory) is on this machine, to be
    shipped to the workers: its folder, or the file of a one-file module; looked up next to the
    spec, then on this process's path, without importing it. None when it is not found there, or
    is installed (the standard library, site-packages, zoocodec itself): the workers' own
    environment then has to provide it."""
    top = module.partition(":")[0].split(".")[0]
    if top == "zoocodec":
        return None
    try:
        found = importlib.machinery.PathFinder.find_spec(top, [str(spec_dir), *sys.path])
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:  # a package (a namespace package: its first folder)
        where = Path(list(found.submodule_search_locations)[0])
    elif found.origin and found.origin.endswith(".py"):
        where = Path(found.origin)
    else:  # an extension module: built for one machine, not shipped
        return None
    where = where.resolve()
    installed = {Path(p).resolve() for k, p in sysconfig.get_paths().items() if k in INSTALLED_PATHS}
    if any(part in ("site-packages", "dist-packages") for part in where.parts) or \
            any(where.is_relative_to(p) for p in installed):
        return None
    return str(where)


INSTALLED_PATHS = ("stdlib", "platstdlib", "purelib", "platlib")


def known_tasks() -> set[str] | None:
    """The evaluation tasks zoocodec.eval offers, or None when it is not installed."""
    try:
        from zoocodec.eval.tasks import TASKS
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
