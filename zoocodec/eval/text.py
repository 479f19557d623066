"""Hugging Face text models run with transformers over any dict of tensors (original or decoded).

Sentence embeddings are made as sentence-transformers makes them: the model's own
tokenizer (truncated to max_seq_length), the encoder, mean pooling over real tokens, L2
normalisation. A classification model (config `architectures` ending in
ForSequenceClassification) gives its logits instead. The module is built once per
folder from its config.json (nothing from a hub) and each set of weights is copied into
it, so a compressed model runs exactly like the original.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from torch.nn import functional as F

from zoocodec.errors import ModelFormatError


def is_classifier(folder: Path) -> bool:
    """The folder's config names a sequence-classification architecture."""
    return any(a.endswith("ForSequenceClassification") for a in _config_json(folder).get("architectures") or ())


def _config_json(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{folder}: no readable config.json ({e})") from None


def _max_len(folder: Path) -> int:
    st = folder / "sentence_bert_config.json"
    return json.loads(st.read_text()).get("max_seq_length", 512) if st.is_file() else 512


def built(cls, config, **kwargs) -> torch.nn.Module:
    """`cls.from_config(config)` without random initialisation (seconds for a 135M model), since every
    parameter is loaded right after (`_load` refuses a model missing one); ties its weights, which
    the skipped initialisation would have done."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = cls.from_config(config, **kwargs)
    model.tie_weights()
    return model


@functools.cache
def _skeleton(folder: Path, classifier: bool) -> torch.nn.Module:
    """The folder's model built from its config (weights are loaded into it per call)."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        cls = transformers.AutoModelForSequenceClassification if classifier else transformers.AutoModel
        model = built(cls, config, attn_implementation="eager")
    except (ValueError, KeyError, OSError) as e:
        raise ModelFormatError(f"{folder}: transformers cannot build a model from its config.json "
                               f"({str(e).splitlines()[0]})") from None
    return model.eval()


@functools.cache
def _tokenizer(folder: Path):
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (ValueError, OSError) as e:
        raise ModelFormatError(f"{folder}: no tokenizer transformers can load ({str(e).splitlines()[0]})") from None


def _load(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy `weights` into `model`; names may carry the base model's prefix (bert., mpnet.) or lack it."""
    own = model.state_dict()
    prefix = model.base_model_prefix + "."
    mapped = {}
    for name, w in weights.items():
        key = name if name in own else prefix + name if prefix + name in own else name.removeprefix(prefix)
        if key in own:
            mapped[key] = w.to(own[key].dtype)
    params = {n for n, _ in model.named_parameters()}
    missing = sorted(params - mapped.keys())
    if missing:
        raise ModelFormatError(f"the weights do not fit the model's config: {len(missing)} parameters missing, "
                               f"e.g. {missing[0]}")
    model.load_state_dict(mapped, strict=False)


class TextModel:
    """encode(texts): L2-normalised mean-pooled embeddings; logits(texts): a classifier's outputs."""

    def __init__(self, folder: Path, weights: dict[str, torch.Tensor], classifier: bool = False):
        self.folder, self.classifier = Path(folder), classifier
        self.model = _skeleton(self.folder, classifier)
        self.tok = _tokenizer(self.folder)
        self.max_len = _max_len(self.folder)
        _load(self.model, weights)

    def _batches(self, texts: list[str], batch: int):
        """(indices, model outputs) per batch of similar lengths (less padding)."""
        lengths = [len(ids) for ids in self.tok(texts, truncation=True, max_length=self.max_len)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        with torch.no_grad():
            for s in range(0, len(order), batch):
                chunk = order[s:s + batch]
                enc = self.tok([texts[i] for i in chunk], truncation=True, max_length=self.max_len, padding=True,
                               return_tensors="pt")
                yield chunk, enc["attention_mask"], self.model(**enc)

    def encode(self, texts: list[str], batch: int = 32) -> torch.Tensor:
        out = None
        for chunk, mask, result in self._batches(texts, batch):
            h = result.last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)
            if out is None:
                out = torch.empty(len(texts), pooled.shape[1])
            out[chunk] = pooled
        return out if out is not None else torch.empty(0, 0)

    def logits(self, texts: list[str], batch: int = 32) -> torch.Tensor:
        out = None
        for chunk, _, result in self._batches(texts, batch):
            if out is None:
                out = torch.empty(len(texts), result.logits.shape[1])
            out[chunk] = result.logits.float()
        return out if out is not None else torch.empty(0, 0)
