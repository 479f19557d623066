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

#include "pool.h"

namespace zc::rdoq {
namespace {

constexpr double INF = std::numeric_limits<double>::infinity();

int64_t to_i64(double v) {
  return v >= -9223372036854775808.0 && v < 9223372036854775808.0 ? static_cast<int64_t>(v)
                                                                     : std::numeric_limits<int64_t>::min();
}

int32_t to_i32(double v) {
  return v > -2147483649.0 && v < 2147483648.0 ? static_cast<int32_t>(v) : std::numeric_limits<int32_t>::min();
}

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
  int state = 0;
  double least = cost_[0];
  for (int s = 1; s < 4; ++s)
    if (!std::isnan(least) && (cost_[s] < least || std::isnan(cost_[s]))) {
      state = s;
      least = cost_[s];
    }
  for (std::size_t j = cols; j-- > 0;) {
    const int second = (choice[j] >> state) & 1;
    out[j] = levels[j * 4 + state];
    state = pred_state(state, second);
  }
}

}  // namespace

void decide(const double* x, const int64_t* ctx, std::size_t n, const Tables& t, int64_t* out, int threads) {
  constexpr std::size_t BLOCK = 1 << 16;
  parallel_for((n + BLOCK - 1) / BLOCK, threads, [&](std::size_t b) {
    for (std::size_t i = b * BLOCK; i < std::min(n, (b + 1) * BLOCK); ++i) {
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
  constexpr std::size_t ROWS = 16;  // rows a task: the scratch below is reused across them
  parallel_for((rows + ROWS - 1) / ROWS, threads, [&](std::size_t b) {
    std::vector<int32_t> levels(cols * 4);
    std::vector<uint8_t> choice(cols);
    for (std::size_t r = b * ROWS; r < std::min(rows, (b + 1) * ROWS); ++r) {
      const std::size_t at = r * cols;
      if (t.states == 4)
        row_trellis<true>(x + at, ctx + at, cols, t, levels.data(), choice.data(), out + at);
      else
        row_trellis<false>(x + at, ctx + at, cols, t, levels.data(), choice.data(), out + at);
    }
  });
}

}  // namespace zc::rdoq
