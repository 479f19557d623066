"""The method registry. Importing this package registers every built-in method."""
from zoocodec.methods import dither, kmeans, lnq, lossless, lowrank, pq, prune, rdoq, sequence, transform, uniform  # noqa: F401  (registration)
from zoocodec.methods.base import (
    REGISTRY,
    Encoded,
    MethodSpec,
    Quantized,
    TensorData,
    parse_spec,
    spec_from_dict,
)

__all__ = ["REGISTRY", "Encoded", "MethodSpec", "Quantized", "TensorData", "parse_spec", "spec_from_dict"]
