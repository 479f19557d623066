// The dq state machine's reconstruction (kernels/rdoq.py's dq_dequantize) on the CPU: each row (or
// column) of levels walked from state 0, a level k giving 2k in states 0-1 and 2k - sgn k in 2-3, the
// parity of k picking the next state. In NumPy it was a Python loop over the walk's steps, most of a
// dq file's load (minilm: 0.9 of 1.0 s).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "pool.h"

namespace nb = nanobind;
using namespace zc;

namespace {

using Levels = nb::ndarray<const int64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Recon = nb::ndarray<double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

constexpr uint8_t NEXT[4][2] = {{0, 2}, {2, 0}, {1, 3}, {3, 1}};  // kernels/rdoq.NEXT_STATE

// 2k, or 2k - sgn k in states 2-3, wrapping as NumPy's int64 does.
inline double level(int64_t k, uint8_t state) {
  uint64_t twice = static_cast<uint64_t>(k) * 2;
  if (state >= 2) twice -= static_cast<uint64_t>((k > 0) - (k < 0));
  return static_cast<double>(static_cast<int64_t>(twice));
}

// `out` (rows, cols): levels `k` in step units, each row walked from state 0 (`by_column`: each column,
// from the top). Rows (or blocks of columns) on `threads` threads.
void walk(Levels k, Recon out, bool by_column, int threads) {
  const std::size_t rows = k.shape(0), cols = k.shape(1);
  if (out.shape(0) != rows || out.shape(1) != cols) throw std::invalid_argument("output of the wrong shape");
  const int64_t* in = k.data();
  double* o = out.data();
  nb::gil_scoped_release release;
  if (!by_column) {
    parallel_for(rows, threads, [&](std::size_t r) {
      uint8_t state = 0;
      for (std::size_t c = 0; c < cols; ++c) {
        const int64_t v = in[r * cols + c];
        o[r * cols + c] = level(v, state);
        state = NEXT[state][static_cast<uint64_t>(v) & 1];
      }
    });
    return;
  }
  constexpr std::size_t BLOCK = 1024;  // columns a task walks down together
  parallel_for((cols + BLOCK - 1) / BLOCK, threads, [&](std::size_t b) {
    const std::size_t c0 = b * BLOCK, c1 = std::min(cols, c0 + BLOCK);
    std::vector<uint8_t> state(c1 - c0, 0);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = c0; c < c1; ++c) {
        const int64_t v = in[r * cols + c];
        o[r * cols + c] = level(v, state[c - c0]);
        state[c - c0] = NEXT[state[c - c0]][static_cast<uint64_t>(v) & 1];
      }
  });
}

}  // namespace

void bind_dq(nb::module_& m) {
  m.def("dq_walk", &walk, nb::arg("levels"), nb::arg("out"), nb::arg("by_column"), nb::arg("threads") = 0,
        "dq levels (rows, cols) int64 -> their reconstruction in step units (float64, into out), each row (or "
        "column) walked through the 4-state machine from state 0.");
}
