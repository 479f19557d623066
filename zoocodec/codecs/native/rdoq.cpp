// Rate-distortion decisions (rdoq.h): rdoq.cu's rdoq_decide and dq_trellis_1/_4, one row (or one block
// of values) a task. Compiled with -ffp-contract=off (CMakeLists.txt): every product and sum rounds as
// NumPy's and the kernels' do. Conversions of doubles to integers give what NumPy's casts give on
// x86-64 (the lowest integer for NaN and out-of-range values), so the levels are NumPy's where the
// GPU's saturate (kernels/rdoq.py's docstring).
#include "rdoq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "numpy_cast.h"
#include "pool.h"
#include "rans_avx2.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ZC_RDOQ_AVX2 1
#endif

namespace zc::rdoq {
namespace {

constexpr double INF = std::numeric_limits<double>::infinity();

int64_t context(int64_t c, const Tables& t) {
  if (c < 0 || c >= t.contexts) throw std::invalid_argument("rdoq: a context outside the rate tables");
  return c;
}

// (x - recon)^2 + lam * rate(level); `row` the rate table of the level's context (and state).
inline double cost(double x, double recon, double level, const double* row, double worst, const Tables& t) {
  const int64_t idx = static_cast<int64_t>(static_cast<uint64_t>(to_i64(level)) - static_cast<uint64_t>(t.origin));
  const double rate = static_cast<uint64_t>(idx) < static_cast<uint64_t>(t.size) ? row[idx] : worst;
  const double d = x - recon;
  return d * d + t.lam * rate;
}

// Quantizer Q for magnitude a: per parity p of the level, the best (cost, signed level) among the
// nearest pair of Q's reconstructions and zero, the first of equal costs kept (rdoq.cu's options<Q>).
template <int Q>
inline void options(double a, double sign, const double* row, double worst, const Tables& t, double* best_cost,
                    double* best_level) {
  double mag[3], recon[3];
  if (Q == 0) {  // recon 2m: the pair around a/2
    const double m = std::floor(a / 2.0);
    mag[0] = m;
    recon[0] = 2.0 * m;
    mag[1] = m + 1.0;
    recon[1] = 2.0 * m + 2.0;
  } else {  // recon 2m - 1 (m > 0): the odd values around a
    const double m = std::floor((a + 1.0) / 2.0);
    const double r = 2.0 * m - 1.0;
    mag[0] = m;
    recon[0] = r < 0.0 ? 0.0 : r;  // np.maximum(r, 0): a NaN stays
    mag[1] = m + 1.0;
    recon[1] = 2.0 * m + 1.0;
  }
  mag[2] = recon[2] = 0.0;
  for (int k = 0; k < 3; ++k) {
    const double level = sign * mag[k];
    const double c = cost(a, recon[k], level, row, worst, t);
    const int parity = static_cast<int>(to_i64(mag[k]) & 1);
    for (int p = 0; p < 2; ++p) {
      const double cp = parity == p ? c : INF;
      const bool take = k == 0 || cp < best_cost[p];
      best_cost[p] = take ? cp : best_cost[p];
      best_level[p] = take ? level : best_level[p];
    }
  }
}

// The two (state, parity) pairs leading to state t under NEXT_STATE = ((0, 2), (2, 0), (1, 3), (3, 1)).
constexpr int pred_state(int t, int i) { return 2 * (t & 1) + i; }
constexpr int pred_parity(int t, int i) { return i ^ (t >> 1); }

// The state a row's walk back starts from: the first cheapest (np.argmin: a NaN first).
inline int cheapest(const double* cost) {
  int state = 0;
  double least = cost[0];
  for (int s = 1; s < 4; ++s)
    if (!std::isnan(least) && (cost[s] < least || std::isnan(cost[s]))) {
      state = s;
      least = cost[s];
    }
  return state;
}

// One row: the forward pass keeps per column and next state the winner's level and a choice bit, the
// walk back starts from the first cheapest state (np.argmin: a NaN first).
template <bool STATEFUL>
void row_trellis(const double* x, const int64_t* ctx, std::size_t cols, const Tables& t, int32_t* levels,
                 uint8_t* choice, int64_t* out) {
  constexpr int SETS = STATEFUL ? 4 : 2, STATES = STATEFUL ? 4 : 1;
  double cost_[4] = {0.0, INF, INF, INF};
  for (std::size_t j = 0; j < cols; ++j) {
    const double v = x[j];
    const int64_t c = context(ctx[j], t);
    const double a = std::fabs(v), sign = v < 0 ? -1.0 : 1.0;
    double oc[SETS][2] = {}, ol[SETS][2] = {};  // (options() writes each before reading it)
    for (int o = 0; o < SETS; ++o) {
      const int k = STATEFUL ? o : 0;
      const double* row = t.bits + (c * STATES + k) * t.size;
      const double worst = t.worst[c * STATES + k];
      if ((STATEFUL ? o >> 1 : o) == 0)
        options<0>(a, sign, row, worst, t, oc[o], ol[o]);
      else
        options<1>(a, sign, row, worst, t, oc[o], ol[o]);
    }
    double next[4];
    unsigned sel = 0;
    for (int s = 0; s < 4; ++s) {
      const int s0 = pred_state(s, 0), p0 = pred_parity(s, 0), s1 = pred_state(s, 1), p1 = pred_parity(s, 1);
      const int o0 = STATEFUL ? s0 : s0 >> 1, o1 = STATEFUL ? s1 : s1 >> 1;
      const double c0 = cost_[s0] + oc[o0][p0], c1 = cost_[s1] + oc[o1][p1];
      const bool second = c1 < c0;
      next[s] = second || std::isnan(c1) ? c1 : c0;  // np.minimum: a NaN wins
      levels[j * 4 + s] = to_i32(second ? ol[o1][p1] : ol[o0][p0]);
      sel |= static_cast<unsigned>(second) << s;
    }
    choice[j] = static_cast<uint8_t>(sel);
    std::copy(next, next + 4, cost_);
  }
  int state = cheapest(cost_);
  for (std::size_t j = cols; j-- > 0;) {
    const int second = (choice[j] >> state) & 1;
    out[j] = levels[j * 4 + state];
    state = pred_state(state, second);
  }
}

#ifdef ZC_RDOQ_AVX2
// row_trellis on four rows at once, a row a lane of AVX2 vectors: the same float64 operations in the
// same order (no FMA: the target is avx2 alone), so every lane is row_trellis's row bit for bit. Rates
// are gathered from `ext`, each table with its worst price appended at index `size`, which a level
// outside the table reads. Needs the tables' flat indices in int32 and origin and origin + size exact
// in float64 (vector_tables).
#define AVX2_FN __attribute__((target("avx2")))
using V = __m256d;

// Each lane's level - lo where lo <= level < hi (the table holds it), else `size` (the worst price's slot).
AVX2_FN inline __m128i table_index(V level, V lo, V hi, int32_t size) {
  const V inside = _mm256_and_pd(_mm256_cmp_pd(level, lo, _CMP_GE_OQ), _mm256_cmp_pd(level, hi, _CMP_LT_OQ));
  const __m128i in32 = _mm256_cvtpd_epi32(_mm256_and_pd(inside, _mm256_set1_pd(1.0)));  // 1 inside, else 0
  return _mm_blendv_epi8(_mm_set1_epi32(size), _mm256_cvttpd_epi32(_mm256_sub_pd(level, lo)),
                         _mm_cmpeq_epi32(in32, _mm_set1_epi32(1)));
}

struct Candidate {
  V level, dist;   // sign * magnitude, (a - recon)^2
  V odd;           // all ones where the magnitude's integer is odd (to_i64(mag) & 1)
  __m128i index;   // level - origin, or size where the level is outside the table
};

AVX2_FN inline Candidate candidate(V a, V sign, V mag, V recon, V lo, V hi, int32_t size) {
  const V half = _mm256_set1_pd(0.5), two = _mm256_set1_pd(2.0);
  Candidate c;
  c.level = _mm256_mul_pd(sign, mag);
  const V d = _mm256_sub_pd(a, recon);
  c.dist = _mm256_mul_pd(d, d);
  // mag - 2 floor(mag / 2) is 1 exactly for odd integers below 2^53; larger ones, inf and NaN read even,
  // as to_i64 gives them the lowest integer
  const V rest = _mm256_sub_pd(mag, _mm256_mul_pd(two, _mm256_floor_pd(_mm256_mul_pd(mag, half))));
  c.odd = _mm256_cmp_pd(rest, _mm256_set1_pd(1.0), _CMP_EQ_OQ);
  c.index = table_index(c.level, lo, hi, size);
  return c;
}

// options<Q> for one rate table per lane (`base`: the table's first flat index in ext).
AVX2_FN inline void options4(const Candidate* cand, const double* ext, __m128i base, V lam, V* best_cost,
                             V* best_level) {
  const V inf = _mm256_set1_pd(INF), all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
  for (int k = 0; k < 3; ++k) {
    const V rate = _mm256_mask_i32gather_pd(inf, ext, _mm_add_epi32(base, cand[k].index), all, 8);
    const V c = _mm256_add_pd(cand[k].dist, _mm256_mul_pd(lam, rate));
    for (int p = 0; p < 2; ++p) {
      const V match = p ? cand[k].odd : _mm256_xor_pd(cand[k].odd, all);
      const V cp = _mm256_blendv_pd(inf, c, match);
      if (k == 0) {
        best_cost[p] = cp;
        best_level[p] = cand[k].level;
      } else {
        const V take = _mm256_cmp_pd(cp, best_cost[p], _CMP_LT_OQ);
        best_cost[p] = _mm256_blendv_pd(best_cost[p], cp, take);
        best_level[p] = _mm256_blendv_pd(best_level[p], cand[k].level, take);
      }
    }
  }
}

template <bool STATEFUL>
AVX2_FN void rows4_trellis(const double* x, const int64_t* ctx, std::size_t cols, const Tables& t,
                           const double* ext, int32_t* levels, uint16_t* choice, int64_t* out) {
  constexpr int SETS = STATEFUL ? 4 : 2, STATES = STATEFUL ? 4 : 1;
  const int32_t size = static_cast<int32_t>(t.size), stride = size + 1;
  const V lo = _mm256_set1_pd(static_cast<double>(t.origin)), hi = _mm256_set1_pd(static_cast<double>(t.origin + t.size));
  const V lam = _mm256_set1_pd(t.lam), one = _mm256_set1_pd(1.0), two = _mm256_set1_pd(2.0), half = _mm256_set1_pd(0.5);
  const V zero = _mm256_setzero_pd(), absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
  V cost_[4] = {zero, _mm256_set1_pd(INF), _mm256_set1_pd(INF), _mm256_set1_pd(INF)};
  for (std::size_t j = 0; j < cols; ++j) {
    const V v = _mm256_set_pd(x[3 * cols + j], x[2 * cols + j], x[cols + j], x[j]);
    int32_t c4[4];
    for (int r = 0; r < 4; ++r) c4[r] = static_cast<int32_t>(context(ctx[r * cols + j], t));
    const __m128i cs = _mm_mullo_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c4)), _mm_set1_epi32(STATES));
    const V a = _mm256_and_pd(v, absmask);
    const V sign = _mm256_blendv_pd(one, _mm256_set1_pd(-1.0), _mm256_cmp_pd(v, zero, _CMP_LT_OQ));
    Candidate q[2][3];
    {  // Q0: recon 2m, the pair around a/2
      const V m = _mm256_floor_pd(_mm256_mul_pd(a, half));
      const V r = _mm256_mul_pd(two, m);
      q[0][0] = candidate(a, sign, m, r, lo, hi, size);
      q[0][1] = candidate(a, sign, _mm256_add_pd(m, one), _mm256_add_pd(r, two), lo, hi, size);
    }
    {  // Q1: recon 2m - 1 (m > 0), the odd values around a
      const V m = _mm256_floor_pd(_mm256_mul_pd(_mm256_add_pd(a, one), half));
      const V r = _mm256_sub_pd(_mm256_mul_pd(two, m), one);
      q[1][0] = candidate(a, sign, m, _mm256_blendv_pd(r, zero, _mm256_cmp_pd(r, zero, _CMP_LT_OQ)), lo, hi, size);
      q[1][1] = candidate(a, sign, _mm256_add_pd(m, one), _mm256_add_pd(_mm256_mul_pd(two, m), one), lo, hi, size);
    }
    q[0][2] = q[1][2] = candidate(a, sign, zero, zero, lo, hi, size);
    V oc[SETS][2], ol[SETS][2];
    for (int o = 0; o < SETS; ++o) {
      const __m128i base = _mm_mullo_epi32(_mm_add_epi32(cs, _mm_set1_epi32(STATEFUL ? o : 0)), _mm_set1_epi32(stride));
      options4(q[STATEFUL ? o >> 1 : o], ext, base, lam, oc[o], ol[o]);
    }
    V next[4];
    unsigned sel = 0;
    for (int s = 0; s < 4; ++s) {
      const int s0 = pred_state(s, 0), p0 = pred_parity(s, 0), s1 = pred_state(s, 1), p1 = pred_parity(s, 1);
      const int o0 = STATEFUL ? s0 : s0 >> 1, o1 = STATEFUL ? s1 : s1 >> 1;
      const V c0 = _mm256_add_pd(cost_[s0], oc[o0][p0]), c1 = _mm256_add_pd(cost_[s1], oc[o1][p1]);
      const V second = _mm256_cmp_pd(c1, c0, _CMP_LT_OQ);
      next[s] = _mm256_blendv_pd(c0, c1, _mm256_or_pd(second, _mm256_cmp_pd(c1, c1, _CMP_UNORD_Q)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(levels + (j * 4 + s) * 4),
                       _mm256_cvttpd_epi32(_mm256_blendv_pd(ol[o0][p0], ol[o1][p1], second)));
      sel |= static_cast<unsigned>(_mm256_movemask_pd(second)) << (4 * s);
    }
    choice[j] = static_cast<uint16_t>(sel);
    std::copy(next, next + 4, cost_);
  }
  alignas(32) double last[4][4];  // [state][row]
  for (int s = 0; s < 4; ++s) _mm256_store_pd(last[s], cost_[s]);
  for (int r = 0; r < 4; ++r) {
    const double row_cost[4] = {last[0][r], last[1][r], last[2][r], last[3][r]};
    int state = cheapest(row_cost);
    for (std::size_t j = cols; j-- > 0;) {
      const int second = (choice[j] >> (4 * state + r)) & 1;
      out[r * cols + j] = levels[(j * 4 + state) * 4 + r];
      state = pred_state(state, second);
    }
  }
}

// decide on four values at once (decide's operations per lane; `ext` as rows4_trellis reads it, one state).
AVX2_FN void decide4(const double* x, const int64_t* ctx, std::size_t n, const Tables& t, const double* ext,
                     int64_t* out) {
  const int32_t size = static_cast<int32_t>(t.size), stride = size + 1;
  const V lo = _mm256_set1_pd(static_cast<double>(t.origin)), hi = _mm256_set1_pd(static_cast<double>(t.origin + t.size));
  const V lam = _mm256_set1_pd(t.lam), one = _mm256_set1_pd(1.0), all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
  for (std::size_t i = 0; i + 4 <= n; i += 4) {
    const V v = _mm256_loadu_pd(x + i);
    int32_t c4[4];
    for (int r = 0; r < 4; ++r) c4[r] = static_cast<int32_t>(context(ctx[i + r], t));
    const __m128i base = _mm_mullo_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c4)), _mm_set1_epi32(stride));
    const V near = _mm256_round_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const V other = _mm256_blendv_pd(_mm256_add_pd(near, one), _mm256_sub_pd(near, one), _mm256_cmp_pd(near, v, _CMP_GT_OQ));
    const V cand[3] = {near, other, _mm256_setzero_pd()};
    V best = near, best_cost = near;
    for (int k = 0; k < 3; ++k) {
      const V level = cand[k];
      const V rate = _mm256_mask_i32gather_pd(one, ext, _mm_add_epi32(base, table_index(level, lo, hi, size)), all, 8);
      const V d = _mm256_sub_pd(v, level);
      const V c = _mm256_add_pd(_mm256_mul_pd(d, d), _mm256_mul_pd(lam, rate));
      if (k == 0) {
        best_cost = c;
      } else {
        const V take = _mm256_cmp_pd(c, best_cost, _CMP_LT_OQ);
        best = _mm256_blendv_pd(best, level, take);
        best_cost = _mm256_blendv_pd(best_cost, c, take);
      }
    }
    alignas(32) double b[4];
    _mm256_store_pd(b, best);
    for (int r = 0; r < 4; ++r) out[i + r] = to_i64(b[r]);
  }
}
#endif

// The tables rows4_trellis reads (each context and state's table followed by its worst price), or
// empty where its int32 indices or float64 level bounds would not hold them.
std::vector<double> vector_tables(const Tables& t) {
#ifdef ZC_RDOQ_AVX2
  const int64_t tables = t.contexts * t.states, bound = int64_t{1} << 52;
  if (!rans::avx2() || t.size >= (int64_t{1} << 30) || tables * (t.size + 1) >= (int64_t{1} << 31) ||
      t.origin <= -bound || t.origin + t.size >= bound)
    return {};
  std::vector<double> ext(static_cast<std::size_t>(tables * (t.size + 1)));
  for (int64_t k = 0; k < tables; ++k) {
    std::copy(t.bits + k * t.size, t.bits + (k + 1) * t.size, ext.begin() + k * (t.size + 1));
    ext[k * (t.size + 1) + t.size] = t.worst[k];
  }
  return ext;
#else
  (void)t;
  return {};
#endif
}

}  // namespace

void decide(const double* x, const int64_t* ctx, std::size_t n, const Tables& t, int64_t* out, int threads) {
  constexpr std::size_t BLOCK = 1 << 16;
  const std::vector<double> ext = vector_tables(t);
  parallel_for((n + BLOCK - 1) / BLOCK, threads, [&](std::size_t b) {
    std::size_t i = b * BLOCK;
    const std::size_t end = std::min(n, (b + 1) * BLOCK);
#ifdef ZC_RDOQ_AVX2
    if (!ext.empty()) {
      decide4(x + i, ctx + i, end - i, t, ext.data(), out + i);
      i += (end - i) / 4 * 4;
    }
#endif
    for (; i < end; ++i) {
      const double v = x[i];
      const int64_t c = context(ctx[i], t);
      const double* row = t.bits + c * t.size;
      const double near = std::nearbyint(v);
      const double cand[3] = {near, near > v ? near - 1.0 : near + 1.0, 0.0};
      double best = near, best_cost = cost(v, near, near, row, t.worst[c], t);
      for (int k = 1; k < 3; ++k) {
        const double cc = cost(v, cand[k], cand[k], row, t.worst[c], t);
        if (cc < best_cost) {
          best = cand[k];
          best_cost = cc;
        }
      }
      out[i] = to_i64(best);
    }
  });
}

void trellis(const double* x, const int64_t* ctx, std::size_t rows, std::size_t cols, const Tables& t, int64_t* out,
             int threads) {
  if (t.states != 1 && t.states != 4) throw std::invalid_argument("rdoq: rate tables of 1 or 4 states");
  constexpr std::size_t ROWS = 16;  // rows a task (a multiple of 4): the scratch below is reused across them
  const std::vector<double> ext = vector_tables(t);
  parallel_for((rows + ROWS - 1) / ROWS, threads, [&](std::size_t b) {
    std::vector<int32_t> levels(cols * 4);
    std::vector<uint8_t> choice(cols);
    const std::size_t end = std::min(rows, (b + 1) * ROWS);
    std::size_t r = b * ROWS;
#ifdef ZC_RDOQ_AVX2
    if (!ext.empty() && r + 4 <= end) {
      std::vector<int32_t> levels4(cols * 16);
      std::vector<uint16_t> choice4(cols);
      for (; r + 4 <= end; r += 4) {
        const std::size_t at = r * cols;
        if (t.states == 4)
          rows4_trellis<true>(x + at, ctx + at, cols, t, ext.data(), levels4.data(), choice4.data(), out + at);
        else
          rows4_trellis<false>(x + at, ctx + at, cols, t, ext.data(), levels4.data(), choice4.data(), out + at);
      }
    }
#endif
    for (; r < end; ++r) {
      const std::size_t at = r * cols;
      if (t.states == 4)
        row_trellis<true>(x + at, ctx + at, cols, t, levels.data(), choice.data(), out + at);
      else
        row_trellis<false>(x + at, ctx + at, cols, t, levels.data(), choice.data(), out + at);
    }
  });
}

}  // namespace zc::rdoq
