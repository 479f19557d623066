"""Sweep results as two Parquet tables: `runs` (one row per work item) and `tensors`
(one row per work item and tensor).

Layout of a results folder:

    OUT/runs/<model>/<work_id>.parquet       one file per work item: its row
    OUT/tensors/<model>/<work_id>.parquet    its per-tensor rows
    OUT/.claims/<work_id>.lock               locked by the sweep running the item (two sweeps
                                             on one folder run each item once)

One file per work item, named by its id, written to a hidden temp file and renamed into
place: a retried or resumed item replaces its own file, so rows can never be duplicated,
and a reader never sees a half-written file (readers skip names starting with '.').
The tensors file is published before the runs file, so a run row means both exist.
Read with `pyarrow.parquet.read_table(OUT/"runs")`, `pandas.read_parquet(OUT/"runs")` or
DuckDB `SELECT * FROM read_parquet('OUT/runs/*/*.parquet')`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from zoocodec.errors import ZoocodecError
from zoocodec.fsutil import atomic_file, remove_litter_in, try_lock

METRIC = pa.struct([
    ("task", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("baseline", pa.float64()), ("delta", pa.float64()),
    ("drop_pct", pa.float64()),  # loss vs the uncompressed model, percent (absolute x100 for KL)
    ("primary", pa.bool_()),  # the task's primary metric: the one accuracy budgets apply to
    # the 95% interval from the paired inputs (zoocodec.eval.stats); null: none (a minimum)
    ("delta_low", pa.float64()), ("delta_high", pa.float64()),
    ("drop_low_pct", pa.float64()), ("drop_high_pct", pa.float64()),  # drop_high_pct: the pessimistic bound
    ("inputs", pa.int64()),
])

RUNS = pa.schema([
    ("work_id", pa.string()),
    ("sweep", pa.string()),
    ("model", pa.string()),
    ("model_sha256", pa.string()),
    ("method", pa.string()),  # the spec as text: uniform:bits=6,per_tensor=False,coder=ans
    ("method_name", pa.string()),
    ("params", pa.string()),  # the spec as JSON (MethodSpec.to_dict)
    ("coder", pa.string()),
    ("overrides", pa.string()),  # JSON list of [pattern, spec]
    ("status", pa.string()),  # ok | failed
    ("error", pa.string()),
    ("weights", pa.int64()),
    ("bytes_in", pa.int64()),
    ("bytes_out", pa.int64()),  # the container without attached non-weight files
    ("file_bytes", pa.int64()),
    ("ratio", pa.float64()),
    ("bits_per_weight", pa.float64()),
    ("mse", pa.float64()),  # mean over all weights
    ("max_err", pa.float64()),
    ("sqnr_db", pa.float64()),  # null: lossless
    ("metrics", pa.list_(METRIC)),
    ("worst_drop_pct", pa.float64()),  # the largest drop of a primary metric, percent; null: no tasks
    # the 95% interval of the worst primary drop: budgets are judged by worst_drop_high_pct, and a
    # budget narrower than the interval is "not resolvable" with that many inputs
    ("worst_drop_low_pct", pa.float64()),
    ("worst_drop_high_pct", pa.float64()),
    ("inputs", pa.int64()),
    ("encode_s", pa.float64()),
    ("decode_s", pa.float64()),
    ("eval_s", pa.float64()),
    ("device", pa.string()),
    ("node", pa.string()),
    ("versions", pa.string()),  # JSON: zoocodec, format, python, numpy, torch, ray
    ("finished_at", pa.timestamp("s", tz="UTC")),
])

TENSORS = pa.schema([
    ("work_id", pa.string()),
    ("model", pa.string()),
    ("method", pa.string()),
    ("tensor", pa.string()),
    ("shape", pa.list_(pa.int64())),
    ("dtype", pa.string()),
    ("tensor_method", pa.string()),  # what this tensor got (override, lossless for small ones)
    ("weights", pa.int64()),
    ("bytes_in", pa.int64()),
    ("bytes_out", pa.int64()),
    ("bits_per_weight", pa.float64()),
    ("mse", pa.float64()),
    ("max_err", pa.float64()),
    ("sqnr_db", pa.float64()),  # null: lossless
])


def model_dir(model: str) -> str:
    """A folder name for a model: the zoo name, or a path's file name, made filesystem-safe."""
    name = Path(model.rstrip("/\\")).name or "model"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name).lstrip(".") or "model"


class Results:
    """The results folder of one sweep."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)

    @property
    def runs_dir(self) -> Path:
        return self.out / "runs"

    @property
    def tensors_dir(self) -> Path:
        return self.out / "tensors"

    def run_file(self, model: str, work_id: str) -> Path:
        return self.runs_dir / model_dir(model) / f"{work_id}.parquet"

    def write(self, run: dict[str, Any], tensors: list[dict[str, Any]]) -> None:
        """Publish one work item's rows (tensors first, then the run row that commits them)."""
        _write_table(pa.Table.from_pylist(tensors, schema=TENSORS),
                     self.tensors_dir / model_dir(run["model"]) / f"{run['work_id']}.parquet")
        _write_table(pa.Table.from_pylist([run], schema=RUNS), self.run_file(run["model"], run["work_id"]))

    def claim(self, work_id: str) -> int | None:
        """Claim a work item for this sweep: a descriptor to close when its rows are written, or
        None while another sweep holds it (the kernel releases a dead sweep's claims)."""
        return try_lock(self.out / ".claims" / f"{work_id}.lock")

    def written_since(self, model: str, work_id: str, since: float) -> bool:
        """Whether the item's row was written at or after `since` (time.time()): by another sweep."""
        try:
            return self.run_file(model, work_id).stat().st_mtime >= since
        except FileNotFoundError:
            return False

    def done_ids(self) -> set[str]:
        """Work ids with a successful row: a rerun skips them (failed items run again)."""
        if not self.runs_dir.exists():
            return set()
        t = self.runs(columns=["work_id", "status"])
        return {w for w, s in zip(t["work_id"].to_pylist(), t["status"].to_pylist(), strict=True) if s == "ok"}

    def runs(self, columns: list[str] | None = None) -> pa.Table:
        return _read(self.runs_dir, RUNS, columns)

    def tensors(self, columns: list[str] | None = None) -> pa.Table:
        return _read(self.tensors_dir, TENSORS, columns)

    def clean_temp(self) -> None:
        """Remove temp files that killed runs left behind (never a live run's: fsutil names them by process)."""
        for d in (self.runs_dir, self.tensors_dir):
            remove_litter_in(d)


def _write_table(table: pa.Table, path: Path) -> None:
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _read(folder: Path, schema: pa.Schema, columns: list[str] | None) -> pa.Table:
    if not folder.exists():
        raise ZoocodecError(f"{folder}: no results here (expected the runs/ and tensors/ folders of a sweep)")
    return ds.dataset(folder, schema=schema, format="parquet").to_table(columns=columns)
