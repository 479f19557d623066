// Data-aware rounding's inner loops (zoocodec/tuning/calibrate.py's gptq and descend) for nearest rounding
// and no rate term, automatic mode's default: each row's column loop is independent of the other rows'
// (the block updates between them stay NumPy matrix products), so rows run on the native pool. The float64
// operations are NumPy's in the same order, without FMA contraction (-ffp-contract=off, CMakeLists.txt): the
// indices equal calibrate.py's NumPy loops bit for bit. In NumPy the two loops were a third of `compress
// minilm --target-loss 1%` (79 of 250 s).
#pragma once
#include <cstddef>
#include <cstdint>

namespace zc::gptq {

// GPTQ's columns [b0, b1) of w (rows x d, updated in place): column j rounded to the nearest multiple of
// step[r] (q[r][j] its index), its error divided by u's diagonal stored in err[r][j - b0] and fed to
// columns j + 1 .. b1 - 1 through row j of u. u: groups x d x d, one per consecutive equal group of rows.
void nearest_block(double* w, std::size_t rows, std::size_t d, const double* u, std::size_t groups, const double* step,
                   std::size_t b0, std::size_t b1, int64_t* q, double* err, int threads);

// Up to `sweeps` passes of coordinate descent on each row (calibrate.descend with rate 0): column by
// column, q[r][j] moves by +1 or -1 where that lowers the objective by more than 1e-12 of its curvature and
// stays in [lo, hi]; g (rows x d, H (w - q s)^T per row) follows each move through h's row j (h: groups x
// d x d); curve is d x rows. A row stops after a pass without a move.
void descend(const double* s, double* g, int64_t* q, std::size_t rows, std::size_t d, const double* h,
             std::size_t groups, const double* curve, int64_t lo, int64_t hi, int sweeps, int threads);

}  // namespace zc::gptq
