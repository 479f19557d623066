// Encode-side quantization, fused: uniform symbols, the reconstruction in the tensor's own
// dtype, and the error statistics compress reports, in one pass over the weights, with
// no float64 array. Per-element arithmetic is double in registers, the same IEEE
// operations as the NumPy path (x / step, rint, symbol * step, the cast back), so the
// symbols and reconstruction are bit-identical to it; the sums follow NumPy's pairwise
// summation tree exactly (np.sum over the whole float64 array), so the statistics are too,
// whatever the number of threads.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace zc::quant {

enum Kind { FLOAT32 = 0, BFLOAT16 = 1 };

struct Stats {
  double err2 = 0, power = 0, max_err = 0;  // sum (w - w_hat)^2, sum w^2, max |w - w_hat|
};

// max over each row of |w|'s bits (the sign bit cleared), `rows` rows of `cols` values.
template <class W>
void absmax_rows(const W* w, std::size_t rows, std::size_t cols, W* out, int threads);

// symbols = rint(w / step), recon = symbols * step cast to the dtype; one step per row of
// `cols` values (nsteps == rows) or one for all (nsteps == 1). Symbols must fit S (|symbol| < 2^31);
// recon may be null (only the statistics are wanted).
template <class W, class S>
Stats uniform(const W* w, std::size_t n, Kind kind, const double* steps, std::size_t nsteps, std::size_t cols,
              S* symbols, W* recon, int threads);

// Group-wise (uniform:group=G): (min, max) of every group of `group` consecutive values of each
// row (the last group shorter), as float64 (rows x ceil(cols / group)); finite input only.
template <class W>
void group_ranges(const W* w, std::size_t rows, std::size_t cols, Kind kind, std::size_t group, double* lo,
                  double* hi, int threads);

// symbols = rint((w - zero) / step) per group, recon = symbols * step + zero cast to the dtype, as
// kernels/uniform.quantize_groups / dequantize_groups do; steps per group (nsteps = rows x groups)
// or one; zeros per group or null; recon may be null.
template <class W, class S>
Stats uniform_groups(const W* w, std::size_t rows, std::size_t cols, Kind kind, std::size_t group,
                     const double* steps, std::size_t nsteps, const double* zeros, S* symbols, W* recon, int threads);

// Counts of the levels rint(w / step) of float64 weights, a step per row of `cols` values (nsteps == rows) or
// one: counts[k] of level lo + k. False, nothing counted, where a level is not finite, not below 2^51 in
// magnitude, or the levels span more than max_size (tuning/allocate.py's order-0 bits at a trial step:
// its bisection counted with four NumPy passes over the weights a try).
bool rounded_counts(const double* w, std::size_t n, const double* steps, std::size_t nsteps, std::size_t cols,
                    std::size_t max_size, int64_t* lo, std::vector<int64_t>* counts, int threads);

// No NaN or Inf among n float bits (the exponent never all ones).
template <class W>
bool all_finite(const W* w, std::size_t n, int threads);

// Group-wise side values at M mantissa bits (uniform:side=M; methods/uniform.py's coded_side):
// the step of code n, (2^M + n mod 2^M) * 2^(n div 2^M - M) with the exponent clamped to +-4096
// (0 or inf beyond either way), and the zero point of centre code c at `frac` bits,
// (c - (2^bits - 1) 2^(frac - 1)) * step / 2^frac, in float64, the operations NumPy did in turn.
void side_steps(const int64_t* codes, std::size_t n, int mant, double* steps, int threads);
void side_zeros(const int64_t* centres, const double* steps, std::size_t n, int bits, int frac, double* zeros,
                int threads);

// The decoder's both at once (frac = M - 2), and whether every value is one compress could have
// written: |n div 2^M| <= max_exponent, steps positive and finite, zero points finite.
bool side_values(const int64_t* codes, const int64_t* centres, std::size_t n, int mant, int bits,
                 int64_t max_exponent, double* steps, double* zeros, int threads);

inline double side_step(int64_t code, int mant) {
  const int64_t exponent = std::clamp<int64_t>((code >> mant) - mant, -4096, 4096);
  const double m = static_cast<double>((int64_t(1) << mant) + (code & ((int64_t(1) << mant) - 1)));
  if (exponent < -1022 || exponent > 1023) return std::ldexp(m, static_cast<int>(exponent));
  const uint64_t bits = static_cast<uint64_t>(exponent + 1023) << 52;  // 2^exponent, a normal float64
  double scale;
  std::memcpy(&scale, &bits, 8);
  return m * scale;  // (exact, or one rounding as ldexp's where the product leaves the normal range)
}

struct ZeroGrid {  // (c - (2^bits - 1) 2^(frac - 1)) * step / 2^frac, the two integers as float64
  double half_range, scale;
  ZeroGrid(int bits, int frac)
      : half_range(static_cast<double>(((int64_t(1) << bits) - 1) * (int64_t(1) << (frac - 1)))),
        scale(static_cast<double>(int64_t(1) << frac)) {}
  double operator()(int64_t centre, double step) const { return (static_cast<double>(centre) - half_range) * step / scale; }
};

// Element i of signed integers `bytes` wide (1, 2, 4 or 8): side codes as narrow as they decoded.
inline int64_t int_at(const void* p, int bytes, uint64_t i) {
  switch (bytes) {
    case 1: return static_cast<const int8_t*>(p)[i];
    case 2: return static_cast<const int16_t*>(p)[i];
    case 4: return static_cast<const int32_t*>(p)[i];
    default: return static_cast<const int64_t*>(p)[i];
  }
}

// One group's side values as side_values gives them (the batched decode computes them as it writes
// the group's weights, plan.h): false where compress could not have written them.
struct SideValues {
  int mant;
  int64_t max_exponent;
  ZeroGrid zero;
  SideValues(int mant, int bits, int64_t max_exponent) : mant(mant), max_exponent(max_exponent), zero(bits, mant - 2) {}
  bool operator()(int64_t code, int64_t centre, double* step, double* zero_point) const {
    const int64_t e = code >> mant;
    *step = side_step(code, mant);
    *zero_point = zero(centre, *step);
    return e <= max_exponent && e >= -max_exponent && *step > 0 && std::isfinite(*step) && std::isfinite(*zero_point);
  }
};

// Whether each of n (step code, centre) pairs (signed ints `code_bytes` / `centre_bytes` wide) is one compress
// could have written, and the largest step and |zero point| among them: the GPU decoder's host check, where
// the kernel computes each group's values from the codes (kernels/decode.cu's side_values).
bool side_range(const void* codes, int code_bytes, const void* centres, int centre_bytes, std::size_t n, int mant,
                int bits, int64_t max_exponent, double* largest_step, double* largest_zero, int threads);

// The statistics alone, of a reconstruction made elsewhere (another method).
template <class W>
Stats error_stats(const W* w, const W* recon, std::size_t n, Kind kind, int threads);

}  // namespace zc::quant
