// Byte planes of 2- and 4-byte floats (codecs/floatplanes.py frames them): the split for
// the encoder, and a decoder that rebuilds the values chunk by chunk on the thread pool,
// entropy-decoding each chunk's rANS substreams straight into a cache-sized buffer.
//
// A value's bits are rotated left by one (the sign becomes the lowest bit, the exponent
// fills the top byte); plane 0 holds the top byte of every value, plane width-1 the lowest.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "buffer.h"
#include "pool.h"
#include "rans.h"

namespace nb = nanobind;
using namespace zc;

namespace {

constexpr uint64_t CHUNK = 1 << 16;  // values a task splits or rebuilds when no plane is rANS-coded
enum Mode { RAW = 0, RANS = 1 };

template <class U>
inline U rotl1(U u) { return static_cast<U>(u << 1 | u >> (8 * sizeof(U) - 1)); }

// Restrict-qualified locals so the compiler vectorizes (byte stores may alias anything).
template <class U>
void split_chunk(const U* __restrict v, uint64_t m, uint8_t* const* plane, uint64_t lo) {
  if constexpr (sizeof(U) == 4) {
    uint8_t* __restrict p0 = plane[0] + lo;
    uint8_t* __restrict p1 = plane[1] + lo;
    uint8_t* __restrict p2 = plane[2] + lo;
    uint8_t* __restrict p3 = plane[3] + lo;
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = rotl1(v[i]);
      p0[i] = static_cast<uint8_t>(r >> 24);
      p1[i] = static_cast<uint8_t>(r >> 16);
      p2[i] = static_cast<uint8_t>(r >> 8);
      p3[i] = static_cast<uint8_t>(r);
    }
  } else {
    uint8_t* __restrict p0 = plane[0] + lo;
    uint8_t* __restrict p1 = plane[1] + lo;
    for (uint64_t i = 0; i < m; ++i) {
      uint16_t r = rotl1(v[i]);
      p0[i] = static_cast<uint8_t>(r >> 8);
      p1[i] = static_cast<uint8_t>(r);
    }
  }
}

template <class U>
void merge_chunk(U* __restrict o, uint64_t m, const uint8_t* const* src) {
  if constexpr (sizeof(U) == 4) {
    const uint8_t* __restrict p0 = src[0];
    const uint8_t* __restrict p1 = src[1];
    const uint8_t* __restrict p2 = src[2];
    const uint8_t* __restrict p3 = src[3];
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = uint32_t(p0[i]) << 24 | uint32_t(p1[i]) << 16 | uint32_t(p2[i]) << 8 | p3[i];
      o[i] = r >> 1 | r << 31;
    }
  } else {
    const uint8_t* __restrict p0 = src[0];
    const uint8_t* __restrict p1 = src[1];
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = uint32_t(p0[i]) << 8 | p1[i];
      o[i] = static_cast<uint16_t>(r >> 1 | r << 15);
    }
  }
}

template <class U>
nb::list split(nb::ndarray<const U, nb::ndim<1>, nb::c_contig, nb::device::cpu> values, int threads) {
  constexpr int W = sizeof(U);
  const uint64_t n = values.shape(0);
  uint8_t* plane[W];
  nb::list out;
  for (int k = 0; k < W; ++k) out.append(new_array<uint8_t>(n, &plane[k]));
  const U* v = values.data();
  {
    nb::gil_scoped_release release;
    parallel_for((n + CHUNK - 1) / CHUNK, threads, [&](std::size_t c) {
      uint64_t lo = c * CHUNK, m = std::min(n - lo, CHUNK);
      split_chunk<U>(v + lo, m, plane, lo);
    });
  }
  return out;
}

struct Plane {
  int mode = RAW;
  const uint8_t* raw = nullptr;
  rans::Parsed coded;
};

template <class U>
void merge_into(U* out, uint64_t n, std::vector<Plane>& planes, int threads) {
  constexpr int W = sizeof(U);
  uint64_t chunk = 0;
  for (auto& p : planes)
    if (p.mode == RANS && p.coded.L > 0) {
      if (chunk && p.coded.chunk != chunk) throw Corrupt("planes cut into different substreams");
      chunk = p.coded.chunk;
    }
  if (!chunk) chunk = CHUNK;
  if (chunk > (uint64_t(1) << 24)) throw Corrupt("substreams over 2^24 values");
  parallel_for((n + chunk - 1) / chunk, threads, [&](std::size_t c) {
    uint64_t lo = c * chunk, m = std::min(n - lo, chunk);
    thread_local std::vector<uint8_t> buf;  // reused: a fresh 256 KB block would be mmapped
    const uint8_t* src[W];
    for (int k = 0; k < W; ++k) {
      Plane& p = planes[k];
      if (p.mode == RAW) {
        src[k] = p.raw + lo;
      } else {
        if (buf.size() < W * m) buf.resize(W * m);
        uint8_t* b = buf.data() + k * m;
        if (p.coded.L == 0)
          std::memset(b, static_cast<int>(p.coded.constant), m);
        else
          rans::decode_substream(p.coded, c, b);
        src[k] = b;
      }
    }
    merge_chunk<U>(out + lo, m, src);
  });
}

// planes: one (mode, bytes-like) per plane, top plane first; mode 0 raw (n bytes), 1 a
// full rANS stream of n byte symbols.
nb::object merge(uint64_t n, int width, const std::vector<std::pair<int, nb::object>>& parts, int threads) {
  if (width != 2 && width != 4) throw Corrupt("planes of a width other than 2 or 4 bytes");
  if (static_cast<int>(parts.size()) != width) throw Corrupt("wrong number of planes");
  std::vector<std::unique_ptr<InBuffer>> held;
  std::vector<Plane> planes(width);
  for (int k = 0; k < width; ++k) {
    held.emplace_back(new InBuffer(parts[k].second));
    const InBuffer& in = *held.back();
    planes[k].mode = parts[k].first;
    if (planes[k].mode == RAW) {
      if (in.size() != n) throw Corrupt("raw plane has the wrong length");
      planes[k].raw = in.data();
    } else if (planes[k].mode == RANS) {
      Reader r(in.data(), in.size());
      planes[k].coded = rans::parse(r, n);
      if (r.left()) throw Corrupt("bytes left after a plane");
      if (planes[k].coded.nsym > 256) throw Corrupt("plane symbols wider than a byte");
    } else {
      throw Corrupt("unknown plane mode");
    }
  }
  if (width == 2) {
    uint16_t* out;
    auto a = new_array<uint16_t>(n, &out);
    {
      nb::gil_scoped_release release;
      merge_into(out, n, planes, threads);
    }
    return nb::cast(a);
  }
  uint32_t* out;
  auto a = new_array<uint32_t>(n, &out);
  {
    nb::gil_scoped_release release;
    merge_into(out, n, planes, threads);
  }
  return nb::cast(a);
}

// Byte counts of a plane, four interleaved tables (no store-to-load stalls on runs).
nb::ndarray<nb::numpy, uint64_t, nb::ndim<1>> histogram(
    nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> bytes) {
  uint64_t* out;
  auto a = new_array<uint64_t>(256, &out);
  const uint8_t* p = bytes.data();
  const uint64_t n = bytes.shape(0);
  {
    nb::gil_scoped_release release;
    uint32_t h[4][256] = {};
    uint64_t total[256] = {};
    for (uint64_t lo = 0; lo < n; lo += uint64_t(1) << 30) {  // 32-bit counters per gigabyte
      uint64_t hi = std::min(n, lo + (uint64_t(1) << 30)), i = lo;
      for (; i + 4 <= hi; i += 4) ++h[0][p[i]], ++h[1][p[i + 1]], ++h[2][p[i + 2]], ++h[3][p[i + 3]];
      for (; i < hi; ++i) ++h[0][p[i]];
      for (int s = 0; s < 256; ++s) {
        total[s] += uint64_t(h[0][s]) + h[1][s] + h[2][s] + h[3][s];
        h[0][s] = h[1][s] = h[2][s] = h[3][s] = 0;
      }
    }
    std::copy(total, total + 256, out);
  }
  return a;
}

}  // namespace

void bind_floatplanes(nb::module_& m) {
  m.def("float_split", &split<uint16_t>, nb::arg("values"), nb::arg("threads") = 0);
  m.def("float_split", &split<uint32_t>, nb::arg("values"), nb::arg("threads") = 0,
        "uint16/uint32 bits of floats -> their byte planes (rotated left by one, top byte first).");
  m.def("byte_histogram", &histogram, nb::arg("bytes"), "uint8 array -> 256 uint64 counts.");
  m.def("float_merge", &merge, nb::arg("n"), nb::arg("width"), nb::arg("planes"), nb::arg("threads") = 0,
        "n, width and one (mode, bytes) per plane (0 raw, 1 rANS stream) -> uint16/uint32 bits.");
}
