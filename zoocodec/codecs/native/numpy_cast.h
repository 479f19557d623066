// float64 -> integer conversions as NumPy's casts give them on x86-64: the value truncated, and the lowest
// integer for NaN and values out of range (a plain C++ cast is undefined there). The native paths that
// must write NumPy's integers bit for bit (rdoq.cpp, gptq.cpp) share them.
#pragma once
#include <cstdint>
#include <limits>

namespace zc {

inline int64_t to_i64(double v) {
  return v >= -9223372036854775808.0 && v < 9223372036854775808.0 ? static_cast<int64_t>(v)
                                                                     : std::numeric_limits<int64_t>::min();
}

inline int32_t to_i32(double v) {
  return v > -2147483649.0 && v < 2147483648.0 ? static_cast<int32_t>(v) : std::numeric_limits<int32_t>::min();
}

}  // namespace zc
