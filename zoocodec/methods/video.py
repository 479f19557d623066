"""Uniform quantization whose symbols are coded as video (H.264 / HEVC), lossless or lossy.

The step logic is the uniform method's (`bits` per channel, `bits` per tensor, or one
`step`); this spec adds what the video coder needs: `coder` (video-h264 | video-hevc),
`crf` (none = lossless; else the encoder's constant rate factor, so the symbols come
back with an error the report measures), `preset`, `pix` (yuv420p with flat chroma, or
gray) and `hw` (auto | cpu | nvenc | nvdec: where to encode, and nvdec asks for a stream
NVDEC decodes). Decoding picks NVDEC when present and the stream is one it decodes,
software otherwise; the bitstream's CRCs make both give the same symbols.

    zoocodec.compress("minilm", "m.zc", "video:bits=8,coder=video-hevc")          # lossless
    zoocodec.compress("minilm", "m.zc", "video:bits=8,coder=video-h264,crf=18")   # lossy
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoocodec.codecs import video
from zoocodec.errors import SpecError
from zoocodec.kernels import uniform as K
from zoocodec.methods.base import Encoded, TensorData, from_float64, register
from zoocodec.methods.uniform import Uniform

CODERS = {"video-h264": "h264", "video-hevc": "hevc"}


@register
@dataclass(frozen=True)
class Video(Uniform):
    name = "video"
    version = 1

    coder: str = "video-hevc"
    crf: int | None = None
    preset: str = "medium"
    pix: str = "yuv420p"
    hw: str = "auto"

    def validate(self) -> None:
        if self.coder not in CODERS:
            raise SpecError(f"video: coder must be one of {', '.join(CODERS)}, got {self.coder!r}")
        super().validate()
        self.options().validate()
        depth = max(video.CODECS[CODERS[self.coder]].depths)
        if self.crf is not None and self.bits is not None and self.bits > depth:
            raise SpecError(f"video: lossy {self.coder} takes at most {depth}-bit symbols, got bits={self.bits}")

    def options(self) -> video.Options:
        return video.Options(codec=CODERS[self.coder], crf=self.crf, preset=self.preset, pix=self.pix, hw=self.hw)

    def encode(self, t: TensorData) -> Encoded:
        """Uniform.encode with the video coder's options, and the reconstruction it decodes to."""
        w = t.float64()
        steps = self.steps_for(w)
        symbols = K.quantize(w, steps, np)
        data, (decoded,) = video.encode_members([symbols], self.options())
        recon = from_float64(K.dequantize(decoded.reshape(symbols.shape), steps, np), t.dtype)
        side = {"rows": int(steps.shape[0]), "video": video.Header.unpack(data).describe()}
        max_err = int(np.max(np.abs(decoded - symbols.reshape(-1)))) if symbols.size else 0
        side["max_symbol_error"] = max_err  # lossy: |w - w_hat| <= (max_symbol_error + 1/2) * step
        segments = {"symbols": data}
        if steps.shape[0] > 1:
            segments["steps"] = steps.astype("<f4").tobytes()
        else:
            side["step"] = float(steps[0])
        return Encoded(side, segments, recon)
