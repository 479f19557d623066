// Byte planes of 2- and 4-byte floats: split (encoder) and merge (decoder), see floatplanes.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bytes.h"

namespace zc::planes {

enum Mode { RAW = 0, RANS = 1 };

// values (n of U = uint16_t or uint32_t) -> sizeof(U) planes of n bytes, top plane first.
template <class U>
void split(const U* v, uint64_t n, uint8_t* const* plane, int threads);

// One (mode, data, size) per plane, top first: RAW n bytes, or RANS a full rANS stream of
// n byte symbols -> n values of `width` bytes in out. Throws Corrupt on damaged input.
void merge(uint64_t n, int width, const int* modes, const uint8_t* const* data, const std::size_t* sizes, void* out,
           int threads);

// rans::normalise(counts, max_bits, L), the last result kept per thread: the encoder sizes a
// plane from its table, then codes it under the same table.
std::vector<uint32_t> table(const std::vector<uint64_t>& counts, int max_bits, int* L);

// Appends the rANS stream of n byte symbols (rans.h), exactly as rans::encode<uint8_t> with
// nsym 256 writes it (rans::encode_table codes the substreams, with AVX2 where it can).
void encode_plane(const uint8_t* sym, uint64_t n, uint64_t chunk, int max_bits, int threads, Writer& w);

// Byte counts (256) of n bytes.
void histogram(const uint8_t* p, uint64_t n, uint64_t* out);

}  // namespace zc::planes
