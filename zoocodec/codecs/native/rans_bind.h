// What the bindings of rANS streams share (rans_bind.cpp; used by plan_bind.cpp too).
#pragma once
#include <nanobind/nanobind.h>

#include <cstdint>

#include "buffer.h"
#include "rans.h"

namespace zc {

// A whole rANS stream of `count` symbols in `in` (rans::parse_whole), parsed with the GIL
// released; it points into `in`, which must outlive it.
rans::Parsed parse_released(const InBuffer& in, uint64_t count);

// Every symbol of a parsed stream, decoded without the GIL, as a new uint8 (alphabet <= 256)
// or uint16 NumPy array.
nanobind::object decoded(const rans::Parsed& p, int threads);

}  // namespace zc
