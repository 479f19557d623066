// Python binding of the per-tensor dq walk (dq.h) and the rate-distortion decisions (rdoq.h).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <stdexcept>

#include "dq.h"
#include "rdoq.h"

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

using Values = nb::ndarray<const double, nb::c_contig, nb::device::cpu>;
using Contexts = nb::ndarray<const int64_t, nb::c_contig, nb::device::cpu>;
using Bits = nb::ndarray<const double, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using Worst = nb::ndarray<const double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Symbols = nb::ndarray<int64_t, nb::c_contig, nb::device::cpu>;

rdoq::Tables tables(Bits bits, Worst worst, int64_t origin, double lam) {
  if (worst.shape(0) != bits.shape(0) || worst.shape(1) != bits.shape(1) || bits.shape(2) == 0)
    throw std::invalid_argument("rdoq: worst must be (contexts, states) of bits (contexts, states, levels)");
  return {bits.data(), worst.data(), static_cast<int64_t>(bits.shape(0)), static_cast<int64_t>(bits.shape(1)),
          static_cast<int64_t>(bits.shape(2)), origin, lam};
}

void same_shape(const Values& x, const Contexts& ctx, const Symbols& out) {
  bool same = x.ndim() == ctx.ndim() && x.ndim() == out.ndim();
  for (std::size_t d = 0; same && d < x.ndim(); ++d) same = x.shape(d) == ctx.shape(d) && x.shape(d) == out.shape(d);
  if (!same) throw std::invalid_argument("rdoq: values, contexts and output of different shapes");
}

void decide(Values x, Contexts ctx, Bits bits, Worst worst, int64_t origin, double lam, Symbols out, int threads) {
  same_shape(x, ctx, out);
  const rdoq::Tables t = tables(bits, worst, origin, lam);
  if (t.states != 1) throw std::invalid_argument("rdoq: decide takes one state");
  nb::gil_scoped_release release;
  rdoq::decide(x.data(), ctx.data(), x.size(), t, out.data(), threads);
}

void trellis(Values x, Contexts ctx, Bits bits, Worst worst, int64_t origin, double lam, Symbols out, int threads) {
  same_shape(x, ctx, out);
  if (x.ndim() != 2) throw std::invalid_argument("rdoq: the trellis takes a matrix");
  const rdoq::Tables t = tables(bits, worst, origin, lam);
  nb::gil_scoped_release release;
  rdoq::trellis(x.data(), ctx.data(), x.shape(0), x.shape(1), t, out.data(), threads);
}

}  // namespace

void bind_dq(nb::module_& m) {
  m.def("dq_walk", &walk, nb::arg("levels"), nb::arg("out"), nb::arg("by_column"), nb::arg("threads") = 0,
        "dq levels (rows, cols) int64 -> their reconstruction in step units (float64, into out), each row (or "
        "column) walked through the 4-state machine from state 0.");
  m.def("rdoq_decide", &decide, nb::arg("x"), nb::arg("ctx"), nb::arg("bits"), nb::arg("worst"), nb::arg("origin"),
        nb::arg("lam"), nb::arg("out"), nb::arg("threads") = 0,
        "kernels/rdoq.py's decide on float64 values, int64 contexts, bits (contexts, 1, levels) and worst "
        "(contexts, 1): the levels into out (int64, the values' shape).");
  m.def("rdoq_trellis", &trellis, nb::arg("x"), nb::arg("ctx"), nb::arg("bits"), nb::arg("worst"), nb::arg("origin"),
        nb::arg("lam"), nb::arg("out"), nb::arg("threads") = 0,
        "kernels/rdoq.py's dq_trellis on a float64 matrix, int64 contexts, bits (contexts, 1 or 4 states, levels) "
        "and worst (contexts, states): each row's levels into out (int64, rows x cols).");
}
