// Python bindings of the fused encode-side quantizers (quantize.h).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/tuple.h>

#include <stdexcept>
#include <tuple>

#include "buffer.h"
#include "quantize.h"

namespace nb = nanobind;
using namespace zc;

namespace {

template <class T>
using In = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T>
using Out = nb::ndarray<T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

using Result = std::tuple<double, double, double>;  // sum err^2, sum w^2, max |err|

Result as_tuple(const quant::Stats& s) { return {s.err2, s.power, s.max_err}; }

quant::Kind kind_of(int kind) {
  if (kind != quant::FLOAT32 && kind != quant::BFLOAT16) throw std::invalid_argument("unknown float kind");
  return static_cast<quant::Kind>(kind);
}

template <class W>
void absmax(In<W> w, std::size_t cols, Out<W> out, int threads) {
  const std::size_t rows = out.shape(0);
  if (w.shape(0) != rows * cols) throw std::invalid_argument("absmax_rows: rows x cols != size");
  nb::gil_scoped_release release;
  quant::absmax_rows(w.data(), rows, cols, out.data(), threads);
}

template <class W, class S>
Result uniform(In<W> w, int kind, In<double> steps, std::size_t cols, Out<S> symbols, Out<W> recon, int threads) {
  const std::size_t n = w.shape(0), nsteps = steps.shape(0);
  W* out = recon.is_valid() ? recon.data() : nullptr;  // None: the statistics only
  if (symbols.shape(0) != n || (out && recon.shape(0) != n)) throw std::invalid_argument("uniform: output sizes differ");
  if (nsteps == 0 || (nsteps > 1 && (cols == 0 || nsteps * cols != n)))
    throw std::invalid_argument("uniform: steps do not fit the rows");
  const quant::Kind k = kind_of(kind);
  nb::gil_scoped_release release;
  return as_tuple(quant::uniform(w.data(), n, k, steps.data(), nsteps, cols, symbols.data(), out, threads));
}

template <class W>
Result stats(In<W> w, In<W> recon, int kind, int threads) {
  if (w.shape(0) != recon.shape(0)) throw std::invalid_argument("error_stats: sizes differ");
  const quant::Kind k = kind_of(kind);
  nb::gil_scoped_release release;
  return as_tuple(quant::error_stats(w.data(), recon.data(), w.shape(0), k, threads));
}

template <class W>
void ranges(In<W> w, int kind, std::size_t cols, std::size_t group, Out<double> lo, Out<double> hi, int threads) {
  const std::size_t n = w.shape(0);
  if (cols == 0 || group == 0 || n % cols) throw std::invalid_argument("group_ranges: bad cols or group");
  const std::size_t rows = n / cols, ng = (cols + group - 1) / group;
  if (lo.shape(0) != rows * ng || hi.shape(0) != rows * ng) throw std::invalid_argument("group_ranges: outputs");
  const quant::Kind k = kind_of(kind);
  nb::gil_scoped_release release;
  quant::group_ranges(w.data(), rows, cols, k, group, lo.data(), hi.data(), threads);
}

template <class W, class S>
Result groups(In<W> w, int kind, std::size_t cols, std::size_t group, In<double> steps, Out<double> zeros,
              Out<S> symbols, Out<W> recon, int threads) {
  const std::size_t n = w.shape(0);
  if (cols == 0 || group == 0 || n % cols) throw std::invalid_argument("uniform_groups: bad cols or group");
  const std::size_t rows = n / cols, count = rows * ((cols + group - 1) / group), nsteps = steps.shape(0);
  const double* z = zeros.is_valid() ? zeros.data() : nullptr;
  W* out = recon.is_valid() ? recon.data() : nullptr;
  if ((nsteps != 1 && nsteps != count) || (z && zeros.shape(0) != count) || symbols.shape(0) != n ||
      (out && recon.shape(0) != n))
    throw std::invalid_argument("uniform_groups: sizes do not fit");
  const quant::Kind k = kind_of(kind);
  nb::gil_scoped_release release;
  return as_tuple(quant::uniform_groups(w.data(), rows, cols, k, group, steps.data(), nsteps, z, symbols.data(), out,
                                        threads));
}

template <class W>
bool finite(In<W> w, int threads) {
  nb::gil_scoped_release release;
  return quant::all_finite(w.data(), w.shape(0), threads);
}

Array1<double> steps_of(In<int64_t> codes, int mant, int threads) {
  if (mant < 1 || mant > 52) throw std::invalid_argument("side_steps: mantissa bits are 1..52");
  double* out;
  auto a = new_array<double>(codes.shape(0), &out);
  nb::gil_scoped_release release;
  quant::side_steps(codes.data(), codes.shape(0), mant, out, threads);
  return a;
}

Array1<double> zeros_of(In<int64_t> centres, In<double> steps, int bits, int frac, int threads) {
  if (steps.shape(0) != centres.shape(0)) throw std::invalid_argument("side_zeros: sizes differ");
  if (bits < 1 || bits > 16 || frac < 1 || frac > 30) throw std::invalid_argument("side_zeros: bits 1..16, frac 1..30");
  double* out;
  auto a = new_array<double>(centres.shape(0), &out);
  nb::gil_scoped_release release;
  quant::side_zeros(centres.data(), steps.data(), centres.shape(0), bits, frac, out, threads);
  return a;
}

std::tuple<Array1<double>, Array1<double>, bool> values_of(In<int64_t> codes, In<int64_t> centres, int mant, int bits,
                                                           int64_t max_exponent, int threads) {
  const std::size_t n = codes.shape(0);
  if (centres.shape(0) != n) throw std::invalid_argument("side_values: sizes differ");
  if (mant < 3 || mant > 32 || bits < 1 || bits > 16) throw std::invalid_argument("side_values: mant 3..32, bits 1..16");
  double *steps, *zeros;
  auto a = new_array<double>(n, &steps), b = new_array<double>(n, &zeros);
  bool ok;
  {
    nb::gil_scoped_release release;
    ok = quant::side_values(codes.data(), centres.data(), n, mant, bits, max_exponent, steps, zeros, threads);
  }
  return {a, b, ok};
}

std::tuple<bool, double, double> range_of(SignedInts codes, SignedInts centres, int mant, int bits,
                                          int64_t max_exponent, int threads) {
  const std::size_t n = codes.shape(0);
  if (centres.shape(0) != n) throw std::invalid_argument("side_range: sizes differ");
  if (mant < 3 || mant > 32 || bits < 1 || bits > 16) throw std::invalid_argument("side_range: mant 3..32, bits 1..16");
  const char* why = "side_range: step codes and centres are signed integers";
  const int code_bytes = signed_width(codes, why), centre_bytes = signed_width(centres, why);
  double step, zero;
  nb::gil_scoped_release release;
  const bool ok = quant::side_range(codes.data(), code_bytes, centres.data(), centre_bytes, n, mant, bits,
                                    max_exponent, &step, &zero, threads);
  return {ok, step, zero};
}

// fn(W{}, S{}) for each float-bits type W and each symbol type S (int8, int16, int32).
template <class... Ws, class Fn>
void for_pairs(Fn fn) {
  auto symbols = [&](auto w) { fn(w, int8_t{}), fn(w, int16_t{}), fn(w, int32_t{}); };
  (symbols(Ws{}), ...);
}

// (lo, counts int64) of the levels rint(w / step), or None (quantize.h's rounded_counts).
nb::object rounded(nb::ndarray<const double, nb::ndim<2>, nb::c_contig, nb::device::cpu> w, In<double> steps,
                   std::size_t max_size, int threads) {
  const std::size_t rows = w.shape(0), cols = w.shape(1), nsteps = steps.shape(0);
  if (nsteps != 1 && nsteps != rows) throw std::invalid_argument("rounded_counts: one step, or one per row");
  int64_t lo = 0;
  std::vector<int64_t> counts;
  bool done;
  {
    nb::gil_scoped_release release;
    done = quant::rounded_counts(w.data(), rows * cols, steps.data(), nsteps, cols, max_size, &lo, &counts, threads);
  }
  if (!done) return nb::none();
  int64_t* p;
  auto out = new_array<int64_t>(counts.size(), &p);
  std::copy(counts.begin(), counts.end(), p);
  return nb::make_tuple(lo, out);
}

}  // namespace

void bind_quantize(nb::module_& m) {
  m.def("absmax_rows", &absmax<uint16_t>, nb::arg("w"), nb::arg("cols"), nb::arg("out"), nb::arg("threads") = 0);
  m.def("absmax_rows", &absmax<uint32_t>, nb::arg("w"), nb::arg("cols"), nb::arg("out"), nb::arg("threads") = 0,
        "Per row of `cols` float bits (uint16 bf16 / uint32 fp32): the largest |w|'s bits, into `out`.");
  // every (float bits, symbol) pair the quantizers take: uint16 bf16 / uint32 fp32 by int8..int32
  for_pairs<uint16_t, uint32_t>([&](auto w, auto s) {
    using W = decltype(w);
    using S = decltype(s);
    m.def("uniform_quantize", &uniform<W, S>, nb::arg("w"), nb::arg("kind"), nb::arg("steps"), nb::arg("cols"),
          nb::arg("symbols"), nb::arg("recon").none(), nb::arg("threads") = 0);
    m.def("uniform_groups", &groups<W, S>, nb::arg("w"), nb::arg("kind"), nb::arg("cols"), nb::arg("group"),
          nb::arg("steps"), nb::arg("zeros").none(), nb::arg("symbols"), nb::arg("recon").none(),
          nb::arg("threads") = 0);
  });
  m.def("group_ranges", &ranges<uint16_t>, nb::arg("w"), nb::arg("kind"), nb::arg("cols"), nb::arg("group"),
        nb::arg("lo"), nb::arg("hi"), nb::arg("threads") = 0);
  m.def("group_ranges", &ranges<uint32_t>, nb::arg("w"), nb::arg("kind"), nb::arg("cols"), nb::arg("group"),
        nb::arg("lo"), nb::arg("hi"), nb::arg("threads") = 0,
        "(min, max) of each group of `group` values along rows of `cols` (finite float bits), into lo and hi.");
  m.def("all_finite", &finite<uint16_t>, nb::arg("w"), nb::arg("threads") = 0);
  m.def("all_finite", &finite<uint32_t>, nb::arg("w"), nb::arg("threads") = 0,
        "No NaN or Inf among float bits (uint16 bfloat16 / float16, uint32 float32).");
  m.def("side_steps", &steps_of, nb::arg("codes"), nb::arg("mant"), nb::arg("threads") = 0,
        "float64 steps of uniform:side=M step codes (int64).");
  m.def("side_zeros", &zeros_of, nb::arg("centres"), nb::arg("steps"), nb::arg("bits"), nb::arg("frac"),
        nb::arg("threads") = 0, "float64 zero points of centre codes (int64) on a grid of step / 2^frac.");
  m.def("side_values", &values_of, nb::arg("codes"), nb::arg("centres"), nb::arg("mant"), nb::arg("bits"),
        nb::arg("max_exponent"), nb::arg("threads") = 0,
        "(steps, zero points, all in range) of coded group side values, as the decoder reads them.");
  m.def("side_range", &range_of, nb::arg("codes"), nb::arg("centres"), nb::arg("mant"), nb::arg("bits"),
        nb::arg("max_exponent"), nb::arg("threads") = 0,
        "(all in range, largest step, largest |zero point|) of coded group side values (signed ints of any width), "
        "without writing them: the GPU decoder's host check.");
  m.def("rounded_counts", &rounded, nb::arg("w"), nb::arg("steps"), nb::arg("max_size"), nb::arg("threads") = 0,
        "(lo, counts) of the levels rint(w / step) of a float64 matrix, a step per row or one: counts[k] of level "
        "lo + k; None where a level is not finite or the levels span more than max_size.");
  m.def("error_stats", &stats<uint16_t>, nb::arg("w"), nb::arg("recon"), nb::arg("kind"), nb::arg("threads") = 0);
  m.def("error_stats", &stats<uint32_t>, nb::arg("w"), nb::arg("recon"), nb::arg("kind"), nb::arg("threads") = 0,
        "(sum err^2, sum w^2, max |err|) of a reconstruction, summed as np.sum does.");
}
