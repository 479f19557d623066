#include "rans.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ZC_AVX2 1
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <queue>
#include <utility>
#include <string>

#include "pool.h"
#include "rans_avx2.h"

namespace zc::rans {

namespace {

// Frequencies summing to exactly M: rounded, then moved one unit at a time where it
// costs the fewest bits (greedy on the exact code length).
std::vector<uint32_t> quantise(const std::vector<uint64_t>& c, uint32_t M, double total) {
  std::size_t k = c.size();
  std::vector<uint32_t> f(k, 0);
  int64_t sum = 0;
  for (std::size_t i = 0; i < k; ++i) {
    if (!c[i]) continue;
    double x = static_cast<double>(c[i]) * M / total;
    f[i] = std::max<uint32_t>(1, static_cast<uint32_t>(std::llround(x)));
    sum += f[i];
  }
  int64_t diff = static_cast<int64_t>(M) - sum;
  using Item = std::pair<double, std::size_t>;
  if (diff > 0) {  // add where the gain c*log2((f+1)/f) is largest
    std::priority_queue<Item> q;
    for (std::size_t i = 0; i < k; ++i)
      if (c[i]) q.push({c[i] * std::log2((f[i] + 1.0) / f[i]), i});
    for (; diff > 0; --diff) {
      std::size_t i = q.top().second;
      q.pop();
      ++f[i];
      q.push({c[i] * std::log2((f[i] + 1.0) / f[i]), i});
    }
  } else if (diff < 0) {  // remove where the loss c*log2(f/(f-1)) is smallest
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> q;
    for (std::size_t i = 0; i < k; ++i)
      if (c[i] && f[i] > 1) q.push({c[i] * std::log2(f[i] / (f[i] - 1.0)), i});
    for (; diff < 0; ++diff) {
      std::size_t i = q.top().second;
      q.pop();
      --f[i];
      if (f[i] > 1) q.push({c[i] * std::log2(f[i] / (f[i] - 1.0)), i});
    }
  }
  return f;
}

double cost_bits(const std::vector<uint64_t>& c, const std::vector<uint32_t>& f, int L) {
  double bits = 0;
  for (std::size_t i = 0; i < c.size(); ++i)
    if (c[i]) bits += c[i] * (L - std::log2(static_cast<double>(f[i])));
  return bits;
}

inline uint32_t load32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint32_t load16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }

template <class T>
std::vector<uint64_t> histogram(const T* sym, uint64_t n, uint32_t nsym, int threads, T add) {
  std::size_t parts = std::max<std::size_t>(1, std::min<uint64_t>(threads, n / 65536 + 1));
  // Byte symbols: counters for all 256 values, checked against the alphabet afterwards, so the
  // loop compares nothing; wider ones: counters for the alphabet, each symbol checked first.
  constexpr bool bytes = sizeof(T) == 1;
  const std::size_t width = bytes ? 256 : nsym;
  // four counters per symbol, used in turn: runs of one symbol do not wait on one counter
  std::vector<std::vector<uint32_t>> local(parts, std::vector<uint32_t>(4 * width, 0));
  std::vector<uint64_t> total(width, 0);
  std::vector<int> bad(parts, 0);
  std::mutex adding;
  parallel_for(parts, threads, [&](std::size_t t) {
    uint64_t lo = n * t / parts, hi = n * (t + 1) / parts;
    uint32_t* h = local[t].data();
    T top = 0;
    for (uint64_t i = lo; i < hi;) {  // blocks below 2^32 values: the 32-bit counters cannot wrap
      const uint64_t end = std::min<uint64_t>(hi, i + (uint64_t(1) << 31)), whole = i + (end - i) / 4 * 4;
      for (; i < whole; i += 4) {
        const T a = static_cast<T>(sym[i] + add), b = static_cast<T>(sym[i + 1] + add);
        const T c = static_cast<T>(sym[i + 2] + add), d = static_cast<T>(sym[i + 3] + add);
        if constexpr (!bytes) {
          top = std::max({top, a, b, c, d});
          if (top >= nsym) break;
        }
        ++h[4 * a], ++h[4 * b + 1], ++h[4 * c + 2], ++h[4 * d + 3];
      }
      for (; i < end && top < nsym; ++i) {
        const T a = static_cast<T>(sym[i] + add);
        if constexpr (!bytes) top = std::max(top, a);
        if (top < nsym) ++h[4 * a];
      }
      if (top >= nsym) {
        bad[t] = 1;
        return;
      }
      std::lock_guard<std::mutex> lock(adding);
      for (std::size_t s = 0; s < width; ++s) {
        total[s] += uint64_t(h[4 * s]) + h[4 * s + 1] + h[4 * s + 2] + h[4 * s + 3];
        h[4 * s] = h[4 * s + 1] = h[4 * s + 2] = h[4 * s + 3] = 0;
      }
    }
  });
  for (std::size_t s = nsym; s < width; ++s) bad[0] |= total[s] != 0;
  for (std::size_t t = 0; t < parts; ++t)
    if (bad[t]) throw std::invalid_argument("symbol outside the alphabet");
  total.resize(nsym);
  return total;
}

// One symbol's encoding constants: floor(x / f) as a multiply, exact for every 32-bit state x
// and f <= 2^16 (the error of ceil(2^48 / f) moves x / f by less than 2^-16 <= 1 - (f-1)/f), so
// x' = x + start + q (2^L - f) = (q << L) + x mod f + start: the same states a division gives.
struct EncSym {
  uint64_t rcp;
  uint32_t bias, cmpl, xmax;
};

std::vector<EncSym> enc_table(const std::vector<uint32_t>& freq, const std::vector<uint32_t>& cum, int L) {
  std::vector<EncSym> e(freq.size());
  for (std::size_t s = 0; s < freq.size(); ++s) {
    const uint64_t f = freq[s] ? freq[s] : 1;
    e[s] = {((uint64_t(1) << 48) + f - 1) / f, cum[s], static_cast<uint32_t>((uint64_t(1) << L) - f),
            static_cast<uint32_t>(f << (32 - L))};
  }
  return e;
}

// A substream being coded, from its last symbol back: its words pushed down from the top of
// `words` (one a symbol at most, and 8 slots below for the vector stores).
template <class T>
struct SubEnc {
  const T* sym;
  uint64_t m, j;  // symbols, and those not coded yet (the first j)
  int K;
  alignas(32) uint32_t x[LANES];
  uint16_t* words;
  std::size_t size, top;
};

template <class T>
inline void put(uint32_t& st, const EncSym& es, uint16_t* words, std::size_t& top) {
  const bool out = st >= es.xmax;  // branch-free: the renormalisation is a coin flip per symbol
  words[top - 1] = static_cast<uint16_t>(st);  // (top >= 1: at most one word per symbol, m + 1 slots)
  top -= out;
  st = out ? st >> 16 : st;
  const uint32_t q = static_cast<uint32_t>((static_cast<unsigned __int128>(st) * es.rcp) >> 48);
  st = st + es.bias + q * es.cmpl;
}

// Whole groups of K symbols, one lane each, while more than `stop` symbols are left.
template <int K, class T>
inline void sub_groups(SubEnc<T>& e, const EncSym* enc, T add, uint64_t stop) {
  uint32_t s[K];
  for (int k = 0; k < K; ++k) s[k] = e.x[k];
  std::size_t top = e.top;
  uint64_t j = e.j;
  while (j > stop) {
    j -= K;
    for (int k = K - 1; k >= 0; --k) put<T>(s[k], enc[static_cast<T>(e.sym[j + k] + add)], e.words, top);
  }
  for (int k = 0; k < K; ++k) e.x[k] = s[k];
  e.top = top, e.j = j;
}

// The last m mod K symbols (symbol j uses state j mod K, from the last symbol back).
template <class T>
void sub_begin(SubEnc<T>& e, const T* sym, uint64_t m, uint16_t* words, const EncSym* enc, T add) {
  e.sym = sym, e.m = m, e.j = m, e.K = lanes(m);
  e.words = words, e.size = e.top = m + 9;
  for (int k = 0; k < e.K; ++k) e.x[k] = STATE_LO;
  while (e.j % e.K) {
    --e.j;
    put<T>(e.x[e.j % e.K], enc[static_cast<T>(sym[e.j] + add)], e.words, e.top);
  }
}

// The groups left, then the substream's bytes: its states, its words.
template <class T>
std::vector<uint8_t> sub_end(SubEnc<T>& e, const EncSym* enc, T add) {
  if (e.K == LANES) sub_groups<LANES>(e, enc, add, 0);
  else sub_groups<1>(e, enc, add, 0);
  std::vector<uint8_t> out(4 * e.K + 2 * (e.size - e.top));
  uint8_t* o = out.data();
  for (int k = 0; k < e.K; ++k)
    for (int b = 0; b < 4; ++b) *o++ = static_cast<uint8_t>(e.x[k] >> (8 * b));
  for (std::size_t i = e.top; i < e.size; ++i) {
    *o++ = static_cast<uint8_t>(e.words[i]);
    *o++ = static_cast<uint8_t>(e.words[i] >> 8);
  }
  return out;
}

#ifdef ZC_AVX2
// The vector encoder runs where the CPU has it, unless ZOOCODEC_NO_AVX2 is set (tests compare
// the two encoders' bytes); it codes GROUP substreams of a task together (rans_avx2.h).
const bool ENC_AVX2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("popcnt") && !std::getenv("ZOOCODEC_NO_AVX2");

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

// The groups of S byte substreams with the same number of symbols left (a multiple of 8), the 8
// lanes of each in one vector, advanced together so that each one's chain of latencies overlaps
// the others'; `fc` is freq | start << 16 by symbol. A group's words land right-aligned in lane
// order below `top`, where put() pushes them: the scalar encoder's bytes.
template <int S>
__attribute__((target("avx2,fma,popcnt"))) void sub_vectors(SubEnc<uint8_t>* const* subs, const uint32_t* fc, int L,
                                                              uint8_t add) {
  const __m256i lo16 = _mm256_set1_epi32(0xffff), sign = _mm256_set1_epi32(INT32_MIN),
                one = _mm256_set1_epi32(1);
  const __m128i up = _mm_cvtsi32_si128(32 - L), shift = _mm_cvtsi32_si128(L), plus = _mm_set1_epi8(
                                                                                     static_cast<char>(add));
  const __m256 k65536 = _mm256_set1_ps(65536.0f);
  __m256i x[S];
  std::size_t top[S];
  for (int k = 0; k < S; ++k) {
    x[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(subs[k]->x));
    top[k] = subs[k]->top;
  }
  for (uint64_t j = subs[0]->j; j;) {
    j -= 8;
    for (int k = 0; k < S; ++k) {
      const __m128i eight = _mm_add_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(subs[k]->sym + j)), plus);
      const __m256i e = lookup8(fc, _mm256_cvtepu8_epi32(eight));
      const __m256i f = _mm256_and_si256(e, lo16), cum = _mm256_srli_epi32(e, 16);
      const __m256i below =
          _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_sll_epi32(f, up), sign), _mm256_xor_si256(x[k], sign));
      const unsigned out = ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(below))) & 0xff;
      const __m256i w = _mm256_permutevar8x32_epi32(
          _mm256_and_si256(x[k], lo16), _mm256_load_si256(reinterpret_cast<const __m256i*>(COMPRESS.idx[out])));
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(w, w), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(subs[k]->words + top[k] - 8), _mm256_castsi256_si128(packed));
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
    _mm256_store_si256(reinterpret_cast<__m256i*>(subs[k]->x), x[k]);
    subs[k]->top = top[k];
    subs[k]->j = 0;
  }
}
#else
constexpr bool ENC_AVX2 = false;
template <int S>
void sub_vectors(SubEnc<uint8_t>* const*, const uint32_t*, int, uint8_t) {}  // never called: ENC_AVX2 is false
#endif

// Substreams first .. first + count into bodies. Byte symbols under a table of 9 bits or more
// take the vector encoder (coarser tables: quotients too large for single precision), the
// substreams of 8 lanes with as many symbols (all but perhaps the last) advanced together.
template <class T>
void encode_substreams(const T* sym, uint64_t n, uint64_t chunk, std::size_t first, std::size_t count,
                       const EncSym* enc, const uint32_t* fc, int L, T add, std::vector<std::vector<uint8_t>>& bodies) {
  thread_local std::vector<uint16_t> words[GROUP];  // reused
  SubEnc<T> subs[GROUP];
  SubEnc<uint8_t>* full[GROUP];
  std::size_t nf = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const uint64_t lo = (first + i) * chunk, m = std::min(chunk, n - lo);
    words[i].resize(m + 9);
    sub_begin(subs[i], sym + lo, m, words[i].data(), enc, add);
    if constexpr (sizeof(T) == 1) {
      if (!ENC_AVX2 || L < 9 || subs[i].K != LANES) continue;
      if (subs[i].m == chunk) {
        full[nf++] = &subs[i];
      } else {
        SubEnc<uint8_t>* last = &subs[i];
        sub_vectors<1>(&last, fc, L, add);
      }
    }
  }
  if (nf == 4) sub_vectors<4>(full, fc, L, static_cast<uint8_t>(add));
  else if (nf == 3) sub_vectors<3>(full, fc, L, static_cast<uint8_t>(add));
  else if (nf == 2) sub_vectors<2>(full, fc, L, static_cast<uint8_t>(add));
  else if (nf == 1) sub_vectors<1>(full, fc, L, static_cast<uint8_t>(add));
  for (std::size_t i = 0; i < count; ++i) bodies[first + i] = sub_end(subs[i], enc, add);
}

}  // namespace

std::vector<uint32_t> normalise(const std::vector<uint64_t>& counts, int max_bits, int* L) {
  double total = 0;
  std::size_t present = 0;
  for (uint64_t c : counts) {
    total += static_cast<double>(c);
    present += c != 0;
  }
  while (max_bits < 16 && (1u << max_bits) < 2 * present) ++max_bits;
  std::vector<uint32_t> best = quantise(counts, 1u << max_bits, total);
  double best_cost = cost_bits(counts, best, max_bits);
  *L = max_bits;
  for (int bits = 1; bits < max_bits; ++bits) {
    if ((1u << bits) < 2 * present) continue;
    std::vector<uint32_t> f = quantise(counts, 1u << bits, total);
    if (cost_bits(counts, f, bits) <= best_cost * 1.0005 + 8) {
      *L = bits;
      return f;
    }
  }
  return best;
}

std::vector<uint32_t> pow2_table(const std::vector<uint64_t>& f, int* L) {
  unsigned __int128 S = 0;  // tables of packed flag bytes sum to 2^56 (flags.py)
  uint64_t present = 0;
  for (uint64_t v : f) {
    if (v > (uint64_t(1) << 62)) throw Corrupt("frequency over 2^62");
    S += v;
    present += v != 0;
  }
  if (present < 2) throw Corrupt("a coded stream needs two symbols or more");
  if (present > MAX_NSYM) throw Corrupt("more than 2^16 symbols");
  unsigned __int128 target = std::max<unsigned __int128>(S, 2 * present);
  int bits = 1;
  while (bits < 16 && (static_cast<unsigned __int128>(1) << bits) < target) ++bits;
  const uint64_t M = uint64_t(1) << bits;
  *L = bits;
  std::vector<uint32_t> out(f.size(), 0);
  if (S == M) {
    for (std::size_t i = 0; i < f.size(); ++i) out[i] = static_cast<uint32_t>(f[i]);
    return out;  // already a power of two (and each below it: two or more present)
  }
  int64_t sum = 0;
  std::size_t big = 0;
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (!f[i]) continue;
    out[i] = static_cast<uint32_t>(std::max<unsigned __int128>(1, static_cast<unsigned __int128>(f[i]) * M / S));
    sum += out[i];
    if (out[i] > out[big]) big = i;
  }
  int64_t diff = static_cast<int64_t>(M) - sum;
  if (diff >= 0) {
    out[big] += static_cast<uint32_t>(diff);
    return out;
  }
  // Symbols raised to 1 overfilled the table: take units back from the largest, one at a time.
  std::priority_queue<std::pair<uint32_t, std::size_t>> q;  // ties: the larger index first
  for (std::size_t i = 0; i < f.size(); ++i)
    if (out[i] > 1) q.push({out[i], i});
  for (; diff < 0; ++diff) {
    auto [v, i] = q.top();
    q.pop();
    out[i] = v - 1;
    if (v - 1 > 1) q.push({v - 1, i});
  }
  return out;
}

namespace {

// encode_body; `check`: first make sure every symbol has a frequency (a caller's table), which
// a table made from the symbols' own histogram (encode) needs not.
template <class T>
void encode_body_checked(const T* sym, uint64_t n, const std::vector<uint32_t>& freq, int L, uint64_t chunk,
                         int threads, Writer& w, T add, bool check) {
  if (chunk < 1) throw std::invalid_argument("chunk must be positive");
  std::vector<uint32_t> cum(freq.size() + 1, 0);
  for (std::size_t s = 0; s < freq.size(); ++s) cum[s + 1] = cum[s] + freq[s];
  w.uvarint(chunk);
  const std::vector<EncSym> enc = enc_table(freq, cum, L);
  if (n == 0) return;
  std::vector<uint32_t> fc(256, 0);  // byte symbols' freq | start << 16, for the vector encoder
  for (std::size_t s = 0; s < std::min<std::size_t>(256, freq.size()); ++s) fc[s] = freq[s] | cum[s] << 16;
  const std::size_t parts = (n - 1) / chunk + 1;
  // tasks of up to GROUP substreams, more where that would leave threads idle
  const std::size_t workers = static_cast<std::size_t>(threads > 0 ? threads : default_threads());
  const std::size_t tasks = std::max((parts + GROUP - 1) / GROUP, std::min(workers, parts));
  std::vector<std::vector<uint8_t>> bodies(parts);
  std::vector<int> bad(tasks, 0);
  parallel_for(tasks, threads, [&](std::size_t t) {
    const std::size_t first = t * parts / tasks, count = (t + 1) * parts / tasks - first;
    const uint64_t lo = first * chunk, hi = std::min<uint64_t>(n, (first + count) * chunk);
    for (uint64_t j = lo; check && j < hi; ++j) {
      const T v = static_cast<T>(sym[j] + add);
      if (v >= freq.size() || !freq[v]) {
        bad[t] = 1;
        return;
      }
    }
    encode_substreams(sym, n, chunk, first, count, enc.data(), fc.data(), L, add, bodies);
  });
  for (int b : bad)
    if (b) throw std::invalid_argument("a symbol the frequency table does not hold");
  for (auto& b : bodies) w.uvarint(b.size());
  for (auto& b : bodies) w.tail.push_back(std::move(b));  // copied once, by the caller, into its result
}

}  // namespace

template <class T>
void encode_body(const T* sym, uint64_t n, const std::vector<uint32_t>& freq, int L, uint64_t chunk,
                 int threads, Writer& w, T add) {
  encode_body_checked(sym, n, freq, L, chunk, threads, w, add, true);
}

template <class T>
void encode(const T* sym, uint64_t n, uint32_t nsym, uint64_t chunk, int threads, Writer& w, int max_bits, T add) {
  if (nsym < 1 || nsym > MAX_NSYM) throw std::invalid_argument("alphabet size must be 1..65536");
  if (chunk < 1) throw std::invalid_argument("chunk must be positive");
  w.uvarint(n);
  w.uvarint(nsym);
  if (n == 0) return;
  std::vector<uint64_t> counts = histogram(sym, n, nsym, threads, add);
  std::size_t present = 0, only = 0;
  for (uint32_t s = 0; s < nsym; ++s)
    if (counts[s]) ++present, only = s;
  if (present == 1) {
    w.byte(0);
    w.uvarint(only);
    return;
  }
  int L;
  std::vector<uint32_t> freq = normalise(counts, max_bits, &L);
  encode_table(sym, n, freq, L, chunk, threads, w, add);
}

template <class T>
void encode_table(const T* sym, uint64_t n, const std::vector<uint32_t>& freq, int L, uint64_t chunk, int threads,
                  Writer& w, T add) {
  const uint32_t nsym = static_cast<uint32_t>(freq.size());
  w.byte(static_cast<uint8_t>(L));
  for (uint32_t s = 0; s < nsym;) {
    if (freq[s]) {
      w.uvarint(freq[s++]);
      continue;
    }
    uint32_t run = 0;
    while (s + run < nsym && !freq[s + run]) ++run;
    w.uvarint(0);
    w.uvarint(run - 1);
    s += run;
  }
  encode_body_checked(sym, n, freq, L, chunk, threads, w, add, false);  // (normalise: each present symbol >= 1)
}

namespace {

std::vector<Entry, Uninit<Entry>> table_of(const std::vector<uint32_t>& freq, int L);

// The slot -> (symbol, frequency, slot - start) table; for 256 symbols or fewer also a
// slot -> symbol byte table plus per-symbol (frequency, start): 8x smaller, cache-resident.
void build_table(Parsed& p, const std::vector<uint32_t>& freq, int L) {
  p.table = table_of(freq, L);
  if (freq.size() <= 256) {
    p.sym8.resize(p.table.size());
    for (uint32_t s = 0, slot = 0; s < freq.size(); slot += freq[s++])  // (a run of each symbol's slots)
      std::memset(p.sym8.data() + slot, static_cast<int>(s), freq[s]);
    p.fc.assign(256, 0);
    uint32_t cum = 0;
    for (std::size_t s = 0; s < freq.size(); ++s) {
      p.fc[s] = freq[s] | cum << 16;  // freq < 2^16, cum < 2^16
      cum += freq[s];
    }
    if (L <= 12) {  // one 32-bit entry a slot: sym | bias << 8 | freq << 20
      p.packed.resize(p.table.size());
      for (std::size_t i = 0; i < p.table.size(); ++i) {
        const Entry& e = p.table[i];
        p.packed[i] = uint32_t(e.sym) | uint32_t(e.bias) << 8 | uint32_t(e.freq) << 20;
      }
    }
  }
}

// Every slot written (the frequencies sum to 2^L: the callers checked), so the table is not zeroed first.
std::vector<Entry, Uninit<Entry>> table_of(const std::vector<uint32_t>& freq, int L) {
  const uint32_t M = 1u << L;
  std::vector<Entry, Uninit<Entry>> table(M);
  static_assert(sizeof(Entry) == 8 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "an entry is freq | bias << 16 | sym << 32");
  uint32_t slot = 0;
  for (uint32_t s = 0; s < freq.size(); ++s) {  // (as 64-bit words: the compiler writes several a step)
    const uint32_t f = freq[s];  // (a local: the stores below may not alias it)
    const uint64_t first = uint64_t(f) | uint64_t(s) << 32;
    Entry* run = table.data() + slot;
    for (uint32_t k = 0; k < f; ++k) {
      const uint64_t e = first | uint64_t(k) << 16;  // (little-endian: freq, bias, sym, pad)
      std::memcpy(run + k, &e, sizeof e);
    }
    slot += f;
  }
  return table;
}

void read_body(Reader& r, Parsed& p) {
  p.chunk = r.uvarint(UINT64_MAX);
  if (p.chunk < 1) throw Corrupt("zero substream size");
  if (p.n == 0) return;
  uint64_t parts = (p.n - 1) / p.chunk + 1;
  if (parts > r.left()) throw Corrupt("more substreams than bytes");
  p.length.resize(parts);
  p.body.resize(parts);
  for (auto& len : p.length) len = static_cast<uint32_t>(r.uvarint(UINT32_MAX));
  for (uint64_t i = 0; i < parts; ++i) {
    uint64_t m = std::min<uint64_t>(p.chunk, p.n - i * p.chunk);
    if (p.length[i] < 4u * lanes(m) || p.length[i] % 2) throw Corrupt("substream of a bad length");
    p.body[i] = r.take(p.length[i]);
  }
}

}  // namespace

Parsed parse_body(Reader& r, uint64_t n, const std::vector<uint32_t>& freq, int L) {
  Parsed p;
  p.n = n;
  p.nsym = static_cast<uint32_t>(freq.size());
  p.L = L;
  uint64_t total = 0;
  for (uint32_t f : freq) {
    if (f >= (1u << L)) throw Corrupt("a frequency fills the whole table");
    total += f;
  }
  if (L < 1 || L > 16 || total != (1u << L)) throw Corrupt("frequencies do not sum to 2^L");
  build_table(p, freq, L);
  read_body(r, p);
  return p;
}

Parsed parse(Reader& r, uint64_t expected_n) {
  Parsed p;
  p.n = r.uvarint(UINT64_MAX);
  if (p.n != expected_n)
    throw Corrupt("holds " + std::to_string(p.n) + " symbols, expected " + std::to_string(expected_n));
  p.nsym = static_cast<uint32_t>(r.uvarint(MAX_NSYM));
  if (p.nsym < 1) throw Corrupt("empty alphabet");
  if (p.n == 0) return p;
  p.L = r.byte();
  if (p.L > 16) throw Corrupt("probability precision over 16 bits");
  if (p.L == 0) {
    p.constant = static_cast<uint32_t>(r.uvarint(p.nsym - 1));
    return p;
  }
  const uint32_t M = 1u << p.L;
  std::vector<uint32_t> freq(p.nsym, 0);
  uint64_t total = 0;
  for (uint32_t s = 0; s < p.nsym;) {
    uint64_t f = r.uvarint(M - 1);
    if (f == 0) {
      uint64_t run = r.uvarint(p.nsym) + 1;
      if (run > p.nsym - s) throw Corrupt("frequency table overruns its alphabet");
      s += static_cast<uint32_t>(run);
    } else {
      freq[s++] = static_cast<uint32_t>(f);
      total += f;
      if (total > M) throw Corrupt("frequencies exceed the precision");
    }
  }
  if (total != M) throw Corrupt("frequencies do not sum to 2^L");
  build_table(p, freq, p.L);
  read_body(r, p);
  return p;
}

Parsed parse_whole(Reader& r, uint64_t expected_n) {
  Parsed p = parse(r, expected_n);
  if (r.left()) throw Corrupt("bytes left after the stream");
  return p;
}

namespace {

// Byte symbols, 8 lanes: eight states in registers, the precision a constant, branch-free
// renormalisation and one 8-byte store a group. Returns the symbols decoded (whole groups,
// while enough words are left for a group to run unchecked).
template <int L>
uint64_t byte_groups_l(const Parsed& p, uint8_t* out, uint64_t m, uint32_t* x, const uint8_t*& qref,
                       const uint8_t* end) {
  const uint8_t* q = qref;  // a local: stores through `out` may not alias it
  const uint8_t* sym = p.sym8.data();
  const uint32_t* fc = p.fc.data();
  const uint32_t* pk = p.packed.data();
  const bool packed = L <= 12 && !p.packed.empty();
  constexpr uint32_t mask = (1u << L) - 1;
  uint32_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3], x4 = x[4], x5 = x[5], x6 = x[6], x7 = x[7];
  uint64_t j = 0;
  for (; j + LANES <= m && static_cast<std::size_t>(end - q) >= 2 * LANES; j += LANES) {
    uint64_t group = 0;
#define ZC_RANS_STEP(X, k)                                            \
  {                                                                   \
    uint32_t slot = X & mask, s, nx;                                  \
    if (packed) { /* one load: sym | bias << 8 | freq << 20 */        \
      uint32_t e = pk[slot];                                          \
      s = e & 0xff;                                                   \
      nx = (e >> 20) * (X >> L) + ((e >> 8) & 0xfff);                 \
    } else {                                                          \
      s = sym[slot];                                                  \
      uint32_t e = fc[s];                                             \
      nx = (e & 0xffff) * (X >> L) + slot - (e >> 16);                \
    }                                                                 \
    group |= uint64_t(s) << (8 * k);                                  \
    uint32_t r = nx < STATE_LO; /* arithmetic, not a branch */        \
    X = nx * (1 + r * 0xffffu) | (load16(q) & (0u - r));              \
    q += r << 1;                                                      \
  }
    ZC_RANS_STEP(x0, 0) ZC_RANS_STEP(x1, 1) ZC_RANS_STEP(x2, 2) ZC_RANS_STEP(x3, 3)
    ZC_RANS_STEP(x4, 4) ZC_RANS_STEP(x5, 5) ZC_RANS_STEP(x6, 6) ZC_RANS_STEP(x7, 7)
#undef ZC_RANS_STEP
    std::memcpy(out + j, &group, 8);
  }
  x[0] = x0, x[1] = x1, x[2] = x2, x[3] = x3, x[4] = x4, x[5] = x5, x[6] = x6, x[7] = x7;
  qref = q;
  return j;
}

template <int... Ls>
uint64_t byte_groups_any(std::integer_sequence<int, Ls...>, const Parsed& p, int L, uint8_t* out, uint64_t m,
                         uint32_t* x, const uint8_t*& q, const uint8_t* end) {
  uint64_t j = 0;
  ((L == Ls + 1 ? (j = byte_groups_l<Ls + 1>(p, out, m, x, q, end), 0) : 0), ...);
  return j;
}

uint64_t byte_groups(const Parsed& p, int L, uint8_t* out, uint64_t m, uint32_t* x, const uint8_t*& q,
                     const uint8_t* end) {
  return byte_groups_any(std::make_integer_sequence<int, 16>{}, p, L, out, m, x, q, end);
}

}  // namespace

template <class T>
void decode_substream(const Parsed& p, std::size_t i, T* out) {
  uint64_t lo = i * p.chunk, m = std::min<uint64_t>(p.chunk, p.n - lo);
  const uint8_t* q = p.body[i];
  const uint8_t* end = q + p.length[i];
  const int K = lanes(m);
  uint32_t x[LANES];
  for (int k = 0; k < K; ++k, q += 4) {
    x[k] = load32(q);
    if (x[k] < STATE_LO) throw Corrupt("bad rANS state");
  }
  const Entry* tab = p.table.data();
  const int L = p.L;
  const uint32_t mask = (1u << L) - 1;
  uint64_t j = 0;
  // Each symbol reads at most one word: whole groups run unchecked (and without branches)
  // while enough words are left.
  auto fast = [&](auto lookup) {
    for (; K == LANES && j + LANES <= m && static_cast<std::size_t>(end - q) >= 2 * LANES; j += LANES) {
      for (int k = 0; k < LANES; ++k) {
        uint32_t freq, bias;
        out[j + k] = static_cast<T>(lookup(x[k] & mask, &freq, &bias));
        uint32_t s = freq * (x[k] >> L) + bias;
        uint32_t r = s < STATE_LO;  // arithmetic, not a branch: renormalisation is unpredictable
        x[k] = (s << (r << 4)) | (load16(q) & (0u - r));
        q += r << 1;
      }
    }
  };
  if (!p.sym8.empty() && sizeof(T) == 1 && K == LANES) {
    j = byte_groups(p, L, reinterpret_cast<uint8_t*>(out), m, x, q, end);
  } else if (!p.sym8.empty()) {
    const uint8_t* sym = p.sym8.data();
    const uint32_t* fc = p.fc.data();
    fast([sym, fc](uint32_t slot, uint32_t* freq, uint32_t* bias) {
      uint32_t s = sym[slot], e = fc[s];
      *freq = e & 0xffff;
      *bias = slot - (e >> 16);
      return s;
    });
  } else {
    fast([tab](uint32_t slot, uint32_t* freq, uint32_t* bias) {
      const Entry e = tab[slot];
      *freq = e.freq;
      *bias = e.bias;
      return static_cast<uint32_t>(e.sym);
    });
  }
  for (; j < m; ++j) {
    uint32_t& s = x[j % K];
    const Entry e = tab[s & mask];
    out[j] = static_cast<T>(e.sym);
    s = e.freq * (s >> L) + e.bias;
    if (s < STATE_LO) {
      if (end - q < 2) throw Corrupt("substream ends early");
      s = (s << 16) | load16(q);
      q += 2;
    }
  }
  if (q != end) throw Corrupt("substream has bytes left over");
  for (int k = 0; k < K; ++k)
    if (x[k] != STATE_LO) throw Corrupt("substream does not end in the initial state");
}

template <class T>
void decode(const Parsed& p, T* out, int threads) {
  if (p.n == 0) return;
  if (p.L == 0) {
    std::fill(out, out + p.n, static_cast<T>(p.constant));
    return;
  }
  if constexpr (sizeof(T) == 1) {
    if (vector_ready(p)) {  // groups of substreams advanced together (rans_avx2.h), as many as the threads
      const std::size_t parts = p.body.size();
      const std::size_t workers = static_cast<std::size_t>(threads > 0 ? threads : default_threads());
      const std::size_t tasks = std::max((parts + DECODE_GROUP - 1) / DECODE_GROUP, std::min(workers, parts));
      parallel_for(tasks, threads, [&](std::size_t t) {
        const std::size_t first = t * parts / tasks, count = (t + 1) * parts / tasks - first;
        decode_group(p, first, count, out + first * p.chunk);
      });
      return;
    }
  }
  parallel_for(p.body.size(), threads, [&](std::size_t i) { decode_substream(p, i, out + i * p.chunk); });
}

template void encode<uint8_t>(const uint8_t*, uint64_t, uint32_t, uint64_t, int, Writer&, int, uint8_t);
template void encode<uint16_t>(const uint16_t*, uint64_t, uint32_t, uint64_t, int, Writer&, int, uint16_t);
template void encode_body<uint8_t>(const uint8_t*, uint64_t, const std::vector<uint32_t>&, int, uint64_t, int, Writer&,
                                   uint8_t);
template void encode_body<uint16_t>(const uint16_t*, uint64_t, const std::vector<uint32_t>&, int, uint64_t, int,
                                    Writer&, uint16_t);
template void encode_table<uint8_t>(const uint8_t*, uint64_t, const std::vector<uint32_t>&, int, uint64_t, int,
                                    Writer&, uint8_t);
template void encode_table<uint16_t>(const uint16_t*, uint64_t, const std::vector<uint32_t>&, int, uint64_t, int,
                                     Writer&, uint16_t);
template void decode_substream<uint8_t>(const Parsed&, std::size_t, uint8_t*);
template void decode_substream<uint16_t>(const Parsed&, std::size_t, uint16_t*);
template void decode<uint8_t>(const Parsed&, uint8_t*, int);
template void decode<uint16_t>(const Parsed&, uint16_t*, int);

}  // namespace zc::rans
