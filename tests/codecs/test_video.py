"""Video coding of integer weights: exact lossless round trips, the lossy bound, corruption, hardware paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("av")

import zoocodec
from zoocodec.codecs import nvdec, parse_coder, video, videostream
from zoocodec.errors import ContainerError, SpecError
from zoocodec.kernels import uniform as K
from zoocodec.methods import parse_spec
from zoocodec.pipeline.core import load


@pytest.fixture(scope="module")
def mnist_symbols(mnist_path):
    """Real weights: mnist-cnn's second conv layer (64x32x3x3), quantized per channel."""
    t = next(t for t in load(mnist_path).tensors() if t.name == "conv_layers.3.weight")
    w = t.float64()
    return {bits: K.quantize(w, parse_spec(f"uniform:bits={bits}").steps_for(w), np) for bits in (4, 8, 10, 12, 16)}


@pytest.mark.parametrize("codec", ["h264", "hevc"])
@pytest.mark.parametrize("bits", [4, 8, 10, 12, 16])
def test_lossless_round_trip_real_weights(mnist_symbols, codec, bits):
    s = mnist_symbols[bits]
    data = video.encode(s, video.Options(codec=codec, hw="cpu"))
    h = video.Header.unpack(data)
    # wider than the codec's depth: split into 8-bit planes (h264 stops at 10 bits, hevc at 12)
    assert h.planes == (1 if bits <= max(video.CODECS[codec].depths) else 2)
    assert np.array_equal(video.decode(data, s.size, hw="cpu"), s.reshape(-1))


@pytest.mark.parametrize("codec", ["h264", "hevc"])
@pytest.mark.parametrize("shape", [(3, 5), (1,), (0,), (17, 1, 3), (1, 5000), (9001, 18), (4099, 20)])
def test_lossless_odd_shapes(codec, shape):
    g = np.random.default_rng(sum(shape))
    s = np.rint(g.laplace(0, 6, shape)).astype(np.int64)
    data = video.encode(s, video.Options(codec=codec, hw="cpu"))
    h = video.Header.unpack(data)
    assert videostream.MIN_SIDE <= h.layout.tile_h <= videostream.MAX_SIDE and h.layout.tile_h % 2 == 0
    assert videostream.MIN_SIDE <= h.layout.tile_w <= videostream.MAX_SIDE and h.layout.tile_w % 2 == 0
    assert np.array_equal(video.decode(data, s.size, hw="cpu"), s.reshape(-1))


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_gray_layout_round_trip(mnist_symbols, codec):
    s = mnist_symbols[8]
    data = video.encode(s, video.Options(codec=codec, pix="gray", hw="cpu"))
    assert video.Header.unpack(data).pix == "gray"
    assert np.array_equal(video.decode(data, s.size), s.reshape(-1))


def test_coders_registered_and_exact(model, tmp_path):
    """uniform + video coder reconstructs exactly what uniform + ANS does (same symbols)."""
    zoocodec.compress(model, tmp_path / "ans.zc", "uniform:bits=8")
    zoocodec.compress(model, tmp_path / "vid.zc", "uniform:bits=8,coder=video-h264")
    a, v = zoocodec.decompress(tmp_path / "ans.zc"), zoocodec.decompress(tmp_path / "vid.zc")
    assert all(torch.equal(a[k], v[k]) for k in a)
    coder = parse_coder("video-hevc")
    s = np.arange(-50, 50).reshape(10, 10)
    assert np.array_equal(coder.decode(coder.encode(s), s.shape), s)


@pytest.mark.parametrize("bits,coder", [(8, "video-h264(crf=24)"), (10, "video-hevc(crf=30)")])
def test_lossy_error_within_reported_bound(mnist_path, bits, coder):
    t = next(t for t in load(mnist_path).tensors() if t.name == "conv_layers.3.weight")
    method = parse_spec(f"uniform:bits={bits},coder={coder}")
    assert method.coder.lossy
    enc = method.encode(t)
    decoded = method.decode(enc.side, {k: memoryview(v) for k, v in enc.segments.items()}, t.array.shape, t.dtype)
    assert np.array_equal(decoded, enc.recon)  # what the encoder reported is what a reader gets
    assert np.array_equal(method.reconstruct(t), enc.recon)
    steps = np.frombuffer(enc.segments["steps"], dtype="<f4").astype(np.float64)
    err = np.abs(t.float64() - decoded.astype(np.float64)).reshape(steps.shape[0], -1)
    max_err = enc.side["coded"]["symbols"]["max_symbol_error"]
    assert max_err > 0  # really lossy
    assert np.all(err <= (max_err + 0.5) * steps[:, None] * (1 + 1e-6))
    lossless = parse_spec(f"uniform:bits={bits},coder={coder.split('(')[0]}").encode(t)
    assert len(enc.segments["symbols"]) < len(lossless.segments["symbols"])


def test_container_header_describes_the_stream(model, tmp_path):
    zoocodec.compress(model, tmp_path / "m.zc", "uniform:bits=8,coder=video-hevc")
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        e = a.entries["fc.weight"]["side"]["coded"]["symbols"]
        assert e["codec"] == "hevc" and e["profile"] == "Main" and e["pix_fmt"] == "yuv420p"
        assert "max_symbol_error" not in e  # lossless


@pytest.fixture(scope="module")
def stream(mnist_symbols):
    return video.encode(mnist_symbols[8], video.Options(codec="h264", hw="cpu"))


def test_corrupt_payloads_raise_container_error(stream, mnist_symbols):
    n = mnist_symbols[8].size
    g = np.random.default_rng(1)
    bad = [stream[: len(stream) // 2], stream[:5], b"", b"XX" + stream[2:], stream + b"\0"]
    for pos in g.integers(2, len(stream), 12):  # flipped bytes anywhere: header, table, slice data
        b = bytearray(stream)
        b[pos] ^= 0x5A
        bad.append(bytes(b))
    for data in bad:
        with pytest.raises(ContainerError):
            video.decode(data, n, hw="cpu")
    with pytest.raises(ContainerError):
        video.decode(stream, n + 1, hw="cpu")


def test_bad_options_are_spec_errors(mnist_path, mnist_symbols):
    with pytest.raises(SpecError, match="crf"):
        parse_spec("uniform:coder=video-hevc(crf=60)")
    with pytest.raises(SpecError, match="unknown coder"):
        parse_spec("uniform:coder=video-av1")
    with pytest.raises(SpecError, match="no parameter"):
        parse_spec("uniform:coder=video-hevc(level=3)")
    t = next(t for t in load(mnist_path).tensors() if t.name == "conv_layers.3.weight")
    with pytest.raises(SpecError, match="at most 10 bits"):
        parse_spec("uniform:bits=12,coder=video-h264(crf=20)").encode(t)
    with pytest.raises(SpecError, match="NVDEC"):
        video.encode(mnist_symbols[8], video.Options(codec="hevc", pix="gray", hw="nvdec"))
    with pytest.raises(SpecError, match="lossy video"):
        video.encode(mnist_symbols[16], video.Options(codec="hevc", crf=20, hw="cpu"))


def test_hardware_probes_never_raise(stream, mnist_symbols):
    """Without a GPU (or without the driver) the probes say so and decoding stays in software."""
    assert isinstance(nvdec.nvdec_available(), bool) and isinstance(nvdec.nvenc_available(), bool)
    assert nvdec.nvenc_available() or nvdec.nvenc_reason() != "available"
    decoded = video.decode(stream, mnist_symbols[8].size, hw="nvdec")  # NVDEC if here, else a logged fallback
    assert np.array_equal(decoded, mnist_symbols[8].reshape(-1))


def test_nvdec_streams_fit_nvdec_frame_sizes(mnist_symbols):
    """hw=nvdec pads small tensors up to the frames NVDEC takes (HEVC: at least 144x144)."""
    s = mnist_symbols[8]  # 64 x 288
    h = video.Header.unpack(video.encode(s, video.Options(codec="hevc", hw="nvdec")))
    assert (h.layout.tile_w, h.layout.tile_h) >= nvdec.NVDEC_MIN["hevc"]
    assert np.array_equal(video.decode_streams(h, [0], hw="cpu")[0], s.reshape(-1))


@pytest.mark.gpu
@pytest.mark.parametrize("opts", [video.Options(codec="hevc", hw="nvdec"),
                                  video.Options(codec="hevc", crf=22, hw="nvdec"),
                                  video.Options(codec="h264", hw="nvdec")])
def test_nvdec_matches_software(mnist_symbols, opts):
    if not nvdec.nvdec_available():
        pytest.skip(f"no NVDEC here: {nvdec._load()[1]}")
    data, (expect,) = video.encode_members([mnist_symbols[8]], opts)
    on_gpu = nvdec.decode_gpu(data)
    assert type(on_gpu).__module__.startswith("cupy")
    assert np.array_equal(on_gpu.get(), video.decode_member(data, 0, hw="cpu"))
    assert np.array_equal(on_gpu.get(), expect)


@pytest.mark.nvenc
def test_nvenc_encode_round_trip(mnist_symbols):
    if not nvdec.nvenc_available():
        pytest.skip(f"no NVENC here: {nvdec.nvenc_reason()}")
    s = mnist_symbols[8]
    data, (expect,) = video.encode_members([s], video.Options(codec="hevc", hw="nvenc"))
    assert np.array_equal(video.decode(data, s.size, hw="cpu"), s.reshape(-1))
    assert np.array_equal(expect, s.reshape(-1))


def test_cli_video_options(mnist_path, tmp_path):
    from typer.testing import CliRunner

    from zoocodec.cli import app

    out = tmp_path / "m.zc"
    r = CliRunner().invoke(app, ["compress", str(mnist_path), "-o", str(out), "--bits", "6", "--coder", "video-h264",
                                 "--crf", "26", "--hw", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    spec = zoocodec.inspect(out)["options"]["spec"]
    assert spec["method"] == "uniform" and spec["bits"] == 6
    assert spec["coder"] == {"coder": "video-h264", "version": 1, "crf": 26, "hw": "cpu", "preset": "medium",
                             "pix": "yuv420p"}
    r = CliRunner().invoke(app, ["compress", str(mnist_path), "-o", str(out), "--crf", "26"])
    assert r.exit_code != 0 and "video" in str(r.exception)
