// The extension module zoocodec.codecs.native._engine. Each coder lives in its own
// .cpp (picked up by CMakeLists.txt) and exposes `void bind_<coder>(nb::module_&)`,
// called below; bindings release the GIL around the coding work.
#include <nanobind/nanobind.h>

#include "pool.h"

namespace nb = nanobind;

void bind_rans(nb::module_& m);
void bind_cabac(nb::module_& m);
void bind_floatplanes(nb::module_& m);
void bind_quantize(nb::module_& m);
void bind_plan(nb::module_& m);
void bind_dq(nb::module_& m);
void bind_ctx_model(nb::module_& m);
void bind_gptq(nb::module_& m);

NB_MODULE(_engine, m) {
  m.doc() = "zoocodec's native coding engine (C++17, multi-threaded)";
  m.def("default_threads", &zc::default_threads,
        "Threads a call with threads=0 uses: ZOOCODEC_THREADS, else the hardware threads.");
  bind_rans(m);
  bind_cabac(m);
  bind_floatplanes(m);
  bind_quantize(m);
  bind_plan(m);
  bind_dq(m);
  bind_ctx_model(m);
  bind_gptq(m);
}
