// Python bindings of the order-0 rANS coder (rans.h).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include "buffer.h"
#include "rans.h"

namespace nb = nanobind;
using namespace zc;

namespace {

template <class T>
nb::bytes encode(nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu> symbols, uint32_t nsym,
                 uint64_t chunk, int threads) {
  Writer w;
  {
    nb::gil_scoped_release release;
    rans::encode(symbols.data(), symbols.shape(0), nsym, chunk, threads, w);
  }
  return to_bytes(w.out);
}

nb::object decode(nb::handle data, uint64_t count, int threads) {
  InBuffer in(data);
  Reader r(in.data(), in.size());
  rans::Parsed p;
  {
    nb::gil_scoped_release release;
    p = rans::parse(r, count);
    if (r.left()) throw Corrupt("bytes left after the stream");
  }
  auto run = [&](auto* out) {
    nb::gil_scoped_release release;
    rans::decode(p, out, threads);
  };
  if (p.nsym <= 256) {
    uint8_t* out;
    auto a = new_array<uint8_t>(count, &out);
    run(out);
    return nb::cast(a);
  }
  uint16_t* out;
  auto a = new_array<uint16_t>(count, &out);
  run(out);
  return nb::cast(a);
}

}  // namespace

void bind_rans(nb::module_& m) {
  nb::exception<Corrupt>(m, "CorruptStream", PyExc_ValueError);
  m.def("rans_encode", &encode<uint8_t>, nb::arg("symbols"), nb::arg("nsym"), nb::arg("chunk"), nb::arg("threads") = 0);
  m.def("rans_encode", &encode<uint16_t>, nb::arg("symbols"), nb::arg("nsym"), nb::arg("chunk"), nb::arg("threads") = 0,
        "Symbols (uint8 or uint16, each below nsym) -> an order-0 rANS stream of chunk-symbol substreams.");
  m.def("rans_decode", &decode, nb::arg("data"), nb::arg("count"), nb::arg("threads") = 0,
        "A stream of `count` symbols -> uint8 (alphabet <= 256) or uint16 array; CorruptStream if damaged.");
}
