"""Image decoding on the GPU with NVIDIA DALI (nvJPEG), for GPU workers.

Only the decoding moves to the GPU: resizing, cropping and normalisation are the same
torch code as the CPU loader's (zoocodec.eval.data.photo_views), so the two loaders differ
only where the JPEG decoders round differently. DALI is imported here and nowhere else;
select it with ZOOCODEC_IMAGE_LOADER=dali.
"""
from __future__ import annotations

import numpy as np
import torch

from zoocodec.errors import ZoocodecError


def decode(files: list[str], device_id: int | None = 0) -> list[torch.Tensor]:
    """uint8 HWC RGB images, decoded by DALI's mixed (GPU) decoder on `device_id`, in the order
    given; `device_id=None` runs DALI's CPU decoder in a CPU-only pipeline (no GPU needed)."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError:
        raise ZoocodecError("DALI is not installed; install it with: pip install 'zoocodec[gpu]'") from None

    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id, prefetch_queue_depth=1)
    def pipe():
        encoded, _ = fn.readers.file(files=files, random_shuffle=False)
        return fn.decoders.image(encoded, device="cpu" if device_id is None else "mixed", output_type=types.RGB)

    p = pipe()
    p.build()
    out = []
    for _ in files:
        (images,) = p.run()
        host = images if device_id is None else images.as_cpu()
        out.append(torch.from_numpy(np.array(host.at(0))))
    return out
