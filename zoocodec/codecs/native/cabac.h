// Context-adaptive binary arithmetic coding of quantized weight levels ("cabac").
//
// In the spirit of DeepCABAC / MPEG NNR, written for zoocodec: each level is binarised
// (significance, sign, greater-than-g flags, Exp-Golomb remainder with context-coded
// prefix), every context-coded bin is coded with an adaptive probability (two estimators
// with fast and slow rates, as in VVC, integer arithmetic only) by a 32-bit binary range
// coder. A bin's context comes from what is already decoded: the left neighbour, an
// activity estimate of the current row and of the current column (running averages of
// |level| over the rows and columns coded so far) and, for dependent quantization, the
// state of the trellis (significance) and its quantizer (greater-than flags).
//
// A tensor is a level matrix in walk order (rows x cols, row-major; the dependent
// quantizer's state machine runs along it). It is cut into substreams of whole rows
// (or of equal pieces of a row when one row is longer than the substream size), each
// coded with fresh contexts, so substreams encode and decode in parallel.
//
// Stream (varints are LEB128):
//   byte 1 (version), uvarint rows, byte trellis (0 none, 1 four-state reset per row,
//   2 eight-state NNR, continuous), uvarint substream length L (weights),
//   per substream: uvarint byte length [, byte start state when trellis != 0],
//   then the substream payloads back to back.
// The decoder is given the number of levels it expects and checks everything against
// the bytes it has; a substream may not claim more levels than its bytes can hold.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace zc::cabac {

enum Trellis : uint8_t { kNone = 0, kDq4Rows = 1, kNnr8 = 2 };

constexpr uint64_t kDefaultSubstream = 1u << 16;

// Levels (rows x cols, row-major, walk order) -> bytes. `substream` is the target
// number of weights per substream; threads <= 0 means zc::default_threads().
std::vector<uint8_t> encode(const int32_t* levels, uint64_t rows, uint64_t cols, int trellis,
                            uint64_t substream, int threads);

// Bytes -> `count` levels into `out`. Throws zc::Corrupt on any inconsistency.
void decode(const uint8_t* data, std::size_t size, int32_t* out, uint64_t count, int threads);

// (rows, trellis) a stream declares, so callers check it against the shape they expect.
std::pair<uint64_t, int> stream_info(const uint8_t* data, std::size_t size);

// Ideal code length of the levels under the adaptive models, in bits, per position:
// what each level cost when coded in order (an entropy model's rate feedback).
void cost_bits(const int32_t* levels, uint64_t rows, uint64_t cols, int trellis, uint64_t substream,
               float* bits_out, int threads);

}  // namespace zc::cabac

// C entry point for fuzzers and foreign callers: 0 on success, 1 when the bytes are
// not a valid stream of `count` levels (out is then unspecified), 2 on other errors.
extern "C" int zc_cabac_decode(const uint8_t* data, std::size_t size, int32_t* out, uint64_t count,
                               int threads);
