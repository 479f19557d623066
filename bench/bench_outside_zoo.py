"""Automatic mode on models the zoo does not have, run as a user runs it, against NNCodec at equal output KL.

    python bench/bench_outside_zoo.py                          # resnet and vit, budgets 1%, 0.5%, 0.1%
    python bench/bench_outside_zoo.py --models vit --splits 10 # the budget out of sample over 10 seeded splits

The models (bench/bench_outside_zoo_nets.py: a ResNet-style CNN and a small Vision Transformer,
trained briefly on Fashion-MNIST and committed under bench/outside_zoo/) are state dicts with a
factory module, so automatic mode sees them as any user's model:

    zoocodec compress resnet.safetensors -o resnet.zc --target-loss 1% --inputs calib.npy \\
        --module bench_outside_zoo_nets:resnet --output-kind logits --min-size 64

calib.npy holds Fashion-MNIST *train* images (automatic mode splits them itself into
calibration/search and held-back verification). Every file, automatic mode's and NNCodec's
(bench_h2h_run.run_nncodec, its own venv), is then judged on Fashion-MNIST *test* images that
neither calibration nor search saw: output KL against the original with its 95% interval, by
its pessimistic end ("1%" is KL 0.01 nats, as automatic mode budgets a model outside the zoo).
Sizes: the whole .zc against NNCodec's whole bitstream, over the float parameters; both quantize
every tensor (zoocodec: every tensor of at least 64 weights, as bench_head_to_head.py runs it).

`--onnx` runs the same on the models exported to ONNX (torch.onnx.export, the legacy exporter: `dynamo=False`,
opset 17, a dynamic batch axis; BatchNorm folded into the convolutions), compressed as a user's ONNX file
(`zoocodec compress model.onnx --target-loss X --inputs calib.npy --output-kind logits`, no --module: data-aware
rounding on layer inputs captured with onnxruntime, zoocodec.eval.onnxcapture), NNCodec on the same tensors.

`--splits N` compresses one model N times through the Python API with `seed=0..N-1` (the
seed of automatic mode's calibration/held-back split, which the CLI does not expose) and
counts the files whose KL on the never-seen test images stays within the budget at the
pessimistic end of its interval.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_h2h_frontier import bits_at, compare, loss_key
from bench_h2h_render import _write, fmt, per_tool_table, summary_text, table
from bench_h2h_run import RESULTS, ROOT, Row, Subject, machine, nncodec_python, run_nncodec, run_zoocodec, sqnr_db

NETS = ROOT / "bench" / "outside_zoo"
MODULES = {"resnet": "bench_outside_zoo_nets:resnet", "vit": "bench_outside_zoo_nets:vit"}
CALIB = 1000  # Fashion-MNIST train images given as --inputs (automatic mode holds half of them back)
JUDGED = 5000  # Fashion-MNIST test images every file is judged on
TARGETS = (1.0, 0.5, 0.1)  # % (KL 0.01, 0.005, 0.001 nats)
QPS = [-42, -38, -34, -30, -26, -22, -18]  # NNCodec's grid: brackets KL 0.0005-0.05 on both models
MIN_SIZE = 64
DATE = time.strftime("%Y-%m-%d")


def images(split: str, count: int, seed: int) -> np.ndarray:
    from zoocodec.eval.data import fashion_mnist

    x = fashion_mnist.__wrapped__(split)[0]
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return x[pick].numpy().copy()


class PairJudge:
    """bench_h2h_run.Judge for a model outside the zoo: output KL on the judged .npy, with its interval."""

    def __init__(self, subject: Subject, original: Path, judged: Path, module: str):
        from zoocodec.eval.anymodel import PairEvaluator

        self.subject = subject
        self.ev = PairEvaluator(original, judged, module, "logits")
        self.task, self.metric, self.fidelity = self.ev.task, self.ev.task.primary, "kl"
        self.baseline = {k: p.baseline for k, p in self.ev.compare(None).items()}
        self.inputs, self.seconds = len(self.ev.ref_out), 0.0

    def describe(self) -> str:
        return f"output KL on {self.inputs:,} Fashion-MNIST test images neither calibration nor search saw"

    def __call__(self, decoded: dict[str, torch.Tensor]) -> dict:
        from zoocodec.eval.evaluate import metric_row

        t0 = time.perf_counter()
        full = self.subject.with_floats(decoded)
        paired = self.ev.compare(full)
        m = metric_row(self.subject.name, self.task.name, self.metric, paired[self.metric], True, True)
        scores = {k: p.value for k, p in paired.items()}
        self.seconds += time.perf_counter() - t0
        return {"sqnr_db": sqnr_db(self.subject.floats, {n: full[n] for n in self.subject.float_names}),
                "scores": scores, "metric": scores[self.metric], "loss_pct": 100 * m.loss,
                "loss_low_pct": 100 * m.loss_low, "loss_high_pct": 100 * m.loss_high, "inputs": m.n,
                "fidelity": scores["kl"], "distortion": scores["kl"]}


def subject_of(name: str, original: Path | None = None) -> Subject:
    """The model's tensors: its state dict, or those of `original` (its ONNX export)."""
    from safetensors.torch import load_file

    from zoocodec.eval.evaluate import load_weights

    tensors = load_weights(original) if original else load_file(str(NETS / f"{name}.safetensors"))
    return Subject(name, tensors, [n for n, t in tensors.items() if t.is_floating_point()])


def export_onnx(name: str, path: Path) -> Path:
    """The model exported to ONNX as a user would: the legacy exporter, a dynamic batch axis."""
    import warnings

    from safetensors.torch import load_file

    import bench_outside_zoo_nets as nets

    net = nets.FACTORIES[name]()
    net.load_state_dict(load_file(str(NETS / f"{name}.safetensors")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(2, 1, 28, 28),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


def cli_compress(name: str, calib: Path, target: float, path: Path, log, original: Path | None = None) -> dict:
    """`zoocodec compress --target-loss` as a user types it (on `original`, an ONNX file, where given); its
    --json summary."""
    model = ["compress", str(original)] if original else ["compress", str(NETS / f"{name}.safetensors"),
                                                          "--module", MODULES[name]]
    cmd = [str(Path(sys.executable).with_name("zoocodec")), *model,
           "-o", str(path), "--target-loss", f"{target}%", "--inputs", str(calib),
           "--output-kind", "logits", "--min-size", str(MIN_SIZE), "--json"]
    env = dict(os.environ)
    env["PYTHONPATH"] = ":".join(p for p in (str(ROOT / "bench"), env.get("PYTHONPATH", "")) if p)
    log(" ".join(cmd[1:]))
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)  # progress: our stderr
    if done.returncode != 0:
        raise RuntimeError(f"zoocodec compress failed with exit {done.returncode} (its stderr is above)")
    return json.loads(done.stdout)


def api_compress(name: str, calib: Path, target: float, path: Path, log, original: Path | None,
                 rounding: str) -> dict:
    """The same through the Python API, with `rounding` (the CLI has no switch for it): the summary's fields."""
    from zoocodec.tuning.auto import auto_compress

    sys.path.insert(0, str(ROOT / "bench"))  # the factory module, as PYTHONPATH gives it to the CLI
    r = auto_compress(original or NETS / f"{name}.safetensors", path, target / 100, inputs=calib,
                      module=None if original else MODULES[name], output="logits", min_size=MIN_SIZE,
                      rounding=rounding, log=log)
    return {"value": r.value, "loss_high": r.loss_high, "rounding": rounding}


def bench_model(name: str, work: Path, log, targets=TARGETS, onnx: bool = False, rounding: str = "gptq") -> dict:
    original = export_onnx(name, work / f"{name}.onnx") if onnx else None
    subject = subject_of(name, original)
    calib, judged = work / "calib.npy", work / "judged.npy"
    np.save(calib, images("train", CALIB, 0))
    np.save(judged, images("test", JUDGED, 0))
    judge = PairJudge(subject, original or NETS / f"{name}.safetensors", judged, None if onnx else MODULES[name])
    rows: list[Row] = []
    result = {"model": name, "module": "ONNX export (onnxruntime)" if onnx else MODULES[name],
              "params": subject.params, "evaluation": judge.describe(),
              "calibration": f"--inputs: {CALIB:,} Fashion-MNIST train images (seed 0); automatic mode splits them",
              "date": machine()["date"], "baseline": judge.baseline, "failures": [], "auto": []}
    result["rounding"] = rounding
    if nncodec_python():
        log(f"{name}: NNCodec qp {QPS}")
        rows += run_nncodec(subject, judge, QPS, work)
    else:
        result["nncodec_skipped"] = "no NNCodec environment (run bench/peers/setup_nncodec.sh)"
    for target in targets:
        summary: dict = {}

        def write(path, target=target, summary=summary):
            say = lambda m: log(f"{name}: {m}")  # noqa: E731
            summary.update(cli_compress(name, calib, target, path, say, original) if rounding == "gptq" else
                           api_compress(name, calib, target, path, say, original, rounding))

        log(f"{name}: automatic mode {target}%")
        try:
            row = run_zoocodec(subject, judge, "zoocodec auto", f"target={target}%", write, work)
        except Exception as e:  # one budget's failure (e.g. not resolvable) must not cost the others
            result["failures"].append({"tool": "zoocodec auto", "setting": f"target={target}%", "error": str(e)})
            log(f"{name}: {target}% FAILED: {e}")
            continue
        rows.append(row)
        nnc = [r for r in rows if r.tool == "NNCodec"]
        at_own, how = bits_at(nnc, loss_key, loss_key(row))  # NNCodec at the file's own judged KL bound
        result["auto"].append({"target_pct": target, "bits_per_weight": row.bits_per_weight, "seconds": row.encode_s,
                               "reported": summary, "judged": row.quality,
                               "within_on_judged": row.quality["loss_high_pct"] <= target,
                               "nncodec_bpw_at_same_kl": at_own, "nncodec_how": how,
                               "ratio_at_same_kl": at_own / row.bits_per_weight if at_own else None})
        log(f"{name}: {target}%: {row.bits_per_weight:.3f} bits/weight, judged KL {row.quality['fidelity']:.5f} "
            f"[{row.quality['loss_low_pct'] / 100:.5f}, {row.quality['loss_high_pct'] / 100:.5f}], "
            f"NNCodec {fmt(at_own)} ({how}) at that bound")
    result["evaluation_s"] = judge.seconds
    result["rows"] = [r.to_dict() for r in rows]
    result["compare"] = compare(rows)
    result["lossless"] = []
    return result


def splits(name: str, seeds: list[int], target: float, work: Path, log, onnx: bool = False) -> dict:
    """Seeded splits of the same --inputs: is each file within budget on never-seen inputs?"""
    from zoocodec.tuning.auto import auto_compress

    original = export_onnx(name, work / f"{name}.onnx") if onnx else None
    subject = subject_of(name, original)
    calib, judged = work / "calib.npy", work / "judged.npy"
    np.save(calib, images("train", CALIB, 0))
    np.save(judged, images("test", JUDGED, 0))
    judge = PairJudge(subject, original or NETS / f"{name}.safetensors", judged, None if onnx else MODULES[name])
    sys.path.insert(0, str(ROOT / "bench"))  # the factory module, as PYTHONPATH gives it to the CLI
    out = []
    for seed in seeds:
        path = work / f"seed{seed}.zc"
        t0 = time.perf_counter()
        r = auto_compress(original or NETS / f"{name}.safetensors", path, target / 100, inputs=calib,
                          module=None if onnx else MODULES[name], output="logits", min_size=MIN_SIZE, seed=seed,
                          log=lambda m, s=seed: log(f"seed {s}: {m}"))
        seconds = time.perf_counter() - t0
        import zoocodec

        q = judge(zoocodec.decompress(path))
        entry = {"seed": seed, "seconds": seconds, "bits_per_weight": 8 * path.stat().st_size / subject.params,
                 "held_back": {"value": r.value, "loss": r.loss, "loss_high": r.loss_high,
                               "inputs": r.inputs, "within": r.within},
                 "judged": q, "holds": q["loss_high_pct"] <= target}
        out.append(entry)
        log(f"seed {seed}: {entry['bits_per_weight']:.3f} bits/weight; held-back KL {r.value:.5f} (bound "
            f"{r.loss_high:.5f}); never-seen KL {q['fidelity']:.5f} [{q['loss_low_pct'] / 100:.5f}, "
            f"{q['loss_high_pct'] / 100:.5f}]: {'holds' if entry['holds'] else 'OVER BUDGET'}")
        path.unlink()
    return {"model": name, "target_pct": target, "splits": out, "holds": sum(e["holds"] for e in out),
            "count": len(out), "judged_on": judge.describe(), "calibration": f"{CALIB:,} train images, split by seed"}


def merged(old: dict | None, new: dict) -> dict:
    """Two runs' splits of one model and budget as one entry (runs in parallel take seeds apart)."""
    if not old or (old["model"], old["target_pct"]) != (new["model"], new["target_pct"]):
        return new
    seeds = {e["seed"]: e for e in old["splits"] + new["splits"]}
    out = [seeds[s] for s in sorted(seeds)]
    return {**new, "splits": out, "holds": sum(e["holds"] for e in out), "count": len(out)}


def markdown(results: dict) -> str:
    m = results["machine"]
    md = ["# Automatic mode outside the zoo vs NNCodec 2.1.3 at equal output KL", "",
          f"{m['date']}, {m['cpu']} ({m['cores']} cores shared with other work), "
          f"{results['seconds'] / 60:.1f} minutes. Models: bench/bench_outside_zoo_nets.py; "
          + ("exported to ONNX (torch.onnx.export, dynamo=False, opset 17; BatchNorm folded), compressed by `zoocodec "
             "compress model.onnx --target-loss X --inputs calib.npy --output-kind logits " if results.get("onnx") else
             "compressed by `zoocodec compress --target-loss X --inputs calib.npy --module ... --output-kind logits ")
          + f"--min-size {MIN_SIZE}` ({CALIB:,} Fashion-MNIST train images), judged on {JUDGED:,} test images neither "
          "calibration nor search saw. KL bounds: the pessimistic end of the 95% interval.", "",
          "| model | budget (KL) | automatic mode bits/weight | KL on its held-back half [95% bound] | KL judged [95%] "
          "| within on judged | NNCodec bits/weight at the judged bound | size vs NNCodec | minutes |",
          "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for model in results["models"]:
        for a in model["auto"]:
            rep, j = a["reported"], a["judged"]
            held = f"{fmt(rep.get('value'), '.5f')} [bound {fmt(rep.get('loss_high'), '.5f')}]"
            md.append(f"| {model['model']} | {a['target_pct'] / 100:g} | {a['bits_per_weight']:.3f} | {held} | "
                      f"{j['fidelity']:.5f} [{j['loss_low_pct'] / 100:.5f}, {j['loss_high_pct'] / 100:.5f}] | "
                      f"{'yes' if a['within_on_judged'] else 'no'} | {fmt(a['nncodec_bpw_at_same_kl'])} "
                      f"({a['nncodec_how']}) | **{fmt(a['ratio_at_same_kl'], '.2f')}x** | {a['seconds'] / 60:.1f} |")
    md.append("")
    for model in results["models"]:
        md += [table(model), "", per_tool_table(model), "", summary_text(model), ""]
    for s in results.get("splits", []):
        md += [f"## The budget out of sample: {s['model']} at KL {s['target_pct'] / 100:g}, {s['count']} seeded splits",
               "", f"Within budget on never-seen inputs (pessimistic bound): **{s['holds']} of {s['count']}** "
               f"({s['judged_on']}; calibration: {s['calibration']}).", "",
               "| seed | bits/weight | held-back KL [bound] | never-seen KL [95%] | holds | minutes |",
               "| ---: | ---: | ---: | ---: | --- | ---: |"]
        md += [f"| {e['seed']} | {e['bits_per_weight']:.3f} | {e['held_back']['value']:.5f} "
               f"[{e['held_back']['loss_high']:.5f}] | {e['judged']['fidelity']:.5f} "
               f"[{e['judged']['loss_low_pct'] / 100:.5f}, {e['judged']['loss_high_pct'] / 100:.5f}] | "
               f"{'yes' if e['holds'] else 'no'} | {e['seconds'] / 60:.1f} |" for e in s["splits"]]
        md.append("")
    return "\n".join(md)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODULES), choices=list(MODULES))
    p.add_argument("--splits", type=int, default=0, help="instead: seeds 0..N-1 of the split, one model, at --target")
    p.add_argument("--seeds", type=int, nargs="+", help="--splits: these seeds only (parallel runs merge into --out)")
    p.add_argument("--targets", type=float, nargs="+", default=list(TARGETS), help="budgets in %% (KL 0.01 at 1%%)")
    p.add_argument("--target", type=float, default=1.0, help="--splits: the budget in % (KL 0.01 nats at 1%%)")
    p.add_argument("--onnx", action="store_true", help="the models exported to ONNX, compressed as ONNX files")
    p.add_argument("--rounding", default="gptq", choices=["gptq", "nearest"],
                   help="automatic mode's rounding (nearest: through the Python API, the CLI has no switch)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    a.out = a.out or RESULTS / f"outside_zoo{'-onnx' if a.onnx else ''}-{DATE}.json"

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="outside-zoo-") as d:
        for name in a.models:
            if a.splits:
                entry = splits(name, a.seeds or list(range(a.splits)), a.target, Path(d), log, a.onnx)
            else:
                entry = bench_model(name, Path(d), log, a.targets, a.onnx, a.rounding)
            # read again just before writing: runs in parallel (other models, other seeds) share the file
            results = json.loads(a.out.read_text()) if a.out.exists() else {"models": [], "splits": []}
            results["machine"], results["nncodec_python"] = machine(), str(nncodec_python() or "")
            results["onnx"] = a.onnx
            if a.splits:
                old = next((s for s in results["splits"] if s["model"] == name), None)
                results["splits"] = [s for s in results["splits"] if s["model"] != name] + [merged(old, entry)]
            else:
                results["models"] = [m for m in results["models"] if m["model"] != name] + [entry]
            results["seconds"] = results.get("seconds", 0) + time.perf_counter() - start
            start = time.perf_counter()
            _write(a.out, json.dumps(results, indent=1, default=str))
            _write(a.out.with_suffix(".md"), markdown(results))
    print(a.out.with_suffix(".md").read_text())
    return results


if __name__ == "__main__":
    main()
