#include "plan.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ZC_AVX2 1
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <mutex>
#include <type_traits>
#include <vector>

#include "cabac.h"
#include "checksum.h"
#include "ctx_frame.h"
#include "dq.h"
#include "floatplanes.h"
#include "inflate.h"
#include "pool.h"
#include "quantize.h"
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

const char* kind_name(int kind) { return kind == F32 ? "float32" : kind == F16 ? "float16" : "bfloat16"; }

// Every value a parsed job can write is finite in its kind: the codebook's values, or the lowest
// and highest level (low, high) times the step of each row (of rows r0 .. r1; twice them for a
// trellis). Group-wise values, and a cabac job's walks, are checked as they are written. Throws Corrupt.
void check_range(const Fused& a, int64_t low, int64_t high, uint64_t r0 = 0, uint64_t r1 = UINT64_MAX) {
  if (a.kind == I64) return;
  const char* kind = kind_name(a.kind);
  if (a.k) {
    for (uint64_t i = 0; i < a.rows * a.k; ++i)
      if (!finite_in(a.values[i], a.kind)) throw Corrupt(std::string("a codebook value lies outside the ") + kind + " range");
    return;
  }
  if (a.group || a.count == 0) return;
  const double scale = a.walk ? 2 : 1;  // (a dq level k reconstructs 2k or 2k - sgn k)
  for (uint64_t row = r0; row < std::min(r1, a.rows); ++row)
    if (!finite_in(scale * double(low) * a.values[row], a.kind) || !finite_in(scale * double(high) * a.values[row], a.kind))
      throw Corrupt(std::string("symbols times the step of row ") + std::to_string(row) + " lie outside the " + kind + " range");
}

#ifdef ZC_AVX2
// out[i] = value of (lo + sym[i]) * step for i < m - m % 8, 8 at a time: the int32 sum converted
// to float64 exactly, one float64 product, rounded to float32 (and to bfloat16 as to_bf16 does)
// as the scalar convert() rounds it, so the bits are the same. lo + every symbol fits an int32.
// `out` is aligned to the stores' 32 (float32) or 16 bytes (bfloat16): they are non-temporal, as
// floatplanes.cpp's merges (a load's outputs are written once, not read soon; a plain store
// reads its line first, and two threads' memory traffic set their pace).
// lo + 8 symbols as int32 lanes.
template <class T>
__attribute__((target("avx2"))) inline __m256i levels8(const T* sym, __m256i lo) {
  if constexpr (sizeof(T) == 1)
    return _mm256_add_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sym))), lo);
  else
    return _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sym))), lo);
}

// float32 bits to bfloat16 in 32-bit lanes, nearest-even to the top 16 bits: b + 0x7FFF + ((b >> 16) & 1).
__attribute__((target("avx2"))) inline __m256i bf16_lanes(__m256i f) {
  const __m256i r = _mm256_add_epi32(_mm256_add_epi32(f, _mm256_set1_epi32(0x7FFF)),
                                     _mm256_and_si256(_mm256_srli_epi32(f, 16), _mm256_set1_epi32(1)));
  return _mm256_srli_epi32(r, 16);
}

// The low 16 bits of 8 lanes, packed into 128 bits.
__attribute__((target("avx2"))) inline __m128i pack16(__m256i h) {
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(h, h), 0x08));
}

template <class O, class T>
__attribute__((target("avx2"))) uint64_t affine_avx2(const T* sym, uint64_t m, int32_t lo, double step, O* out) {
  const __m256i base = _mm256_set1_epi32(lo);
  const __m256d by = _mm256_set1_pd(step);
  uint64_t i = 0;
  for (; i + 8 <= m; i += 8) {
    const __m256i s = levels8(sym + i, base);
    const __m128 lo4 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(s)), by));
    const __m128 hi4 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(s, 1)), by));
    const __m256i f = _mm256_castps_si256(_mm256_set_m128(hi4, lo4));
    if constexpr (sizeof(O) == 4) _mm256_stream_si256(reinterpret_cast<__m256i*>(out + i), f);
    else _mm_stream_si128(reinterpret_cast<__m128i*>(out + i), pack16(bf16_lanes(f)));
  }
  return i;
}

// A group's values, 8 at a time as affine_avx2 computes them, for i < m - m % 8: (lo + sym[i]) * step (+ zero),
// one float64 product (and sum) rounded as convert() rounds it. Plain stores (a group of 32 starts anywhere).
// False where a value is not finite in the kind.
template <class O, class T>
__attribute__((target("avx2"))) uint64_t grouped_avx2(const T* sym, uint64_t m, int32_t lo, double step,
                                                       const double* zero, O* out, bool* finite) {
  const __m256i base = _mm256_set1_epi32(lo), exp = _mm256_set1_epi32(sizeof(O) == 4 ? 0x7F800000 : 0x7F80);
  const __m256d by = _mm256_set1_pd(step), plus = _mm256_set1_pd(zero ? *zero : 0.0);
  __m256i bad = _mm256_setzero_si256();
  uint64_t i = 0;
  for (; i + 8 <= m; i += 8) {
    const __m256i s = levels8(sym + i, base);
    __m256d a = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(s)), by);
    __m256d b = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(s, 1)), by);
    if (zero) a = _mm256_add_pd(a, plus), b = _mm256_add_pd(b, plus);
    const __m256i f = _mm256_castps_si256(_mm256_set_m128(_mm256_cvtpd_ps(b), _mm256_cvtpd_ps(a)));
    if constexpr (sizeof(O) == 4) {
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(f, exp), exp));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), f);
    } else {
      const __m256i h = bf16_lanes(f);
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(h, exp), exp));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), pack16(h));
    }
  }
  if (!_mm256_testz_si256(bad, bad)) *finite = false;
  return i;
}

// (2k - cut) * step of 4 lanes, rounded to float32: the float64 arithmetic of dq::level and the product.
__attribute__((target("avx2"))) inline __m128 walked4(__m128i k, __m128i cut, __m256d step) {
  return _mm256_cvtpd_ps(_mm256_mul_pd(
      _mm256_sub_pd(_mm256_add_pd(_mm256_cvtepi32_pd(k), _mm256_cvtepi32_pd(k)), _mm256_cvtepi32_pd(cut)), step));
}

// A dq walk's values, 8 at a time for i < m - m % 8: level k = lo + sym[i] (int32) and the state's high
// bit high[i] give (2k - high * sgn k) * step, in float64 exactly (|2k| < 2^32) as dq::level gives it,
// rounded as convert() rounds it. Plain stores (a row starts anywhere).
template <class O, class T>
__attribute__((target("avx2"))) uint64_t walked_avx2(const T* sym, const uint8_t* high, uint64_t m, int32_t lo,
                                                     double step, O* out) {
  const __m256i base = _mm256_set1_epi32(lo), zero = _mm256_setzero_si256();
  const __m256d by = _mm256_set1_pd(step);
  uint64_t i = 0;
  for (; i + 8 <= m; i += 8) {
    const __m256i k = levels8(sym + i, base);
    const __m256i sgn = _mm256_sub_epi32(_mm256_cmpgt_epi32(zero, k), _mm256_cmpgt_epi32(k, zero));
    const __m256i h = _mm256_sub_epi32(zero, _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(high + i))));
    const __m256i cut = _mm256_and_si256(sgn, h);  // (h is 0 or -1 a lane)
    const __m128 lo4 = walked4(_mm256_castsi256_si128(k), _mm256_castsi256_si128(cut), by);
    const __m128 hi4 = walked4(_mm256_extracti128_si256(k, 1), _mm256_extracti128_si256(cut, 1), by);
    const __m256i f = _mm256_castps_si256(_mm256_set_m128(hi4, lo4));
    if constexpr (sizeof(O) == 4) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), f);
    else _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), pack16(bf16_lanes(f)));
  }
  return i;
}
#else
template <class O, class T>
uint64_t walked_avx2(const T*, const uint8_t*, uint64_t, int32_t, double, O*) { return 0; }  // never called
template <class O, class T>
uint64_t affine_avx2(const T*, uint64_t, int32_t, double, O*) { return 0; }  // never called: rans::avx2() is false
template <class O, class T>
uint64_t grouped_avx2(const T*, uint64_t, int32_t, double, const double*, O*, bool*) { return 0; }
#endif

// Group-wise values of m levels (lo + sym[i]) of elements first .. first + m (a.group > 0): float64(level) *
// the step of its group (+ its zero point), rounded as convert() rounds it, a group's run at a time (its row
// and group advanced, not divided), 8 at a time with AVX2 where the levels are 1 or 2 bytes in int32 range.
// Throws Corrupt where a value is not finite in the kind.
template <class O, class T>
void group_values(const Fused& a, int64_t lo, uint32_t nsym, const T* sym, uint64_t first, uint64_t m, O* out) {
  bool vector = false;
  if constexpr (sizeof(T) <= 2)
    vector = a.kind != F16 && rans::avx2() && lo >= INT32_MIN && lo + int64_t(nsym) - 1 <= INT32_MAX;
  const uint64_t groups = (a.cols + a.group - 1) / a.group;
  uint64_t row = first / a.cols, c = first % a.cols, g = c / a.group;
  bool finite = true, coded = true;
  const quant::SideValues side(a.codes ? a.mant : 3, a.codes ? a.bits : 1, a.max_exponent);  // (used with codes)
  for (uint64_t j = 0; j < m;) {
    const uint64_t run = std::min(m - j, std::min(a.cols, (g + 1) * a.group) - c);
    double step, zero = 0.0;
    if (a.codes) {
      const uint64_t at = row * groups + g;
      coded &= side(quant::int_at(a.codes, a.code_bytes, at), quant::int_at(a.centres, a.centre_bytes, at), &step,
                     &zero);
    } else {
      step = a.per_group ? a.values[row * groups + g] : a.values[0];
      if (a.zeros) zero = a.zeros[row * groups + g];
    }
    const bool zeros = a.zeros || a.codes;
    O* to = out + first + j;
    uint64_t done = 0;
    if constexpr (sizeof(T) <= 2)
      if (vector) done = grouped_avx2(sym + j, run, static_cast<int32_t>(lo), step, zeros ? &zero : nullptr, to, &finite);
    for (uint64_t i = done; i < run; ++i) {
      const double v = static_cast<double>(lo + static_cast<int64_t>(sym[j + i])) * step;
      const O b = convert<O>(zeros ? v + zero : v, a.kind);
      finite &= finite_bits(b, a.kind);
      to[i] = b;
    }
    j += run, c += run;
    if (c == a.cols) c = 0, g = 0, ++row;
    else ++g;
  }
  if (!coded) throw Corrupt("group step codes or centres give steps or zero points out of range");
  if (!finite) throw Corrupt(std::string("a group's values lie outside the ") + kind_name(a.kind) + " range");
}

// Values of m symbols (indices into the alphabet; int32 levels with lo 0 and nsym 2^32 - 1, which
// nothing tables) of element range [first, first + m).
template <class O, class T>
void emit(const Fused& a, int64_t lo, uint32_t nsym, const T* sym, uint64_t first, uint64_t m, O* lut) {
  O* out = static_cast<O*>(a.out);
  const int64_t k = static_cast<int64_t>(a.k);
  const bool vector = sizeof(T) <= 2 && !k && a.kind != F16 && rans::avx2() && lo >= INT32_MIN &&
                      lo + int64_t(nsym) - 1 <= INT32_MAX &&
                      reinterpret_cast<uintptr_t>(out) % sizeof(O) == 0;  // (then aligned stores can start)
  if (a.group) return group_values(a, lo, nsym, sym, first, m, out);
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
      uint64_t done = head;
      if constexpr (sizeof(T) <= 2)
        done += affine_avx2(sym + j + head, run - head, static_cast<int32_t>(lo), step, out + e + head);
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

// A task of the pass. FUSED: substreams first .. first + count of stream `stream` of a fused job (its
// ans frame; a ctx payload's: the context's), count > 1 a group the vector decoder advances together
// (rans_avx2.h); for a constant stream (L == 0), runs of RUN symbols instead. PLANES: task `first` of
// a planes job. CHECK: checks[job]. PLACE: block `first` of a ctx payload's elements, its symbols put
// in their places. WALK: walks first .. first + count of a trellis job. CABAC: substream `first` of a
// cabac job, its levels decoded and their values written (walked, for a trellis). ENDS: substreams first ..
// first + count of side array `stream` of a ctx payload's group ends (ctx::Frame's coded_ends), or its
// groups first .. first + count, their places filled and checked.
struct Item {
  enum Kind : uint8_t { FUSED, PLANES, CHECK, PLACE, WALK, CABAC, ENDS } kind;
  std::size_t job, first, count;
  uint32_t stream = 0;
};

constexpr uint64_t RUN = uint64_t(1) << 16;    // symbols of a constant stream a task writes
constexpr uint64_t BLOCK = uint64_t(1) << 16;  // elements of a ctx payload counted and placed at once
constexpr uint64_t WALK_ELEMENTS = 1 << 14;    // about the levels a walk task takes
constexpr uint64_t SLACK = 2 * ctx::MAX_GROUP;  // elements past a block the group-ends copies may write or read
constexpr uint64_t CABAC_SUBSTREAM = 1 << 20;   // levels a cabac substream may hold here (its buffer a thread's)
constexpr uint64_t ENDS_GROUPS = 1 << 16;       // groups whose ends a task fills and checks

// A fused job as parsed.
struct Job {
  ans::Frame frame;     // an ans frame (coder ANS, or a ctx payload of mode ORDER0)
  bool placed = false;  // a ctx payload of contexts or group ends (`ctx`): its symbols placed by blocks
  ctx::Frame ctx;
  int64_t lo = 0;       // every level lies in lo .. lo + span - 1
  uint32_t span = 0;
  std::vector<uint64_t> at;     // placed: per block, the positions of each context before it (bins + 2 a block)
  std::vector<uint64_t> start;  // placed: where each context's symbols begin in `sym`
  uint64_t coded = 0;           // placed: symbols its streams hold
  uint8_t* sym = nullptr;       // placed: every context's symbols (indices), context by context
  uint8_t* lev = nullptr;       // walk: the levels - lo, in element order
  // placed, contexts along columns: for each row base (ctx::Frame's row_base) rows share, the columns in
  // the order their symbols come off the contexts' streams (by context, then column), and how many each
  // context takes (build_orders)
  std::vector<int16_t> order_of;      // row base -> order, or empty (none built)
  std::vector<uint32_t> order_cols;   // orders x cols
  std::vector<uint32_t> order_count;  // orders x bins
  std::unique_ptr<cabac::Stream> cabac;  // a cabac payload (coder CABAC), parsed
  bool wide() const { return span > 256; }  // (sym and lev hold uint16, else uint8)
  std::size_t width() const { return wide() ? 2 : 1; }
  std::size_t memory(const Fused& a) const {  // (group-ends copies read up to SLACK symbols past `sym`'s)
    if (cabac) return 0;  // (its substreams decode into their threads' buffers)
    return (coded + (placed ? SLACK : 0) + (a.walk ? a.count : 0)) * width();
  }
  const rans::Parsed& stream(uint32_t s) const { return placed ? ctx.streams[s].body : frame.stream; }
  uint64_t blocks(uint64_t count) const { return placed ? (count + BLOCK - 1) / BLOCK : 0; }
};

// Whether the pass takes a parsed cabac job (else the method's own decode does): a trellis's stream is
// its walk matrix (a walk a row: the rows of the view, or its columns), cut into whole walks; other
// jobs' streams walk nothing; no substream holds more than CABAC_SUBSTREAM levels (a thread's buffer).
// Throws Corrupt where the stream does not fit the job.
bool cabac_taken(const Fused& a, const cabac::Stream& s) {
  if (a.count == 0) return true;
  if (s.trellis() != (a.walk ? cabac::kDq4Rows : cabac::kNone)) throw Corrupt("cabac: the stream's trellis is not the job's");
  if (a.walk && s.rows() != (a.walk == 1 ? a.count / a.cols : a.cols)) throw Corrupt("cabac: the stream's walks are not the job's");
  const uint64_t walk = a.count / std::max<uint64_t>(s.rows(), 1);
  return s.length() <= CABAC_SUBSTREAM && (!a.walk || s.length() % walk == 0);
}

// to[0 .. n) = by + from[0 .. n): a fixed length, whatever part of it is wanted (no branch on run lengths).
template <class T>
inline void spread(T* to, const T* from, T by, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) to[i] = static_cast<T>(by + from[i]);
}

// A row's contexts along columns put each symbol in its place through a cursor per context, the next
// symbol's place waiting on the last one's cursor in memory (about 8 cycles a symbol). The context of
// (row, column) is lut[row base + column class], so rows of one row base share one order of their
// columns by context: placing a whole row is then a copy per context into those columns, with no
// cursor in the loop. Built where rows share row bases: eight rows an order or more, so that the orders
// hold at most an eighth of the job's elements (and MAX_ORDERS columns in all).
constexpr uint64_t MAX_ORDERS = uint64_t(1) << 22;
void build_orders(Job& j) {
  const ctx::Frame& f = j.ctx;
  if (f.mode != ctx::CTX || !(f.layout & ctx::COLS) || f.cols > UINT32_MAX) return;
  std::vector<int16_t> order_of(f.lut.size(), -1);
  std::vector<int32_t> bases;
  for (int32_t b : f.row_base)
    if (order_of[b] < 0) {
      if ((bases.size() + 1) * f.cols > std::min<uint64_t>(f.n / 8, MAX_ORDERS)) return;
      order_of[b] = static_cast<int16_t>(bases.size());
      bases.push_back(b);
    }
  j.order_cols.resize(bases.size() * f.cols);
  j.order_count.assign(bases.size() * f.bins, 0);
  for (std::size_t k = 0; k < bases.size(); ++k) {
    const uint8_t* lut = f.lut.data() + bases[k];
    uint32_t* count = j.order_count.data() + k * f.bins;
    for (uint64_t c = 0; c < f.cols; ++c) ++count[lut[f.col_class[c]]];
    uint64_t next[ctx::MAX_BINS];
    for (uint64_t c = 0, at = 0; c < f.bins; at += count[c++]) next[c] = at;
    uint32_t* cols = j.order_cols.data() + k * f.cols;
    for (uint64_t c = 0; c < f.cols; ++c) cols[next[lut[f.col_class[c]]]++] = static_cast<uint32_t>(c);
  }
  j.order_of = std::move(order_of);
}

// Levels of elements [e0, e1) of a placed job into dst (levels - lo, as T), from its contexts' symbols.
// `slack`: dst may be written SLACK elements past e1 (a buffer of the caller's own).
template <class T>
void place(const Job& j, uint64_t block, uint64_t e0, uint64_t e1, uint8_t* ctxs, T* dst, bool slack) {
  const ctx::Frame& f = j.ctx;
  const std::size_t width = f.bins + 2;
  const uint64_t* before = j.at.data() + block * width;
  const uint64_t* total = j.at.data() + (j.at.size() - width);
  const T* sym = reinterpret_cast<const T*>(j.sym);
  uint64_t cur[ctx::MAX_BINS + 2], end[ctx::MAX_BINS + 2];
  T base[ctx::MAX_BINS + 2];
  for (uint64_t c = 0; c < f.bins; ++c) {
    cur[c] = j.start[c] + before[c], end[c] = j.start[c] + total[c];
    base[c] = static_cast<T>(f.streams[c].origin - j.lo);
  }
  const T known[2] = {static_cast<T>(f.lo - j.lo), static_cast<T>(f.hi - j.lo)};
  for (uint64_t e = e0; e < e1;) {  // each row's part of the block
    const uint64_t row = e / f.cols, c0 = e % f.cols, c1 = std::min(f.cols, c0 + (e1 - e)), n = c1 - c0;
    T* out = dst + (e - e0);
    e += n;
    if (f.mode == ctx::CTX && !(f.layout & ctx::COLS)) {  // one context a row: its next n symbols
      const uint8_t c = f.lut[f.row_base[row]];
      if (end[c] - cur[c] < n) throw Corrupt("a context's symbols run out");  // (count() and contexts() disagree)
      const T* from = sym + cur[c];
      for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<T>(base[c] + from[i]);
      cur[c] += n;
      continue;
    }
    if (f.mode == ctx::ENDS) {  // a group's contexts are runs: before both ends, between them, after both
      const uint64_t groups = (f.cols + f.group - 1) / f.group;
      for (uint64_t g = c0 / f.group, at = c0; at < c1; ++g) {
        const uint64_t g0 = g * f.group, size = std::min(f.cols, g0 + f.group) - g0;
        const uint64_t pa = at - g0, pb = std::min(c1, g0 + size) - g0;  // (this piece's positions in the group)
        const uint64_t l = f.first_lo[row * groups + g], h = f.first_hi[row * groups + g];
        const ctx::Runs r = ctx::runs(l, h, size);
        const uint64_t m1 = r.m1, m2 = r.m2;
        T* to = out + (at - c0) - pa;  // (indexed by position in the group)
        if (slack && pa == 0 && pb == size) {  // a whole group: each run copied at the group's length, overwritten
                                               // by the next run (reads within the scratch's slack)
          if (end[3] - cur[3] < r.before || end[r.mid] - cur[r.mid] < r.between || end[0] - cur[0] < r.after)
            throw Corrupt("a context's symbols run out");
          spread(to, sym + cur[3], base[3], f.group);
          cur[3] += r.before;
          if (m1 < size) {
            spread(to + m1 + 1, sym + cur[r.mid], base[r.mid], f.group);
            cur[r.mid] += r.between;
            to[m1] = known[m1 == l ? 0 : 1];
          }
          if (m2 < size) {
            spread(to + m2 + 1, sym + cur[0], base[0], f.group);
            cur[0] += r.after;
            to[m2] = known[m2 == l ? 0 : 1];
          }
          at = g0 + size;
          continue;
        }
        auto run = [&](uint64_t p0, uint64_t p1, uint8_t c) {
          p0 = std::max(p0, pa), p1 = std::min(p1, pb);
          if (p0 >= p1) return;
          if (end[c] - cur[c] < p1 - p0) throw Corrupt("a context's symbols run out");
          const T* from = sym + cur[c] - p0;
          const T by = base[c];
          for (uint64_t p = p0; p < p1; ++p) to[p] = static_cast<T>(by + from[p]);
          cur[c] += p1 - p0;
        };
        auto known_at = [&](uint64_t p) {
          if (p >= pa && p < pb) to[p] = known[p == l ? 0 : 1];
        };
        run(0, m1, 3);
        known_at(m1);
        run(m1 + 1, m2, r.mid);
        if (m2 != m1) known_at(m2);
        run(m2 + 1, size, 0);
        at = g0 + pb;
      }
      continue;
    }
    if (!j.order_of.empty() && n == f.cols) {  // a whole row, by its row base's order (build_orders)
      const std::size_t k = static_cast<std::size_t>(j.order_of[f.row_base[row]]);
      const uint32_t* cols = j.order_cols.data() + k * f.cols;
      const uint32_t* count = j.order_count.data() + k * f.bins;
      for (uint64_t c = 0; c < f.bins; cols += count[c++]) {
        const uint64_t m = count[c];
        if (end[c] - cur[c] < m) throw Corrupt("a context's symbols run out");
        const T* from = sym + cur[c];
        const T by = base[c];
        for (uint64_t i = 0; i < m; ++i) out[cols[i]] = static_cast<T>(by + from[i]);
        cur[c] += m;
      }
      continue;
    }
    ctx::contexts(f, row, c0, c1, ctxs);
    for (uint64_t i = 0; i < n; ++i) {
      const uint8_t c = ctxs[i];
      if (c >= f.bins) {
        out[i] = known[c - ctx::KNOWN_LO];
        continue;
      }
      if (cur[c] == end[c]) throw Corrupt("a context's symbols run out");
      out[i] = static_cast<T>(base[c] + sym[cur[c]++]);
    }
  }
}

// Walks w0 .. w1 of a cabac job's trellis (rows, or columns) through the dq state machine from state 0,
// the level of walk w at step j (element `at`) being level(w, j, at), side by side. False where a value
// is not finite in the kind (a cabac stream's levels are not ranged before; the other coders' walks:
// walk_rows and walk_cols).
template <class O, class Level>
bool walk(const Fused& a, uint64_t w0, uint64_t w1, Level level) {
  O* out = static_cast<O*>(a.out);
  const bool by_rows = a.walk == 1;
  const uint64_t rows = a.count / a.cols, steps = by_rows ? a.cols : rows;
  const uint64_t across = by_rows ? a.cols : 1, along = by_rows ? 1 : a.cols;
  std::vector<uint8_t> state(w1 - w0, 0);
  bool finite = true;
  for (uint64_t j = 0; j < steps; ++j) {
    const double by = a.rows > 1 && !by_rows ? a.values[j] : a.values[0];
    for (uint64_t w = w0; w < w1; ++w) {
      const uint64_t at = w * across + j * along;
      const int64_t k = level(w, j, at);
      const double step = a.rows > 1 && by_rows ? a.values[w] : by;
      const O b = convert<O>(dq::level(k, state[w - w0]) * step, a.kind);
      finite &= finite_bits(b, a.kind);
      out[at] = b;
      state[w - w0] = dq::next(state[w - w0], k);
    }
  }
  return finite;
}

// The values of levels lo + k[0 .. n) whose states have the high bits high[0 .. n), into out: 8 at a time
// with AVX2 (not into float16), the rest as walk() writes them.
template <class O, class T>
void walked(const Fused& a, const T* k, const uint8_t* high, uint64_t n, int64_t lo, double step, O* out) {
  uint64_t done = 0;
  if constexpr (sizeof(T) <= 2)  // (lo + every level fits an int32: the job's parse checked)
    if (a.kind != F16 && rans::avx2()) done = walked_avx2(k, high, n, static_cast<int32_t>(lo), step, out);
  for (uint64_t i = done; i < n; ++i)
    out[i] = convert<O>(dq::level(lo + int64_t(k[i]), static_cast<uint8_t>(high[i] << 1)) * step, a.kind);
}

constexpr uint64_t WALK_SPAN = 1024;  // levels of a row (or walks of a block of columns) taken at once

// Walks (rows) w0 .. w1 of a trellis job walked along its rows whose levels are lo + sym[element], the
// same values as walk() writes: a span of a row at a time, the high bit of the state before each level
// first (the one serial part: h(t+1) = parity(k(t)) xor h(t-1) from state 0, as the state's low bit is
// the previous high bit), then their values (walked). The range was checked before (check_range).
template <class O, class T>
void walk_rows(const Fused& a, uint64_t w0, uint64_t w1, int64_t lo, const T* sym) {
  O* out = static_cast<O*>(a.out);
  const uint64_t cols = a.cols;
  const uint8_t parity = static_cast<uint8_t>(lo & 1);
  uint8_t high[WALK_SPAN];
  for (uint64_t w = w0; w < w1; ++w) {
    const double step = a.rows > 1 ? a.values[w] : a.values[0];
    uint8_t before = 0, now = 0;  // the high bits of the states before the previous level and before this one
    for (uint64_t j0 = 0; j0 < cols; j0 += WALK_SPAN) {
      const uint64_t n = std::min(WALK_SPAN, cols - j0);
      const T* k = sym + w * cols + j0;
      for (uint64_t j = 0; j < n; ++j) {
        high[j] = now;
        const uint8_t next = static_cast<uint8_t>((parity ^ k[j]) & 1) ^ before;
        before = now, now = next;
      }
      walked(a, k, high, n, lo, step, out + w * cols + j0);
    }
  }
}

// Walks (columns) c0 .. c1 of a trellis job walked down its columns whose levels are lo + sym[element],
// the same values as walk() writes: for a block of columns, row after row, that row's values from the
// high bits of the columns' states (walked), then the states advanced (h' = parity(k) xor l, l' = h: byte
// loops the compiler vectorises). The range was checked before (check_range).
template <class O, class T>
void walk_cols(const Fused& a, uint64_t c0, uint64_t c1, int64_t lo, const T* sym) {
  O* out = static_cast<O*>(a.out);
  const uint64_t cols = a.cols, rows = a.count / cols;
  const uint8_t parity = static_cast<uint8_t>(lo & 1);
  uint8_t high[WALK_SPAN], low[WALK_SPAN];
  for (uint64_t b = c0; b < c1; b += WALK_SPAN) {
    const uint64_t n = std::min(WALK_SPAN, c1 - b);
    std::fill(high, high + n, 0), std::fill(low, low + n, 0);
    for (uint64_t r = 0; r < rows; ++r) {
      const T* k = sym + r * cols + b;
      walked(a, k, high, n, lo, a.rows > 1 ? a.values[r] : a.values[0], out + r * cols + b);
      for (uint64_t c = 0; c < n; ++c) {
        const uint8_t next = static_cast<uint8_t>((parity ^ k[c]) & 1) ^ low[c];
        low[c] = high[c], high[c] = next;
      }
    }
  }
}

// Substream s of a cabac job: its levels into a buffer of the thread's, then their values (by `values`,
// as an ans job's symbols, from the levels' lowest as bytes or 16-bit offsets where they span so few),
// or the walks it holds (whole walks: cabac_taken), each value checked finite as it is written.
template <class Values>
void cabac_values(const Fused& a, const cabac::Stream& s, uint64_t sub, Values& values) {
  thread_local std::vector<int32_t> lev;
  thread_local std::vector<uint16_t> sym;
  const uint64_t first = sub * s.length(), m = std::min(a.count, first + s.length()) - first;
  lev.resize(m);
  s.decode(sub, lev.data());
  if (a.walk) {
    const uint64_t length = a.count / s.rows(), w0 = first / length;
    const int32_t* l = lev.data();
    auto run = [&](auto* o) {
      using O = std::remove_pointer_t<decltype(o)>;
      return walk<O>(a, w0, w0 + m / length, [&](uint64_t w, uint64_t j, uint64_t) {
        return int64_t(l[(w - w0) * length + j]);
      });
    };
    if (!(a.kind == F32 ? run(static_cast<uint32_t*>(nullptr)) : run(static_cast<uint16_t*>(nullptr))))
      throw Corrupt(std::string("dq levels times their steps lie outside the ") + kind_name(a.kind) + " range");
    return;
  }
  int32_t low = 0, high = 0;
  if (m) {
    const auto [lo, hi] = std::minmax_element(lev.begin(), lev.end());
    low = *lo, high = *hi;
  }
  if (!a.k) {  // (a codebook: checked once, as the job was parsed)
    if (a.rows > 1) check_range(a, low, high, first / a.row_len, (first + m - 1) / a.row_len + 1);
    else check_range(a, low, high);
  }
  const uint64_t span = uint64_t(int64_t(high) - low) + 1;
  if (span > 65536) return values(a, 0, UINT32_MAX, lev.data(), first, m);  // (every level checked, none tabled)
  sym.resize(m);
  auto offsets = [&](auto* to) {
    for (uint64_t i = 0; i < m; ++i) to[i] = static_cast<std::remove_pointer_t<decltype(to)>>(lev[i] - low);
    values(a, low, static_cast<uint32_t>(span), to, first, m);
  };
  if (span <= 256) offsets(reinterpret_cast<uint8_t*>(sym.data()));
  else offsets(sym.data());
}

// Stream `stream` of job `job` (stream p) as tasks of `kind`: runs of RUN symbols where it is constant,
// groups of substreams the vector decoder advances together where it takes them, else a substream each.
void substream_items(const rans::Parsed& p, Item::Kind kind, std::size_t job, uint32_t stream, std::vector<Item>& items) {
  const std::size_t parts = p.n == 0 ? 0 : p.L == 0 ? (p.n - 1) / RUN + 1 : p.body.size();
  const std::size_t group = p.L && rans::vector_ready(p) ? rans::DECODE_GROUP : 1;
  for (std::size_t i = 0; i < parts; i += group) items.push_back({kind, job, i, std::min(group, parts - i), stream});
}

// The symbols of stream p a substream_items task holds: (the first one's index, how many).
std::pair<uint64_t, uint64_t> item_span(const rans::Parsed& p, const Item& it) {
  const uint64_t chunk = p.L == 0 ? RUN : p.chunk;
  const uint64_t first = it.first * chunk;
  return {first, std::min(chunk * it.count, p.n - first)};
}

// A substream_items task's m symbols of stream p into sym (T holds nsym - 1).
template <class T>
void decode_item(const rans::Parsed& p, const Item& it, uint64_t m, T* sym) {
  if (p.L == 0) {
    std::fill(sym, sym + m, static_cast<T>(p.constant));
  } else if constexpr (sizeof(T) == 1) {
    if (it.count > 1) rans::decode_group(p, it.first, it.count, sym);
    else rans::decode_substream(p, it.first, sym);
  } else if (rans::vector_ready(p)) {  // byte substreams into wider levels: as bytes, then widened
    thread_local std::vector<uint8_t> bytes;
    bytes.resize(m);
    rans::decode_group(p, it.first, it.count, bytes.data());
    std::copy(bytes.begin(), bytes.begin() + m, sym);
  } else {
    rans::decode_substream(p, it.first, sym);
  }
}

}  // namespace

// The group ends that parse_head left coded (ctx::Frame's coded_ends) of the parsed jobs, on the pool: their
// side arrays' substreams decoded, then their places filled and checked, a range of groups at a time; a job
// whose stream or places are corrupt is marked so. (Decoded with the frame, they were a serial part of
// the pass as long as its parallel ones: 26 and 30 ms of 0.9 s for a 0.5B-weight Q4_1-style model.)
void decode_ends(std::vector<Fused>& jobs, std::vector<Job>& state, int threads, Helper* helper) {
  std::vector<Item> items;
  for (std::size_t t = 0; t < jobs.size(); ++t) {
    if (jobs[t].status || state[t].ctx.coded_ends.empty()) continue;
    for (uint32_t k = 0; k < 2; ++k) substream_items(state[t].ctx.coded_ends[k].stream, Item::ENDS, t, k, items);
  }
  std::vector<std::string> errors(items.size());
  parallel_for(items.size(), threads, [&](std::size_t k) {
    const Item it = items[k];
    ctx::Frame::Coded& c = state[it.job].ctx.coded_ends[it.stream];
    const auto [first, m] = item_span(c.stream, it);
    try {
      decode_item(c.stream, it, m, c.places.data() + first);
    } catch (const Corrupt& e) {
      errors[k] = e.what();
    }
  }, helper);
  std::vector<Item> ranges;
  for (std::size_t k = 0; k < items.size(); ++k) {
    Fused& a = jobs[items[k].job];
    if (!errors[k].empty() && !a.status) a.status = 2, a.error = errors[k];
    if (k + 1 < items.size() && items[k + 1].job == items[k].job) continue;  // (its last item)
    const uint64_t groups = state[items[k].job].ctx.first_lo.size();
    for (uint64_t g = 0; g < groups && !a.status; g += ENDS_GROUPS)
      ranges.push_back({Item::ENDS, items[k].job, g, std::min(ENDS_GROUPS, groups - g)});
  }
  std::vector<int> wrong(ranges.size(), 0);
  parallel_for(ranges.size(), threads, [&](std::size_t k) {
    wrong[k] = ctx::ends_values(state[ranges[k].job].ctx, ranges[k].first, ranges[k].first + ranges[k].count);
  }, helper);
  for (std::size_t k = 0, worst = 0; k < ranges.size(); ++k) {
    worst = std::max<std::size_t>(worst, wrong[k]);
    if (k + 1 < ranges.size() && ranges[k + 1].job == ranges[k].job) continue;
    if (worst) {
      try {
        ctx::ends_error(static_cast<int>(worst));
      } catch (const Corrupt& e) {
        jobs[ranges[k].job].status = 2, jobs[ranges[k].job].error = e.what();
      }
    }
    worst = 0;
  }
  for (Job& j : state) std::vector<ctx::Frame::Coded>().swap(j.ctx.coded_ends);  // (their places: done)
}

void decode(std::vector<Fused>& jobs, std::vector<Planes>& planes, int threads, const std::vector<Ref>& order,
            std::vector<Check>* checks, Helper* helper) {
  std::vector<Job> state(jobs.size());
  std::vector<Item> items;
  std::vector<planes::Merge> merges(planes.size());
  const int workers = threads > 0 ? threads : default_threads();
  const int own = helper ? std::max(1, workers - 1) : workers;  // (the helper: one more when it comes)
  std::vector<std::vector<Zplane>> zstd(planes.size());  // each planes job's zstd planes
  auto fail = [](auto& a, const Corrupt& e) { a.status = 2, a.error = e.what(); };
  // A parsed job's range checks, and the memory of its levels where it walks a trellis.
  auto ready = [&](std::size_t t) {
    Fused& a = jobs[t];
    Job& j = state[t];
    if (a.walk && (j.lo < INT32_MIN || j.lo + int64_t(j.span) - 1 > INT32_MAX)) {
      a.status = 1;  // (levels past int32: the method's own decode)
      return;
    }
    const rans::Parsed& p = j.frame.stream;
    if (j.placed || p.L) check_range(a, j.lo, j.lo + int64_t(j.span) - 1);
    else if (p.n) check_range(a, j.lo + int64_t(p.constant), j.lo + int64_t(p.constant));
  };
  // every frame parsed (a ctx payload's side information), and its tables built, on the pool
  parallel_for(planes.size() + jobs.size(), own, [&](std::size_t i) {
    if (i < planes.size()) {
      try {
        parse_planes(planes[i], i, &merges[i], &zstd[i]);
      } catch (const Corrupt& e) {
        fail(planes[i], e);
      }
      return;
    }
    const std::size_t t = i - planes.size();
    Fused& a = jobs[t];
    Job& j = state[t];
    try {
      Reader r(a.payload, a.size);
      if (a.coder == CABAC) {
        j.cabac = std::make_unique<cabac::Stream>(a.payload, a.size, a.count);
      } else if (a.coder == CTX) {
        const uint8_t mode = r.byte();
        if (mode == ctx::CTX || mode == ctx::ENDS) {
          ctx::parse_head(r, mode, a.count, &j.ctx, true);
          j.placed = true;
        } else if (mode != ctx::ORDER0) {
          throw Corrupt("unknown mode " + std::to_string(mode));
        }
      }
      if (!j.placed && !j.cabac && !ans::parse_frame(r, a.count, &j.frame)) {
        a.status = 1;
        return;
      }
      if ((a.group || a.walk) ? a.cols == 0 || a.count % a.cols
                              : a.rows > 1 && (a.row_len == 0 || (a.rows - 1) * a.row_len >= a.count ||
                                               a.rows * a.row_len < a.count))
        throw Corrupt("rows do not match the shape");
      if (j.cabac) {
        a.status = cabac_taken(a, *j.cabac) ? 0 : 1;
        if (a.k) check_range(a, 0, 0);  // (its codebook; levels' range substream by substream)
        return;
      }
      if (j.placed) {
        j.at.assign((j.blocks(a.count) + 1) * (j.ctx.bins + 2), 0);
        return;  // (its streams once its contexts are counted)
      }
      j.lo = j.frame.lo, j.span = j.frame.stream.nsym;
      ready(t);
    } catch (const Corrupt& e) {
      fail(a, e);
    }
  }, helper);
  decode_ends(jobs, state, own, helper);
  // a ctx payload's contexts counted a block at a time, then its tables and streams parsed
  std::vector<std::pair<std::size_t, uint64_t>> blocks;
  for (std::size_t t = 0; t < jobs.size(); ++t)
    if (!jobs[t].status)
      for (uint64_t b = 0; b < state[t].blocks(jobs[t].count); ++b) blocks.emplace_back(t, b);
  parallel_for(blocks.size(), own, [&](std::size_t i) {
    const auto [t, b] = blocks[i];
    Job& j = state[t];
    const std::size_t width = j.ctx.bins + 2;
    uint64_t counts[ctx::MAX_BINS + 2] = {};  // (counted here: blocks' rows of `at` share cache lines)
    ctx::count(j.ctx, b * BLOCK, std::min(jobs[t].count, (b + 1) * BLOCK), counts);
    std::copy(counts, counts + width, j.at.data() + (b + 1) * width);
  }, helper);
  std::vector<std::size_t> placed;
  for (std::size_t t = 0; t < jobs.size(); ++t)
    if (!jobs[t].status && state[t].placed) placed.push_back(t);
  parallel_for(placed.size(), own, [&](std::size_t i) {
    const std::size_t t = placed[i];
    Fused& a = jobs[t];
    Job& j = state[t];
    try {
      const std::size_t width = j.ctx.bins + 2;
      for (std::size_t k = width; k < j.at.size(); ++k) j.at[k] += j.at[k - width];  // (blocks before each)
      const uint64_t* total = j.at.data() + (j.at.size() - width);
      ctx::parse_streams(&j.ctx, total);
      const auto [low, high] = ctx::levels(j.ctx, total);
      uint64_t coded = 0;
      j.start.resize(j.ctx.bins);
      for (uint64_t c = 0; c < j.ctx.bins; ++c) {
        j.start[c] = coded;
        coded += j.ctx.streams[c].count;
      }
      j.lo = low, j.span = static_cast<uint32_t>(high - low + 1);
      ready(t);
      j.coded = coded;
      build_orders(j);
    } catch (const Corrupt& e) {
      fail(a, e);
    }
  }, helper);
  // one block of memory for every ctx job's symbols and every walk's levels (kept for the next pass)
  auto span_of = [&](std::size_t t) { return jobs[t].status ? 0 : (state[t].memory(jobs[t]) + 7) / 8 * 8; };
  std::size_t need = 0;
  for (std::size_t t = 0; t < jobs.size(); ++t) need += span_of(t);
  Scratch scratch(need);
  for (std::size_t t = 0, at = 0; t < jobs.size(); ++t) {
    Job& j = state[t];
    j.sym = scratch.data() + at;
    j.lev = j.sym + (j.coded + (j.placed ? SLACK : 0)) * j.width();
    at += span_of(t);
  }
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
  auto streams = [&](std::size_t t, uint32_t s) { substream_items(state[t].stream(s), Item::FUSED, t, s, items); };
  auto add = [&](Ref r) {
    const std::size_t t = r.index;
    if (r.planes) {
      if (!planes[t].status)
        for (std::size_t i = 0; i < merges[t].tasks; ++i) items.push_back({Item::PLANES, t, i, 0});
      return;
    }
    if (jobs[t].status) return;
    if (state[t].cabac) {
      for (uint64_t i = 0; i < state[t].cabac->substreams(); ++i) items.push_back({Item::CABAC, t, i, 1});
      return;
    }
    if (!state[t].placed) return streams(t, 0);
    for (uint32_t c = 0; c < state[t].ctx.bins; ++c) streams(t, c);
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
  auto failing_job = [&](std::exception_ptr& slot) {
    std::lock_guard<std::mutex> lock(failing);
    if (!slot) slot = std::current_exception();
  };
  // Values of m levels (lo + sym[i]) of elements first .. first + m of job a, by emit.
  auto values = [&](const Fused& a, int64_t lo, uint32_t span, const auto* sym, uint64_t first, uint64_t m) {
    if (a.kind == I64) {
      int64_t* out = static_cast<int64_t*>(a.out) + first;
      for (uint64_t i = 0; i < m; ++i) out[i] = lo + static_cast<int64_t>(sym[i]);
      return;
    }
    thread_local std::vector<uint32_t> lut32(256);
    thread_local std::vector<uint16_t> lut16(256);
    // by table where conversions repeat: float16's rounding is a call; a codebook has k values
    const bool table = !a.group && (a.k ? a.k <= 256 : span <= 256) && (a.kind == F16 || a.rows == 1 || a.k);
    if (a.kind == F32) emit<uint32_t>(a, lo, span, sym, first, m, table ? lut32.data() : nullptr);
    else emit<uint16_t>(a, lo, span, sym, first, m, table ? lut16.data() : nullptr);
#ifdef ZC_AVX2
    _mm_sfence();  // (emit's streamed stores are weakly ordered: visible before the task counts as done)
#endif
  };
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
        failing_job(failed_planes[it.job]);
      }
      return;
    }
    const Fused& a = jobs[it.job];
    const Job& j = state[it.job];
    if (it.kind == Item::CABAC) {
      try {
        cabac_values(a, *j.cabac, it.first, values);
      } catch (...) {
        failing_job(failed[it.job]);
      }
      return;
    }
    const rans::Parsed& p = j.stream(it.stream);
    const std::pair<uint64_t, uint64_t> span = item_span(p, it);
    const uint64_t first = span.first, m = span.second;  // (not a structured binding: the lambda below takes them)
    thread_local std::vector<uint16_t> sym16;
    thread_local std::vector<uint8_t> sym8;
    try {
      auto run = [&](auto* sym) {  // the symbols, then (ans jobs that do not walk) their values
        decode_item(p, it, m, sym);
        if (!j.placed && !a.walk) values(a, j.lo, j.span, sym, first, m);
      };
      if (j.placed || a.walk) {  // into the job's memory: a context's symbols, or the levels in order
        uint8_t* at = j.placed ? j.sym + (j.start[it.stream] + first) * j.width() : j.lev + first * j.width();
        if (j.wide()) run(reinterpret_cast<uint16_t*>(at));
        else run(at);
      } else if (p.nsym <= 256) {
        sym8.resize(std::max<uint64_t>(m, 1));
        run(sym8.data());
      } else {
        sym16.resize(std::max<uint64_t>(m, 1));
        run(sym16.data());
      }
    } catch (...) {
      failing_job(failed[it.job]);
    }
  }, helper);
  // ctx payloads: each block's symbols in their places, then values (or levels, for a walk)
  items.clear();
  for (std::size_t t : placed)
    if (!jobs[t].status && !failed[t])
      for (uint64_t b = 0; b < state[t].blocks(jobs[t].count); ++b) items.push_back({Item::PLACE, t, b, 1});
  parallel_for(items.size(), own, [&](std::size_t k) {
    const Item it = items[k];
    const Fused& a = jobs[it.job];
    const Job& j = state[it.job];
    const uint64_t e0 = it.first * BLOCK, e1 = std::min(a.count, e0 + BLOCK);
    thread_local std::vector<uint8_t> ctxs;
    thread_local std::vector<uint16_t> levels;
    ctxs.resize(BLOCK), levels.resize(BLOCK + SLACK);
    try {
      auto run = [&](auto* dst) {
        place(j, it.first, e0, e1, ctxs.data(), dst, !a.walk);
        if (!a.walk) values(a, j.lo, j.span, dst, e0, e1 - e0);
      };
      uint8_t* lev = a.walk ? j.lev + e0 * j.width() : reinterpret_cast<uint8_t*>(levels.data());
      if (j.wide()) run(reinterpret_cast<uint16_t*>(lev));
      else run(lev);
    } catch (...) {
      failing_job(failed[it.job]);
    }
  }, helper);
  // trellis jobs: the walks
  items.clear();
  for (std::size_t t = 0; t < jobs.size(); ++t) {
    const Fused& a = jobs[t];
    if (a.status || failed[t] || !a.walk || !a.count || state[t].cabac) continue;  // (a cabac job walked its own)
    const uint64_t walks = a.walk == 1 ? a.count / a.cols : a.cols, length = a.walk == 1 ? a.cols : a.count / a.cols;
    const uint64_t per = std::clamp<uint64_t>(WALK_ELEMENTS / std::max<uint64_t>(length, 1), 8, 1024);
    for (uint64_t w = 0; w < walks; w += per) items.push_back({Item::WALK, t, w, std::min(per, walks - w)});
  }
  parallel_for(items.size(), own, [&](std::size_t k) {
    const Item it = items[k];
    const Fused& a = jobs[it.job];
    const Job& j = state[it.job];
    auto run = [&](auto* o) {
      using O = std::remove_pointer_t<decltype(o)>;
      auto levels = [&](const auto* lev) {
        if (a.walk == 1) walk_rows<O>(a, it.first, it.first + it.count, j.lo, lev);
        else walk_cols<O>(a, it.first, it.first + it.count, j.lo, lev);
      };
      if (j.wide()) levels(reinterpret_cast<const uint16_t*>(j.lev));
      else levels(j.lev);
    };
    if (a.kind == F32) run(static_cast<uint32_t*>(nullptr));
    else run(static_cast<uint16_t*>(nullptr));
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
  if (rows == 0 || cols == 0) return true;  // (no value; group_values divides by the columns)
  // A step or zero point that is not finite makes every value of its group so, which the rounding to
  // bfloat16 need not show (a NaN with high payload bits carries into +-0 there).
  const auto finite_all = [](const double* v, uint64_t n) {
    return std::all_of(v, v + n, [](double x) { return std::isfinite(x); });
  };
  const uint64_t groups = rows * ((cols + group - 1) / group);
  if (!finite_all(steps, per_group ? groups : 1) || (zeros && !finite_all(zeros, groups))) return false;
  Fused a;  // (the fused pass's group-wise values, on levels already decoded)
  a.count = rows * cols, a.values = steps, a.group = group, a.cols = cols, a.per_group = per_group, a.zeros = zeros;
  a.kind = kind;
  std::atomic<bool> finite{true};
  parallel_for(rows, threads, [&](std::size_t r) {
    try {
      if (kind == F32) group_values(a, 0, 0, symbols + r * cols, r * cols, cols, static_cast<uint32_t*>(out));
      else group_values(a, 0, 0, symbols + r * cols, r * cols, cols, static_cast<uint16_t*>(out));
    } catch (const Corrupt&) {
      finite = false;
    }
  });
  return finite;
}

}  // namespace zc::plan
