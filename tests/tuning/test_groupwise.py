"""Group-wise candidates in automatic mode's plans: chosen at the plan's slope, written as planned, causal LMs only."""
from __future__ import annotations

import types

import numpy as np
import torch

import zoocodec
from zoocodec.methods import parse_spec
from zoocodec.tuning.allocate import allocate
from zoocodec.tuning.auto import _groupwise, reconstruct
from zoocodec.tuning.groupwise import Groupwise, describe


def q4_1_like(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Weights dequantized from 32-weight 4-bit blocks with a float16 scale and minimum (GGUF Q4_1)."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.002, 0.02, (rows, cols // 32, 1)).astype(np.float16).astype(np.float32)
    low = (-8 * scale).astype(np.float16).astype(np.float32)
    levels = rng.integers(0, 16, (rows, cols // 32, 32))
    levels[..., 0], levels[..., 1] = 0, 15  # every block spans its 16 levels
    return torch.from_numpy((low + scale * levels).reshape(rows, cols).astype(np.float32))


def weights() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"on_grid.weight": q4_1_like(96, 128, 0), "gauss.weight": 0.02 * torch.randn(96, 128, generator=gen)}


def test_a_tensor_on_a_block_grid_takes_its_groups_and_others_keep_their_step(tmp_path):
    w = weights()
    plan = allocate(w, base_step=0.0005, method="uniform")  # fine: the side values' own error would cost more
    chosen = Groupwise(w).plan(plan, {k: 1.0 for k in plan})
    assert str(chosen["on_grid.weight"]).startswith("uniform:bits=4,per_tensor=False,group=32,zero=True")
    assert chosen["gauss.weight"] == plan["gauss.weight"]  # below 4 bits a step costs less than min-max groups
    assert describe(chosen, w)["weights"] == {"bits=4,group=32,zero=true": 96 * 128, "step": 96 * 128}
    report = zoocodec.compress(w, tmp_path / "m.zc", "lossless", plan=chosen)
    out = zoocodec.decompress(tmp_path / "m.zc")
    assert torch.equal(out["on_grid.weight"], w["on_grid.weight"])  # reproduced exactly
    assert torch.equal(out["gauss.weight"], reconstruct(w, chosen)["gauss.weight"])
    # the groups' steps and offsets are coded and counted: more than the 4-bit symbols alone
    assert report.weight_bytes * 8 > 96 * 128 * (3.5 + 1)


def test_coarser_slopes_take_side_values_at_less_precision(tmp_path):
    """The side values' rounding error is priced at the slope like any other: the coarser the plan, the fewer
    mantissa bits a group's step keeps (uniform side=M), and the file decodes to what the plan reconstructs."""
    w = weights()
    sides = []
    for base in (0.0005, 0.002, 0.01, 0.02):
        chosen = Groupwise(w).plan(allocate(w, base_step=base, method="uniform"), {"on_grid.weight": 1.0,
                                                                                   "gauss.weight": 1.0})
        spec = chosen["on_grid.weight"]
        assert (spec.bits, spec.group, spec.zero) == (4, 32, True)
        sides.append(spec.side or 99)
    assert sides[0] == 99 and sides == sorted(sides, reverse=True) and sides[-1] < sides[1]
    assert describe(chosen, w)["weights"] == {f"bits=4,group=32,zero=true,side={sides[-1]}": 96 * 128,
                                              "step": 96 * 128}
    zoocodec.compress(w, tmp_path / "m.zc", "lossless", plan=chosen)
    out = zoocodec.decompress(tmp_path / "m.zc")
    assert torch.equal(out["on_grid.weight"], reconstruct(w, chosen)["on_grid.weight"])
    assert not torch.equal(out["on_grid.weight"], w["on_grid.weight"])


def test_a_tensor_that_does_not_matter_keeps_its_step():
    w = weights()
    plan = allocate(w, base_step=0.004, method="uniform")
    chosen = Groupwise(w).plan(plan, {"on_grid.weight": 0.0, "gauss.weight": 1.0})
    assert chosen["on_grid.weight"] == plan["on_grid.weight"]


def test_only_plain_uniform_plans_of_causal_lms_take_groups():
    w = weights()
    tokens, text = types.SimpleNamespace(kind="tokens"), types.SimpleNamespace(kind="text")
    assert isinstance(_groupwise(tokens, parse_spec("uniform"), w), Groupwise)
    assert _groupwise(text, parse_spec("uniform"), w) is None
    assert _groupwise(tokens, parse_spec("rdoq:lam=0.1"), w) is None
    assert _groupwise(tokens, parse_spec("uniform:bits=4,group=64"), w) is None


def test_the_step_candidate_is_priced_by_the_coders_entropy_model():
    """The allocation's own step is quantized and priced like the group candidates (no second entropy estimate)."""
    from zoocodec.codecs.ans import Ans

    w = weights()
    spec = allocate(w, base_step=0.004, method="uniform")["gauss.weight"]
    mse, bits = Groupwise(w).measured("gauss.weight", spec)
    k = np.rint(w["gauss.weight"].double().numpy() / spec.step).astype(np.int64)
    assert bits == Ans().model(k).bits(k)
    assert np.isclose(mse, np.mean((k * spec.step - w["gauss.weight"].double().numpy()) ** 2), rtol=1e-6)


def test_a_group_candidate_is_priced_with_its_side_streams_coded():
    """The groups' float16 steps and minimums are priced by their coded bytes (the order-0 model of their bits
    prices them low), the symbols by the entropy model."""
    from zoocodec.codecs.ans import Ans
    from zoocodec.pipeline.modelio import to_tensordata

    w = weights()
    spec = parse_spec("uniform:bits=4,group=32,zero=true,coder=ans")
    _, bits = Groupwise(w).measured("on_grid.weight", spec)
    q = spec.quantize(to_tensordata("on_grid.weight", w["on_grid.weight"]))
    side = sum(8 * len(spec.coder_for(n).encode(q.symbols[n])) for n in ("group_steps", "group_zeros"))
    assert bits == Ans().model(q.symbols["symbols"]).bits(q.symbols["symbols"]) + side
