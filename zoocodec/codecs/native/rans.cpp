#include "rans.h"

#include <algorithm>
#include <cmath>
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
  // four counters per symbol, used in turn: runs of one symbol do not wait on one counter
  std::vector<std::vector<uint32_t>> local(parts, std::vector<uint32_t>(4 * std::size_t(nsym), 0));
  std::vector<uint64_t> total(nsym, 0);
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
        top = std::max({top, a, b, c, d});
        if (top >= nsym) break;
        ++h[4 * a], ++h[4 * b + 1], ++h[4 * c + 2], ++h[4 * d + 3];
      }
      for (; i < end && top < nsym; ++i) {
        const T a = static_cast<T>(sym[i] + add);
        top = std::max(top, a);
        if (top < nsym) ++h[4 * a];
      }
      if (top >= nsym) {
        bad[t] = 1;
        return;
      }
      std::lock_guard<std::mutex> lock(adding);
      for (uint32_t s = 0; s < nsym; ++s) {
        total[s] += uint64_t(h[4 * s]) + h[4 * s + 1] + h[4 * s + 2] + h[4 * s + 3];
        h[4 * s] = h[4 * s + 1] = h[4 * s + 2] = h[4 * s + 3] = 0;
      }
    }
  });
  for (std::size_t t = 0; t < parts; ++t)
    if (bad[t]) throw std::invalid_argument("symbol outside the alphabet");
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

template <int K, class T>
inline std::size_t encode_lanes(const T* sym, uint64_t m, const EncSym* e, uint16_t* words, std::size_t top,
                                uint32_t* x, T add) {
  uint32_t s[K];
  for (int k = 0; k < K; ++k) s[k] = STATE_LO;
  auto put = [&](uint32_t& st, T v) {
    const EncSym& es = e[v];
    const bool out = st >= es.xmax;  // branch-free: the renormalisation is a coin flip per symbol
    words[top - 1] = static_cast<uint16_t>(st);  // (top >= 1: at most one word per symbol, m + 1 slots)
    top -= out;
    st = out ? st >> 16 : st;
    const uint32_t q = static_cast<uint32_t>((static_cast<unsigned __int128>(st) * es.rcp) >> 48);
    st = st + es.bias + q * es.cmpl;
  };
  uint64_t j = m;
  while (j % K) {  // symbol j uses state j mod K, from the last symbol back
    --j;
    put(s[j % K], static_cast<T>(sym[j] + add));
  }
  while (j) {
    j -= K;
    for (int k = K - 1; k >= 0; --k) put(s[k], static_cast<T>(sym[j + k] + add));
  }
  for (int k = 0; k < K; ++k) x[k] = s[k];
  return top;
}

template <class T>
std::vector<uint8_t> encode_substream(const T* sym, uint64_t m, const std::vector<EncSym>& enc, T add) {
  thread_local std::vector<uint16_t> words;  // reused: a substream's words, written backwards
  words.resize(m + 1);
  const int K = lanes(m);
  uint32_t x[LANES];
  const std::size_t top = K == LANES ? encode_lanes<LANES>(sym, m, enc.data(), words.data(), words.size(), x, add)
                                     : encode_lanes<1>(sym, m, enc.data(), words.data(), words.size(), x, add);
  std::vector<uint8_t> out(4 * K + 2 * (words.size() - top));
  uint8_t* o = out.data();
  for (int k = 0; k < K; ++k) {
    for (int b = 0; b < 4; ++b) *o++ = static_cast<uint8_t>(x[k] >> (8 * b));
  }
  for (std::size_t i = top; i < words.size(); ++i) {
    *o++ = static_cast<uint8_t>(words[i]);
    *o++ = static_cast<uint8_t>(words[i] >> 8);
  }
  return out;
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
  std::size_t parts = (n - 1) / chunk + 1;
  std::vector<std::vector<uint8_t>> bodies(parts);
  std::vector<int> bad(parts, 0);
  parallel_for(parts, threads, [&](std::size_t i) {
    uint64_t lo = i * chunk, m = std::min<uint64_t>(chunk, n - lo);
    for (uint64_t j = lo; check && j < lo + m; ++j) {
      const T v = static_cast<T>(sym[j] + add);
      if (v >= freq.size() || !freq[v]) {
        bad[i] = 1;
        return;
      }
    }
    bodies[i] = encode_substream(sym + lo, m, enc, add);
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

std::vector<Entry> table_of(const std::vector<uint32_t>& freq, int L);

// The slot -> (symbol, frequency, slot - start) table; for 256 symbols or fewer also a
// slot -> symbol byte table plus per-symbol (frequency, start): 8x smaller, cache-resident.
void build_table(Parsed& p, const std::vector<uint32_t>& freq, int L) {
  p.table = table_of(freq, L);
  if (freq.size() <= 256) {
    p.sym8.resize(p.table.size());
    for (std::size_t i = 0; i < p.table.size(); ++i) p.sym8[i] = static_cast<uint8_t>(p.table[i].sym);
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

std::vector<Entry> table_of(const std::vector<uint32_t>& freq, int L) {
  const uint32_t M = 1u << L;
  std::vector<Entry> table(M);
  uint32_t slot = 0;
  for (uint32_t s = 0; s < freq.size(); ++s)
    for (uint32_t k = 0; k < freq[s]; ++k, ++slot)
      table[slot] = Entry{static_cast<uint16_t>(freq[s]), static_cast<uint16_t>(k), static_cast<uint16_t>(s), 0};
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
      const std::size_t tasks = std::max((parts + GROUP - 1) / GROUP, std::min(workers, parts));
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
template void decode_substream<uint8_t>(const Parsed&, std::size_t, uint8_t*);
template void decode_substream<uint16_t>(const Parsed&, std::size_t, uint16_t*);
template void decode<uint8_t>(const Parsed&, uint8_t*, int);
template void decode<uint16_t>(const Parsed&, uint16_t*, int);

}  // namespace zc::rans
