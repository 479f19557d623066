// Canonical Huffman streams of byte symbols (huffman.h): code lengths, the encoder, and a
// decoder that reads up to 5 symbols with one lookup of a 12-bit table and advances up to 8
// substreams together, so that the lookups of one hide the latency of the others.
#include "huffman.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <queue>
#include <stdexcept>
#include <string>
#include <utility>

#include "pool.h"

namespace zc::huff {

namespace {

constexpr uint64_t SLOTS = uint64_t(1) << LIMIT;
constexpr std::ptrdiff_t ROOM = 24;  // output bytes a round of 4 lookups may touch (5 symbols, an 8-byte store each)

// With BMI2 the decoder's shifts take their count from any register (shlx), not only cl, and the
// hot loop keeps every substream's state in registers: built twice, picked by the CPU.
#if defined(__x86_64__)
#define ZC_BMI2 __attribute__((target("bmi2")))
const bool BMI2 = __builtin_cpu_supports("bmi2");
#else
#define ZC_BMI2
const bool BMI2 = false;
#endif

inline uint64_t varint_bytes(uint64_t v) {
  uint64_t k = 1;
  while (v >= 128) v >>= 7, ++k;
  return k;
}

// Canonical codes of these lengths: shorter codes first, then by symbol.
void canonical(const uint8_t* len, uint32_t* code) {
  uint32_t count[LIMIT + 1] = {}, next[LIMIT + 1] = {};
  for (int s = 0; s < 256; ++s) count[len[s]] += len[s] != 0;
  for (int l = 1, c = 0; l <= LIMIT; ++l) {
    c = (c + count[l - 1]) << 1;
    next[l] = static_cast<uint32_t>(c);
  }
  for (int s = 0; s < 256; ++s) code[s] = len[s] ? next[len[s]]++ : 0;
}

inline uint64_t load_be64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}

// The 8 bytes from p[at] on, zeros past p[len].
inline uint64_t load_be64_safe(const uint8_t* p, std::size_t len, std::size_t at) {
  if (at + 8 <= len) return load_be64(p + at);
  uint8_t b[8] = {};
  if (at < len) std::memcpy(b, p + at, len - at);
  return load_be64(b);
}

inline void store64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

struct Sub {
  const uint8_t* b;
  std::size_t len;  // bytes
  uint64_t pos;     // bits read
  uint8_t* o;
  uint8_t* end;
};

// S substreams advanced together in registers, 4 lookups each from one 8-byte load per round
// (a load holds at least 57 unread bits, 4 lookups take at most 48), while every one has room for
// the round: 20 symbols of output and 8 bytes of input (each lookup stores 8 bytes: 24).
template <int S>
__attribute__((always_inline)) inline void advance_body(const uint64_t* __restrict table, Sub* sub) {
  const uint8_t* b[S];
  uint64_t pos[S], stop[S];
  uint8_t* o[S];
  uint8_t* end[S];
  for (int k = 0; k < S; ++k) {
    b[k] = sub[k].b, pos[k] = sub[k].pos, o[k] = sub[k].o;
    stop[k] = sub[k].len >= 8 ? sub[k].len - 8 : 0;
    end[k] = sub[k].len >= 8 ? sub[k].end : o[k];  // (no whole word to read: no room)
  }
  for (;;) {
    bool room = true;
    for (int k = 0; k < S; ++k) room &= (end[k] - o[k] >= ROOM) & ((pos[k] >> 3) <= stop[k]);
    if (!room) break;
    uint64_t v[S];
    for (int k = 0; k < S; ++k) v[k] = load_be64(b[k] + (pos[k] >> 3)) << (pos[k] & 7);
    for (int r = 0; r < 4; ++r) {
      for (int k = 0; k < S; ++k) {
        const uint64_t e = table[v[k] >> (64 - LIMIT)];
        store64(o[k], e >> 8);
        o[k] += e >> 48 & 0xff;
        v[k] <<= e & 63;  // (the bits in the low byte: the shift takes the entry as it is)
        pos[k] += e & 0xff;
      }
    }
  }
  for (int k = 0; k < S; ++k) sub[k].pos = pos[k], sub[k].o = o[k];
}

template <int S>
ZC_BMI2 void advance_bmi2(const uint64_t* table, Sub* sub) { advance_body<S>(table, sub); }

template <int S>
void advance(const uint64_t* table, Sub* sub) {
  if (BMI2)
    advance_bmi2<S>(table, sub);
  else
    advance_body<S>(table, sub);
}

// The rest of a substream one symbol at a time, then its end checks.
void finish(const uint64_t* table, Sub& s) {
  const uint64_t total = uint64_t(s.len) * 8;
  while (s.o < s.end) {
    const uint64_t v = load_be64_safe(s.b, s.len, s.pos >> 3) << (s.pos & 7);
    const uint64_t e = table[v >> (64 - LIMIT)];
    const uint64_t bits = e >> 56;
    if (s.pos + bits > total) throw Corrupt("substream ends early");
    *s.o++ = static_cast<uint8_t>(e >> 8);
    s.pos += bits;
  }
  if ((s.pos + 7) / 8 != s.len) throw Corrupt("substream has bytes left over");
  if ((s.pos & 7) && static_cast<uint8_t>(s.b[s.len - 1] << (s.pos & 7)) != 0)
    throw Corrupt("substream padding is not zero");
}

}  // namespace

void lengths(const uint64_t* counts, uint8_t* len) {
  std::fill(len, len + 256, 0);
  std::vector<int> present;
  for (int s = 0; s < 256; ++s)
    if (counts[s]) present.push_back(s);
  const std::size_t k = present.size();
  if (k < 2) return;
  // Huffman's tree, ties broken by node number (leaves in symbol order first): deterministic
  std::vector<uint64_t> weight(2 * k);
  std::vector<int> parent(2 * k, -1);
  using Node = std::pair<uint64_t, std::size_t>;
  std::priority_queue<Node, std::vector<Node>, std::greater<Node>> queue;
  for (std::size_t i = 0; i < k; ++i) queue.push({weight[i] = counts[present[i]], i});
  for (std::size_t next = k; queue.size() > 1; ++next) {
    const Node a = queue.top();
    queue.pop();
    const Node b = queue.top();
    queue.pop();
    parent[a.second] = parent[b.second] = static_cast<int>(next);
    queue.push({weight[next] = a.first + b.first, next});
  }
  std::vector<uint64_t> per(std::max<std::size_t>(k, LIMIT) + 1);  // leaves per depth (a depth is below k)
  std::size_t deepest = 0;
  for (std::size_t i = 0; i < k; ++i) {
    std::size_t d = 0;
    for (int j = static_cast<int>(i); parent[j] >= 0; j = parent[j]) ++d;
    ++per[d];
    deepest = std::max(deepest, d);
  }
  // Limit to LIMIT bits keeping the code complete (JPEG's Annex K.3): a pair of the deepest
  // leaves becomes one leaf a level up and a leaf j levels up becomes two, one level below.
  for (std::size_t i = deepest; i > static_cast<std::size_t>(LIMIT); --i) {
    while (per[i] > 0) {
      std::size_t j = i - 2;
      while (j > 0 && per[j] == 0) --j;
      if (j == 0) throw std::logic_error("huffman: no shorter code to split");
      per[i] -= 2;
      per[i - 1] += 1;
      per[j + 1] += 2;
      per[j] -= 1;
    }
  }
  // the shortest codes to the most frequent symbols (ties: the lower symbol)
  std::vector<int> order = present;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return counts[a] > counts[b]; });
  std::size_t at = 0;
  for (int l = 1; l <= LIMIT; ++l)
    for (uint64_t c = 0; c < per[l]; ++c) len[order[at++]] = static_cast<uint8_t>(l);
}

uint64_t size(const uint64_t* counts, const uint8_t* len, uint64_t chunk) {
  uint64_t n = 0, bits = 0;
  for (int s = 0; s < 256; ++s) n += counts[s], bits += counts[s] * len[s];
  const uint64_t subs = chunk ? (n + chunk - 1) / chunk : 0, body = (bits + 7) / 8 + subs;  // (a padding byte each)
  return varint_bytes(n) + varint_bytes(chunk) + 128 + subs * varint_bytes(body / std::max<uint64_t>(subs, 1)) + body;
}

void encode(const uint8_t* sym, uint64_t n, const uint8_t* len, uint64_t chunk, int threads, Writer& w) {
  if (chunk < 1 || chunk > MAX_CHUNK) throw std::invalid_argument("chunk must be in 1..2^24");
  int present = 0;
  uint64_t kraft = 0;
  for (int s = 0; s < 256; ++s) {
    if (len[s] > LIMIT) throw std::invalid_argument("code longer than LIMIT bits");
    present += len[s] != 0;
    if (len[s]) kraft += SLOTS >> len[s];
  }
  if (present < 2 || kraft != SLOTS)  // (what parse() refuses)
    throw std::invalid_argument("lengths of a complete code of at least two symbols expected");
  uint32_t code[256], entry[256];  // entry: code << 8 | length, one load a symbol
  canonical(len, code);
  for (int s = 0; s < 256; ++s) entry[s] = code[s] << 8 | len[s];
  const std::size_t subs = static_cast<std::size_t>((n + chunk - 1) / chunk);
  std::vector<std::vector<uint8_t>> body(subs);
  std::vector<int> missing(subs);
  parallel_for(subs, threads, [&](std::size_t i) {
    const uint64_t lo = i * chunk, m = std::min(chunk, n - lo);
    std::vector<uint8_t>& out = body[i];
    out.resize(m * LIMIT / 8 + 8);
    uint8_t* o = out.data();
    uint64_t acc = 0;
    int have = 0;  // bits in acc, below 32 between pairs: a pair adds at most 2 x LIMIT
    int absent = 0;
    uint64_t j = lo;
    for (; j + 2 <= lo + m; j += 2) {
      const uint32_t a = entry[sym[j]], b = entry[sym[j + 1]];
      absent |= (a & 0xff) == 0 || (b & 0xff) == 0;
      acc = (acc << (a & 0xff) | a >> 8) << (b & 0xff) | b >> 8;
      have += static_cast<int>((a & 0xff) + (b & 0xff));
      if (have >= 32) {
        have -= 32;
        const uint32_t v = __builtin_bswap32(static_cast<uint32_t>(acc >> have));
        std::memcpy(o, &v, 4);
        o += 4;
      }
    }
    if (j < lo + m) {
      const uint32_t a = entry[sym[j]];
      absent |= (a & 0xff) == 0;
      acc = acc << (a & 0xff) | a >> 8;
      have += static_cast<int>(a & 0xff);
      if (have >= 32) {
        have -= 32;
        const uint32_t v = __builtin_bswap32(static_cast<uint32_t>(acc >> have));
        std::memcpy(o, &v, 4);
        o += 4;
      }
    }
    missing[i] = absent;
    for (; have >= 8; have -= 8) *o++ = static_cast<uint8_t>(acc >> (have - 8));
    if (have) *o++ = static_cast<uint8_t>(acc << (8 - have));
    out.resize(static_cast<std::size_t>(o - out.data()));
  });
  for (int bad : missing)
    if (bad) throw std::invalid_argument("a symbol without a code");
  w.uvarint(n);
  w.uvarint(chunk);
  for (int s = 0; s < 256; s += 2) w.byte(static_cast<uint8_t>(len[s] | len[s + 1] << 4));
  for (const auto& b : body) w.uvarint(b.size());
  for (auto& b : body) w.tail.push_back(std::move(b));
}

Parsed parse(Reader& r, uint64_t expected_n) {
  Parsed p;
  p.n = r.uvarint(UINT64_MAX);
  if (p.n != expected_n)
    throw Corrupt("stream holds " + std::to_string(p.n) + " symbols, expected " + std::to_string(expected_n));
  if (p.n == 0) throw Corrupt("an empty Huffman stream");
  p.chunk = r.uvarint(MAX_CHUNK);
  if (p.chunk == 0) throw Corrupt("substreams of no symbols");
  const uint8_t* packed = r.take(128);
  uint8_t len[256];
  uint64_t kraft = 0;
  int present = 0;
  for (int s = 0; s < 256; ++s) {
    len[s] = packed[s / 2] >> (4 * (s & 1)) & 0xf;
    if (len[s] > LIMIT) throw Corrupt("a code longer than " + std::to_string(LIMIT) + " bits");
    if (len[s]) kraft += SLOTS >> len[s], ++present;
  }
  if (present < 2 || kraft != SLOTS) throw Corrupt("code lengths do not form a complete code");
  const uint64_t subs = (p.n - 1) / p.chunk + 1;
  if (subs > r.left()) throw Corrupt("truncated");  // (a length byte each at least)
  p.length.resize(subs);
  for (auto& l : p.length) l = r.uvarint(r.left());
  p.body.resize(subs);
  for (uint64_t i = 0; i < subs; ++i) p.body[i] = r.take(p.length[i]);
  // one symbol per slot first, then as many whole codes (up to 5) as the slot's bits hold
  uint32_t code[256];
  canonical(len, code);
  std::vector<uint16_t> one(SLOTS);  // symbol | length << 8
  for (int s = 0; s < 256; ++s) {
    if (!len[s]) continue;
    const uint64_t at = uint64_t(code[s]) << (LIMIT - len[s]);
    std::fill(one.begin() + at, one.begin() + at + (SLOTS >> len[s]), static_cast<uint16_t>(s | len[s] << 8));
  }
  p.table.resize(SLOTS);
  for (uint64_t i = 0; i < SLOTS; ++i) {
    uint64_t syms = 0, count = 0, bits = 0;
    while (count < 5) {
      const uint16_t e = one[(i << bits) & (SLOTS - 1)];
      const uint64_t l = e >> 8;
      if (bits + l > LIMIT) break;
      syms |= uint64_t(e & 0xff) << (8 * count++);
      bits += l;
    }
    p.table[i] = bits | syms << 8 | count << 48 | uint64_t(one[i] >> 8) << 56;
  }
  return p;
}

void decode_group(const Parsed& p, std::size_t first, std::size_t count, uint8_t* out) {
  if (count > DECODE_GROUP || first + count > p.body.size()) throw std::invalid_argument("substreams out of range");
  const uint64_t* table = p.table.data();
  Sub s[DECODE_GROUP];
  for (std::size_t k = 0; k < count; ++k) {
    const uint64_t m = std::min(p.chunk, p.n - (first + k) * p.chunk);
    uint8_t* o = out + k * p.chunk;
    s[k] = {p.body[first + k], p.length[first + k], 0, o, o + m};
  }
  // up to 4 at a time (their state fills the registers) while each has room; one without
  // leaves, and the others go on. One alone decodes at about a third of the speed of 4.
  for (;;) {
    Sub* run[DECODE_GROUP];
    std::size_t ns = 0;
    for (std::size_t k = 0; k < count; ++k)
      if (s[k].len >= 8 && s[k].end - s[k].o >= ROOM && (s[k].pos >> 3) + 8 <= s[k].len) run[ns++] = &s[k];
    if (!ns) break;
    Sub four[4];
    const std::size_t n4 = ns == 5 || ns == 6 ? 3 : std::min<std::size_t>(ns, 4);  // (5 as 3 + 2, not 4 + 1)
    for (std::size_t j = 0; j < n4; ++j) four[j] = *run[j];
    if (n4 == 4) advance<4>(table, four);
    else if (n4 == 3) advance<3>(table, four);
    else if (n4 == 2) advance<2>(table, four);
    else advance<1>(table, four);
    for (std::size_t j = 0; j < n4; ++j) *run[j] = four[j];
  }
  for (std::size_t k = 0; k < count; ++k) finish(table, s[k]);
}

}  // namespace zc::huff
