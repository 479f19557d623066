"""Sequences of related models: inter-coded video, delta and independent coding, random access."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("av")

import zoocodec
from zoocodec.errors import ContainerError, ModelFormatError, SpecError
from zoocodec.pipeline.core import load
from zoocodec.pipeline.sequence import SeqArchive, compress_seq, decompress_seq

CHECKPOINTS = sorted((Path(zoocodec.__file__).parent / "data" / "fmnist-cnn").glob("epoch-*.safetensors"))


@pytest.fixture(scope="module")
def sequence(mnist_path) -> list[dict[str, torch.Tensor]]:
    """mnist-cnn's real weights, then 3 'fine-tuning steps' that move 10% of each tensor a little."""
    base = {t.name: torch.from_numpy(t.array.copy()) for t in load(mnist_path).tensors()}
    g = torch.Generator().manual_seed(0)
    members = [base]
    for _ in range(3):
        nxt = {}
        for k, w in members[-1].items():
            if w.dtype.is_floating_point:
                move = (torch.rand(w.shape, generator=g) < 0.1) * torch.randn(w.shape, generator=g) * 0.01 * w.std()
                w = w + move.to(w.dtype)
            nxt[k] = w
        members.append(nxt)
    return members


@pytest.fixture(scope="module")
def coded(sequence, tmp_path_factory):
    out = tmp_path_factory.mktemp("seq")
    specs = {"video": "uniform:bits=8,coder=video-hevc(preset=ultrafast)", "delta": "uniform:bits=8",
             "independent": "uniform:bits=8"}
    return {mode: (out / f"{mode}.zc", compress_seq(sequence, out / f"{mode}.zc", spec, mode, keyint=2))
            for mode, spec in specs.items()}


def test_every_mode_gives_the_same_members(sequence, coded):
    """Lossless coding on one shared grid: the three modes decode to identical tensors."""
    readers = {mode: SeqArchive(path) for mode, (path, _) in coded.items()}
    try:
        for m in (0, 3, 2, 1):  # random access, out of order
            for name in readers["video"].names():
                got = [r.read(m, name) for r in readers.values()]
                assert all(np.array_equal(got[0], x) for x in got[1:])
                ref = sequence[m][name].numpy()
                if name.endswith(".weight") and ref.size >= 4096:
                    peak = np.abs(np.stack([s[name].numpy() for s in sequence])).max(axis=0)
                    step = peak.reshape(ref.shape[0], -1).max(1) / 127
                    err = np.abs(got[0] - ref).reshape(ref.shape[0], -1)
                    assert np.all(err <= step[:, None] * 0.5 * (1 + 1e-5) + 1e-7)
                else:
                    assert np.array_equal(got[0], ref)  # small tensors stay lossless
    finally:
        for r in readers.values():
            r.container.close()


def test_inter_coding_beats_coding_each_member_alone(coded):
    video, independent = coded["video"][1], coded["independent"][1]
    delta = coded["delta"][1]
    # keyint=2: members 0 and 2 start a group and are coded alone; 1 and 3 are predicted
    for m in (1, 3):
        assert video.bits_per_weight[m] < 0.6 * independent.bits_per_weight[m]
        assert delta.bits_per_weight[m] < 0.6 * independent.bits_per_weight[m]


def test_decompress_one_member_to_a_file(coded, sequence, tmp_path):
    path = decompress_seq(coded["video"][0], "m3", tmp_path / "m3.safetensors")
    back = {t.name: t.array for t in load(path).tensors()}
    with SeqArchive(coded["video"][0]) as a:
        expect = a.tensors(3)
    assert sorted(back) == sorted(sequence[3])
    assert all(np.array_equal(back[k], expect[k].numpy()) for k in expect)


def test_cli_round_trip(sequence, tmp_path):
    from typer.testing import CliRunner

    from zoocodec.cli import app

    files = []
    for i, members in enumerate(sequence[:3]):
        files.append(str(tmp_path / f"ck-{i}.safetensors"))
        save_file(members, files[-1])
    r = CliRunner().invoke(app, ["compress-seq", *files, "-o", str(tmp_path / "s.zc"), "--mode", "video",
                                 "--coder", "video-h264", "--keyint", "2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app, ["decompress-seq", str(tmp_path / "s.zc"), "--member", "ck-2", "-o", str(tmp_path / "b.safetensors")]
    )
    assert r.exit_code == 0, r.output
    with SeqArchive(tmp_path / "s.zc") as a:
        expect = a.tensors(2)
    back = {t.name: t.array for t in load(tmp_path / "b.safetensors").tensors()}
    assert all(np.array_equal(back[k], expect[k].numpy()) for k in expect)


def test_errors(sequence, coded, tmp_path):
    other = dict(sequence[0])
    other.pop(next(iter(other)))
    with pytest.raises(ModelFormatError, match="architecture"):
        compress_seq([sequence[0], other], tmp_path / "x.zc")
    with pytest.raises(SpecError, match="video coder"):
        compress_seq(sequence[:2], tmp_path / "x.zc", "uniform:bits=8", "video")
    with pytest.raises(SpecError, match="entropy coder"):
        compress_seq(sequence[:2], tmp_path / "x.zc", "uniform:bits=8,coder=video-hevc", "delta")
    path = coded["video"][0]
    with pytest.raises(ContainerError, match="decompress-seq"):
        zoocodec.Archive(path)  # a sequence file is not a single model
    with pytest.raises(ContainerError, match="decompress-seq"):
        zoocodec.inspect(path)
    single = tmp_path / "single.zc"
    zoocodec.compress(sequence[0], single)
    with pytest.raises(ContainerError, match="not a sequence"):
        SeqArchive(single)


def test_corrupt_video_payload(coded, tmp_path):
    path = coded["video"][0]
    with SeqArchive(path) as a:
        seg = a.entries["fc_layers.0.weight"]["segments"]["video"]
    data = bytearray(path.read_bytes())
    data[seg[0] + seg[1] // 2] ^= 0xFF
    bad = tmp_path / "bad.zc"
    bad.write_bytes(bytes(data))
    with pytest.raises(ContainerError):
        SeqArchive(bad)  # the whole-file checksum
    with SeqArchive(bad, verify=False) as a, pytest.raises(ContainerError, match="fc_layers.0.weight"):
        a.read(1, "fc_layers.0.weight")  # the payload's own CRC


@pytest.mark.skipif(len(CHECKPOINTS) < 2, reason="the fmnist-cnn checkpoints are not in zoocodec/data")
def test_real_checkpoints_random_access(tmp_path):
    members = CHECKPOINTS[:3]
    rep = compress_seq(
        members, tmp_path / "f.zc", "uniform:bits=8,coder=video-h264(preset=veryfast)", "video", keyint=2
    )
    with SeqArchive(tmp_path / "f.zc") as a:
        last = a.tensors(len(members) - 1)
    ref = compress_seq(members, tmp_path / "g.zc", "uniform:bits=8", "independent")
    with SeqArchive(tmp_path / "g.zc") as b:
        assert all(torch.equal(last[k], v) for k, v in b.tensors(len(members) - 1).items())
    assert rep.labels == [p.stem for p in members] and ref.quantized_params == rep.quantized_params
