// Python bindings of the order-0 rANS coder (rans.h).
#include <algorithm>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include "rans_bind.h"

namespace nb = nanobind;
using namespace zc;

rans::Parsed zc::parse_released(const InBuffer& in, uint64_t count) {
  Reader r(in.data(), in.size());
  nb::gil_scoped_release release;
  return rans::parse_whole(r, count);
}

nb::object zc::decoded(const rans::Parsed& p, int threads) {
  auto run = [&](auto* out) {
    nb::gil_scoped_release release;
    rans::decode(p, out, threads);
  };
  if (p.nsym <= 256) {
    uint8_t* out;
    auto a = new_array<uint8_t>(p.n, &out);
    run(out);
    return nb::cast(a);
  }
  uint16_t* out;
  auto a = new_array<uint16_t>(p.n, &out);
  run(out);
  return nb::cast(a);
}

namespace {

template <class T>
nb::bytes encode(nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu> symbols, uint32_t nsym,
                 uint64_t chunk, int threads, int max_bits, uint64_t add, nb::bytes prefix) {
  if (max_bits < 1 || max_bits > 16) throw std::invalid_argument("max_bits must be 1..16");
  InBuffer head(prefix);
  Writer w;
  {
    nb::gil_scoped_release release;
    rans::encode(symbols.data(), symbols.shape(0), nsym, chunk, threads, w, max_bits, static_cast<T>(add));
  }
  return to_bytes(w, &head);
}

nb::object decode(nb::handle data, uint64_t count, int threads) {
  InBuffer in(data);
  return decoded(parse_released(in, count), threads);
}

std::vector<uint64_t> table_of(nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> freqs) {
  std::vector<uint64_t> f(freqs.shape(0));
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (freqs.data()[i] < 0) throw Corrupt("negative frequency");
    f[i] = static_cast<uint64_t>(freqs.data()[i]);
  }
  return f;
}

template <class T>
nb::bytes encode_freqs(nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu> symbols,
                       nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> freqs, uint64_t chunk,
                       int threads) {
  std::vector<uint64_t> f = table_of(freqs);
  Writer w;
  {
    nb::gil_scoped_release release;
    int L;
    std::vector<uint32_t> table = rans::pow2_table(f, &L);
    rans::encode_body(symbols.data(), symbols.shape(0), table, L, chunk, threads, w);
  }
  return to_bytes(w);
}

nb::object decode_freqs(nb::handle data, nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> freqs,
                        uint64_t count, int threads) {
  std::vector<uint64_t> f = table_of(freqs);
  InBuffer in(data);
  Reader r(in.data(), in.size());
  rans::Parsed p;
  {
    nb::gil_scoped_release release;
    int L;
    std::vector<uint32_t> table = rans::pow2_table(f, &L);
    p = rans::parse_body(r, count, table, L);
    if (r.left()) throw Corrupt("bytes left after the stream");
  }
  return decoded(p, threads);
}

nb::tuple normalise(nb::ndarray<const uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> counts, int max_bits) {
  if (max_bits < 1 || max_bits > 16) throw std::invalid_argument("max_bits must be 1..16");
  std::vector<uint64_t> c(counts.data(), counts.data() + counts.shape(0));
  if (std::count_if(c.begin(), c.end(), [](uint64_t v) { return v != 0; }) < 2)
    throw std::invalid_argument("normalise needs two or more symbols present");
  int L;
  std::vector<uint32_t> f = rans::normalise(c, max_bits, &L);
  uint32_t* out;
  auto a = new_array<uint32_t>(f.size(), &out);
  std::copy(f.begin(), f.end(), out);
  return nb::make_tuple(a, L);
}

}  // namespace

void bind_rans(nb::module_& m) {
  nb::exception<Corrupt>(m, "CorruptStream", PyExc_ValueError);
  m.def("rans_encode", &encode<uint8_t>, nb::arg("symbols"), nb::arg("nsym"), nb::arg("chunk"), nb::arg("threads") = 0,
        nb::arg("max_bits") = 16, nb::arg("add") = 0, nb::arg("prefix") = nb::bytes("", 0));
  m.def("rans_encode", &encode<uint16_t>, nb::arg("symbols"), nb::arg("nsym"), nb::arg("chunk"), nb::arg("threads") = 0,
        nb::arg("max_bits") = 16, nb::arg("add") = 0, nb::arg("prefix") = nb::bytes("", 0),
        "Symbols (uint8 or uint16, each below nsym once `add` is added modulo their width) -> `prefix` (bytes "
        "the caller's frame puts first) followed by an order-0 rANS stream of chunk-symbol substreams.");
  m.def("rans_normalise", &normalise, nb::arg("counts"), nb::arg("max_bits") = 16,
        "Symbol counts (uint64, two or more present) -> (frequencies summing to 2^L, L): the table rans_encode "
        "writes for symbols with these counts.");
  m.def("rans_decode", &decode, nb::arg("data"), nb::arg("count"), nb::arg("threads") = 0,
        "A stream of `count` symbols -> uint8 (alphabet <= 256) or uint16 array; CorruptStream if damaged.");
  m.def("rans_encode_freqs", &encode_freqs<uint8_t>, nb::arg("symbols"), nb::arg("freqs"), nb::arg("chunk"),
        nb::arg("threads") = 0);
  m.def("rans_encode_freqs", &encode_freqs<uint16_t>, nb::arg("symbols"), nb::arg("freqs"), nb::arg("chunk"),
        nb::arg("threads") = 0,
        "Symbols under a caller-kept integer table (int64, any sum; two or more present) -> a body only.");
  m.def("rans_decode_freqs", &decode_freqs, nb::arg("data"), nb::arg("freqs"), nb::arg("count"), nb::arg("threads") = 0,
        "A body of `count` symbols under the same table -> uint8/uint16 array; CorruptStream if damaged.");
}
