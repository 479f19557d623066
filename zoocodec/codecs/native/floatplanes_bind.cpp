// Python bindings of the float byte planes (floatplanes.h).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "buffer.h"
#include "floatplanes.h"
#include "huffman.h"
#include "pool.h"
#include "rans.h"

namespace nb = nanobind;
using namespace zc;

namespace {

template <class U>
nb::list split(nb::ndarray<const U, nb::ndim<1>, nb::c_contig, nb::device::cpu> values, int threads) {
  constexpr int W = sizeof(U);
  const uint64_t n = values.shape(0);
  uint8_t* plane[W];
  nb::list out;
  for (int k = 0; k < W; ++k) out.append(big_array<uint8_t>(n, &plane[k]));
  {
    nb::gil_scoped_release release;
    planes::split(values.data(), n, plane, threads);
  }
  return out;
}

// planes: one (mode, bytes-like) per plane, top plane first.
nb::object merge(uint64_t n, int width, const std::vector<std::pair<int, nb::object>>& parts, int threads) {
  if (width != 2 && width != 4) throw Corrupt("planes of a width other than 2 or 4 bytes");
  if (static_cast<int>(parts.size()) != width) throw Corrupt("wrong number of planes");
  std::vector<std::unique_ptr<InBuffer>> held;
  std::vector<int> modes;
  std::vector<const uint8_t*> data;
  std::vector<std::size_t> sizes;
  for (auto& [mode, obj] : parts) {
    held.emplace_back(new InBuffer(obj));
    modes.push_back(mode);
    data.push_back(held.back()->data());
    sizes.push_back(held.back()->size());
  }
  auto run = [&](auto* out, auto array) {
    {
      nb::gil_scoped_release release;
      planes::merge(n, width, modes.data(), data.data(), sizes.data(), out, threads);
    }
    return nb::cast(array);
  };
  if (width == 2) {
    uint16_t* out;
    auto a = big_array<uint16_t>(n, &out);
    return run(out, a);
  }
  uint32_t* out;
  auto a = big_array<uint32_t>(n, &out);
  return run(out, a);
}

nb::ndarray<nb::numpy, uint64_t, nb::ndim<1>> histogram(
    nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> bytes) {
  uint64_t* out;
  auto a = new_array<uint64_t>(256, &out);
  {
    nb::gil_scoped_release release;
    planes::histogram(bytes.data(), bytes.shape(0), out);
  }
  return a;
}

nb::bytes encode_plane(nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> plane, int max_bits,
                       uint64_t chunk, int threads) {
  Writer w;
  {
    nb::gil_scoped_release release;
    planes::encode_plane(plane.data(), plane.shape(0), chunk, max_bits, threads, w);
  }
  return to_bytes(w);
}

uint64_t varint_bytes(uint64_t v) {
  uint64_t k = 1;
  while (v >= 128) v >>= 7, ++k;
  return k;
}

// The bytes of the rANS stream (rans.h) of n byte symbols with these counts, from the table
// the encoder would pick, without coding them: the framing exactly, the body to within a few
// bytes (its ideal length under that table). Where a lower bound (the order-0 entropy, a byte a
// present symbol, the states' overhead) reaches at_least bytes, that bound instead: the table is not built
// (normalising one took 20 us, most of a small plane's encoding).
uint64_t rans_size(nb::ndarray<const uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> counts, int max_bits,
                   uint64_t chunk, uint64_t at_least) {
  if (counts.shape(0) != 256) throw std::invalid_argument("counts of 256 byte values expected");
  if (chunk < 1) throw std::invalid_argument("chunk must be positive");
  std::vector<uint64_t> c(counts.data(), counts.data() + 256);
  uint64_t n = 0, present = 0;
  for (uint64_t v : c) n += v, present += v != 0;
  uint64_t head = varint_bytes(n) + varint_bytes(256);
  if (present <= 1) return head + (n ? 2 : 0);  // (n == 0: nothing more; one symbol: L = 0 and it)
  // substreams: each state starts at 2^16, so its 4 final bytes carry 2 of the message at most
  const uint64_t full = n / chunk, last = n % chunk;
  const uint64_t states = full * 2 * rans::lanes(chunk) + (last ? 2 * rans::lanes(last) : 0);
  double entropy = 0;  // no table codes below the order-0 entropy, and each present symbol costs a byte
  for (uint64_t v : c)
    if (v) entropy += v * std::log2(static_cast<double>(n) / v);
  const uint64_t floor = head + 1 + present + varint_bytes(chunk) + states + static_cast<uint64_t>(entropy / 8);
  if (floor >= at_least) return floor;
  int L;
  const std::vector<uint32_t> f = planes::table(c, max_bits, &L);
  double bits = 0;
  uint64_t table = 1;  // L
  for (int s = 0; s < 256;) {
    if (f[s]) {
      bits += c[s] * (L - std::log2(static_cast<double>(f[s])));
      table += varint_bytes(f[s++]);
      continue;
    }
    int run = 0;
    while (s + run < 256 && !f[s + run]) ++run;
    table += 1 + varint_bytes(run - 1);
    s += run;
  }
  const uint64_t body = static_cast<uint64_t>(std::ceil(bits / 8)), per = body / (full + (last > 0)) + 1;
  const uint64_t streams = full * (varint_bytes(per) + 4 * rans::lanes(chunk)) +
                           (last ? varint_bytes(per) + 4 * rans::lanes(last) : 0);
  return head + table + varint_bytes(chunk) + streams + body;
}

using Counts = nb::ndarray<const uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Lengths = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

Array1<uint8_t> huff_lengths(Counts counts) {
  if (counts.shape(0) != 256) throw std::invalid_argument("counts of 256 byte values expected");
  uint8_t* out;
  auto a = new_array<uint8_t>(256, &out);
  huff::lengths(counts.data(), out);
  return a;
}

uint64_t huff_size(Counts counts, Lengths len, uint64_t chunk) {
  if (counts.shape(0) != 256 || len.shape(0) != 256) throw std::invalid_argument("256 counts and lengths expected");
  return huff::size(counts.data(), len.data(), chunk);
}

nb::bytes huff_encode(nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> plane, Lengths len,
                      uint64_t chunk, int threads) {
  if (len.shape(0) != 256) throw std::invalid_argument("256 lengths expected");
  Writer w;
  {
    nb::gil_scoped_release release;
    huff::encode(plane.data(), plane.shape(0), len.data(), chunk, threads, w);
  }
  return to_bytes(w);
}

// A whole Huffman stream of n symbols -> them (groups of substreams on the pool).
Array1<uint8_t> huff_decode(nb::handle data, uint64_t n, int threads) {
  InBuffer in(data);
  uint8_t* out;
  auto a = big_array<uint8_t>(n, &out);
  {
    nb::gil_scoped_release release;
    Reader r(in.data(), in.size());
    const huff::Parsed p = huff::parse(r, n);
    if (r.left()) throw Corrupt("bytes left after the stream");
    const std::size_t subs = p.body.size(), groups = (subs + huff::DECODE_GROUP - 1) / huff::DECODE_GROUP;
    parallel_for(groups, threads, [&](std::size_t g) {
      const std::size_t first = g * huff::DECODE_GROUP;
      huff::decode_group(p, first, std::min(huff::DECODE_GROUP, subs - first), out + first * p.chunk);
    });
  }
  return a;
}

// A Huffman stream of n symbols parsed for the GPU decoder (kernels/decode.py's Huffman): (chunk, the
// one-symbol table by 12-bit slot, symbol | code length << 8 (uint16[4096]), offsets of the substreams
// into the stream (uint64), their byte lengths (uint32)). The CPU's parser and checks (huff::parse).
nb::tuple huff_frame(nb::handle data, uint64_t n) {
  InBuffer in(data);
  huff::Parsed p;
  {
    nb::gil_scoped_release release;
    Reader r(in.data(), in.size());
    p = huff::parse(r, n);
    if (r.left()) throw Corrupt("bytes left after the stream");
    for (std::size_t l : p.length)  // (2^24 symbols of 12 bits at most: 25 MB)
      if (l > UINT32_MAX) throw Corrupt("a substream longer than its symbols can be");
  }
  uint16_t* one;
  auto table = new_array<uint16_t>(p.table.size(), &one);
  for (std::size_t i = 0; i < p.table.size(); ++i)  // (byte 1: the first symbol, byte 7: its bits alone)
    one[i] = static_cast<uint16_t>((p.table[i] >> 8 & 0xff) | (p.table[i] >> 56) << 8);
  uint64_t* off;
  uint32_t* len;
  auto offsets = new_array<uint64_t>(p.body.size(), &off);
  auto lengths = new_array<uint32_t>(p.body.size(), &len);
  for (std::size_t i = 0; i < p.body.size(); ++i) {
    off[i] = static_cast<uint64_t>(p.body[i] - in.data());
    len[i] = static_cast<uint32_t>(p.length[i]);
  }
  return nb::make_tuple(p.chunk, table, offsets, lengths);
}

}  // namespace

void bind_floatplanes(nb::module_& m) {
  m.def("huff_frame", &huff_frame, nb::arg("data"), nb::arg("n"),
        "A Huffman stream of n symbols parsed for the GPU decoder: (chunk, one-symbol table uint16[4096] "
        "(symbol | bits << 8), substream offsets, substream lengths); CorruptStream if damaged.");
  m.def("float_split", &split<uint16_t>, nb::arg("values"), nb::arg("threads") = 0);
  m.def("float_split", &split<uint32_t>, nb::arg("values"), nb::arg("threads") = 0,
        "uint16/uint32 bits of floats -> their byte planes (rotated left by one, top byte first).");
  m.def("plane_encode", &encode_plane, nb::arg("plane"), nb::arg("max_bits"), nb::arg("chunk"), nb::arg("threads") = 0,
        "uint8 plane -> its rANS stream, the bytes rans_encode(plane, 256, ...) gives.");
  m.def("rans_size", &rans_size, nb::arg("counts"), nb::arg("max_bits"), nb::arg("chunk"),
        nb::arg("at_least") = UINT64_MAX,
        "256 byte counts -> the size of their rANS stream, estimated from its table (bytes), or a lower bound "
        "of it that is at least at_least.");
  m.def("byte_histogram", &histogram, nb::arg("bytes"), "uint8 array -> 256 uint64 counts.");
  m.def("huff_lengths", &huff_lengths, nb::arg("counts"),
        "256 byte counts -> Huffman code lengths limited to 11 bits (uint8, 0 = absent; all 0 below 2 symbols).");
  m.def("huff_size", &huff_size, nb::arg("counts"), nb::arg("lengths"), nb::arg("chunk"),
        "Bytes of the Huffman stream of symbols with these counts under these lengths (to a byte a substream).");
  m.def("huff_encode", &huff_encode, nb::arg("plane"), nb::arg("lengths"), nb::arg("chunk"), nb::arg("threads") = 0,
        "uint8 plane -> its Huffman stream (huffman.h) under these code lengths.");
  m.def("huff_decode", &huff_decode, nb::arg("data"), nb::arg("n"), nb::arg("threads") = 0,
        "A Huffman stream of n byte symbols -> them (uint8).");
  m.def("float_merge", &merge, nb::arg("n"), nb::arg("width"), nb::arg("planes"), nb::arg("threads") = 0,
        "n, width and one (mode, bytes) per plane (0 raw, 1 rANS stream, 3 Huffman stream) -> uint16/uint32 bits.");
}
