#include "plan.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ZC_AVX2 1
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <string>
#include <mutex>
#include <type_traits>
#include <vector>

#include "checksum.h"
#include "floatplanes.h"
#include "inflate.h"
#include "pool.h"
#include "rans_avx2.h"

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

// Whether v stays finite in the output kind: a forged step or codebook value would write infinities
// (compress never stores a value outside the dtype's range).
template <class O>
bool finite_bits(O b, int kind) {  // (b: a value as converted to the kind)
  return kind == F32 ? (b & 0x7F800000u) != 0x7F800000u : kind == F16 ? (b & 0x7C00u) != 0x7C00u
                                                                      : (b & 0x7F80u) != 0x7F80u;
}

bool finite_in(double v, int kind) {
  return kind == F32 ? finite_bits(convert<uint32_t>(v, kind), kind) : finite_bits(convert<uint16_t>(v, kind), kind);
}

// Every value a parsed job can write is finite in its kind: the codebook's values, or the
// lowest and highest symbol times each row's step. Throws Corrupt.
void check_range(const Fused& a, const ans::Frame& f) {
  const char* kind = a.kind == F32 ? "float32" : a.kind == F16 ? "float16" : "bfloat16";
  if (a.k) {
    for (uint64_t i = 0; i < a.rows * a.k; ++i)
      if (!finite_in(a.values[i], a.kind)) throw Corrupt(std::string("a codebook value lies outside the ") + kind + " range");
    return;
  }
  const rans::Parsed& p = f.stream;
  if (p.n == 0) return;
  const int64_t low = f.lo + (p.L ? 0 : int64_t(p.constant)), high = f.lo + (p.L ? int64_t(p.nsym) - 1 : int64_t(p.constant));
  for (uint64_t row = 0; row < a.rows; ++row)
    if (!finite_in(double(low) * a.values[row], a.kind) || !finite_in(double(high) * a.values[row], a.kind))
      throw Corrupt(std::string("symbols times the step of row ") + std::to_string(row) + " lie outside the " + kind + " range");
}

#ifdef ZC_AVX2
// out[i] = value of (lo + sym[i]) * step for i < m - m % 8, 8 at a time: the int32 sum converted
// to float64 exactly, one float64 product, rounded to float32 (and to bfloat16 as to_bf16 does)
// as the scalar convert() rounds it, so the bits are the same. lo + every symbol fits an int32.
// `out` is aligned to the stores' 32 (float32) or 16 bytes (bfloat16): they are non-temporal, as
// floatplanes.cpp's merges (a load's outputs are written once, not read soon; a plain store
// reads its line first, and two threads' memory traffic set their pace).
template <class O, class T>
__attribute__((target("avx2"))) uint64_t affine_avx2(const T* sym, uint64_t m, int32_t lo, double step, O* out) {
  const __m256i base = _mm256_set1_epi32(lo), bias = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
  const __m256d by = _mm256_set1_pd(step);
  (void)bias, (void)one;  // (bfloat16 only)
  uint64_t i = 0;
  for (; i + 8 <= m; i += 8) {
    __m256i s;
    if constexpr (sizeof(T) == 1) s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sym + i)));
    else s = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sym + i)));
    s = _mm256_add_epi32(s, base);
    const __m128 lo4 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(s)), by));
    const __m128 hi4 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(s, 1)), by));
    const __m256i f = _mm256_castps_si256(_mm256_set_m128(hi4, lo4));
    if constexpr (sizeof(O) == 4) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(out + i), f);
    } else {  // nearest-even to the top 16 bits: b + 0x7FFF + ((b >> 16) & 1), in 32-bit lanes
      const __m256i r = _mm256_add_epi32(_mm256_add_epi32(f, bias), _mm256_and_si256(_mm256_srli_epi32(f, 16), one));
      const __m256i h = _mm256_srli_epi32(r, 16);
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(h, h), 0x08);
      _mm_stream_si128(reinterpret_cast<__m128i*>(out + i), _mm256_castsi256_si128(packed));
    }
  }
  return i;
}
#else
template <class O, class T>
uint64_t affine_avx2(const T*, uint64_t, int32_t, double, O*) { return 0; }  // never called: rans::avx2() is false
#endif

// Values of m symbols (indices into the alphabet) of element range [first, first + m).
template <class O, class T>
void emit(const Fused& a, int64_t lo, uint32_t nsym, const T* sym, uint64_t first, uint64_t m, O* lut) {
  O* out = static_cast<O*>(a.out);
  const int64_t k = static_cast<int64_t>(a.k);
  const bool vector = !k && a.kind != F16 && rans::avx2() && lo >= INT32_MIN && lo + int64_t(nsym) - 1 <= INT32_MAX &&
                      reinterpret_cast<uintptr_t>(out) % sizeof(O) == 0;  // (then aligned stores can start)
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
    if (vector) {  // float32 and bfloat16 computed 8 at a time from an aligned start, the rest one by one
      constexpr uintptr_t align = 8 * sizeof(O);
      const uint64_t head = std::min<uint64_t>(run, (align - reinterpret_cast<uintptr_t>(out + e) % align) % align /
                                                        sizeof(O));
      auto one = [&](uint64_t i) {
        out[e + i] = convert<O>(static_cast<double>(lo + static_cast<int64_t>(sym[j + i])) * step, a.kind);
      };
      for (uint64_t i = 0; i < head; ++i) one(i);
      const uint64_t done = head + affine_avx2(sym + j + head, run - head, static_cast<int32_t>(lo), step, out + e + head);
      for (uint64_t i = done; i < run; ++i) one(i);
    } else if (lut && run >= 2 * nsym) {  // a row's values by table: nsym conversions instead of `run`
      for (uint32_t s = 0; s < nsym; ++s) lut[s] = convert<O>(static_cast<double>(lo + s) * step, a.kind);
      for (uint64_t i = 0; i < run; ++i) out[e + i] = lut[sym[j + i]];
    } else {
      for (uint64_t i = 0; i < run; ++i)
        out[e + i] = convert<O>(static_cast<double>(lo + static_cast<int64_t>(sym[j + i])) * step, a.kind);
    }
    j += run;
  }
}

// Substreams first .. first + count of a fused job (count > 1: a group the vector decoder
// advances together, rans_avx2.h); for a constant stream (L == 0), runs of 2^16 symbols instead.
// For a planes job: its task `first`. For a check: checks[job].
struct Item {
  enum Kind : uint8_t { FUSED, PLANES, CHECK } kind;
  std::size_t job, first, count;
};

constexpr uint8_t PLANE_RAW = 0, PLANE_RANS = 1, PLANE_ZSTD = 2, PLANE_HUFF = 3;  // codecs/floatplanes.py's modes

// A zstd-coded plane of a planes job: its frame, inflated on the pass into memory of its own.
struct Zplane {
  std::size_t job;
  const uint8_t* frame;
  std::size_t size;
  Scratch plane;
};

// A planes job's frame -> its prepared merge (its substreams in groups: decode() splits them further
// where the pass is short of tasks); each zstd-coded plane joins `zstd`, and the merge reads it raw from
// the memory it is inflated into.
void parse_planes(const Planes& a, std::size_t job, planes::Merge* g, std::vector<Zplane>* zstd) {
  Reader r(a.payload, a.size);
  const uint64_t n = r.uvarint(UINT64_MAX);
  const int width = r.byte();
  if (n != a.count || width != a.width)
    throw Corrupt("holds " + std::to_string(n) + " values of " + std::to_string(width) + " bytes, expected " +
                  std::to_string(a.count) + " of " + std::to_string(a.width));
  int modes[4];
  const uint8_t* data[4];
  std::size_t sizes[4];
  bool inflated[4] = {};
  for (int k = 0; k < width; ++k) {
    const uint8_t mode = r.byte();
    if (mode != PLANE_RAW && mode != PLANE_RANS && mode != PLANE_ZSTD && mode != PLANE_HUFF)
      throw Corrupt("unknown plane mode " + std::to_string(mode));
    modes[k] = mode == PLANE_RANS ? planes::RANS : mode == PLANE_HUFF ? planes::HUFF : planes::RAW;
    inflated[k] = mode == PLANE_ZSTD;
    sizes[k] = r.uvarint(r.left());
    data[k] = r.take(sizes[k]);
  }
  if (r.left()) throw Corrupt("bytes left after the planes");
  for (int k = 0; k < width; ++k) {  // (memory only once the frame holds together: n values, as the output)
    if (!inflated[k]) continue;
    zstd->push_back({job, data[k], sizes[k], Scratch(n)});
    data[k] = zstd->back().plane.data(), sizes[k] = n;
  }
  *g = planes::prepare(n, width, modes, data, sizes, a.out, 1);
}

}  // namespace

void decode(std::vector<Fused>& jobs, std::vector<Planes>& planes, int threads, const std::vector<Ref>& order,
            std::vector<Check>* checks, Helper* helper) {
  std::vector<ans::Frame> frames(jobs.size());
  std::vector<Item> items;
  std::vector<planes::Merge> merges(planes.size());
  const int workers = threads > 0 ? threads : default_threads();
  const int own = helper ? std::max(1, workers - 1) : workers;  // (the helper: one more when it comes)
  std::vector<std::vector<Zplane>> zstd(planes.size());  // each planes job's zstd planes
  // every frame parsed (and its tables built) on the pool, then the zstd planes inflated, then the items in order
  parallel_for(planes.size() + jobs.size(), own, [&](std::size_t i) {
    if (i < planes.size()) {
      Planes& a = planes[i];
      try {
        parse_planes(a, i, &merges[i], &zstd[i]);
      } catch (const Corrupt& e) {
        a.status = 2;
        a.error = e.what();
      }
      return;
    }
    const std::size_t t = i - planes.size();
    Fused& a = jobs[t];
    try {
      Reader r(a.payload, a.size);
      if (!ans::parse_frame(r, a.count, &frames[t])) {
        a.status = 1;
        return;
      }
      if (a.rows > 1 && (a.row_len == 0 || (a.rows - 1) * a.row_len >= a.count || a.rows * a.row_len < a.count))
        throw Corrupt("rows do not match the shape");
      check_range(a, frames[t]);
    } catch (const Corrupt& e) {
      a.status = 2;
      a.error = e.what();
    }
  }, helper);
  std::vector<Zplane*> inflating;
  for (std::size_t i = 0; i < planes.size(); ++i)
    if (!planes[i].status)
      for (Zplane& z : zstd[i]) inflating.push_back(&z);
  std::vector<std::string> inflate_errors(inflating.size());
  parallel_for(inflating.size(), own, [&](std::size_t k) {
    Zplane& z = *inflating[k];
    try {
      unzstd(z.frame, z.size, z.plane.data(), planes[z.job].count);
    } catch (const Corrupt& e) {
      inflate_errors[k] = e.what();
    }
  }, helper);
  for (std::size_t k = 0; k < inflating.size(); ++k) {
    Planes& a = planes[inflating[k]->job];
    if (!inflate_errors[k].empty() && !a.status) a.status = 2, a.error = inflate_errors[k];
  }
  // A planes job's substreams split beyond their groups only where the whole pass has fewer tasks than
  // threads: one job alone keeps every thread busy that way, but many split jobs leave tasks of one
  // substream, which decode at a third of a group's speed (minilm's 38 bf16 matrices of 147K-590K
  // values: 2 threads 1.2x as fast as 1 when each was split).
  std::size_t grouped = 0;
  for (const Fused& a : jobs) grouped += a.status == 0;  // (a fused job: one task at least)
  for (std::size_t i = 0; i < planes.size(); ++i) grouped += planes[i].status ? 0 : merges[i].tasks;
  if (grouped < static_cast<std::size_t>(workers))
    for (std::size_t i = 0; i < planes.size(); ++i)
      if (!planes[i].status) merges[i].tasks = planes::tasks_for(merges[i], workers);
  auto add = [&](Ref r) {
    const std::size_t t = r.index;
    if (r.planes) {
      if (!planes[t].status)
        for (std::size_t i = 0; i < merges[t].tasks; ++i) items.push_back({Item::PLANES, t, i, 0});
      return;
    }
    if (jobs[t].status) return;
    const rans::Parsed& p = frames[t].stream;
    const std::size_t parts = p.n == 0 ? 0 : p.L == 0 ? (p.n - 1) / (uint64_t(1) << 16) + 1 : p.body.size();
    const std::size_t group = p.L && rans::vector_ready(p) ? rans::DECODE_GROUP : 1;
    for (std::size_t i = 0; i < parts; i += group) items.push_back({Item::FUSED, t, i, std::min(group, parts - i)});
  };
  std::vector<std::size_t> by_job;  // checks by the job they precede
  if (checks) {
    by_job.resize(checks->size());
    for (std::size_t c = 0; c < by_job.size(); ++c) by_job[c] = c;
    std::stable_sort(by_job.begin(), by_job.end(),
                     [&](std::size_t a, std::size_t b) { return (*checks)[a].before < (*checks)[b].before; });
  }
  std::size_t next = 0;
  auto checks_before = [&](int64_t job) {
    for (; next < by_job.size() && (*checks)[by_job[next]].before <= job; ++next)
      items.push_back({Item::CHECK, by_job[next], 0, 0});
  };
  checks_before(-1);
  if (order.empty()) {
    for (std::size_t t = 0; t < planes.size(); ++t) add({true, t});
    for (std::size_t t = 0; t < jobs.size(); ++t) add({false, t});
  } else {
    for (std::size_t k = 0; k < order.size(); ++k) {
      checks_before(static_cast<int64_t>(k));
      add(order[k]);
    }
  }
  checks_before(INT64_MAX);
  std::vector<std::exception_ptr> failed(jobs.size()), failed_planes(planes.size());
  std::mutex failing;
  parallel_for(items.size(), own, [&](std::size_t k) {
    const Item it = items[k];
    if (it.kind == Item::CHECK) {
      Check& c = (*checks)[it.job];
      c.bad = checksum(c.data, c.size) != c.sum;
      return;
    }
    if (it.kind == Item::PLANES) {
      try {
        planes::run_task(merges[it.job], it.first);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failing);
        if (!failed_planes[it.job]) failed_planes[it.job] = std::current_exception();
      }
      return;
    }
    Fused& a = jobs[it.job];
    const ans::Frame& f = frames[it.job];
    const rans::Parsed& p = f.stream;
    const uint64_t chunk = p.L == 0 ? uint64_t(1) << 16 : p.chunk;
    const uint64_t first = it.first * chunk, m = std::min(chunk * it.count, p.n - first);
    thread_local std::vector<uint16_t> sym16;
    thread_local std::vector<uint8_t> sym8;
    thread_local std::vector<uint32_t> lut32;
    thread_local std::vector<uint16_t> lut16;
    try {
      auto run = [&](auto* sym) {
        using T = std::remove_pointer_t<decltype(sym)>;
        if (p.L == 0) {
          std::fill(sym, sym + m, static_cast<T>(p.constant));
        } else if constexpr (sizeof(T) == 1) {
          if (it.count > 1) rans::decode_group(p, it.first, it.count, sym);
          else rans::decode_substream(p, it.first, sym);
        } else {
          rans::decode_substream(p, it.first, sym);
        }
        // by table where conversions repeat: float16's rounding is a call; a codebook has k values
        const bool table = (a.k ? a.k <= 256 : p.nsym <= 256) && (a.kind == F16 || a.rows == 1 || a.k);
        if (a.kind == F32) {
          lut32.resize(256);
          emit<uint32_t>(a, f.lo, p.nsym, sym, first, m, table ? lut32.data() : nullptr);
        } else {
          lut16.resize(256);
          emit<uint16_t>(a, f.lo, p.nsym, sym, first, m, table ? lut16.data() : nullptr);
        }
#ifdef ZC_AVX2
        _mm_sfence();  // (emit's streamed stores are weakly ordered: visible before the task counts as done)
#endif
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
  }, helper);
  auto report = [](std::exception_ptr failure, int& status, std::string& error) {
    if (!failure) return;
    status = 2;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      error = e.what();
    }
  };
  for (std::size_t t = 0; t < jobs.size(); ++t) report(failed[t], jobs[t].status, jobs[t].error);
  for (std::size_t t = 0; t < planes.size(); ++t) report(failed_planes[t], planes[t].status, planes[t].error);
}

bool dequantize_groups(const int64_t* symbols, uint64_t rows, uint64_t cols, const double* steps, bool per_group,
                       const double* zeros, uint64_t group, int kind, void* out, int threads) {
  const uint64_t groups = (cols + group - 1) / group;
  std::atomic<bool> finite{true};
  parallel_for(rows, threads, [&](std::size_t r) {
    auto run = [&](auto* o) {
      using O = std::remove_pointer_t<decltype(o)>;
      bool ok = true;
      for (uint64_t g = 0; g < groups; ++g) {  // (a group at a time: no division a value)
        const double step = per_group ? steps[r * groups + g] : steps[0];
        const uint64_t c0 = g * group, c1 = std::min(cols, c0 + group);
        const int64_t* in = symbols + r * cols;
        O* dst = o + r * cols;
        auto put = [&](uint64_t c, double v) {
          const O b = convert<O>(v, kind);
          dst[c] = b;
          ok &= finite_bits(b, kind);
        };
        if (zeros) {
          const double zero = zeros[r * groups + g];
          for (uint64_t c = c0; c < c1; ++c) put(c, static_cast<double>(in[c]) * step + zero);
        } else {
          for (uint64_t c = c0; c < c1; ++c) put(c, static_cast<double>(in[c]) * step);
        }
      }
      if (!ok) finite = false;
    };
    if (kind == F32) run(static_cast<uint32_t*>(out));
    else run(static_cast<uint16_t*>(out));
  });
  return finite;
}

}  // namespace zc::plan
