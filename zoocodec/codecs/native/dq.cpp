// The dq state machine's reconstruction (kernels/rdoq.py's dq_dequantize) on the CPU: each row (or
// column) of levels walked from state 0, a level k giving 2k in states 0-1 and 2k - sgn k in 2-3, the
// parity of k picking the next state. In NumPy it was a Python loop over the walk's steps, most of a
// dq file's load (minilm: 0.9 of 1.0 s).
#include "dq.h"

#include <algorithm>
#include <vector>

#include "pool.h"

namespace zc::dq {

// Walks run side by side, LANES rows (or a block of columns) a task, so that one walk's chain of
// states overlaps the others'.
void walk(const int64_t* k, std::size_t rows, std::size_t cols, bool by_column, double* out, int threads) {
  // walks w0..w1 (rows, or columns), step j of walk w at k[w * across + j * along]
  auto run = [&](std::size_t w0, std::size_t w1, std::size_t steps, std::size_t across, std::size_t along) {
    std::vector<uint8_t> state(w1 - w0, 0);
    for (std::size_t j = 0; j < steps; ++j)
      for (std::size_t w = w0; w < w1; ++w) {
        const std::size_t at = w * across + j * along;
        out[at] = level(k[at], state[w - w0]);
        state[w - w0] = next(state[w - w0], k[at]);
      }
  };
  constexpr std::size_t LANES = 8, BLOCK = 1024;
  if (!by_column)
    parallel_for((rows + LANES - 1) / LANES, threads,
                 [&](std::size_t b) { run(b * LANES, std::min(rows, (b + 1) * LANES), cols, cols, 1); });
  else
    parallel_for((cols + BLOCK - 1) / BLOCK, threads,
                 [&](std::size_t b) { run(b * BLOCK, std::min(cols, (b + 1) * BLOCK), rows, 1, cols); });
}

}  // namespace zc::dq
