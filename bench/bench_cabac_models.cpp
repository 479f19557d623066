// Offline code lengths of candidate probability models for cabac, on real levels
// (bench/bench_cabac_models.py builds it with g++ -O2 and calls it through ctypes).
//
// It includes the coder itself, so the plan (activity classes, substreams, initial
// probabilities) and the estimator are the shipped ones. The binarisation is replayed
// here as a list of bins with their contexts (checked against cost_bits: "base" must give
// the same bits), and every candidate codes those bins: ideal code length sum(-log2 p),
// plus the side information it would send. Bypass bits and the shipped side information
// are the same for every candidate, so a candidate's size is cabac's bytes plus its bits
// minus base's.
#include "../zoocodec/codecs/native/cabac.cpp"

#include <chrono>

namespace zc::cabac {
namespace {

// One context-coded bin. kind: 0 significance, 1 sign, 2..7 greater-than flag g+2, 8 Exp-Golomb prefix.
// slot: the context without its activity bucket (state, state x left sign, g x quantizer, prefix bin).
struct Ev {
  uint32_t i;      // level index in the substream
  uint16_t j;      // the shipped context (index into Contexts)
  uint8_t kind, bucket;
  uint8_t slot;
  uint8_t bit;
};

constexpr int kSig = 0, kSign = kMaxStates * kBuckets, kGtBase = kSign + kMaxStates * 3,
              kEgBase = kGtBase + kGt * 2 * kBuckets;
static_assert(kEgBase + kBuckets * (kEgPrefix + 1) == static_cast<int>(kNumProbs), "layout of Contexts");

// code_substream's binarisation, as bins.
uint64_t replay(const int32_t* levels, uint64_t begin, uint64_t end, const Plan& plan, int state,
                std::vector<Ev>& ev) {
  ev.clear();
  uint64_t bypass = 0;
  const uint64_t cols = plan.cols;
  const int trellis = plan.trellis;
  int left_sign = 0;
  uint64_t row = begin / cols, col = begin % cols;
  const uint8_t(*next)[2] = trellis == kNnr8 ? kNext8 : kNext4;
  std::vector<uint32_t> col_pred(cols);
  for (uint64_t c = 0; c < cols; ++c) col_pred[c] = plan.predicted(row, c);
  for (uint64_t i = begin; i < end; ++i) {
    if (col == 0) {
      left_sign = 0;
      if (trellis == kDq4Rows) state = 0;
      if (plan.layout & kRowClasses)
        for (uint64_t c = 0; c < cols; ++c) col_pred[c] = plan.predicted(row, c);
    }
    const uint32_t t = col_pred[col];
    const int bucket = kBucket.of[std::min<uint32_t>(t, 2047)];
    const uint32_t li = static_cast<uint32_t>(i - begin);
    int32_t k = levels[i];
    uint32_t mag = static_cast<uint32_t>(k < 0 ? -static_cast<int64_t>(k) : k);
    auto push = [&](int j, int kind, int slot, int bit) {
      ev.push_back({li, static_cast<uint16_t>(j), static_cast<uint8_t>(kind), static_cast<uint8_t>(bucket),
                    static_cast<uint8_t>(slot), static_cast<uint8_t>(bit)});
    };
    push(kSig + state * kBuckets + bucket, 0, state, mag != 0);
    uint32_t m = 0;
    if (mag) {
      push(kSign + state * 3 + left_sign, 1, state * 3 + left_sign, k < 0);
      int q = quantizer(trellis, state);
      m = 1;
      int g = 0;
      for (; g < kGt; ++g) {
        push(kGtBase + (g * 2 + q) * kBuckets + bucket, 2 + g, g * 2 + q, mag > m);
        if (!(mag > m)) break;
        ++m;
      }
      if (g == kGt) {
        int order = 0;
        while (order < 12 && (64u << order) <= t) ++order;
        uint32_t value = mag - m, base = 0;
        int kk = order, jj = 0;
        while (value - base >= (1u << kk)) {
          int c = std::min(jj++, kEgPrefix);
          push(kEgBase + bucket * (kEgPrefix + 1) + c, 8, c, 1);
          base += 1u << kk;
          ++kk;
        }
        int c = std::min(jj, kEgPrefix);
        push(kEgBase + bucket * (kEgPrefix + 1) + c, 8, c, 0);
        bypass += kk;
        m = mag;
      }
      left_sign = k < 0 ? 1 : 2;
    } else {
      left_sign = 0;
    }
    if (trellis != kNone) state = next[state][m & 1];
    if (++col == cols) {
      col = 0;
      ++row;
    }
  }
  return bypass;
}

// ---- integer logistic arithmetic (16-bit probabilities, stretch in 1/256 nat) -------------
constexpr int kStMax = 2816;
struct Logistic {
  int16_t st[65536];
  uint16_t sq[2 * kStMax + 1];
  Logistic() {
    for (int p = 0; p < 65536; ++p) {
      double q = std::clamp(p, 1, 65535) / 65536.0;
      st[p] = static_cast<int16_t>(std::clamp(std::lround(256 * std::log(q / (1 - q))), -static_cast<long>(kStMax),
                                              static_cast<long>(kStMax)));
    }
    for (int x = -kStMax; x <= kStMax; ++x)
      sq[x + kStMax] = static_cast<uint16_t>(std::clamp(std::lround(65536 / (1 + std::exp(-x / 256.0))), 32L, 65504L));
  }
  int stretch(uint32_t p16) const { return st[p16]; }
  uint32_t squash(int x) const { return sq[std::clamp(x, -kStMax, kStMax) + kStMax]; }
};
const Logistic kLg;

inline double cost16(uint32_t p1, int bit) {
  p1 = std::clamp<uint32_t>(p1, 32, 65504);
  return -std::log2((bit ? p1 : 65536 - p1) / 65536.0);
}
inline double cost15(uint32_t p1, int bit) { return -std::log2((bit ? p1 : 32768 - p1) / 32768.0); }

// The shipped estimator with chosen rates (warm-up as shipped).
struct ProbR {
  uint16_t fast = 1u << 15, slow = 1u << 15, seen = 0;
  void update(int bin, int rf, int rs) {
    if (seen < kSettled) {
      int age = 0;
      while ((seen + 2u) >> (age + 1)) ++age;
      rf = std::min(rf, age);
      rs = std::min(rs, age);
      ++seen;
    }
    uint32_t f = fast, s = slow;
    if (bin) {
      f += (65535u - f) >> rf;
      s += (65535u - s) >> rs;
    } else {
      f -= f >> rf;
      s -= s >> rs;
    }
    fast = static_cast<uint16_t>(f);
    slow = static_cast<uint16_t>(s);
  }
  uint32_t p15() const {
    return std::clamp<uint32_t>((static_cast<uint32_t>(fast) + slow) >> 2, kProbMin, (1u << kProbBits) - kProbMin);
  }
};

void start(std::vector<ProbR>& probs, const Plan& plan) {
  for (std::size_t j = 0; j < probs.size(); ++j) {
    probs[j] = ProbR();
    if (!plan.init.empty() && j < plan.init.size() && plan.init[j]) {
      probs[j].fast = probs[j].slow = kInitP[plan.init[j] - 1];
      probs[j].seen = kSettled;
    }
  }
}

// Neighbour magnitudes of level li of the substream (causal: left, above, above-left, above-right).
struct Nbr {
  uint32_t left, above, al, ar;
};
inline Nbr neighbours(const int32_t* lv, uint64_t begin, uint64_t li, uint64_t cols) {
  uint64_t i = begin + li, col = i % cols;
  auto mag = [&](uint64_t at) { return static_cast<uint32_t>(std::min<int64_t>(std::abs(static_cast<int64_t>(lv[at])), 1000)); };
  Nbr n{0, 0, 0, 0};
  if (col > 0) n.left = mag(i - 1);
  if (li >= cols) {
    n.above = mag(i - cols);
    if (col > 0) n.al = mag(i - cols - 1);
    if (col + 1 < cols) n.ar = mag(i - cols + 1);
  }
  return n;
}

// Candidate B: logistic mixing. Inputs: the shipped context's fast and slow estimators, a
// context of (shipped context x neighbour magnitudes), a context of (slot x neighbourhood sum),
// a bias; weights chosen per (kind, bucket); then an APM on the shipped context.
struct MixCfg {
  int inputs;     // 2: fast+slow; 3: + neighbour context; 4: + neighbourhood context
  int apm;        // 0 none, 1 APM on the shipped context (rate 7), final = (mix + 3 apm) / 4
  int lr;         // weight update shift
  int wsel;       // weight sets: 0 per kind, 1 per kind x bucket, 2 per shipped context
  int nrate;      // rates of the extra contexts' estimators: 0 shipped (6, 10), 1 (5, 8)
};

struct Mixer {
  static constexpr int kIn = 5;
  std::vector<int32_t> w;
  std::vector<uint16_t> apm;
  std::vector<ProbR> base, c2, c3;
  const MixCfg cfg;
  explicit Mixer(const MixCfg& c) : cfg(c) {}

  void reset(const Plan& plan) {
    base.assign(kNumProbs, ProbR());
    start(base, plan);
    c2.assign(kNumProbs * 9, ProbR());
    c3.assign(128 * 12, ProbR());
    int sets = cfg.wsel == 0 ? 9 : cfg.wsel == 1 ? 9 * kBuckets : static_cast<int>(kNumProbs);
    w.assign(static_cast<std::size_t>(sets) * kIn, 0);
    for (int s = 0; s < sets; ++s) w[s * kIn] = w[s * kIn + 1] = 32768;  // starts as the shipped average
    if (cfg.apm) {
      apm.assign(kNumProbs * 33, 0);
      for (std::size_t j = 0; j < kNumProbs; ++j)
        for (int k = 0; k < 33; ++k) apm[j * 33 + k] = static_cast<uint16_t>(kLg.squash((k - 16) * kStMax / 16));
    }
  }

  double run(const std::vector<Ev>& ev, const int32_t* lv, uint64_t begin, uint64_t cols) {
    double bits = 0;
    const int rf2 = cfg.nrate ? 5 : kFastRate, rs2 = cfg.nrate ? 8 : kSlowRate;
    for (const Ev& e : ev) {
      ProbR& b = base[e.j];
      int x[kIn];
      int n = 0;
      x[n++] = kLg.stretch(std::max<uint32_t>(b.fast, 1));
      x[n++] = kLg.stretch(std::max<uint32_t>(b.slow, 1));
      ProbR* p2 = nullptr;
      ProbR* p3 = nullptr;
      if (cfg.inputs >= 3) {
        Nbr nb = neighbours(lv, begin, e.i, cols);
        if (e.kind == 1) {  // sign: the neighbours' magnitudes say little; their sign is in the context already
          nb.left = nb.above = nb.al = nb.ar = 0;
        }
        int c2i = std::min<uint32_t>(nb.left, 2) * 3 + std::min<uint32_t>(nb.above, 2);
        p2 = &c2[e.j * 9 + c2i];
        x[n++] = kLg.stretch((static_cast<uint32_t>(p2->fast) + p2->slow) >> 1);
        if (cfg.inputs >= 4) {
          int kindslot = e.kind == 0 ? e.slot : e.kind == 1 ? 8 + e.slot : e.kind < 8 ? 32 + (e.kind - 2) * 2 + (e.slot & 1) : 44 + e.slot;
          uint32_t sum = nb.left + nb.above + nb.al + nb.ar;
          p3 = &c3[kindslot * 12 + std::min<uint32_t>(sum, 11)];
          x[n++] = kLg.stretch((static_cast<uint32_t>(p3->fast) + p3->slow) >> 1);
        }
      }
      x[n++] = 256;
      int set = cfg.wsel == 0 ? e.kind : cfg.wsel == 1 ? e.kind * kBuckets + e.bucket : e.j;
      int32_t* wv = &w[static_cast<std::size_t>(set) * kIn];
      int64_t dot = 0;
      for (int k = 0; k < n; ++k) dot += static_cast<int64_t>(wv[k]) * x[k];
      int xm = static_cast<int>(std::clamp<int64_t>(dot >> 16, -kStMax, kStMax));
      uint32_t pm = kLg.squash(xm);
      uint32_t p = pm;
      int lo = 0;
      if (cfg.apm) {
        int pos = (xm + kStMax) * 16;  // in 1/kStMax of a cell
        lo = pos / kStMax;
        if (lo >= 32) lo = 31;
        int frac = pos - lo * kStMax;
        uint16_t* a = &apm[e.j * 33];
        uint32_t pa = (a[lo] * static_cast<uint32_t>(kStMax - frac) + a[lo + 1] * static_cast<uint32_t>(frac)) / kStMax;
        p = (pm + 3 * pa) >> 2;
        int near = frac * 2 >= kStMax ? lo + 1 : lo;
        int tgt = e.bit ? 65535 : 0;
        a[near] = static_cast<uint16_t>(a[near] + ((tgt - a[near]) >> 6));
      }
      bits += cost16(p, e.bit);
      int err = (e.bit << 16) - static_cast<int>(pm);
      for (int k = 0; k < n; ++k) wv[k] += static_cast<int32_t>((static_cast<int64_t>(x[k]) * err) >> cfg.lr);
      b.update(e.bit, kFastRate, kSlowRate);
      if (p2) p2->update(e.bit, rf2, rs2);
      if (p3) p3->update(e.bit, rf2, rs2);
    }
    return bits;
  }
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace
}  // namespace zc::cabac

using namespace zc::cabac;

// Rate pairs of candidate A: fast 2^-4..2^-7 x slow 2^-8..2^-11, then one estimator (fast = slow) at 2^-7..2^-12.
constexpr int kPairs = 22;
inline int fast_rate(int v) { return v < 16 ? 4 + (v >> 2) : v - 16 + 7; }
inline int slow_rate(int v) { return v < 16 ? 8 + (v & 3) : v - 16 + 7; }
constexpr int kMixes = 8;
const MixCfg kMixCfg[kMixes] = {
    {2, 0, 15, 0, 0}, {2, 1, 15, 0, 0}, {3, 0, 15, 0, 0}, {4, 0, 15, 0, 0},
    {4, 1, 15, 0, 0}, {4, 1, 14, 2, 0}, {4, 1, 16, 0, 0}, {4, 1, 15, 0, 1},
};

// out: [0] cost_bits sum, [1] base (replayed) bits, [2] rate pair per context (+ 4 bits per used context
// + 1 bit per context), [3] one rate pair per tensor (+4 bits), [4] rate pair per kind (+ 9 x 4 bits),
// [5 .. 5+kMixes) mixing variants, then seconds: [13] base model, [14 ..) mix variants, [22] replay,
// [23] bins, [24] bypass bits, [25] static entropy of the bins given the shipped contexts (counted over
// the tensor, model cost not counted), [26 .. 26+kPairs) each rate pair on every context.
extern "C" int zc_cabac_models(const int32_t* levels, uint64_t rows, uint64_t cols, int trellis, uint64_t substream,
                               double* out) {
  try {
    Plan plan = make_plan(levels, rows, cols, trellis, substream);
    for (int k = 0; k < 26 + kPairs; ++k) out[k] = 0;
    if (plan.count == 0) return 0;
    {
      std::vector<float> costs(plan.count);
      cost_bits(levels, rows, cols, trellis, substream, costs.data(), 1);
      double s = 0;
      for (float c : costs) s += c;
      out[0] = s;
    }
    std::vector<double> pair_cost(kNumProbs * kPairs, 0.0);
    std::vector<uint8_t> used(kNumProbs, 0);
    std::vector<uint64_t> counts(2 * kNumProbs, 0);
    std::vector<double> kind_pair(9 * kPairs, 0.0);
    std::vector<uint8_t> kind_of(kNumProbs, 0);
    std::vector<Ev> ev;
    std::vector<ProbR> probs(kNumProbs);
    std::vector<ProbR> pp(kNumProbs * kPairs);
    for (uint64_t s = 0; s < plan.n; ++s) {
      uint64_t b = s * plan.len, e = std::min(plan.count, b + plan.len);
      double t0 = now();
      out[24] += static_cast<double>(replay(levels, b, e, plan, plan.state[s], ev));
      out[22] += now() - t0;
      out[23] += static_cast<double>(ev.size());
      // base
      t0 = now();
      start(probs, plan);
      double bits = 0;
      for (const Ev& x : ev) {
        bits += cost15(probs[x.j].p15(), x.bit);
        probs[x.j].update(x.bit, kFastRate, kSlowRate);
      }
      out[1] += bits;
      out[13] += now() - t0;
      // A: every rate pair on every context
      for (std::size_t j = 0; j < kNumProbs; ++j) {
        ProbR init = ProbR();
        if (!plan.init.empty() && plan.init[j]) {
          init.fast = init.slow = kInitP[plan.init[j] - 1];
          init.seen = kSettled;
        }
        for (int v = 0; v < kPairs; ++v) pp[j * kPairs + v] = init;
      }
      for (const Ev& x : ev) {
        ++counts[2 * x.j + x.bit];
        used[x.j] = 1;
        kind_of[x.j] = x.kind;
        for (int v = 0; v < kPairs; ++v) {
          ProbR& p = pp[x.j * kPairs + v];
          pair_cost[x.j * kPairs + v] += cost15(p.p15(), x.bit);
          p.update(x.bit, fast_rate(v), slow_rate(v));
        }
      }
      for (int m = 0; m < kMixes; ++m) {
        t0 = now();
        Mixer mix(kMixCfg[m]);
        mix.reset(plan);
        out[5 + m] += mix.run(ev, levels, b, cols);
        out[14 + m] += now() - t0;
      }
    }
    double per_ctx = 0, nused = 0;
    std::vector<double> per_pair(kPairs, 0.0);
    for (std::size_t j = 0; j < kNumProbs; ++j) {
      per_ctx += 1.0;  // a used flag
      if (!used[j]) continue;
      nused += 1;
      double best = pair_cost[j * kPairs];
      for (int v = 0; v < kPairs; ++v) {
        best = std::min(best, pair_cost[j * kPairs + v]);
        per_pair[v] += pair_cost[j * kPairs + v];
        kind_pair[kind_of[j] * kPairs + v] += pair_cost[j * kPairs + v];
      }
      per_ctx += best + 4;
    }
    out[2] = per_ctx;
    for (int v = 0; v < kPairs; ++v) out[26 + v] = per_pair[v];
    for (std::size_t j = 0; j < kNumProbs; ++j) {
      double n0 = static_cast<double>(counts[2 * j]), n1 = static_cast<double>(counts[2 * j + 1]);
      if (n0 > 0) out[25] -= n0 * std::log2(n0 / (n0 + n1));
      if (n1 > 0) out[25] -= n1 * std::log2(n1 / (n0 + n1));
    }
    out[3] = *std::min_element(per_pair.begin(), per_pair.end()) + 4;
    double kp = 9 * 4;
    for (int k = 0; k < 9; ++k) {
      double best = 1e300;
      bool any = false;
      for (int v = 0; v < kPairs; ++v)
        if (kind_pair[k * kPairs + v] > 0) {
          any = true;
          best = std::min(best, kind_pair[k * kPairs + v]);
        }
      if (any) kp += best;
    }
    out[4] = kp;
    (void)nused;
    return 0;
  } catch (...) {
    return 1;
  }
}
