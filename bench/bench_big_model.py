"""A generated 7B-parameter bf16 model (Llama-7B shapes, a Hugging Face folder of sharded
safetensors, about 13.5 GB) compressed and decompressed on this machine: peak memory and time
of each, next to safetensors reading and writing the same shards in the same run.

    nice -n 10 python bench/bench_big_model.py [--layers 32] [--dir /work/bigmodel] [--spec uniform:bits=8]
                                               [--baseline /path/to/older/checkout] [--steps compress] [--keep]
                                               [--suffix=-b]

The weights are Gaussian random numbers (a generator's, not a trained model's: sizes and
ratios are not those of a real model; memory and time are what this measures). Results are
saved after every step, so a run stopped early keeps what it measured. Each
step runs in a fresh process that reports its peak resident memory (VmHWM, file-backed pages
included) above its resident set before the step, its wall seconds and its CPU seconds (all
its threads), and where the main thread's wall time went: on a core, waiting for one (runnable,
/proc/self/task/PID/schedstat) and blocked (neither: reading, writing, fsync, which is timed
apart, waiting for its worker threads), the bytes it made the storage read and write
(/proc/self/io) and its major page faults. The folder is deleted afterwards unless --keep
(then a later run with the same --dir and --layers reuses the model: generating it takes minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HIDDEN, INTER, VOCAB = 4096, 11008, 32000
SHARD = 5 << 30  # bytes per shard at most, like transformers' save_pretrained for 7B models

CHILD = r"""
import json, os, resource, sys, time
from zoocodec.pipeline import core

step, src, dst, spec = sys.argv[1:5]

def status_kib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))

def run():
    if step == "compress":
        core.compress(src, dst, spec)
    elif step == "decompress":
        core.decompress(src, dst)
    elif step == "safetensors":  # the peer: every shard loaded whole and saved again
        from pathlib import Path
        from safetensors.torch import load_file, save_file
        Path(dst).mkdir()
        for shard in sorted(Path(src).glob("*.safetensors")):
            save_file(load_file(shard), str(Path(dst) / shard.name), metadata={"format": "pt"})

def io():
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}

def sched():  # the main thread's (seconds on a core, seconds runnable and waiting for one)
    with open(f"/proc/self/task/{os.getpid()}/schedstat") as f:
        on, waiting, _ = f.read().split()
    return int(on) / 1e9, int(waiting) / 1e9

fsync_s = [0.0]  # the time spent flushing the output to storage (os.fsync, as fsutil calls it)
plain_fsync = os.fsync

def timed_fsync(fd):
    t = time.perf_counter()
    try:
        return plain_fsync(fd)
    finally:
        fsync_s[0] += time.perf_counter() - t

os.fsync = timed_fsync
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status_kib("VmRSS:")
io0, s0, r0 = io(), sched(), resource.getrusage(resource.RUSAGE_SELF)
t, c = time.perf_counter(), time.process_time()
run()
wall, cpu = time.perf_counter() - t, time.process_time() - c
io1, s1, r1 = io(), sched(), resource.getrusage(resource.RUSAGE_SELF)
on, waiting = s1[0] - s0[0], s1[1] - s0[1]
print(json.dumps({"base_kib": base, "peak_kib": status_kib("VmHWM:"), "seconds": wall, "cpu_seconds": cpu,
                  "main_thread": {"on_core_s": on, "runnable_waiting_for_a_core_s": waiting,
                                  "blocked_s": wall - on - waiting, "of_which_fsync_s": fsync_s[0]},
                  "storage_read_bytes": io1["read_bytes"] - io0["read_bytes"],
                  "storage_write_bytes": io1["write_bytes"] - io0["write_bytes"],
                  "major_page_faults": r1.ru_majflt - r0.ru_majflt,
                  "voluntary_switches": r1.ru_nvcsw - r0.ru_nvcsw,
                  "involuntary_switches": r1.ru_nivcsw - r0.ru_nivcsw}))
"""


def shapes(layers: int) -> dict[str, tuple[int, ...]]:
    """Llama-7B's tensors (32 layers: 6.74 B parameters)."""
    out = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{name}.weight"] = (HIDDEN, HIDDEN)
        out[p + "mlp.gate_proj.weight"] = (INTER, HIDDEN)
        out[p + "mlp.up_proj.weight"] = (INTER, HIDDEN)
        out[p + "mlp.down_proj.weight"] = (HIDDEN, INTER)
        out[p + "input_layernorm.weight"] = (HIDDEN,)
        out[p + "post_attention_layernorm.weight"] = (HIDDEN,)
    out["model.norm.weight"] = (HIDDEN,)
    out["lm_head.weight"] = (VOCAB, HIDDEN)
    return out


def generate(folder: Path, layers: int) -> dict:
    """Write the model folder shard by shard, each tensor generated when the writer asks for it."""
    import torch

    from zoocodec.pipeline.modelio import LazyTensors, _write_safetensors

    def make(name: str) -> torch.Tensor:
        shape = kinds[name][1]
        if len(shape) == 1:
            return torch.ones(shape, dtype=torch.bfloat16)
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        w = torch.empty(shape, dtype=torch.bfloat16)
        for i in range(0, shape[0], 1024):  # fp32 in blocks, then bf16
            block = torch.randn((min(1024, shape[0] - i), shape[1]), generator=g).mul_(0.02)
            w[i : i + block.shape[0]] = block.to(torch.bfloat16)
        return w

    all_shapes = shapes(layers)
    kinds = {n: (torch.bfloat16, s) for n, s in all_shapes.items()}
    shards, current, size = [], [], 0
    for name, shape in all_shapes.items():
        nbytes = 2 * int(torch.tensor(shape).prod())
        if current and size + nbytes > SHARD:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    folder.mkdir(parents=True)
    weight_map, total = {}, 0
    for i, names in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(LazyTensors({n: kinds[n] for n in names}, make), folder / fname, {}, {},
                           metadata={"format": "pt"})
        weight_map.update({n: fname for n in names})
        total += sum(2 * int(torch.tensor(kinds[n][1]).prod()) for n in names)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN, "intermediate_size": INTER,
        "num_hidden_layers": layers, "vocab_size": VOCAB, "torch_dtype": "bfloat16"}, indent=2))
    params = sum(int(torch.tensor(s).prod()) for s in all_shapes.values())
    largest = max(2 * int(torch.tensor(s).prod()) for s in all_shapes.values())
    return {"params": params, "bytes": total, "largest_tensor_bytes": largest, "shards": len(shards)}


def step(name: str, src: Path, dst: Path, spec: str = "", root: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    kind = "compress" if name.startswith("compress") else name
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(src), str(dst), spec], capture_output=True,
                         text=True, env=env, check=False, cwd=root)  # (python -c puts the cwd first on the path)
    if out.returncode:
        raise RuntimeError(f"{name} failed: {out.stderr.strip().splitlines()[-3:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from bench_common import machine, save

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32, help="decoder layers (32: 6.74 B parameters)")
    ap.add_argument("--dir", default="/work/bigmodel")
    ap.add_argument("--spec", default="uniform:bits=8")
    ap.add_argument("--name", default="big_model")
    ap.add_argument("--baseline", help="another checkout (e.g. an older commit's worktree, its engine built) whose "
                                       "compress runs too, as step compress_baseline, on the same model")
    ap.add_argument("--suffix", default="", help="appended to the results file's date (a second run that day)")
    ap.add_argument("--steps", default="safetensors,compress,decompress",
                    help="which steps to run, in this order (decompress needs compress)")
    ap.add_argument("--keep", action="store_true", help="keep the model folder for a later run (and reuse one "
                                                        "this bench made before with the same --layers)")
    args = ap.parse_args()
    work = Path(args.dir)
    model, zc, back, peer = work / "model", work / "model.zc", work / "back", work / "peer"
    made = work / "model.json"  # written last by generate: the folder is whole
    info = json.loads(made.read_text()) if args.keep and made.is_file() else None
    if info is not None and info.get("layers") != args.layers:
        info = None
    if info is None and work.exists():
        shutil.rmtree(work)
    try:
        if info is None:
            t = time.perf_counter()
            info = generate(model, args.layers)
            info["generate_seconds"] = time.perf_counter() - t
            info["layers"] = args.layers
            made.write_text(json.dumps(info))
        print(f"generated {info['params'] / 1e9:.2f} B parameters, {info['bytes'] / 2**30:.2f} GiB in "
              f"{info['shards']} shards, {info['generate_seconds']:.0f} s", flush=True)
        rows = {}
        steps = args.steps.split(",")
        plan = [(n, s, d) for n, s, d in (("safetensors", model, peer), ("compress", model, zc),
                                          ("decompress", zc, back)) if n in steps]
        if args.baseline:
            plan.insert(1, ("compress_baseline", model, work / "baseline.zc"))
        for name, src, dst in plan:
            load = os.getloadavg()
            m = step(name, src, dst, args.spec, Path(args.baseline) if name == "compress_baseline" else ROOT)
            m["load_average"] = {"before": load, "after": os.getloadavg()}
            growth = (m["peak_kib"] - m["base_kib"]) * 1024
            rows[name] = {**m, "peak_bytes": growth, "peak_multiple_of_largest_tensor":
                          growth / info["largest_tensor_bytes"], "peak_fraction_of_model": growth / info["bytes"]}
            print(f"{name:>12}: peak {growth / 2**30:.2f} GiB ({rows[name]['peak_multiple_of_largest_tensor']:.2f}x "
                  f"the largest tensor), {m['seconds']:.0f} s, {m['cpu_seconds']:.0f} CPU s", flush=True)
            if name == "safetensors":
                shutil.rmtree(peer)
            if name == "compress_baseline":
                rows[name]["file_bytes"] = (work / "baseline.zc").stat().st_size
                (work / "baseline.zc").unlink()
            if name == "compress":
                rows[name]["file_bytes"] = zc.stat().st_size
                rows[name]["ratio"] = info["bytes"] / zc.stat().st_size
                if "compress_baseline" in rows:
                    rows[name]["speed_vs_baseline"] = rows["compress_baseline"]["seconds"] / m["seconds"]
            if name == "decompress":
                rows[name]["output_files"] = {p.name: p.stat().st_size for p in sorted(back.iterdir())}
                shutil.rmtree(back)
            if name != "safetensors" and "safetensors" in rows:
                rows[name]["peak_vs_safetensors"] = rows[name]["peak_bytes"] / rows["safetensors"]["peak_bytes"]
                rows[name]["seconds_vs_safetensors"] = rows[name]["seconds"] / rows["safetensors"]["seconds"]
                rows[name]["cpu_vs_safetensors"] = rows[name]["cpu_seconds"] / rows["safetensors"]["cpu_seconds"]
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            path = save(args.name, {"machine": {**machine(("numpy", "torch", "safetensors")), "memory_bytes": memory},
                                    "spec": args.spec, "model": info, "steps": rows,
                                    "note": "Llama-7B shapes, generated Gaussian bf16 weights (std 0.02, norms 1); "
                                            "each step in a fresh process, peak = VmHWM above the resident set "
                                            "before the step; run at nice 10 on a 2-core machine shared with "
                                            "other work"})
            if args.suffix:
                path = path.replace(path.with_name(f"{path.stem}{args.suffix}.json"))
        if plan:
            print(path)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for p in (back, peer):
                shutil.rmtree(p, ignore_errors=True)
            for p in (zc, work / "baseline.zc"):
                p.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
