// Byte planes of 2- and 4-byte floats (codecs/floatplanes.py frames them): the split and the
// rANS streams of the planes for the encoder (rans::encode_table codes them); a decoder that rebuilds the values a group of chunks (up
// to 4 rANS substreams) per pool task, their substreams advanced together in AVX2 vectors.
// When only the top plane is coded (the usual case) the values are written straight from the
// decoder's registers; otherwise coded planes go through a cache-sized buffer first.
//
// A value's bits are rotated left by one (the sign becomes the lowest bit, the exponent
// fills the top byte); plane 0 holds the top byte of every value, plane width-1 the lowest.
#include "floatplanes.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ZC_AVX2 1
#endif

#include <algorithm>
#include <type_traits>
#include <cstring>
#include <memory>
#include <vector>

#include "pool.h"
#include "rans.h"

namespace zc::planes {

namespace {

constexpr uint64_t CHUNK = 1 << 16;  // values a task splits or rebuilds when no plane is rANS-coded

inline uint32_t load16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }
inline uint32_t load32(const uint8_t* p) { return load16(p) | load16(p + 2) << 16; }

// parallel_for, or a plain loop where there is one task or one thread: the pool wakes every
// helper it ever started on each call (a model's hundreds of small tensors paid for that).
template <class F>
void run_tasks(std::size_t n, int threads, const F& fn) {
  if (n <= 1 || threads == 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
  } else {
    parallel_for(n, threads, fn);
  }
}

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
// S substreams (consecutive chunks) advance together so that the lookups of one hide the
// latency of the others. Same bitstream as rans::decode_substream, same checks; it takes
// substreams of 8 lanes under a packed table (byte symbols, L <= 12) and leaves the others to
// rans.cpp.
struct Lanes {
  const uint8_t* q;
  const uint8_t* end;
  uint8_t* out;  // symbols (when fused: those decoded one at a time, from `tail` on)
  uint64_t j, m;
  alignas(32) uint32_t x[rans::LANES];
  const uint8_t* raw[3];  // fused: the other planes (raw), and the values, from the substream's start
  void* values;
  uint64_t tail;
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

// Whole groups of one substream's 8 states in scalar registers, branch-free (as rans.cpp's
// byte decoder): faster than one vector alone, whose every step waits for the last.
void lanes_scalar(const uint32_t* pk, int L, Lanes& s) {
  const uint32_t mask = (1u << L) - 1;
  const uint8_t* q = s.q;
  uint32_t x[rans::LANES];
  std::memcpy(x, s.x, sizeof x);
  uint64_t j = s.j;
  for (; j + rans::LANES <= s.m && s.end - q >= 2 * rans::LANES; j += rans::LANES) {
    uint64_t group = 0;
    for (int k = 0; k < rans::LANES; ++k) {
      const uint32_t e = pk[x[k] & mask], nx = (e >> 20) * (x[k] >> L) + (e >> 8 & 0xfff);
      group |= uint64_t(e & 0xff) << (8 * k);
      const uint32_t r = nx < rans::STATE_LO;  // arithmetic, not a branch
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

// 8 bytes, zero-extended to the 8 lanes.
__attribute__((target("avx2"))) inline __m256i bytes8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// W = 0: symbols to out. W = 2 or 4 (fused): the values themselves, from the symbol (the top
// plane) and the W - 1 raw planes, rotated back as merge_chunk does.
template <int S, int W>
__attribute__((target("avx2,popcnt"))) void lanes_avx2(const uint32_t* pk, int L, Lanes* s) {
  const __m256i mask = _mm256_set1_epi32((1 << L) - 1), lo12 = _mm256_set1_epi32(0xfff),
                zero = _mm256_setzero_si256(), halves = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0),
                lo8 = _mm256_set1_epi32(0xff), one = _mm256_set1_epi32(1);
  (void)lo8, (void)one;  // (W == 2 only)
  const __m128i shift = _mm_cvtsi32_si128(L);
  // byte 0 of each 32-bit lane (the symbol), per 128-bit half, to its low 4 bytes; then both
  // halves' to the low 8 bytes
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
      const __m256i e = lookup8(pk, _mm256_and_si256(x[k], mask));
      __m256i nx = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_srli_epi32(e, 20), _mm256_srl_epi32(x[k], shift)),
                                    _mm256_and_si256(_mm256_srli_epi32(e, 8), lo12));
      __m256i small = _mm256_cmpeq_epi32(_mm256_srli_epi32(nx, 16), zero);
      unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(small)));
      __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q[k])));
      w = _mm256_permutevar8x32_epi32(w, _mm256_load_si256(reinterpret_cast<const __m256i*>(EXPAND.idx[bits])));
      x[k] = _mm256_blendv_epi8(nx, _mm256_or_si256(_mm256_slli_epi32(nx, 16), w), small);
      q[k] += 2 * _mm_popcnt_u32(bits);
      const uint64_t at = s[k].j + j;
      if constexpr (W == 0) {
        const __m256i sym = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(e, pick), halves);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out[k] + j), _mm256_castsi256_si128(sym));
      } else if constexpr (W == 2) {
        const __m256i t = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(e, lo8), 8), bytes8(s[k].raw[0] + at));
        const __m256i r = _mm256_or_si256(_mm256_srli_epi32(t, 1), _mm256_slli_epi32(_mm256_and_si256(t, one), 15));
        const __m256i v = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(s[k].values) + at), _mm256_castsi256_si128(v));
      } else {
        const __m256i t = _mm256_or_si256(
            _mm256_or_si256(_mm256_slli_epi32(e, 24), _mm256_slli_epi32(bytes8(s[k].raw[0] + at), 16)),
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

const bool AVX2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
#else
constexpr bool AVX2 = false;
template <int S, int W>
void lanes_avx2(const uint32_t*, int, Lanes*) {}  // never called: vector_ready is false
#endif

bool vector_ready(const rans::Parsed& p) { return AVX2 && p.L >= 1 && p.L <= 12 && !p.packed.empty(); }

// Substreams first .. first + count of a plane (its symbols from `first` x chunk on, `size`
// of them) into out. Fused (W = 2 or 4: raw holds the other planes and values the output, from
// the same value on): the values are written instead, the vector decoder's straight from its
// registers, the rest merged from out.
template <int W>
void decode_plane(const rans::Parsed& p, std::size_t first, std::size_t count, uint64_t size, uint8_t* out,
                  const uint8_t* const* raw = nullptr, void* values = nullptr) {
  using U = std::conditional_t<W == 4, uint32_t, uint16_t>;
  auto merge_from = [&](uint64_t at, uint64_t lo, uint64_t hi) {  // at: the substream's first value
    if constexpr (W != 0) {
      const uint8_t* src[W] = {out + at + lo};
      for (int k = 1; k < W; ++k) src[k] = raw[k - 1] + at + lo;
      merge_chunk<U>(static_cast<U*>(values) + at + lo, hi - lo, src);
    }
  };
  if (p.L == 0) {
    std::memset(out, static_cast<int>(p.constant), size);
    merge_from(0, 0, size);
    return;
  }
  constexpr std::size_t MAXS = 4;
  Lanes lanes[MAXS];
  std::size_t ns = 0;
  for (std::size_t i = first; i < first + count; ++i) {
    uint64_t m = std::min<uint64_t>(p.chunk, p.n - i * p.chunk), at = (i - first) * p.chunk;
    uint8_t* o = out + at;
    if (!vector_ready(p) || rans::lanes(m) != rans::LANES) {
      rans::decode_substream(p, i, o);
      merge_from(at, 0, m);
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
    s.out = o, s.j = 0, s.m = m, s.tail = UINT64_MAX;
    if constexpr (W != 0) {
      for (int k = 1; k < W; ++k) s.raw[k - 1] = raw[k - 1] + at;
      s.values = static_cast<U*>(values) + at;
    }
  }
  // Groups of the substreams still running: a shorter last substream, or one near its end,
  // leaves the group, and the others go on together.
  const uint32_t* pk = p.packed.data();
  Lanes* run[MAXS];
  for (std::size_t k = 0; k < ns; ++k) run[k] = &lanes[k];
  while (ns) {
    Lanes group[MAXS];
    for (std::size_t k = 0; k < ns; ++k) group[k] = *run[k];
    if (ns == 4) lanes_avx2<4, W>(pk, p.L, group);
    else if (ns == 3) lanes_avx2<3, W>(pk, p.L, group);
    else if (ns == 2) lanes_avx2<2, W>(pk, p.L, group);
    else {  // one vector alone waits on its own latencies: scalar lanes, symbols to out
      group[0].tail = std::min(group[0].tail, group[0].j);
      lanes_scalar(pk, p.L, group[0]);
    }
    std::size_t left = 0;
    for (std::size_t k = 0; k < ns; ++k) {
      *run[k] = group[k];
      if (run[k]->j + rans::LANES <= run[k]->m && run[k]->end - run[k]->q >= 2 * rans::LANES) {
        run[left++] = run[k];
        continue;
      }
      Lanes& s = *run[k];
      s.tail = std::min(s.tail, s.j);
      lanes_finish(pk, p.L, s);
      merge_from(static_cast<uint64_t>(s.out - out), s.tail, s.m);
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
  // Tasks of up to GROUP substreams (a task's buffer stays within 4 x 64K values), more tasks
  // where that would leave threads idle, and the substreams shared out evenly: a task left
  // with one substream decodes it at a third of the speed of a group.
  const std::size_t workers = static_cast<std::size_t>(threads > 0 ? threads : default_threads());
  const std::size_t tasks = chunk > CHUNK ? chunks
                                          : std::max((chunks + GROUP - 1) / GROUP, std::min(workers, chunks));
  bool fused = planes[0].mode == RANS && vector_ready(planes[0].coded);
  for (int k = 1; k < W; ++k) fused &= planes[k].mode == RAW;
  run_tasks(tasks, threads, [&](std::size_t t) {
    const std::size_t c0 = t * chunks / tasks, nc = (t + 1) * chunks / tasks - c0;
    const uint64_t lo = c0 * chunk, m = std::min(n - lo, nc * chunk);
    thread_local std::vector<uint8_t> buf;  // reused: a fresh 256 KB block would be mmapped
    if (fused) {  // the top plane coded, the others raw: values straight from the decoder
      if (buf.size() < m) buf.resize(m);
      const uint8_t* raw[W - 1];
      for (int k = 1; k < W; ++k) raw[k - 1] = planes[k].raw + lo;
      decode_plane<W>(planes[0].coded, c0, nc, m, buf.data(), raw, out + lo);
      return;
    }
    const uint8_t* src[W];
    for (int k = 0; k < W; ++k) {
      Plane& p = planes[k];
      if (p.mode == RAW) {
        src[k] = p.raw + lo;
      } else {
        if (buf.size() < W * m) buf.resize(W * m);
        uint8_t* b = buf.data() + k * m;
        decode_plane<0>(p.coded, c0, nc, m, b);
        src[k] = b;
      }
    }
    merge_chunk<U>(out + lo, m, src);
  });
}


}  // namespace

template <class U>
void split(const U* v, uint64_t n, uint8_t* const* plane, int threads) {
  run_tasks((n + CHUNK - 1) / CHUNK, threads, [&](std::size_t c) {
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

std::vector<uint32_t> table(const std::vector<uint64_t>& counts, int max_bits, int* L) {
  thread_local std::vector<uint64_t> last_counts;  // the encoder sizes a plane, then codes it
  thread_local std::vector<uint32_t> last_freq;
  thread_local int last_bits = -1, last_L = 0;
  if (max_bits != last_bits || counts != last_counts) {
    last_freq = rans::normalise(counts, max_bits, &last_L);
    last_counts = counts, last_bits = max_bits;
  }
  *L = last_L;
  return last_freq;
}

void encode_plane(const uint8_t* sym, uint64_t n, uint64_t chunk, int max_bits, int threads, Writer& w) {
  if (chunk < 1) throw std::invalid_argument("chunk must be positive");
  std::vector<uint64_t> counts(256);
  histogram(sym, n, counts.data());
  uint32_t present = 0;
  for (uint64_t c : counts) present += c != 0;
  int L = 0;
  std::vector<uint32_t> freq;
  if (present > 1) freq = table(counts, max_bits, &L);
  if (n == 0 || present == 1) {  // nothing to code
    rans::encode<uint8_t>(sym, n, 256, chunk, threads, w, max_bits);
    return;
  }
  w.uvarint(n);
  w.uvarint(256);
  rans::encode_table<uint8_t>(sym, n, freq, L, chunk, threads, w);  // (the AVX2 encoder codes the substreams)
}

}  // namespace zc::planes
