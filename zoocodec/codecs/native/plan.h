// Batched decoding of many tensors into their own dtype (the CPU side of
// zoocodec/plan.py): every tensor's frame parsed once, then one pass of the thread pool
// over every substream of every tensor, each entropy-decoded into a cache-sized buffer and
// dequantized straight into the output, with no float64 array.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ans_frame.h"
#include "pool.h"

namespace zc::plan {

enum Kind { F32 = 0, F16 = 1, BF16 = 2, I64 = 3 };  // I64: the levels themselves (context.py's decode)
// The symbols: an ans frame (ans_frame.h), a ctx payload (ctx_frame.h) or a cabac stream (cabac.h)
enum Coder { ANS = 0, CTX = 1, CABAC = 2 };

// A tensor's symbols (an ans frame or a ctx payload) to values, rounded to the output dtype as
// NumPy rounds float64 (methods/arrays.from_float64: bfloat16 through float32, nearest-even). A
// level is the symbol itself (its integer value). Element e lies in row e / row_len of `rows`:
//   k == 0 (affine, uniform, rdoq): value = float64(level) * values[row]
//   k > 0 (lookup, kmeans):         value = values[row * k + level], level in [0, k) (else corrupt)
//   group > 0 (uniform group=G):    value = float64(level) * step + zero, the step (values: one per
//                                   group, rows x groups, when per_group, else one) and zero
//                                   (zeros: rows x groups, or none) of its group of `group` along
//                                   its row of `cols` (rows = count / cols); a value past the kind
//                                   is corrupt. With `codes` (uniform:side=M), each group's step and
//                                   zero come from its step code and centre (codes, centres: rows x
//                                   groups, signed ints) as quantize.h's side_values gives them, as its weights are
//                                   written; a pair compress could not have written is corrupt
//   walk > 0 (dq, trellis):         value = dq level(state, level) * values[row], the 4-state
//                                   machine walked along each row of `cols` (walk 1) or each
//                                   column (walk 2) from state 0; `rows` steps (1 or count / cols)
// A ctx payload's symbols are decoded context by context, then put in their places a block at
// a time; a trellis's levels go to memory of their own first, then the walks. A cabac stream's
// substreams (whole walks of a trellis) decode each into a buffer of its thread's, then their
// values are written (walked); a stream cut mid-walk, or into substreams of more than 2^20
// levels, is not taken (status 1).
struct Fused {
  const uint8_t* payload = nullptr;  // the ans frame or ctx payload
  std::size_t size = 0;
  uint64_t count = 0;
  int coder = ANS;
  const double* values = nullptr;  // rows steps, or rows * k codebook values, or the group steps
  uint64_t rows = 1, row_len = 0, k = 0;
  uint64_t group = 0, cols = 0;
  bool per_group = false;
  const double* zeros = nullptr;
  const void *codes = nullptr, *centres = nullptr;  // (group > 0) the side values' codes at mant bits:
  int code_bytes = 8, centre_bytes = 8;              // signed integers of these widths (1, 2, 4 or 8)
  int mant = 0, bits = 0;
  int64_t max_exponent = 0;
  int walk = 0;
  int kind = F32;
  void* out = nullptr;  // count values of the kind
  // results
  int status = 0;  // 0 decoded, 1 not taken (a frame ans.py decodes, levels past int32 for a walk, a cabac
                   // stream above), 2 corrupt
  std::string error;
};

// A tensor's float-plane payload (codecs/floatplanes.py's frame: n, width, then each plane's
// mode, length and bytes) to its values: plan.py's Planes kind on the CPU. Every mode decodes
// here: zstd planes are inflated on the pass (inflate.h) before the tasks that merge them.
struct Planes {
  const uint8_t* payload = nullptr;
  std::size_t size = 0;
  uint64_t count = 0;
  int width = 4;        // bytes a value: 2 or 4
  void* out = nullptr;  // count values
  // results, as Fused's (never 1)
  int status = 0;
  std::string error;
};

// One job of a batch, in the batch's order: a planes job or a fused one, by its index there.
struct Ref {
  bool planes = false;
  std::size_t index = 0;
};

// A checksummed chunk of a payload (container.py's format 4: XXH3-64, checksum.h), checked on
// the decoding pass just before the tasks of job `before` (an index into the batch order), which
// then find its bytes in cache: reading a payload once instead of twice. `before` < 0: first.
struct Check {
  const uint8_t* data = nullptr;
  std::size_t size = 0;
  uint64_t sum = 0;
  int64_t before = -1;
  bool bad = false;  // result
};

// Every job's frame parsed (a ctx payload's contexts counted a block at a time, then its tables
// and streams), then one pass of the pool over all their substreams (fused jobs) and float-plane
// tasks (planes jobs), in the batch `order` (default: planes jobs, then fused ones), each job's
// `checks` just before its tasks; then the ctx payloads' blocks (their symbols placed and their
// values written), then the trellis walks. A job's result is meaningless where a check
// fails (its bytes are not the file's): the caller reports the mismatch first. `helper`: a
// thread that may join (pool.h's Helper), one of the `threads`: the pass runs on threads - 1
// others and it.
void decode(std::vector<Fused>& jobs, std::vector<Planes>& planes, int threads, const std::vector<Ref>& order = {},
            std::vector<Check>* checks = nullptr, Helper* helper = nullptr);

// Group-wise steps on the CPU (methods/uniform.py's own decode of `group=G`): value = float64(symbol) *
// step (+ zero), the step and zero of the symbol's group of `group` along its row (`steps` rows x groups,
// or one step when `per_group` is false; `zeros` rows x groups or null), rounded to `kind` as the fused
// jobs are. False (out partly written) where a value is not finite, in float64 or in the kind.
bool dequantize_groups(const int64_t* symbols, uint64_t rows, uint64_t cols, const double* steps, bool per_group,
                       const double* zeros, uint64_t group, int kind, void* out, int threads);

}  // namespace zc::plan
