"""Sentence encoders (BERT for minilm, MPNet for mpnet) as a plain torch forward over a state dict.

What sentence-transformers does for these models, without importing it: tokenise with the
model's own tokenizer.json (truncated to max_seq_length), run the encoder, mean-pool the
last hidden states over real tokens, L2-normalise. Weights come from any dict of tensors
(the original model, or one decoded from a .zc), so a compressed model runs exactly like
the original.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from zoocodec.errors import ModelFormatError


@dataclass(frozen=True)
class EncoderConfig:
    kind: str  # bert | mpnet
    layers: int
    heads: int
    eps: float
    max_len: int
    pad_id: int


def read_config(folder: Path) -> EncoderConfig:
    """The encoder's shape from a Hugging Face folder's config.json and sentence_bert_config.json."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{folder}: no readable config.json ({e})") from None
    st = folder / "sentence_bert_config.json"
    max_len = json.loads(st.read_text()).get("max_seq_length", 512) if st.is_file() else 512
    kind = cfg.get("model_type")
    if kind not in ("bert", "mpnet"):
        raise ModelFormatError(f"{folder}: model_type {kind!r} is not a sentence encoder zoocodec runs (bert, mpnet)")
    return EncoderConfig(kind, cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg.get("layer_norm_eps", 1e-12),
                         max_len, cfg.get("pad_token_id", 0))


def load_tokenizer(folder: Path, max_len: int):
    from tokenizers import Tokenizer  # noqa: PLC0415

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_len)
    tok.no_padding()
    return tok


class SentenceEncoder:
    """encode(texts) -> L2-normalised sentence embeddings (float32, one row per text)."""

    def __init__(self, folder: Path, weights: dict[str, torch.Tensor]):
        self.cfg = read_config(folder)
        self.tok = load_tokenizer(folder, self.cfg.max_len)
        prefix = next((p for p in ("", "bert.", "mpnet.") if f"{p}embeddings.word_embeddings.weight" in weights), None)
        if prefix is None:
            raise ModelFormatError("the weights have no embeddings.word_embeddings.weight: not a BERT/MPNet encoder")
        self.w = {k[len(prefix):]: v.float() for k, v in weights.items() if k.startswith(prefix)}

    def encode(self, texts: list[str], batch: int = 32) -> torch.Tensor:
        ids = [e.ids for e in self.tok.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        out = torch.empty(len(ids), self.w["embeddings.word_embeddings.weight"].shape[1])
        with torch.no_grad():
            for s in range(0, len(order), batch):
                chunk = order[s:s + batch]
                width = max(len(ids[i]) for i in chunk)
                x = torch.full((len(chunk), width), self.cfg.pad_id, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.bool)
                for row, i in enumerate(chunk):
                    x[row, :len(ids[i])] = torch.tensor(ids[i])
                    mask[row, :len(ids[i])] = True
                h = self._forward(x, mask)
                m = mask.unsqueeze(-1).float()
                pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[chunk] = F.normalize(pooled, p=2, dim=1)
        return out

    # ---- the encoders -------------------------------------------------------------
    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.cfg.eps)

    def _lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w, length = self.w, ids.shape[1]
        if self.cfg.kind == "bert":
            pos = torch.arange(length)
            h = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos] \
                + w["embeddings.token_type_embeddings.weight"][0]
            bias = None
            attn, q, k, v, ao, aln, inter, out, oln = ("attention.self", "query", "key", "value", "attention.output.dense",
                                                       "attention.output.LayerNorm", "intermediate.dense",
                                                       "output.dense", "output.LayerNorm")
        else:  # MPNet: positions start after the padding index; relative position bias shared by all layers
            pos = (torch.cumsum(mask.long(), 1) * mask.long()) + self.cfg.pad_id
            h = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos]
            bias = self._mpnet_bias(length)
            attn, q, k, v, ao, aln, inter, out, oln = ("attention.attn", "q", "k", "v", "attention.attn.o",
                                                       "attention.LayerNorm", "intermediate.dense",
                                                       "output.dense", "output.LayerNorm")
        h = self._ln(h, "embeddings.LayerNorm")
        heads = self.cfg.heads
        neg = torch.zeros(mask.shape, dtype=h.dtype).masked_fill(~mask, torch.finfo(h.dtype).min)[:, None, None, :]
        for i in range(self.cfg.layers):
            p = f"encoder.layer.{i}."
            b, n, d = h.shape

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(b, n, heads, d // heads).transpose(1, 2)

            qh, kh, vh = (split(self._lin(h, f"{p}{attn}.{x}")) for x in (q, k, v))
            scores = qh @ kh.transpose(-1, -2) / math.sqrt(d // heads) + neg
            if bias is not None:
                scores = scores + bias
            ctx = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, n, d)
            h = self._ln(h + self._lin(ctx, f"{p}{ao}"), f"{p}{aln}")
            ff = self._lin(F.gelu(self._lin(h, f"{p}{inter}")), f"{p}{out}")
            h = self._ln(h + ff, f"{p}{oln}")
        return h

    def _mpnet_bias(self, length: int, buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
        """MPNet's bucketed relative position bias (as in transformers' MPNetEncoder)."""
        pos = torch.arange(length)
        rel = pos[None, :] - pos[:, None]
        n = -rel
        half = buckets // 2
        ret = (n < 0).long() * half
        n = n.abs()
        max_exact = half // 2
        large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                             * (half - max_exact)).long()
        large = torch.minimum(large, torch.full_like(large, half - 1))
        ret = ret + torch.where(n < max_exact, n, large)
        table = self.w["encoder.relative_attention_bias.weight"]
        return table[ret].permute(2, 0, 1).unsqueeze(0)
