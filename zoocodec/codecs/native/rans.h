// Order-0 rANS with independent substreams, each decoded by one thread.
//
// Stream (varints are LEB128, words little-endian):
//   n (symbols), nsym (alphabet, 1..65536); nothing more when n == 0
//   L (one byte, the probability precision, 0 or 1..16)
//   L == 0: every symbol is the varint that follows (no coded bits)
//   L >= 1: the frequency table (nsym varints summing to 2^L, each below 2^L; a zero
//           is followed by the length - 1 of its run of zeros), chunk (symbols per
//           substream), the byte length of each of ceil(n / chunk) substreams, then
//           the substreams.
//   substream: 8 interleaved 32-bit rANS states (symbol i of the substream uses state
//   i mod 8), then the 16-bit renormalisation words. A decoder checks that every state
//   ends where the encoder started (2^16) and that every word was used.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bytes.h"

namespace zc::rans {

constexpr int LANES = 8;
constexpr uint32_t STATE_LO = 1u << 16;
constexpr uint32_t MAX_NSYM = 1u << 16;

struct Entry {
  uint16_t freq, bias, sym, pad;
};

// A parsed stream header: the model and where each substream lies.
struct Parsed {
  uint64_t n = 0;
  uint32_t nsym = 0;
  int L = 0;
  uint32_t constant = 0;                 // the symbol when L == 0
  std::vector<Entry> table;              // 2^L entries, by slot
  uint64_t chunk = 0;
  std::vector<const uint8_t*> body;      // one per substream
  std::vector<uint32_t> length;
};

// Appends the stream for `n` symbols (each below nsym) to `w`.
template <class T>
void encode(const T* sym, uint64_t n, uint32_t nsym, uint64_t chunk, int threads, Writer& w);

// Reads a stream header; throws Corrupt on anything inconsistent. `expected_n` is
// the count the caller knows from the shape.
Parsed parse(Reader& r, uint64_t expected_n);

// Decodes substream `i` of a parsed stream into out[0 .. its symbol count).
template <class T>
void decode_substream(const Parsed& p, std::size_t i, T* out);

// All substreams, in parallel. T must hold nsym - 1.
template <class T>
void decode(const Parsed& p, T* out, int threads);

// Order-0 frequencies summing to 2^L for these counts (every present symbol >= 1), with L
// the smallest precision (>= min_bits) that codes within 0.01% of 16-bit precision.
std::vector<uint32_t> normalise(const std::vector<uint64_t>& counts, int min_bits, int* L);

}  // namespace zc::rans
