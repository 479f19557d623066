// Rate-distortion decisions on the CPU (kernels/rdoq.py's decide and dq_trellis for NumPy arrays):
// the float64 operations of rdoq.cu, in the same order and without contraction into FMAs, so the levels
// equal the GPU kernels' and the NumPy transliterations' (decide_emulated, dq_trellis_emulated) bit for
// bit. Rows are independent: they run on the native pool, four at a time in AVX2 lanes where the CPU has
// it (values four at a time for decide). In NumPy the trellis was a Python loop over columns, three quarters
// of a dq compress (minilm: 23 of 31 s); natively 86 ns a weight with 4 states, in AVX2 lanes 17.5.
#pragma once
#include <cstddef>
#include <cstdint>

namespace zc::rdoq {

// Rate tables bits[context][state][level - origin] (states 1, or 4 when a level's price depends on the
// state it is coded in) and worst[context][state], the price of a level outside the table.
struct Tables {
  const double* bits;
  const double* worst;
  int64_t contexts, states, size, origin;
  double lam;
};

// out[i]: among nearest, the other neighbour and zero, the first level of least
// (x - level)^2 + lam * rate(level | ctx[i]) (states 1).
void decide(const double* x, const int64_t* ctx, std::size_t n, const Tables& t, int64_t* out, int threads);

// out (rows, cols): per row, the Viterbi path of dq levels from state 0 minimising the sum of
// (x - recon)^2 + lam * rate(level | context[, state]).
void trellis(const double* x, const int64_t* ctx, std::size_t rows, std::size_t cols, const Tables& t, int64_t* out,
             int threads);

}  // namespace zc::rdoq
