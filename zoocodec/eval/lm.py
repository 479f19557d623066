"""Causal language models judged by their next-token predictions: perplexity and token KL.

Texts are tokenized with the model's own tokenizer, document by document (each followed
by a newline), concatenated, and cut into non-overlapping windows of WINDOW tokens; a
window starts with the tokenizer's BOS token where it has one, so every text token is
predicted once, from the tokens of its own window before it. Each scored token belongs
to one document: intervals resample whole documents (zoocodec.eval.stats).

Per scored token the outputs are (NLL of the true token, KL(original || model) in nats,
document). The KL is exact over the whole vocabulary without holding the original's
logits (49,152 per token for SmolLM2): its final hidden states and output head are kept
from its run (576 floats per token) and its logits recomputed, a block of positions at
a time, beside the model's.

The original's run is the costly half of an evaluation, so what it keeps (hidden states and
NLL per token) is stored once per machine in the zoo cache, under a key hashed from the
weights' contents, the token ids, and the torch/transformers versions and device: a later
evaluation of any compressed copy runs the compressed model alone.
"""
from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from zoocodec.device import Device, resolve
from zoocodec.errors import ModelFormatError
from zoocodec.eval import refcache
from zoocodec.eval.stats import Paired

WINDOW = 512  # tokens a window feeds the model
BATCH = {False: 4, True: 32}  # windows per forward, on the CPU / on a GPU
ROWS = {False: 1024, True: 8192}  # positions scored together against each block of the output head
VOCAB_BLOCK = 2048  # output-head rows per product: logits are made and reduced a block at a time
SOFTMAX_ROWS = 512  # positions whose whole float64 softmax predicted_rows holds at once (200 MB for SmolLM2)
CALIBRATION_WINDOWS = 16  # windows data-aware rounding measures layer inputs on (8,192 tokens)


def is_causal_lm(folder: Path) -> bool:
    """The folder's config names a `*ForCausalLM` architecture."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or ())


@functools.cache
def _skeleton(folder: Path, device: str) -> torch.nn.Module:
    """The folder's causal LM built from its config.json in float32 (weights are loaded per call)."""
    import transformers

    from zoocodec.eval.text import built

    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        model = built(transformers.AutoModelForCausalLM, config, attn_implementation="sdpa", dtype=torch.float32)
    except (ValueError, KeyError, OSError) as e:
        raise ModelFormatError(f"{folder}: transformers cannot build a causal LM from its config.json "
                               f"({str(e).splitlines()[0]})") from None
    return model.eval().to(device)


def windows(tok, texts: Sequence[str], size: int = WINDOW) -> list[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """(inputs, targets, document of each target) per window of `size` tokens, in order."""
    ids, docs = [], []
    for d, text in enumerate(texts):
        t = tok(text + "\n", add_special_tokens=False)["input_ids"]
        ids += t
        docs += [d] * len(t)
    ids_t, docs_a = torch.tensor(ids, dtype=torch.long), np.array(docs, dtype=np.int64)
    bos = tok.bos_token_id
    out = []
    for s in range(0, len(ids), size):
        chunk = ids_t[s:s + size]
        seq = torch.cat([torch.tensor([bos]), chunk]) if bos is not None else chunk
        if len(seq) >= 2:
            out.append((seq[:-1], seq[1:], docs_a[s:s + size][len(chunk) - len(seq) + 1:]))
    return out


class Scorer:
    """A causal LM's per-token outputs on fixed texts, against the original recorded once.

    `reference(weights)` runs the original and keeps what its logits need; `outputs(weights)`
    gives (NLL, KL vs the original, document) per scored token, float64, on the host.
    """

    def __init__(self, folder: Path, texts: Sequence[str], limit: int | None = None,
                 device: str | Device = "cpu"):
        from zoocodec.eval.tasks import subset
        from zoocodec.eval.text import _tokenizer

        self.folder, self.device = Path(folder), resolve(device)
        all_windows = windows(_tokenizer(self.folder), texts)
        if not all_windows:
            raise ModelFormatError(f"{folder}: the texts give no tokens to predict")
        self.windows = [all_windows[i] for i in subset(len(all_windows), limit).tolist()]
        self.docs = np.concatenate([w[2] for w in self.windows])
        self._ref: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._pick: torch.Tensor | None = None  # a part's rows among its windows' tokens

    @property
    def n(self) -> int:
        return len(self.docs)

    def model(self, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The folder's model with `weights` loaded, on the scorer's device."""
        from zoocodec.eval.text import _load

        net = _skeleton(self.folder, str(self.device.torch))
        _load(net, weights)
        return net

    def _batches(self):
        """(inputs B x L, targets B*L) of consecutive windows of one length."""
        step = BATCH[self.device.is_gpu]
        i = 0
        while i < len(self.windows):
            j = i + 1
            while j < len(self.windows) and j - i < step and len(self.windows[j][0]) == len(self.windows[i][0]):
                j += 1
            group = self.windows[i:j]
            yield torch.stack([w[0] for w in group]), torch.cat([w[1] for w in group])
            i = j

    def _run(self, net: torch.nn.Module, ref: bool) -> torch.Tensor:
        head = net.get_output_embeddings()
        dev = self.device.torch
        rows = ROWS[self.device.is_gpu]
        nll, kl, hidden = [], [], []
        start = 0
        with torch.inference_mode():
            for x, y in self._batches():
                h = net.base_model(input_ids=x.to(dev), use_cache=False).last_hidden_state
                h = h.reshape(-1, h.shape[-1])
                y = y.to(dev)
                for s in range(0, len(h), rows):
                    hs, original = h[s:s + rows], None
                    if not ref:
                        rh, rw, rb = self._ref
                        original = (rh[start + s:start + s + len(hs)], rw, rb)
                    n, k = _scores(hs, y[s:s + rows], head.weight, head.bias, original)
                    nll.append(n)
                    kl.append(k)
                if ref:
                    hidden.append(h.clone())
                start += len(h)
        nll_t = torch.cat(nll).double().cpu()
        if ref:
            self._ref = (torch.cat(hidden), head.weight.detach().clone(),
                         None if head.bias is None else head.bias.detach().clone())
        kl_t = torch.zeros_like(nll_t) if ref else torch.cat(kl).double().cpu()
        return torch.stack([nll_t, kl_t, torch.from_numpy(self.docs).double()], dim=1)

    def reference(self, weights: dict[str, torch.Tensor], cache: bool = True) -> torch.Tensor:
        """The original's rows (KL 0); what later runs are compared against is kept, and stored in
        the zoo cache (`cache`) so the next process with these weights and tokens skips the run."""
        net = self.model(weights)
        _check_head(net, self.windows[0][0][:8].to(self.device.torch))
        path = self._cache_path(weights) if cache else None
        head = net.get_output_embeddings()
        kept = _read_reference(path, self.n) if path else None
        if kept is not None:
            hidden, nll = kept
            self._ref = (hidden.to(self.device.torch), head.weight.detach().clone(),
                         None if head.bias is None else head.bias.detach().clone())
            return torch.stack([nll, torch.zeros_like(nll), torch.from_numpy(self.docs).double()], dim=1)
        out = self._run(net, ref=True)
        if path:
            refcache.write(path, {"hidden": self._ref[0], "nll": out[:, 0]})
        return out

    def _cache_path(self, weights: dict[str, torch.Tensor]) -> Path:
        import transformers

        # the inputs' tokens, and the last target (the inputs give the others)
        tokens = [x.numpy().tobytes() for x, _, _ in self.windows] + [self.windows[-1][1][-1:].numpy().tobytes()]
        return refcache.path("lm-reference", f"{torch.__version__} {transformers.__version__} "
                             f"{torch.device(self.device.torch).type} {WINDOW}", weights, *tokens)

    def outputs(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._ref is None:
            raise RuntimeError("Scorer.outputs before Scorer.reference")
        out = self._run(self.model(weights), ref=False)
        return out if self._pick is None else out[self._pick]

    def part(self, rows) -> Scorer:
        """The same scorer on the tokens at `rows` only (one side of a split): only the windows
        holding them run, and outputs() gives those tokens' rows in the order of `rows`."""
        if self._ref is None or self._pick is not None:
            raise RuntimeError("Scorer.part needs the whole scorer after Scorer.reference")
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        sizes = torch.tensor([len(w[1]) for w in self.windows])
        ends = torch.cumsum(sizes, 0)
        keep = torch.unique(torch.searchsorted(ends, rows, right=True))
        starts = ends - sizes
        tokens = torch.cat([torch.arange(int(starts[w]), int(ends[w])) for w in keep.tolist()])
        where = torch.full((int(ends[-1]),), -1, dtype=torch.long)
        where[tokens] = torch.arange(len(tokens))
        out = copy.copy(self)
        out.windows = [self.windows[w] for w in keep.tolist()]
        out.docs = self.docs[tokens.numpy()]
        rh, rw, rb = self._ref
        out._ref = (rh[tokens.to(rh.device)], rw, rb)
        out._pick = where[rows]
        return out


def _scores(h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
            original: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """NLL of the targets `y` per row of hidden states `h` under the output head (w, b), and with
    `original` (its hidden states and head) KL(original || model) per row.

    The vocabulary is taken VOCAB_BLOCK entries at a time and both logsumexps run online (each
    running sum rescaled as its row's maximum grows), so no row's logits are ever whole: the
    head's product runs 1.7x faster in these blocks than on whole 49,152-wide rows, and the
    elementwise passes stay in cache. KL = sum p (zp - zq) / sum p - lse(zp) + lse(zq), with p the
    original's exp(zp - running max)."""
    def zeros():
        return h.new_zeros(len(h), dtype=torch.float32)

    m_q, s_q, z_y = zeros() - torch.inf, zeros(), zeros()  # running maximum, running sum, target's logit
    if original is not None:
        hp, wp, bp = original
        m_p, s_p, t = zeros() - torch.inf, zeros(), zeros()
    for v in range(0, len(w), VOCAB_BLOCK):
        block = slice(v, v + VOCAB_BLOCK)
        zq = F.linear(h, w[block], None if b is None else b[block]).float()
        at = (y - v).clamp(0, zq.shape[1] - 1)  # the target's column where it is in this block (no host sync)
        z_y = torch.where((y >= v) & (y < v + zq.shape[1]), zq.gather(1, at[:, None])[:, 0], z_y)
        m_q, _ = _rescale(m_q, s_q, zq)
        s_q += (zq - m_q[:, None]).exp_().sum(1)
        if original is not None:
            zp = F.linear(hp, wp[block], None if bp is None else bp[block]).float()
            m_p, c = _rescale(m_p, s_p, zp)
            t.mul_(c)
            zq = zp - zq  # the logit difference, in a fresh buffer
            zp.sub_(m_p[:, None]).exp_()
            s_p += zp.sum(1)
            t += torch.linalg.vecdot(zp, zq)
    lse_q = m_q + s_q.log()
    if original is None:
        return lse_q - z_y, None
    return lse_q - z_y, (t / s_p - m_p - s_p.log() + lse_q).clamp(min=0)


def _rescale(m: torch.Tensor, s: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the running maximum after block `z`, the factor exp(old - new)); the running sum `s` is rescaled
    to the new maximum in place (the factor rescales any other sum kept against it)."""
    grown = torch.maximum(m, z.amax(1))
    c = (m - grown).exp_()
    s.mul_(c)
    return grown, c


def _read_reference(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(hidden states, NLL) stored for these weights and tokens, or None (absent, unreadable, wrong size)."""
    kept = refcache.read(path, ("hidden", "nll"))
    if kept is None:
        return None
    hidden, nll = kept
    return (hidden, nll) if hidden.dim() == 2 and len(hidden) == n and nll.shape == (n,) else None


def _check_head(net: torch.nn.Module, x: torch.Tensor) -> None:
    """The logits must be the output head applied to the last hidden state (no soft-capping or
    scaling after it), or the KL from kept hidden states would not be the model's."""
    with torch.inference_mode():
        full = net(input_ids=x[None], use_cache=False).logits[0].float()
        mine = net.get_output_embeddings()(net.base_model(input_ids=x[None], use_cache=False).last_hidden_state[0])
    if not torch.allclose(full, mine.float(), rtol=1e-4, atol=1e-4):
        raise ModelFormatError(f"{type(net).__name__}: its logits are not its output head applied to its last "
                               f"hidden state; zoocodec cannot judge it by token KL")


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Paired]:
    """Token KL against the original (primary) and perplexity, paired per token, resampled by document."""
    docs = out[:, 2].long().numpy()
    return {"kl": Paired("mean", out[:, 1].numpy(), np.zeros(len(out)), groups=docs),
            "ppl": Paired("perplexity", out[:, 0].numpy(), ref[:, 0].numpy(), groups=docs)}


def distortion(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean token KL (nats): what sensitivities are measured on."""
    return float(out[:, 1].mean())


def calibration(folder: Path, texts: Sequence[str], weights: dict[str, torch.Tensor], count: int | None):
    """(module, run, windows) for data-aware rounding: `count` windows of `texts` (None: all), evenly spread."""
    scorer = Scorer(folder, texts, count)
    net = scorer.model(weights)

    def run(module: torch.nn.Module) -> None:
        with torch.no_grad():
            for x, _ in scorer._batches():
                module(input_ids=x, use_cache=False)
    return net, run, len(scorer.windows)


ROW_FLOOR = 1 / 32  # the least weight of a token's row (its step at most sqrt(32) = 5.7x the table's)


def predicted_rows(folder: Path, texts: Sequence[str], weights: dict[str, torch.Tensor],
                   count: int | None) -> np.ndarray:
    """The model's mean predicted probability of each token (one per row of its output head) over `count`
    windows of `texts`, float64.

    Why it weights a word-embedding row: a logit error e_v moves KL(p || q) by about
    sum_v p_v (e_v - sum_u p_u e_u)^2 / 2, so a head row matters in proportion to how often its token is
    predicted; and as an input row, to how often its token occurs, which a calibrated model's mean prediction
    estimates without the zeros of counts over a few thousand tokens."""
    scorer = Scorer(folder, texts, count)
    net = scorer.model(weights)
    head = net.get_output_embeddings()
    total, n = None, 0
    with torch.inference_mode():
        for x, _ in scorer._batches():
            h = net.base_model(input_ids=x.to(scorer.device.torch), use_cache=False).last_hidden_state
            h = h.reshape(-1, h.shape[-1])
            for s in range(0, len(h), SOFTMAX_ROWS):
                p = torch.softmax(head(h[s:s + SOFTMAX_ROWS]).double(), -1).sum(0)
                total = p if total is None else total + p
            n += len(h)
    return (total / n).cpu().numpy()


def row_weights(p: np.ndarray, grid: float) -> np.ndarray:
    """Per-row weights (mean 1) from predicted probabilities `p`: floored at ROW_FLOOR of the mean, on a
    2^(1/grid) grid (few distinct steps)."""
    r = np.maximum(p / p.mean(), ROW_FLOOR)
    r = r / r.mean()
    return np.exp2(np.round(np.log2(r) * grid) / grid)
