// Data-aware rounding's inner loops (gptq.h) and their Python binding.
#include "gptq.h"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cmath>
#include <stdexcept>

#include "numpy_cast.h"
#include "pool.h"

namespace zc::gptq {
namespace {

constexpr std::size_t ROWS = 16;  // rows a task

}  // namespace

void nearest_block(double* w, std::size_t rows, std::size_t d, const double* u, std::size_t groups, const double* step,
                   std::size_t b0, std::size_t b1, int64_t* q, double* err, int threads) {
  const std::size_t per = rows / groups, width = b1 - b0;
  parallel_for((rows + ROWS - 1) / ROWS, threads, [&](std::size_t t) {
    for (std::size_t r = t * ROWS; r < std::min(rows, (t + 1) * ROWS); ++r) {
      const double* ur = u + (r / per) * d * d;
      double* wr = w + r * d;
      for (std::size_t j = b0; j < b1; ++j) {
        const double k = std::nearbyint(wr[j] / step[r]);
        q[r * d + j] = to_i64(k);
        const double e = (wr[j] - k * step[r]) / ur[j * d + j];
        err[r * width + (j - b0)] = e;
        for (std::size_t c = j + 1; c < b1; ++c) wr[c] -= e * ur[j * d + c];
      }
    }
  });
}

void descend(const double* s, double* g, int64_t* q, std::size_t rows, std::size_t d, const double* h,
             std::size_t groups, const double* curve, int64_t lo, int64_t hi, int sweeps, int threads) {
  const std::size_t per = rows / groups;
  parallel_for((rows + ROWS - 1) / ROWS, threads, [&](std::size_t t) {
    for (std::size_t r = t * ROWS; r < std::min(rows, (t + 1) * ROWS); ++r) {
      const double* hr = h + (r / per) * d * d;
      double* gr = g + r * d;
      int64_t* qr = q + r * d;
      for (int sweep = 0; sweep < sweeps; ++sweep) {
        bool moved = false;
        for (std::size_t j = 0; j < d; ++j) {
          const double slope = 2.0 * s[r] * gr[j];
          const int64_t delta = slope > 0 ? 1 : -1;
          const double c = curve[j * rows + r];
          const double gain = c - std::fabs(slope);
          if (!(gain < -1e-12 * c) || qr[j] + delta < lo || qr[j] + delta > hi) continue;
          qr[j] += delta;
          const double by = static_cast<double>(delta) * s[r];
          for (std::size_t k = 0; k < d; ++k) gr[k] -= by * hr[j * d + k];
          moved = true;
        }
        if (!moved) break;
      }
    }
  });
}

}  // namespace zc::gptq

namespace nb = nanobind;

namespace {

template <class T, int D>
using Arr = nb::ndarray<T, nb::ndim<D>, nb::c_contig, nb::device::cpu>;

void check_groups(std::size_t rows, std::size_t d, std::size_t groups, std::size_t a, std::size_t b) {
  if (groups == 0 || rows % groups || a != d || b != d)
    throw std::invalid_argument("gptq: factors must be groups x d x d, the rows a multiple of the groups");
}

void nearest_block(Arr<double, 2> w, Arr<const double, 3> u, Arr<const double, 1> step, std::size_t b0,
                   std::size_t b1, Arr<int64_t, 2> q, Arr<double, 2> err, int threads) {
  const std::size_t rows = w.shape(0), d = w.shape(1);
  check_groups(rows, d, u.shape(0), u.shape(1), u.shape(2));
  if (step.shape(0) != rows || q.shape(0) != rows || q.shape(1) != d || b0 > b1 || b1 > d ||
      err.shape(0) != rows || err.shape(1) != b1 - b0)
    throw std::invalid_argument("gptq: a step per row, q as w, err rows x (b1 - b0), 0 <= b0 <= b1 <= d");
  nb::gil_scoped_release release;
  zc::gptq::nearest_block(w.data(), rows, d, u.data(), u.shape(0), step.data(), b0, b1, q.data(), err.data(), threads);
}

void descend(Arr<const double, 1> s, Arr<double, 2> g, Arr<int64_t, 2> q, Arr<const double, 3> h,
             Arr<const double, 2> curve, int64_t lo, int64_t hi, int sweeps, int threads) {
  const std::size_t rows = g.shape(0), d = g.shape(1);
  check_groups(rows, d, h.shape(0), h.shape(1), h.shape(2));
  if (s.shape(0) != rows || q.shape(0) != rows || q.shape(1) != d || curve.shape(0) != d || curve.shape(1) != rows)
    throw std::invalid_argument("gptq: a step per row, g and q rows x d, curve d x rows");
  nb::gil_scoped_release release;
  zc::gptq::descend(s.data(), g.data(), q.data(), rows, d, h.data(), h.shape(0), curve.data(), lo, hi, sweeps,
                    threads);
}

}  // namespace

void bind_gptq(nb::module_& m) {
  m.def("gptq_nearest_block", &nearest_block, nb::arg("w"), nb::arg("u"), nb::arg("step"), nb::arg("b0"),
        nb::arg("b1"), nb::arg("q"), nb::arg("err"), nb::arg("threads") = 0,
        "calibrate.feedback's columns [b0, b1) with nearest rounding, every row (w, q and err written).");
  m.def("gptq_descend", &descend, nb::arg("s"), nb::arg("g"), nb::arg("q"), nb::arg("h"), nb::arg("curve"),
        nb::arg("lo"), nb::arg("hi"), nb::arg("sweeps"), nb::arg("threads") = 0,
        "calibrate.descend's passes with no rate term, every row (g and q updated).");
}
