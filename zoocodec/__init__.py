"""zoocodec: compress the weights of trained neural networks, and measure what it costs.

    import zoocodec
    report = zoocodec.compress("minilm", "minilm.zc", "uniform:step=0.002")
    tensors = zoocodec.decompress("minilm.zc")        # dict[str, torch.Tensor]
    info = zoocodec.inspect("minilm.zc")
"""
__version__ = "0.1.0"

from zoocodec.pipeline.core import Archive, Report, compress, decompress, inspect  # noqa: E402

__all__ = ["Archive", "Report", "compress", "decompress", "inspect", "__version__"]
