"""Tied weights (an embedding and the output head sharing one tensor) are stored once and come back twice."""
import pytest
import torch

import zoocodec
from support import Forge, run_cli
from zoocodec.errors import ContainerError


def tied_checkpoint(path) -> dict[str, torch.Tensor]:
    """A state dict whose embedding and output head are one tensor, as torch.save writes a tied LM."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(200, 64, generator=g)
    state = {"embed.weight": emb, "body.weight": torch.randn(64, 64, generator=g), "head.weight": emb,
             "body.bias": torch.zeros(64), "norm.bias": torch.zeros(64)}
    torch.save(state, path)
    return state


def test_tied_weights_are_stored_once(tmp_path):
    state = tied_checkpoint(tmp_path / "tied.pt")
    untied = {k: v.clone() for k, v in state.items()}
    untied["head.weight"] = untied["head.weight"] + 1e-3
    torch.save(untied, tmp_path / "untied.pt")
    tied = zoocodec.compress(tmp_path / "tied.pt", tmp_path / "tied.zc", "uniform:bits=8")
    other = zoocodec.compress(tmp_path / "untied.pt", tmp_path / "untied.zc", "uniform:bits=8")
    info = zoocodec.inspect(tmp_path / "tied.zc")
    # the equal 64-weight biases stay apart: below --min-size, not worth an alias
    assert (
        info["aliases"] == {"head.weight": "embed.weight"} and zoocodec.inspect(tmp_path / "untied.zc")["aliases"] == {}
    )
    assert [t.name for t in tied.tensors] == ["embed.weight", "body.weight", "body.bias", "norm.bias"]
    assert other.weight_bytes - tied.weight_bytes > 0.8 * 200 * 64  # one 8-bit copy of the table less
    out = zoocodec.decompress(tmp_path / "tied.zc")
    assert set(out) == set(state) and out["head.weight"] is out["embed.weight"]
    assert (out["embed.weight"] - state["embed.weight"]).abs().max() < 0.05
    with zoocodec.Archive(tmp_path / "tied.zc") as a:
        assert torch.equal(a.tensor("head.weight"), out["embed.weight"])
    zoocodec.decompress(tmp_path / "tied.zc", tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert set(back) == set(state) and torch.equal(back["head.weight"], back["embed.weight"])


@pytest.mark.parametrize("aliases", [["x"], {"head.weight": "missing"}, {"body.weight": "embed.weight"}, {"a": 3}])
def test_bad_aliases_are_refused(tmp_path, monkeypatch, capsys, aliases):
    tied_checkpoint(tmp_path / "tied.pt")
    zoocodec.compress(tmp_path / "tied.pt", tmp_path / "tied.zc", "uniform:bits=8")
    forge = Forge((tmp_path / "tied.zc").read_bytes())
    forge.header["aliases"] = aliases
    evil = forge.write(tmp_path / "evil.zc")
    with pytest.raises(ContainerError, match="aliases"):
        zoocodec.decompress(evil)
    code, _, err = run_cli(monkeypatch, capsys, "decompress", evil, "-o", tmp_path / "out.pt")
    assert code == 2 and err.count("\n") == 1 and "aliases" in err


def test_tensors_equal_where_sampled_are_not_tied(tmp_path):
    """Tied weights are found by a sample of each tensor's bytes, then compared whole: a tensor
    differing from an earlier one in a byte the sample skips keeps its own payload."""
    emb = torch.randn(300, 64, generator=torch.Generator().manual_seed(1))
    near = emb.clone()
    near.view(-1)[100] += 1.0  # bytes 400..403: past the first 64, between sampled ones (every ~18.7th)
    twin = emb.clone()
    zoocodec.compress({"a.weight": emb, "b.weight": near, "c.weight": twin}, tmp_path / "m.zc", "uniform:bits=8")
    assert zoocodec.inspect(tmp_path / "m.zc")["aliases"] == {"c.weight": "a.weight"}
    out = zoocodec.decompress(tmp_path / "m.zc")
    assert (out["b.weight"].view(-1)[100] - near.view(-1)[100]).abs() < 0.05
