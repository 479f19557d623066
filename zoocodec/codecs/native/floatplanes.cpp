// Byte planes of 2- and 4-byte floats (codecs/floatplanes.py frames them): the split and the
// rANS streams of the planes for the encoder (rans::encode_table codes them); a decoder that
// rebuilds the values a group of chunks (up to 8 rANS substreams) per pool task, their
// substreams advanced together in AVX2 vectors (rans_avx2.h).
// When only the top plane is coded (the usual case) the values are written straight from the
// decoder's registers; otherwise coded planes go through a cache-sized buffer first.
//
// A value's bits are rotated left by one (the sign becomes the lowest bit, the exponent
// fills the top byte); plane 0 holds the top byte of every value, plane width-1 the lowest.
#include "floatplanes.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <type_traits>
#include <cstring>
#include <vector>

#include "pool.h"
#include "rans.h"
#include "rans_avx2.h"

namespace zc::planes {

namespace {

constexpr uint64_t CHUNK = 1 << 16;  // values a task splits or rebuilds when no plane is rANS-coded
constexpr uint64_t STREAM_MIN = 4096;  // output bytes from which a merge streams its stores past the cache

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

#if defined(__x86_64__)
// merge_chunk by AVX2 with non-temporal stores, 32 values a step from a 32-byte aligned o
// (m a multiple of 32): a decode's outputs are tens of MB written once and not read soon, and
// a plain store first reads the line it fills. With two threads the memory traffic, not the
// decoding, set the pace (minilm's bf16 load moved about 21 GB/s, this machine's ceiling); the
// stores of a plain loop are a third of it.
__attribute__((target("avx2"))) inline __m256i load(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

template <class U>
__attribute__((target("avx2"))) inline void put(U* at, __m256i v) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(at), v);
}

template <class U>
__attribute__((target("avx2"))) void merge_streamed(U* o, uint64_t m, const uint8_t* const* src) {
  for (uint64_t i = 0; i < m; i += 32) {
    if constexpr (sizeof(U) == 2) {  // 16-bit p0 << 8 | p1, rotated right by one
      const __m256i a = load(src[1] + i), b = load(src[0] + i);
      const __m256i lo = _mm256_unpacklo_epi8(a, b), hi = _mm256_unpackhi_epi8(a, b);  // (values 0-7 16-23, 8-15 24-31)
      const __m256i v0 = _mm256_permute2x128_si256(lo, hi, 0x20), v1 = _mm256_permute2x128_si256(lo, hi, 0x31);
      put(o + i, _mm256_or_si256(_mm256_srli_epi16(v0, 1), _mm256_slli_epi16(v0, 15)));
      put(o + i + 16, _mm256_or_si256(_mm256_srli_epi16(v1, 1), _mm256_slli_epi16(v1, 15)));
    } else {  // p0 << 24 | p1 << 16 | p2 << 8 | p3, rotated right by one
      const __m256i a3 = load(src[3] + i), a2 = load(src[2] + i), a1 = load(src[1] + i), a0 = load(src[0] + i);
      const __m256i l = _mm256_unpacklo_epi8(a3, a2), h = _mm256_unpackhi_epi8(a3, a2);
      const __m256i L = _mm256_unpacklo_epi8(a1, a0), H = _mm256_unpackhi_epi8(a1, a0);
      const __m256i w0 = _mm256_unpacklo_epi16(l, L), w1 = _mm256_unpackhi_epi16(l, L);  // values 0-3 16-19, 4-7 20-23
      const __m256i w2 = _mm256_unpacklo_epi16(h, H), w3 = _mm256_unpackhi_epi16(h, H);  // 8-11 24-27, 12-15 28-31
      const __m256i v[4] = {_mm256_permute2x128_si256(w0, w1, 0x20), _mm256_permute2x128_si256(w2, w3, 0x20),
                            _mm256_permute2x128_si256(w0, w1, 0x31), _mm256_permute2x128_si256(w2, w3, 0x31)};
      for (int k = 0; k < 4; ++k) put(o + i + 8 * k, _mm256_or_si256(_mm256_srli_epi32(v[k], 1), _mm256_slli_epi32(v[k], 31)));
    }
  }
  _mm_sfence();  // (streamed stores are weakly ordered: visible before the task counts as done)
}
#endif

// merge_chunk, the aligned middle of a long run streamed (merge_streamed) where AVX2 runs.
template <class U>
void merge_out(U* o, uint64_t m, const uint8_t* const* src) {
#if defined(__x86_64__)
  constexpr int W = sizeof(U);
  const uint64_t head = (32 - reinterpret_cast<uintptr_t>(o) % 32) % 32;
  if (m * W >= STREAM_MIN && head % W == 0 && rans::avx2()) {
    const uint64_t a = head / W, b = a + (m - a) / 32 * 32;
    const uint8_t* at[W];
    merge_chunk<U>(o, a, src);
    for (int k = 0; k < W; ++k) at[k] = src[k] + a;
    merge_streamed<U>(o + a, b - a, at);
    for (int k = 0; k < W; ++k) at[k] = src[k] + b;
    merge_chunk<U>(o + b, m - b, at);
    return;
  }
#endif
  merge_chunk<U>(o, m, src);
}

// The values of symbols [lo, hi) of a group that the rANS decoder wrote to `out` only: merged
// from there and the raw planes.
template <class U>
void merge_fused(const rans::Fuse& f, const uint8_t* out, uint64_t lo, uint64_t hi) {
  constexpr int W = sizeof(U);
  const uint8_t* src[W] = {out + lo};
  for (int k = 1; k < W; ++k) src[k] = f.raw[k - 1] + lo;
  merge_out<U>(static_cast<U*>(f.values) + lo, hi - lo, src);
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
      if (p.mode == HUFF)
        huff::decode_group(p.huff, c0, nc, b);
      else
        decode_plane<0>(p.coded, c0, nc, m, b);
      src[k] = b;
    }
  }
  merge_out<U>(out + lo, m, src);
}


}  // namespace

template <class U>
void split(const U* v, uint64_t n, uint8_t* const* plane, int threads) {
  run_tasks((n + CHUNK - 1) / CHUNK, threads, [&](std::size_t c) {
    uint64_t lo = c * CHUNK, m = std::min(n - lo, CHUNK);
    split_chunk<U>(v + lo, m, plane, lo);
  });
}

// Tasks of up to DECODE_GROUP substreams (a task's buffer stays within 8 x 64K values), more tasks
// where that would leave threads idle, and the substreams shared out evenly: a task left
// with one substream decodes it at a third of the speed of a group.
std::size_t tasks_for(const Merge& g, int workers) {
  const std::size_t w = static_cast<std::size_t>(std::max(workers, 1));
  return g.chunk > CHUNK ? g.chunks : std::max((g.chunks + rans::DECODE_GROUP - 1) / rans::DECODE_GROUP,
                                               std::min(w, g.chunks));
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
    } else if (modes[k] == HUFF) {
      Reader r(data[k], sizes[k]);
      p.huff = huff::parse(r, n);
      if (r.left()) throw Corrupt("bytes left after a plane");
      if (g.chunk && p.huff.chunk != g.chunk) throw Corrupt("planes cut into different substreams");
      g.chunk = p.huff.chunk;
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
  g.tasks = tasks_for(g, workers);
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
  if (n == 0 || present == 1) {  // nothing to code
    rans::encode<uint8_t>(sym, n, 256, chunk, threads, w, max_bits);
    return;
  }
  w.uvarint(n);
  w.uvarint(256);
  rans::encode_table<uint8_t>(sym, n, freq, L, chunk, threads, w);  // (the AVX2 encoder codes the substreams)
}

}  // namespace zc::planes
