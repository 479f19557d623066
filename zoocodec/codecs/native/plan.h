// Batched decoding of many tensors into their own dtype (the CPU side of
// zoocodec/plan.py): every tensor's frame parsed once, then one pass of the thread pool
// over every substream of every tensor, each entropy-decoded into a cache-sized buffer and
// dequantized straight into the output, with no float64 array.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ans_frame.h"

namespace zc::plan {

enum Kind { F32 = 0, F16 = 1, BF16 = 2 };

// value = float64(lo + symbol) * steps[row], rounded to the output dtype as NumPy rounds
// float64 (methods/base.from_float64: bfloat16 through float32, nearest-even).
struct Affine {
  const uint8_t* payload = nullptr;  // the ans frame
  std::size_t size = 0;
  uint64_t count = 0;
  const double* steps = nullptr;  // one per row of the 2-D view
  uint64_t rows = 1, row_len = 0;
  int kind = F32;
  void* out = nullptr;  // count values of the kind
  // results
  int status = 0;  // 0 decoded, 1 not taken (ans.py decodes it), 2 corrupt
  std::string error;
};

void decode_affine(std::vector<Affine>& jobs, int threads);

}  // namespace zc::plan
