"""Models outside the zoo, made in the test: an ONNX classifier, a Hugging Face BERT (encoder
and classifier), a state dict with its factory module; compressed and judged by output fidelity."""
import json

import numpy as np
import pytest
import torch

import zoocodec
from support import DIGITS_MLP, bert_folder, digits_mlp, onnx_digits, run_cli, standin_gpu, trained_mlp
from zoocodec.eval.anymodel import evaluate_pair

SPEC = "uniform:bits=3"  # coarse enough to move every metric


@pytest.fixture(scope="module")
def digits_net():
    pytest.importorskip("sklearn.datasets")
    return digits_mlp()


def _metrics(rows):
    return {m.metric: m for m in rows}


def test_onnx_classifier_from_arrays_and_images(digits_net, tmp_path):
    net, x = digits_net
    path = tmp_path / "net.onnx"
    onnx_digits(net, path, "pixels")
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
        Image.fromarray((np.kron(x[i, 0], np.ones((4, 4))) * 255).astype(np.uint8)).save(
            tmp_path / "img" / f"{i:02d}.png"
        )
    m = _metrics(evaluate_pair(path, zc, tmp_path / "img"))
    assert m["kl"].n == 12 and m["kl"].value > 0


def _state_dict_file(digits_net, tmp_path, monkeypatch):
    """net.pt with its module `usernets:make` importable, compressed to net.zc; returns the inputs and the .zc."""
    net, x = digits_net
    (tmp_path / "usernets.py").write_text(DIGITS_MLP)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    zc = tmp_path / "net.zc"
    zoocodec.compress(tmp_path / "net.pt", zc, SPEC)
    return x, zc


def test_state_dict_with_factory_module(digits_net, tmp_path, monkeypatch):
    x, zc = _state_dict_file(digits_net, tmp_path, monkeypatch)
    np.savez(tmp_path / "x.npz", x)
    m = _metrics(evaluate_pair(tmp_path / "net.pt", zc, tmp_path / "x.npz", module="usernets:make"))
    assert m["kl"].value > 0 and m["kl"].n == len(x)
    # as values: relative L2 of the outputs
    v = _metrics(evaluate_pair(tmp_path / "net.pt", zc, tmp_path / "x.npz", module="usernets:make", output="values"))
    assert set(v) == {"rel_l2"} and 0 < v["rel_l2"].low <= v["rel_l2"].high < 1


def test_an_onnx_graph_asked_to_run_on_a_gpu_is_refused_in_one_line(digits_net, tmp_path):
    """onnxruntime runs the graph on its CPU provider here: a GPU asked for is an error, never a silent CPU run."""
    from zoocodec.device import Device
    from zoocodec.errors import ZoocodecError
    from zoocodec.eval.anymodel import runner

    net, x = digits_net
    onnx_digits(net, tmp_path / "net.onnx", "pixels")
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ZoocodecError, match="onnxruntime's CPU provider here: leave out --device"):
        runner(tmp_path / "net.onnx", tmp_path / "x.npy", device=Device("cuda", 0))


def test_the_gpu_branch_of_a_state_dict_run_gives_the_cpus_metrics(digits_net, tmp_path, monkeypatch):
    """The code a GPU runs (weights moved, the module built under torch's default device, its inputs sent there,
    the outputs brought back), run here with the CPU standing in for the GPU: the same metrics to the bit, and
    automatic mode's header names the device its runs took."""
    from zoocodec.tuning.auto import auto_compress

    x, zc = _state_dict_file(digits_net, tmp_path, monkeypatch)
    np.save(tmp_path / "x.npy", x)
    rows = [_metrics(evaluate_pair(tmp_path / "net.pt", zc, tmp_path / "x.npy", module="usernets:make", device=d))
            for d in ("cpu", standin_gpu())]
    assert rows[0]["kl"].value == rows[1]["kl"].value > 0
    said: list[str] = []
    auto_compress(tmp_path / "net.pt", tmp_path / "auto.zc", 0.01, inputs=tmp_path / "x.npy", module="usernets:make",
                  min_size=1024, device=standin_gpu(), log=said.append)
    with zoocodec.Archive(tmp_path / "auto.zc") as a:
        assert a.header["meta"]["auto"]["device"] == "cuda:0 (the CPU standing in)"
    assert "the model runs on cuda:0 (the CPU standing in) (data-aware rounding on the CPU)" in said


@pytest.mark.gpu
def test_a_state_dict_and_its_module_run_on_the_gpu(tmp_path, monkeypatch):
    """device="cuda" (`evaluate --device gpu`, automatic mode's runs): the module's outputs on the GPU give the
    CPU's metrics to float tolerance, and automatic mode run there keeps its budget judged again on the CPU.
    An MLP trained on a synthetic task (no scikit-learn: it runs in the GPU image)."""
    from zoocodec.tuning.auto import auto_compress, split

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU for torch")
    torch.manual_seed(0)
    x = torch.randn(600, 1, 8, 8)
    net = trained_mlp(x, (x.flatten(1) @ torch.randn(64, 10)).argmax(1))
    (tmp_path / "gpunets.py").write_text(DIGITS_MLP)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "gpu.zc"
    r = auto_compress(tmp_path / "net.pt", out, 0.01, inputs=tmp_path / "x.npy", module="gpunets:make",
                      min_size=1024, device="cuda")
    with zoocodec.Archive(out) as a:
        auto = a.header["meta"]["auto"]
    assert auto["device"].startswith("cuda:0 ") and r.loss_high <= 0.01
    np.save(tmp_path / "held.npy", x.numpy()[split(len(x))[1]])
    on = {d: _metrics(evaluate_pair(tmp_path / "net.pt", out, tmp_path / "held.npy", module="gpunets:make",
                                    device=d)) for d in ("cpu", "cuda")}
    assert on["cuda"]["kl"].value == pytest.approx(on["cpu"]["kl"].value, rel=1e-3, abs=1e-7)
    assert on["cuda"]["kl"].value == pytest.approx(r.value, rel=1e-6)  # the verification ran there
    assert on["cpu"]["kl"].loss_high <= 0.01 * 1.01


@pytest.mark.parametrize("classifier", [False, True])
def test_hugging_face_folder_from_its_config(tmp_path, classifier):
    folder = tmp_path / "bert"
    pytest.importorskip("transformers")
    texts = bert_folder(folder, classifier)
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
    (tmp_path / "usernets2.py").write_text(DIGITS_MLP)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "net.pt"), str(tmp_path / "net.zc"),
                             "--inputs", str(tmp_path / "x.npy"), "--module", "usernets2:make", "--json")
    assert code == 0, err
    rows = {r["metric"]: r for r in json.loads(out)}
    assert rows["kl"]["low"] <= rows["kl"]["value"] <= rows["kl"]["high"] and rows["kl"]["n"] == len(x)
