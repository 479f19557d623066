// The payload chunk checksum of container format 4 (zoocodec/container.py): XXH3-64 (seed 0)
// from the xxHash library (third_party/xxhash, BSD-2), so the writer and the decode pass's
// check use one implementation, not a hand-written one.
#pragma once
#include <cstddef>
#include <cstdint>

namespace zc {

// XXH3_64bits(data, n): on x86-64 by SSE2 or AVX2, chosen at load time by xxHash's own
// dispatcher (checksum.cpp says why not AVX-512); by the compiler's target elsewhere.
uint64_t checksum(const uint8_t* data, std::size_t n);

}  // namespace zc
