#include "quantize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include "pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ZC_AVX2 1
#endif

namespace zc::quant {

namespace {

constexpr std::size_t BLOCK = 128;      // NumPy's PW_BLOCKSIZE: 8 accumulators below it
constexpr std::size_t TASK = 1 << 15;   // subtrees of the summation tree run as one task
// The AVX2 copies below run where the CPU has it, unless ZOOCODEC_NO_AVX2 is set (tests compare the two).
#if defined(__x86_64__)
const bool has_avx2 = __builtin_cpu_supports("avx2") && !std::getenv("ZOOCODEC_NO_AVX2");
#else
const bool has_avx2 = false;
#endif

inline double value(uint32_t bits, Kind) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline double value(uint16_t bits, Kind) {
  uint32_t b = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t narrow(double r, uint32_t*) {  // NumPy's astype(float32): nearest-even
  float f = static_cast<float>(r);
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
inline uint16_t narrow(double r, uint16_t*) {  // from_float64: float32, then nearest-even on the bits
  float f = static_cast<float>(r);
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

// rint for |v| < 2^51 (symbols fit int32), inline: adding and taking back 1.5 * 2^52 rounds
// to the nearest integer, ties to even, as rint does (a libm call per weight otherwise).
inline double round_even(double v) {
  constexpr double MAGIC = 6755399441055744.0;
  return (v + MAGIC) - MAGIC;  // IEEE double on x86-64 (SSE2); never built with -ffast-math
}

// NumPy's pairwise sum of a block of at most BLOCK values (loops_utils.h: 8 accumulators).
__attribute__((always_inline)) inline double block_sum(const double* v, std::size_t n) {
  if (n < 8) {
    double res = 0.;
    for (std::size_t i = 0; i < n; ++i) res += v[i];
    return res;
  }
  double r[8];
  for (int j = 0; j < 8; ++j) r[j] = v[j];
  std::size_t i = 8;
  for (; i < n - (n % 8); i += 8)
    for (int j = 0; j < 8; ++j) r[j] += v[i + j];
  double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) res += v[i];
  return res;
}

struct Sums {
  double err2 = 0, power = 0, max_err = 0;
};

inline std::size_t half(std::size_t n) {
  std::size_t n2 = n / 2;
  return n2 - n2 % 8;
}

// The pairwise tree over [lo, lo + n); `leaf(lo, n)` sums a leaf of at most BLOCK values.
template <class Leaf>
Sums tree(std::size_t lo, std::size_t n, Leaf& leaf) {
  if (n <= BLOCK) return leaf(lo, n);
  std::size_t n2 = half(n);
  Sums a = tree(lo, n2, leaf), b = tree(lo + n2, n - n2, leaf);
  return {a.err2 + b.err2, a.power + b.power, std::max(a.max_err, b.max_err)};
}

// The same tree cut into subtrees of at most TASK values (in order), run on the pool.
void tasks(std::size_t lo, std::size_t n, std::vector<std::pair<std::size_t, std::size_t>>& out) {
  if (n <= TASK) {
    out.emplace_back(lo, n);
    return;
  }
  std::size_t n2 = half(n);
  tasks(lo, n2, out);
  tasks(lo + n2, n - n2, out);
}

Sums combine(std::size_t n, const std::vector<Sums>& leaf, std::size_t& at) {
  if (n <= TASK) return leaf[at++];
  std::size_t n2 = half(n);
  Sums a = combine(n2, leaf, at), b = combine(n - n2, leaf, at);
  return {a.err2 + b.err2, a.power + b.power, std::max(a.max_err, b.max_err)};
}

// The statistics over n values, subtrees on the pool; `leaf(lo, n)` returns a leaf's Sums.
template <class Leaf>
Stats run_leaves(std::size_t n, int threads, Leaf leaf) {
  Stats out;
  if (n == 0) return out;
  std::vector<std::pair<std::size_t, std::size_t>> parts;
  tasks(0, n, parts);
  std::vector<Sums> sums(parts.size());
  parallel_for(parts.size(), threads, [&](std::size_t i) {
    Leaf l = leaf;
    sums[i] = tree(parts[i].first, parts[i].second, l);
  });
  std::size_t at = 0;
  Sums s = combine(n, sums, at);
  out.err2 = 0.0 + s.err2;  // np.add.reduce starts from its identity
  out.power = 0.0 + s.power;
  out.max_err = s.max_err;
  return out;
}

// run_leaves over leaves whose `block(lo, n, e2, x2)` fills the squares and returns the largest |error|.
template <class Block>
Stats run(std::size_t n, int threads, Block block) {
  return run_leaves(n, threads, [block](std::size_t lo, std::size_t count) {
    double e2[BLOCK], x2[BLOCK];
    Block b = block;
    const double m = b(lo, count, e2, x2);
    return Sums{block_sum(e2, count), block_sum(x2, count), m};
  });
}

}  // namespace

namespace {

// max of a row's bits with the sign cleared; unsigned max of 16/32-bit lanes is an SSE4.1 /
// AVX2 instruction, so the AVX2 copy runs where the CPU has it (the same maximum).
template <class W>
__attribute__((always_inline)) inline W row_absmax(const W* __restrict row, std::size_t cols) {
  const W mask = static_cast<W>(std::numeric_limits<W>::max() >> 1);  // every bit but the sign
  W top = 0;
  for (std::size_t c = 0; c < cols; ++c) top = std::max<W>(top, row[c] & mask);
  return top;
}

template <class W>
__attribute__((target("avx2"))) W row_absmax_avx2(const W* row, std::size_t cols) {
  return row_absmax(row, cols);
}

template <class W>
W row_absmax_plain(const W* row, std::size_t cols) {
  return row_absmax(row, cols);
}

}  // namespace

template <class W>
void absmax_rows(const W* w, std::size_t rows, std::size_t cols, W* out, int threads) {
  auto* of = has_avx2 ? &row_absmax_avx2<W> : &row_absmax_plain<W>;
  const std::size_t per = std::max<std::size_t>(1, (1 << 16) / std::max<std::size_t>(cols, 1));
  parallel_for((rows + per - 1) / per, threads, [&](std::size_t t) {
    for (std::size_t r = t * per; r < std::min(rows, (t + 1) * per); ++r) out[r] = of(w + r * cols, cols);
  });
}

template <class W>
bool all_finite(const W* w, std::size_t n, int threads) {
  const W exp = sizeof(W) == 4 ? W(0x7F800000u) : W(0x7F80u);
  const std::size_t parts = (n + TASK * 8 - 1) / (TASK * 8);
  std::vector<char> bad(parts, 0);
  parallel_for(parts, threads, [&](std::size_t t) {
    const std::size_t lo = t * TASK * 8, hi = std::min(n, lo + TASK * 8);
    W any = 0;  // branch-free: a flag per part
    for (std::size_t i = lo; i < hi; ++i) any |= W((w[i] & exp) == exp);
    bad[t] = any != 0;
  });
  return std::find(bad.begin(), bad.end(), 1) == bad.end();
}

namespace {

// One leaf of at most BLOCK values: symbols, the reconstruction (when wanted) and the leaf's
// sums, NumPy's pairwise block sum (8 accumulators over whole groups of 8, combined as a tree,
// then the rest added in order: block_sum) computed on the way, in registers. Each value is the
// same IEEE operations as the NumPy path (x / step, rint, symbol * step, the cast back), so the
// symbols, the reconstruction and the sums are NumPy's bit for bit. No FMA is enabled (an
// a * b + c must round twice, as NumPy's does).
// One run of values under one step (a row's part of a leaf): no branch and no reduction, so
// the compiler vectorises it; the division, rounding and conversions are the same IEEE
// operations lane by lane. recon is written always (a scratch block when not wanted).
template <class W, class S>
__attribute__((always_inline)) inline void uniform_run(const W* __restrict w, std::size_t count, Kind kind,
                                                      double step, S* __restrict symbols, W* __restrict recon,
                                                      double* __restrict e2, double* __restrict x2,
                                                      double* __restrict err) {
  for (std::size_t k = 0; k < count; ++k) {
    const double x = value(w[k], kind);
    const S sym = static_cast<S>(round_even(x / step));
    symbols[k] = sym;
    const W r = narrow(static_cast<double>(sym) * step, static_cast<W*>(nullptr));  // from the integer: no -0
    recon[k] = r;
    const double e = x - value(r, kind);
    e2[k] = e * e;
    x2[k] = x * x;
    err[k] = std::fabs(e);
  }
}

// One leaf of at most BLOCK values: its runs, then its sums (block_sum, as NumPy) and its largest
// |error| (8 lanes at a time: a maximum in any order is the same), all in one function, so the
// AVX2 copy vectorises every part of it.
template <class W, class S>
__attribute__((always_inline)) inline Sums uniform_leaf(const W* w, std::size_t lo, std::size_t count, Kind kind,
                                                        const double* steps, std::size_t nsteps, std::size_t cols,
                                                        S* symbols, W* recon) {
  double e2[BLOCK], x2[BLOCK], err[BLOCK];
  W scratch[BLOCK];
  for (std::size_t k = 0; k < count;) {  // a run per row the leaf touches
    const std::size_t i = lo + k;
    const std::size_t len = nsteps > 1 ? std::min(count - k, cols - i % cols) : count - k;
    uniform_run(w + i, len, kind, steps[nsteps > 1 ? i / cols : 0], symbols + i, recon ? recon + i : scratch + k,
                e2 + k, x2 + k, err + k);
    k += len;
  }
  double m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t k = 0;
  for (; k + 8 <= count; k += 8)
    for (int j = 0; j < 8; ++j) m[j] = m[j] < err[k + j] ? err[k + j] : m[j];
  double top = 0;
  for (; k < count; ++k) top = std::max(top, err[k]);
  for (int j = 0; j < 8; ++j) top = std::max(top, m[j]);
  return {block_sum(e2, count), block_sum(x2, count), top};
}

#ifdef ZC_AVX2
// 4 values as doubles: float32 bits, or bfloat16 bits (the top half of a float32).
template <class W>
__attribute__((target("avx2"))) inline __m256d load4(const W* w) {
  if constexpr (sizeof(W) == 4) {
    return _mm256_cvtps_pd(_mm_loadu_ps(reinterpret_cast<const float*>(w)));
  } else {
    uint64_t b;
    std::memcpy(&b, w, 8);
    const __m128i x = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_cvtsi64_si128(static_cast<long long>(b))), 16);
    return _mm256_cvtps_pd(_mm_castsi128_ps(x));
  }
}

// uniform_value of 4 values under steps `st`: symbols as int32, the reconstruction's bits in
// 32-bit lanes, and e^2, x^2, |e| as doubles (the same IEEE operations, lane by lane).
template <class W>
__attribute__((target("avx2"))) inline void uniform4(const W* w, __m256d st, __m128i* sym, __m128i* back, __m256d* e2,
                                                     __m256d* x2, __m256d* err) {
  const __m256d x = load4(w);
  const __m256d magic = _mm256_set1_pd(6755399441055744.0);
  const __m256d q = _mm256_sub_pd(_mm256_add_pd(_mm256_div_pd(x, st), magic), magic);  // round_even
  const __m128i k = _mm256_cvttpd_epi32(q);  // (an integer already)
  *sym = k;
  const __m128 rf = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(k), st));  // from the integer: no -0
  __m256d r;
  if constexpr (sizeof(W) == 4) {
    *back = _mm_castps_si128(rf);
    r = _mm256_cvtps_pd(rf);
  } else {  // nearest-even to the top 16 bits, as narrow()
    const __m128i b = _mm_castps_si128(rf);
    const __m128i top = _mm_srli_epi32(
        _mm_add_epi32(_mm_add_epi32(b, _mm_set1_epi32(0x7FFF)), _mm_and_si128(_mm_srli_epi32(b, 16), _mm_set1_epi32(1))),
        16);
    *back = top;
    r = _mm256_cvtps_pd(_mm_castsi128_ps(_mm_slli_epi32(top, 16)));
  }
  const __m256d e = _mm256_sub_pd(x, r);
  *e2 = _mm256_mul_pd(e, e);
  *x2 = _mm256_mul_pd(x, x);
  *err = _mm256_andnot_pd(_mm256_set1_pd(-0.0), e);
}

template <class S>
__attribute__((target("avx2"))) inline void store_symbols8(S* out, __m128i a, __m128i b) {
  if constexpr (sizeof(S) == 4) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4), b);
  } else if constexpr (sizeof(S) == 2) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_packs_epi32(a, b));
  } else {
    const __m128i h = _mm_packs_epi32(a, b);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(h, h));
  }
}

template <class W>
__attribute__((target("avx2"))) inline void store_recon8(W* out, __m128i a, __m128i b) {
  if constexpr (sizeof(W) == 4) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4), b);
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_packus_epi32(a, b));  // (each below 2^16)
  }
}

// uniform_leaf in AVX2 vectors: groups of 8 values as two vectors of 4, their squares added into
// NumPy's 8 block_sum accumulators (position mod 8 of the leaf) and their largest |error| kept
// lane by lane; the last count mod 8 values one at a time, added in order, as block_sum does.
// The symbols fit S (the caller chose it from the largest), so the saturating packs never saturate.
template <class W, class S>
__attribute__((target("avx2"))) Sums uniform_leaf_avx2(const W* w, std::size_t lo, std::size_t count, Kind kind,
                                                       const double* steps, std::size_t nsteps, std::size_t cols,
                                                       S* symbols, W* recon) {
  __m256d a2lo = _mm256_setzero_pd(), a2hi = a2lo, axlo = a2lo, axhi = a2lo, mlo = a2lo, mhi = a2lo;
  std::size_t k = 0;
  for (; k + 8 <= count; k += 8) {
    const std::size_t i = lo + k;
    __m256d slo, shi;
    if (nsteps == 1 || i / cols == (i + 7) / cols) {
      slo = shi = _mm256_set1_pd(steps[nsteps > 1 ? i / cols : 0]);
    } else {
      slo = _mm256_setr_pd(steps[i / cols], steps[(i + 1) / cols], steps[(i + 2) / cols], steps[(i + 3) / cols]);
      shi = _mm256_setr_pd(steps[(i + 4) / cols], steps[(i + 5) / cols], steps[(i + 6) / cols], steps[(i + 7) / cols]);
    }
    __m128i s0, s1, b0, b1;
    __m256d e0, e1, x0, x1, r0, r1;
    uniform4(w + i, slo, &s0, &b0, &e0, &x0, &r0);
    uniform4(w + i + 4, shi, &s1, &b1, &e1, &x1, &r1);
    store_symbols8(symbols + i, s0, s1);
    if (recon) store_recon8(recon + i, b0, b1);
    a2lo = _mm256_add_pd(a2lo, e0), a2hi = _mm256_add_pd(a2hi, e1);  // (0 + v is v, as block_sum's first group)
    axlo = _mm256_add_pd(axlo, x0), axhi = _mm256_add_pd(axhi, x1);
    mlo = _mm256_max_pd(mlo, r0), mhi = _mm256_max_pd(mhi, r1);  // (a maximum in any order is the same)
  }
  alignas(32) double a[8], x[8], m[8];
  _mm256_store_pd(a, a2lo), _mm256_store_pd(a + 4, a2hi);
  _mm256_store_pd(x, axlo), _mm256_store_pd(x + 4, axhi);
  _mm256_store_pd(m, mlo), _mm256_store_pd(m + 4, mhi);
  Sums out{((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])),
           ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7])), 0.0};
  for (int j = 0; j < 8; ++j) out.max_err = std::max(out.max_err, m[j]);
  if (k < count) {
    double e2[8], x2[8], err[8];
    W scratch[8];
    for (std::size_t t = k; t < count;) {
      const std::size_t i = lo + t;
      const std::size_t len = nsteps > 1 ? std::min(count - t, cols - i % cols) : count - t;
      uniform_run(w + i, len, kind, steps[nsteps > 1 ? i / cols : 0], symbols + i, recon ? recon + i : scratch + t - k,
                  e2 + t - k, x2 + t - k, err + t - k);
      t += len;
    }
    for (std::size_t t = 0; t < count - k; ++t) {
      out.err2 += e2[t];
      out.power += x2[t];
      out.max_err = std::max(out.max_err, err[t]);
    }
  }
  return out;
}
#else
template <class W, class S>
Sums uniform_leaf_avx2(const W*, std::size_t, std::size_t, Kind, const double*, std::size_t, std::size_t, S*, W*) {
  return {};  // never called: has_avx2 is false
}
#endif

template <class W, class S>
Sums uniform_leaf_plain(const W* w, std::size_t lo, std::size_t count, Kind kind, const double* steps,
                        std::size_t nsteps, std::size_t cols, S* symbols, W* recon) {
  return uniform_leaf(w, lo, count, kind, steps, nsteps, cols, symbols, recon);
}

}  // namespace

template <class W, class S>
Stats uniform(const W* w, std::size_t n, Kind kind, const double* steps, std::size_t nsteps, std::size_t cols,
              S* symbols, W* recon, int threads) {
  auto* leaf = has_avx2 ? &uniform_leaf_avx2<W, S> : &uniform_leaf_plain<W, S>;
  return run_leaves(n, threads, [=](std::size_t lo, std::size_t count) {
    return leaf(w, lo, count, kind, steps, nsteps, cols, symbols, recon);
  });
}

template <class W>
void group_ranges(const W* w, std::size_t rows, std::size_t cols, Kind kind, std::size_t group, double* lo,
                  double* hi, int threads) {
  const std::size_t ng = (cols + group - 1) / group;
  const std::size_t per = std::max<std::size_t>(1, (1 << 16) / std::max<std::size_t>(cols, 1));
  parallel_for((rows + per - 1) / per, threads, [&](std::size_t t) {
    for (std::size_t r = t * per; r < std::min(rows, (t + 1) * per); ++r) {
      for (std::size_t g = 0; g < ng; ++g) {
        const std::size_t c0 = g * group, c1 = std::min(cols, c0 + group);
        double a = value(w[r * cols + c0], kind), b = a;
        for (std::size_t c = c0 + 1; c < c1; ++c) {
          const double x = value(w[r * cols + c], kind);
          a = std::min(a, x);
          b = std::max(b, x);
        }
        lo[r * ng + g] = a;
        hi[r * ng + g] = b;
      }
    }
  });
}

template <class W, class S>
Stats uniform_groups(const W* w, std::size_t rows, std::size_t cols, Kind kind, std::size_t group,
                     const double* steps, std::size_t nsteps, const double* zeros, S* symbols, W* recon, int threads) {
  const std::size_t ng = (cols + group - 1) / group;
  return run(rows * cols, threads, [=](std::size_t lo, std::size_t count, double* e2, double* x2) {
    std::size_t row = lo / cols, col = lo % cols, gi = col / group, within = col % group;
    double m = 0;
    for (std::size_t k = 0; k < count; ++k) {
      const std::size_t i = lo + k, at = row * ng + gi;
      const double step = steps[nsteps > 1 ? at : 0];
      const double x = value(w[i], kind);
      const double q = round_even((zeros ? x - zeros[at] : x) / step);  // kernels/uniform.quantize_groups
      const S sym = static_cast<S>(q);
      symbols[i] = sym;
      const double back = static_cast<double>(sym) * step;
      const W r = narrow(zeros ? back + zeros[at] : back, static_cast<W*>(nullptr));
      if (recon) recon[i] = r;
      const double e = x - value(r, kind);
      e2[k] = e * e;
      x2[k] = x * x;
      m = std::max(m, std::fabs(e));
      if (++within == group) {
        within = 0;
        ++gi;
      }
      if (++col == cols) {
        col = within = gi = 0;
        ++row;
      }
    }
    return m;
  });
}

template <class W>
Stats error_stats(const W* w, const W* recon, std::size_t n, Kind kind, int threads) {
  return run(n, threads, [=](std::size_t lo, std::size_t count, double* e2, double* x2) {
    double m = 0;
    for (std::size_t k = 0; k < count; ++k) {
      const double x = value(w[lo + k], kind), e = x - value(recon[lo + k], kind);
      e2[k] = e * e;
      x2[k] = x * x;
      m = std::max(m, std::fabs(e));
    }
    return m;
  });
}

template void absmax_rows<uint16_t>(const uint16_t*, std::size_t, std::size_t, uint16_t*, int);
template void absmax_rows<uint32_t>(const uint32_t*, std::size_t, std::size_t, uint32_t*, int);
template bool all_finite<uint16_t>(const uint16_t*, std::size_t, int);
template bool all_finite<uint32_t>(const uint32_t*, std::size_t, int);
template Stats error_stats<uint16_t>(const uint16_t*, const uint16_t*, std::size_t, Kind, int);
template Stats error_stats<uint32_t>(const uint32_t*, const uint32_t*, std::size_t, Kind, int);
template void group_ranges<uint16_t>(const uint16_t*, std::size_t, std::size_t, Kind, std::size_t, double*, double*,
                                     int);
template void group_ranges<uint32_t>(const uint32_t*, std::size_t, std::size_t, Kind, std::size_t, double*, double*,
                                     int);
#define ZC_UNIFORM(W, S)                                                                                    \
  template Stats uniform<W, S>(const W*, std::size_t, Kind, const double*, std::size_t, std::size_t, S*, W*, \
                               int);                                                                       \
  template Stats uniform_groups<W, S>(const W*, std::size_t, std::size_t, Kind, std::size_t, const double*, \
                                      std::size_t, const double*, S*, W*, int);
ZC_UNIFORM(uint16_t, int8_t)
ZC_UNIFORM(uint16_t, int16_t)
ZC_UNIFORM(uint16_t, int32_t)
ZC_UNIFORM(uint32_t, int8_t)
ZC_UNIFORM(uint32_t, int16_t)
ZC_UNIFORM(uint32_t, int32_t)
#undef ZC_UNIFORM

namespace {

constexpr std::size_t SIDE_PART = std::size_t(1) << 16;  // groups a task takes

template <class Fn>
void side_parts(std::size_t n, int threads, Fn fn) {
  parallel_for((n + SIDE_PART - 1) / SIDE_PART, threads,
               [&](std::size_t p) { fn(p * SIDE_PART, std::min(n, (p + 1) * SIDE_PART)); });
}

}  // namespace

void side_steps(const int64_t* codes, std::size_t n, int mant, double* steps, int threads) {
  side_parts(n, threads, [&](std::size_t a, std::size_t b) {
    for (std::size_t i = a; i < b; ++i) steps[i] = side_step(codes[i], mant);
  });
}

void side_zeros(const int64_t* centres, const double* steps, std::size_t n, int bits, int frac, double* zeros,
                int threads) {
  const ZeroGrid zero(bits, frac);
  side_parts(n, threads, [&](std::size_t a, std::size_t b) {
    for (std::size_t i = a; i < b; ++i) zeros[i] = zero(centres[i], steps[i]);
  });
}

bool side_values(const int64_t* codes, const int64_t* centres, std::size_t n, int mant, int bits,
                 int64_t max_exponent, double* steps, double* zeros, int threads) {
  const SideValues side(mant, bits, max_exponent);
  std::atomic<bool> ok{true};
  side_parts(n, threads, [&](std::size_t a, std::size_t b) {
    bool fine = true;
    for (std::size_t i = a; i < b; ++i) fine &= side(codes[i], centres[i], steps + i, zeros + i);
    if (!fine) ok = false;
  });
  return ok;
}

bool side_range(const void* codes, int code_bytes, const void* centres, int centre_bytes, std::size_t n, int mant,
                int bits, int64_t max_exponent, double* largest_step, double* largest_zero, int threads) {
  const SideValues side(mant, bits, max_exponent);
  std::atomic<bool> ok{true};
  std::mutex held;
  *largest_step = *largest_zero = 0.0;
  side_parts(n, threads, [&](std::size_t a, std::size_t b) {
    bool fine = true;
    double top_step = 0.0, top_zero = 0.0, step, zero;
    for (std::size_t i = a; i < b; ++i) {
      fine &= side(int_at(codes, code_bytes, i), int_at(centres, centre_bytes, i), &step, &zero);
      top_step = std::max(top_step, step);
      top_zero = std::max(top_zero, std::abs(zero));
    }
    if (!fine) ok = false;
    const std::lock_guard<std::mutex> lock(held);
    *largest_step = std::max(*largest_step, top_step);
    *largest_zero = std::max(*largest_zero, top_zero);
  });
  return ok;
}

namespace {

constexpr double COUNT_LIMIT = 2251799813685248.0;  // 2^51: round_even's range

// The run of one step that weight a starts, within [a, b): its end and step (a row of `cols` weights:
// steps[row], or steps[0]). Every pass below walks w[a, b) run by run.
struct Run {
  std::size_t end;
  double step;
};
inline Run run_at(std::size_t a, std::size_t b, const double* steps, std::size_t nsteps, std::size_t cols) {
  const std::size_t row = a / cols;
  return {std::min(b, (row + 1) * cols), steps[nsteps == 1 ? 0 : row]};
}

// fn(level) for each weight of w[a, b).
template <class Fn>
void rounded_runs(const double* w, std::size_t a, std::size_t b, const double* steps, std::size_t nsteps,
                  std::size_t cols, Fn fn) {
  while (a < b) {
    const Run run = run_at(a, b, steps, nsteps, cols);
    for (; a < run.end; ++a) fn(round_even(w[a] / run.step));
  }
}

#ifdef ZC_AVX2
// round_even(w[i] / step) for 4 weights: the same division and rounding, lane by lane.
__attribute__((target("avx2"))) inline __m256d rounded4(const double* w, __m256d step) {
  const __m256d magic = _mm256_set1_pd(6755399441055744.0);
  return _mm256_sub_pd(_mm256_add_pd(_mm256_div_pd(_mm256_loadu_pd(w), step), magic), magic);
}

// Pass 1 on AVX2: the least and greatest level of w[a, b), and whether every |level| < COUNT_LIMIT.
__attribute__((target("avx2"))) void level_range4(const double* w, std::size_t a, std::size_t b, const double* steps,
                                                  std::size_t nsteps, std::size_t cols, double* low, double* high,
                                                  bool* fine) {
  const __m256d limit = _mm256_set1_pd(COUNT_LIMIT), sign = _mm256_set1_pd(-0.0);
  __m256d lo4 = _mm256_set1_pd(COUNT_LIMIT), hi4 = _mm256_set1_pd(-COUNT_LIMIT);
  __m256d ok4 = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
  double lo = COUNT_LIMIT, hi = -COUNT_LIMIT;
  bool ok = true;
  while (a < b) {
    const Run run = run_at(a, b, steps, nsteps, cols);
    const __m256d st = _mm256_set1_pd(run.step);
    for (; a + 4 <= run.end; a += 4) {
      const __m256d q = rounded4(w + a, st);
      ok4 = _mm256_and_pd(ok4, _mm256_cmp_pd(_mm256_andnot_pd(sign, q), limit, _CMP_LT_OQ));  // (false for NaN)
      lo4 = _mm256_min_pd(lo4, q);
      hi4 = _mm256_max_pd(hi4, q);
    }
    for (; a < run.end; ++a) {
      const double q = round_even(w[a] / run.step);
      ok &= std::fabs(q) < COUNT_LIMIT;
      lo = std::min(lo, q);
      hi = std::max(hi, q);
    }
  }
  alignas(32) double l[4], h[4];
  _mm256_store_pd(l, lo4);
  _mm256_store_pd(h, hi4);
  for (int k = 0; k < 4; ++k) lo = std::min(lo, l[k]), hi = std::max(hi, h[k]);
  *low = lo, *high = hi, *fine = ok && _mm256_movemask_pd(ok4) == 0xf;
}

// Pass 2 on AVX2: ++counts[level - base] for w[a, b) (every level within the range pass 1 found).
__attribute__((target("avx2"))) void count_levels4(const double* w, std::size_t a, std::size_t b, const double* steps,
                                                   std::size_t nsteps, std::size_t cols, double base, int64_t* counts) {
  const __m256d lo = _mm256_set1_pd(base);
  alignas(16) int32_t k[4];
  while (a < b) {
    const Run run = run_at(a, b, steps, nsteps, cols);
    const __m256d st = _mm256_set1_pd(run.step);
    for (; a + 4 <= run.end; a += 4) {
      _mm_store_si128(reinterpret_cast<__m128i*>(k), _mm256_cvttpd_epi32(_mm256_sub_pd(rounded4(w + a, st), lo)));
      ++counts[k[0]], ++counts[k[1]], ++counts[k[2]], ++counts[k[3]];
    }
    for (; a < run.end; ++a) ++counts[static_cast<std::size_t>(round_even(w[a] / run.step) - base)];
  }
}
#endif

}  // namespace

bool rounded_counts(const double* w, std::size_t n, const double* steps, std::size_t nsteps, std::size_t cols,
                    std::size_t max_size, int64_t* lo, std::vector<int64_t>* counts, int threads) {
  if (n == 0 || cols == 0 || n % cols) return false;
  // parts of the flat weights (a single step's tensor is one row: its parts split it too)
  const std::size_t parts = std::max<std::size_t>(1, std::min<std::size_t>(
                                                         (n + 65535) / 65536, 4 * static_cast<std::size_t>(
                                                                                  threads > 0 ? threads : default_threads())));
  auto from = [&](std::size_t p) { return p * n / parts; };
  std::vector<double> low(parts, COUNT_LIMIT), high(parts, -COUNT_LIMIT);
  std::vector<char> fine(parts, 1);
  parallel_for(parts, threads, [&](std::size_t p) {
#ifdef ZC_AVX2
    if (has_avx2) {
      bool ok;
      level_range4(w, from(p), from(p + 1), steps, nsteps, cols, &low[p], &high[p], &ok);
      fine[p] = ok;
      return;
    }
#endif
    double a = COUNT_LIMIT, b = -COUNT_LIMIT;
    bool ok = true;
    rounded_runs(w, from(p), from(p + 1), steps, nsteps, cols, [&](double q) {
      ok &= std::fabs(q) < COUNT_LIMIT;  // (false for NaN)
      a = std::min(a, q);
      b = std::max(b, q);
    });
    low[p] = a, high[p] = b, fine[p] = ok;
  });
  if (std::count(fine.begin(), fine.end(), 0)) return false;
  const double a = *std::min_element(low.begin(), low.end()), b = *std::max_element(high.begin(), high.end());
  if (b - a + 1 > static_cast<double>(max_size)) return false;
  const std::size_t size = static_cast<std::size_t>(b - a) + 1;
  *lo = static_cast<int64_t>(a);
  std::vector<std::vector<int64_t>> part_counts(parts);
  parallel_for(parts, threads, [&](std::size_t p) {
    std::vector<int64_t>& c = part_counts[p];
    c.assign(size, 0);
#ifdef ZC_AVX2
    if (has_avx2) {
      count_levels4(w, from(p), from(p + 1), steps, nsteps, cols, a, c.data());
      return;
    }
#endif
    rounded_runs(w, from(p), from(p + 1), steps, nsteps, cols, [&](double q) { ++c[static_cast<std::size_t>(q - a)]; });
  });
  counts->assign(size, 0);
  for (const auto& c : part_counts)
    for (std::size_t k = 0; k < size; ++k) (*counts)[k] += c[k];
  return true;
}

}  // namespace zc::quant
