// The payload chunk checksum of container format 4 (zoocodec/container.py): XXH3-64 (seed 0)
// from the xxHash library (third_party/xxhash, BSD-2), so the writer and the decode pass's
// check use one implementation, not a hand-written one.
#pragma once
#include <cstddef>
#include <cstdint>

namespace zc {

// XXH3_64bits(data, n): the widest vector unit this CPU has, chosen at load time on x86-64
// (xxHash's own dispatcher: SSE2, AVX2 or AVX-512), the compiler's target elsewhere.
uint64_t checksum(const uint8_t* data, std::size_t n);

}  // namespace zc
