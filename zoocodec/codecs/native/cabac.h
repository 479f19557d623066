// Context-adaptive binary arithmetic coding of quantized weight levels ("cabac").
//
// In the spirit of DeepCABAC / MPEG NNR, written for zoocodec: each level is binarised
// (significance, sign, greater-than-1..6 flags, an Exp-Golomb rest whose order grows with
// the expected magnitude), and every context-coded bin is coded with an adaptive
// probability (two estimators, fast and slow, that also learn faster over a context's
// first bins; integer arithmetic only) by a 32-bit binary range coder. Contexts: the
// dependent quantizer's state (significance, sign) or its quantizer (greater-than flags),
// the sign of the left neighbour, and an expected magnitude from the activity class of
// the row and of the column (round(2 log2(mean |level| + 1/2)), sent as side
// information). Measured on NNCodec's own levels, the left neighbour's magnitude and
// running row/column averages predicted no better than these classes.
//
// A tensor is a level matrix in walk order (rows x cols, row-major; the dependent
// quantizer's state machine runs along it). It is cut into substreams of whole rows
// (or of equal pieces of a row when one row is longer than the substream size), each
// coded with fresh contexts, so substreams encode and decode in parallel. With more
// than one substream the side information also gives each context its starting
// probability (from a counting pass), so a cut costs little.
//
// Stream (varints are LEB128):
//   byte 1 (version), uvarint rows, byte trellis (0 none, 1 four-state reset per row,
//   2 eight-state NNR, continuous), then for a non-empty tensor: uvarint substream
//   length L (weights), byte class layout (1 rows, 2 columns), uvarint tensor class + 2,
//   uvarint side length + side payload (range coded: row classes, column classes,
//   per context an optional 6-bit starting probability), per substream: uvarint byte
//   length [, byte start state when trellis != 0], then the substream payloads.
// The decoder is given the number of levels it expects and checks everything against
// the bytes it has; a substream may not claim more levels than its bytes can hold
// (6,000 a byte: no bin costs less than 0.0014 bits).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
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

// A stream of `count` levels parsed once (side information, substreams), so that its substreams
// decode one by one where a caller schedules them (decode() above; plan.cpp's fused pass).
// Throws zc::Corrupt on any inconsistency.
class Stream {
 public:
  Stream(const uint8_t* data, std::size_t size, uint64_t count);
  ~Stream();
  uint64_t rows() const;        // of the level matrix (walk order)
  int trellis() const;
  uint64_t substreams() const;
  uint64_t length() const;      // levels a substream holds (the last one may hold fewer)
  // Substream s's levels into out[0 ..); throws zc::Corrupt where they run past what it may hold.
  void decode(uint64_t s, int32_t* out) const;

 private:
  struct Parsed;
  std::unique_ptr<Parsed> p_;
};

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
