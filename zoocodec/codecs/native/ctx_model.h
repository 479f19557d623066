// The `ctx` coder's encoder side (zoocodec/codecs/context.py): what choosing a model costs. best_model
// prices every layout and bin count on the whole matrix; each price needs the symbols' counts per
// context, and in NumPy that was a matrix of every symbol's context, then a matrix of bincount indices.
#pragma once
#include <cstddef>
#include <cstdint>

namespace zc::ctx {

// counts[k * size + (m[i][j] - lo)] += 1 for k = pair[row_of[i] * pair_cols + col_of[j]]: the levels of
// a rows x cols matrix counted by context (bins x size, zeroed first), where a position's context is
// given by its row's and its column's class index. Throws std::invalid_argument for an index, context or
// level outside its range.
void count_levels(const int64_t* m, std::size_t rows, std::size_t cols, const int64_t* row_of, const int64_t* col_of,
                  const int64_t* pair, std::size_t pair_rows, std::size_t pair_cols, std::size_t bins, int64_t lo,
                  std::size_t size, int64_t* counts, int threads);

}  // namespace zc::ctx
