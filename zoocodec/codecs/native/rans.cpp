#include "rans.h"

#include <algorithm>
#include <cmath>
#include <queue>
#include <string>

#include "pool.h"

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
std::vector<uint64_t> histogram(const T* sym, uint64_t n, uint32_t nsym, int threads) {
  std::size_t parts = std::max<std::size_t>(1, std::min<uint64_t>(threads, n / 65536 + 1));
  std::vector<std::vector<uint64_t>> local(parts, std::vector<uint64_t>(nsym, 0));
  std::vector<int> bad(parts, 0);
  parallel_for(parts, threads, [&](std::size_t t) {
    uint64_t lo = n * t / parts, hi = n * (t + 1) / parts;
    auto& h = local[t];
    for (uint64_t i = lo; i < hi; ++i) {
      if (sym[i] >= nsym) {
        bad[t] = 1;
        return;
      }
      ++h[sym[i]];
    }
  });
  for (std::size_t t = 0; t < parts; ++t)
    if (bad[t]) throw std::invalid_argument("symbol outside the alphabet");
  for (std::size_t t = 1; t < parts; ++t)
    for (uint32_t s = 0; s < nsym; ++s) local[0][s] += local[t][s];
  return local[0];
}

template <class T>
std::vector<uint8_t> encode_substream(const T* sym, uint64_t m, const std::vector<uint32_t>& freq,
                                      const std::vector<uint32_t>& cum, int L) {
  std::vector<uint16_t> words(m + 1);
  std::size_t top = words.size();
  const int K = lanes(m);
  std::vector<uint32_t> x(K, STATE_LO);
  const uint32_t shift = 32 - L;
  for (uint64_t j = m; j-- > 0;) {
    uint32_t& s = x[j % K];
    uint32_t f = freq[sym[j]];
    if (s >= (f << shift)) {
      words[--top] = static_cast<uint16_t>(s);
      s >>= 16;
    }
    s = ((s / f) << L) + (s % f) + cum[sym[j]];
  }
  std::vector<uint8_t> out(4 * K + 2 * (words.size() - top));
  uint8_t* o = out.data();
  for (uint32_t s : x) {
    for (int b = 0; b < 4; ++b) *o++ = static_cast<uint8_t>(s >> (8 * b));
  }
  for (std::size_t i = top; i < words.size(); ++i) {
    *o++ = static_cast<uint8_t>(words[i]);
    *o++ = static_cast<uint8_t>(words[i] >> 8);
  }
  return out;
}

}  // namespace

std::vector<uint32_t> normalise(const std::vector<uint64_t>& counts, int* L) {
  double total = 0;
  std::size_t present = 0;
  for (uint64_t c : counts) {
    total += static_cast<double>(c);
    present += c != 0;
  }
  std::vector<uint32_t> best = quantise(counts, 1u << 16, total);
  double best_cost = cost_bits(counts, best, 16);
  *L = 16;
  for (int bits = 1; bits < 16; ++bits) {
    if ((1u << bits) < 2 * present) continue;
    std::vector<uint32_t> f = quantise(counts, 1u << bits, total);
    if (cost_bits(counts, f, bits) <= best_cost * 1.0001 + 8) {
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

template <class T>
void encode_body(const T* sym, uint64_t n, const std::vector<uint32_t>& freq, int L, uint64_t chunk,
                 int threads, Writer& w) {
  if (chunk < 1) throw std::invalid_argument("chunk must be positive");
  std::vector<uint32_t> cum(freq.size() + 1, 0);
  for (std::size_t s = 0; s < freq.size(); ++s) cum[s + 1] = cum[s] + freq[s];
  w.uvarint(chunk);
  if (n == 0) return;
  std::size_t parts = (n - 1) / chunk + 1;
  std::vector<std::vector<uint8_t>> bodies(parts);
  std::vector<int> bad(parts, 0);
  parallel_for(parts, threads, [&](std::size_t i) {
    uint64_t lo = i * chunk, m = std::min<uint64_t>(chunk, n - lo);
    for (uint64_t j = lo; j < lo + m; ++j)
      if (sym[j] >= freq.size() || !freq[sym[j]]) {
        bad[i] = 1;
        return;
      }
    bodies[i] = encode_substream(sym + lo, m, freq, cum, L);
  });
  for (int b : bad)
    if (b) throw std::invalid_argument("a symbol the frequency table does not hold");
  for (auto& b : bodies) w.uvarint(b.size());
  for (auto& b : bodies) w.bytes(b.data(), b.size());
}

template <class T>
void encode(const T* sym, uint64_t n, uint32_t nsym, uint64_t chunk, int threads, Writer& w) {
  if (nsym < 1 || nsym > MAX_NSYM) throw std::invalid_argument("alphabet size must be 1..65536");
  if (chunk < 1) throw std::invalid_argument("chunk must be positive");
  w.uvarint(n);
  w.uvarint(nsym);
  if (n == 0) return;
  std::vector<uint64_t> counts = histogram(sym, n, nsym, threads);
  std::size_t present = 0, only = 0;
  for (uint32_t s = 0; s < nsym; ++s)
    if (counts[s]) ++present, only = s;
  if (present == 1) {
    w.byte(0);
    w.uvarint(only);
    return;
  }
  int L;
  std::vector<uint32_t> freq = normalise(counts, &L);
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
  encode_body(sym, n, freq, L, chunk, threads, w);
}

namespace {

std::vector<Entry> build_table(const std::vector<uint32_t>& freq, int L) {
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
  p.table = build_table(freq, L);
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
  p.table = build_table(freq, p.L);
  read_body(r, p);
  return p;
}

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
  // Each symbol reads at most one word: whole groups run unchecked while enough are left.
  for (; K == LANES && j + LANES <= m && static_cast<std::size_t>(end - q) >= 2 * LANES; j += LANES) {
    for (int k = 0; k < LANES; ++k) {
      const Entry e = tab[x[k] & mask];
      out[j + k] = static_cast<T>(e.sym);
      x[k] = e.freq * (x[k] >> L) + e.bias;
      if (x[k] < STATE_LO) {
        x[k] = (x[k] << 16) | load16(q);
        q += 2;
      }
    }
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
  parallel_for(p.body.size(), threads, [&](std::size_t i) { decode_substream(p, i, out + i * p.chunk); });
}

template void encode<uint8_t>(const uint8_t*, uint64_t, uint32_t, uint64_t, int, Writer&);
template void encode<uint16_t>(const uint16_t*, uint64_t, uint32_t, uint64_t, int, Writer&);
template void encode_body<uint8_t>(const uint8_t*, uint64_t, const std::vector<uint32_t>&, int, uint64_t, int, Writer&);
template void encode_body<uint16_t>(const uint16_t*, uint64_t, const std::vector<uint32_t>&, int, uint64_t, int,
                                    Writer&);
template void decode_substream<uint8_t>(const Parsed&, std::size_t, uint8_t*);
template void decode_substream<uint16_t>(const Parsed&, std::size_t, uint16_t*);
template void decode<uint8_t>(const Parsed&, uint8_t*, int);
template void decode<uint16_t>(const Parsed&, uint16_t*, int);

}  // namespace zc::rans
