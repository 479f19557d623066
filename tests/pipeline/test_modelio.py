"""Every input format reads and writes back with names, shapes, dtypes and lossless tensors exact."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import zoocodec
from zoocodec.errors import ModelFormatError
from zoocodec.pipeline.modelio import open_model


def assert_model_close(original: dict, decoded: dict, lossless_names=()):
    assert sorted(decoded) == sorted(original)
    for k, v in original.items():
        assert decoded[k].dtype == v.dtype and decoded[k].shape == v.shape, k
        if k in lossless_names or not v.is_floating_point():
            assert torch.equal(decoded[k], v), k
        else:
            err = (decoded[k].double() - v.double()).abs().max().item()
            eps = torch.finfo(v.dtype).eps  # the cast back to a 16-bit float rounds once more
            assert err <= v.double().abs().max().item() * (0.5 / 127 + eps) * 1.0001, k  # 8-bit per channel


def small_tensor_names(model, min_size=4096):
    return {k for k, v in model.items() if v.numel() < min_size}


def test_safetensors_round_trip(tmp_path, model):
    src = tmp_path / "m.safetensors"
    save_file(model, src, metadata={"who": "test"})
    zoocodec.compress(src, tmp_path / "m.zc", "uniform:bits=8", min_size=200)
    out = zoocodec.decompress(tmp_path / "m.zc", tmp_path / "back.safetensors")
    back = load_file(out)
    assert_model_close(model, {k: back[k] for k in model}, small_tensor_names(model, 200))
    from safetensors import safe_open

    assert safe_open(str(out), "pt").metadata() == {"who": "test"}


@pytest.mark.parametrize("nest,prefix", [(None, ""), ("state_dict", ""), ("model", "module.")])
def test_pytorch_checkpoint_round_trip(tmp_path, model, nest, prefix):
    sd = {prefix + k: v for k, v in model.items()}
    torch.save({nest: sd, "epoch": 3} if nest else sd, tmp_path / "m.pt")
    src = open_model(tmp_path / "m.pt")
    assert src.names == list(model)
    zoocodec.compress(tmp_path / "m.pt", tmp_path / "m.zc", min_size=200)
    zoocodec.decompress(tmp_path / "m.zc", tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    back = back[nest] if nest else back
    assert_model_close(model, {k: back[prefix + k] for k in model}, small_tensor_names(model, 200))


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.zeros(3), "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelFormatError, match="never unpickles") as e:
        open_model(tmp_path / "evil.pt")
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value) and "Unsupported global" in str(e.value)


def test_sharded_hf_folder_round_trip(tmp_path, model):
    folder = tmp_path / "hf"
    folder.mkdir()
    names = list(model)
    shards = {"model-00001-of-00002.safetensors": names[:4], "model-00002-of-00002.safetensors": names[4:]}
    for shard, keys in shards.items():
        save_file({k: model[k] for k in keys}, folder / shard)
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"hidden_size": 48}')
    zoocodec.compress(folder, tmp_path / "m.zc", min_size=200)
    zoocodec.decompress(tmp_path / "m.zc", tmp_path / "back")
    assert (tmp_path / "back" / "config.json").read_text() == '{"hidden_size": 48}'
    for shard, keys in shards.items():
        back = load_file(tmp_path / "back" / shard)
        assert sorted(back) == sorted(keys)
    back = zoocodec.decompress(tmp_path / "m.zc")
    assert_model_close(model, back, small_tensor_names(model, 200))


def test_onnx_round_trip_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * 6 * 6, 10)
    )
    x = torch.randn(2, 1, 8, 8)
    torch.onnx.export(net, (x,), tmp_path / "m.onnx", dynamo=False, input_names=["x"])
    zoocodec.compress(tmp_path / "m.onnx", tmp_path / "m.zc", "uniform:bits=8", min_size=200)
    zoocodec.decompress(tmp_path / "m.zc", tmp_path / "back.onnx")
    ref = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    got = ort.InferenceSession(str(tmp_path / "back.onnx")).run(None, {"x": x.numpy()})[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert not np.array_equal(got, ref)  # the 8-bit weights really were used


def test_scalar_tensors_keep_their_shape(tmp_path):
    """0-d tensors (an ONNX graph's scalar constants, a checkpoint's counters) come back 0-d from every reader."""
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale = numpy_helper.from_array(np.array(1.5, dtype=np.float32), "scale")
    w = numpy_helper.from_array(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Mul", ["y0", "scale"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], [scale, w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    zoocodec.compress(tmp_path / "m.onnx", tmp_path / "m.zc", "lossless")
    zoocodec.decompress(tmp_path / "m.zc", tmp_path / "back.onnx")
    back = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "back.onnx").graph.initializer}
    assert back["scale"].shape == () and back["scale"] == np.float32(1.5)
    x = np.ones((2, 8), np.float32)
    assert np.array_equal(ort.InferenceSession(str(tmp_path / "back.onnx")).run(None, {"x": x})[0],
                          ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x})[0])
    save_file({"step": torch.tensor(3, dtype=torch.int64), "w": torch.ones(4, 4)}, tmp_path / "s.safetensors")
    assert open_model(tmp_path / "s.safetensors").tensor("step").array.shape == ()
    zoocodec.compress(tmp_path / "s.safetensors", tmp_path / "s.zc", "lossless")
    assert zoocodec.decompress(tmp_path / "s.zc")["step"].shape == ()


def test_real_pytorch_zoo_model(tmp_path, mnist_path):
    zoocodec.compress(mnist_path, tmp_path / "m.zc", "uniform:bits=8")
    back = zoocodec.decompress(tmp_path / "m.zc")
    sd = torch.load(mnist_path, weights_only=True)
    assert_model_close(dict(sd), back, small_tensor_names(sd))


def test_unreadable_inputs(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    (tmp_path / "bad.onnx").write_bytes(b"\xff\xff\xff not protobuf")
    (tmp_path / "empty").mkdir()
    for p in ("x.txt", "bad.safetensors", "bad.onnx", "empty", "missing.pt"):
        with pytest.raises(ModelFormatError):
            open_model(tmp_path / p)


def hf_folder(path, model):
    path.mkdir()
    save_file({k: model[k] for k in ("fc.weight", "conv.weight")}, path / "model.safetensors")
    (path / "config.json").write_text("{}")
    return path


def test_hf_index_naming_a_shard_outside_is_refused(tmp_path, model):
    folder = hf_folder(tmp_path / "hf", model)
    save_file({"x": model["fc.bias"]}, tmp_path / "outside.safetensors")
    for shard in ("../outside.safetensors", str(tmp_path / "outside.safetensors"), "config.json"):
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": shard}}))
        with pytest.raises(ModelFormatError, match="shard name"):
            open_model(folder)


def test_hf_index_weight_map_not_an_object(tmp_path, model):
    folder = hf_folder(tmp_path / "hf", model)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["model.safetensors"]}))
    with pytest.raises(ModelFormatError, match="weight_map"):
        open_model(folder)


@pytest.mark.parametrize("link", ["tokenizer.json", "model.safetensors", "sub"])
def test_links_out_of_an_input_folder_are_not_followed(tmp_path, model, link):
    folder = hf_folder(tmp_path / "hf", model)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text("secret")
    save_file({"x": model["fc.bias"]}, secret / "w.safetensors")
    if link == "model.safetensors":
        (folder / link).unlink()
    (folder / link).symlink_to({"tokenizer.json": secret / "key.txt", "model.safetensors": secret / "w.safetensors",
                                "sub": secret}[link])
    with pytest.raises(ModelFormatError, match="link out of the model folder"):
        open_model(folder)


def test_links_inside_an_input_folder_are_fine(tmp_path, model):
    folder = hf_folder(tmp_path / "hf", model)
    (folder / "tokenizer.json").symlink_to(folder / "config.json")
    (folder / "again").symlink_to(folder)
    src = open_model(folder)
    assert sorted(src.files) == ["config.json", "tokenizer.json"]


def test_safetensors_tensors_are_the_files_bytes(tmp_path):
    """A tensor reads as its bytes in the file whatever its offset (mapped from a page-unaligned
    offset; copied where the offset does not suit its dtype), empty ones too; a mapped tensor is
    copy-on-write (writing to it leaves the file as it was); a file cut short after opening is
    refused in one line, never a crash."""
    g = np.random.default_rng(0)
    tensors = {"a.odd": torch.from_numpy(g.integers(0, 255, 3, dtype=np.uint8)),  # puts the rest off alignment
               "b.unaligned": torch.from_numpy(g.standard_normal((5, 7)).astype(np.float32)),
               "c.big": torch.from_numpy(g.standard_normal((300, 1000)).astype(np.float32)).to(torch.bfloat16),
               "d.empty": torch.zeros((0, 4)), "e.float": torch.from_numpy(g.standard_normal(5000).astype(np.float32))}
    header, blobs, at = {}, [], 0
    for name, t in tensors.items():  # in this order: safetensors' own writer would align them
        raw = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": {torch.uint8: "U8", torch.float32: "F32", torch.bfloat16: "BF16"}[t.dtype],
                        "shape": list(t.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    text = json.dumps(header).encode()
    path = tmp_path / "m.safetensors"
    data = len(text).to_bytes(8, "little") + text + b"".join(blobs)
    path.write_bytes(data)
    src = open_model(path)
    read = {t.name: t for t in src.tensors()}
    for name, t in tensors.items():
        assert torch.equal(torch.from_numpy(np.array(read[name].array)).view(t.dtype).view(t.shape), t), name
        assert torch.equal(torch.from_numpy(src.tensor(name).array).view(t.dtype).view(t.shape), t), name
    read["c.big"].array[:] = 0
    assert path.read_bytes() == data
    with open(path, "r+b") as f:
        f.truncate(len(data) - 100)
    with pytest.raises(ModelFormatError, match="cut short"):
        src.tensor("e.float")


def test_compressing_safetensors_never_imports_torch(tmp_path):
    """A safetensors file reads as NumPy arrays: `compress` of one (and of a Hugging Face folder, its
    shards) never imports torch, about a second of every such process; its tensors are the file's."""
    import subprocess
    import sys
    from pathlib import Path

    g = np.random.default_rng(0)
    model = {"w": torch.from_numpy(g.standard_normal((64, 256)).astype(np.float32)).to(torch.bfloat16),
             "b": torch.from_numpy(g.standard_normal(64).astype(np.float32))}
    (tmp_path / "hf").mkdir()
    for path in (tmp_path / "m.safetensors", tmp_path / "hf" / "model.safetensors"):
        save_file(model, path)
    child = ("import sys\nfrom zoocodec.pipeline import core\n"
             "for src in sys.argv[1:]:\n    core.compress(src, src + '.zc', 'lossless')\n"
             "print('torch' in sys.modules)\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", child, str(tmp_path / "m.safetensors"), str(tmp_path / "hf")],
                         capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["False"]
    for zc in (tmp_path / "m.safetensors.zc", tmp_path / "hf.zc"):
        back = zoocodec.decompress(zc)
        assert all(torch.equal(back[k], v) for k, v in model.items())
