// The half-precision part of CUDA the kernels use, for the emulator (tests/cuda_emu/emu.h).
#pragma once
#include <cstring>

struct __half {
  unsigned short bits;
};
// double -> half in one rounding (nearest even), as the device's cvt.rn.f16.f64 does.
inline __half __double2half(double d) {
  const _Float16 h = static_cast<_Float16>(d);
  __half out;
  std::memcpy(&out.bits, &h, 2);
  return out;
}
inline unsigned short __half_as_ushort(__half h) { return h.bits; }
