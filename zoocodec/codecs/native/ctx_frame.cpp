#include "ctx_frame.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <string>

#include "ans_frame.h"
#include "inflate.h"

namespace zc::ctx {

namespace {

constexpr uint64_t MAX_SIDE = uint64_t(1) << 40;  // bytes of packed side information (a count is the caller's)

// A side array of `count` symbols (context.py's classes and group ends) from its payload (`data`,
// `size` bytes): a rANS frame, or packed little-endian ints inflated by zstd (ans.py's packed frame,
// which its encoder picks for small flat arrays). Raw low bits only come with alphabets wider than
// 2^16, which no side array has.
void side(const uint8_t* data, std::size_t size, uint64_t count, std::vector<int64_t>* out) {
  Reader s(data, size);
  ans::Frame f;
  out->resize(count);
  if (ans::parse_frame(s, count, &f)) {
    std::vector<uint16_t> idx(count);
    rans::decode(f.stream, idx.data(), 1);
    for (uint64_t i = 0; i < count; ++i) (*out)[i] = f.lo + idx[i];
    return;
  }
  Reader p(data, size);
  if (p.byte() != ans::PACKED) throw Corrupt("side information wider than 2^16 values");
  if (p.uvarint(UINT64_MAX) != count) throw Corrupt("side information of the wrong length");
  const int64_t lo = ans::svarint(p);
  const uint8_t width = p.byte();
  if (width != 1 && width != 2 && width != 4 && width != 8) throw Corrupt("bad symbol width " + std::to_string(width));
  if (count > MAX_SIDE / width) throw Corrupt("side information too long");
  std::vector<uint8_t> raw(count * width);
  unzstd(p.p, p.left(), raw.data(), raw.size());
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t v = 0;
    std::memcpy(&v, raw.data() + i * width, width);  // (little-endian)
    (*out)[i] = static_cast<int64_t>(static_cast<uint64_t>(lo) + v);
  }
}

// The length-prefixed side array next in r.
void side(Reader& r, uint64_t count, std::vector<int64_t>* out) {
  const uint8_t* data = r.take(r.uvarint(r.left()));
  side(data, static_cast<std::size_t>(r.p - data), count, out);
}

// Places of group ends (lo + places[i], i < n) into to[0 .. n): the error code of ends_values where one lies
// outside 0 .. group (group: none), or where one of the groups i0, i0 + groups, ... (each row's last, `last`
// places long) has one past its end; else 0. (lo + places[i] does not overflow: lo is a frame's varint, or 0.)
template <class T>
int fill_places(int64_t lo, const T* places, uint64_t n, uint64_t group, uint64_t groups, uint64_t i0, uint64_t last,
                uint16_t* to) {
  bool bad = false;
  for (uint64_t i = 0; i < n; ++i) {
    const int64_t v = lo + static_cast<int64_t>(places[i]);
    bad |= static_cast<uint64_t>(v) > group;
    to[i] = static_cast<uint16_t>(v);
  }
  for (uint64_t i = i0; i < n; i += groups) bad |= to[i] >= last && to[i] < group;
  return bad ? 2 : 0;
}

// The length-prefixed group-ends side array next in r: each group's first lowest (or highest) level's
// place along its row, 0 .. group - 1, or group where the group has none (rows x groups). A rANS frame of
// bytes is left in *coded (true: its places not decoded yet); any other frame is decoded into *out and
// checked: Corrupt where a place lies outside its group (a row's last group holds `last` places).
bool ends(Reader& r, uint64_t rows, uint64_t groups, uint64_t group, uint64_t last, std::vector<uint16_t>* out,
          Frame::Coded* coded) {
  const uint64_t count = rows * groups;
  const uint8_t* data = r.take(r.uvarint(r.left()));
  const std::size_t size = static_cast<std::size_t>(r.p - data);
  Reader s(data, size);
  ans::Frame f;
  out->resize(count);
  if (ans::parse_frame(s, count, &f) && f.stream.nsym <= 256) {
    coded->lo = f.lo, coded->stream = std::move(f.stream);
    return true;
  }
  std::vector<int64_t> wide;  // (a wider alphabet, or packed ints: as any side array)
  side(data, size, count, &wide);
  if (fill_places(0, wide.data(), count, group, groups, groups - 1, last, out->data())) ends_error(2);
  return false;
}

int shared_place(const uint16_t* lo, const uint16_t* hi, uint64_t n, uint64_t group) {
  bool shared = false;
  for (uint64_t i = 0; i < n; ++i) shared |= lo[i] == hi[i] && lo[i] < group;
  return shared ? 1 : 0;
}

int64_t floor_div(__int128 a, int64_t b) {  // (b > 0), as Python's //
  __int128 q = a / b;
  if (a % b != 0 && a < 0) --q;
  return q < INT64_MIN ? INT64_MIN : q > INT64_MAX ? INT64_MAX : static_cast<int64_t>(q);
}

// An integer frequency table (context.py's read_table: zero runs collapsed), as rans.h's any-sum table.
std::vector<uint64_t> read_table(Reader& r, uint64_t size) {
  std::vector<uint64_t> freqs(size, 0);
  uint64_t i = 0, sum = 0;
  while (i < size) {
    const uint64_t f = r.uvarint(uint64_t(1) << 40);
    if (f == 0) {
      const uint64_t run = r.uvarint(size) + 1;
      if (i + run > size) throw Corrupt("frequency table overruns its alphabet");
      i += run;
    } else {
      freqs[i++] = f;
      sum += f;
    }
  }
  if (sum == 0) throw Corrupt("empty frequency table");
  return freqs;
}

// Positions of a group of `size` (its first lowest level at l, highest at h; `group`: none) per context.
void count_group(uint64_t l, uint64_t h, uint64_t size, uint64_t* counts) {
  const Runs g = runs(l, h, size);
  counts[3] += g.before;
  counts[g.mid] += g.between;
  counts[0] += g.after;
  counts[KNOWN_LO] += l < size;
  counts[KNOWN_HI] += h < size;
}

}  // namespace

void parse_head(Reader& r, uint8_t mode, uint64_t count, Frame* f, bool defer) {
  f->mode = mode;
  f->n = r.uvarint(UINT64_MAX);
  if (f->n != count) throw Corrupt("holds " + std::to_string(f->n) + " symbols, expected " + std::to_string(count));
  f->rows = r.uvarint(std::max<uint64_t>(count, 1));
  if (f->rows == 0 || count % f->rows) throw Corrupt(std::to_string(f->rows) + " rows do not divide " +
                                                     std::to_string(count) + " symbols");
  f->cols = count / f->rows;
  if (mode == ENDS) {
    f->group = r.uvarint(MAX_GROUP);
    f->lo = ans::svarint(r);
    const uint64_t span = r.uvarint(MAX_SPAN);
    if (f->group < 2 || span < 1) throw Corrupt("group of " + std::to_string(f->group) + ", levels span " +
                                                std::to_string(span));
    f->hi = f->lo + static_cast<int64_t>(span);
    const uint64_t groups = (f->cols + f->group - 1) / f->group, last = f->cols - (groups ? groups - 1 : 0) * f->group;
    Frame::Coded sides[2];
    bool left[2];  // (a rANS frame of bytes, its places not decoded)
    auto decode_now = [&](int k) {
      std::vector<uint16_t>& places = k == 0 ? f->first_lo : f->first_hi;
      sides[k].places.resize(places.size());
      rans::decode(sides[k].stream, sides[k].places.data(), 1);
      if (fill_places(sides[k].lo, sides[k].places.data(), places.size(), f->group, groups, groups - 1, last,
                      places.data()))
        ends_error(2);
      left[k] = false;
    };
    for (int k = 0; k < 2; ++k) {  // (without `defer`, the lowest's places are checked before the highest's are read)
      left[k] = ends(r, f->rows, groups, f->group, last, k == 0 ? &f->first_lo : &f->first_hi, &sides[k]);
      if (left[k] && !defer) decode_now(k);
    }
    if (left[0] && left[1]) {
      for (auto& side : sides) side.places.resize(f->first_lo.size());
      f->coded_ends.assign(std::make_move_iterator(sides), std::make_move_iterator(sides + 2));
    } else {
      for (int k = 0; k < 2; ++k)  // (one of them left: both now)
        if (left[k]) decode_now(k);
      if (shared_place(f->first_lo.data(), f->first_hi.data(), f->first_lo.size(), f->group)) ends_error(1);
    }
    f->bins = 4;
  } else {
    f->layout = r.byte();
    if (f->layout != ROWS && f->layout != COLS && f->layout != (ROWS | COLS))
      throw Corrupt("unknown context layout " + std::to_string(f->layout));
    std::vector<int64_t> rc, cc;
    if (f->layout & ROWS) side(r, f->rows, &rc);
    if (f->layout & COLS) side(r, f->cols, &cc);
    for (const auto* classes : {&rc, &cc})
      for (int64_t v : *classes)
        if (v < -MAX_CLASS || v > MAX_CLASS) throw Corrupt("activity class out of range");
    const int64_t lo = ans::svarint(r);
    const int64_t width = static_cast<int64_t>(r.uvarint(1 << 20));
    f->bins = r.uvarint(MAX_BINS);
    if (width < 1 || f->bins < 1) throw Corrupt("bin width " + std::to_string(width) + " / count " +
                                                std::to_string(f->bins));
    f->lut.resize(4 * MAX_CLASS + 1);  // every sum of a row and a column class
    for (std::size_t k = 0; k < f->lut.size(); ++k) {
      const __int128 v = static_cast<int64_t>(k) - 2 * MAX_CLASS;
      f->lut[k] = static_cast<uint8_t>(std::clamp<int64_t>(floor_div((v - lo) * __int128(f->bins), width), 0,
                                                           static_cast<int64_t>(f->bins) - 1));
    }
    f->row_base.assign(f->rows, 2 * MAX_CLASS);
    for (uint64_t i = 0; i < rc.size(); ++i) f->row_base[i] += static_cast<int32_t>(rc[i]);
    if (!cc.empty()) {
      f->col_class.assign(cc.begin(), cc.end());
      std::vector<uint64_t> hist(2 * MAX_CLASS + 1, 0);
      for (int64_t v : cc) ++hist[v + MAX_CLASS];
      for (std::size_t k = 0; k < hist.size(); ++k)
        if (hist[k]) f->col_hist.emplace_back(static_cast<int16_t>(int64_t(k) - MAX_CLASS), hist[k]);
    }
  }
  f->rest = r.p;
  f->rest_size = r.left();
}

void count(const Frame& f, uint64_t e0, uint64_t e1, uint64_t* counts) {
  std::vector<uint8_t> ctx;
  for (uint64_t e = e0; e < e1;) {
    const uint64_t row = e / f.cols, c0 = e % f.cols, c1 = std::min(f.cols, c0 + (e1 - e));
    if (f.mode == ENDS) {
      const uint64_t groups = (f.cols + f.group - 1) / f.group;
      for (uint64_t g = c0 / f.group; g * f.group < c1; ++g) {
        const uint64_t g0 = g * f.group, g1 = std::min(f.cols, g0 + f.group);
        const uint64_t l = f.first_lo[row * groups + g], h = f.first_hi[row * groups + g];
        if (c0 <= g0 && g1 <= c1) {
          count_group(l, h, g1 - g0, counts);
          continue;
        }
        ctx.resize(f.group);  // (a group the block cuts: its part element by element)
        const uint64_t a = std::max(c0, g0), b = std::min(c1, g1);
        contexts(f, row, a, b, ctx.data());
        for (uint64_t i = 0; i < b - a; ++i) ++counts[ctx[i]];
      }
    } else if (!(f.layout & COLS)) {
      counts[f.lut[f.row_base[row]]] += c1 - c0;
    } else if (c0 == 0 && c1 == f.cols) {  // a whole row: its contexts by column class
      for (const auto& [v, n] : f.col_hist) counts[f.lut[f.row_base[row] + v]] += n;
    } else {
      const uint8_t* lut = f.lut.data() + f.row_base[row];
      for (uint64_t c = c0; c < c1; ++c) ++counts[lut[f.col_class[c]]];
    }
    e += c1 - c0;
  }
}

void contexts(const Frame& f, uint64_t row, uint64_t c0, uint64_t c1, uint8_t* out) {
  if (f.mode == ENDS) {
    const uint64_t groups = (f.cols + f.group - 1) / f.group;
    for (uint64_t c = c0; c < c1;) {
      const uint64_t g = c / f.group, end = std::min(c1, (g + 1) * f.group);
      const int64_t l = f.first_lo[row * groups + g], h = f.first_hi[row * groups + g];
      for (int64_t p = static_cast<int64_t>(c - g * f.group); c < end; ++c, ++p)
        *out++ = p == l ? KNOWN_LO : p == h ? KNOWN_HI : static_cast<uint8_t>((p < l) + 2 * (p < h));
    }
    return;
  }
  const uint8_t* lut = f.lut.data() + f.row_base[row];
  if (!(f.layout & COLS)) {
    std::fill(out, out + (c1 - c0), lut[0]);
    return;
  }
  for (uint64_t c = c0; c < c1; ++c) *out++ = lut[f.col_class[c]];
}

void parse_streams(Frame* f, const uint64_t* counts) {
  Reader r(f->rest, f->rest_size);
  f->streams.assign(f->bins, Stream{});
  std::vector<std::vector<uint64_t>> tables;
  std::vector<Stream*> coded;
  for (uint64_t c = 0; c < f->bins; ++c) {
    if (!counts[c]) continue;
    Stream& s = f->streams[c];
    s.count = counts[c];
    s.origin = ans::svarint(r);
    s.size = r.uvarint(rans::MAX_NSYM);
    if (s.size < 1) throw Corrupt("empty alphabet");
    tables.push_back(read_table(r, s.size));
    coded.push_back(&s);
  }
  const uint64_t n = r.uvarint(r.left());  // (codecs/wire.py's put_streams: count, lengths, bytes)
  if (n != coded.size()) throw Corrupt(std::to_string(n) + " substreams, expected " + std::to_string(coded.size()));
  std::vector<uint64_t> lengths(n);
  for (uint64_t& length : lengths) length = r.uvarint(r.left());
  for (uint64_t k = 0; k < n; ++k) {
    Stream& s = *coded[k];
    const uint8_t* data = r.take(lengths[k]);
    if (s.size == 1) {
      if (lengths[k]) throw Corrupt("a one-symbol context holds coded bits");
      s.body.n = s.count, s.body.nsym = 1, s.body.L = 0, s.body.constant = 0;
      continue;
    }
    int L;
    const std::vector<uint32_t> table = rans::pow2_table(tables[k], &L);
    Reader body(data, lengths[k]);
    s.body = rans::parse_body(body, s.count, table, L);
    if (body.left()) throw Corrupt("bytes left after the stream");
  }
  if (r.left()) throw Corrupt(std::to_string(r.left()) + " trailing bytes");
}

std::pair<int64_t, int64_t> levels(const Frame& f, const uint64_t* counts) {
  int64_t low = INT64_MAX, high = INT64_MIN;
  for (const Stream& s : f.streams)
    if (s.count) low = std::min(low, s.origin), high = std::max<int64_t>(high, s.origin + int64_t(s.size) - 1);
  if (counts[KNOWN_LO]) low = std::min(low, f.lo), high = std::max(high, f.lo);
  if (counts[KNOWN_HI]) low = std::min(low, f.hi), high = std::max(high, f.hi);
  if (low > high) return {0, 0};  // (no symbol)
  if (static_cast<unsigned __int128>(__int128(high) - low) >= MAX_SPAN)
    throw Corrupt("levels span more than 2^16 values");  // (the encoder codes those order-0)
  return {low, high};
}

int ends_values(Frame& f, uint64_t g0, uint64_t g1) {
  const uint64_t groups = (f.cols + f.group - 1) / f.group, last = f.cols - (groups ? groups - 1 : 0) * f.group;
  const uint64_t row_end = groups - 1 - g0 % groups;  // (the first row's last group at or after g0, from g0)
  int worst = 0;
  for (int k = 0; k < 2; ++k) {
    const Frame::Coded& c = f.coded_ends[k];
    worst = std::max(worst, fill_places(c.lo, c.places.data() + g0, g1 - g0, f.group, groups, row_end, last,
                                        (k == 0 ? f.first_lo : f.first_hi).data() + g0));
  }
  return worst ? worst : shared_place(f.first_lo.data() + g0, f.first_hi.data() + g0, g1 - g0, f.group);
}

void ends_error(int code) {
  throw Corrupt(code == 2 ? "a group's first position is outside the group"
                          : "a group's lowest and highest level share a position");
}

}  // namespace zc::ctx
