// Byte planes of 2- and 4-byte floats (codecs/floatplanes.py frames them): the split for
// the encoder, and a decoder that rebuilds the values chunk by chunk on the thread pool,
// entropy-decoding each chunk's rANS substreams straight into a cache-sized buffer.
//
// A value's bits are rotated left by one (the sign becomes the lowest bit, the exponent
// fills the top byte); plane 0 holds the top byte of every value, plane width-1 the lowest.
#include "floatplanes.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ZC_AVX2 1
#endif

#include <algorithm>
#include <cstring>
#include <vector>

#include "pool.h"
#include "rans.h"

namespace zc::planes {

namespace {

constexpr uint64_t CHUNK = 1 << 16;  // values a task splits or rebuilds when no plane is rANS-coded

inline uint32_t load16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }
inline uint32_t load32(const uint8_t* p) { return load16(p) | load16(p + 2) << 16; }

template <class U>
inline U rotl1(U u) { return static_cast<U>(u << 1 | u >> (8 * sizeof(U) - 1)); }

// Restrict-qualified locals so the compiler vectorizes (byte stores may alias anything).
template <class U>
void split_chunk(const U* __restrict v, uint64_t m, uint8_t* const* plane, uint64_t lo) {
  if constexpr (sizeof(U) == 4) {
    uint8_t* __restrict p0 = plane[0] + lo;
    uint8_t* __restrict p1 = plane[1] + lo;
    uint8_t* __restrict p2 = plane[2] + lo;
    uint8_t* __restrict p3 = plane[3] + lo;
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = rotl1(v[i]);
      p0[i] = static_cast<uint8_t>(r >> 24);
      p1[i] = static_cast<uint8_t>(r >> 16);
      p2[i] = static_cast<uint8_t>(r >> 8);
      p3[i] = static_cast<uint8_t>(r);
    }
  } else {
    uint8_t* __restrict p0 = plane[0] + lo;
    uint8_t* __restrict p1 = plane[1] + lo;
    for (uint64_t i = 0; i < m; ++i) {
      uint16_t r = rotl1(v[i]);
      p0[i] = static_cast<uint8_t>(r >> 8);
      p1[i] = static_cast<uint8_t>(r);
    }
  }
}

template <class U>
void merge_chunk(U* __restrict o, uint64_t m, const uint8_t* const* src) {
  if constexpr (sizeof(U) == 4) {
    const uint8_t* __restrict p0 = src[0];
    const uint8_t* __restrict p1 = src[1];
    const uint8_t* __restrict p2 = src[2];
    const uint8_t* __restrict p3 = src[3];
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = uint32_t(p0[i]) << 24 | uint32_t(p1[i]) << 16 | uint32_t(p2[i]) << 8 | p3[i];
      o[i] = r >> 1 | r << 31;
    }
  } else {
    const uint8_t* __restrict p0 = src[0];
    const uint8_t* __restrict p1 = src[1];
    for (uint64_t i = 0; i < m; ++i) {
      uint32_t r = uint32_t(p0[i]) << 8 | p1[i];
      o[i] = static_cast<uint16_t>(r >> 1 | r << 15);
    }
  }
}

struct Plane {
  int mode = RAW;
  const uint8_t* raw = nullptr;
  rans::Parsed coded;
};

// rANS planes decoded with AVX2: the 8 interleaved states of a substream are one vector, and
// S substreams (consecutive chunks) advance together so that the gathers of one hide the
// latency of the others. Same bitstream as rans::decode_substream, same checks; it takes
// substreams of 8 lanes under a packed table (byte symbols, L <= 12) and leaves the others to
// rans.cpp.
struct Lanes {
  const uint8_t* q;
  const uint8_t* end;
  uint8_t* out;
  uint64_t j, m;
  alignas(32) uint32_t x[rans::LANES];
};

// The rest of a substream one symbol at a time, then the end checks of rans::decode_substream.
void lanes_finish(const uint32_t* pk, int L, Lanes& s) {
  const uint32_t mask = (1u << L) - 1;
  const uint8_t* q = s.q;
  for (uint64_t j = s.j; j < s.m; ++j) {
    uint32_t& x = s.x[j % rans::LANES];
    uint32_t e = pk[x & mask];
    s.out[j] = static_cast<uint8_t>(e);
    x = (e >> 20) * (x >> L) + (e >> 8 & 0xfff);
    if (x < rans::STATE_LO) {
      if (s.end - q < 2) throw Corrupt("substream ends early");
      x = x << 16 | load16(q);
      q += 2;
    }
  }
  if (q != s.end) throw Corrupt("substream has bytes left over");
  for (uint32_t x : s.x)
    if (x != rans::STATE_LO) throw Corrupt("substream does not end in the initial state");
}

#ifdef ZC_AVX2
// Lane permutations of the renormalisation words: for a mask of the lanes that read a word,
// lane k takes word number (set lanes below k).
struct Expand {
  alignas(32) uint32_t idx[256][8];
  Expand() {
    for (int m = 0; m < 256; ++m)
      for (int k = 0, w = 0; k < 8; ++k) {
        idx[m][k] = static_cast<uint32_t>(w);
        w += m >> k & 1;
      }
  }
};
const Expand EXPAND;

template <int S>
__attribute__((target("avx2,popcnt"))) void lanes_avx2(const uint32_t* pk, int L, Lanes* s) {
  const __m256i mask = _mm256_set1_epi32((1 << L) - 1), lo12 = _mm256_set1_epi32(0xfff),
                lo8 = _mm256_set1_epi32(0xff), zero = _mm256_setzero_si256();
  const __m128i shift = _mm_cvtsi32_si128(L);
  // byte 0 of each 32-bit lane, per 128-bit half, to its low 4 bytes
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  __m256i x[S];
  const uint8_t* q[S];
  uint8_t* out[S];
  uint64_t j = 0, m = UINT64_MAX;  // groups done, and the fewest any substream has left
  for (int k = 0; k < S; ++k) {
    x[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(s[k].x));
    q[k] = s[k].q;
    out[k] = s[k].out + s[k].j;
    m = std::min(m, s[k].m - s[k].j);
  }
  for (;; j += rans::LANES) {
    bool room = j + rans::LANES <= m;
    for (int k = 0; k < S; ++k) room &= s[k].end - q[k] >= 2 * rans::LANES;
    if (!room) break;
    for (int k = 0; k < S; ++k) {
      __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(pk), _mm256_and_si256(x[k], mask), 4);
      __m256i nx = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_srli_epi32(e, 20), _mm256_srl_epi32(x[k], shift)),
                                    _mm256_and_si256(_mm256_srli_epi32(e, 8), lo12));
      __m256i small = _mm256_cmpeq_epi32(_mm256_srli_epi32(nx, 16), zero);
      unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(small)));
      __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q[k])));
      w = _mm256_permutevar8x32_epi32(w, _mm256_load_si256(reinterpret_cast<const __m256i*>(EXPAND.idx[bits])));
      x[k] = _mm256_blendv_epi8(nx, _mm256_or_si256(_mm256_slli_epi32(nx, 16), w), small);
      q[k] += 2 * _mm_popcnt_u32(bits);
      __m256i sym = _mm256_shuffle_epi8(_mm256_and_si256(e, lo8), pick);
      uint64_t group = static_cast<uint32_t>(_mm256_cvtsi256_si32(sym)) |
                       uint64_t(static_cast<uint32_t>(_mm256_extract_epi32(sym, 4))) << 32;
      std::memcpy(out[k] + j, &group, 8);
    }
  }
  for (int k = 0; k < S; ++k) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(s[k].x), x[k]);
    s[k].q = q[k];
    s[k].j += j;
  }
}

const bool AVX2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#else
constexpr bool AVX2 = false;
template <int S>
void lanes_avx2(const uint32_t*, int, Lanes*) {}  // never called: vector_ready is false
#endif

bool vector_ready(const rans::Parsed& p) { return AVX2 && p.L >= 1 && p.L <= 12 && !p.packed.empty(); }

// Substreams first .. first + count of a plane (its symbols from `first` x chunk on, `size`
// of them) into out.
void decode_plane(const rans::Parsed& p, std::size_t first, std::size_t count, uint64_t size, uint8_t* out) {
  if (p.L == 0) {
    std::memset(out, static_cast<int>(p.constant), size);
    return;
  }
  constexpr std::size_t MAXS = 4;
  Lanes lanes[MAXS];
  std::size_t ns = 0;
  for (std::size_t i = first; i < first + count; ++i) {
    uint64_t m = std::min<uint64_t>(p.chunk, p.n - i * p.chunk);
    uint8_t* o = out + (i - first) * p.chunk;
    if (!vector_ready(p) || rans::lanes(m) != rans::LANES) {
      rans::decode_substream(p, i, o);
      continue;
    }
    Lanes& s = lanes[ns++];
    s.q = p.body[i];
    s.end = s.q + p.length[i];
    if (s.end - s.q < 4 * rans::LANES) throw Corrupt("substream ends early");
    for (int k = 0; k < rans::LANES; ++k, s.q += 4) {
      s.x[k] = load32(s.q);
      if (s.x[k] < rans::STATE_LO) throw Corrupt("bad rANS state");
    }
    s.out = o, s.j = 0, s.m = m;
  }
  // Groups of the substreams still running: a shorter last substream, or one near its end,
  // leaves the group, and the others go on together.
  const uint32_t* pk = p.packed.data();
  Lanes* run[MAXS];
  for (std::size_t k = 0; k < ns; ++k) run[k] = &lanes[k];
  while (ns) {
    Lanes group[MAXS];
    for (std::size_t k = 0; k < ns; ++k) group[k] = *run[k];
    if (ns == 4) lanes_avx2<4>(pk, p.L, group);
    else if (ns == 3) lanes_avx2<3>(pk, p.L, group);
    else if (ns == 2) lanes_avx2<2>(pk, p.L, group);
    else lanes_avx2<1>(pk, p.L, group);
    std::size_t left = 0;
    for (std::size_t k = 0; k < ns; ++k) {
      *run[k] = group[k];
      if (run[k]->j + rans::LANES <= run[k]->m && run[k]->end - run[k]->q >= 2 * rans::LANES)
        run[left++] = run[k];
      else
        lanes_finish(pk, p.L, *run[k]);
    }
    ns = left;
  }
}

template <class U>
void merge_into(U* out, uint64_t n, std::vector<Plane>& planes, int threads) {
  constexpr int W = sizeof(U);
  constexpr std::size_t GROUP = 4;  // substreams a task decodes together (see lanes_avx2)
  uint64_t chunk = 0;
  for (auto& p : planes)
    if (p.mode == RANS && p.coded.L > 0) {
      if (chunk && p.coded.chunk != chunk) throw Corrupt("planes cut into different substreams");
      chunk = p.coded.chunk;
    }
  if (!chunk) chunk = CHUNK;
  if (chunk > (uint64_t(1) << 24)) throw Corrupt("substreams over 2^24 values");
  const std::size_t chunks = (n + chunk - 1) / chunk;
  // Up to GROUP substreams a task (its buffer stays within 4 x 64K values), fewer where that
  // would leave threads idle.
  const std::size_t workers = static_cast<std::size_t>(threads > 0 ? threads : default_threads());
  const std::size_t group = chunk > CHUNK ? 1 : std::clamp<std::size_t>((chunks + workers - 1) / workers, 1, GROUP);
  parallel_for((chunks + group - 1) / group, threads, [&](std::size_t t) {
    const std::size_t c0 = t * group, nc = std::min(group, chunks - c0);
    const uint64_t lo = c0 * chunk, m = std::min(n - lo, nc * chunk);
    thread_local std::vector<uint8_t> buf;  // reused: a fresh 256 KB block would be mmapped
    const uint8_t* src[W];
    for (int k = 0; k < W; ++k) {
      Plane& p = planes[k];
      if (p.mode == RAW) {
        src[k] = p.raw + lo;
      } else {
        if (buf.size() < W * m) buf.resize(W * m);
        uint8_t* b = buf.data() + k * m;
        decode_plane(p.coded, c0, nc, m, b);
        src[k] = b;
      }
    }
    merge_chunk<U>(out + lo, m, src);
  });
}

}  // namespace

template <class U>
void split(const U* v, uint64_t n, uint8_t* const* plane, int threads) {
  parallel_for((n + CHUNK - 1) / CHUNK, threads, [&](std::size_t c) {
    uint64_t lo = c * CHUNK, m = std::min(n - lo, CHUNK);
    split_chunk<U>(v + lo, m, plane, lo);
  });
}

void merge(uint64_t n, int width, const int* modes, const uint8_t* const* data, const std::size_t* sizes, void* out,
           int threads) {
  if (width != 2 && width != 4) throw Corrupt("planes of a width other than 2 or 4 bytes");
  std::vector<Plane> planes(width);
  for (int k = 0; k < width; ++k) {
    planes[k].mode = modes[k];
    if (modes[k] == RAW) {
      if (sizes[k] != n) throw Corrupt("raw plane has the wrong length");
      planes[k].raw = data[k];
    } else if (modes[k] == RANS) {
      Reader r(data[k], sizes[k]);
      planes[k].coded = rans::parse(r, n);
      if (r.left()) throw Corrupt("bytes left after a plane");
      if (planes[k].coded.nsym > 256) throw Corrupt("plane symbols wider than a byte");
    } else {
      throw Corrupt("unknown plane mode");
    }
  }
  if (width == 2)
    merge_into(static_cast<uint16_t*>(out), n, planes, threads);
  else
    merge_into(static_cast<uint32_t*>(out), n, planes, threads);
}

void histogram(const uint8_t* p, uint64_t n, uint64_t* out) {
  uint32_t h[4][256] = {};
  std::fill(out, out + 256, 0);
  for (uint64_t lo = 0; lo < n; lo += uint64_t(1) << 30) {  // 32-bit counters per gigabyte
    uint64_t hi = std::min(n, lo + (uint64_t(1) << 30)), i = lo;
    for (; i + 4 <= hi; i += 4) ++h[0][p[i]], ++h[1][p[i + 1]], ++h[2][p[i + 2]], ++h[3][p[i + 3]];
    for (; i < hi; ++i) ++h[0][p[i]];
    for (int s = 0; s < 256; ++s) {
      out[s] += uint64_t(h[0][s]) + h[1][s] + h[2][s] + h[3][s];
      h[0][s] = h[1][s] = h[2][s] = h[3][s] = 0;
    }
  }
}

template void split<uint16_t>(const uint16_t*, uint64_t, uint8_t* const*, int);
template void split<uint32_t>(const uint32_t*, uint64_t, uint8_t* const*, int);

}  // namespace zc::planes
