// The dq state machine (kernels/rdoq.py's NEXT_STATE and dq_dequantize): shared by the per-tensor
// walk (dq.cpp) and the batched decode's trellis jobs (plan.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

namespace zc::dq {

// The next state as arithmetic (no table lookup in a walk's dependency chain): its high bit is the
// level's parity xor the state's low bit, its low bit the state's high bit.
inline uint8_t next(uint8_t state, int64_t k) {
  return static_cast<uint8_t>(((static_cast<unsigned>(k & 1) ^ (state & 1u)) << 1) | (state >> 1));
}

// 2k, or 2k - sgn k in states 2-3, wrapping as NumPy's int64 does.
inline double level(int64_t k, uint8_t state) {
  const uint64_t sign = static_cast<uint64_t>((k > 0) - (k < 0));
  return static_cast<double>(static_cast<int64_t>(static_cast<uint64_t>(k) * 2 - (state >> 1) * sign));
}

// `out` (rows, cols): levels `k` (rows, cols) in step units, each row walked from state 0 (`by_column`:
// each column, from the top). Any levels: 2k wraps as above.
void walk(const int64_t* k, std::size_t rows, std::size_t cols, bool by_column, double* out, int threads);

}  // namespace zc::dq
