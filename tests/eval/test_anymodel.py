"""Models outside the zoo, made in the test: an ONNX classifier, a Hugging Face BERT (encoder
and classifier), a state dict with its factory module; compressed and judged by output fidelity."""
import json
import textwrap
import warnings

import numpy as np
import pytest
import torch

import zoocodec
from support import run_cli
from zoocodec.eval.anymodel import evaluate_pair

SPEC = "uniform:bits=3"  # coarse enough to move every metric


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


@pytest.fixture(scope="module")
def digits_net(tmp_path_factory):
    """An MLP trained on scikit-learn's 8x8 digits (98%+ after a second of training), test inputs."""
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y)
    torch.manual_seed(0)
    net = _mlp()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[:1400]), y[:1400]).backward()
        opt.step()
    net.eval()
    assert (net(x[1400:]).argmax(1) == y[1400:]).float().mean() > 0.9
    return net, x[1400:].numpy()  # 397 held-out digits


def _metrics(rows):
    return {m.metric: m for m in rows}


def test_onnx_classifier_from_arrays_and_images(digits_net, tmp_path):
    net, x = digits_net
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, input_names=["pixels"],
                          dynamic_axes={"pixels": {0: "n"}})
    zc = tmp_path / "net.zc"
    zoocodec.compress(path, zc, SPEC)
    np.save(tmp_path / "x.npy", x)
    m = _metrics(evaluate_pair(path, zc, tmp_path / "x.npy"))
    assert set(m) == {"kl", "agreement"} and m["kl"].primary and m["kl"].n == len(x)
    assert 0 < m["kl"].low <= m["kl"].value <= m["kl"].high
    assert m["agreement"].low < 0 and m["agreement"].interval.startswith("Newcombe")
    # the original against itself: no loss, a zero-width KL interval
    same = _metrics(evaluate_pair(path, path, tmp_path / "x.npy"))
    assert same["kl"].value == 0 and same["kl"].high == 0 and same["agreement"].value == 1
    # a folder of images: resized to the graph's 8x8 input
    from PIL import Image

    (tmp_path / "img").mkdir()
    for i in range(12):
        Image.fromarray((np.kron(x[i, 0], np.ones((4, 4))) * 255).astype(np.uint8)).save(tmp_path / "img" / f"{i:02d}.png")
    m = _metrics(evaluate_pair(path, zc, tmp_path / "img"))
    assert m["kl"].n == 12 and m["kl"].value > 0


def test_state_dict_with_factory_module(digits_net, tmp_path, monkeypatch):
    net, x = digits_net
    (tmp_path / "usernets.py").write_text(textwrap.dedent("""
        import torch

        def make():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                       torch.nn.Linear(128, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    zc = tmp_path / "net.zc"
    zoocodec.compress(tmp_path / "net.pt", zc, SPEC)
    np.savez(tmp_path / "x.npz", x)
    m = _metrics(evaluate_pair(tmp_path / "net.pt", zc, tmp_path / "x.npz", module="usernets:make"))
    assert m["kl"].value > 0 and m["kl"].n == len(x)
    # as values: relative L2 of the outputs
    v = _metrics(evaluate_pair(tmp_path / "net.pt", zc, tmp_path / "x.npz", module="usernets:make", output="values"))
    assert set(v) == {"rel_l2"} and 0 < v["rel_l2"].low <= v["rel_l2"].high < 1


def _bert_folder(folder, classifier: bool):
    """A small BERT built from a config by transformers (random weights), with a WordPiece tokenizer."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = [f"w{i}" for i in range(150)]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64, num_labels=5)
    torch.manual_seed(0)
    cls = transformers.BertForSequenceClassification if classifier else transformers.BertModel
    cls(config).eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, rng.integers(3, 20))) for _ in range(80)]


@pytest.mark.parametrize("classifier", [False, True])
def test_hugging_face_folder_from_its_config(tmp_path, classifier):
    folder = tmp_path / "bert"
    texts = _bert_folder(folder, classifier)
    assert json.loads((folder / "config.json").read_text())["architectures"][0].endswith(
        "ForSequenceClassification" if classifier else "BertModel")
    (tmp_path / "inputs.txt").write_text("\n".join(texts) + "\n")
    zc = tmp_path / "bert.zc"
    zoocodec.compress(folder, zc, SPEC)
    m = _metrics(evaluate_pair(folder, zc, tmp_path / "inputs.txt"))
    if classifier:
        assert set(m) == {"kl", "agreement"} and m["kl"].value > 0 and m["kl"].primary
    else:
        assert set(m) == {"cosine_mean", "cosine_min"} and m["cosine_mean"].primary
        assert m["cosine_mean"].n == 80 and m["cosine_mean"].low < m["cosine_mean"].delta < m["cosine_mean"].high < 0
        assert m["cosine_min"].low is None
    # the decompressed folder is a model of the same tensors: the same result
    zoocodec.decompress(zc, tmp_path / "back")
    again = _metrics(evaluate_pair(folder, tmp_path / "back", tmp_path / "inputs.txt"))
    assert {k: v.value for k, v in again.items()} == pytest.approx({k: v.value for k, v in m.items()}, abs=1e-6)


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err


def test_cli_prints_intervals_and_asks_for_inputs(digits_net, tmp_path, monkeypatch, capsys):
    net, x = digits_net
    torch.save(net.state_dict(), tmp_path / "net.pt")
    zoocodec.compress(tmp_path / "net.pt", tmp_path / "net.zc", SPEC)
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "net.pt"), str(tmp_path / "net.zc"))
    one_line_error(code, err, "give --inputs", ".npy/.npz")
    np.save(tmp_path / "x.npy", x)
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "net.pt"), str(tmp_path / "net.zc"),
                           "--inputs", str(tmp_path / "x.npy"))
    one_line_error(code, err, "--module package.module:factory")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "net.pt"), str(tmp_path / "net.zc"),
                           "--inputs", str(tmp_path / "x.npy"), "--module", "no_such_pkg_zz:make")
    one_line_error(code, err, "cannot import no_such_pkg_zz")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "net.zc"))
    one_line_error(code, err, "match no installed zoo model", "--inputs")
    (tmp_path / "usernets2.py").write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), "
                                          "nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "net.pt"), str(tmp_path / "net.zc"),
                             "--inputs", str(tmp_path / "x.npy"), "--module", "usernets2:make", "--json")
    assert code == 0, err
    rows = {r["metric"]: r for r in json.loads(out)}
    assert rows["kl"]["low"] <= rows["kl"]["value"] <= rows["kl"]["high"] and rows["kl"]["n"] == len(x)
