// Python binding of the per-tensor dq walk (dq.h).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <stdexcept>

#include "dq.h"

namespace nb = nanobind;
using namespace zc;

namespace {

using Levels = nb::ndarray<const int64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Recon = nb::ndarray<double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

void walk(Levels k, Recon out, bool by_column, int threads) {
  const std::size_t rows = k.shape(0), cols = k.shape(1);
  if (out.shape(0) != rows || out.shape(1) != cols) throw std::invalid_argument("output of the wrong shape");
  nb::gil_scoped_release release;
  dq::walk(k.data(), rows, cols, by_column, out.data(), threads);
}

}  // namespace

void bind_dq(nb::module_& m) {
  m.def("dq_walk", &walk, nb::arg("levels"), nb::arg("out"), nb::arg("by_column"), nb::arg("threads") = 0,
        "dq levels (rows, cols) int64 -> their reconstruction in step units (float64, into out), each row (or "
        "column) walked through the 4-state machine from state 0.");
}
