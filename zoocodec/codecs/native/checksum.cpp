#include "checksum.h"

#if defined(__x86_64__) || defined(_M_X64)
// xxHash's runtime dispatcher (one translation unit of the library, compiled here so every
// build of the engine, the fuzz builds included, gets it with no C compiler and no link flag),
// up to AVX2: the decode pass checks payloads as they arrive from memory, where its AVX-512 path
// ran at 22 GB/s a core on this project's AMD EPYC against AVX2's 33 (from cache: 94 against 61).
#define XXH_DISPATCH_AVX512 0
#include "third_party/xxhash/xxh_x86dispatch.c"
#define ZC_XXH3 XXH3_64bits_dispatch
#else
#define XXH_INLINE_ALL
#include "third_party/xxhash/xxhash.h"
#define ZC_XXH3 XXH3_64bits
#endif

namespace zc {

uint64_t checksum(const uint8_t* data, std::size_t n) { return ZC_XXH3(data, n); }

}  // namespace zc
