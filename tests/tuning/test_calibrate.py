"""Data-aware rounding on a real network and real images: error feedback, bias correction, exact files."""
import numpy as np
import pytest
import torch

import zoocodec
from conftest import zoo_path
from zoocodec.codecs.base import Order0
from zoocodec.errors import ZoocodecError
from zoocodec.eval import data
from zoocodec.eval.models import build
from zoocodec.eval.tasks import _logits
from zoocodec.methods import parse_spec
from zoocodec.tuning.auto import reconstruct
from zoocodec.tuning.calibrate import DataAware, collect, gptq, gptq_walks, output_error, prepare

QUANTIZED = ("conv2.0.weight", "conv3.0.weight", "conv4.0.weight", "conv5.0.weight")


@pytest.fixture(scope="module")
def fmnist():
    """fmnist-cnn's weights and its layer inputs measured on 128 train and 128 test images."""
    zoo_path("fmnist-cnn")
    try:
        train = data.fashion_calibration()[:128]
        test = data.fashion_mnist("test")[0][:128]
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    from zoocodec.eval.evaluate import load_weights

    w = load_weights("fmnist-cnn")
    names = {k: k for k in w}

    def inputs(images):
        return collect(build("fashionnet", w), lambda n: _logits(lambda: images, 256)(n, None), names)
    return w, inputs(train), inputs(test)


def test_error_feedback_lowers_the_layer_output_error_on_held_out_images(fmnist):
    """Rounded with H from train images, judged on test images' layer inputs: ||(W - W_hat) X||^2 falls
    well below nearest rounding's."""
    w, train, test = fmnist
    for name in QUANTIZED:
        w2 = w[name].double().reshape(w[name].shape[0], -1).numpy()
        step = 0.75 * float(np.std(w2))
        k = gptq(w2, np.array([step]), train[name].h)
        nearest = np.rint(w2 / step)
        assert np.abs(k - nearest).max() >= 1 and (k != nearest).mean() < 0.6  # other indices, on the same grid
        ratio = output_error(w2, k * step, test[name]) / output_error(w2, nearest * step, test[name])
        assert ratio < 0.7, (name, ratio)


def test_rate_aware_rounding_trades_error_for_zeros(fmnist):
    w, train, _ = fmnist
    name = "conv5.0.weight"
    w2 = w[name].double().reshape(w[name].shape[0], -1).numpy()
    step = 0.75 * float(np.std(w2))
    plain, cheap = gptq(w2, np.array([step]), train[name].h), gptq(w2, np.array([step]), train[name].h, lam=0.2)
    assert (cheap == 0).mean() > (plain == 0).mean()
    assert Order0().bits(cheap) < 0.98 * Order0().bits(plain)
    assert output_error(w2, cheap * step, train[name]) > output_error(w2, plain * step, train[name])


def test_bias_correction_cancels_the_mean_output_error(fmnist):
    """conv2 alone quantized coarsely: the mean error of its BatchNorm's outputs (the running mean
    absorbs it) is ~0 per channel on the calibration images, and far from 0 without the correction."""
    w, train, _ = fmnist
    plan = {"conv2.0.weight": parse_spec(f"uniform:step={2 * float(w['conv2.0.weight'].std())}")}
    images = data.fashion_calibration()[:128]

    def bn_out(weights):
        net, seen = build("fashionnet", weights), []
        net.conv2[1].register_forward_hook(lambda m, a, out: seen.append(out.detach().double()))
        _logits(lambda: images, 256)(net, None)
        return torch.cat(seen)

    ref = bn_out(w)
    bias_mean = {}
    for corrected in (False, True):
        rounder = DataAware({"conv2.0.weight": train["conv2.0.weight"]}, bias_correction=corrected)
        targets = rounder.targets(w, plan)
        assert ("conv2.1.running_mean" in targets) is corrected
        err = bn_out(reconstruct({**w, **targets}, plan)) - ref
        bias_mean[corrected] = err.mean(dim=(0, 2, 3)).abs().max().item() / ref.std().item()
    assert bias_mean[True] < 1e-4 < 0.01 < bias_mean[False]


def test_the_file_holds_exactly_the_chosen_indices(fmnist, tmp_path):
    """compress(targets=...) writes the data-aware indices: the decoded model equals the
    reconstruction bit for bit, and its errors are measured against the original weights."""
    w, train, _ = fmnist
    plan = {n: parse_spec("uniform:step=0.03,coder=ctx") for n in QUANTIZED}
    targets = DataAware({n: train[n] for n in QUANTIZED}).targets(w, plan)
    assert set(targets) == set(QUANTIZED) | {n.replace("0.weight", "1.running_mean") for n in QUANTIZED}
    expected = reconstruct({**w, **targets}, plan)
    out = tmp_path / "m.zc"
    report = zoocodec.compress(w, out, plan=plan, targets={k: v.numpy() for k, v in targets.items()})
    decoded = zoocodec.decompress(out)
    for name, t in expected.items():
        assert torch.equal(decoded[name], t), name
    rows = {t.name: t for t in report.tensors}
    for name in QUANTIZED:
        mse = float(((w[name].double() - expected[name].double()) ** 2).mean())
        assert rows[name].mse == pytest.approx(mse, rel=1e-12)
        assert not torch.equal(expected[name], reconstruct(w, plan)[name])  # not nearest rounding
    rm = "conv5.1.running_mean"  # lossless, moved by the correction: its error is reported, not 0
    assert rows[rm].method.startswith("lossless") and rows[rm].mse > 0
    with pytest.raises(ZoocodecError, match="not a tensor of the model"):
        zoocodec.compress(w, tmp_path / "bad.zc", plan=plan, targets={"nope": np.zeros(3, np.float32)})
    assert not (tmp_path / "bad.zc").exists()


def test_dq_column_walks_are_rounded_with_error_feedback_and_the_file_holds_them(fmnist, tmp_path):
    """dq at lam 0 with each column a walk takes data-aware levels: the method's own trellis gives the
    handed-over values back bit for bit (so the file holds them), and the layers' output error on test
    images falls well below the trellis's own (nearest) walks at the same step."""
    w, train, test = fmnist
    plan = {n: parse_spec(f"dq:step={0.6 * float(w[n].std())},lam=0,axis=0,coder=cabac") for n in QUANTIZED}
    targets = DataAware({n: train[n] for n in QUANTIZED}, bias_correction=False).targets(w, plan)
    expected, nearest = reconstruct({**w, **targets}, plan), reconstruct(w, plan)
    for name in QUANTIZED:
        assert torch.equal(expected[name], targets[name]), name  # the trellis returns the walks handed over
        w2 = w[name].double().reshape(w[name].shape[0], -1).numpy()

        def error(t, name=name, w2=w2):
            return output_error(w2, t[name].double().reshape(w2.shape).numpy(), test[name])
        assert error(expected) < 0.7 * error(nearest), name
    out = tmp_path / "m.zc"
    zoocodec.compress(w, out, plan=plan, targets={k: v.numpy() for k, v in targets.items()})
    decoded = zoocodec.decompress(out)
    assert all(torch.equal(decoded[n], expected[n]) for n in QUANTIZED)


def test_column_walks_without_feedback_are_the_trellis_own():
    """With H the identity nothing is fed back: each column's levels are dq's own walk down it."""
    from zoocodec.kernels import rdoq as R

    w = np.random.default_rng(3).normal(size=(40, 24))
    q = gptq_walks(w, 0.3, prepare(np.eye(24), damp=0.0))
    own = R.dq_trellis((w / 0.3).T, np.zeros((24, 40), dtype=np.int64), 0, np.zeros((1, 1, 1)), 0.0, np).T
    assert np.array_equal(q, own)
    with pytest.raises(ValueError, match="one column order"):
        gptq_walks(w[:2], 0.3, prepare(np.stack([np.eye(24) * (1 + i) for i in range(2)]), act_order=True))


EFFNET = ("_conv_stem.weight", "_blocks.1._depthwise_conv.weight", "_blocks.4._depthwise_conv.weight",
          "_blocks.4._project_conv.weight")


@pytest.mark.slow
def test_depthwise_and_padded_convolutions_get_one_h_per_channel_and_error_feedback_helps():
    """effnet-lite0: layer inputs measured on 32 calibration crops (photos the task never judges),
    judged on 32 of the judged views. Depthwise convolutions have one 5x5 or 3x3 H per channel, the
    static padding is applied before the patches, BatchNorm running means absorb the mean error."""
    from zoocodec.eval.evaluate import load_weights

    zoo_path("effnet-lite0")
    try:
        calib, judged = data.photo_calibration()[:32], data.photo_views()[:32]
    except data.DatasetMissing as e:
        pytest.skip(str(e))
    w = load_weights("effnet-lite0")
    names = {k: k for k in w if k in EFFNET or k.endswith("running_mean")}  # hooks on EFFNET only

    def inputs(images):
        return collect(build("effnet-lite0", w), lambda n: _logits(lambda: images, 16)(n, None), names)
    train, test = inputs(calib), inputs(judged)
    assert train["_blocks.4._depthwise_conv.weight"].h.shape == (240, 25, 25)
    assert train["_blocks.4._project_conv.weight"].h.shape == (1, 240, 240)
    assert train["_conv_stem.weight"].bias == ("_bn0.running_mean", -1)
    assert train["_blocks.1._depthwise_conv.weight"].bias == ("_blocks.1._bn1.running_mean", -1)
    for name in EFFNET:
        w2 = w[name].double().reshape(w[name].shape[0], -1).numpy()
        step = 0.5 * float(np.std(w2))
        k = gptq(w2, np.array([step]), train[name].h)
        ratio = output_error(w2, k * step, test[name]) / output_error(w2, np.rint(w2 / step) * step, test[name])
        assert ratio < 0.6, (name, ratio)
    plan = {n: parse_spec(f"uniform:step={0.5 * float(w[n].std())}") for n in EFFNET}
    moved = DataAware({n: train[n] for n in EFFNET}).targets(w, plan)
    assert {"_bn0.running_mean", "_blocks.4._bn1.running_mean"} < set(moved)


def test_columns_match_the_convolution(monkeypatch):
    """The input vectors _blocks lays out, times the weight's 2-D view, are the convolution's outputs
    (every other position on a large input), for padded, strided, dilated and grouped convolutions,
    whether unfolded whole or an image or some groups at a time; accumulate's sums are the same."""
    from zoocodec.tuning import calibrate
    from zoocodec.tuning.calibrate import POSITIONS, _blocks, accumulate

    torch.manual_seed(0)
    for conv, size in ((torch.nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2), 9),
                       (torch.nn.Conv2d(3, 5, (3, 2), dilation=2, padding=(2, 1), padding_mode="reflect"), 8),
                       (torch.nn.Conv2d(4, 4, 5, padding=2, groups=4, bias=False), 2 * int(POSITIONS**0.5) + 1),
                       (torch.nn.Conv2d(4, 6, 1), 5)):
        x = torch.randn(3, conv.in_channels, size, size)
        out = conv(x).detach()
        every = max(1, int(np.ceil(np.sqrt(out.shape[2] * out.shape[3] / POSITIONS))))
        out = out[:, :, ::every, ::every].permute(0, 2, 3, 1).reshape(-1, conv.out_channels)
        w3 = conv.weight.detach().reshape(conv.groups, conv.out_channels // conv.groups, -1)
        sums = []
        for scratch in (2**20, 200, 1):  # whole; an image at a time; one group of one image at a time
            monkeypatch.setattr(calibrate, "SCRATCH", scratch)
            chunks: list[list[torch.Tensor]] = []
            for first, a in _blocks(conv, x):
                if first == 0:
                    chunks.append([])
                chunks[-1].append(a.clone())  # a block holds until the next is asked for
            a = torch.cat([torch.cat(c) for c in chunks], dim=2)  # groups x d x rows (image, position)
            rows = a.permute(2, 0, 1)
            got = torch.einsum("rgd,god->rgo", rows, w3).reshape(len(out), -1)
            if conv.bias is not None:
                got = got + conv.bias.detach()
            assert torch.allclose(got, out, atol=1e-5), (conv, scratch)
            acc = [None, None, 0]
            accumulate(acc, conv, x)
            sums.append(acc)
        for acc in sums[1:]:
            assert acc[2] == sums[0][2] == len(out)
            for got, want in zip(acc[:2], sums[0][:2], strict=True):  # float32 sums, blocked differently
                assert torch.allclose(got, want, atol=1e-5 * float(want.abs().max()))


def test_collect_counts_the_inputs_each_forward_takes():
    """progress(n) after each forward of the module itself (its batches, by the leading dimension of its first
    argument or of input_ids): automatic mode's time left over this phase. The sums are the same with it."""
    from zoocodec.tuning.calibrate import collect

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 5))
    x = torch.randn(10, 3, 8, 8)
    names = {"0.weight": "conv", "3.weight": "fc"}
    seen: list[int] = []

    def run(n):
        for b in (x[:4], x[4:8], x[8:]):
            n(b)
    counted = collect(net, run, names, seen.append)
    plain = collect(net, run, names)
    assert seen == [4, 4, 2]
    for key in names.values():
        assert counted[key].count == plain[key].count and np.array_equal(counted[key].h, plain[key].h)

    class Keyword(torch.nn.Module):  # a transformer's call: input_ids by keyword
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, input_ids):
            return self.fc(input_ids.float())
    seen.clear()
    collect(Keyword(), lambda n: [n(input_ids=torch.ones(k, 7, 3)) for k in (2, 3)], {"fc.weight": "fc"},
            seen.append)
    assert seen == [2, 3]


def test_inputs_never_seen_keep_their_weights():
    """A column whose input was always 0 in calibration (a channel the calibration photos never
    excite) is rounded to nearest, not zeroed: other inputs may excite it. Per group too."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    x[:, 2] = 0
    h = x.T @ x / len(x)
    w = rng.normal(size=(4, 6))
    for hs in (h, np.stack([h, np.eye(6)])):
        k = gptq(w, np.array([0.1]), hs)
        assert np.array_equal(k[:, 2], np.rint(w[:, 2] / 0.1))


def test_dampening_by_layer_kind():
    """kind_of tells a grouped (depthwise) layer, a layer seen on fewer inputs than its size and the rest
    apart; DataAware's kind_damp dampens one kind only, and the header records it."""
    from zoocodec.tuning.calibrate import LayerInputs, kind_of

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))  # correlated inputs: error feedback moves indices
    h = x.T @ x / len(x)
    dense, grouped = LayerInputs(h[None], x.mean(0)[None], 400), LayerInputs(np.stack([h] * 4), np.zeros((4, 8)), 400)
    assert (kind_of(dense), kind_of(grouped), kind_of(LayerInputs(h[None], x.mean(0)[None], 5))) == \
        ("dense", "grouped", "few")
    w = {"d": torch.from_numpy(rng.normal(size=(4, 8))), "g": torch.from_numpy(rng.normal(size=(4, 8)))}
    plan = {k: parse_spec("uniform:step=0.3") for k in w}
    plain = DataAware({"d": dense, "g": grouped}).targets(w, plan)
    apart = DataAware({"d": dense, "g": grouped}, kind_damp={"grouped": 100.0})
    other = apart.targets(w, plan)
    assert torch.equal(plain["d"], other["d"]) and not torch.equal(plain["g"], other["g"])  # dense ones keep DAMP
    assert torch.equal(other["g"], torch.from_numpy(gptq(w["g"].numpy(), np.array([0.3]), grouped.h, 100.0,
                                                         act_order=apart.act_order, sweeps=apart.sweeps) * 0.3))
    assert apart.describe(["g"])["damp_by_kind"] == {"grouped": 100.0}


def test_a_step_per_row_is_rounded_with_error_feedback():
    """rdoq at lam=0 with a step per row (a word-embedding table tied to an LM's head, automatic mode's token
    rows) is GPTQ-rounded on its own rows' grids, and the method reads exactly those indices back."""
    import dataclasses

    from zoocodec.pipeline.modelio import to_tensordata
    from zoocodec.tuning.calibrate import LayerInputs

    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.normal(size=(40, 16)).astype(np.float32))
    x = rng.normal(size=(256, 16)) @ rng.normal(size=(16, 16))  # correlated inputs
    steps = np.float32(0.25) * np.exp2(rng.integers(0, 4, 40) / 2).astype(np.float32)
    spec = dataclasses.replace(parse_spec("rdoq:lam=0,iters=0,coder=ans"), step=float(steps.min()),
                               group_steps=tuple(float(s) for s in steps))
    li = LayerInputs((x.T @ x / len(x))[None], x.mean(0)[None], len(x))
    out = DataAware({"w": li}).targets({"w": w}, {"w": spec})["w"]
    row = spec.row_steps(w.double().numpy())[:, None]
    k = out.double().numpy() / row
    assert np.abs(k - np.rint(k)).max() < 1e-5  # on each row's own grid
    assert (np.rint(k) != np.rint(w.double().numpy() / row)).any()  # not nearest rounding
    q = spec.quantize(to_tensordata("w", out))
    assert torch.equal(torch.as_tensor(np.asarray(q.recon)), out)
    wrong = dataclasses.replace(spec, lam=0.1)  # choosing its own levels: left alone
    assert DataAware({"w": li}).targets({"w": w}, {"w": wrong}) == {}


def _objective(w, q, steps, hd):
    """sum over rows of (w - q s) H (w - q s)^T, each row against its group's H."""
    e = (w - q * np.reshape(steps, (-1, 1))).reshape(len(hd), -1, w.shape[1])
    return float(np.einsum("gpd,gde,gpe->", e, hd, e))


def _random_layer(rng, groups=1):
    d = int(rng.integers(3, 40))
    rows = groups * int(rng.integers(1, 12))
    n = int(rng.integers(d // 2 + 1, 4 * d))  # sometimes fewer inputs than columns: a singular H
    hs = []
    for _ in range(groups):
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * np.exp(rng.normal(size=d))
        hs.append(x.T @ x / n)
    steps = rng.uniform(0.05, 0.5, size=rows) if rng.random() < 0.5 else np.array([rng.uniform(0.05, 0.5)])
    return rng.normal(size=(rows, d)), steps, np.stack(hs)


def test_coordinate_descent_never_raises_the_objective_and_stays_in_range():
    """Property over random layers (one H, or one per group of rows; some singular): descent from GPTQ's symbols
    never raises the dampened objective GPTQ rounds against, and no symbol leaves the range GPTQ's take."""
    from zoocodec.tuning.calibrate import prepare

    rng = np.random.default_rng(1)
    lowered = 0
    for trial in range(60):
        w, steps, hs = _random_layer(rng, groups=1 + trial % 3)
        damp = float(rng.choice([0.01, 0.3, 1.0]))
        hd = prepare(hs, damp).h
        for act in (False, True):
            q = gptq(w, steps, hs, damp, act_order=act)
            before = _objective(w, q, steps, hd)
            for sweeps in (1, 3):
                r = gptq(w, steps, hs, damp, act_order=act, sweeps=sweeps)
                after = _objective(w, r, steps, hd)
                assert after <= before * (1 + 1e-12) + 1e-12, (trial, act, sweeps)
                assert q.min() <= r.min() and r.max() <= q.max()
                lowered += after < before * (1 - 1e-9)
    assert lowered > 20  # descent does move symbols (GPTQ's greedy pass is not a local minimum)


def test_coordinate_descent_agrees_with_a_scalar_reference():
    """The vectorised descent (all rows per column) takes the same moves as one row at a time, symbol by symbol."""
    from zoocodec.tuning.calibrate import descend, prepare

    def reference(w, q, steps, hd, sweeps):
        q = q.copy()
        rows, d = w.shape
        per = rows // len(hd)
        lo, hi = q.min(), q.max()
        for r in range(rows):
            s, h = float(np.broadcast_to(steps, (rows,))[r]), hd[r // per]
            for _ in range(sweeps):
                for j in range(d):
                    e = w[r] - q[r] * s
                    best, move = 0.0, 0
                    for delta in (1, -1):
                        e2 = e.copy()
                        e2[j] -= delta * s
                        gain = e2 @ h @ e2 - e @ h @ e
                        if gain < best - 1e-12 * s * s * h[j, j] and lo <= q[r, j] + delta <= hi:
                            best, move = gain, delta
                    q[r, j] += move
        return q

    rng = np.random.default_rng(2)
    for trial in range(12):
        w, steps, hs = _random_layer(rng, groups=1 + trial % 2)
        hd = prepare(hs, 0.01).h
        q = gptq(w, steps, hs)
        for sweeps in (1, 2):
            assert np.array_equal(descend(w, q, steps, hd, sweeps), reference(w, q, steps, hd, sweeps)), trial


def test_native_nearest_feedback_is_the_column_loop():
    """feedback's native blocks (nearest rounding, rows on the engine's threads) leave the indices and the
    updated weights of its NumPy column loop bit for bit, with one factor or one per group of rows."""
    from zoocodec.tuning.calibrate import factors, feedback

    rng = np.random.default_rng(4)
    for trial in range(16):
        w, steps, hs = _random_layer(rng, groups=1 + trial % 3)
        u = factors(hs)
        step = np.broadcast_to(steps.reshape(-1), (w.shape[0],)).copy()
        q_loop, q_native = np.zeros(w.shape, np.int64), np.zeros(w.shape, np.int64)
        w_loop, w_native = w.copy(), w.copy()

        def on_grid(j, column):
            q_loop[:, j] = k = np.rint(column / step)
            return k * step

        block = int(rng.integers(1, 20))
        feedback(w_loop, u, block, on_grid)
        feedback(w_native, u, block, nearest=(step, q_native))
        assert np.array_equal(q_loop, q_native) and np.array_equal(w_loop, w_native), trial


def test_act_order_is_gptq_on_the_permuted_columns_per_group():
    """act_order: the columns rounded in decreasing diag(H) order is plain GPTQ on w and H permuted that way,
    un-permuted; a grouped layer's groups each take their own order."""
    rng = np.random.default_rng(3)
    w, steps, hs = _random_layer(rng, groups=3)
    steps = np.array([0.2])
    ours = gptq(w, steps, hs, act_order=True)
    per = len(w) // 3
    for g in range(3):
        o = np.argsort(-np.diag(hs[g]), kind="stable")
        rows = slice(g * per, (g + 1) * per)
        plain = gptq(w[rows][:, o], steps, hs[g][np.ix_(o, o)])
        assert np.array_equal(ours[rows][:, o], plain)
    assert not np.array_equal(ours, gptq(w, steps, hs))  # another rounding than the natural order's


def test_data_aware_takes_act_order_and_descent_and_says_so():
    """DataAware's act_order (for all layers, or by kind) and sweeps reach the rounding and the header; min-max
    groups (a causal LM's, whose group's columns must be rounded together) keep the natural order."""
    from zoocodec.tuning.calibrate import LayerInputs

    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32)) * np.exp(rng.normal(size=32))
    li = LayerInputs((x.T @ x / 400)[None], x.mean(0)[None], 400)
    w = {"w": torch.from_numpy(rng.normal(size=(16, 32)))}
    plan = {"w": parse_spec("uniform:step=0.3")}
    both = DataAware({"w": li}, act_order=True, sweeps=2)
    got = both.targets(w, plan)["w"].numpy()
    expected = gptq(w["w"].numpy(), np.array([0.3]), li.h, act_order=True, sweeps=2) * 0.3
    assert np.array_equal(got, expected)
    assert {"act_order": True, "descent_sweeps": 2}.items() <= both.describe(["w"]).items()
    plain = DataAware({"w": li})  # automatic mode's: act-order and descent by default
    assert plain.sweeps == 2 and plain.act_order and np.array_equal(plain.targets(w, plan)["w"].numpy(), got)
    assert "act_order" not in DataAware({"w": li}, act_order=False).describe(["w"])
    groups = {"w": parse_spec("uniform:bits=3,group=8,zero=true")}
    assert torch.equal(DataAware({"w": li}, act_order=True).targets(w, groups)["w"],
                       DataAware({"w": li}, act_order=False).targets(w, groups)["w"])
    kinds = DataAware({"w": li}, act_order=("grouped",))  # act-order for another kind of layer only
    assert np.array_equal(kinds.targets(w, plan)["w"].numpy(), DataAware({"w": li}, act_order=False).targets(
        w, plan)["w"].numpy())
    assert kinds.describe(["w"])["act_order"] == ["grouped"]
    assert np.array_equal(DataAware({"w": li}, act_order=("dense",)).targets(w, plan)["w"].numpy(), got)


def _augmented(w, q, steps, hd, rate):
    """_objective + rate * the order-0 code length of q in bits (its empirical entropy x its size)."""
    return _objective(w, q, steps, hd) + rate * Order0().bits(q)


def test_rate_aware_descent_never_raises_the_augmented_objective_and_stays_in_range():
    """Property over random layers (one H, or one per group; some singular; one step or one per row): from GPTQ's
    symbols, with or without its own rate term, the descent never raises the output error + lam * price * order-0
    bits, keeps every symbol in GPTQ's range, and trades error for bits; at lam 0 it is the plain descent."""
    from zoocodec.tuning.calibrate import prepare, rate_price

    rng = np.random.default_rng(5)
    fewer = 0
    for trial in range(40):
        w, steps, hs = _random_layer(rng, groups=1 + trial % 3)
        damp = float(rng.choice([0.01, 0.3]))
        act = bool(trial % 2)
        p = prepare(hs, damp, act)
        plain = gptq(w, steps, hs, damp, act_order=act, sweeps=2)
        assert np.array_equal(gptq(w, steps, hs, damp, 0.0, act, 2, p, feedback_rate=False), plain)
        lam = float(rng.choice([0.05, 0.2, 1.0]))
        rate = lam * rate_price(p.u, np.broadcast_to(np.reshape(steps, -1), (len(w),)))
        for fed in (False, True):
            start = gptq(w, steps, hs, damp, lam if fed else 0.0, act, 0, p)
            got = gptq(w, steps, hs, damp, lam, act, 2, p, feedback_rate=fed)
            before, after = _augmented(w, start, steps, p.h, rate), _augmented(w, got, steps, p.h, rate)
            assert after <= before * (1 + 1e-12) + 1e-9, (trial, fed)
            assert start.min() <= got.min() and got.max() <= start.max()
        fewer += Order0().bits(got) < Order0().bits(plain)
    assert fewer > 10


def test_rate_aware_descent_buys_bits_on_a_real_layer(fmnist):
    """fmnist-cnn's conv5 with H from train images: the rate term in the descent alone (the feedback plain) gives
    fewer order-0 bits than the plain descent at a little more output error, and a lower augmented objective."""
    from zoocodec.tuning.calibrate import prepare, rate_price

    w, train, _ = fmnist
    name = "conv5.0.weight"
    w2 = w[name].double().reshape(w[name].shape[0], -1).numpy()
    step = np.array([0.75 * float(np.std(w2))])
    p = prepare(train[name].h, act_order=True)
    plain = gptq(w2, step, train[name].h, act_order=True, sweeps=2, prepared=p)
    cheap = gptq(w2, step, train[name].h, lam=0.3, act_order=True, sweeps=2, prepared=p, feedback_rate=False)
    rate = 0.3 * rate_price(p.u, step)
    assert Order0().bits(cheap) < 0.999 * Order0().bits(plain)
    assert _objective(w2, plain, step, p.h) < _objective(w2, cheap, step, p.h) < 1.02 * _objective(w2, plain, step, p.h)
    assert _augmented(w2, cheap, step, p.h, rate) < _augmented(w2, plain, step, p.h, rate)
