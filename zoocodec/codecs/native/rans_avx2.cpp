#include "rans_avx2.h"

#if defined(__x86_64__)
#define ZC_AVX2 1
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace zc::rans {

namespace {

static_assert(sizeof(Entry) == 8, "an Entry is read as one 64-bit word: freq | bias << 16 | sym << 32");

inline uint32_t load16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }
inline uint32_t load32(const uint8_t* p) { return load16(p) | load16(p + 2) << 16; }

// One 8-lane substream being decoded.
struct Lanes {
  const uint8_t* q;
  const uint8_t* end;
  uint8_t* out;  // symbols (fused: those decoded one at a time, from `tail` on)
  uint64_t j, m;
  alignas(32) uint32_t x[LANES];
  const uint8_t* raw[3];  // fused: the other planes, and the values, from the substream's start
  void* values;
  uint64_t tail;
};

// The rest of a substream one symbol at a time, then the end checks of decode_substream.
void lanes_finish(const Parsed& p, Lanes& s) {
  const Entry* tab = p.table.data();
  const int L = p.L;
  const uint32_t mask = (1u << L) - 1;
  const uint8_t* q = s.q;
  for (uint64_t j = s.j; j < s.m; ++j) {
    uint32_t& x = s.x[j % LANES];
    const Entry e = tab[x & mask];
    s.out[j] = static_cast<uint8_t>(e.sym);
    x = e.freq * (x >> L) + e.bias;
    if (x < STATE_LO) {
      if (s.end - q < 2) throw Corrupt("substream ends early");
      x = x << 16 | load16(q);
      q += 2;
    }
  }
  if (q != s.end) throw Corrupt("substream has bytes left over");
  for (uint32_t x : s.x)
    if (x != STATE_LO) throw Corrupt("substream does not end in the initial state");
}

// Whole groups of one substream's 8 states in scalar registers, branch-free (as rans.cpp's byte
// decoder): faster than one vector alone, whose every step waits for the last.
template <bool Packed>
void lanes_scalar(const Parsed& p, Lanes& s) {
  const uint32_t* pk = p.packed.data();
  const Entry* tab = p.table.data();
  const int L = p.L;
  const uint32_t mask = (1u << L) - 1;
  const uint8_t* q = s.q;
  uint32_t x[LANES];
  std::memcpy(x, s.x, sizeof x);
  uint64_t j = s.j;
  for (; j + LANES <= s.m && s.end - q >= 2 * LANES; j += LANES) {
    uint64_t group = 0;
    for (int k = 0; k < LANES; ++k) {
      uint32_t sym, nx;
      if constexpr (Packed) {
        const uint32_t e = pk[x[k] & mask];
        sym = e & 0xff;
        nx = (e >> 20) * (x[k] >> L) + (e >> 8 & 0xfff);
      } else {
        const Entry e = tab[x[k] & mask];
        sym = e.sym;
        nx = e.freq * (x[k] >> L) + e.bias;
      }
      group |= uint64_t(sym) << (8 * k);
      const uint32_t r = nx < STATE_LO;  // arithmetic, not a branch
      x[k] = nx << (r << 4) | (load16(q) & (0u - r));
      q += r << 1;
    }
    std::memcpy(s.out + j, &group, 8);
  }
  std::memcpy(s.x, x, sizeof x);
  s.q = q;
  s.j = j;
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

inline long long entry64(const Entry* t, uint32_t i) {
  long long v;
  std::memcpy(&v, t + i, 8);
  return v;
}

// The 8-byte entries of 8 slots, split: *fb = freq | bias << 16 and *sym, one lane each.
__attribute__((target("avx2"))) inline void lookup8_wide(const Entry* table, __m256i index, __m256i* fb,
                                                         __m256i* sym) {
  alignas(32) uint32_t i[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(i), index);
  const __m128i a = _mm_insert_epi64(_mm_cvtsi64_si128(entry64(table, i[0])), entry64(table, i[1]), 1);
  const __m128i b = _mm_insert_epi64(_mm_cvtsi64_si128(entry64(table, i[2])), entry64(table, i[3]), 1);
  const __m128i c = _mm_insert_epi64(_mm_cvtsi64_si128(entry64(table, i[4])), entry64(table, i[5]), 1);
  const __m128i d = _mm_insert_epi64(_mm_cvtsi64_si128(entry64(table, i[6])), entry64(table, i[7]), 1);
  const __m256 lo = _mm256_castsi256_ps(_mm256_set_m128i(b, a)), hi = _mm256_castsi256_ps(_mm256_set_m128i(d, c));
  // per 128-bit half: entries (0 1 4 5 | 2 3 6 7); then back in order
  *fb = _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8);
  *sym = _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8);
}

// 8 bytes, zero-extended to the 8 lanes.
__attribute__((target("avx2"))) inline __m256i bytes8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// S substreams advanced together, whole groups of 8 while every one has them. W = 0: symbols to
// out. W = 2 or 4 (fused): the values themselves, from the symbol (the top plane) and the W - 1
// raw planes, rotated back as floatplanes.cpp's merge_chunk does.
template <int S, int W, bool Packed>
__attribute__((target("avx2,popcnt"))) void lanes_avx2(const Parsed& p, Lanes* s) {
  const int L = p.L;
  const uint32_t* pk = p.packed.data();
  const Entry* tab = p.table.data();
  const __m256i mask = _mm256_set1_epi32((1 << L) - 1), lo12 = _mm256_set1_epi32(0xfff),
                lo16 = _mm256_set1_epi32(0xffff), zero = _mm256_setzero_si256(),
                halves = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0), lo8 = _mm256_set1_epi32(0xff),
                one = _mm256_set1_epi32(1);
  (void)lo12, (void)lo16, (void)halves, (void)lo8, (void)one;  // (each used by some instances only)
  const __m128i shift = _mm_cvtsi32_si128(L);
  // byte 0 of each 32-bit lane (the symbol), per 128-bit half, to its low 4 bytes; then both
  // halves' to the low 8 bytes
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  __m256i x[S];
  const uint8_t* q[S];
  uint8_t* out[S];
  uint64_t j = 0, m = UINT64_MAX;  // symbols done, and the fewest any substream has left
  for (int k = 0; k < S; ++k) {
    x[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(s[k].x));
    q[k] = s[k].q;
    out[k] = s[k].out + s[k].j;
    m = std::min(m, s[k].m - s[k].j);
  }
  for (;; j += LANES) {
    bool room = j + LANES <= m;
    for (int k = 0; k < S; ++k) room &= s[k].end - q[k] >= 2 * LANES;
    if (!room) break;
    for (int k = 0; k < S; ++k) {
      const __m256i slot = _mm256_and_si256(x[k], mask);
      __m256i sym, nx;  // sym: the symbol in each lane's low byte
      if constexpr (Packed) {  // sym | bias << 8 | freq << 20
        sym = lookup8(pk, slot);
        nx = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_srli_epi32(sym, 20), _mm256_srl_epi32(x[k], shift)),
                              _mm256_and_si256(_mm256_srli_epi32(sym, 8), lo12));
      } else {
        __m256i fb;
        lookup8_wide(tab, slot, &fb, &sym);
        nx = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_and_si256(fb, lo16), _mm256_srl_epi32(x[k], shift)),
                              _mm256_srli_epi32(fb, 16));
      }
      const __m256i small = _mm256_cmpeq_epi32(_mm256_srli_epi32(nx, 16), zero);
      const unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(small)));
      __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q[k])));
      w = _mm256_permutevar8x32_epi32(w, _mm256_load_si256(reinterpret_cast<const __m256i*>(EXPAND.idx[bits])));
      x[k] = _mm256_blendv_epi8(nx, _mm256_or_si256(_mm256_slli_epi32(nx, 16), w), small);
      q[k] += 2 * _mm_popcnt_u32(bits);
      const uint64_t at = s[k].j + j;
      if constexpr (W == 0) {
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(sym, pick), halves);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out[k] + j), _mm256_castsi256_si128(b));
      } else if constexpr (W == 2) {
        const __m256i t = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(sym, lo8), 8), bytes8(s[k].raw[0] + at));
        const __m256i r = _mm256_or_si256(_mm256_srli_epi32(t, 1), _mm256_slli_epi32(_mm256_and_si256(t, one), 15));
        const __m256i v = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(s[k].values) + at),
                         _mm256_castsi256_si128(v));
      } else {
        const __m256i t = _mm256_or_si256(
            _mm256_or_si256(_mm256_slli_epi32(sym, 24), _mm256_slli_epi32(bytes8(s[k].raw[0] + at), 16)),
            _mm256_or_si256(_mm256_slli_epi32(bytes8(s[k].raw[1] + at), 8), bytes8(s[k].raw[2] + at)));
        const __m256i v = _mm256_or_si256(_mm256_srli_epi32(t, 1), _mm256_slli_epi32(t, 31));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint32_t*>(s[k].values) + at), v);
      }
    }
  }
  for (int k = 0; k < S; ++k) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(s[k].x), x[k]);
    s[k].q = q[k];
    s[k].j += j;
  }
}

bool avx2_here() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && !std::getenv("ZOOCODEC_NO_AVX2");
}
#else
template <int S, int W, bool Packed>
void lanes_avx2(const Parsed&, Lanes*) {}  // never called: vector_ready is false
bool avx2_here() { return false; }
#endif

const bool AVX2 = avx2_here();

template <int W, bool Packed>
void advance(const Parsed& p, Lanes* group, std::size_t ns) {
  if (ns == 8) lanes_avx2<8, W, Packed>(p, group);
  else if (ns == 7) lanes_avx2<7, W, Packed>(p, group);
  else if (ns == 6) lanes_avx2<6, W, Packed>(p, group);
  else if (ns == 5) lanes_avx2<5, W, Packed>(p, group);
  else if (ns == 4) lanes_avx2<4, W, Packed>(p, group);
  else if (ns == 3) lanes_avx2<3, W, Packed>(p, group);
  else if (ns == 2) lanes_avx2<2, W, Packed>(p, group);
  else lanes_scalar<Packed>(p, group[0]);  // one vector alone waits on its own latencies: symbols to out
}

}  // namespace

bool avx2() { return AVX2; }

bool vector_ready(const Parsed& p) { return AVX2 && p.L >= 1 && p.nsym <= 256 && !p.sym8.empty(); }

void decode_group(const Parsed& p, std::size_t first, std::size_t count, uint8_t* out, const Fuse* fuse) {
  if (count > DECODE_GROUP) throw std::invalid_argument("more substreams than a group holds");
  const bool fused = fuse && fuse->width;
  const int W = fused ? fuse->width : 0;
  auto merge = [&](uint64_t lo, uint64_t hi) {
    if (fused && hi > lo) fuse->merge(*fuse, out, lo, hi);
  };
  Lanes state[DECODE_GROUP];
  std::size_t ns = 0;
  for (std::size_t i = first; i < first + count; ++i) {
    const uint64_t m = std::min<uint64_t>(p.chunk, p.n - i * p.chunk), at = (i - first) * p.chunk;
    if (!vector_ready(p) || lanes(m) != LANES) {
      decode_substream(p, i, out + at);
      merge(at, at + m);
      continue;
    }
    Lanes& s = state[ns++];
    s.q = p.body[i];
    s.end = s.q + p.length[i];
    if (s.end - s.q < 4 * LANES) throw Corrupt("substream ends early");
    for (int k = 0; k < LANES; ++k, s.q += 4) {
      s.x[k] = load32(s.q);
      if (s.x[k] < STATE_LO) throw Corrupt("bad rANS state");
    }
    s.out = out + at, s.j = 0, s.m = m, s.tail = UINT64_MAX;
    if (fused) {
      for (int k = 1; k < W; ++k) s.raw[k - 1] = fuse->raw[k - 1] + at;
      s.values = static_cast<uint8_t*>(fuse->values) + at * W;
    }
  }
  // Groups of the substreams still running: a shorter last substream, or one near its end,
  // leaves the group, and the others go on together.
  const bool packed = p.L <= 12 && !p.packed.empty();
  Lanes* run[DECODE_GROUP];
  for (std::size_t k = 0; k < ns; ++k) run[k] = &state[k];
  while (ns) {
    Lanes group[DECODE_GROUP];
    for (std::size_t k = 0; k < ns; ++k) group[k] = *run[k];
    if (ns == 1) group[0].tail = std::min(group[0].tail, group[0].j);  // (scalar lanes: symbols to out)
    if (W == 4) packed ? advance<4, true>(p, group, ns) : advance<4, false>(p, group, ns);
    else if (W == 2) packed ? advance<2, true>(p, group, ns) : advance<2, false>(p, group, ns);
    else packed ? advance<0, true>(p, group, ns) : advance<0, false>(p, group, ns);
    std::size_t left = 0;
    for (std::size_t k = 0; k < ns; ++k) {
      *run[k] = group[k];
      if (run[k]->j + LANES <= run[k]->m && run[k]->end - run[k]->q >= 2 * LANES) {
        run[left++] = run[k];
        continue;
      }
      Lanes& s = *run[k];
      s.tail = std::min(s.tail, s.j);
      lanes_finish(p, s);
      const uint64_t at = static_cast<uint64_t>(s.out - out);
      merge(at + s.tail, at + s.m);
    }
    ns = left;
  }
}

}  // namespace zc::rans
