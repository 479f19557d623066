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

#include "dq.h"
#include "pool.h"

namespace nb = nanobind;
using namespace zc;

namespace {

using Levels = nb::ndarray<const int64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Recon = nb::ndarray<double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// `out` (rows, cols): levels `k` in step units, each row walked from state 0 (`by_column`: each column,
// from the top). Walks run side by side, LANES rows (or a block of columns) a task, so that one walk's
// chain of states overlaps the others'.
void walk(Levels k, Recon out, bool by_column, int threads) {
  const std::size_t rows = k.shape(0), cols = k.shape(1);
  if (out.shape(0) != rows || out.shape(1) != cols) throw std::invalid_argument("output of the wrong shape");
  const int64_t* in = k.data();
  double* o = out.data();
  nb::gil_scoped_release release;
  // walks w0..w1 (rows, or columns), step j of walk w at in[w * across + j * along]
  auto run = [&](std::size_t w0, std::size_t w1, std::size_t steps, std::size_t across, std::size_t along) {
    std::vector<uint8_t> state(w1 - w0, 0);
    for (std::size_t j = 0; j < steps; ++j)
      for (std::size_t w = w0; w < w1; ++w) {
        const std::size_t at = w * across + j * along;
        o[at] = dq::level(in[at], state[w - w0]);
        state[w - w0] = dq::next(state[w - w0], in[at]);
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

}  // namespace

void bind_dq(nb::module_& m) {
  m.def("dq_walk", &walk, nb::arg("levels"), nb::arg("out"), nb::arg("by_column"), nb::arg("threads") = 0,
        "dq levels (rows, cols) int64 -> their reconstruction in step units (float64, into out), each row (or "
        "column) walked through the 4-state machine from state 0.");
}
