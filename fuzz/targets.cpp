// libFuzzer targets for every native decoder of untrusted bytes (fuzz/run.sh builds one
// binary per target with -DZC_TARGET=<name>, under AddressSanitizer + UBSan). Each input
// layout is replayed the same way from Python by tests/codecs/native/test_fuzz_corpus.py.
//
//   rans        a full rANS stream; the count is the one the stream declares (<= 2^22)
//   rans_body   [k-2 (mod 62)][k frequency bytes][count u16 LE][body]
//   floatplanes [b0: bit0 width 4 (else 2), bits 1.. plane k rANS (else raw)][n u16 LE]
//               then per plane [size u16 LE][bytes]
//   cabac       [count u16 LE][stream]
//   fused       [kind (mod 3)][k (0: steps)][rows (0 as 1)][count u16 LE][an ans frame]: plan.h's
//               batched decode into float32/float16/bfloat16, steps 0.5 + row or codebook values;
//               then again on a thread of its own joined by this one (pool.h's Helper: the pass a
//               load starts while it builds the next jobs, plan_bind.cpp's Pass)
//   ctx         [kind (mod 3)][how (mod 4): 0 steps, 1 groups of 8, 2 walk rows, 3 walk columns; groups:
//               bit 2 their side values coded (uniform:side=5), bit 3 the first group's step code past
//               the largest exponent][cols u16 LE (0 as 1)][count u16 LE][a ctx payload (codecs/context.py)]:
//               plan.h's batched decode of a ctx-coded job (step 0.5; groups: step 0.5 + g, zero 0.25 g,
//               or codes of steps 2^(g mod 7 - 3) and centres g mod 16), then again joined as fused's
//   cabacjob    ctx's layout with a cabac stream (codecs/cabac.py) for the ctx payload: plan.h's
//               batched decode of a cabac-coded job (walks: a stream of the walk matrix, trellis 1)
//   planes      [width: 2 if even, else 4][count u16 LE][a float-plane frame (codecs/floatplanes.py)]:
//               plan.h's batched decode of a planes job, then again joined as fused's
//   huffman     a Huffman stream (huffman.h); the count is the one the stream declares (<= 2^22)
//   checked     [c: chunk 64 << (c % 8), bit 3 one chunk's checksum wrong, bit 4 checked before the job
//               (else first)][the fused layout]: the fused job with its payload's chunk checksums
//               (XXH3-64, container format 4) checked on the same pass, as plan_bind's Pass does;
//               a check that reports the wrong verdict is a bug (trap)
//   dqwalk      [how: bit 0 by columns][cols u16 LE][levels: svarints]: dq.h's walk (kernels/rdoq.py's
//               dq_walk) of a (levels / cols, cols) matrix (cols 0: (levels, 0)); each value checked
//               against a walk through rdoq.py's NEXT_STATE table, 2k wrapping as NumPy's int64 (trap)
//   groups      [kind (mod 3)][how: bit 0 one step (else one a group), bit 1 zero points][group u16 LE
//               (0 as 1)][cols u16 LE][rows u16 LE][the steps, then the zero points (rows x groups):
//               float64 LE][rows x cols symbols: svarints]: plan.h's dequantize_groups (methods/uniform.py's
//               group_dequantize); its verdict must be whether every float64 value is finite and stays so
//               in the kind, and what it writes that value rounded as methods/arrays.from_float64 (trap)
//   side        [mant (1 + b % 52)][bits (1 + b % 16)][how: bit 0 the first pair 2^16 times first (a second
//               task)][step codes and centres: svarints, alternately]: quantize.h's side_steps; at mant 3..32
//               side_zeros (frac mant - 2) and side_values (methods/uniform.py's MAX_EXPONENT) too, whose
//               values must be those two's and their formula's, and whose verdict must be the range; and
//               side_range (the GPU decoder's host check) on them as int64 and, where they fit, int16, whose
//               verdict must be the same and whose largest step and |zero| those of the values (trap)
// (svarints: wire.put_svarint's zigzag varints to the end, a cut-off last one dropped, bits past 64 ignored)
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "../zoocodec/codecs/native/bytes.h"
#include "../zoocodec/codecs/native/checksum.h"
#include "../zoocodec/codecs/native/dq.h"
#include "../zoocodec/codecs/native/floatplanes.h"
#include "../zoocodec/codecs/native/huffman.h"
#include "../zoocodec/codecs/native/plan.h"
#include "../zoocodec/codecs/native/quantize.h"
#include "../zoocodec/codecs/native/rans.h"

extern "C" int zc_cabac_decode(const uint8_t* data, std::size_t size, int32_t* out, uint64_t count, int threads);

namespace {

uint32_t u16(const uint8_t* p) { return p[0] | p[1] << 8; }

// Signed varints to the end of the bytes (the layouts' svarints): any bytes are some int64s, a small
// level one byte, INT64_MIN and INT64_MAX ten.
std::vector<int64_t> svarints(const uint8_t* p, std::size_t size) {
  std::vector<int64_t> out;
  uint64_t v = 0;
  int shift = 0;
  for (std::size_t i = 0; i < size; ++i) {
    if (shift < 64) v |= uint64_t(p[i] & 0x7F) << shift;
    shift = std::min(shift + 7, 64);
    if (p[i] & 0x80) continue;
    out.push_back(static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1));
    v = 0, shift = 0;
  }
  return out;
}

uint64_t bits_of(double v) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  return b;
}

// A whole stream that starts with its symbol count n: (n, what `parse` makes of it), no byte left over.
template <typename Parse>
auto whole_stream(const uint8_t* data, std::size_t size, Parse parse) {
  zc::Reader peek(data, size);
  const uint64_t n = peek.uvarint(uint64_t(1) << 22);
  zc::Reader r(data, size);
  auto p = parse(r, n);
  if (r.left()) throw zc::Corrupt("bytes left");
  return std::make_pair(n, std::move(p));
}

void rans(const uint8_t* data, std::size_t size) {
  auto [n, p] = whole_stream(data, size, zc::rans::parse);
  std::vector<uint16_t> out(n);
  if (p.nsym <= 256) {
    std::vector<uint8_t> out8(n);
    zc::rans::decode(p, out8.data(), 2);
  } else {
    zc::rans::decode(p, out.data(), 2);
  }
}

void rans_body(const uint8_t* data, std::size_t size) {
  if (size < 1) return;
  std::size_t k = 2 + data[0] % 62;
  if (size < 1 + k + 2) return;
  std::vector<uint64_t> f(data + 1, data + 1 + k);
  uint64_t n = u16(data + 1 + k);
  int L;
  std::vector<uint32_t> table = zc::rans::pow2_table(f, &L);
  zc::Reader r(data + 3 + k, size - 3 - k);
  zc::rans::Parsed p = zc::rans::parse_body(r, n, table, L);
  std::vector<uint8_t> out(n);
  zc::rans::decode(p, out.data(), 2);
}

void floatplanes(const uint8_t* data, std::size_t size) {
  if (size < 3) return;
  int width = data[0] & 1 ? 4 : 2;
  uint64_t n = u16(data + 1);
  std::size_t at = 3;
  int modes[4];
  const uint8_t* planes[4];
  std::size_t sizes[4];
  for (int k = 0; k < width; ++k) {
    if (size - at < 2) return;
    std::size_t len = u16(data + at);
    at += 2;
    if (size - at < len) return;
    modes[k] = data[0] >> (k + 1) & 1;
    planes[k] = data + at;
    sizes[k] = len;
    at += len;
  }
  std::vector<uint8_t> out(n * width);
  zc::planes::merge(n, width, modes, planes, sizes, out.data(), 2);
}

void cabac(const uint8_t* data, std::size_t size) {
  if (size < 2) return;
  uint64_t n = u16(data);
  std::vector<int32_t> out(n);
  if (zc_cabac_decode(data + 2, size - 2, out.data(), n, 2) == 2) __builtin_trap();  // not a Corrupt: a bug
}

// plan::decode of the jobs on a thread of its own with this thread joining it, as a load's
// decoding pass runs once its caller waits (the same results as the plain call).
void joined(std::vector<zc::plan::Fused> jobs, std::vector<zc::plan::Planes> planes) {
  zc::Helper helper;
  std::exception_ptr error;
  std::thread runner([&] {
    try {
      zc::plan::decode(jobs, planes, 2, {}, nullptr, &helper);
    } catch (...) {
      error = std::current_exception();
    }
    helper.close();
  });
  helper.help();
  runner.join();
  if (error) std::rethrow_exception(error);
}

// The fused layout's job (size >= 5), its steps or codebook in `values` and its output in `out`.
zc::plan::Fused fused_job(const uint8_t* data, std::size_t size, std::vector<double>& values,
                          std::vector<uint32_t>& out) {
  zc::plan::Fused a;
  a.kind = data[0] % 3;
  a.k = data[1];
  a.rows = data[2] ? data[2] : 1;
  a.count = u16(data + 3);
  a.row_len = (a.count + a.rows - 1) / a.rows;
  values.resize(a.k ? a.rows * a.k : a.rows);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = a.k ? 0.25 * i : 0.5 + i;
  out.resize(a.count);
  a.values = values.data();
  a.out = out.data();
  a.payload = data + 5;
  a.size = size - 5;
  return a;
}

void fused(const uint8_t* data, std::size_t size) {
  if (size < 5) return;
  std::vector<double> values;
  std::vector<uint32_t> out;
  const zc::plan::Fused a = fused_job(data, size, values, out);
  std::vector<zc::plan::Fused> jobs{a};
  std::vector<zc::plan::Planes> none;
  zc::plan::decode(jobs, none, 2);
  joined({a}, {});
}

void checked(const uint8_t* data, std::size_t size) {
  if (size < 6) return;
  const std::size_t chunk = std::size_t(64) << (data[0] % 8);
  const bool wrong = data[0] & 8;
  std::vector<double> values;
  std::vector<uint32_t> out;
  std::vector<zc::plan::Fused> jobs{fused_job(data + 1, size - 1, values, out)};
  std::vector<zc::plan::Check> checks;
  for (std::size_t at = 0; at < jobs[0].size; at += chunk) {
    const std::size_t n = std::min(chunk, jobs[0].size - at);
    const uint64_t sum = zc::checksum(jobs[0].payload + at, n) ^ (wrong && at == 0);
    checks.push_back({jobs[0].payload + at, n, sum, data[0] & 16 ? 0 : -1});
  }
  std::vector<zc::plan::Planes> none;
  zc::plan::decode(jobs, none, 2, {}, &checks);
  for (std::size_t c = 0; c < checks.size(); ++c)
    if (checks[c].bad != (wrong && c == 0)) __builtin_trap();  // a verdict that is not the checksum's: a bug
}

// ctx's and cabacjob's layout, the payload coded by `coder`.
void coded_job(const uint8_t* data, std::size_t size, int coder) {
  if (size < 6) return;
  zc::plan::Fused a;
  a.coder = coder;
  a.kind = data[0] % 3;
  const int how = data[1] % 4;
  const uint64_t cols = u16(data + 2) ? u16(data + 2) : 1;
  a.count = u16(data + 4);
  a.row_len = a.count;
  std::vector<double> values{0.5}, zeros;
  std::vector<int64_t> codes, centres;
  if (how && a.count % cols) return;  // (the bindings refuse a shape that does not fit)
  if (how == 1) {
    a.group = 8, a.cols = cols, a.per_group = true;
    const uint64_t groups = a.count / cols * ((cols + 7) / 8);
    values.resize(groups), zeros.resize(groups);
    for (uint64_t g = 0; g < groups; ++g) values[g] = 0.5 + double(g), zeros[g] = 0.25 * double(g);
    a.zeros = zeros.data();
    if (data[1] & 4) {
      codes.resize(groups), centres.resize(groups);
      for (uint64_t g = 0; g < groups; ++g) codes[g] = (int64_t(g % 7) + 2) << 5 | int64_t(g % 32), centres[g] = g % 16;
      if (groups && data[1] & 8) codes[0] = int64_t(1101) << 5;
      a.codes = codes.data(), a.centres = centres.data(), a.mant = 5, a.bits = 4, a.max_exponent = 1100;
      a.zeros = nullptr;
    }
  } else if (how > 1) {
    a.walk = how - 1, a.cols = cols;
  }
  std::vector<uint32_t> out(a.count);
  a.values = values.data();
  a.out = out.data();
  a.payload = data + 6;
  a.size = size - 6;
  std::vector<zc::plan::Fused> jobs{a};
  std::vector<zc::plan::Planes> none;
  zc::plan::decode(jobs, none, 2);
  if (!codes.empty() && data[1] & 8 && jobs[0].status == 0) __builtin_trap();  // a step code it should refuse
  joined({a}, {});
}

void ctx(const uint8_t* data, std::size_t size) { coded_job(data, size, zc::plan::CTX); }

void cabacjob(const uint8_t* data, std::size_t size) { coded_job(data, size, zc::plan::CABAC); }

void planes(const uint8_t* data, std::size_t size) {
  if (size < 3) return;
  zc::plan::Planes a;
  a.width = data[0] % 2 ? 4 : 2;
  a.count = u16(data + 1);
  std::vector<uint8_t> out(a.count * a.width);
  a.out = out.data();
  a.payload = data + 3;
  a.size = size - 3;
  std::vector<zc::plan::Fused> none;
  std::vector<zc::plan::Planes> jobs{a};
  zc::plan::decode(none, jobs, 2);
  joined({}, {a});
}

void huffman(const uint8_t* data, std::size_t size) {
  auto [n, p] = whole_stream(data, size, zc::huff::parse);
  std::vector<uint8_t> out(n);
  for (std::size_t first = 0; first < p.body.size(); first += zc::huff::DECODE_GROUP) {
    const std::size_t count = std::min(zc::huff::DECODE_GROUP, p.body.size() - first);
    zc::huff::decode_group(p, first, count, out.data() + first * p.chunk);
  }
}

void dqwalk(const uint8_t* data, std::size_t size) {
  if (size < 3) return;
  const bool by_column = data[0] & 1;
  const std::size_t cols = u16(data + 1);
  const std::vector<int64_t> k = svarints(data + 3, size - 3);
  const std::size_t rows = cols ? k.size() / cols : k.size();
  std::vector<double> out(rows * cols);
  zc::dq::walk(k.data(), rows, cols, by_column, out.data(), 2);
  constexpr uint8_t NEXT_STATE[4][2] = {{0, 2}, {2, 0}, {1, 3}, {3, 1}};
  for (std::size_t w = 0; w < (by_column ? cols : rows); ++w) {
    uint8_t state = 0;
    for (std::size_t j = 0; j < (by_column ? rows : cols); ++j) {
      const std::size_t at = by_column ? j * cols + w : w * cols + j;
      const uint64_t twice = uint64_t(k[at]) * 2, sign = k[at] > 0 ? 1 : k[at] < 0 ? UINT64_MAX : 0;
      if (out[at] != double(int64_t(state < 2 ? twice : twice - sign))) __builtin_trap();  // not the machine's value
      state = NEXT_STATE[state][k[at] & 1];
    }
  }
}

// v rounded into the kind as methods/arrays.from_float64 (bfloat16: float32, then nearest-even on the
// bits), or nothing where v or that is not finite.
bool rounded(double v, int kind, uint32_t* out) {
  if (!std::isfinite(v)) return false;
  if (kind == zc::plan::F16) {
    const _Float16 h = static_cast<_Float16>(v);
    uint16_t b;
    std::memcpy(&b, &h, 2);
    *out = b;
    return (b & 0x7C00u) != 0x7C00u;
  }
  const float f = static_cast<float>(v);
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if (kind == zc::plan::F32) return *out = b, std::isfinite(f);
  *out = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;  // (no wrap: f is finite)
  return (*out & 0x7F80u) != 0x7F80u;
}

void groups(const uint8_t* data, std::size_t size) {
  if (size < 8) return;
  const int kind = data[0] % 3;
  const bool one_step = data[1] & 1, with_zeros = data[1] & 2;
  const uint64_t group = u16(data + 2) ? u16(data + 2) : 1, cols = u16(data + 4), rows = u16(data + 6);
  const uint64_t per_row = (cols + group - 1) / group, nsteps = one_step ? 1 : rows * per_row;
  const uint64_t nzeros = with_zeros ? rows * per_row : 0;
  if ((size - 8) / 8 < nsteps + nzeros) return;
  std::vector<double> side(nsteps + nzeros);
  for (std::size_t i = 0; i < side.size(); ++i) std::memcpy(&side[i], data + 8 + 8 * i, 8);
  const std::size_t at = 8 + 8 * side.size();
  const std::vector<int64_t> sym = svarints(data + at, size - at);
  if (sym.size() < rows * cols) return;
  const double* steps = side.data();
  const double* zeros = with_zeros ? steps + nsteps : nullptr;
  std::vector<uint32_t> out32(kind == zc::plan::F32 ? rows * cols : 0);
  std::vector<uint16_t> out16(kind == zc::plan::F32 ? 0 : rows * cols);
  void* out = kind == zc::plan::F32 ? static_cast<void*>(out32.data()) : out16.data();
  const bool ok = zc::plan::dequantize_groups(sym.data(), rows, cols, steps, !one_step, zeros, group, kind, out, 2);
  bool finite = true;
  for (uint64_t i = 0; i < rows * cols; ++i) {
    const uint64_t g = i / cols * per_row + i % cols / group;
    const double v = double(sym[i]) * steps[one_step ? 0 : g];
    uint32_t b = 0;
    finite &= rounded(zeros ? v + zeros[g] : v, kind, &b);
    if (ok && b != (kind == zc::plan::F32 ? out32[i] : out16[i])) __builtin_trap();  // not that value rounded
  }
  if (ok != finite) __builtin_trap();  // a wrong verdict
}

void side(const uint8_t* data, std::size_t size) {
  if (size < 3) return;
  constexpr int64_t MAX_EXPONENT = 1100;
  constexpr std::size_t SIDE_PART = std::size_t(1) << 16;  // (quantize.cpp's groups a task)
  const int mant = 1 + data[0] % 52, bits = 1 + data[1] % 16;
  const std::vector<int64_t> v = svarints(data + 3, size - 3);
  std::vector<int64_t> codes, centres;
  if (data[2] & 1 && v.size() >= 2) codes.assign(SIDE_PART, v[0]), centres.assign(SIDE_PART, v[1]);
  for (std::size_t i = 0; i + 1 < v.size(); i += 2) codes.push_back(v[i]), centres.push_back(v[i + 1]);
  const std::size_t n = codes.size();
  std::vector<double> steps(n);
  zc::quant::side_steps(codes.data(), n, mant, steps.data(), 2);
  for (std::size_t i = 0; i < n; ++i) {  // (2^M + n mod 2^M) * 2^(n div 2^M - M), the exponent clamped to +-4096
    const int64_t exponent = std::clamp<int64_t>((codes[i] >> mant) - mant, -4096, 4096);
    const double m = double((int64_t(1) << mant) + (codes[i] & ((int64_t(1) << mant) - 1)));
    if (bits_of(steps[i]) != bits_of(std::ldexp(m, int(exponent)))) __builtin_trap();
  }
  if (mant < 3 || mant > 32) return;  // (side_values' binding refuses other widths)
  std::vector<double> zeros(n), decoded_steps(n), decoded_zeros(n);
  zc::quant::side_zeros(centres.data(), steps.data(), n, bits, mant - 2, zeros.data(), 2);
  const bool ok = zc::quant::side_values(codes.data(), centres.data(), n, mant, bits, MAX_EXPONENT,
                                         decoded_steps.data(), decoded_zeros.data(), 2);
  bool in_range = true;
  for (std::size_t i = 0; i < n; ++i) {
    if (bits_of(decoded_steps[i]) != bits_of(steps[i]) || bits_of(decoded_zeros[i]) != bits_of(zeros[i]))
      __builtin_trap();  // the decoder's side values are not the encoder's
    const int64_t e = codes[i] >> mant;
    in_range &= e >= -MAX_EXPONENT && e <= MAX_EXPONENT && steps[i] > 0 && std::isfinite(steps[i]) &&
                std::isfinite(zeros[i]);
  }
  if (ok != in_range) __builtin_trap();  // a wrong verdict
  double top_step = 0.0, top_zero = 0.0;
  for (std::size_t i = 0; i < n && ok; ++i) top_step = std::max(top_step, steps[i]), top_zero = std::max(top_zero,
                                                                                                     std::abs(zeros[i]));
  std::vector<int16_t> narrow_codes(codes.begin(), codes.end()), narrow_centres(centres.begin(), centres.end());
  const bool narrow = std::equal(codes.begin(), codes.end(), narrow_codes.begin()) &&
                      std::equal(centres.begin(), centres.end(), narrow_centres.begin());
  for (int width : {8, 2}) {
    if (width == 2 && !narrow) continue;
    double step, zero;
    const bool in = width == 8 ? zc::quant::side_range(codes.data(), 8, centres.data(), 8, n, mant, bits, MAX_EXPONENT,
                                                       &step, &zero, 2)
                               : zc::quant::side_range(narrow_codes.data(), 2, narrow_centres.data(), 2, n, mant, bits,
                                                       MAX_EXPONENT, &step, &zero, 2);
    if (in != ok || (ok && (bits_of(step) != bits_of(top_step) || bits_of(zero) != bits_of(top_zero))))
      __builtin_trap();  // side_range's verdict or bounds are not the values'
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  try {
    ZC_TARGET(data, size);
  } catch (const zc::Corrupt&) {
  }
  return 0;
}
