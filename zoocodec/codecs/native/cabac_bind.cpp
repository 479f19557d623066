// Python bindings of the context-adaptive level coder (cabac.h); the GIL is released
// around all coding work.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include "buffer.h"
#include "bytes.h"
#include "cabac.h"

namespace nb = nanobind;
using namespace zc;

namespace {

using Levels = nb::ndarray<const int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

nb::bytes encode(Levels levels, int trellis, uint64_t substream, int threads) {
  std::vector<uint8_t> out;
  {
    nb::gil_scoped_release release;
    out = cabac::encode(levels.data(), levels.shape(0), levels.shape(1), trellis, substream, threads);
  }
  return to_bytes(out);
}

nb::object decode(nb::handle data, uint64_t count, int threads) {
  InBuffer in(data);
  int32_t* out;
  auto a = new_array<int32_t>(count, &out);
  {
    nb::gil_scoped_release release;
    cabac::decode(in.data(), in.size(), out, count, threads);
  }
  return nb::cast(a);
}

nb::object costs(Levels levels, int trellis, uint64_t substream, int threads) {
  float* out;
  auto a = new_array<float>(levels.shape(0) * levels.shape(1), &out);
  {
    nb::gil_scoped_release release;
    cabac::cost_bits(levels.data(), levels.shape(0), levels.shape(1), trellis, substream, out, threads);
  }
  return nb::cast(a);
}

nb::tuple info(nb::handle data) {
  InBuffer in(data);
  auto [rows, trellis] = cabac::stream_info(in.data(), in.size());
  return nb::make_tuple(rows, trellis);
}

}  // namespace

void bind_cabac(nb::module_& m) {
  m.def("cabac_encode", &encode, nb::arg("levels"), nb::arg("trellis"), nb::arg("substream"), nb::arg("threads") = 0,
        "int32 level matrix (rows x cols, walk order) -> a context-adaptive stream of substreams.");
  m.def("cabac_decode", &decode, nb::arg("data"), nb::arg("count"), nb::arg("threads") = 0,
        "A stream of `count` levels -> int32 array; CorruptStream if damaged.");
  m.def("cabac_stream_info", &info, nb::arg("data"), "(rows, trellis) a stream declares; CorruptStream if unreadable.");
  m.def("cabac_costs", &costs, nb::arg("levels"), nb::arg("trellis"), nb::arg("substream"), nb::arg("threads") = 0,
        "Bits each level costs under the adaptive models, coded in order (float32, flat).");
}
