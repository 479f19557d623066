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
//   ctx         [kind (mod 3)][how (mod 4): 0 steps, 1 groups of 8, 2 walk rows, 3 walk columns]
//               [cols u16 LE (0 as 1)][count u16 LE][a ctx payload (codecs/context.py)]: plan.h's
//               batched decode of a ctx-coded job (step 0.5; groups: step 0.5 + g, zero 0.25 g),
//               then again joined as fused's
//   cabacjob    ctx's layout with a cabac stream (codecs/cabac.py) for the ctx payload: plan.h's
//               batched decode of a cabac-coded job (walks: a stream of the walk matrix, trellis 1)
//   planes      [width: 2 if even, else 4][count u16 LE][a float-plane frame (codecs/floatplanes.py)]:
//               plan.h's batched decode of a planes job, then again joined as fused's
//   huffman     a Huffman stream (huffman.h); the count is the one the stream declares (<= 2^22)
//   checked     [c: chunk 64 << (c % 8), bit 3 one chunk's checksum wrong, bit 4 checked before the job
//               (else first)][the fused layout]: the fused job with its payload's chunk checksums
//               (XXH3-64, container format 4) checked on the same pass, as plan_bind's Pass does;
//               a check that reports the wrong verdict is a bug (trap)
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "../zoocodec/codecs/native/bytes.h"
#include "../zoocodec/codecs/native/checksum.h"
#include "../zoocodec/codecs/native/floatplanes.h"
#include "../zoocodec/codecs/native/huffman.h"
#include "../zoocodec/codecs/native/plan.h"
#include "../zoocodec/codecs/native/rans.h"

extern "C" int zc_cabac_decode(const uint8_t* data, std::size_t size, int32_t* out, uint64_t count, int threads);

namespace {

uint32_t u16(const uint8_t* p) { return p[0] | p[1] << 8; }

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
  if (how && a.count % cols) return;  // (the bindings refuse a shape that does not fit)
  if (how == 1) {
    a.group = 8, a.cols = cols, a.per_group = true;
    const uint64_t groups = a.count / cols * ((cols + 7) / 8);
    values.resize(groups), zeros.resize(groups);
    for (uint64_t g = 0; g < groups; ++g) values[g] = 0.5 + double(g), zeros[g] = 0.25 * double(g);
    a.zeros = zeros.data();
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  try {
    ZC_TARGET(data, size);
  } catch (const zc::Corrupt&) {
  }
  return 0;
}
