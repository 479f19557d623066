#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "pool.h"

namespace zc::quant {

namespace {

constexpr std::size_t BLOCK = 128;      // NumPy's PW_BLOCKSIZE: 8 accumulators below it
constexpr std::size_t TASK = 1 << 15;   // subtrees of the summation tree run as one task
// The AVX2 copies below run where the CPU has it, unless ZOOCODEC_NO_AVX2 is set (tests compare the two).
const bool has_avx2 = __builtin_cpu_supports("avx2") && !std::getenv("ZOOCODEC_NO_AVX2");

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
inline double block_sum(const double* v, std::size_t n) {
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

// The pairwise tree over [lo, lo + n); `block(lo, n, e2, x2)` fills the squares of a leaf.
template <class Block>
Sums tree(std::size_t lo, std::size_t n, Block& block) {
  if (n <= BLOCK) {
    double e2[BLOCK], x2[BLOCK];
    double m = block(lo, n, e2, x2);
    return {block_sum(e2, n), block_sum(x2, n), m};
  }
  std::size_t n2 = half(n);
  Sums a = tree(lo, n2, block), b = tree(lo + n2, n - n2, block);
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

template <class Block>
Stats run(std::size_t n, int threads, Block block) {
  Stats out;
  if (n == 0) return out;
  std::vector<std::pair<std::size_t, std::size_t>> parts;
  tasks(0, n, parts);
  std::vector<Sums> leaf(parts.size());
  parallel_for(parts.size(), threads, [&](std::size_t i) {
    Block b = block;
    leaf[i] = tree(parts[i].first, parts[i].second, b);
  });
  std::size_t at = 0;
  Sums s = combine(n, leaf, at);
  out.err2 = 0.0 + s.err2;  // np.add.reduce starts from its identity
  out.power = 0.0 + s.power;
  out.max_err = s.max_err;
  return out;
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

template <class W, class S>
__attribute__((target("avx2"))) void uniform_run_avx2(const W* w, std::size_t count, Kind kind, double step,
                                                      S* symbols, W* recon, double* e2, double* x2, double* err) {
  uniform_run(w, count, kind, step, symbols, recon, e2, x2, err);  // (no FMA: results stay NumPy's)
}

template <class W, class S>
void uniform_run_plain(const W* w, std::size_t count, Kind kind, double step, S* symbols, W* recon, double* e2,
                       double* x2, double* err) {
  uniform_run(w, count, kind, step, symbols, recon, e2, x2, err);
}

}  // namespace

template <class W, class S>
Stats uniform(const W* w, std::size_t n, Kind kind, const double* steps, std::size_t nsteps, std::size_t cols,
              S* symbols, W* recon, int threads) {
  auto* leaf = has_avx2 ? &uniform_run_avx2<W, S> : &uniform_run_plain<W, S>;
  return run(n, threads, [=](std::size_t lo, std::size_t count, double* e2, double* x2) {
    double err[BLOCK];
    W scratch[BLOCK];
    for (std::size_t k = 0; k < count;) {  // a run per row the leaf touches
      const std::size_t i = lo + k;
      const std::size_t len = nsteps > 1 ? std::min(count - k, cols - i % cols) : count - k;
      leaf(w + i, len, kind, steps[nsteps > 1 ? i / cols : 0], symbols + i, recon ? recon + i : scratch + k, e2 + k,
           x2 + k, err + k);
      k += len;
    }
    double m = 0;
    for (std::size_t k = 0; k < count; ++k) m = std::max(m, err[k]);
    return m;
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

}  // namespace zc::quant
