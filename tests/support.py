"""Helpers shared by the tests: the float-array strategy, the exact round trip, the CLI runner, forgery, GPU jobs,
the Huffman and ctx damage checks."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import zstandard
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zoocodec.container import ALIGN, CHECK_CHUNK, TRAILER_SIZE, chunk_sums, trailer
from zoocodec.methods import Encoded, TensorData, parse_spec

floats = hnp.arrays(
    st.sampled_from(["float32", "float16"]),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=9),
    elements=st.floats(-100, 100, width=16),
)


def roundtrip(text: str, t: TensorData) -> tuple[Encoded, np.ndarray]:
    """Encode and decode `t`; the decoder must return byte for byte what the encoder reported.

    Returns the Encoded and the decoded values as float64.
    """
    spec = parse_spec(text)
    enc = spec.encode(t)
    back = spec.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    assert back.dtype == t.array.dtype and back.shape == t.array.shape
    assert back.tobytes() == enc.recon.tobytes()
    return enc, TensorData(t.name, t.dtype, back).float64()


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `zoocodec ARGS` in this process: (exit status, stdout, stderr)."""
    import sys

    from zoocodec.cli import main

    monkeypatch.setattr(sys, "argv", ["zoocodec", *map(str, args)])
    try:
        code = main()
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err


class Forge:
    """A real container taken apart so a test can rewrite its header and payloads the way an
    attacker would: every checksum (segment chunks, header) recomputed, as its format version
    (3 or 4, from its preamble) computes them."""

    def __init__(self, data: bytes):
        self.version = struct.unpack_from("<I", data, 8)[0]
        offset, length = struct.unpack_from("<QQ", data, len(data) - TRAILER_SIZE)
        self.body = bytearray(data[:offset])
        self.header = json.loads(zstandard.ZstdDecompressor().decompress(data[offset:offset + length]))

    def add(self, payload: bytes) -> list:
        """Append a payload; returns its [offset, length, chunk checksums] for the header."""
        self.body += bytes(-len(self.body) % ALIGN)
        chunk = self.header.get("crc_chunk") if isinstance(self.header.get("crc_chunk"), int) else CHECK_CHUNK
        seg = [len(self.body), len(payload), chunk_sums(payload, max(chunk, 1), self.version)]
        self.body += payload
        return seg

    def attach(self, name: str, content: bytes) -> None:
        self.header["files"][name] = self.add(zstandard.ZstdCompressor().compress(content))

    def to_bytes(self, header_frame: bytes | None = None, json_text: bytes | None = None) -> bytes:
        """The file; `header_frame` replaces the compressed header (e.g. a zstd bomb), `json_text` its text."""
        body = self._orphans_zeroed() + bytes(-len(self.body) % ALIGN)
        if header_frame is None:
            text = json_text or json.dumps(self.header, sort_keys=True).encode()
            header_frame = zstandard.ZstdCompressor().compress(text)
        offset = len(body)
        body += header_frame + bytes(-len(header_frame) % ALIGN)
        return bytes(body + trailer(offset, header_frame, self.version))

    def _orphans_zeroed(self) -> bytearray:
        """The body with the bytes no segment names any more (payloads replaced by add) zeroed,
        as a writer leaves only zero padding between segments (`zoocodec verify` checks it)."""
        body = bytearray(self.body)
        h = self.header if isinstance(self.header, dict) else {}
        tensors = h.get("tensors") if isinstance(h.get("tensors"), list) else []
        groups = [t.get("segments") for t in tensors if isinstance(t, dict)] + [h.get("files")]
        spans = sorted((s[0], s[0] + s[1]) for g in groups if isinstance(g, dict) for s in g.values()
                       if isinstance(s, list) and len(s) == 3 and all(type(x) is int and x >= 0 for x in s[:2]))
        at = ALIGN
        for start, end in spans + [(len(body), len(body))]:
            if start > at:
                body[at:min(start, len(body))] = bytes(min(start, len(body)) - at)
            at = max(at, end)
        return body

    def write(self, path, header_frame: bytes | None = None):
        path.write_bytes(self.to_bytes(header_frame))
        return path


REPO = Path(__file__).resolve().parent.parent


def console_script() -> list[str]:
    """The installed `zoocodec` command beside this interpreter (else `python -m zoocodec.cli`)."""
    script = Path(sys.executable).parent / "zoocodec"
    return [str(script)] if script.exists() else [sys.executable, "-m", "zoocodec.cli"]


def script_env(**extra: str) -> dict[str, str]:
    """The environment for the console script: this checkout's zoocodec first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.update(extra)
    return env


def run_script(*args, cwd=None, timeout: float = 300, **env: str):
    """Run the real console script as a user would: a CompletedProcess with text output."""
    return subprocess.run([*console_script(), *map(str, args)], cwd=cwd, env=script_env(**env),
                          capture_output=True, text=True, timeout=timeout)


# ---- models outside the zoo, made in the tests (tests/eval/test_anymodel.py, tests/tuning/test_auto.py) ----
DIGITS_MLP = """
import torch


def make():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
"""


def digits_mlp():
    """An MLP trained on scikit-learn's 8x8 digits (98%+ after a second of training) and its 397
    held-out digits as a float32 array (N, 1, 8, 8). DIGITS_MLP is the source of a module that builds it."""
    import torch
    from sklearn import datasets

    x, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y)
    torch.manual_seed(0)
    net = trained_mlp(x[:1400], y[:1400])
    assert (net(x[1400:]).argmax(1) == y[1400:]).float().mean() > 0.9
    return net, x[1400:].numpy()


def trained_mlp(x, y):
    """DIGITS_MLP's module (the same source the tests write as the user's module) fitted to inputs `x`
    (N, 1, 8, 8) and labels `y` by 150 Adam steps, in eval mode."""
    import torch

    scope: dict = {}
    exec(DIGITS_MLP, scope)
    net = scope["make"]()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def bn_net():
    """Two conv + BN layers whose running statistics are far from what noise gives (zoocodec.eval.distilled makes
    images that match them: tests/eval/test_distilled.py, tests/tuning/test_auto.py)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8))
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
    return net.eval()


def onnx_digits(net, path, input_name: str) -> None:
    """Export the digits net to ONNX with a dynamic batch axis (the legacy exporter, quietly)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, input_names=[input_name],
                          dynamic_axes={input_name: {0: "n"}})


def bert_folder(folder, classifier: bool, n_texts: int = 80) -> list[str]:
    """A small BERT built from a config by transformers (random weights) with a WordPiece tokenizer,
    saved as a Hugging Face folder; returns `n_texts` sentences of its vocabulary."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = [f"w{i}" for i in range(150)]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64, num_labels=5)
    torch.manual_seed(0)
    cls = transformers.BertForSequenceClassification if classifier else transformers.BertModel
    cls(config).eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, rng.integers(3, 20))) for _ in range(n_texts)]


def host_memory(n: int) -> np.ndarray:
    """A staging buffer in ordinary memory (the NumPy emulation's page-locked one)."""
    return np.zeros(n, np.uint8)


def gpu_job(archive, name: str):
    """kernels/decode.py's job of one tensor (None where the kernels do not take it), its payloads
    staged in ordinary memory: what the NumPy emulation of the GPU decoder reads."""
    from zoocodec.kernels import decode

    found = decode.jobs(archive, [name], alloc=host_memory)[1]
    return found[0] if found else None


def check_huffman_damage(data, decode) -> None:
    """A 70,000-byte Huffman plane with 1-3 bytes of its stream flipped (hypothesis `data`), past its
    checksum: the native parser or `decode` (a GPU decoder's Huffman -> its bytes, ContainerError where it
    flags a substream) refuses it exactly where the CPU decoder does, and otherwise gives its bytes."""
    from zoocodec.codecs import native
    from zoocodec.errors import ContainerError
    from zoocodec.kernels import decode as G

    eng = native.engine()
    plane = np.random.default_rng(5).geometric(0.3, 70000).clip(1, 40).astype(np.uint8)
    stream = bytearray(eng.huff_encode(plane, eng.huff_lengths(eng.byte_histogram(plane)), 17500))
    for _ in range(data.draw(st.integers(1, 3))):
        stream[data.draw(st.integers(0, len(stream) - 1))] ^= data.draw(st.integers(1, 255))
    stream = bytes(stream)
    try:
        cpu = eng.huff_decode(stream, plane.size)
    except eng.CorruptStream:
        cpu = None
    try:
        chunk, table, offsets, lengths = eng.huff_frame(stream, plane.size)
        body = memoryview(stream)[int(offsets[0]) : int(offsets[0]) + int(lengths.sum())]
        gpu = decode(G.Huffman(plane.size, chunk, table, [int(x) for x in lengths], body))
    except (eng.CorruptStream, ContainerError):
        gpu = None
    assert (cpu is None) == (gpu is None)
    if gpu is not None:
        assert gpu.tobytes() == cpu.tobytes()


def check_ctx_damage(tmp_path_factory, data, weight, levels) -> None:
    """A byte of a ctx payload of `weight` flipped (hypothesis `data` draws the spec, with and without group
    ends, and the flip; each file written once), past its checksum: the native parser or `levels` (a GPU
    decoder's Contexts -> the levels it puts in place, ContainerError where it flags a stream) refuses it
    exactly where the CPU decoder does, and otherwise gives its levels."""
    from zoocodec.codecs import context
    from zoocodec.errors import ContainerError
    from zoocodec.kernels import decode as G
    from zoocodec.pipeline.core import Archive, compress

    spec = data.draw(st.sampled_from(["uniform:bits=6,per_tensor=true,coder=ctx",
                                      "uniform:bits=4,group=32,zero=true,coder=ctx"]))
    path = tmp_path_factory.getbasetemp() / f"ctx-damage-{'x'.join(map(str, weight.shape))}-{weight.dtype}.{len(spec)}"
    if not path.exists():
        compress({"w": weight}, path, spec, min_size=100)
    with Archive(path) as a:
        raw = bytearray(a.container.segment("t", tuple(a.entries["w"]["segments"]["symbols"])))
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    count = weight.numel()
    try:
        cpu = context.decode(bytes(raw), count)
    except (ContainerError, ValueError):
        cpu = None
    try:
        stream = G.parse_ctx(bytes(raw), count, "t")
        assert isinstance(stream, G.Contexts)  # (both specs' payloads have contexts)
        gpu = levels(stream)
    except ContainerError:
        gpu = None
    assert (cpu is None) == (gpu is None)
    if gpu is not None:
        assert np.asarray(gpu).tolist() == np.asarray(cpu).tolist()


def standin_gpu():
    """A "cuda" zoocodec Device whose torch device is the CPU: the code a GPU runs (weights moved, models built
    under torch's default device, outputs brought back) runs here, its results the CPU's to the bit."""
    from zoocodec.device import Device

    class Standin(Device):
        @property
        def torch(self) -> str:
            return "cpu"

        @property
        def label(self) -> str:
            return "cuda:0 (the CPU standing in)"

    return Standin("cuda", 0)
