"""Accuracy evaluation of (compressed) zoo models on real tasks.

    from zoocodec.eval import evaluate
    for m in evaluate("minilm.zc"):          # or a zoo name, a model path, a dict of tensors
        print(m.task, m.metric, m.value, m.baseline, m.delta)
"""
from zoocodec.eval.evaluate import Metric, evaluate

__all__ = ["Metric", "evaluate"]
