// Byte planes of 2- and 4-byte floats: split (encoder) and merge (decoder), see floatplanes.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bytes.h"
#include "huffman.h"
#include "rans.h"

namespace zc::planes {

enum Mode { RAW = 0, RANS = 1, HUFF = 3 };  // (codecs/floatplanes.py's numbers; its zstd, 2, never comes here)

// values (n of U = uint16_t or uint32_t) -> sizeof(U) planes of n bytes, top plane first.
template <class U>
void split(const U* v, uint64_t n, uint8_t* const* plane, int threads);

// One (mode, data, size) per plane, top first: RAW n bytes, RANS a full rANS stream of n byte
// symbols, or HUFF a Huffman stream of them (huffman.h) -> n values of `width` bytes in out.
// Throws Corrupt on damaged input.
void merge(uint64_t n, int width, const int* modes, const uint8_t* const* data, const std::size_t* sizes, void* out,
           int threads);

struct Plane {
  int mode = RAW;
  const uint8_t* raw = nullptr;
  rans::Parsed coded;
  huff::Parsed huff;
};

// merge() in two steps, so that a caller runs the tasks of many tensors on one pass of the pool
// (plan.cpp): the planes parsed and checked, and the work cut into `tasks` for `workers` threads.
struct Merge {
  uint64_t n = 0;
  int width = 0;
  void* out = nullptr;
  Plane planes[4];
  uint64_t chunk = 0;
  std::size_t chunks = 0, tasks = 0;
  bool fused = false;  // the top plane coded (vector decoder), the others raw
};

// How many tasks g's substreams make for `workers` threads (groups; split further where fewer than
// `workers`).
std::size_t tasks_for(const Merge& g, int workers);

// merge()'s checks, then the tasks; throws Corrupt.
Merge prepare(uint64_t n, int width, const int* modes, const uint8_t* const* data, const std::size_t* sizes,
              void* out, int workers);

// Task t < g.tasks: its values into g.out (throws Corrupt on a damaged substream).
void run_task(const Merge& g, std::size_t t);

// rans::normalise(counts, max_bits, L), the last result kept per thread: the encoder sizes a
// plane from its table, then codes it under the same table.
std::vector<uint32_t> table(const std::vector<uint64_t>& counts, int max_bits, int* L);

// Appends the rANS stream of n byte symbols (rans.h), exactly as rans::encode<uint8_t> with
// nsym 256 writes it (rans::encode_table codes the substreams, with AVX2 where it can).
void encode_plane(const uint8_t* sym, uint64_t n, uint64_t chunk, int max_bits, int threads, Writer& w);

// Byte counts (256) of n bytes.
void histogram(const uint8_t* p, uint64_t n, uint64_t* out);

}  // namespace zc::planes
