// CRC32 by carry-less multiplication: four registers of 128-bit lanes (PCLMULQDQ) or of
// 512 bits (VPCLMULQDQ, AVX-512) fold the data, then the lanes fold to 128 bits, Barrett-
// reduced to 32 (Gopal et al., "Fast CRC Computation for Generic Polynomials Using
// PCLMULQDQ", Intel 2009, bit-reflected; the constants are its formula's, also Chromium's
// and zlib-ng's). The 512-bit path runs at zlib-ng's speed (what container.py uses); bytes the
// folding leaves, and machines without PCLMULQDQ, take a table, a byte at a time.
#include "crc32.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <array>

namespace zc {

namespace {

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr std::array<uint32_t, 256> TABLE = make_table();

// On the inverted register (crc ^ 0xFFFFFFFF), as the folding below.
uint32_t bytewise(uint32_t c, const uint8_t* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) c = TABLE[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
const bool CLMUL = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
const bool CLMUL512 = CLMUL && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq");

#define ZC_CLMUL __attribute__((target("pclmul,sse4.1")))
#define ZC_CLMUL512 __attribute__((target("pclmul,sse4.1,avx512f,vpclmulqdq")))

ZC_CLMUL inline __m128i load(const uint8_t* q) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); }

// x times k (its low half by k's low, its high half by k's high), plus next. Folding constants
// are (x^(d+32) mod P, x^(d-32) mod P) bit-reflected and shifted left by one: d the distance
// folded in bits.
ZC_CLMUL inline __m128i fold(__m128i x, __m128i k, __m128i next) {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x11), _mm_clmulepi64_si128(x, k, 0x00)), next);
}

ZC_CLMUL inline __m128i k128() { return _mm_set_epi64x(0x00ccaa009e, 0x01751997d0); }

// The 128-bit state x, then n bytes (a multiple of 16) folded in -> the inverted register.
ZC_CLMUL uint32_t finish(__m128i x1, const uint8_t* p, std::size_t n) {
  const __m128i k3k4 = k128();
  const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124);
  const __m128i poly = _mm_set_epi64x(0x01f7011641, 0x01db710641);  // (P, and its Barrett quotient)
  for (; n >= 16; p += 16, n -= 16) x1 = fold(x1, k3k4, load(p));
  // 128 bits to 64, then to 32 by Barrett reduction
  const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
  x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(x1, k3k4, 0x10));
  x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5k0, 0x00), _mm_srli_si128(x1, 4));
  __m128i q = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10);
  q = _mm_clmulepi64_si128(_mm_and_si128(q, low32), poly, 0x00);
  return static_cast<uint32_t>(_mm_extract_epi32(_mm_xor_si128(x1, q), 1));
}

// n >= 64, a multiple of 16; c the inverted register. Four 128-bit lanes, 64 bytes a step.
ZC_CLMUL uint32_t folded(uint32_t c, const uint8_t* p, std::size_t n) {
  const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);  // d = 512
  __m128i x1 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(static_cast<int>(c)));
  __m128i x2 = load(p + 16), x3 = load(p + 32), x4 = load(p + 48);
  p += 64, n -= 64;
  for (; n >= 64; p += 64, n -= 64) {
    x1 = fold(x1, k1k2, load(p));
    x2 = fold(x2, k1k2, load(p + 16));
    x3 = fold(x3, k1k2, load(p + 32));
    x4 = fold(x4, k1k2, load(p + 48));
  }
  const __m128i k3k4 = k128();
  return finish(fold(fold(fold(x1, k3k4, x2), k3k4, x3), k3k4, x4), p, n);
}

ZC_CLMUL512 inline __m512i fold512(__m512i x, __m512i k, __m512i next) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x11), _mm512_clmulepi64_epi128(x, k, 0x00), next,
                                   0x96);  // (three-way xor)
}

// n >= 256, a multiple of 16. Four 512-bit registers (16 lanes), 256 bytes a step; then the
// lanes folded into one and the rest as folded() ends.
ZC_CLMUL512 uint32_t folded512(uint32_t c, const uint8_t* p, std::size_t n) {
  const long long a = 0x011542778a, b = 0x01322d1430, a1 = 0x0154442bd4, b1 = 0x01c6e41596;  // d = 2048, 512
  const __m512i k2048 = _mm512_set_epi64(b, a, b, a, b, a, b, a), k512 = _mm512_set_epi64(b1, a1, b1, a1, b1, a1, b1, a1);
  __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                         static_cast<int>(c)));
  __m512i x1 = _mm512_loadu_si512(p + 64), x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192);
  p += 256, n -= 256;
  for (; n >= 256; p += 256, n -= 256) {
    x0 = fold512(x0, k2048, _mm512_loadu_si512(p));
    x1 = fold512(x1, k2048, _mm512_loadu_si512(p + 64));
    x2 = fold512(x2, k2048, _mm512_loadu_si512(p + 128));
    x3 = fold512(x3, k2048, _mm512_loadu_si512(p + 192));
  }
  x3 = fold512(fold512(fold512(x0, k512, x1), k512, x2), k512, x3);
  // its four lanes, earliest first, folded by 384, 256 and 128 bits onto the last
  const __m128i k384 = _mm_set_epi64x(0x0174359406, 0x003db1ecdc), k256 = _mm_set_epi64x(0x015a546366, 0x00f1da05aa);
  alignas(64) __m128i lane[4];
  _mm512_store_si512(lane, x3);
  return finish(fold(lane[2], k128(), fold(lane[1], k256, fold(lane[0], k384, lane[3]))), p, n);
}
#endif

}  // namespace

uint32_t crc32(uint32_t crc, const uint8_t* data, std::size_t n) {
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (CLMUL && n >= 64) {
    const std::size_t m = n & ~std::size_t(15);
    c = CLMUL512 && m >= 256 ? folded512(c, data, m) : folded(c, data, m);
    data += m, n -= m;
  }
#endif
  return ~bytewise(c, data, n);
}

}  // namespace zc
