// Canonical Huffman streams of byte symbols, decoded by a table of up to 5 symbols a lookup:
// the float planes' fast order-0 coder (floatplanes.py mode 3). A plane's exponents cost
// about 2.6 bits a symbol, so one 12-bit lookup yields about 3 of them (3.3 on minilm), where
// rANS (rans.h) takes a table lookup, a multiply and a renormalisation check for each. It codes about 1%
// above the order-0 entropy, where rANS codes within 0.1%.
//
// Stream: n (uvarint), chunk (uvarint: symbols per substream, 1..2^24), the code length of each
// of the 256 symbols (128 bytes, 4 bits each, low nibble the even symbol, 0 = absent; at least
// two present, at most LIMIT bits, a complete code), the byte length (uvarint) of each of the
// ceil(n / chunk) substreams, then the substreams. Codes are canonical (shorter first, then by
// symbol) and written most significant bit first; a substream's last byte is zero padded.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bytes.h"

namespace zc::huff {

constexpr int LIMIT = 12;                  // the longest code: the decode table has 2^LIMIT entries
constexpr uint64_t MAX_CHUNK = 1u << 24;   // symbols a substream may hold
constexpr std::size_t DECODE_GROUP = 8;    // substreams a decoder task advances together

// Code lengths (256, 0 = absent) for these counts: Huffman's, limited to LIMIT bits, a complete
// code. Fewer than two symbols present: all zero (the stream cannot code them).
void lengths(const uint64_t* counts, uint8_t* len);

// Bytes of the stream of n symbols with these counts under these lengths (exact).
uint64_t size(const uint64_t* counts, const uint8_t* len, uint64_t chunk);

// Appends the stream of sym[0..n) under `len` (from lengths()) in substreams of `chunk`.
void encode(const uint8_t* sym, uint64_t n, const uint8_t* len, uint64_t chunk, int threads, Writer& w);

struct Parsed {
  uint64_t n = 0, chunk = 0;
  std::vector<const uint8_t*> body;
  std::vector<std::size_t> length;
  // 2^LIMIT entries: the bits its symbols take (byte 0), up to 5 symbols (bytes 1-5), their count
  // (byte 6), the bits of the first one alone (byte 7)
  std::vector<uint64_t> table;
};

// The stream of `expected_n` symbols at r; throws Corrupt on anything inconsistent.
Parsed parse(Reader& r, uint64_t expected_n);

// Substreams first .. first + count (count <= DECODE_GROUP) into out[0 .. their symbol count).
// Throws Corrupt on a damaged substream.
void decode_group(const Parsed& p, std::size_t first, std::size_t count, uint8_t* out);

}  // namespace zc::huff
