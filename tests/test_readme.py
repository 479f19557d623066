"""Every measured number the README (and docs/cpu-speed.md's lossless table) quotes comes from one
results file, so two places cannot disagree (issue 22: fmnist-cnn at 8 bits was 3.80x in one table
and 4.02x in another). When a benchmark is rerun, its file and the README change together, or this
test fails."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CPU_SPEED = (ROOT / "docs" / "cpu-speed.md").read_text()
RESULTS = ROOT / "bench" / "results"


def _row(first_cell: str, text: str = README) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {first_cell}")]
    return line


def test_the_presets_table_is_the_presets_results_file():
    points = [p for f in sorted(RESULTS.glob("presets-*.json")) for p in json.loads(f.read_text())["points"]]
    assert {p["model"] for p in points} == {"mnist-cnn", "fmnist-cnn", "effnet-lite0", "minilm"}
    for p in points:
        if p["metric"] == "kl":
            cell = f"{p['ratio']:.2f}x, KL {p['loss']:.4f} [{p['loss_low']:.4f}, {p['loss_high']:.4f}]"
        else:
            cell = (f"{p['ratio']:.2f}x, loss {100 * p['loss']:.2f}% "
                    f"[{100 * p['loss_low']:.2f}, {100 * p['loss_high']:.2f}]")
        assert f"| {cell} |" in _row(f"{p['model']} ("), (p["model"], p["preset"], cell)


def test_automatic_mode_sizes_and_times_are_the_head_to_head_results_file():
    models = json.loads((RESULTS / "head_to_head.json").read_text())["models"]
    timed = _row("accuracy-constrained compression")
    for m in models:
        stands = _row(f"smaller than NNCodec by 1.5x, {m['model']} |")
        auto = {r["setting"]: r for r in m["rows"] if r["tool"] == "zoocodec auto"}
        for setting, r in auto.items():
            assert f"{r['bits_per_weight']:.3f}" in stands, (m["model"], setting)
        minutes = round(auto["target=1.0%"]["encode_s"] / 60)
        assert f"{minutes} on {m['model']}" in timed or f"{minutes} minute on {m['model']}" in timed, m["model"]


def test_no_second_table_of_automatic_mode_or_uniform_results():
    """The accuracy/ratio table of bench/bench_eval.py (an older run) lives in docs/evaluation.md only."""
    assert "| model (metric, baseline) | uniform 8 bits |" not in README
    assert "28.5x" not in README and "3.80x" not in README


def test_the_override_rule_as_stated(tmp_path):
    """README: a pattern names every tensor it matches (1-D ones too), integer tensors always stay
    lossless (issue 22: `*embeddings*` was said to leave minilm's LayerNorm and position_ids alone)."""
    import numpy as np
    import torch

    import zoocodec

    g = np.random.default_rng(0)
    model = {"embeddings.word_embeddings.weight": torch.from_numpy(g.normal(0, 0.05, (300, 48)).astype(np.float32)),
             "embeddings.LayerNorm.bias": torch.from_numpy(g.normal(0, 0.05, 48).astype(np.float32)),
             "embeddings.position_ids": torch.arange(512).reshape(1, 512)}
    methods = {}
    for pattern in ("*embeddings*", "*word_embeddings*"):
        zoocodec.compress(model, tmp_path / "m.zc", "uniform:bits=6", overrides={pattern: "uniform:bits=8"})
        methods[pattern] = {r["name"].split(".")[1]: r["method"].split(",")[0].removesuffix(":coder=float")
                            for r in zoocodec.inspect(tmp_path / "m.zc")["tensors"]}
    assert methods["*embeddings*"] == {"word_embeddings": "uniform:bits=8", "LayerNorm": "uniform:bits=8",
                                       "position_ids": "lossless"}
    assert methods["*word_embeddings*"] == {"word_embeddings": "uniform:bits=8", "LayerNorm": "lossless",
                                            "position_ids": "lossless"}
    assert "`*embeddings*` on minilm also quantizes the\nembeddings' LayerNorm weight and bias" in README


@pytest.mark.parametrize("name, bits", [("outside_zoo-2026-12-04.json", True),
                                        ("outside_zoo-onnx-2026-12-05l.json", False),
                                        ("outside_zoo-onnx-0.1-2026-12-05l.json", False),
                                        ("outside_zoo-onnx-splits-2026-12-05l.json", False)])
def test_the_outside_zoo_ratios_and_split_counts_are_the_outside_zoo_results_files(name, bits):
    """The row's state dicts (12-04: sizes, ratios, splits) and ONNX files (12-05l: ratios, splits) are the files'."""
    results = json.loads((RESULTS / name).read_text())
    stands = _row("smaller than NNCodec by 1.3x, outside the zoo")
    assert name.removesuffix(".json").split("-splits")[0].split("-0.1")[0] in stands
    for m in results["models"]:
        for a in m["auto"]:
            if bits:
                assert f"{a['bits_per_weight']:.3f}" in stands, (m["model"], a["target_pct"])
            if a["ratio_at_same_kl"] is not None:
                assert f"{a['ratio_at_same_kl']:.2f}x" in stands, (m["model"], a["target_pct"])
    for s in results["splits"]:
        assert f"{s['holds']} of {s['count']}" in stands, s["model"]


def test_the_lossless_table_is_the_lossless_results_file():
    """docs/cpu-speed.md's lossless rows (issues 24/25: the float-plane coder against zipnn) are the results file's."""
    rows = json.loads((RESULTS / "lossless-2026-12-04b.json").read_text())["rows"]
    short = {"float32": "fp32", "bfloat16": "bf16"}
    for r in rows:
        cell = (f"| {r['size_zipnn_over_ours']:.4f} | {r['decode_cpu_zipnn_over_ours']:.2f} "
                f"({r['decode_speed_ours_over_zipnn']:.2f}) | {r['encode_cpu_zipnn_over_ours']:.2f} "
                f"({r['encode_speed_ours_over_zipnn']:.2f}) |")
        row = _row(f"{r['model']} | {short[r['dtype']]} | {r['threads']} |", CPU_SPEED)
        assert cell in row, (r["model"], r["dtype"], cell)


def test_the_language_model_rows_are_the_llm_head_to_head_results_file():
    r = json.loads((RESULTS / "llm_head_to_head-2026-12-05l.json").read_text())
    quantizers, nncodec = _row("language models: 1.3x the LLM quantizers"), _row("language models: 1.5x NNCodec")
    assert f"{r['windows']} of the 147 windows" in quantizers
    for budget, best in r["smallest_within"].items():
        for key, row in (("zoocodec auto", quantizers), ("best peer", quantizers), ("nncodec", nncodec)):
            if best[key] is not None:
                assert f"{best[key]['bits_per_weight']:.3f}" in row, (budget, key)
        for key, row in (("auto vs best peer", quantizers), ("auto vs nncodec", nncodec)):
            if best[key] is not None:
                assert f"{best[key]:.2f}x" in row, (budget, key)


def test_the_lossless_size_and_codec_rows_are_the_latest_idle_lossless_file():
    rows = json.loads((RESULTS / "lossless-2026-12-05g-idle.json").read_text())["rows"]
    huffman = [r for r in rows if r["planes"] == "huffman"]

    def span(values, digits):
        return f"{min(values):.{digits}f}-{max(values):.{digits}f}x"

    size = _row("lossless smaller than zipnn")
    assert span([r["size_zipnn_over_ours"] for r in huffman if r["model"] != "minilm"], 4) in size
    assert span([r["size_zipnn_over_ours"] for r in rows if r["planes"] == "rans"], 4) in size
    for r in huffman:
        if r["model"] == "minilm":
            assert f"{r['size_zipnn_over_ours']:.3f}x {'bf16' if r['dtype'] == 'bfloat16' else 'fp32'}" in size
    speed = _row("lossless decode at zipnn's speed")
    decode = [span([r["decode_cpu_zipnn_over_ours"] for r in huffman if r["threads"] == t], 2) for t in (1, 2)]
    assert " / ".join(decode) in speed
    assert span([r["encode_cpu_zipnn_over_ours"] for r in huffman], 2) in speed


def test_the_smollm2_decode_numbers_are_its_results_file():
    for name in ("nofill", "gate"):
        run = json.loads((RESULTS / f"decode-2026-12-06-smollm2-xeon-{name}.json").read_text())
        up = run["speedup_2_over_1_threads"]
        assert (f"{up['8-bit load']:.2f}x 8-bit, {up['lossless bfloat16 load']:.2f}x bf16, "
                f"{up['lossless float32 load']:.2f}x fp32") in _row("2 threads 1.8x faster than 1")
    d = json.loads((RESULTS / "decode-2026-12-06-smollm2-xeon-gate.json").read_text())
    rows = {(r["what"], r["threads"]): r["decode_speed_ours_over_zipnn"] for r in d["rows"] if "zipnn_bytes" in r}
    bf, fp = ([rows[f"lossless {t} load", n] for n in (1, 2)] for t in ("bfloat16", "float32"))
    assert (f"bf16 {bf[0]:.2f}x / {bf[1]:.2f}x, **fp32 {fp[0]:.2f}x / {fp[1]:.2f}x**"
            in _row("lossless decode at zipnn's speed"))


def test_the_encode_and_big_model_rows_are_their_idle_results_files():
    (e,) = json.loads((RESULTS / "encode-2026-12-05-idle.json").read_text())["rows"]
    row = _row("encode at zipnn's speed")
    assert f"**{e['speed_vs_zipnn_in_memory']['uniform8']:.2f}x** zipnn's compress in memory" in row
    assert f"**{e['cpu_speed_vs_zipnn_in_memory']['uniform8']:.2f}x** in CPU s" in row
    assert f"{e['speed_vs_zipnn_end_to_end']['uniform8']:.2f}x end to end" in row
    lossless = e["speed_vs_zipnn_in_memory"]["lossless"], e["cpu_speed_vs_zipnn_in_memory"]["lossless"]
    assert f"**{lossless[0]:.2f}x** ({lossless[1]:.2f}x CPU)" in row
    steps = json.loads((RESULTS / "big_model-2026-12-05-idle.json").read_text())["steps"]
    row = _row("a 7B model compressed in 240 s")
    c, d = steps["compress"], steps["decompress"]
    gib = c["peak_bytes"] / 2**30
    assert f"**{c['seconds']:.0f} s** wall ({c['cpu_seconds']:.0f} CPU s, peak {gib:.2f} GiB)" in row
    assert f"{d['seconds']:.0f} s with a peak of **{d['peak_multiple_of_largest_tensor']:.2f}x**" in row


def test_every_relative_link_in_the_readme_and_docs_resolves():
    """Pages move between README and docs/ (the README's history went to docs/results-history.md)."""
    import re

    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path = target.partition("#")[0]
            if path and not re.match(r"[a-z]+:", target) and not (page.parent / path).exists():
                broken.append(f"{page.name}: {target}")
    assert not broken
