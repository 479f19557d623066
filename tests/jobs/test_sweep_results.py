"""Results tables, regression check and report, from real work items run in-process (no Ray)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import run_script
from zoocodec import fsutil
from zoocodec.jobs import regress, report, results as res, run as runner, spec as sweep_spec


@pytest.fixture(scope="module")
def swept(tmp_path_factory, mnist_path) -> tuple[sweep_spec.Sweep, Path]:
    """mnist-cnn at three settings, executed here and written as a sweep would."""
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "s.yaml").write_text(
        "name: s\nmodels: [mnist-cnn]\nmethods: [lossless, 'uniform:bits=4', 'uniform:bits=8']\n"
    )
    sweep = sweep_spec.load(tmp / "s.yaml", tmp / "base")
    store = res.Results(sweep.out)
    for item in sweep.items:
        store.write(*runner.execute(item, sweep.name))
    return sweep, tmp


def test_rows_are_complete_and_resume_knows_them(swept):
    sweep, _ = swept
    store = res.Results(sweep.out)
    runs = store.runs()
    assert runs.schema == res.RUNS and runs.num_rows == 3
    assert store.done_ids() == {i.work_id for i in sweep.items}
    row = next(r for r in runs.to_pylist() if r["method_name"] == "uniform" and json.loads(r["params"])["bits"] == 4)
    assert row["status"] == "ok" and row["weights"] == 390410 and row["coder"] == "ans"
    assert 3 < row["bits_per_weight"] < 5 and row["sqnr_db"] > 10
    assert json.loads(row["versions"])["zoocodec"]
    tensors = store.tensors()
    assert tensors.schema == res.TENSORS
    assert set(tensors["work_id"].to_pylist()) == {i.work_id for i in sweep.items}
    # a temp file a killed driver left behind is never read and is cleaned up
    killed = subprocess.Popen(["true"])
    killed.wait()
    stale = next(store.runs_dir.iterdir()) / f".deadbeef.parquet{fsutil.TMP}{fsutil._host()}-{killed.pid}-0"
    stale.write_bytes(b"half a file")
    assert store.runs().num_rows == 3
    store.clean_temp()
    assert not stale.exists()


def test_rewriting_an_item_replaces_its_row(swept, tmp_path):
    sweep, _ = swept
    out = tmp_path / "copy"
    shutil.copytree(sweep.out, out)
    store = res.Results(out)
    item = sweep.items[0]
    store.write(runner.failed_row(item, sweep.name, "boom"), [])
    got = store.runs().to_pylist()
    assert len(got) == 3 and [r["error"] for r in got if r["work_id"] == item.work_id] == ["boom"]
    assert item.work_id not in store.done_ids()


def test_a_corrupt_model_becomes_a_failed_row(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "s.yaml").write_text("models: [bad.pt]\nmethods: [uniform]\n")
    item = sweep_spec.load(tmp_path / "s.yaml").items[0]
    row, tensors = runner.execute(item, "s")
    assert row["status"] == "failed" and "bad.pt" in row["error"] and tensors == []


def test_a_model_outside_the_zoo_is_judged_on_its_inputs(tmp_path):
    """A sweep item with `inputs:`: its row holds the output-fidelity metrics with their intervals."""
    pytest.importorskip("sklearn.datasets")
    import warnings

    import numpy as np
    import torch

    from support import digits_mlp

    net, x = digits_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(tmp_path / "net.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "s.yaml").write_text("models:\n  - model: net.onnx\n    inputs: x.npy\n"
                                     "methods: ['uniform:bits=3']\nmin_size: 1024\n")
    item = sweep_spec.load(tmp_path / "s.yaml").items[0]
    row, _ = runner.execute(item, "s")
    assert row["status"] == "ok", row["error"]
    m = {r["metric"]: r for r in row["metrics"]}
    assert set(m) == {"kl", "agreement"} and m["kl"]["primary"] and m["kl"]["inputs"] == len(x)
    assert 0 < m["kl"]["drop_low_pct"] <= m["kl"]["drop_pct"] <= m["kl"]["drop_high_pct"]
    assert row["worst_drop_high_pct"] == m["kl"]["drop_high_pct"] and row["eval_s"] is not None


def _scaled_copy(src: Path, dst: Path, factor: float, only_method: str) -> None:
    """A copy of a results folder whose `only_method` run got `factor` times the ratio."""
    shutil.copytree(src, dst)
    for f in (dst / "runs").glob("*/*.parquet"):
        rows = pq.read_table(f).to_pylist()
        for r in rows:
            if r["method"] == only_method:
                r["ratio"] *= factor
        pq.write_table(pa.Table.from_pylist(rows, schema=res.RUNS), f)


def test_regress_passes_identical_results_and_flags_a_worse_ratio(swept):
    """Exit codes through the installed console script, as a nightly job sees them."""
    sweep, tmp = swept
    same = run_script("regress", "--baseline", sweep.out, "--current", sweep.out)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("3 work items in the baseline, 3 in the current results: 3 compared, 0 missing, "
                                  "0 new. 0 regressed (0 missing, 0 worse), 0 improved.")

    method = "uniform:bits=4,per_tensor=False,coder=ans"
    _scaled_copy(sweep.out, tmp / "worse", 0.98, method)
    worse = run_script("regress", "--baseline", sweep.out, "--current", tmp / "worse", "--tolerance", "ratio=1%")
    assert worse.returncode == 1, worse.stderr
    assert "| regression | mnist-cnn | `uniform:bits=4" in worse.stdout and "-2.00%" in worse.stdout
    # within a looser tolerance it passes; a better ratio is an improvement, not a failure
    assert run_script("regress", "--baseline", sweep.out, "--current", tmp / "worse",
                      "--tolerance", "ratio=3%").returncode == 0
    _scaled_copy(sweep.out, tmp / "better", 1.05, method)
    better = regress.compare(sweep.out, tmp / "better")
    assert not better.regressions and [c.verdict for c in better.changes] == ["improvement"]


def test_regress_flags_failures_and_missing_items(swept, tmp_path):
    sweep, _ = swept
    out = tmp_path / "cur"
    shutil.copytree(sweep.out, out)
    store = res.Results(out)
    store.write(runner.failed_row(sweep.items[0], sweep.name, "boom"), [])
    next((out / "runs").glob(f"*/{sweep.items[1].work_id}.parquet")).unlink()
    measures = sorted(c.measure for c in regress.compare(sweep.out, out).regressions)
    assert measures == ["missing", "status"]


def test_regress_counts_add_up_and_list_new_items(swept, tmp_path):
    """Issue 22: '4 work items compared, 20 regressions' against a smaller sweep, and '1 new'
    never listed. Every baseline item is compared or missing; new items are listed."""
    sweep, _ = swept
    fewer = tmp_path / "fewer"
    shutil.copytree(sweep.out, fewer)
    for item in sweep.items[1:]:
        next((fewer / "runs").glob(f"*/{item.work_id}.parquet")).unlink()
    _scaled_copy(fewer, tmp_path / "fewer-worse", 0.9, res.Results(fewer).runs().to_pylist()[0]["method"])
    text = regress.compare(sweep.out, tmp_path / "fewer-worse").markdown()
    assert text.startswith("3 work items in the baseline, 1 in the current results: 1 compared, 2 missing, 0 new. "
                           "3 regressed (2 missing, 1 worse), 0 improved.")
    assert text.count("| regression |") == 3
    back = regress.compare(fewer, sweep.out)
    text = back.markdown()
    assert text.startswith("1 work items in the baseline, 3 in the current results: 1 compared, 0 missing, 2 new. "
                           "0 regressed (0 missing, 0 worse), 0 improved.")
    assert text.count("| new | mnist-cnn |") == 2 and not back.regressions


def test_bad_tolerance_is_a_user_error():
    result = run_script("regress", "--baseline", ".", "--current", ".", "--tolerance", "speed=3%")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "speed=3%" in result.stderr


def test_report_has_plots_and_a_pareto_front(swept):
    sweep, tmp = swept
    page = report.write(sweep.out, tmp / "r" / "report.html")
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1 and "Pareto front" in text and "mnist-cnn" in text
    assert (tmp / "r" / "report_files" / "mnist-cnn.png").read_bytes().startswith(b"\x89PNG")


def test_report_keeps_lossless_apart_one_colour_per_method_and_says_what_was_not_evaluated(swept):
    sweep, tmp = swept
    page = report.write(sweep.out, tmp / "r2" / "report.html").read_text()
    lossless = page.split("<h3>Lossless</h3>")[1]
    assert "<td>lossless</td>" in lossless and "<td>uniform:bits=4</td>" not in lossless
    front = page.split("<h3>Pareto front</h3>")[1].split("<h3>Lossless</h3>")[0]
    assert "<td>lossless</td>" not in front and "<td>uniform:bits=4</td>" in front
    assert "not evaluated in this sweep (mnist-cnn: add their tasks, e.g. tasks: [digits]" in page
    assert "without accuracy tasks" not in page
    runs = report.ok_runs(sweep.out)
    kmeans = [{**runs[0], "params": json.dumps(sweep_spec.parse_spec(t).to_dict())} for t in ("kmeans", "kmeans:k=4")]
    assert {report.method_name(r) for r in kmeans} == {"kmeans"}
    assert [report.setting(r) for r in kmeans] == ["defaults", "k=4"]
    palette = report.colours(runs + kmeans)
    assert len(set(palette.values())) == len(palette) == 3 and palette == report.colours(kmeans + runs)


def test_report_escapes_what_it_shows(swept):
    sweep, tmp = swept
    page = report.write(sweep.out, tmp / "r3" / "report.html", title="<script>x</script>").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_pareto_front_keeps_only_unbeaten_points():
    points = [(4.0, 20.0, "a"), (5.0, 19.0, "b"), (6.0, 30.0, "c"), (6.0, 25.0, "d"), (8.0, 40.0, "e")]
    assert [p[2] for p in report.pareto(points)] == ["a", "c", "e"]


def test_items_asking_for_missing_resources_are_named(swept):
    sweep, _ = swept
    item = sweep.items[0]
    have = {"CPU": 2.0, "GPU": 1.0}
    assert runner._lacking(item, have) is None
    assert runner._lacking(dataclasses.replace(item, resources={"nvenc": 1.0}), have) == "nvenc=1"
    assert runner._lacking(dataclasses.replace(item, resources={"GPU": 2.0}), have) == "GPU=2"


def test_summary_tables_split_evaluated_models_from_the_others(swept):
    sweep, _ = swept
    runs = report.ok_runs(sweep.out)
    (only,) = report.summaries(runs, [1.0])
    assert only.columns[:2] == ["model", "lossless"] and only.rows[0][1].endswith("lossless")
    def judged(r, drop, low, high):
        return dict(r, model="other", worst_drop_pct=drop, worst_drop_low_pct=low, worst_drop_high_pct=high,
                    inputs=5000, metrics=[{"task": "t", "metric": "m", "value": 1.0, "baseline": 1.0, "delta": 0.0,
                                           "drop_pct": 0.0, "primary": True}])

    evaluated = [judged(r, *((0.3, 0.2, 0.4) if "bits=8" in r["method"] else (3.0, 2.5, 3.5))) for r in runs]
    acc, sqnr = report.summaries(runs + evaluated, [0.5, 5.0])
    assert acc.columns == ["model", "drop <= 0.5%", "drop <= 5%"] and acc.rows[0][0] == "other"
    assert "bits=8" in acc.rows[0][1] and "bits=4" in acc.rows[0][2]
    assert sqnr.rows[0][0] == "mnist-cnn"
    # judged by the pessimistic end: a point drop of 0.3% with an interval up to 0.6% is not within 0.5%;
    # an interval wider than the budget makes it unresolvable
    (acc, _) = report.summaries(runs + [judged(r, 0.3, 0.0, 0.6) for r in runs], [0.5, 5.0])
    assert acc.rows[0][1] == "not resolvable with 5,000 inputs" and "bits=" in acc.rows[0][2]
    (acc, _) = report.summaries(runs + [judged(r, 0.3, 0.15, 0.55) for r in runs], [0.5])
    assert acc.rows[0][1] == "-"


def test_overrides_reach_the_tensors(tmp_path, mnist_path):
    (tmp_path / "s.yaml").write_text("models: [mnist-cnn]\nmethods:\n  - method: uniform\n    params: {bits: [4]}\n"
                                     "    overrides: {'fc*.weight': 'uniform:bits=8'}\n")
    (item,) = sweep_spec.load(tmp_path / "s.yaml").items
    run_row, tensors = runner.execute(item, "s")
    assert run_row["status"] == "ok" and json.loads(run_row["overrides"])[0][0] == "fc*.weight"
    by_name = {t["tensor"]: t["tensor_method"] for t in tensors}
    fc = [n for n in by_name if n.startswith("fc") and n.endswith(".weight")]
    assert fc and all("bits=8" in by_name[n] for n in fc)
    assert any("bits=4" in m for n, m in by_name.items() if n not in fc)
