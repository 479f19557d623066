// The per-symbol halves of codecs/context.py's decoder (coder `ctx`): every symbol's context from
// the row and column classes, and each context's decoded stream scattered to its positions. In
// NumPy these were an int64 matrix of contexts, then one boolean mask and one masked write per
// context: most of a ctx-coded model's load (minilm: 0.3 of 0.55 s).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "buffer.h"
#include "bytes.h"

namespace nb = nanobind;
using namespace zc;

namespace {

using Classes = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Contexts = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Symbols = nb::ndarray<nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Out = nb::ndarray<int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

int64_t floor_div(__int128 a, int64_t b) {  // (b > 0), as Python's //
  __int128 q = a / b;
  if (a % b != 0 && a < 0) --q;
  return q < INT64_MIN ? INT64_MIN : q > INT64_MAX ? INT64_MAX : static_cast<int64_t>(q);
}

// Context.contexts(rows, cols) as uint8: clip(((row class + column class - lo) * bins) // width, 0,
// bins - 1), either class 0 where its array is empty (the layout leaves it out).
Array1<uint8_t> contexts(Classes row_classes, Classes col_classes, int64_t lo, int64_t width, int64_t bins,
                         uint64_t rows, uint64_t cols) {
  const std::size_t nr = row_classes.shape(0), nc = col_classes.shape(0);
  if ((nr != 0 && nr != rows) || (nc != 0 && nc != cols)) throw std::invalid_argument("classes of the wrong size");
  if (width < 1 || bins < 1 || bins > 255) throw std::invalid_argument("bins must be 1..255, width at least 1");
  if (cols && rows > UINT64_MAX / cols) throw std::invalid_argument("too many symbols");
  uint8_t* out;
  auto a = new_array<uint8_t>(rows * cols, &out);
  const int64_t* rc = row_classes.data();
  const int64_t* cc = col_classes.data();
  {
    nb::gil_scoped_release release;
    // the sums of classes take few values (the codec's classes are within +-256): each sum's context
    // from one table
    int64_t cmin = 0, cmax = 0, rmin = 0, rmax = 0;
    if (nc) cmin = *std::min_element(cc, cc + nc), cmax = *std::max_element(cc, cc + nc);
    if (nr) rmin = *std::min_element(rc, rc + nr), rmax = *std::max_element(rc, rc + nr);
    auto context = [&](__int128 v) {
      return static_cast<uint8_t>(std::clamp<int64_t>(floor_div((v - lo) * bins, width), 0, bins - 1));
    };
    const __int128 low = __int128(rmin) + cmin, span = __int128(rmax) + cmax - low;
    std::vector<uint8_t> lut(span < (1 << 16) ? static_cast<std::size_t>(span) + 1 : 0);
    for (std::size_t k = 0; k < lut.size(); ++k) lut[k] = context(low + static_cast<int64_t>(k));
    for (uint64_t r = 0; r < rows; ++r) {
      const __int128 base = nr ? rc[r] : 0;
      uint8_t* row = out + r * cols;
      if (lut.empty()) {
        for (uint64_t c = 0; c < cols; ++c) row[c] = context(base + (nc ? cc[c] : 0));
      } else if (!nc) {
        std::fill(row, row + cols, lut[static_cast<std::size_t>(base - low)]);
      } else {
        const int64_t b = static_cast<int64_t>(base - low);  // (b + cc[c] within the table)
        for (uint64_t c = 0; c < cols; ++c) row[c] = lut[static_cast<std::size_t>(b + cc[c])];
      }
    }
  }
  return a;
}

// out[i] = origin + the next symbol of stream ctx[i], for every i whose context has a stream
// (streams: (uint8 or uint16 symbols, origin) per context 0, 1, ...); the others are left as they
// are. Corrupt unless each stream holds exactly as many symbols as its context has positions.
void scatter(Contexts ctx, const std::vector<std::tuple<Symbols, int64_t>>& streams, Out out) {
  const std::size_t n = ctx.shape(0), k = streams.size();
  if (out.shape(0) != n) throw std::invalid_argument("output of the wrong size");
  if (k > 255) throw std::invalid_argument("at most 255 streams");
  struct Stream {
    const uint8_t* p8 = nullptr;
    const uint16_t* p16 = nullptr;
    std::size_t size = 0, at = 0;
    int64_t origin = 0;
  };
  std::vector<Stream> s(k);
  for (std::size_t j = 0; j < k; ++j) {
    const Symbols& a = std::get<0>(streams[j]);
    s[j].size = a.shape(0), s[j].origin = std::get<1>(streams[j]);
    if (a.dtype() == nb::dtype<uint8_t>()) s[j].p8 = static_cast<const uint8_t*>(a.data());
    else if (a.dtype() == nb::dtype<uint16_t>()) s[j].p16 = static_cast<const uint16_t*>(a.data());
    else throw std::invalid_argument("stream symbols are uint8 or uint16");
  }
  const uint8_t* c = ctx.data();
  int64_t* o = out.data();
  {
    nb::gil_scoped_release release;
    for (std::size_t i = 0; i < n; ++i) {
      if (c[i] >= k) continue;
      Stream& t = s[c[i]];
      if (t.at == t.size) throw Corrupt("a context's stream holds fewer symbols than its positions");
      o[i] = t.origin + (t.p8 ? t.p8[t.at] : t.p16[t.at]);
      ++t.at;
    }
    for (const Stream& t : s)
      if (t.at != t.size) throw Corrupt("a context's stream holds more symbols than its positions");
  }
}

using Firsts = nb::ndarray<const int64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// Ends.contexts and Ends.known of the group-ends layout in one pass: for the symbol at column c of row r,
// p = c % group its place in group g = c / group, fl and fh that group's first lowest and highest
// positions: context (p < fl) + 2 (p < fh), or KNOWN (4) at fl and fh, where out takes lo (at fl) or hi.
Array1<uint8_t> ends(Firsts first_lo, Firsts first_hi, uint64_t group, uint64_t cols, int64_t lo, int64_t hi,
                     Out out) {
  const std::size_t rows = first_lo.shape(0), groups = first_lo.shape(1);
  if (group < 1 || first_hi.shape(0) != rows || first_hi.shape(1) != groups || groups != (cols + group - 1) / group ||
      out.shape(0) != rows * cols)
    throw std::invalid_argument("group ends of the wrong shape");
  uint8_t* ctx;
  auto a = new_array<uint8_t>(rows * cols, &ctx);
  const int64_t *fl = first_lo.data(), *fh = first_hi.data();
  int64_t* o = out.data();
  {
    nb::gil_scoped_release release;
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t g = 0; g < groups; ++g) {  // (a group at a time: no division a symbol)
        const int64_t l = fl[r * groups + g], h = fh[r * groups + g];
        const std::size_t base = r * cols + g * group, size = std::min<std::size_t>(group, cols - g * group);
        for (std::size_t q = 0; q < size; ++q) {
          const int64_t p = static_cast<int64_t>(q);
          const std::size_t i = base + q;
          if (p == l || p == h) {
            ctx[i] = 4;
            o[i] = p == l ? lo : hi;
          } else {
            ctx[i] = static_cast<uint8_t>((p < l) + 2 * (p < h));
          }
        }
      }
  }
  return a;
}

}  // namespace

void bind_context(nb::module_& m) {
  m.def("ctx_contexts", &contexts, nb::arg("row_classes"), nb::arg("col_classes"), nb::arg("lo"), nb::arg("width"),
        nb::arg("bins"), nb::arg("rows"), nb::arg("cols"),
        "Context of each symbol of a rows x cols matrix (codecs/context.Model.contexts) as uint8.");
  m.def("ctx_ends", &ends, nb::arg("first_lo"), nb::arg("first_hi"), nb::arg("group"), nb::arg("cols"), nb::arg("lo"),
        nb::arg("hi"), nb::arg("out"),
        "The group-ends layout's contexts as uint8 (codecs/context.Ends.contexts), out set to lo or hi at the "
        "positions they give (Ends.known).");
  m.def("ctx_scatter", &scatter, nb::arg("contexts"), nb::arg("streams"), nb::arg("out"),
        "out[i] = origin + the next symbol of stream contexts[i] where that context has one; CorruptStream "
        "unless every stream is used up exactly.");
}
