// The ctx coder's counts by context (ctx_model.h), rows on the native pool, and its Python binding.
#include "ctx_model.h"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "pool.h"

namespace zc::ctx {

void count_levels(const int64_t* m, std::size_t rows, std::size_t cols, const int64_t* row_of, const int64_t* col_of,
                  const int64_t* pair, std::size_t pair_rows, std::size_t pair_cols, std::size_t bins, int64_t lo,
                  std::size_t size, int64_t* counts, int threads) {
  for (std::size_t i = 0; i < rows; ++i)
    if (static_cast<uint64_t>(row_of[i]) >= pair_rows) throw std::invalid_argument("count_levels: a row class index");
  for (std::size_t j = 0; j < cols; ++j)
    if (static_cast<uint64_t>(col_of[j]) >= pair_cols) throw std::invalid_argument("count_levels: a column class index");
  for (std::size_t k = 0; k < pair_rows * pair_cols; ++k)
    if (static_cast<uint64_t>(pair[k]) >= bins) throw std::invalid_argument("count_levels: a context past the bins");
  const std::size_t cells = bins * size;
  const std::size_t parts = std::max<std::size_t>(1, std::min<std::size_t>(rows, threads > 0 ? threads : default_threads()));
  std::vector<std::vector<int64_t>> part(parts);
  parallel_for(parts, threads, [&](std::size_t p) {
    std::vector<int64_t>& c = part[p];
    c.assign(cells, 0);
    for (std::size_t i = p * rows / parts; i < (p + 1) * rows / parts; ++i) {
      const int64_t* line = pair + row_of[i] * pair_cols;
      const int64_t* v = m + i * cols;
      for (std::size_t j = 0; j < cols; ++j) {
        const uint64_t at = static_cast<uint64_t>(v[j]) - static_cast<uint64_t>(lo);
        if (at >= size) throw std::invalid_argument("count_levels: a level outside lo .. lo + size");
        ++c[static_cast<std::size_t>(line[col_of[j]]) * size + at];
      }
    }
  });
  std::fill(counts, counts + cells, 0);
  for (const auto& c : part)
    for (std::size_t k = 0; k < cells; ++k) counts[k] += c[k];
}

}  // namespace zc::ctx

namespace nb = nanobind;

namespace {

template <int D>
using In = nb::ndarray<const int64_t, nb::ndim<D>, nb::c_contig, nb::device::cpu>;

void count(In<2> m, In<1> row_of, In<1> col_of, In<2> pair, int64_t lo, nb::ndarray<int64_t, nb::ndim<2>,
           nb::c_contig, nb::device::cpu> counts, int threads) {
  const std::size_t rows = m.shape(0), cols = m.shape(1);
  if (row_of.shape(0) != rows || col_of.shape(0) != cols)
    throw std::invalid_argument("count_levels: a class index per row and per column");
  nb::gil_scoped_release release;
  zc::ctx::count_levels(m.data(), rows, cols, row_of.data(), col_of.data(), pair.data(), pair.shape(0), pair.shape(1),
                        counts.shape(0), lo, counts.shape(1), counts.data(), threads);
}

}  // namespace

void bind_ctx_model(nb::module_& m) {
  m.def("ctx_count_levels", &count, nb::arg("m"), nb::arg("row_of"), nb::arg("col_of"), nb::arg("pair"), nb::arg("lo"),
        nb::arg("counts"), nb::arg("threads") = 0,
        "counts (bins x size, int64) of the levels of matrix m (int64) by context pair[row_of[i], col_of[j]], level "
        "lo + k in column k.");
}
