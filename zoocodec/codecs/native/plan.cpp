#include "plan.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>
#include <mutex>
#include <type_traits>

#include "pool.h"

namespace zc::plan {

namespace {

inline uint16_t to_bf16(double v) {  // float32 first, then nearest-even (methods/arrays.from_float64)
  float f = static_cast<float>(v);
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b = b + 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}

inline uint16_t to_f16(double v) {  // correctly rounded from float64, as NumPy's astype(float16)
  _Float16 h = static_cast<_Float16>(v);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

template <class O>
inline O convert(double v, int kind) {
  if constexpr (sizeof(O) == 4) {
    float f = static_cast<float>(v);
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
  } else {
    return kind == F16 ? to_f16(v) : to_bf16(v);
  }
}

// Values of m symbols (indices into the alphabet) of element range [first, first + m).
template <class O, class T>
void emit(const Fused& a, int64_t lo, uint32_t nsym, const T* sym, uint64_t first, uint64_t m, O* lut) {
  O* out = static_cast<O*>(a.out);
  const int64_t k = static_cast<int64_t>(a.k);
  uint64_t j = 0;
  while (j < m) {
    const uint64_t e = first + j;
    const uint64_t row = a.rows > 1 ? e / a.row_len : 0;
    const uint64_t run = a.rows > 1 ? std::min(m - j, a.row_len - e % a.row_len) : m - j;
    if (k) {  // lookup: the row's codebook, converted once where the run is long enough
      const double* book = a.values + row * a.k;
      if (lo < 0 || lo + static_cast<int64_t>(nsym) > k) {  // some symbol may lie outside the codebook
        for (uint64_t i = 0; i < run; ++i) {
          const int64_t s = lo + static_cast<int64_t>(sym[j + i]);
          if (s < 0 || s >= k) throw Corrupt("codebook index " + std::to_string(s) + " out of range 0.." +
                                             std::to_string(k - 1));
        }
      }
      if (lut && run >= 2 * static_cast<uint64_t>(k)) {
        for (int64_t s = 0; s < k; ++s) lut[s] = convert<O>(book[s], a.kind);
        for (uint64_t i = 0; i < run; ++i) out[e + i] = lut[lo + static_cast<int64_t>(sym[j + i])];
      } else {
        for (uint64_t i = 0; i < run; ++i) out[e + i] = convert<O>(book[lo + static_cast<int64_t>(sym[j + i])], a.kind);
      }
      j += run;
      continue;
    }
    const double step = a.values[row];
    if (lut && run >= 2 * nsym) {  // a row's values by table: nsym conversions instead of `run`
      for (uint32_t s = 0; s < nsym; ++s) lut[s] = convert<O>(static_cast<double>(lo + s) * step, a.kind);
      for (uint64_t i = 0; i < run; ++i) out[e + i] = lut[sym[j + i]];
    } else {
      for (uint64_t i = 0; i < run; ++i)
        out[e + i] = convert<O>(static_cast<double>(lo + static_cast<int64_t>(sym[j + i])) * step, a.kind);
    }
    j += run;
  }
}

struct Item {
  std::size_t job, sub;
};

}  // namespace

void decode(std::vector<Fused>& jobs, int threads) {
  std::vector<ans::Frame> frames(jobs.size());
  std::vector<Item> items;
  for (std::size_t t = 0; t < jobs.size(); ++t) {
    Fused& a = jobs[t];
    try {
      Reader r(a.payload, a.size);
      if (!ans::parse_frame(r, a.count, &frames[t])) {
        a.status = 1;
        continue;
      }
      const rans::Parsed& p = frames[t].stream;
      if (a.rows > 1 && (a.row_len == 0 || (a.rows - 1) * a.row_len >= a.count || a.rows * a.row_len < a.count))
        throw Corrupt("rows do not match the shape");
      const std::size_t parts = p.n == 0 ? 0 : p.L == 0 ? (p.n - 1) / (uint64_t(1) << 16) + 1 : p.body.size();
      for (std::size_t i = 0; i < parts; ++i) items.push_back({t, i});
    } catch (const Corrupt& e) {
      a.status = 2;
      a.error = e.what();
    }
  }
  std::vector<std::exception_ptr> failed(jobs.size());
  std::mutex failing;
  parallel_for(items.size(), threads, [&](std::size_t k) {
    const Item it = items[k];
    Fused& a = jobs[it.job];
    const ans::Frame& f = frames[it.job];
    const rans::Parsed& p = f.stream;
    const uint64_t chunk = p.L == 0 ? uint64_t(1) << 16 : p.chunk;
    const uint64_t first = it.sub * chunk, m = std::min(chunk, p.n - first);
    thread_local std::vector<uint16_t> sym16;
    thread_local std::vector<uint8_t> sym8;
    thread_local std::vector<uint32_t> lut32;
    thread_local std::vector<uint16_t> lut16;
    try {
      auto run = [&](auto* sym) {
        using T = std::remove_pointer_t<decltype(sym)>;
        if (p.L == 0) std::fill(sym, sym + m, static_cast<T>(p.constant));
        else rans::decode_substream(p, it.sub, sym);
        // by table where conversions repeat: float16's rounding is a call; a codebook has k values
        const bool table = (a.k ? a.k <= 256 : p.nsym <= 256) && (a.kind == F16 || a.rows == 1 || a.k);
        if (a.kind == F32) {
          lut32.resize(256);
          emit<uint32_t>(a, f.lo, p.nsym, sym, first, m, table ? lut32.data() : nullptr);
        } else {
          lut16.resize(256);
          emit<uint16_t>(a, f.lo, p.nsym, sym, first, m, table ? lut16.data() : nullptr);
        }
      };
      if (p.nsym <= 256) {
        sym8.resize(std::max<uint64_t>(m, 1));
        run(sym8.data());
      } else {
        sym16.resize(std::max<uint64_t>(m, 1));
        run(sym16.data());
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(failing);
      if (!failed[it.job]) failed[it.job] = std::current_exception();
    }
  });
  for (std::size_t t = 0; t < jobs.size(); ++t) {
    if (!failed[t]) continue;
    jobs[t].status = 2;
    try {
      std::rethrow_exception(failed[t]);
    } catch (const std::exception& e) {
      jobs[t].error = e.what();
    }
  }
}

}  // namespace zc::plan
