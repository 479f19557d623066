"""Automatic mode keeps the task metric within budget and records what it decided."""
import json

import numpy as np
import pytest
import torch

import zoocodec
from support import DIGITS_MLP, bert_folder, bn_net, digits_mlp, onnx_digits, run_cli
from zoocodec.errors import ZoocodecError
from zoocodec.eval import data
from zoocodec.eval.anymodel import evaluate_pair
from zoocodec.eval.evaluate import evaluator, load_weights, tasks_of
from zoocodec.tuning.auto import (
    STRENGTHS,
    _cheapest_coder,
    _coded,
    _flatten,
    _one_d_where_it_pays,
    auto_compress,
    parse_loss,
    split,
)


def test_parse_loss():
    assert parse_loss("1%") == 0.01 and parse_loss("0.5") == 0.005 and parse_loss(2) == 0.02
    for bad in ("abc", "0%", "100", "-1%"):
        with pytest.raises(ZoocodecError, match="--target-loss"):
            parse_loss(bad)


def test_allocation_strength_flattens_sensitivities():
    sens = {"a": 4.0, "b": 0.0, "c": np.array([1.0, 16.0])}
    half, flat = _flatten(sens, 0.5), _flatten(sens, 0.0)
    assert half["a"] == 2.0 and half["b"] == 0.0 and half["c"].tolist() == [1.0, 4.0]
    assert flat["a"] == 1.0 and flat["b"] == 0.0 and flat["c"].tolist() == [1.0, 1.0]  # 0: does not matter, still


def test_a_1d_tensor_is_lossy_only_where_that_is_smaller():
    from zoocodec.methods import parse_spec

    g = np.random.default_rng(0)
    weights = {"big.bias": torch.from_numpy(g.normal(0, 1, 2048).astype(np.float32)),
               "tiny.bias": torch.from_numpy(g.normal(0, 1, 8).astype(np.float32))}
    coarse, fine = parse_spec("uniform:step=0.05,coder=ctx"), parse_spec("uniform:step=1e-7,coder=ctx")
    exact: dict = {}
    plan = {"big.bias": coarse, "tiny.bias": coarse}
    assert _one_d_where_it_pays(weights, plan, exact) == plan and set(exact) == {"big.bias", "tiny.bias"}
    # finer than the floats themselves: the lossless coding is smaller, the tensors stay exact
    assert _one_d_where_it_pays(weights, {"big.bias": fine, "tiny.bias": fine}, exact) == {}


def test_a_coder_that_cannot_code_the_levels_is_left_out_of_the_pricing():
    """A tiny step at a tight budget gives levels beyond cabac's 2^29: the other coders are priced
    and one of them written, where the run used to end with cabac's SpecError."""
    from zoocodec.methods import parse_spec

    levels = np.random.default_rng(0).normal(0, 1e9, (64, 64)).astype(np.int64)
    said = []
    spec = _cheapest_coder(parse_spec("rdoq:bits=8"), lambda s: s.coder.model(levels).bits(levels), said.append)
    assert spec.coder.name in ("ans", "ctx")
    assert any("cabac" in line and "left out" in line for line in said)


def test_a_coder_per_tensor_counts_the_bytes_each_coder_writes():
    """Quantized once, the side streams coded once: the same bytes as encoding the tensor under each coder, and
    what a writer handed them writes without coding again."""
    import dataclasses

    from zoocodec.codecs import parse_coder
    from zoocodec.methods import TensorData, parse_spec

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 96)) * np.exp(rng.standard_normal((64, 1)))).astype(np.float32)
    t = TensorData("w", "float32", w)
    rows = parse_spec("rdoq:lam=0,iters=0").with_step(0.05, (0.05, 0.1))  # a word-embedding table's, a step per row
    for spec in map(parse_spec, ("uniform:step=0.05", "uniform:bits=4,group=32,zero=true", "uniform:step=1e-12", rows)):
        coded = _coded(spec, t, ("ans", "ctx", "cabac"))
        for c in ("ans", "ctx", "cabac"):
            option = dataclasses.replace(spec, coder=parse_coder(c))
            try:
                written = option.encode(t, recon=False).segments
            except ZoocodecError:  # cabac beyond 2^29
                assert c == "cabac" and c not in coded and spec.step == 1e-12
                continue
            size, streams = coded[c]
            assert size == sum(map(len, written.values()))
            assert {k: data for k, (_, data) in streams.items()} == {k: written[k] for k in streams}
            handed = option.code(t, option.quantize(t), recon=False, kept={k: (d, b"kept " + data)
                                                                           for k, (d, data) in streams.items()})
            assert all(handed.segments[k] == b"kept " + data for k, (_, data) in streams.items())
            stale = option.code(t, option.quantize(t), recon=False, kept={k: (("<i8", (1,), 0), b"stale")
                                                                          for k in streams})
            assert stale.segments == written  # other symbols than those kept: coded again
    levels = [dataclasses.replace(rows, coder=parse_coder(c)).quantize(t).symbols["symbols"] for c in ("ans", "ctx")]
    assert np.array_equal(*levels)  # lam=0: the coder chooses no level


def test_the_split_is_seeded_disjoint_and_keeps_groups_whole():
    decide, held = split(10)
    assert len(held) == 5 and sorted(np.concatenate([decide, held]).tolist()) == list(range(10))
    assert (split(10)[1] == held).all() and not (split(10, seed=1)[1] == held).all()
    groups = np.repeat(np.arange(9), 4)  # a photo's four views
    decide, held = split(36, groups)
    assert not set(groups[decide]) & set(groups[held]) and len(held) % 4 == 0
    assert len(split(2)[0]) == len(split(2)[1]) == 1
    with pytest.raises(ZoocodecError, match="at least 2 inputs"):
        split(1)


def test_a_part_of_a_zoo_task_pairs_its_own_inputs(mnist_path):
    """A part runs the model on its inputs alone; its top-1 is the one of those digits with their labels."""
    try:
        data.opencv_digits()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    t = tasks_of("mnist-cnn", "digits")[0]
    whole = evaluator("mnist-cnn", t, None)
    rows = np.array([3, 600, 1200, 4999])
    part = whole.part(rows)
    noisy = {k: v + 0.05 * torch.randn_like(v) if v.dim() > 1 else v for k, v in load_weights("mnist-cnn").items()}
    p = part.compare(noisy)["top1"]
    assert p.n == 4 and p.r.tolist() == whole.compare(None)["top1"].r[rows].tolist()
    hits = part.outputs(noisy).argmax(1) == data.opencv_digits()[1][rows]
    assert p.x.tolist() == hits.tolist()


def test_calibration_digits_are_never_judged_ones():
    try:
        judged = data.opencv_digits()[0]
        calib = data.digits_calibration()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    assert calib.shape == (data.CALIBRATION_IMAGES, 1, 28, 28)
    flat = judged.flatten(1)
    assert all(not torch.equal(c, flat[torch.cdist(c[None], flat).argmin()]) for c in calib.flatten(1)[:64])


def test_a_budget_below_what_the_inputs_resolve_fails_fast(mnist_path, tmp_path):
    """0.05% of top-1: even unchanged predictions have a wider interval on the 1,000 search digits, and
    again on the 2,500 of the calibration/search part (searched instead); it says so at once."""
    try:
        data.opencv_digits()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    with pytest.raises(ZoocodecError, match="not resolvable with 2,500 inputs"):  # nothing quantized: no loss
        auto_compress("mnist-cnn", tmp_path / "a.zc", 0.0005, sensitivities={}, min_size=10**9)
    assert not (tmp_path / "a.zc").exists()


def _check(result, out, target):
    assert result.loss <= result.loss_high <= target  # judged by the pessimistic end of the interval
    meta = zoocodec.inspect(out)  # header readable; the decisions are in meta
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    assert a.header["meta"]["zoo"] == result.reference
    assert auto["target_loss"] == target and auto["verified"]["loss"] == result.loss
    v = auto["verified"]
    assert v["loss_low"] <= v["loss"] <= v["loss_high"] == result.loss_high and v["inputs"] == result.inputs > 0
    assert len(auto["search"]) >= 3 and auto["sensitivities"]
    assert auto["strength"] in STRENGTHS and auto["method"] == result.method
    assert any(s.get("all_search_inputs") for s in auto["search"])  # searched again on the whole part
    json.dumps(auto)
    # verified on the held-back part of the split alone, which the written file reproduces exactly
    sp = auto["split"]
    assert v["on"] == "held_back" and sp["held_back_inputs"] == result.inputs and v["within"]
    assert sp["calibration_search"] + sp["held_back_inputs"] == sp["inputs"]
    t = tasks_of(result.reference, result.task)[0]
    whole = evaluator(result.reference, t, None)
    _, held = split(sp["inputs"], whole.compare(None)[t.primary].groups, sp["seed"])
    assert whole.part(held).judge(load_weights(out)).value == result.value
    return meta


@pytest.mark.slow  # three allocation strengths and a second search on all 5,000 digits: about 2 minutes
def test_auto_mode_respects_the_budget_on_mnist_cnn(mnist_path, tmp_path):
    try:
        data.opencv_digits()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    out = tmp_path / "auto.zc"
    result = auto_compress("mnist-cnn", out, 0.01)
    assert result.task == "digits" and result.metric == "top1"
    _check(result, out, 0.01)
    eight = zoocodec.compress("mnist-cnn", tmp_path / "u8.zc", "uniform:bits=8")
    assert result.report.ratio > 2 * eight.ratio  # far smaller than int8 at <= 1% top-1 loss
    # another budget from the file's sensitivities (as the head-to-head runs them): a tensor they leave
    # out, as the header leaves out one whose noise broke the model, stays lossless
    with zoocodec.Archive(out) as a:
        stored = a.header["meta"]["auto"]["sensitivities"]
    left_out = "fc_layers.0.weight"
    again = tmp_path / "again.zc"
    auto_compress("mnist-cnn", again, 0.02, sensitivities={k: v for k, v in stored.items() if k != left_out})
    methods = {t["name"]: t["method"] for t in zoocodec.inspect(again)["tensors"]}
    assert methods[left_out].startswith("lossless") and not methods["conv_layers.6.weight"].startswith("lossless")


@pytest.mark.gpu
def test_auto_mode_runs_a_zoo_models_task_on_the_gpu(mnist_path, tmp_path):
    """device="cuda" (`compress --device gpu --target-loss`): the sensitivities, the search and the verification
    run the model on the GPU, the header says which; judged again on the CPU, the file keeps its verified top-1
    to within a digit or two (a GPU's logits differ in their last digits) and its budget."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU for torch")
    try:
        data.opencv_digits()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    out = tmp_path / "gpu.zc"
    result = auto_compress("mnist-cnn", out, 0.01, device="cuda")
    assert result.loss <= result.loss_high <= 0.01
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    assert auto["device"].startswith("cuda:0 ") and auto["verified"]["value"] == result.value
    t = tasks_of("mnist-cnn")[0]
    whole = evaluator("mnist-cnn", t, None)  # the CPU
    _, held = split(auto["split"]["inputs"], whole.compare(None)[t.primary].groups, auto["split"]["seed"])
    m = whole.part(held).judge(load_weights(out))
    assert abs(m.value - result.value) <= 2 / len(held) and m.loss_high <= 0.01 + 2 / len(held)


@pytest.mark.slow  # about 6 minutes here: calibration, three strengths, the search again on all 10,000 images
def test_data_aware_rounding_passes_the_budget_on_fashion_mnist(tmp_path):
    """fmnist-cnn at 1%: indices chosen on Fashion-MNIST train images, searched on half the test images and
    verified on the other 5,000 by the pessimistic bound; the file decodes to what was judged and is
    far below nearest rounding's 2.6 bits/weight."""
    from conftest import zoo_path

    zoo_path("fmnist-cnn")
    try:
        data.fashion_mnist("test")
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    out = tmp_path / "auto.zc"
    result = auto_compress("fmnist-cnn", out, 0.01)
    assert result.task == "fashion" and result.inputs == 5_000 and result.rounding == "gptq"
    _check(result, out, 0.01)
    with zoocodec.Archive(out) as a:
        r = a.header["meta"]["auto"]["rounding"]
    assert "train images" in r["calibration"] and r["calibration_inputs"] == data.CALIBRATION_IMAGES
    # its tensors under 4,096 weights hold 1.3% of them, so the stem and the classifier are quantized too
    assert set(r["rounded"]) == {"stem.0.weight", "conv2.0.weight", "conv3.0.weight", "conv4.0.weight",
                                 "conv5.0.weight", "fc.weight"}
    assert result.report.bits_per_weight < 2.2


@pytest.mark.slow
def test_auto_mode_respects_the_budget_on_minilm(minilm_path, tmp_path):
    out = tmp_path / "auto.zc"
    result = auto_compress("minilm", out, 0.01)
    assert result.task == "lee" and result.metric == "cosine_mean"
    _check(result, out, 0.01)
    assert result.value >= 0.99 and result.report.bits_per_weight < 6


def _state_dict_and_module(digits_net, tmp_path, monkeypatch):
    """The digits net as net.pt with its module `autonets:make` importable; returns its inputs."""
    net, x = digits_net
    (tmp_path / "autonets.py").write_text(DIGITS_MLP)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    return x


def _auto_cli(monkeypatch, capsys, model, out, *args):
    """compress --target-loss through the CLI: its JSON summary and the decisions in the file's header."""
    code, stdout, err = run_cli(monkeypatch, capsys, "compress", str(model), "-o", str(out), "--json", *args)
    assert code == 0, err
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    assert auto["original"] == str(model) and auto["verified"]["judged_by"] == "loss_high"
    return json.loads(stdout), auto


@pytest.fixture(scope="module")
def digits_net():
    pytest.importorskip("sklearn.datasets")
    return digits_mlp()


def test_auto_mode_on_an_onnx_model_outside_the_zoo(digits_net, tmp_path, monkeypatch, capsys):
    """An ONNX classifier made here (trained on scikit-learn's digits), a KL budget, judged on .npy inputs."""
    net, x = digits_net
    path = tmp_path / "net.onnx"
    onnx_digits(net, path, "x")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, path, out, "--target-loss", "1%", "--inputs", tmp_path / "x.npy",
                              "--min-size", "1024")
    held = split(len(x))[1]
    assert summary["metric"] == "kl" and summary["loss_high"] <= 0.01 and summary["inputs"] == len(held)
    assert summary["split"]["calibration_search"] == len(x) - len(held) and auto["split"] == summary["split"]
    assert summary["ratio"] > 4  # far smaller than 8 bits at a KL of at most 0.01 nats
    # data-aware rounding on layer inputs captured with onnxruntime, on the calibration/search part only
    assert auto["rounding"]["rounding"] == "gptq" and auto["rounding"]["calibration_inputs"] == len(x) - len(held)
    assert len(auto["rounding"]["rounded"]) == 2 and "nearest" not in auto["rounding"]
    # a coder per tensor, the one that wrote it smallest: the header counts what the tensors say
    with zoocodec.Archive(out) as a:
        written = [t["method"]["coder"]["coder"] for t in a.header["tensors"] if t["method"]["method"] == "uniform"]
    assert auto["coders"] == {c: written.count(c) for c in set(written)} and set(written) <= {"ans", "ctx", "cabac"}
    # the written file gives the verified KL when evaluated against the original on the held-back inputs
    np.save(tmp_path / "held.npy", x[held])
    kl = next(m for m in evaluate_pair(path, out, tmp_path / "held.npy") if m.metric == "kl")
    assert kl.value == pytest.approx(auto["verified"]["value"], rel=1e-6)
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(path), "-o", str(out), "--module", "a:b",
                           "--target-loss", "1%")
    assert code == 2 and "give --inputs" in err


def test_auto_mode_on_a_state_dict_with_its_module(digits_net, tmp_path, monkeypatch, capsys):
    """A PyTorch state dict and the user's module (--module), judged as values: a relative-L2 budget."""
    x = _state_dict_and_module(digits_net, tmp_path, monkeypatch)
    np.savez(tmp_path / "x.npz", x)
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, tmp_path / "net.pt", out, "--target-loss", "2%", "--inputs",
                              tmp_path / "x.npz", "--module", "autonets:make", "--output-kind", "values",
                              "--min-size", "1024", "--method", "dq:coder=ctx")
    held = split(len(x))[1]
    assert summary["metric"] == "rel_l2" and summary["loss_high"] <= 0.02 and summary["inputs"] == len(held)
    assert auto["module"] == "autonets:make" and auto["output"] == "values"
    assert summary["method"].startswith("dq:") and ",coder=ctx," in summary["method"]  # the coder named is kept
    # data-aware rounding: dq written with each column a walk at lam 0, the levels the rounding chose (the
    # written file gives the verified value, below)
    assert summary["method"].endswith(",axis=0") and ",lam=0.0," in summary["method"]
    assert summary["ratio"] > 3
    assert auto["rounding"]["rounding"] == "gptq" and len(auto["rounding"]["rounded"]) >= 1
    np.savez(tmp_path / "held.npz", x[held])
    rel = next(m for m in evaluate_pair(tmp_path / "net.pt", out, tmp_path / "held.npz", module="autonets:make",
                                        output="values"))
    # (the original's outputs were run in other batches there: float sums differ in the last digits)
    assert rel.metric == "rel_l2" and rel.value == pytest.approx(auto["verified"]["value"], rel=1e-6)


def test_auto_mode_on_a_hugging_face_encoder(tmp_path, monkeypatch, capsys):
    """A BERT encoder in a Hugging Face folder (built by transformers), judged by embedding cosine on a text file."""
    pytest.importorskip("transformers")
    folder = tmp_path / "bert"
    (tmp_path / "texts.txt").write_text("\n".join(bert_folder(folder, classifier=False, n_texts=40)) + "\n")
    rng = np.random.default_rng(1)  # calibration texts of the vocabulary's first 80 words only
    calib = [" ".join(rng.choice([f"w{i}" for i in range(80)], 12)) for _ in range(30)]
    (tmp_path / "calib.txt").write_text("\n".join(calib) + "\n")
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, folder, out, "--target-loss", "0.5%", "--inputs",
                              tmp_path / "texts.txt", "--calib", tmp_path / "calib.txt", "--min-size", "8192")
    assert summary["metric"] == "cosine_mean" and summary["loss_high"] <= 0.005 and summary["inputs"] == 20
    assert summary["ratio"] > 2 and auto["sensitivities"]  # lossless float coding: about 1.2x
    # the word-embedding table: a step per row, from its tokens' counts over the --calib texts alone
    rows = auto["token_rows"]["embeddings.word_embeddings.weight"]
    assert rows["texts"] == 30 and rows["about"] == "--calib calib.txt" and 0 < rows["rows_seen"] <= 82 < rows["rows"]
    with zoocodec.Archive(out) as a:
        emb = next(t for t in a.header["tensors"] if t["name"] == "embeddings.word_embeddings.weight")
    assert emb["method"]["method"] == "rdoq" and emb["method"]["lam"] == 0 and len(emb["method"]["group_steps"]) > 1
    # the decoded folder is the same model: evaluated against the original on the held-back texts, the verified cosine
    zoocodec.decompress(out, tmp_path / "back")
    texts = (tmp_path / "texts.txt").read_text().splitlines()
    (tmp_path / "held.txt").write_text("\n".join(texts[i] for i in split(40)[1]) + "\n")
    cos = next(m for m in evaluate_pair(folder, tmp_path / "back", tmp_path / "held.txt") if m.metric == "cosine_mean")
    assert cos.value == pytest.approx(auto["verified"]["value"], abs=1e-6)


def test_data_aware_rounding_on_a_state_dict_with_its_module(digits_net, tmp_path, monkeypatch, capsys):
    """A uniform grid on the user's module: the indices are chosen with the calibration/search part of its
    --inputs, never the held-back part, and the written file gives the verified metric on that part."""
    x = _state_dict_and_module(digits_net, tmp_path, monkeypatch)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, tmp_path / "net.pt", out, "--target-loss", "1%", "--inputs",
                              tmp_path / "x.npy", "--module", "autonets:make", "--min-size", "1024")
    decide, held = split(len(x))
    r = auto["rounding"]
    assert r["rounding"] == "gptq" and "calibration/search part" in r["calibration"]
    assert r["calibration_inputs"] == len(decide) and r["rounded"] == ["1.weight", "3.weight"]
    assert summary["metric"] == "kl" and summary["loss_high"] <= 0.01 and summary["inputs"] == len(held)
    np.save(tmp_path / "held.npy", x[held])
    kl = next(m for m in evaluate_pair(tmp_path / "net.pt", out, tmp_path / "held.npy", module="autonets:make")
              if m.metric == "kl")
    assert kl.value == pytest.approx(auto["verified"]["value"], rel=1e-6)


def test_calibration_inputs_apart_with_calib(digits_net, tmp_path, monkeypatch, capsys):
    """--calib: the indices are chosen on other inputs; --inputs is still split into search and held-back parts."""
    x = _state_dict_and_module(digits_net, tmp_path, monkeypatch)
    np.save(tmp_path / "x.npy", x[: len(x) // 2])
    np.save(tmp_path / "calib.npy", x[len(x) // 2:])
    out = tmp_path / "auto.zc"
    summary, auto = _auto_cli(monkeypatch, capsys, tmp_path / "net.pt", out, "--target-loss", "1%", "--inputs",
                              tmp_path / "x.npy", "--calib", tmp_path / "calib.npy", "--module", "autonets:make",
                              "--min-size", "1024")
    r = auto["rounding"]
    assert r["calibration"] == f"the {len(x) - len(x) // 2} inputs of --calib calib.npy" and auto["calib"].endswith(
        "calib.npy"
    )
    assert summary["inputs"] == len(split(len(x) // 2)[1]) and summary["loss_high"] <= 0.01
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(tmp_path / "net.pt"), "-o", str(out), "--calib",
                           str(tmp_path / "calib.npy"))
    assert code == 2 and "--calib" in err


def test_the_winning_coders_streams_are_written_as_coded(digits_net, tmp_path, monkeypatch):
    """The coder per tensor codes each planned tensor under every coder; the writer takes the winner's streams
    instead of coding them again: the same file bytes as a write that codes them."""
    from zoocodec.methods import parse_spec
    from zoocodec.tuning.auto import RATE_LAM, Asked, _Clock, _Search

    x = _state_dict_and_module(digits_net, tmp_path, monkeypatch)
    np.save(tmp_path / "x.npy", x)
    asked = Asked(tmp_path / "net.pt", 0.01, None, None, parse_spec("uniform"), 1024, tmp_path / "x.npy",
                  "autonets:make", None, True, "gptq", RATE_LAM, None, 0, False)
    with _Clock(lambda _msg: None) as clock:
        run = _Search(clock, asked)
        run.phases(None)
        assert run.streams and set(run.streams) == set(run.plan)
        assert all(run.plan[k] == spec for k, (spec, _) in run.streams.items())
        run.write(tmp_path / "kept.zc")
        run.streams = {}
        run.write(tmp_path / "coded.zc")
    assert (tmp_path / "kept.zc").read_bytes() == (tmp_path / "coded.zc").read_bytes()


def test_layer_inputs_are_measured_before_the_sensitivities_so_the_time_left_counts_them(
        digits_net, tmp_path, monkeypatch):
    """Calibration runs first: while the sensitivities are measured (the longest phase), the estimate holds
    its measured time rather than a guess; pricing the strengths is expected, and every phase is spent by
    the end."""
    from zoocodec.methods import parse_spec
    from zoocodec.tuning.auto import RATE_LAM, STRENGTHS, Asked, _Clock, _Search

    x = _state_dict_and_module(digits_net, tmp_path, monkeypatch)
    np.save(tmp_path / "x.npy", x)
    asked = Asked(tmp_path / "net.pt", 0.01, None, None, parse_spec("uniform"), 1024, tmp_path / "x.npy",
                  "autonets:make", None, True, "gptq", RATE_LAM, None, 0, False)
    lines: list[str] = []
    after: dict = {}  # the runs the clock expects once the sensitivities are measured
    with _Clock(lines.append) as clock:
        run = _Search(clock, asked)
        measure = run.sensitivities

        def sensitivities(given):
            measure(given)
            after.update({phase: runs for phase, (runs, *_) in clock.todo.items()})
        monkeypatch.setattr(run, "sensitivities", sensitivities)
        run.phases(None)
    rounding = next(i for i, line in enumerate(lines) if line.startswith("rounding: gptq"))
    measuring = next(i for i, line in enumerate(lines) if line.startswith("measuring sensitivities"))
    assert rounding < measuring
    assert "calibration" not in after and after["choose"] == len(STRENGTHS)
    assert all(runs == 0 for runs, *_ in clock.todo.values()) and not clock.work


def test_the_time_left_counts_every_phase_still_to_come():
    from zoocodec.tuning.auto import _Clock

    lines: list[str] = []
    clock = _Clock(lines.append)
    clock.expect("sensitivities", 10, 100, plan=False)
    clock.expect("search", 6, 200)
    clock.expect("verify", 1, 500, plan=False)
    assert clock.left() is None  # nothing measured yet
    clock.ran("sensitivities", 1.0, 100)  # 0.01 s per input
    assert clock.left() == pytest.approx(9 * 1.0 + 6 * 2.0 + 5.0)
    clock.ran("search", 2.0, 200, plan_s=3.0)  # rounding a plan: 3 s
    assert clock.left() == pytest.approx(9 * 1.0 + 5 * (2.0 + 3.0) + 5.0)
    clock.done("sensitivities")
    clock.expect("calibration", 1, 100, plan=False)  # until its own inputs are counted (calibrate.collect)
    assert clock.left() == pytest.approx(1.0 + 5 * (2.0 + 3.0) + 5.0)
    clock.stepped("calibration", 0, 300)  # it counts its own: the run expected of it is dropped
    assert clock.left() is None  # (none of it measured yet)
    clock.work["calibration"] = (clock.work["calibration"][0] - 2.0, 100, 300)  # 100 inputs took 2 s
    assert clock.left() == pytest.approx(4.0 + 5 * (2.0 + 3.0) + 5.0, abs=0.1)
    clock.done("calibration")
    clock.line("step")
    assert lines[-1].startswith("step (") and "left)" in lines[-1]
    clock.line("again", every=3600)  # at most one line an hour: none now
    assert len(lines) == 1


def test_the_time_left_counts_calibration_images_while_they_are_made():
    """A zoo task whose calibration images are made on a first run (effnet-lite0's distilled ones; a small net
    and few steps here): a phase of its own, its steps on the heartbeat's line, its time left in the estimate,
    moving down to none at its last step; nothing once made."""
    import dataclasses
    from types import SimpleNamespace

    from zoocodec.eval import distilled as D
    from zoocodec.eval.tasks import TASKS
    from zoocodec.tuning.auto import _Clock, _Search

    lines: list[str] = []
    clock = _Clock(lines.append)
    clock.expect("search", 6, 200)
    clock.ran("sensitivities", 1.0, 100)  # runs measured: 0.01 s an input, 12 s of search runs to come
    seen: list[tuple[str, float | None]] = []
    net = bn_net()

    def prepare(progress):
        def step(done: int, total: int) -> None:
            progress(done, total)
            seen.append((clock.doing, clock.left()))
        return D.images(net, 3, size=16, steps=(4, 2), progress=step)

    task = dataclasses.replace(TASKS["digits"], prepare=prepare, prepare_about="distilling 3 images")
    run = SimpleNamespace(t=task, clock=clock, say=lines.append, whole=SimpleNamespace(), prepared=False)
    _Search.prepare(run)
    assert [doing for doing, _ in seen] == [f"distilling 3 images: step {k}/6" for k in range(7)]
    assert seen[0][1] is None  # no step measured yet
    making = [left - 12.0 for _, left in seen[1:]]
    assert all(m > 0 for m in making[:-1]) and making[-1] == pytest.approx(0.0)
    assert len(set(making)) == len(making)  # it moves at every step
    assert lines == ["distilling 3 images: 6 steps, this once (then read from the zoo cache)"]
    assert "making" not in clock.work and clock.left() == pytest.approx(12.0)
    _Search.prepare(run)  # made: not again
    assert len(seen) == 7


def test_sequential_rounding_against_the_quantized_models_inputs(digits_net, tmp_path, monkeypatch):
    """sequential=True: the final rounding is against layer inputs measured on the model quantized at the
    searched step (the second layer sees the first one's quantized outputs); the file still verifies."""
    from zoocodec.eval.anymodel import TorchRunner
    from zoocodec.tuning.calibrate import collect, collect_on

    x = _state_dict_and_module(digits_net, tmp_path, monkeypatch)
    np.save(tmp_path / "x.npy", x)
    run = TorchRunner("autonets:make", tmp_path / "x.npy", None)
    weights = dict(torch.load(tmp_path / "net.pt"))
    net = run.module(weights)
    names = {k: k for k in weights}
    before = collect(net, run.forward, names)
    coarse = {k: (v / 0.2).round() * 0.2 if v.dim() > 1 else v for k, v in weights.items()}
    after = collect_on(net, run.forward, names, coarse)
    assert np.allclose(after["1.weight"].h, before["1.weight"].h)  # the first layer's inputs are the data
    assert not np.allclose(after["3.weight"].h, before["3.weight"].h)  # the second's come from the quantized first
    out = tmp_path / "seq.zc"
    r = auto_compress(tmp_path / "net.pt", out, 0.01, inputs=tmp_path / "x.npy", module="autonets:make",
                      min_size=1024, sequential=True)
    with zoocodec.Archive(out) as a:
        rounding = a.header["meta"]["auto"]["rounding"]
    assert "quantized at base step" in rounding["layer_inputs"] and r.within and r.loss_high <= 0.01


def test_the_search_ends_near_the_budget_in_few_runs():
    """The loss grows about as the step squared: aimed steps end within bisection's resolution in fewer runs;
    a budget nothing meets gives None; a noisy, non-quadratic loss still ends at a step that passes."""
    from zoocodec.tuning.auto import _search

    calls: list[float] = []

    def quadratic(b: float) -> float:
        calls.append(b)
        return 0.01 * (b / 0.37) ** 2

    found = _search(quadratic, 0.05, 0.01)
    assert 0.37 / 2 ** (1 / 8) <= found <= 0.37 and quadratic(found) <= 0.01 and len(calls) <= 5
    calls.clear()
    found = _search(quadratic, 0.37 * 2 ** (1 / 4), 0.01, 2 ** (1 / 8), 2, 16)  # the search again: 2**(1/32)
    assert 0.37 / 2 ** (1 / 32) <= found <= 0.37 and len(calls) <= 4
    assert _search(lambda b: 1.0, 1.0, 0.01, down=4) is None
    g = np.random.default_rng(0)
    for _ in range(20):
        p, edge = g.uniform(1, 4), g.uniform(0.01, 10)

        def rough(b: float, p=p, edge=edge) -> float:
            return 0.01 * (b / edge) ** p * g.uniform(0.8, 1.25)

        found = _search(rough, 1.0, 0.01)
        assert found is not None and found <= edge * 1.25 ** (1 / p) and found >= edge * 0.8 ** (1 / p) / 2 ** 0.5


def test_a_tasks_dampening_by_layer_kind_reaches_data_aware_rounding(monkeypatch):
    """The photo task's calibration (crops of 34 photos) dampens the pointwise layers' H more: automatic
    mode's rounder carries it, and the header records it."""
    from types import SimpleNamespace

    from zoocodec.eval import calibration as C
    from zoocodec.methods import parse_spec
    from zoocodec.tuning import auto

    monkeypatch.setattr(C, "for_zoo", lambda *_: C.Calibration(None, None, {}, "crops", 256))
    monkeypatch.setattr(auto, "collect", lambda *_: {})  # the layer inputs are not what this checks
    zoo_model = SimpleNamespace(run=None, arch="effnet-lite0", folder=None)
    rounder, _, _ = auto._rounder("gptq", 0.0, parse_spec("uniform"), zoo_model, None, tasks_of("effnet-lite0")[0],
                                  {}, lambda _msg: None, None, ())
    assert rounder.kind_damp == {"dense": 0.1} and rounder.describe([])["damp_by_kind"] == {"dense": 0.1}
    digits, _, _ = auto._rounder("gptq", 0.0, parse_spec("uniform"), SimpleNamespace(run=None, arch="mnistnet",
                                 folder=None), None, tasks_of("mnist-cnn")[0], {}, lambda _msg: None, None, ())
    assert digits.kind_damp == {}
