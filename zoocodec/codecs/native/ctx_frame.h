// The `ctx` coder's payload (zoocodec/codecs/context.py) for the CPU's batched decode (plan.cpp):
// its side information, each symbol's context, and each context's rANS body. Parsed in two
// steps, because which contexts have a table depends on how many positions each context has:
// parse_head (side information), then the pass counts the contexts of its blocks (count), then
// parse_streams (tables and bodies). The symbols' positions are then rebuilt a block at a time
// (contexts), without an array of every symbol's context.
//   mode byte: 0 contexts, 1 order-0 (an ans payload follows: plan.cpp parses it as an ans job),
//   2 group ends; the rest as context.py's docstring.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "bytes.h"
#include "rans.h"

namespace zc::ctx {

constexpr uint8_t CTX = 0, ORDER0 = 1, ENDS = 2;
constexpr uint8_t ROWS = 1, COLS = 2;
constexpr int64_t MAX_CLASS = 256;      // |activity class| (context.py's _classes)
constexpr uint64_t MAX_BINS = 64;
constexpr uint64_t MAX_GROUP = 256;     // context.py's GROUPS
constexpr uint64_t MAX_SPAN = 1 << 16;  // MAX_CONTEXT_ALPHABET
constexpr uint8_t KNOWN_LO = 4, KNOWN_HI = 5;  // group ends: positions whose level the side info gives

// One context's symbols: indices into its alphabet, from `origin`.
struct Stream {
  uint64_t count = 0;  // positions with this context (count())
  int64_t origin = 0;
  uint64_t size = 0;   // alphabet
  rans::Parsed body;   // L == 0 (every index 0) for an alphabet of one
};

struct Frame {
  uint8_t mode = CTX;
  uint64_t n = 0, rows = 1, cols = 0;
  // contexts: the symbol at (r, c) has context lut[row_base[r] + col_class[c]]
  uint8_t layout = 0;
  std::vector<int32_t> row_base;  // (row class or 0) + 2 * MAX_CLASS, one a row
  std::vector<int16_t> col_class;  // one a column (layout COLS), else empty
  std::vector<std::pair<int16_t, uint64_t>> col_hist;  // each column class present and its columns
  std::vector<uint8_t> lut;        // the context of each class sum + 2 * MAX_CLASS
  // group ends: per group of `group` along a row, the first lowest and highest level's place
  uint64_t group = 0;
  int64_t lo = 0, hi = 0;
  std::vector<uint16_t> first_lo, first_hi;  // rows x groups
  // their two side arrays (lowest's, highest's) as parse_head left them when asked to (`defer`) and their
  // alphabets are bytes: the pass decodes their substreams into `places`, then ends_values fills
  // first_lo and first_hi from them, a range of groups at a time (empty: parse_head filled them)
  struct Coded {
    int64_t lo = 0;
    rans::Parsed stream;
    std::vector<uint8_t> places;  // rows x groups symbols (indices from lo)
  };
  std::vector<Coded> coded_ends;
  uint64_t bins = 0;  // contexts coded by streams: 0 .. bins - 1
  std::vector<Stream> streams;  // one a context
  const uint8_t* rest = nullptr;  // the tables and streams, for parse_streams
  std::size_t rest_size = 0;
};

// A group-ends group of `size` whose first lowest level lies at l and first highest at h (`group`: none):
// positions [0, m1) in context 3, the known one at m1 (if m1 < size), then `between` in context `mid`,
// the known one at m2 (if m2 < size), then `after` in context 0.
struct Runs {
  uint64_t m1, m2, before, between, after;
  uint8_t mid;
};
inline Runs runs(uint64_t l, uint64_t h, uint64_t size) {
  const uint64_t m1 = l < h ? l : h, m2 = l < h ? h : l;
  return {m1, m2, m1 < size ? m1 : size, m1 < size ? (m2 < size ? m2 : size) - m1 - 1 : 0,
          m2 < size ? size - m2 - 1 : 0, static_cast<uint8_t>(l < h ? 2 : 1)};
}

// The side information of a payload of mode CTX or ENDS (after its mode byte, in r) for `count`
// symbols into *f. Throws Corrupt on anything inconsistent. `defer`: group ends whose side arrays are
// rANS frames of bytes are left coded (f->coded_ends) for the pass to decode in parallel.
void parse_head(Reader& r, uint8_t mode, uint64_t count, Frame* f, bool defer = false);

// Groups [g0, g1) (of rows x groups) of deferred group ends, their `places` decoded: first_lo and first_hi
// (sized by parse_head) filled and checked. 0, or the error where one is wrong (ends_error's argument):
// 2 a place outside its group, 1 a group's lowest and highest level at one place (where no place is
// outside, as parse_head checks them).
int ends_values(Frame& f, uint64_t g0, uint64_t g1);
[[noreturn]] void ends_error(int code);

// Adds the positions of each context among elements [e0, e1) to counts[0 .. bins + 2) (group ends:
// KNOWN_LO and KNOWN_HI too).
void count(const Frame& f, uint64_t e0, uint64_t e1, uint64_t* counts);

// The context of each element of row `row`, columns [c0, c1), into out[0 .. c1 - c0).
void contexts(const Frame& f, uint64_t row, uint64_t c0, uint64_t c1, uint8_t* out);

// The tables and streams after the side information, each context's count given (counts[0 ..
// bins)): f->streams. Throws Corrupt as context.py's decoder refuses.
void parse_streams(Frame* f, const uint64_t* counts);

// The lowest and highest level of a payload whose streams are parsed (each context's alphabet, group ends'
// known levels; 0 and 0 without a symbol), counts as parse_streams took them (and the known positions').
// Throws Corrupt where they span more than MAX_SPAN values (the encoder codes those order-0).
std::pair<int64_t, int64_t> levels(const Frame& f, const uint64_t* counts);

}  // namespace zc::ctx
