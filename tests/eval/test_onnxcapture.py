"""Layer inputs of ONNX graphs captured with onnxruntime (zoocodec.eval.onnxcapture) against the torch hooks'."""
import json
import warnings

import numpy as np
import pytest
import torch

import zoocodec
from support import run_cli
from zoocodec.eval.anymodel import OnnxRunner
from zoocodec.eval.calibration import Calibration, for_runner
from zoocodec.eval.evaluate import load_weights
from zoocodec.methods import parse_spec
from zoocodec.tuning.auto import reconstruct
from zoocodec.tuning.calibrate import collect, output_error

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class Tokens(torch.nn.Module):
    """Linear layers on 3-D inputs: the legacy exporter writes MatMul with a (in, out) initializer, then Add."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 12), torch.nn.Linear(12, 6)

    def forward(self, x):
        return self.b(torch.nn.functional.gelu(self.a(x))).mean(1)


def _cnn() -> torch.nn.Module:
    """Plain, strided, grouped, depthwise-dilated and 1x1 convolutions, then Linear layers (Gemm, transB)."""
    torch.manual_seed(0)
    C = torch.nn.Conv2d
    return torch.nn.Sequential(
        C(2, 8, 3, padding=1), torch.nn.ReLU(), C(8, 8, 3, stride=2, padding=1, groups=2), torch.nn.ReLU(),
        C(8, 8, 3, padding=2, dilation=2, groups=8), C(8, 6, 1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 5 * 5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)).eval()


def _export(net, x, path, batch: int | None = None) -> None:
    """ONNX export with a dynamic batch axis, or a fixed `batch`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(x[:batch or 2]),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes=None if batch else {"x": {0: "n"}})


def _case(kind, tmp_path):
    """(torch module, inputs, its ONNX export's Calibration, the export's weights)."""
    rng = np.random.default_rng(0)
    if kind.startswith("cnn"):
        net, x = _cnn(), rng.standard_normal((40, 2, 10, 10)).astype(np.float32)
    else:
        torch.manual_seed(1)
        net, x = Tokens().eval(), rng.standard_normal((30, 7, 8)).astype(np.float32)
    path = tmp_path / f"{kind}.onnx"
    _export(net, x, path, 8 if kind == "cnn-fixed" else None)  # a graph that fixes its batch: runs of 8
    np.save(tmp_path / "x.npy", x)
    weights = load_weights(path)
    run = OnnxRunner(path, tmp_path / "x.npy", None)
    assert run.fixed == (kind == "cnn-fixed")
    return net, x, for_runner(run, weights, "test inputs"), weights


def _torch_name(net, w: torch.Tensor) -> str:
    """The torch parameter an initializer holds (as it is, or transposed: MatMul's (in, out))."""
    for name, p in net.named_parameters():
        for cand in (w, w.T) if w.dim() == 2 else (w,):
            if cand.shape == p.shape and torch.equal(cand, p.detach()):
                return name
    raise AssertionError("no parameter holds this initializer")


@pytest.mark.parametrize("kind", ["cnn", "tokens", "cnn-fixed"])
def test_captured_h_equals_the_torch_hooks(kind, tmp_path):
    net, x, cal, weights = _case(kind, tmp_path)
    assert isinstance(cal, Calibration) and cal.net is None and not cal.skipped
    got = cal.measure(weights)
    expect = collect(net, lambda n: n(torch.from_numpy(x)), {k: k for k, _ in net.named_parameters()})
    assert len(got) == len(expect) == sum(p.dim() >= 2 for p in net.parameters())
    for name, li in got.items():
        ref = expect[_torch_name(net, weights[name])]
        assert li.count == ref.count and li.h.shape == ref.h.shape
        np.testing.assert_allclose(li.h, ref.h, rtol=1e-4, atol=1e-5 * np.abs(ref.h).max())
        np.testing.assert_allclose(li.mean, ref.mean, rtol=1e-4, atol=1e-5 * np.abs(ref.mean).max())
        assert li.bias is not None and li.bias[1] == 1 and weights[li.bias[0]].dim() == 1  # conv B, gemm C, add
    if kind == "tokens":
        assert cal.rounder.keywords["transposed"] == set(got)  # every MatMul B is stored (in, out)


@pytest.mark.parametrize("kind", ["cnn", "tokens"])
def test_gptq_through_onnx_lowers_the_layer_output_error(kind, tmp_path):
    net, x, cal, weights = _case(kind, tmp_path)
    inputs = cal.measure(weights)
    rounder = cal.rounder(inputs)
    flipped = rounder.transposed
    for name, li in inputs.items():
        w = weights[name]
        step = float(w.abs().max()) / 6
        plan = {name: parse_spec(f"uniform:step={step:.6g}")}
        target = rounder.targets(weights, plan)[name]
        assert target.shape == w.shape
        # the method's own rounding of the target gives the target back: the file holds GPTQ's indices
        assert torch.allclose(reconstruct({name: target}, plan)[name], target, atol=1e-6)
        nearest = reconstruct({name: w}, plan)[name]
        view = (lambda t: t.T) if name in flipped else (lambda t: t)
        ours = output_error(view(w).numpy(), view(target).numpy(), li)
        plain = output_error(view(w).numpy(), view(nearest).numpy(), li)
        assert ours < plain, name


def _graph(tmp_path):
    """x (n, 6) -> MatMul W1 -> Relu -> MatMul Identity(W2) -> MatMul W3 -> MatMul W3 -> y: W1 is handled,
    W2 goes through another op, W3 is read twice; and a Conv1d-like 1-D Conv on a side branch."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = {"W1": rng.standard_normal((6, 32)), "W2": rng.standard_normal((32, 16)),
             "W3": rng.standard_normal((16, 16)), "K": rng.standard_normal((4, 1, 3))}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Identity", ["W2"], ["W2t"]),
             helper.make_node("MatMul", ["r1", "W2t"], ["h2"]), helper.make_node("MatMul", ["h2", "W3"], ["h3"]),
             helper.make_node("MatMul", ["h3", "W3"], ["h4"]),
             helper.make_node("Unsqueeze", ["h4", "ax"], ["u"]), helper.make_node("Conv", ["u", "K"], ["c"]),
             helper.make_node("Flatten", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
        + [numpy_helper.from_array(np.array([1], dtype=np.int64), "ax")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    x = rng.standard_normal((400, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return path, x


def test_an_op_not_handled_keeps_nearest_rounding(tmp_path, monkeypatch, capsys):
    """A weight behind another op, one read by two nodes and a 1-D Conv's: nearest, said why; the rest GPTQ."""
    path, _ = _graph(tmp_path)
    weights = load_weights(path)
    cal = for_runner(OnnxRunner(path, tmp_path / "x.npy", None), weights, "x")
    assert set(cal.measure(weights)) == {"W1"}
    assert cal.skipped == {"W2": "input of Identity, not of MatMul/Gemm/Conv", "W3": "read by 2 nodes",
                           "K": "a 1-D Conv's weight (2-D only)"}
    out = tmp_path / "odd.zc"
    code, stdout, err = run_cli(monkeypatch, capsys, "compress", str(path), "-o", str(out), "--json",
                                "--target-loss", "5%", "--inputs", str(tmp_path / "x.npy"), "--output-kind", "values",
                                "--min-size", "16")
    assert code == 0, err
    with zoocodec.Archive(out) as a:
        rounding = a.header["meta"]["auto"]["rounding"]
    assert rounding["rounding"] == "gptq" and rounding["rounded"] == ["W1"]
    assert rounding["nearest"] == cal.skipped and rounding["calibration_inputs"] == 200
    assert "nearest for 3 initializers" in err and json.loads(stdout)["ratio"] > 1


def test_a_hostile_graph_is_one_line(tmp_path, monkeypatch, capsys):
    """A graph onnxruntime cannot run with its layer inputs as outputs: exit 2, one line, no traceback."""
    path, _ = _graph(tmp_path)
    model = onnx.load(str(path))
    model.graph.node[0].op_type = "NoSuchOp"  # the weights still load; no session can be made
    onnx.save(model, str(path))
    code, _, err = run_cli(monkeypatch, capsys, "compress", str(path), "-o", str(tmp_path / "h.zc"),
                           "--target-loss", "5%", "--inputs", str(tmp_path / "x.npy"), "--min-size", "16")
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") == 0, err


def test_sequential_capture_by_topological_groups(tmp_path):
    """GPTQ's order: the first group's inputs are the data's, a later group's come from the rounded layers
    before it (and carry the drift of their mean); the groups follow the graph's dependencies."""
    net, x, cal, weights = _case("cnn", tmp_path)
    from zoocodec.eval.onnxcapture import layers

    found, _ = layers(OnnxRunner(tmp_path / "cnn.onnx", tmp_path / "x.npy", None).graph, weights)
    assert [x.depth for x in found] == list(range(1, len(found) + 1))  # a chain: one layer per group
    original = cal.measure(weights)
    plan = {k: parse_spec(f"uniform:step={float(weights[k].abs().max()) / 4:.6g}") for k in original}
    rounder = cal.rounder(original)
    seq = cal.sequential(weights, plan, rounder, original)
    first = found[0].weight
    assert np.allclose(seq[first].h, original[first].h) and seq[first].drift is not None
    assert not np.allclose(seq[found[1].weight].h, original[found[1].weight].h)
    assert not np.allclose(seq[found[1].weight].drift, 0)


def test_automatic_mode_sequential_on_an_onnx_graph(tmp_path):
    from zoocodec.tuning.auto import auto_compress

    _, x, _, _ = _case("tokens", tmp_path)
    out = tmp_path / "seq.zc"
    r = auto_compress(tmp_path / "tokens.onnx", out, 0.02, inputs=tmp_path / "x.npy", min_size=16,
                      output="values", sequential=True)
    with zoocodec.Archive(out) as a:
        rounding = a.header["meta"]["auto"]["rounding"]
    assert "topological groups" in rounding["layer_inputs"] and rounding["rounding"] == "gptq" and r.within


def test_same_padding_and_a_transposed_gemm(tmp_path):
    """auto_pad SAME_UPPER on a strided Conv (one pixel of padding at the end), and a Gemm with transA and a
    (in, out) B: H as the torch hooks give it on the same padded inputs, B rounded as its transpose."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    k, b = rng.standard_normal((4, 2, 3, 3)).astype(np.float32), rng.standard_normal((100, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "K"], ["c"], strides=[2, 2], auto_pad="SAME_UPPER"),
             helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Transpose", ["f"], ["ft"], perm=[1, 0]),
             helper.make_node("Gemm", ["ft", "B"], ["y"], transA=1)]
    graph = helper.make_graph(nodes, "same", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(k, "K"), numpy_helper.from_array(b, "B")])
    path = tmp_path / "same.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.standard_normal((24, 2, 10, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    weights = load_weights(path)
    cal = for_runner(OnnxRunner(path, tmp_path / "x.npy", None), weights, "x")
    got = cal.measure(weights)
    net = torch.nn.Sequential(torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.Conv2d(2, 4, 3, 2, bias=False),
                              torch.nn.Flatten(), torch.nn.Linear(100, 3, bias=False))
    net.load_state_dict({"1.weight": torch.from_numpy(k), "3.weight": torch.from_numpy(b.T.copy())})
    expect = collect(net, lambda n: n(torch.from_numpy(x)), {"1.weight": "K", "3.weight": "B"})
    for name in ("K", "B"):
        np.testing.assert_allclose(got[name].h, expect[name].h, rtol=1e-4, atol=1e-5 * np.abs(expect[name].h).max())
    assert cal.rounder.keywords["transposed"] == {"B"}



class Bert(torch.nn.Module):
    """A BertModel called as sentence encoders call it: input_ids and attention_mask, the last hidden state."""

    def __init__(self, transformers):
        super().__init__()
        config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=24, attn_implementation="eager")
        self.bert = transformers.BertModel(config, add_pooling_layer=False).eval()

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _bert_export(tmp_path, folding: bool = True, n: int = 20):
    """(the net, its ONNX export, token ids padded with 0 at the end, the attention mask), the inputs saved as
    tmp_path/ids.npz."""
    net = Bert(pytest.importorskip("transformers")).eval()
    torch.manual_seed(4)
    for p in net.parameters():  # distinct values: zero biases and unit norms would be shared initializers
        p.data.normal_(0, 0.3)
    rng = np.random.default_rng(4)
    ids = rng.integers(1, 60, (n, 9)).astype(np.int64)
    mask = (np.arange(9) < rng.integers(3, 10, (n, 1))).astype(np.int64)  # padded at the end
    ids[mask == 0] = 0
    path = tmp_path / "bert.onnx"
    axes = {"input_ids": {0: "n", 1: "s"}, "attention_mask": {0: "n", 1: "s"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], dynamic_axes=axes, opset_version=17,
                          do_constant_folding=folding)
    np.savez(tmp_path / "ids.npz", input_ids=ids, attention_mask=mask)
    return net, path, ids, mask


def _real_token_h(net, ids, mask, names) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Linear weight name -> (E[x x^T], E[x]) of its inputs at the positions `mask` keeps, from torch hooks."""
    keep, out, hooks = torch.from_numpy(mask != 0), {}, []
    for name, mod in net.named_modules():
        if f"{name}.weight" in names:
            def hook(_m, args, name=name):
                x = args[0][keep].double()
                out[f"{name}.weight"] = ((x.T @ x / len(x)).numpy(), x.mean(0).numpy())
            hooks.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        net(torch.from_numpy(ids), torch.from_numpy(mask))
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("folding", [True, False])
def test_a_bert_encoder_export(folding, tmp_path):
    """A BertModel exported as a user would (input_ids and attention_mask, padded, dynamic batch and sequence):
    every Linear (query, key, value, attention output, both FFN layers) is a MatMul then an Add, on a (in, out)
    initializer (constant folding, the default) or on a Transpose of the (out, in) one (without), captured with
    the H the torch hooks give over the real tokens (and over every position with `unpadded=False`); only the
    embedding tables (Gather) keep nearest."""
    net, path, ids, mask = _bert_export(tmp_path, folding)
    weights = load_weights(path)
    cal = for_runner(OnnxRunner(path, tmp_path / "ids.npz", None), weights, "texts")
    got = cal.measure(weights)
    tables = {n for n, p in net.named_parameters() if ".embeddings." in n and p.dim() == 2}
    assert len(tables) == 3 and {_torch_name(net, weights[k]) for k in cal.skipped} == tables
    assert set(cal.skipped.values()) == {"input of Gather, not of MatMul/Gemm/Conv"}
    linear = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
    expect = _real_token_h(net, ids, mask, linear)
    assert len(got) == len(linear) == 12 and cal.rounder.keywords["transposed"] == (set(got) if folding else set())
    for name, li in got.items():  # H over the real tokens only: the padded positions are masked out downstream
        torch_name = _torch_name(net, weights[name])
        h, mean = expect[torch_name]
        assert li.count == int(mask.sum()) < 20 * 9
        np.testing.assert_allclose(li.h.reshape(h.shape), h, rtol=1e-4, atol=1e-5 * np.abs(h).max())
        np.testing.assert_allclose(li.mean.reshape(mean.shape), mean, rtol=1e-4, atol=1e-5 * np.abs(mean).max())
        assert li.bias is not None
        assert _torch_name(net, weights[li.bias[0]]) == torch_name.removesuffix("weight") + "bias"
    from zoocodec.eval import onnxcapture as O

    run = OnnxRunner(path, tmp_path / "ids.npz", None)  # every position, padding included: the torch hooks' H
    padded = O.capture(run.graph, weights, run.arrays, O.layers(run.graph, weights)[0], run.batch, unpadded=False)
    every = collect(net, lambda n: n(torch.from_numpy(ids), torch.from_numpy(mask)), {k: k for k in linear})
    for name, li in padded.items():
        ref = every[_torch_name(net, weights[name])]
        assert li.count == ref.count == 20 * 9
        np.testing.assert_allclose(li.h, ref.h, rtol=1e-4, atol=1e-5 * np.abs(ref.h).max())
    rounder, view = cal.rounder(got), (lambda t: t.T) if folding else (lambda t: t)  # GPTQ's (out, in) view
    for name, li in got.items():  # the rounding lowers each layer's output error, in either layout
        plan = {name: parse_spec(f"uniform:step={float(weights[name].abs().max()) / 6:.6g}")}
        target, nearest = rounder.targets(weights, plan)[name], reconstruct(weights, plan)[name]
        w = view(weights[name]).numpy()
        assert output_error(w, view(target).numpy(), li) < output_error(w, view(nearest).numpy(), li), name


def test_word_embedding_table_by_graph_structure(tmp_path):
    """The table a Gather reads at the token ids of a graph input (through a Cast too) is found whatever its
    initializer is named; the position and token-type tables (indices from constants) are not. The ids counted
    leave out the positions the attention mask pads."""
    from onnx import helper, numpy_helper

    from zoocodec.eval.onnxcapture import token_ids, token_tables

    net, path, ids, mask = _bert_export(tmp_path)
    proto = onnx.load(str(path))
    table = next(i for i in proto.graph.initializer if i.name.endswith("word_embeddings.weight"))
    gather = next(n for n in proto.graph.node if n.op_type == "Gather" and n.input[0] == table.name)
    table.name, gather.input[0] = "onnx::Gather_7", "onnx::Gather_7"  # a name that says nothing
    proto.graph.node.insert(0, helper.make_node("Cast", ["input_ids"], ["ids32"], to=onnx.TensorProto.INT32))
    gather.input[1] = "ids32"
    onnx.save(proto, str(path))
    weights = load_weights(path)
    assert token_tables(path.read_bytes(), weights) == {"onnx::Gather_7": "input_ids"}
    got = token_ids({"input_ids": ids, "attention_mask": mask}, "input_ids")
    assert len(got) == int(mask.sum()) and np.array_equal(np.sort(got), np.sort(ids[mask == 1]))
    assert np.array_equal(token_ids({"input_ids": ids}, "input_ids"), ids.ravel())
    cal = for_runner(OnnxRunner(path, tmp_path / "ids.npz", None), weights, "texts")  # the graph still runs
    assert len(cal.measure(weights)) == 12
    assert numpy_helper.to_array(table).shape == (60, 16)


def test_automatic_mode_gives_an_onnx_word_embedding_table_a_step_per_row(tmp_path):
    """With --calib token ids, automatic mode weights the rows of an ONNX encoder's word-embedding table by
    their tokens' counts there (padding left out), measures its sensitivity per row group, and writes it with
    a step per row; without --calib (only the search's own texts) it keeps one step."""
    from zoocodec.tuning.auto import auto_compress

    _net, path, ids, mask = _bert_export(tmp_path, n=40)
    np.savez(tmp_path / "calib.npz", input_ids=ids[:20], attention_mask=mask[:20])
    table = "bert.embeddings.word_embeddings.weight"
    for calib in (tmp_path / "calib.npz", None):
        out = tmp_path / f"auto-{calib is not None}.zc"
        auto_compress(path, out, 0.01, inputs=tmp_path / "ids.npz", calib=calib, output="values", min_size=256)
        with zoocodec.Archive(out) as a:
            auto = a.header["meta"]["auto"]
            spec = next(t for t in a.header["tensors"] if t["name"] == table)["method"]
        assert len(auto["sensitivities"][table]) == 4  # row groups
        if calib is None:
            assert "token_rows" not in auto and spec["method"] == "uniform"
            continue
        rows = auto["token_rows"][table]
        assert rows["texts"] == 20 and rows["about"] == "--calib calib.npz"
        assert rows["tokens"] == int(mask[:20].sum()) and rows["rows_seen"] == len(np.unique(ids[:20][mask[:20] == 1]))
        assert spec["method"] == "rdoq" and spec["lam"] == 0  # a step per row (one for all at strength 0)
        assert len(set(spec["group_steps"] or ())) > 1 if auto["strength"] > 0 else spec["group_steps"] is None
