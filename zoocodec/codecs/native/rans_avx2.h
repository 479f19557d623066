// Byte symbols of 8-lane rANS substreams (rans.h) decoded with AVX2, for every byte decoder:
// rans::decode, plan.cpp's fused decode and floatplanes.cpp's planes. The 8 interleaved states
// of a substream are one vector, and up to DECODE_GROUP substreams advance together so that the table
// lookups of one hide the latency of the others. Tables of 12 bits or fewer are read as one
// packed 32-bit entry a slot, finer ones (up to 16 bits) as the 8-byte rans::Entry. Same
// bitstream and same checks as rans::decode_substream, which stays the scalar path: the vector
// code runs where the CPU has AVX2 and ZOOCODEC_NO_AVX2 is unset (tests compare the two).
#pragma once
#include <cstddef>
#include <cstdint>

#include "rans.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace zc::rans {

#if defined(__x86_64__)
// table[i] for the 8 indices of a vector, by scalar loads: faster than vpgatherdd on the EPYC
// (Zen 4) this was measured on (the exponent plane decoded 1.3x faster).
__attribute__((target("avx2"))) inline __m256i lookup8(const uint32_t* table, __m256i index) {
  alignas(32) uint32_t i[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(i), index);
  __m128i lo = _mm_cvtsi32_si128(static_cast<int>(table[i[0]]));
  __m128i hi = _mm_cvtsi32_si128(static_cast<int>(table[i[4]]));
  lo = _mm_insert_epi32(lo, static_cast<int>(table[i[1]]), 1);
  hi = _mm_insert_epi32(hi, static_cast<int>(table[i[5]]), 1);
  lo = _mm_insert_epi32(lo, static_cast<int>(table[i[2]]), 2);
  hi = _mm_insert_epi32(hi, static_cast<int>(table[i[6]]), 2);
  lo = _mm_insert_epi32(lo, static_cast<int>(table[i[3]]), 3);
  hi = _mm_insert_epi32(hi, static_cast<int>(table[i[7]]), 3);
  return _mm256_set_m128i(hi, lo);
}
#endif

constexpr std::size_t GROUP = 4;         // substreams a pool task encodes together (rans.cpp's vector encoder)
constexpr std::size_t DECODE_GROUP = 8;  // substreams a task decodes together: 1.1x faster than 4 here

// Values written straight from the decoder's registers (floatplanes.cpp): the symbols are the
// top byte plane of `width`-byte values (2 or 4) whose other planes are raw.
struct Fuse {
  int width = 0;
  const uint8_t* raw[3] = {};  // the other planes, from the group's first value on
  void* values = nullptr;      // the values, from the same value on
  // Called for the symbols [lo, hi) of the group (counted from its first) that were decoded
  // into `out` only: their values are still to be written from there.
  void (*merge)(const Fuse&, const uint8_t* out, uint64_t lo, uint64_t hi) = nullptr;
};

// Do the AVX2 decoders run here (the CPU has AVX2 and ZOOCODEC_NO_AVX2 is unset)?
bool avx2();

// Does the vector decoder run on streams like p (byte symbols, a coded table) here?
bool vector_ready(const Parsed& p);

// Substreams first .. first + count (count <= DECODE_GROUP) of p into out[0 .. their symbol count),
// the 8-lane ones with AVX2 where vector_ready(p), the others by decode_substream; with `fuse`
// (width 2 or 4), their values as well. Throws Corrupt as decode_substream does. p.L >= 1.
void decode_group(const Parsed& p, std::size_t first, std::size_t count, uint8_t* out, const Fuse* fuse = nullptr);

}  // namespace zc::rans
