"""evaluate() on real zoo models and data: baselines, compressed models, the text encoder."""
import json

import pytest
import torch

import zoocodec
from zoocodec.errors import ZoocodecError
from zoocodec.eval import data, evaluate
from zoocodec.eval.evaluate import load_weights

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _need_digits():
    try:
        data.opencv_digits()
    except data.DatasetMissing as e:
        pytest.skip(str(e))


def test_uncompressed_model_equals_its_baseline(mnist_path):
    _need_digits()
    # the model file (not the zoo name) is loaded and run again, next to the cached reference
    metrics = evaluate(str(mnist_path), limit=1000)
    assert {m.metric for m in metrics} == {"top1", "top5", "agreement", "kl"}
    for m in metrics:
        assert m.value == m.baseline and m.delta == 0.0, m
    top1 = next(m for m in metrics if m.metric == "top1")
    assert top1.task == "digits" and top1.model == str(mnist_path)
    assert 0.95 < top1.baseline < 0.99  # measured when the zoo was built: 0.970 on all 5,000 digits


def test_the_gpu_branch_of_a_zoo_task_gives_the_cpus_outputs(mnist_path):
    """Evaluator.outputs on a GPU device (run_on: weights moved, the zoo model built under torch's default
    device, outputs brought back), with the CPU standing in for the GPU: the CPU's outputs to the bit."""
    from support import standin_gpu
    from zoocodec.eval.evaluate import Evaluator, tasks_of

    _need_digits()
    t = tasks_of("mnist-cnn")[0]
    weights = {k: v + 0.01 * torch.randn_like(v) if v.dim() > 1 else v for k, v in load_weights("mnist-cnn").items()}
    on = [Evaluator("mnist-cnn", t, 500, d).outputs(weights) for d in ("cpu", standin_gpu())]
    assert on[1].device.type == "cpu" and torch.equal(on[0], on[1])


def test_compressed_container_is_decoded_and_recognised(mnist_path, tmp_path):
    _need_digits()
    out = tmp_path / "m.zc"
    zoocodec.compress(str(mnist_path), out, "uniform:bits=3")
    metrics = {m.metric: m for m in evaluate(out, limit=1000)}
    assert metrics["kl"].value > 0 and metrics["agreement"].value < 1
    assert metrics["top1"].baseline == evaluate("mnist-cnn", limit=1000)[0].baseline
    row = metrics["top1"].to_dict()
    assert {"model", "task", "metric", "value", "baseline", "delta", "low", "high", "n"} <= set(row)
    assert row["delta"] == pytest.approx(row["value"] - row["baseline"])
    assert row["n"] == 1000 and row["primary"] and row["low"] <= row["delta"] <= row["high"]
    # a 3-bit model flips predictions: the agreement interval lies below 1, KL's above 0
    assert metrics["agreement"].high < 0 and metrics["kl"].low > 0
    assert metrics["kl"].loss_high == metrics["kl"].high and metrics["agreement"].loss_low == -metrics["agreement"].high
    json.dumps(row)


def test_fmnist_cnn_ships_with_its_checkpoints():
    try:
        data.fashion_mnist("test")
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    folder = data.Path(zoocodec.__file__).parent / "data" / "fmnist-cnn"
    log = json.loads((folder / "training.json").read_text())
    top1 = next(m for m in evaluate("fmnist-cnn") if m.metric == "top1")
    assert top1.value == top1.baseline == pytest.approx(log["test_top1"], abs=5e-5)
    assert [e["epoch"] for e in log["per_epoch"]] == list(range(1, log["epochs"] + 1))
    first = evaluate(folder / "epoch-01.safetensors", task="fashion", reference="fmnist-cnn", limit=2000)
    assert next(m for m in first if m.metric == "top1").delta < 0  # the first epoch is worse than the last


def test_dict_of_tensors_and_unknown_task(mnist_path):
    _need_digits()
    weights = load_weights(str(mnist_path))
    with pytest.raises(ZoocodecError, match="unknown task 'photos' for model 'mnist-cnn'"):
        evaluate(weights, task="photos")
    noisy = {k: v + 0.02 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0)) for k, v in weights.items()}
    kl = next(m for m in evaluate(noisy, limit=500) if m.metric == "kl")
    assert kl.model == "<dict of tensors>" and kl.value > 0


def test_word_similarity_matches_the_published_baselines(minilm_path):
    """The plain-torch BERT encoder reproduces the published WordSim353 0.7289 and SimLex-999 0.4462."""
    try:
        data.word_pairs("wordsim353")
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    metrics = {m.metric: m for m in evaluate("minilm", task="wordsim")}
    assert metrics["wordsim353"].baseline == pytest.approx(0.7289, abs=0.001)
    assert metrics["simlex999"].baseline == pytest.approx(0.4462, abs=0.001)


@pytest.mark.slow
def test_encoder_matches_sentence_transformers(minilm_path):
    st = pytest.importorskip("sentence_transformers")
    from zoocodec.eval.text import TextModel

    texts = ["A man is playing a guitar.", "The new movie is awesome", "zoocodec compresses weights"]
    ours = TextModel(minilm_path, load_weights("minilm")).encode(texts)
    theirs = st.SentenceTransformer(str(minilm_path), device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.nn.functional.cosine_similarity(ours, theirs).min() > 0.99999


@pytest.mark.slow
def test_minilm_lee_cosine_falls_with_coarser_quantization(minilm_path, tmp_path):
    cos = {}
    for bits in (8, 4):
        out = tmp_path / f"m{bits}.zc"
        zoocodec.compress("minilm", out, f"uniform:bits={bits}")
        cos[bits] = next(m.value for m in evaluate(out, task="lee") if m.metric == "cosine_mean")
    assert 0.999 < cos[8] < 1 and cos[4] < cos[8]


@pytest.mark.slow
def test_mpnet_unzips_once_and_matches_the_published_baselines():
    """The five-part zip is extracted to the cache; the MPNet forward gives the published 0.7436 / 0.5362."""
    from zoocodec.pipeline import zoo

    try:
        folder = zoo.resolve("mpnet")
    except ZoocodecError as e:
        pytest.skip(str(e))
    assert (folder / "model.safetensors").is_file() and zoo.resolve("mpnet") == folder
    metrics = {m.metric: m for m in evaluate("mpnet", task="wordsim")}
    assert metrics["wordsim353"].baseline == pytest.approx(0.7436, abs=0.001)
    assert metrics["simlex999"].baseline == pytest.approx(0.5362, abs=0.001)


@pytest.mark.slow
def test_photo_views_are_judged_by_kl_with_photos_resampled_whole():
    try:
        views = data.photo_views()
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    assert len(views) == data.PHOTO_VIEWS * len(data.photo_files())
    assert torch.equal(views[1], views[0].flip(-1))  # a view and its mirror image
    weights = load_weights("effnet-lite0")
    gen = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.01 * v.std() * torch.randn(v.shape, generator=gen) if v.dim() > 1 else v
             for k, v in weights.items()}
    metrics = {m.metric: m for m in evaluate(noisy, task="photos", reference="effnet-lite0", limit=12)}
    kl = metrics["kl"]
    assert kl.primary and kl.n == 12 and kl.interval == "paired bootstrap over groups"
    assert 0 <= kl.low <= kl.value <= kl.high


def test_the_reference_outputs_are_stored_once(mnist_path, tmp_path, monkeypatch):
    """A second evaluator of the same weights and task reads the original's outputs from the zoo cache (the
    same floats); other weights miss it; a damaged file is run again."""
    from zoocodec.eval.evaluate import TASKS, Evaluator

    _need_digits()
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    task = TASKS["digits"]
    first = Evaluator("mnist-cnn", task, 200)
    stored = list((tmp_path / "eval-reference").iterdir())
    assert len(stored) == 1
    monkeypatch.setattr(Evaluator, "outputs", lambda *_: pytest.fail("the original ran again"))
    second = Evaluator("mnist-cnn", task, 200)
    torch.testing.assert_close(second.ref_out, first.ref_out, rtol=0, atol=0)
    monkeypatch.undo()
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    Evaluator("mnist-cnn", task, 100)  # other inputs: another file
    assert len(list((tmp_path / "eval-reference").iterdir())) == 2
    stored[0].write_bytes(b"not a safetensors file")
    torch.testing.assert_close(Evaluator("mnist-cnn", task, 200).ref_out, first.ref_out, rtol=0, atol=0)
