// Order-0 rANS with independent substreams, each decoded by one thread.
//
// Full stream (varints are LEB128, words little-endian):
//   n (symbols), nsym (alphabet, 1..65536); nothing more when n == 0
//   L (one byte, the probability precision, 0 or 1..16)
//   L == 0: every symbol is the varint that follows (no coded bits)
//   L >= 1: the frequency table (nsym varints summing to 2^L, each below 2^L; a zero
//           is followed by the length - 1 of its run of zeros), then the body.
// Body (also used alone, under a table the caller keeps): chunk (symbols per
//   substream), the byte length of each of ceil(n / chunk) substreams, the substreams.
// Substream of m symbols: lanes(m) interleaved 32-bit rANS states (8, or 1 below 4096
//   symbols; symbol i uses state i mod lanes), then the 16-bit renormalisation words.
//   A decoder checks that every state ends where the encoder started (2^16) and that
//   every word was used.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "bytes.h"

namespace zc::rans {

constexpr int LANES = 8;
constexpr uint32_t STATE_LO = 1u << 16;
constexpr uint32_t MAX_NSYM = 1u << 16;

struct Entry {
  uint16_t freq, bias, sym, pad;
};

// An allocator whose vectors leave new elements default-initialised (trivial types: unwritten): a
// table whose every slot is written next is not zeroed first (half of building a 2^16-slot table).
template <class T>
struct Uninit : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = Uninit<U>;
  };
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};

// A parsed stream: the model and where each substream lies.
struct Parsed {
  uint64_t n = 0;
  uint32_t nsym = 0;
  int L = 0;
  uint32_t constant = 0;                 // the symbol when L == 0
  std::vector<Entry, Uninit<Entry>> table;  // 2^L entries, by slot
  std::vector<uint8_t> sym8;             // nsym <= 256: slot -> symbol
  std::vector<uint32_t> fc;              // nsym <= 256: symbol -> freq | start << 16
  std::vector<uint32_t> packed;          // nsym <= 256, L <= 12: slot -> sym | bias << 8 | freq << 20
  uint64_t chunk = 0;
  std::vector<const uint8_t*> body;      // one per substream
  std::vector<uint32_t> length;
};

inline int lanes(uint64_t m) { return m >= 4096 ? LANES : 1; }

// Appends the full stream for `n` symbols (each below nsym) to `w`.
template <class T>
// `add` (modulo the width of T) is added to every symbol as it is read: int8 symbols, viewed as
// uint8 with add = -lo, are coded as indices without an index array.
void encode(const T* sym, uint64_t n, uint32_t nsym, uint64_t chunk, int threads, Writer& w, int max_bits = 16,
            T add = 0);

// Appends the rest of encode's stream after its alphabet size, for n symbols under `freq` (from
// normalise: two or more symbols present, every symbol present has a frequency, not checked):
// the precision, the table, the body. Byte symbols under tables of 9 bits or more are coded 8
// lanes at a time with AVX2 where the CPU has it (the same bytes).
template <class T>
void encode_table(const T* sym, uint64_t n, const std::vector<uint32_t>& freq, int L, uint64_t chunk, int threads,
                  Writer& w, T add = 0);

// Appends a body coded under `freq` (summing to 2^L) to `w`.
template <class T>
void encode_body(const T* sym, uint64_t n, const std::vector<uint32_t>& freq, int L, uint64_t chunk,
                 int threads, Writer& w, T add = 0);

// Reads a full stream; throws Corrupt on anything inconsistent. `expected_n` is the
// count the caller knows from the shape.
Parsed parse(Reader& r, uint64_t expected_n);

// parse() of a stream that must end the input: bytes left after it are Corrupt.
Parsed parse_whole(Reader& r, uint64_t expected_n);

// Reads a body of n symbols under `freq` (validated: sums to 2^L, each below 2^L).
Parsed parse_body(Reader& r, uint64_t n, const std::vector<uint32_t>& freq, int L);

// Decodes substream `i` of a parsed stream into out[0 .. its symbol count).
template <class T>
void decode_substream(const Parsed& p, std::size_t i, T* out);

// All substreams, in parallel. T must hold nsym - 1.
template <class T>
void decode(const Parsed& p, T* out, int threads);

// Order-0 frequencies summing to 2^L for these counts (every present symbol >= 1), with L
// the smallest precision that codes within 0.05% of max_bits (raised to fit the symbols
// present; <= 16; 12 or less decodes faster). Encoder side only.
std::vector<uint32_t> normalise(const std::vector<uint64_t>& counts, int max_bits, int* L);

// Any positive integer frequencies -> frequencies summing to 2^L (L <= 16), in integers
// only, so an encoder and a decoder given the same table agree on every machine.
// Throws Corrupt when more than 2^16 symbols are present or none is.
std::vector<uint32_t> pow2_table(const std::vector<uint64_t>& freq, int* L);

}  // namespace zc::rans
