"""Rewrite constraints.txt: the exact installed version of every package that zoocodec and its
extras pull in (the dependency closure of pyproject.toml, read from this environment).

Run it with the virtualenv the fast tier last passed in, after adding or upgrading a package:
    .venv/bin/python scripts/freeze_constraints.py
scripts/setup.sh, .ci/run and the Dockerfile install with `-c constraints.txt`, so every fresh
set-up gets these versions; `scripts/setup.sh --latest` ignores the file. Extras whose packages
are not installed here (gpu on a CPU machine) are left unpinned."""
from __future__ import annotations

import importlib.metadata as md
import platform
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "constraints.txt"


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Installed name -> version for `roots` and everything they require, extras followed."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, frozenset(r.extras)) for r in roots if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            print(f"not installed, left unpinned: {req.name}", file=sys.stderr)
            continue
        pinned[name] = dist.version.split("+")[0]  # torch 2.13.0+cpu: `==2.13.0` matches either build
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append((sub, frozenset(sub.extras)))
    return pinned


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = [Requirement(r) for r in project["dependencies"]]
    roots += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pinned = closure(roots)
    head = [
        "# The exact versions zoocodec's test suite last passed with (written by",
        f"# scripts/freeze_constraints.py; Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}).",
        "# scripts/setup.sh, .ci/run and the Dockerfile install with `-c constraints.txt`;",
        "# `scripts/setup.sh --latest` ignores it to test the newest releases.",
    ]
    OUT.write_text("\n".join(head + [f"{n}=={v}" for n, v in sorted(pinned.items())]) + "\n")
    print(f"wrote {OUT.name}: {len(pinned)} packages")


if __name__ == "__main__":
    main()
