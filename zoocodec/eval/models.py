"""Build a runnable model from a zoo entry's `arch` and a dict of weights (original or decoded).

Image classifiers become torch modules in eval mode (strict state_dict loading, so a
decoded model has exactly the original's tensors); sentence encoders become a
transformers model (zoocodec.eval.text) with config and tokenizer from the zoo model's folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoocodec.errors import ModelFormatError, ZoocodecError

IMAGE_ARCHS = ("mnist-cnn", "fashionnet", "effnet-lite0")
TEXT_ARCHS = ("sentence-encoder",)
LM_ARCHS = ("causal-lm",)  # run by zoocodec.eval.lm.Scorer from the zoo model's folder


def kind(arch: str) -> str:
    if arch in IMAGE_ARCHS:
        return "image"
    if arch in TEXT_ARCHS:
        return "text"
    if arch in LM_ARCHS:
        return "tokens"
    raise ZoocodecError(f"unknown arch {arch!r} (known: {', '.join(IMAGE_ARCHS + TEXT_ARCHS + LM_ARCHS)})")


def build(arch: str, weights: dict[str, torch.Tensor], folder: Path | None = None) -> Any:
    """A model ready to run; `folder` is the Hugging Face folder a sentence encoder needs."""
    if kind(arch) == "text":
        from zoocodec.eval.text import TextModel

        if folder is None or not folder.is_dir():
            raise ModelFormatError(
                f"arch {arch!r} needs a Hugging Face folder (config.json, tokenizer.json), got {folder}"
            )
        return TextModel(folder, weights)
    if arch == "effnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
    else:
        from zoocodec.eval.nets import FashionNet, MnistCNN

        net = MnistCNN() if arch == "mnist-cnn" else FashionNet()
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, strict=True)
    except RuntimeError as e:
        raise ModelFormatError(f"the weights do not fit arch {arch!r}: {str(e).splitlines()[0]}") from None
    return net.eval().to(memory_format=torch.channels_last)
