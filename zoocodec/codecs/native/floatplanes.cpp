// Byte planes of 2- and 4-byte floats (codecs/floatplanes.py frames them): the split and an
// AVX2 rANS encoder for the encoder; a decoder that rebuilds the values a group of chunks (up
// to 8 rANS substreams) per pool task, their substreams advanced together in AVX2 vectors
// (rans_avx2.h).
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
#include "rans_avx2.h"

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

#ifdef ZC_AVX2
const bool AVX2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
#else
constexpr bool AVX2 = false;  // (the vector encoder's)
#endif

// The values of symbols [lo, hi) of a group that the rANS decoder wrote to `out` only: merged
// from there and the raw planes.
template <class U>
void merge_fused(const rans::Fuse& f, const uint8_t* out, uint64_t lo, uint64_t hi) {
  constexpr int W = sizeof(U);
  const uint8_t* src[W] = {out + lo};
  for (int k = 1; k < W; ++k) src[k] = f.raw[k - 1] + lo;
  merge_chunk<U>(static_cast<U*>(f.values) + lo, hi - lo, src);
}

// Substreams first .. first + count of a plane (its symbols from `first` x chunk on, `size`
// of them) into out. Fused (W = 2 or 4: raw holds the other planes and values the output, from
// the same value on): the values are written instead, the vector decoder's straight from its
// registers (rans_avx2.h), the rest merged from out.
template <int W>
void decode_plane(const rans::Parsed& p, std::size_t first, std::size_t count, uint64_t size, uint8_t* out,
                  const uint8_t* const* raw = nullptr, void* values = nullptr) {
  using U = std::conditional_t<W == 4, uint32_t, uint16_t>;
  rans::Fuse fuse;
  if constexpr (W != 0) {
    fuse.width = W;
    for (int k = 1; k < W; ++k) fuse.raw[k - 1] = raw[k - 1];
    fuse.values = values;
    fuse.merge = merge_fused<U>;
  }
  if (p.L == 0) {
    std::memset(out, static_cast<int>(p.constant), size);
    if constexpr (W != 0) merge_fused<U>(fuse, out, 0, size);
    return;
  }
  rans::decode_group(p, first, count, out, W ? &fuse : nullptr);
}

// Task t of a prepared merge: its chunks' values into m.out.
template <class U>
void merge_task(const Merge& g, std::size_t t) {
  constexpr int W = sizeof(U);
  U* out = static_cast<U*>(g.out);
  const std::size_t c0 = t * g.chunks / g.tasks, nc = (t + 1) * g.chunks / g.tasks - c0;
  const uint64_t lo = c0 * g.chunk, m = std::min(g.n - lo, nc * g.chunk);
  thread_local std::vector<uint8_t> buf;  // reused: a fresh 256 KB block would be mmapped
  if (g.fused) {  // the top plane coded, the others raw: values straight from the decoder
    if (buf.size() < m) buf.resize(m);
    const uint8_t* raw[W - 1];
    for (int k = 1; k < W; ++k) raw[k - 1] = g.planes[k].raw + lo;
    decode_plane<W>(g.planes[0].coded, c0, nc, m, buf.data(), raw, out + lo);
    return;
  }
  const uint8_t* src[W];
  for (int k = 0; k < W; ++k) {
    const Plane& p = g.planes[k];
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
}

// rANS encoding of a byte plane: the stream rans::encode writes, bit for bit, with the 8
// lanes of a substream in one AVX2 vector (one table lookup a step; x / f by a single-precision
// division, corrected by the remainder).
struct EncLane {
  uint64_t rcp;  // ceil(2^48 / f): floor(x / f) = x * rcp >> 48 for 32-bit x (see rans.cpp)
  uint32_t f, cum;
};

inline void enc_put(uint32_t& x, const EncLane& e, int L, uint16_t* words, std::size_t& top) {
  if (x >= e.f << (32 - L)) {
    words[--top] = static_cast<uint16_t>(x);
    x >>= 16;
  }
  const uint32_t q = static_cast<uint32_t>((static_cast<unsigned __int128>(x) * e.rcp) >> 48);
  x = x + e.cum + q * ((1u << L) - e.f);
}

// One substream being encoded: its symbols, states, and words pushed down from the top.
struct EncJob {
  const uint8_t* sym;
  uint64_t m, j;  // symbols, and those not coded yet (the first j)
  int K;
  alignas(32) uint32_t x[rans::LANES];
  std::unique_ptr<uint16_t[]> words;  // one word a symbol at most, and 8 slots below for the vector stores
  std::size_t size, top;
};

#ifdef ZC_AVX2
// For a mask of the lanes that emit a word: lane k's word goes to position 8 - (emitting
// lanes) + (emitting lanes below k) of the group's 8 word slots.
struct Compress {
  alignas(32) uint32_t idx[256][8];
  Compress() {
    for (int m = 0; m < 256; ++m) {
      int c = __builtin_popcount(m), at = 8 - c;
      for (int k = 0; k < 8; ++k) idx[m][k] = 0;
      for (int k = 0; k < 8; ++k)
        if (m >> k & 1) idx[m][at++] = static_cast<uint32_t>(k);
    }
  }
};
const Compress COMPRESS;

// The remaining groups of S substreams with the same number of symbols left (a multiple of 8),
// advanced together so that each one's chain of latencies overlaps the others'. A group's words
// land right-aligned in lane order below `top`, where the scalar encoder pushes them.
template <int S>
__attribute__((target("avx2,fma,popcnt"))) void enc_groups(EncJob* const* jobs, const uint32_t* fc, int L) {
  const __m256i lo16 = _mm256_set1_epi32(0xffff), sign = _mm256_set1_epi32(INT32_MIN),
                one = _mm256_set1_epi32(1);
  const __m128i up = _mm_cvtsi32_si128(32 - L), shift = _mm_cvtsi32_si128(L);
  const __m256 k65536 = _mm256_set1_ps(65536.0f);
  __m256i x[S];
  std::size_t top[S];
  for (int k = 0; k < S; ++k) {
    x[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(jobs[k]->x));
    top[k] = jobs[k]->top;
  }
  for (uint64_t j = jobs[0]->j; j;) {
    j -= 8;
    for (int k = 0; k < S; ++k) {
      uint64_t eight;
      std::memcpy(&eight, jobs[k]->sym + j, 8);
      const __m256i s = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(eight)));
      const __m256i e = rans::lookup8(fc, s);
      const __m256i f = _mm256_and_si256(e, lo16), cum = _mm256_srli_epi32(e, 16);
      const __m256i below =
          _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_sll_epi32(f, up), sign), _mm256_xor_si256(x[k], sign));
      const unsigned out = ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(below))) & 0xff;
      const __m256i w = _mm256_permutevar8x32_epi32(
          _mm256_and_si256(x[k], lo16), _mm256_load_si256(reinterpret_cast<const __m256i*>(COMPRESS.idx[out])));
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(w, w), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(jobs[k]->words.get() + top[k] - 8), _mm256_castsi256_si128(packed));
      top[k] -= _mm_popcnt_u32(out);
      const __m256i y = _mm256_blendv_epi8(_mm256_srli_epi32(x[k], 16), x[k], below);
      // q = y / f in single precision is within 1 of the quotient (relative error 2^-23, and
      // q < 2^(32 - L) <= 2^23 for L >= 9): the remainder y - q f puts it right; then
      // x' = (q << L) + y mod f + start
      const __m256 yf = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(y, 16)), k65536,
                                        _mm256_cvtepi32_ps(_mm256_and_si256(y, lo16)));  // one rounding
      __m256i q = _mm256_cvttps_epi32(_mm256_div_ps(yf, _mm256_cvtepi32_ps(f)));
      __m256i r = _mm256_sub_epi32(y, _mm256_mullo_epi32(q, f));
      const __m256i under = _mm256_cmpgt_epi32(_mm256_setzero_si256(), r);  // (r is within (-f, 2f))
      q = _mm256_add_epi32(q, under);
      r = _mm256_add_epi32(r, _mm256_and_si256(under, f));
      const __m256i over = _mm256_cmpgt_epi32(r, _mm256_sub_epi32(f, one));
      q = _mm256_sub_epi32(q, over);
      r = _mm256_sub_epi32(r, _mm256_and_si256(over, f));
      x[k] = _mm256_add_epi32(_mm256_add_epi32(_mm256_sll_epi32(q, shift), r), cum);
    }
  }
  for (int k = 0; k < S; ++k) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(jobs[k]->x), x[k]);
    jobs[k]->top = top[k];
    jobs[k]->j = 0;
  }
}
#else
template <int S>
void enc_groups(EncJob* const*, const uint32_t*, int) {}  // never called: AVX2 is false
#endif

// A substream's last m mod K symbols (lane j mod K each, from the last one back).
void enc_begin(EncJob& e, const uint8_t* sym, uint64_t m, const EncLane* lanes, int L) {
  e.sym = sym, e.m = m, e.j = m, e.K = rans::lanes(m);
  e.size = e.top = m + 9;
  e.words.reset(new uint16_t[e.size]);  // (not zeroed: every word read back was written)
  for (int k = 0; k < e.K; ++k) e.x[k] = rans::STATE_LO;
  while (e.j % e.K) {
    --e.j;
    enc_put(e.x[e.j % e.K], lanes[sym[e.j]], L, e.words.get(), e.top);
  }
}

// The remaining groups one lane at a time, then the substream's bytes: its states, its words.
std::vector<uint8_t> enc_end(EncJob& e, const EncLane* lanes, int L) {
  const int K = e.K;
  for (uint64_t j = e.j; j;) {
    j -= K;
    for (int k = K - 1; k >= 0; --k) enc_put(e.x[k], lanes[e.sym[j + k]], L, e.words.get(), e.top);
  }
  std::vector<uint8_t> out(4 * K + 2 * (e.size - e.top));
  uint8_t* o = out.data();
  for (int k = 0; k < K; ++k)
    for (int b = 0; b < 4; ++b) *o++ = static_cast<uint8_t>(e.x[k] >> (8 * b));
  for (std::size_t i = e.top; i < e.size; ++i) {
    *o++ = static_cast<uint8_t>(e.words[i]);
    *o++ = static_cast<uint8_t>(e.words[i] >> 8);
  }
  return out;
}

// Substreams first .. first + count of a plane, into bodies: the vector encoder takes the 8-lane
// ones in groups of those with as many symbols (all but perhaps the last).
void enc_substreams(const uint8_t* sym, uint64_t n, uint64_t chunk, std::size_t first, std::size_t count,
                    const EncLane* lanes, const uint32_t* fc, int L, std::vector<std::vector<uint8_t>>& bodies) {
  constexpr std::size_t MAXS = 4;
  EncJob jobs[MAXS];
  EncJob* full[MAXS];
  std::size_t nf = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const uint64_t lo = (first + i) * chunk;
    enc_begin(jobs[i], sym + lo, std::min(chunk, n - lo), lanes, L);
    if (!AVX2 || L < 9 || jobs[i].K != rans::LANES) continue;  // (coarser tables: quotients too large for floats)
    if (jobs[i].m == chunk) {
      full[nf++] = &jobs[i];
    } else {
      EncJob* last = &jobs[i];
      enc_groups<1>(&last, fc, L);
    }
  }
  if (nf == 4) enc_groups<4>(full, fc, L);
  else if (nf == 3) enc_groups<3>(full, fc, L);
  else if (nf == 2) enc_groups<2>(full, fc, L);
  else if (nf == 1) enc_groups<1>(full, fc, L);
  for (std::size_t i = 0; i < count; ++i) bodies[first + i] = enc_end(jobs[i], lanes, L);
}

}  // namespace

template <class U>
void split(const U* v, uint64_t n, uint8_t* const* plane, int threads) {
  run_tasks((n + CHUNK - 1) / CHUNK, threads, [&](std::size_t c) {
    uint64_t lo = c * CHUNK, m = std::min(n - lo, CHUNK);
    split_chunk<U>(v + lo, m, plane, lo);
  });
}

Merge prepare(uint64_t n, int width, const int* modes, const uint8_t* const* data, const std::size_t* sizes,
              void* out, int workers) {
  if (width != 2 && width != 4) throw Corrupt("planes of a width other than 2 or 4 bytes");
  Merge g;
  g.n = n, g.width = width, g.out = out;
  for (int k = 0; k < width; ++k) {
    Plane& p = g.planes[k];
    p.mode = modes[k];
    if (modes[k] == RAW) {
      if (sizes[k] != n) throw Corrupt("raw plane has the wrong length");
      p.raw = data[k];
    } else if (modes[k] == RANS) {
      Reader r(data[k], sizes[k]);
      p.coded = rans::parse(r, n);
      if (r.left()) throw Corrupt("bytes left after a plane");
      if (p.coded.nsym > 256) throw Corrupt("plane symbols wider than a byte");
      if (p.coded.L > 0) {
        if (g.chunk && p.coded.chunk != g.chunk) throw Corrupt("planes cut into different substreams");
        g.chunk = p.coded.chunk;
      }
    } else {
      throw Corrupt("unknown plane mode");
    }
  }
  if (!g.chunk) g.chunk = CHUNK;
  if (g.chunk > (uint64_t(1) << 24)) throw Corrupt("substreams over 2^24 values");
  g.chunks = (n + g.chunk - 1) / g.chunk;
  // Tasks of up to GROUP substreams (a task's buffer stays within 8 x 64K values), more tasks
  // where that would leave threads idle, and the substreams shared out evenly: a task left
  // with one substream decodes it at a third of the speed of a group.
  const std::size_t w = static_cast<std::size_t>(std::max(workers, 1));
  g.tasks = g.chunk > CHUNK ? g.chunks : std::max((g.chunks + rans::GROUP - 1) / rans::GROUP, std::min(w, g.chunks));
  g.fused = g.planes[0].mode == RANS && rans::vector_ready(g.planes[0].coded);
  for (int k = 1; k < width; ++k) g.fused &= g.planes[k].mode == RAW;
  return g;
}

void run_task(const Merge& g, std::size_t t) {
  if (g.width == 2)
    merge_task<uint16_t>(g, t);
  else
    merge_task<uint32_t>(g, t);
}

void merge(uint64_t n, int width, const int* modes, const uint8_t* const* data, const std::size_t* sizes, void* out,
           int threads) {
  const Merge g = prepare(n, width, modes, data, sizes, out, threads > 0 ? threads : default_threads());
  run_tasks(g.tasks, threads, [&](std::size_t t) { run_task(g, t); });
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
  if (n == 0 || present == 1 || L > 12) {  // nothing for the vector encoder to do
    rans::encode<uint8_t>(sym, n, 256, chunk, threads, w, max_bits);
    return;
  }
  w.uvarint(n);
  w.uvarint(256);
  w.byte(static_cast<uint8_t>(L));
  for (uint32_t s = 0; s < 256;) {  // the table as rans::encode writes it: runs of zeros as (0, run - 1)
    if (freq[s]) {
      w.uvarint(freq[s++]);
      continue;
    }
    uint32_t run = 0;
    while (s + run < 256 && !freq[s + run]) ++run;
    w.uvarint(0);
    w.uvarint(run - 1);
    s += run;
  }
  std::vector<EncLane> lanes(256);
  std::vector<uint32_t> fc(256);
  for (uint32_t s = 0, cum = 0; s < 256; cum += freq[s++]) {
    const uint64_t f = freq[s] ? freq[s] : 1;
    lanes[s] = {((uint64_t(1) << 48) + f - 1) / f, freq[s], cum};
    fc[s] = freq[s] | cum << 16;
  }
  w.uvarint(chunk);
  // tasks of up to 4 substreams, more where that would leave threads idle
  const std::size_t parts = (n - 1) / chunk + 1;
  const std::size_t workers = static_cast<std::size_t>(threads > 0 ? threads : default_threads());
  const std::size_t tasks = std::max((parts + 3) / 4, std::min(workers, parts));
  std::vector<std::vector<uint8_t>> bodies(parts);
  run_tasks(tasks, threads, [&](std::size_t t) {
    const std::size_t first = t * parts / tasks, count = (t + 1) * parts / tasks - first;
    enc_substreams(sym, n, chunk, first, count, lanes.data(), fc.data(), L, bodies);
  });
  std::size_t total = w.out.size();
  for (auto& b : bodies) total += b.size() + 10;
  w.out.reserve(total);
  for (auto& b : bodies) w.uvarint(b.size());
  for (auto& b : bodies) {
    w.bytes(b.data(), b.size());
    std::vector<uint8_t>().swap(b);
  }
}

}  // namespace zc::planes
