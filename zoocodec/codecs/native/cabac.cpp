#include "cabac.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>
#include <stdexcept>
#include <string>

#include "bytes.h"
#include "pool.h"

namespace zc::cabac {
namespace {


constexpr uint8_t kVersion = 1;
constexpr int kProbBits = 15;
constexpr uint32_t kProbMin = 32;                      // of 2^15: a bin costs >= 0.0014 bits
constexpr uint64_t kLevelsPerByte = 6000;              // so a byte holds < 5700 bins
constexpr int kGt = 6;                                 // greater-than flags before the remainder
constexpr int kBuckets = 24;                           // activity classes
constexpr int kFastRate = 6, kSlowRate = 10;          // estimator rates, 2^-rate
constexpr uint16_t kSettled = 2048;                    // bins after which rates stay fixed
constexpr int kEgPrefix = 30;                          // remainder < 2^30
constexpr int kMaxStates = 8;
constexpr int32_t kMaxMagnitude = (1 << 29);           // |level| the coder accepts
constexpr uint64_t kInitMin = 16;                      // bins a context needs for an initial probability
constexpr uint64_t kClassMinRun = 16;                  // rows/columns shorter than this get no class

// Activity thresholds in 1/16 of a level (ratio ~1.26): bucket = thresholds <= t.
constexpr uint16_t kThresholds[kBuckets - 1] = {1,   3,   6,   10,  14,  19,  25,  32,  41,  52,  66,  84,
                                                106, 134, 170, 215, 272, 344, 435, 550, 696, 880, 1113};

struct BucketTable {
  uint8_t of[2048];
  BucketTable() {
    for (int t = 0; t < 2048; ++t) {
      int b = 0;
      while (b < kBuckets - 1 && kThresholds[b] <= t) ++b;
      of[t] = static_cast<uint8_t>(b);
    }
  }
};
const BucketTable kBucket;

// State machines of dependent quantization: next[state][parity], quantizer of a state.
constexpr uint8_t kNext4[4][2] = {{0, 2}, {2, 0}, {1, 3}, {3, 1}};
constexpr uint8_t kNext8[8][2] = {{0, 2}, {7, 5}, {1, 3}, {6, 4}, {2, 0}, {5, 7}, {3, 1}, {4, 6}};

inline int quantizer(int trellis, int state) { return trellis == kDq4Rows ? state >> 1 : state & 1; }

// An adaptive binary probability: two estimators of P(bin = 1) in 16 bits, a fast one
// (rate 2^-6) and a slow one (2^-10), averaged. Over a context's first bins both adapt
// at 1 / 2^bitlength(bins seen + 2), close to counting, so they learn fast, then settle.
struct Prob {
  uint16_t fast = 1u << 15, slow = 1u << 15;
  uint16_t seen = 0;
  uint32_t p1() const {
    uint32_t p = (static_cast<uint32_t>(fast) + slow) >> 2;  // 15 bits
    return std::clamp<uint32_t>(p, kProbMin, (1u << kProbBits) - kProbMin);
  }
  void update(int bin) {
    int rf = kFastRate, rs = kSlowRate;
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
};

// 32-bit binary range coder with carry propagation (as in LZMA's).
class Encoder {
 public:
  explicit Encoder(std::vector<uint8_t>& out) : out_(out) {}
  int bin(Prob& p, int bit) {
    uint32_t bound = (range_ >> kProbBits) * ((1u << kProbBits) - p.p1());
    if (bit) {
      low_ += bound;
      range_ -= bound;
    } else {
      range_ = bound;
    }
    p.update(bit);
    normalize();
    return bit;
  }
  int bypass(int bit) {
    range_ >>= 1;
    if (bit) low_ += range_;
    normalize();
    return bit;
  }
  void finish() {
    for (int i = 0; i < 5; ++i) shift_low();
  }

 private:
  void normalize() {
    while (range_ < (1u << 24)) {
      range_ <<= 8;
      shift_low();
    }
  }
  void shift_low() {
    if (static_cast<uint32_t>(low_) < 0xFF000000u || (low_ >> 32) != 0) {
      uint8_t carry = static_cast<uint8_t>(low_ >> 32);
      uint8_t b = cache_;
      do {
        out_.push_back(static_cast<uint8_t>(b + carry));
        b = 0xFF;
      } while (--pending_ != 0);
      cache_ = static_cast<uint8_t>(low_ >> 24);
    }
    ++pending_;
    low_ = (low_ & 0x00FFFFFFu) << 8;
  }
  std::vector<uint8_t>& out_;
  uint64_t low_ = 0;
  uint32_t range_ = 0xFFFFFFFFu;
  uint8_t cache_ = 0;
  uint64_t pending_ = 1;
};

// Reads only inside [p, end): past the end it sees zero bytes (a truncated stream
// decodes to some levels, which the caller's CRC and the count cap stand guard over).
class Decoder {
 public:
  Decoder(const uint8_t* p, const uint8_t* end) : p_(p), end_(end) {
    for (int i = 0; i < 5; ++i) code_ = (code_ << 8) | next();
  }
  int bin(Prob& p, int) {
    uint32_t bound = (range_ >> kProbBits) * ((1u << kProbBits) - p.p1());
    int bit;
    if (code_ < bound) {
      range_ = bound;
      bit = 0;
    } else {
      code_ -= bound;
      range_ -= bound;
      bit = 1;
    }
    p.update(bit);
    normalize();
    return bit;
  }
  int bypass(int) {
    range_ >>= 1;
    int bit = code_ >= range_;
    if (bit) code_ -= range_;
    normalize();
    return bit;
  }

 private:
  uint32_t next() { return p_ < end_ ? *p_++ : 0u; }
  void normalize() {
    while (range_ < (1u << 24)) {
      range_ <<= 8;
      code_ = (code_ << 8) | next();
    }
  }
  const uint8_t* p_;
  const uint8_t* end_;
  uint32_t code_ = 0;
  uint32_t range_ = 0xFFFFFFFFu;
};

// Ideal code length, in 1/1024 bit: a model evaluator for cost_bits.
struct CostTable {
  float bits[(1u << kProbBits) + 1];
  CostTable() {
    for (uint32_t p = 1; p <= (1u << kProbBits); ++p) bits[p] = static_cast<float>(-std::log2(p / 32768.0));
    bits[0] = 32.0f;
  }
};

class Counter {
 public:
  explicit Counter(const CostTable& t) : t_(t) {}
  int bin(Prob& p, int bit) {
    uint32_t p1 = p.p1();
    bits += t_.bits[bit ? p1 : (1u << kProbBits) - p1];
    p.update(bit);
    return bit;
  }
  int bypass(int bit) {
    bits += 1.0f;
    return bit;
  }
  float bits = 0;

 private:
  const CostTable& t_;
};

template <class C>
constexpr bool kCounts = std::is_same_v<C, Counter>;

struct Contexts {
  Prob sig[kMaxStates][kBuckets];
  Prob sign[kMaxStates][3];
  Prob gt[kGt][2][kBuckets];
  Prob eg[kBuckets][kEgPrefix + 1];
};

constexpr std::size_t kNumProbs = sizeof(Contexts) / sizeof(Prob);
static_assert(sizeof(Contexts) == kNumProbs * sizeof(Prob), "Contexts holds only Probs");

// Initial probabilities a stream may set per context: P(1) = 1 / (1 + e^-x) for
// x = -7.875 + i / 4, in 1/65536 (integers, so every machine starts alike).
constexpr uint16_t kInitP[64] = {
    25,    32,    41,    53,    68,    87,    111,   143,   184,   236,   302,   387,   497,   636,   815,   1042,
    1333,  1701,  2168,  2758,  3500,  4427,  5577,  6992,  8714,  10782, 13226, 16062, 19282, 22849, 26695, 30723,
    34813, 38841, 42687, 46254, 49474, 52310, 54754, 56822, 58544, 59959, 61109, 62036, 62778, 63368, 63835, 64203,
    64494, 64721, 64900, 65039, 65149, 65234, 65300, 65352, 65393, 65425, 65449, 65468, 65483, 65495, 65504, 65511};

// Counts each context's bins (the encoder's first pass); codes nothing.
class Tally {
 public:
  Tally() : counts(kNumProbs * 2, 0) {}
  int bin(Prob& p, int bit) {
    ++counts[2 * static_cast<std::size_t>(&p - base) + bit];
    return bit;
  }
  int bypass(int bit) { return bit; }
  const Prob* base = nullptr;
  std::vector<uint64_t> counts;
};

// Activity classes, round(2 log2(mean |level| + 1/2)): one per half octave.
constexpr int kClassMin = -2, kClassMax = 62;
constexpr uint8_t kRowClasses = 1, kColClasses = 2;

// What every substream shares: the shape, the trellis, and the activity classes.
struct Plan {
  uint64_t rows = 0, cols = 0, count = 0, len = 0, n = 0;
  int trellis = kNone;
  uint8_t layout = 0;
  int global = 0;
  std::vector<int8_t> row_class, col_class;
  std::vector<uint8_t> state;  // trellis state at each substream's start
  std::vector<uint8_t> init;   // per context: 0 (start at 1/2, warm up) or 1 + index into kInitP

  // 16 x the expected |level| at (row, col): 2^(e/2) in integer arithmetic.
  uint32_t predicted(uint64_t row, uint64_t col) const {
    int e = global;
    if (layout & kRowClasses) e += row_class[row] - global;
    if (layout & kColClasses) e += col_class[col] - global;
    e = std::clamp(e, -16, 36);
    uint32_t base = e >= 0 ? (16u << (e >> 1)) : (16u >> ((-e + 1) >> 1));
    return (e & 1) ? (base * 181) >> 7 : base;  // x sqrt(2) for odd half octaves
  }
};

// Exp-Golomb of order `order` with a context-coded prefix: `value` < 2^cap.
template <bool ENC, class Coder>
uint32_t code_egk(Coder& coder, Prob* prefix, int contexts, int order, uint32_t value) {
  int k = order, j = 0;
  uint32_t base = 0;
  if constexpr (ENC) {
    while (value - base >= (1u << k)) {
      coder.bin(prefix[std::min(j++, contexts - 1)], 1);
      base += 1u << k;
      ++k;
    }
    coder.bin(prefix[std::min(j, contexts - 1)], 0);
    uint32_t r = value - base;
    for (int b = k - 1; b >= 0; --b) coder.bypass((r >> b) & 1);
    return value;
  } else {
    while (coder.bin(prefix[std::min(j++, contexts - 1)], 0)) {
      base += 1u << k;
      if (++k >= kEgPrefix) throw Corrupt("cabac: value out of range");
    }
    uint32_t r = 0;
    for (int b = k - 1; b >= 0; --b) r = (r << 1) | static_cast<uint32_t>(coder.bypass(0));
    return base + r;
  }
}

// Exp-Golomb (order 0) with context-coded prefix: `value` < 2^cap.
template <bool ENC, class Coder>
uint32_t code_eg(Coder& coder, Prob* prefix, int contexts, int cap, uint32_t value) {
  int n = 0;
  if constexpr (ENC) {
    while ((value + 1) >> (n + 1)) ++n;
    for (int j = 0; j < n; ++j) coder.bin(prefix[std::min(j, contexts - 1)], 1);
    coder.bin(prefix[std::min(n, contexts - 1)], 0);
    for (int j = n - 1; j >= 0; --j) coder.bypass(((value + 1) >> j) & 1);
    return value;
  } else {
    while (coder.bin(prefix[std::min(n, contexts - 1)], 0)) {
      if (++n >= cap) throw Corrupt("cabac: value out of range");
    }
    uint32_t v = 1;
    for (int j = 0; j < n; ++j) v = (v << 1) | static_cast<uint32_t>(coder.bypass(0));
    return v - 1;
  }
}

// Classes as differences from the previous one (zero flag, sign, Exp-Golomb magnitude).
template <bool ENC, class Coder>
void code_classes(Coder& coder, std::vector<int8_t>& classes) {
  Prob zero, sign, mag[8];
  int prev = 0;
  for (auto& c : classes) {
    int d = ENC ? c - prev : 0;
    if (coder.bin(zero, d != 0)) {
      int neg = coder.bin(sign, d < 0);
      uint32_t a = code_eg<ENC>(coder, mag, 8, 8, ENC ? static_cast<uint32_t>(std::abs(d) - 1) : 0) + 1;
      d = neg ? -static_cast<int>(a) : static_cast<int>(a);
    }
    int v = prev + d;
    if (v < kClassMin || v > kClassMax) throw Corrupt("cabac: activity class out of range");
    c = static_cast<int8_t>(v);
    prev = v;
  }
}

// One substream: levels [begin, end) of the walk, levels[0] the one at `begin`. ENC codes
// levels[]; otherwise levels[] receives the decoded values. A Counter also writes each level's bits to costs.
template <bool ENC, class Coder>
void code_substream(Coder& coder, int32_t* levels, uint64_t begin, uint64_t end, const Plan& plan, int state,
                    float* costs) {
  auto ctx = std::make_unique<Contexts>();
  Prob* probs = reinterpret_cast<Prob*>(ctx.get());
  if constexpr (std::is_same_v<Coder, Tally>) coder.base = probs;
  if (!plan.init.empty()) {
    for (std::size_t j = 0; j < kNumProbs; ++j) {
      if (plan.init[j]) {
        probs[j].fast = probs[j].slow = kInitP[plan.init[j] - 1];
        probs[j].seen = kSettled;
      }
    }
  }
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
    int32_t k = ENC ? levels[i - begin] : 0;
    uint32_t mag = ENC ? static_cast<uint32_t>(k < 0 ? -static_cast<int64_t>(k) : k) : 0;
    float before = 0;
    if constexpr (kCounts<Coder>) before = coder.bits;
    uint32_t m = 0;
    if (coder.bin(ctx->sig[state][bucket], mag != 0)) {
      int neg = coder.bin(ctx->sign[state][left_sign], k < 0);
      int q = quantizer(trellis, state);
      m = 1;
      int g = 0;
      for (; g < kGt; ++g) {
        if (!coder.bin(ctx->gt[g][q][bucket], mag > m)) break;
        ++m;
      }
      if (g == kGt) {  // the rest: Exp-Golomb of an order that grows with the expected magnitude
        int order = 0;
        while (order < 12 && (64u << order) <= t) ++order;
        m += code_egk<ENC>(coder, ctx->eg[bucket], kEgPrefix + 1, order, ENC ? mag - m : 0);
      }
      k = neg ? -static_cast<int32_t>(m) : static_cast<int32_t>(m);
      left_sign = neg ? 1 : 2;
    } else {
      k = 0;
      left_sign = 0;
    }
    if constexpr (!ENC) levels[i - begin] = k;
    if constexpr (kCounts<Coder>) costs[i] = coder.bits - before;
    if (trellis != kNone) state = next[state][m & 1];
    if (++col == cols) {
      col = 0;
      ++row;
    }
  }
}

// Whole rows per substream, or equal pieces of one row when a row is longer.
uint64_t substream_length(uint64_t cols, uint64_t target, uint64_t count) {
  target = std::max<uint64_t>(target, 1);
  return std::min(count, cols <= target ? (target / cols) * cols : target);
}

void put_uvarint(std::vector<uint8_t>& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v) | 0x80);
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

int activity_class(double mean_abs) {
  return std::clamp(static_cast<int>(std::lround(2 * std::log2(mean_abs + 0.5))), kClassMin, kClassMax);
}

// Initial probabilities from a counting pass over the whole tensor: contexts that see
// at least kInitMin bins start at their tensor-wide frequency (nearest kInitP entry).
void choose_init(const int32_t* levels, Plan& p) {
  Tally tally;
  for (uint64_t s = 0; s < p.n; ++s)
    code_substream<true>(tally, const_cast<int32_t*>(levels) + s * p.len, s * p.len, std::min(p.count, (s + 1) * p.len), p,
                         p.state[s], nullptr);
  p.init.assign(kNumProbs, 0);
  for (std::size_t j = 0; j < kNumProbs; ++j) {
    uint64_t n0 = tally.counts[2 * j], n1 = tally.counts[2 * j + 1];
    if (n0 + n1 < kInitMin) continue;
    double x = std::log((n1 + 0.5) / (n0 + 0.5));
    p.init[j] = static_cast<uint8_t>(std::clamp(std::lround((x + 7.875) * 4), 0L, 63L) + 1);
  }
}

// The encoder's plan: substreams, their start states, and the activity classes.
Plan make_plan(const int32_t* levels, uint64_t rows, uint64_t cols, int trellis, uint64_t substream) {
  if (trellis < kNone || trellis > kNnr8) throw std::invalid_argument("cabac: trellis must be 0, 1 or 2");
  Plan p;
  p.rows = rows;
  p.cols = cols;
  p.count = rows * cols;
  p.trellis = trellis;
  if (p.count == 0) return p;
  p.len = substream_length(cols, substream, p.count);
  p.n = (p.count + p.len - 1) / p.len;
  std::vector<double> row_sum(rows, 0.0), col_sum(cols, 0.0);
  double total = 0;
  const uint8_t(*next)[2] = trellis == kNnr8 ? kNext8 : kNext4;
  int state = 0;
  for (uint64_t i = 0, r = 0, c = 0; i < p.count; ++i) {
    int32_t v = levels[i];
    if (v > kMaxMagnitude || v < -kMaxMagnitude) throw std::invalid_argument("cabac: a level exceeds 2^29 in magnitude");
    if (trellis == kDq4Rows && c == 0) state = 0;
    if (i % p.len == 0) p.state.push_back(static_cast<uint8_t>(state));
    if (trellis != kNone) state = next[state][static_cast<uint32_t>(v) & 1];
    double a = std::abs(static_cast<double>(v));
    row_sum[r] += a;
    col_sum[c] += a;
    total += a;
    if (++c == cols) {
      c = 0;
      ++r;
    }
  }
  p.global = activity_class(total / p.count);
  if (cols >= kClassMinRun && rows > 1) p.layout |= kRowClasses;
  if (rows >= kClassMinRun) p.layout |= kColClasses;
  if (p.layout & kRowClasses) {
    p.row_class.resize(rows);
    for (uint64_t r = 0; r < rows; ++r) p.row_class[r] = static_cast<int8_t>(activity_class(row_sum[r] / cols));
  }
  if (p.layout & kColClasses) {
    p.col_class.resize(cols);
    for (uint64_t c = 0; c < cols; ++c) p.col_class[c] = static_cast<int8_t>(activity_class(col_sum[c] / rows));
  }
  if (p.n > 1) choose_init(levels, p);  // one substream learns as fast as the side bits cost
  return p;
}

// Which contexts start from a given probability, and which (6 bits each).
template <bool ENC, class Coder>
void code_init(Coder& coder, std::vector<uint8_t>& init) {
  Prob used;
  for (auto& v : init) {
    if (coder.bin(used, v != 0)) {
      uint32_t q = 0;
      for (int b = 5; b >= 0; --b) q = (q << 1) | static_cast<uint32_t>(coder.bypass(ENC ? ((v - 1) >> b) & 1 : 0));
      v = static_cast<uint8_t>(q + 1);
    } else {
      v = 0;
    }
  }
}

std::vector<uint8_t> side_bytes(Plan& p) {
  std::vector<uint8_t> side;
  Encoder enc(side);
  code_classes<true>(enc, p.row_class);
  code_classes<true>(enc, p.col_class);
  if (p.init.empty()) p.init.assign(kNumProbs, 0);
  code_init<true>(enc, p.init);
  enc.finish();
  return side;
}

}  // namespace

std::vector<uint8_t> encode(const int32_t* levels, uint64_t rows, uint64_t cols, int trellis, uint64_t substream,
                            int threads) {
  Plan p = make_plan(levels, rows, cols, trellis, substream);
  std::vector<uint8_t> out;
  out.push_back(kVersion);
  put_uvarint(out, p.count ? rows : 0);
  out.push_back(static_cast<uint8_t>(trellis));
  if (p.count == 0) return out;
  put_uvarint(out, p.len);
  out.push_back(p.layout);
  put_uvarint(out, static_cast<uint64_t>(p.global - kClassMin));
  std::vector<uint8_t> side = side_bytes(p);
  put_uvarint(out, side.size());
  out.insert(out.end(), side.begin(), side.end());
  std::vector<std::vector<uint8_t>> parts(p.n);
  parallel_for(p.n, threads <= 0 ? default_threads() : threads, [&](std::size_t s) {
    uint64_t b = s * p.len, e = std::min(p.count, b + p.len);
    Encoder enc(parts[s]);
    code_substream<true>(enc, const_cast<int32_t*>(levels) + b, b, e, p, p.state[s], nullptr);
    enc.finish();
  });
  for (uint64_t s = 0; s < p.n; ++s) {
    put_uvarint(out, parts[s].size());
    if (trellis != kNone) out.push_back(p.state[s]);
  }
  for (auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

struct Stream::Parsed {
  Plan plan;
  std::vector<const uint8_t*> begin, end;
};

Stream::Stream(const uint8_t* data, std::size_t size, uint64_t count) : p_(std::make_unique<Parsed>()) {
  Reader r(data, size);
  Plan& l = p_->plan;
  if (r.byte() != kVersion) throw Corrupt("cabac: unknown stream version");
  l.rows = r.uvarint(count);
  l.trellis = r.byte();
  if (l.trellis > kNnr8) throw Corrupt("cabac: unknown trellis");
  l.count = count;
  if (count == 0) {
    if (r.left()) throw Corrupt("cabac: trailing bytes");
    return;
  }
  if (l.rows == 0 || count % l.rows) throw Corrupt("cabac: rows do not divide the level count");
  l.cols = count / l.rows;
  l.len = r.uvarint(count);
  if (l.len == 0 || (l.len % l.cols != 0 && l.len >= l.cols)) throw Corrupt("cabac: bad substream length");
  l.n = (count + l.len - 1) / l.len;
  l.layout = r.byte();
  if (l.layout > (kRowClasses | kColClasses)) throw Corrupt("cabac: unknown class layout");
  l.global = static_cast<int>(r.uvarint(kClassMax - kClassMin)) + kClassMin;
  {
    uint64_t side = r.uvarint(r.left());
    uint64_t classes = (l.layout & kRowClasses ? l.rows : 0) + (l.layout & kColClasses ? l.cols : 0);
    if ((classes + kNumProbs) / kLevelsPerByte > side) throw Corrupt("cabac: more classes than bytes hold");
    const uint8_t* p = r.take(side);
    Decoder dec(p, p + side);
    if (l.layout & kRowClasses) l.row_class.resize(l.rows);
    if (l.layout & kColClasses) l.col_class.resize(l.cols);
    code_classes<false>(dec, l.row_class);
    code_classes<false>(dec, l.col_class);
    l.init.assign(kNumProbs, 0);
    code_init<false>(dec, l.init);
  }
  if (l.n > r.left()) throw Corrupt("cabac: more substreams than bytes");
  std::vector<uint64_t> sizes(l.n);
  l.state.assign(l.n, 0);
  for (uint64_t s = 0; s < l.n; ++s) {
    sizes[s] = r.uvarint(r.left());
    if (l.trellis != kNone) {
      l.state[s] = r.byte();
      if (l.state[s] >= (l.trellis == kNnr8 ? 8 : 4)) throw Corrupt("cabac: bad trellis state");
    }
  }
  p_->begin.resize(l.n);
  p_->end.resize(l.n);
  for (uint64_t s = 0; s < l.n; ++s) {
    uint64_t levels = std::min(count, (s + 1) * l.len) - s * l.len;
    if (levels / kLevelsPerByte > sizes[s]) throw Corrupt("cabac: a substream claims more levels than its bytes hold");
    p_->begin[s] = r.take(sizes[s]);
    p_->end[s] = p_->begin[s] + sizes[s];
  }
  if (r.left()) throw Corrupt("cabac: trailing bytes");
}

Stream::~Stream() = default;
uint64_t Stream::rows() const { return p_->plan.rows; }
int Stream::trellis() const { return p_->plan.trellis; }
uint64_t Stream::substreams() const { return p_->plan.n; }
uint64_t Stream::length() const { return p_->plan.len; }

void Stream::decode(uint64_t s, int32_t* out) const {
  const Plan& l = p_->plan;
  const uint64_t b = s * l.len, e = std::min(l.count, b + l.len);
  Decoder dec(p_->begin[s], p_->end[s]);
  code_substream<false>(dec, out, b, e, l, l.state[s], nullptr);
}

std::pair<uint64_t, int> stream_info(const uint8_t* data, std::size_t size) {
  Reader r(data, size);
  if (r.byte() != kVersion) throw Corrupt("cabac: unknown stream version");
  uint64_t rows = r.uvarint(UINT64_MAX);
  return {rows, r.byte()};
}

void decode(const uint8_t* data, std::size_t size, int32_t* out, uint64_t count, int threads) {
  const Stream stream(data, size, count);
  parallel_for(stream.substreams(), threads <= 0 ? default_threads() : threads,
               [&](std::size_t s) { stream.decode(s, out + s * stream.length()); });
}

void cost_bits(const int32_t* levels, uint64_t rows, uint64_t cols, int trellis, uint64_t substream, float* bits_out,
               int threads) {
  Plan p = make_plan(levels, rows, cols, trellis, substream);
  if (p.count == 0) return;
  static const CostTable table;
  parallel_for(p.n, threads <= 0 ? default_threads() : threads, [&](std::size_t s) {
    uint64_t b = s * p.len, e = std::min(p.count, b + p.len);
    Counter c(table);
    code_substream<true>(c, const_cast<int32_t*>(levels) + b, b, e, p, p.state[s], bits_out);
  });
}

}  // namespace zc::cabac

extern "C" int zc_cabac_decode(const uint8_t* data, std::size_t size, int32_t* out, uint64_t count, int threads) {
  try {
    zc::cabac::decode(data, size, out, count, threads);
    return 0;
  } catch (const zc::Corrupt&) {
    return 1;
  } catch (...) {
    return 2;
  }
}
