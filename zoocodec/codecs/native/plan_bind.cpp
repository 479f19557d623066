// Python bindings of the batched decoder (plan.h) and of the ans frame parser (ans_frame.h).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <unistd.h>

#include "buffer.h"
#include "checksum.h"
#include "ctx_frame.h"
#include "plan.h"
#include "pool.h"
#include "rans_bind.h"

namespace nb = nanobind;
using namespace zc;

namespace {

using Steps = nb::ndarray<const double, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Out = nb::ndarray<nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// jobs: (payload, count, values float64, row_len, k, kind 0 f32 | 1 f16 | 2 bf16, out: a writable
// contiguous array of count values of that width[, coder 0 ans | 1 ctx | 2 cabac, how]); values: one step per
// row (k 0) or k codebook values per row; how: None, ("group", group, cols, per_group, zeros float64
// or None), ("coded", group, cols, step codes, centres (signed ints), mant, bits, max_exponent: a step
// and a zero per group from their codes; values unused) or ("walk", cols, 1 rows | 2 columns), as
// plan.h's Fused. Or a float-plane job: (payload,
// count, width 2 | 4, out), the payload a float-plane frame (codecs/floatplanes.py). Returns (status,
// error) per job: 0 decoded, 1 not taken (frames the Python coders decode), 2 corrupt.
struct Batch {
  std::vector<std::unique_ptr<InBuffer>> held;
  std::vector<Steps> steps;
  std::vector<SignedInts> codes;
  std::vector<Out> outs;
  std::vector<plan::Fused> work;
  std::vector<plan::Planes> planes;
  std::vector<plan::Ref> order;  // each job: a planes job or a fused one, its index there

  std::vector<std::tuple<int, std::string>> results() const {
    std::vector<std::tuple<int, std::string>> out;
    for (const plan::Ref& r : order)
      out.emplace_back(r.planes ? planes[r.index].status : work[r.index].status,
                       r.planes ? planes[r.index].error : work[r.index].error);
    return out;
  }
};

Batch batch_of(const std::vector<nb::tuple>& jobs) {
  Batch b;
  auto& [held, steps, codes, outs, work, planes, order] = b;
  for (const nb::tuple& j : jobs) {
    if (j.size() != 7 && j.size() != 9 && j.size() != 4)
      throw std::invalid_argument("a job is (payload, count, values, row_len, k, kind, out[, coder, how]) or "
                                  "(payload, count, width, out)");
    outs.push_back(nb::cast<Out>(j[j.size() == 4 ? 3 : 6]));
    if (j.size() == 4) {
      plan::Planes& a = planes.emplace_back();
      a.width = nb::cast<int>(j[2]);
      if (a.width != 2 && a.width != 4) throw std::invalid_argument("width is 2 or 4");
      held.emplace_back(new InBuffer(j[0]));
      a.payload = held.back()->data();
      a.size = held.back()->size();
      a.count = nb::cast<uint64_t>(j[1]);
      if (outs.back().nbytes() != a.count * a.width) throw std::invalid_argument("output of the wrong size");
      a.out = outs.back().data();
      order.push_back({true, planes.size() - 1});
      continue;
    }
    held.emplace_back(new InBuffer(j[0]));
    steps.push_back(nb::cast<Steps>(j[2]));
    plan::Fused& a = work.emplace_back();
    a.payload = held.back()->data();
    a.size = held.back()->size();
    a.count = nb::cast<uint64_t>(j[1]);
    a.values = steps.back().data();
    a.row_len = nb::cast<uint64_t>(j[3]);
    a.k = nb::cast<uint64_t>(j[4]);
    a.kind = nb::cast<int>(j[5]);
    a.rows = a.k ? steps.back().shape(0) / a.k : steps.back().shape(0);
    const std::size_t width = a.kind == plan::F32 ? 4 : 2;
    if (a.kind < 0 || a.kind > 2) throw std::invalid_argument("kind is 0 (float32), 1 (float16) or 2 (bfloat16)");
    if (a.rows < 1 || (a.k && a.rows * a.k != steps.back().shape(0))) throw std::invalid_argument("bad values");
    if (outs.back().nbytes() != a.count * width) throw std::invalid_argument("output of the wrong size");
    a.out = outs.back().data();
    order.push_back({false, work.size() - 1});
    if (j.size() == 7) continue;
    a.coder = nb::cast<int>(j[7]);
    if (a.coder < plan::ANS || a.coder > plan::CABAC) throw std::invalid_argument("coder is 0 (ans), 1 (ctx) or 2 (cabac)");
    if (j[8].is_none()) continue;
    const auto how = nb::cast<nb::tuple>(j[8]);
    const auto name = nb::cast<std::string>(how[0]);
    const uint64_t values = steps.back().shape(0);
    if (name == "group" && how.size() == 5 && !a.k) {
      a.group = nb::cast<uint64_t>(how[1]), a.cols = nb::cast<uint64_t>(how[2]), a.per_group = nb::cast<bool>(how[3]);
      if (a.group < 1 || a.cols < 1 || a.count % a.cols) throw std::invalid_argument("group and columns must fit");
      const uint64_t groups = a.count / a.cols * ((a.cols + a.group - 1) / a.group);  // (cols >= 1 when count is 0)
      if (values != (a.per_group ? groups : 1)) throw std::invalid_argument("one step a group, or one");
      if (!how[4].is_none()) {
        steps.push_back(nb::cast<Steps>(how[4]));
        if (steps.back().shape(0) != groups) throw std::invalid_argument("one zero a group");
        a.zeros = steps.back().data();
      }
    } else if (name == "coded" && how.size() == 8 && !a.k) {
      a.group = nb::cast<uint64_t>(how[1]), a.cols = nb::cast<uint64_t>(how[2]), a.per_group = true;
      a.mant = nb::cast<int>(how[5]), a.bits = nb::cast<int>(how[6]), a.max_exponent = nb::cast<int64_t>(how[7]);
      if (a.group < 1 || a.cols < 1 || a.count % a.cols) throw std::invalid_argument("group and columns must fit");
      if (a.mant < 3 || a.mant > 32 || a.bits < 1 || a.bits > 16) throw std::invalid_argument("mant 3..32, bits 1..16");
      const uint64_t groups = a.count / a.cols * ((a.cols + a.group - 1) / a.group);
      for (int k : {3, 4}) {
        codes.push_back(nb::cast<SignedInts>(how[k]));
        const SignedInts& c = codes.back();
        const int bytes = signed_width(c, "step codes and centres are signed integers");
        if (c.shape(0) != groups) throw std::invalid_argument("one step code and one centre a group");
        (k == 3 ? a.codes : a.centres) = c.data();
        (k == 3 ? a.code_bytes : a.centre_bytes) = bytes;
      }
    } else if (name == "walk" && how.size() == 3 && !a.k) {
      a.cols = std::max<uint64_t>(nb::cast<uint64_t>(how[1]), a.count ? 0 : 1), a.walk = nb::cast<int>(how[2]);
      if (a.cols < 1 || a.count % a.cols || (a.walk != 1 && a.walk != 2) || (values != 1 && values != a.count / a.cols &&
                                                                              a.count))
        throw std::invalid_argument("a walk along rows (1) or columns (2) of a shape that fits, one step a row or one");
    } else {
      throw std::invalid_argument("how is None, (\"group\", group, cols, per_group, zeros), (\"coded\", group, cols, "
                                  "codes, centres, mant, bits, max_exponent) or (\"walk\", cols, 1 | 2)");
    }
  }
  return b;
}

std::vector<std::tuple<int, std::string>> decode_fused(const std::vector<nb::tuple>& jobs, int threads) {
  Batch b = batch_of(jobs);
  {
    nb::gil_scoped_release release;
    plan::decode(b.work, b.planes, threads, b.order);
  }
  return b.results();
}

// A batch and the checksummed chunks of its payloads (payloads: (bytes, chunk, [XXH3-64 of each
// `chunk` bytes], and with_job: the index of the job they precede or -1), as plan::decode checks them
// (the chunks of each payload just before its job's tasks, whose bytes it then reads from cache).
struct Part {
  Batch b;
  std::vector<plan::Check> checks;
  std::vector<std::size_t> owner;  // each check's payload
  std::size_t payloads = 0;
  std::vector<std::pair<const uint8_t*, std::size_t>> spans;  // each payload's bytes

  Part(const std::vector<nb::tuple>& jobs, const std::vector<nb::tuple>& given, bool with_job)
      : b(batch_of(jobs)), payloads(given.size()) {
    for (std::size_t i = 0; i < given.size(); ++i) {
      const nb::tuple& p = given[i];
      if (p.size() != (with_job ? 4u : 3u))
        throw std::invalid_argument(with_job ? "a payload is (bytes, chunk, sums, job)"
                                             : "a payload is (bytes, chunk, sums)");
      b.held.emplace_back(new InBuffer(p[0]));
      const auto chunk = nb::cast<uint64_t>(p[1]);
      const auto sums = nb::cast<std::vector<uint64_t>>(p[2]);
      const int64_t before = with_job ? nb::cast<int64_t>(p[3]) : -1;
      const std::size_t size = b.held.back()->size();
      if (chunk == 0 || sums.size() != (size + chunk - 1) / chunk)
        throw std::invalid_argument("one checksum a chunk of the payload");
      if (before < -1 || before >= static_cast<int64_t>(jobs.size())) throw std::invalid_argument("no such job");
      for (std::size_t k = 0; k < sums.size(); ++k) {
        checks.push_back({b.held.back()->data() + k * chunk, std::min<std::size_t>(chunk, size - k * chunk), sums[k],
                          before});
        owner.push_back(i);
      }
      spans.emplace_back(b.held.back()->data(), size);
    }
  }

  // The pass; `mapped`: then the payloads' pages are dropped from the resident set (they are
  // views of a read-only file mapping: container.py's _release, done here on the pass's thread).
  void run(int threads, Helper* helper = nullptr, bool mapped = false) {
    plan::decode(b.work, b.planes, threads, b.order, &checks, helper);
#ifdef __linux__
    if (!mapped) return;
    const uintptr_t page = 4096;
    for (const auto& [data, size] : spans) {
      if (!size) continue;
      const uintptr_t lo = reinterpret_cast<uintptr_t>(data) / page * page;
      const uintptr_t hi = (reinterpret_cast<uintptr_t>(data) + size + page - 1) / page * page;
      madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    }
#endif
  }

  int64_t first_bad() const {  // (chunks in payload order)
    for (std::size_t c = 0; c < checks.size(); ++c)
      if (checks[c].bad) return static_cast<int64_t>(owner[c]);
    return -1;
  }
};

// A decoding pass that starts while its caller is still building the jobs: each part given to
// `submit` (decode_fused's jobs, and payloads as Part's with the job they precede) is decoded, in order, on threads - 1 threads of
// its own while the caller goes on in Python; `wait` makes the caller the last thread, helping
// with whatever is left. So the Python around a load (its jobs, its tensors' views) runs beside
// the pass instead of before and after it, and never more than `threads` threads work at once.
// One thread: each part decodes in `submit`; no `overlap` (one part, say): in `wait`, on the pool.
class Pass {
 public:
  Pass(int threads, bool mapped, bool overlap)
      : threads_(threads > 0 ? threads : default_threads()), mapped_(mapped) {
    if (threads_ > 1 && overlap) runner_ = std::thread([this] { run(); });
  }
  Pass(const Pass&) = delete;
  Pass& operator=(const Pass&) = delete;
  ~Pass() { stop(); }  // (a pass its caller never waited for: it ends alone)

  void submit(const std::vector<nb::tuple>& jobs, const std::vector<nb::tuple>& payloads) {
    auto part = std::make_unique<Part>(jobs, payloads, true);
    Part* p = part.get();
    {
      std::lock_guard<std::mutex> lock(m_);
      if (closed_) throw std::invalid_argument("the pass is over");
      parts_.push_back(std::move(part));
      if (runner_.joinable()) queue_.push_back(p);
    }
    if (runner_.joinable()) {
      wake_.notify_one();
      return;
    }
    if (threads_ > 1) return;  // (no overlap: wait() decodes it)
    nb::gil_scoped_release release;
    p->run(1, nullptr, mapped_);
  }

  // (index, over all parts in order, of the first payload with a wrong chunk or -1, each job's
  // (status, error) in order).
  std::tuple<int64_t, std::vector<std::tuple<int, std::string>>> wait() {
    {
      nb::gil_scoped_release release;
      stop(true);
    }
    if (error_) {
      parts_.clear();
      std::rethrow_exception(std::exchange(error_, nullptr));
    }
    int64_t bad = -1, before = 0;
    std::vector<std::tuple<int, std::string>> results;
    for (const auto& part : parts_) {
      const int64_t at = part->first_bad();
      if (bad < 0 && at >= 0) bad = before + at;
      before += static_cast<int64_t>(part->payloads);
      for (auto& r : part->b.results()) results.push_back(std::move(r));
    }
    parts_.clear();  // (their views of the payloads end here: a mapped file can close)
    return {bad, std::move(results)};
  }

 private:
  void run() {
    for (;;) {
      Part* p;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return closed_ || !queue_.empty(); });
        if (queue_.empty()) break;
        p = queue_.front();
        queue_.pop_front();
      }
      try {
        if (!error_) p->run(threads_, &helper_, mapped_);
      } catch (...) {
        error_ = std::current_exception();
      }
    }
    helper_.close();
  }

  // No more parts; `help`: this thread takes items until the last part is done.
  void stop(bool help = false) {
    {
      std::lock_guard<std::mutex> lock(m_);
      closed_ = true;
    }
    wake_.notify_one();
    if (!runner_.joinable()) {
      if (help && threads_ > 1)  // (no overlap: the parts on the pool now, in order)
        for (; done_ < parts_.size(); ++done_) parts_[done_]->run(threads_, nullptr, mapped_);
      return;
    }
    if (help) helper_.help();
    runner_.join();
  }

  const int threads_;
  const bool mapped_;  // the payloads are views of a read-only file mapping: their pages dropped once decoded
  std::vector<std::unique_ptr<Part>> parts_;
  std::size_t done_ = 0;  // parts decoded by wait() (no overlap)
  std::deque<Part*> queue_;
  std::mutex m_;
  std::condition_variable wake_;
  bool closed_ = false;
  std::exception_ptr error_;  // (written by the runner only, read after it joined)
  Helper helper_;
  std::thread runner_;
};

// The int64 symbols of a ctx payload of `count` (codecs/context.py's decode) by the batched decoder's
// parser and pass, or None for order-0 symbols in a frame only ans.py reads (packed, raw low bits).
nb::object ctx_decode(nb::handle data, uint64_t count, int threads) {
  InBuffer in(data);
  int64_t* o;
  auto out = new_array<int64_t>(count, &o);
  const double one = 1;
  std::vector<plan::Fused> jobs(1);
  plan::Fused& a = jobs[0];
  a.payload = in.data(), a.size = in.size(), a.count = count, a.coder = plan::CTX, a.kind = plan::I64;
  a.values = &one, a.row_len = count, a.out = o;
  std::vector<plan::Planes> none;
  {
    nb::gil_scoped_release release;
    plan::decode(jobs, none, threads);
  }
  if (a.status == 2) throw Corrupt(a.error);
  return a.status ? nb::none() : nb::cast(std::move(out));
}

// A parsed rANS stream for a GPU decoder's host side: (lo, L, constant, freq uint32[nsym],
// chunk, offsets uint64[substreams] into the payload at `base`, lengths uint32[substreams]).
nb::object frame_tuple(int64_t lo, const rans::Parsed& p, const uint8_t* base) {
  uint32_t* freq;
  auto freqs = new_array<uint32_t>(p.L ? p.nsym : 0, &freq);
  std::fill(freq, freq + (p.L ? p.nsym : 0), 0u);
  for (const rans::Entry& e : p.table)  // each symbol's first slot (bias 0) holds its frequency
    if (e.bias == 0) freq[e.sym] = e.freq;
  uint64_t* off;
  uint32_t* len;
  auto offsets = new_array<uint64_t>(p.body.size(), &off);
  auto lengths = new_array<uint32_t>(p.body.size(), &len);
  for (std::size_t i = 0; i < p.body.size(); ++i) {
    off[i] = static_cast<uint64_t>(p.body[i] - base);
    len[i] = p.length[i];
  }
  return nb::make_tuple(lo, p.L, p.constant, freqs, p.chunk, offsets, lengths);
}

// The frame of an ans payload of `count` symbols (frame_tuple), or None when it is not a rANS
// frame of at most 2^16 symbols.
nb::object ans_frame(nb::handle data, uint64_t count) {
  InBuffer in(data);
  Reader r(in.data(), in.size());
  ans::Frame f;
  {
    nb::gil_scoped_release release;
    if (!ans::parse_frame(r, count, &f)) return nb::none();
  }
  return frame_tuple(f.lo, f.stream, in.data());
}

// A bare rANS stream of `count` symbols (rans.h; a float plane), as frame_tuple with lo 0.
nb::object rans_frame(nb::handle data, uint64_t count) {
  InBuffer in(data);
  return frame_tuple(0, parse_released(in, count), in.data());
}

// A ctx payload of `count` symbols parsed for a GPU decoder's host side (kernels/decode.py's
// Contexts), or None for order-0 symbols (an ans payload after the mode byte): (mode, rows, cols,
// layout, row_base int32[rows], col_class int16[cols or 0], lut uint8, group, lo, hi, first_lo and
// first_hi uint16[rows * groups], counts uint64[bins + 2] (each context's positions, then group ends'
// known lowest and highest), (lowest, highest level), streams: per context None (no position) or
// frame_tuple with its origin as lo, offsets into the payload). The same parser, counts and span check
// as the CPU's pass (plan.cpp).
nb::object ctx_frame(nb::handle data, uint64_t count) {
  InBuffer in(data);
  Reader r(in.data(), in.size());
  ctx::Frame f;
  std::vector<uint64_t> counts;
  std::pair<int64_t, int64_t> span;
  if (in.size() && in.data()[0] == ctx::ORDER0) return nb::none();
  {
    nb::gil_scoped_release release;
    const uint8_t mode = r.byte();
    if (mode != ctx::CTX && mode != ctx::ENDS) throw Corrupt("unknown mode " + std::to_string(mode));
    ctx::parse_head(r, mode, count, &f);
    counts.assign(f.bins + 2, 0);
    ctx::count(f, 0, count, counts.data());
    ctx::parse_streams(&f, counts.data());
    span = ctx::levels(f, counts.data());
  }
  nb::list streams;
  for (const ctx::Stream& s : f.streams)
    streams.append(s.count ? frame_tuple(s.origin, s.body, in.data()) : nb::none());
  auto copy = [](const auto& v) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    T* p;
    auto a = new_array<T>(v.size(), &p);
    std::copy(v.begin(), v.end(), p);
    return a;
  };
  return nb::make_tuple(f.mode, f.rows, f.cols, f.layout, copy(f.row_base), copy(f.col_class), copy(f.lut),
                        f.group, f.lo, f.hi, copy(f.first_lo), copy(f.first_hi), copy(counts), span, streams);
}

// (lo, indices uint8/uint16) of an ans payload's rANS frame of `count` symbols (symbol = lo +
// index), or None for the frames ans.py reads itself (packed, raw low bits).
nb::object ans_decode(nb::handle data, uint64_t count, int threads) {
  InBuffer in(data);
  Reader r(in.data(), in.size());
  ans::Frame f;
  {
    nb::gil_scoped_release release;
    if (!ans::parse_frame(r, count, &f)) return nb::none();
  }
  return nb::make_tuple(f.lo, decoded(f.stream, threads));
}

// n bytes for the outputs of a batch (plan.py cuts them into its tensors), on huge pages.
// The last freed output block is kept for the next batch: a fresh block's pages are zeroed by
// the kernel as they are first touched (smollm2-135m's fp32 outputs, 538 MB: 27% of a load's CPU
// time), so loading models one after another (a sweep, an evaluation, a benchmark) reuses them,
// as malloc's heap does for smaller arrays (zipnn's outputs among them). One over KEEP bytes is
// kept lazily freed (MADV_FREE, as jemalloc decays its dirty pages): the kernel takes its pages
// back when memory runs short, and those it has not taken need no zeroing when reused. None over
// an eighth of the machine's memory is kept (a process's resident set counts the pages). A fresh
// block's pages are faulted in by the decoders as they write: a thread faulting them in ahead
// (MADV_POPULATE_WRITE, until 2026-12-06) made a fresh process's first load 1.3-8x slower at 2
// threads on a VM whose host backs memory on first touch (docs/cpu-speed.md).
constexpr std::size_t HUGE_PAGE = std::size_t(1) << 21, KEEP = std::size_t(64) << 20;  // (malloc keeps up to 64 MiB too)
struct Kept {
  std::mutex lock;
  void* block = nullptr;
  std::size_t size = 0;
};
Kept& kept() {
  static Kept* k = new Kept();  // never destroyed: capsules may be freed at interpreter teardown
  return *k;
}

// A block handed out: its memory and size.
struct Block {
  void* p;
  std::size_t size;
};

std::size_t keep_at_most() {
  static const std::size_t most = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? std::max(KEEP, std::size_t(pages) * std::size_t(page) / 8) : KEEP;
  }();
  return most;
}

void release_block(void* p) noexcept {
  auto* b = static_cast<Block*>(p);
  if (b->size <= keep_at_most()) {  // the last freed one is kept (the one kept before is freed instead)
#ifdef __linux__
    if (b->size > KEEP) madvise(b->p, b->size, MADV_FREE);  // (its pages the kernel's to take)
#endif
    Kept& k = kept();
    std::lock_guard<std::mutex> guard(k.lock);
    std::swap(k.block, b->p);
    std::swap(k.size, b->size);
  }
  std::free(b->p);
  delete b;
}

Array1<uint8_t> output_block(std::size_t n) {
  if (n < 2 * HUGE_PAGE) {
    uint8_t* p;
    return big_array<uint8_t>(n, &p);
  }
  const std::size_t size = (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
  void *p = nullptr, *unfit = nullptr;
  std::size_t have = size;
  Kept& k = kept();
  {
    std::lock_guard<std::mutex> guard(k.lock);
    if (k.block && k.size >= size && k.size <= 2 * size) {  // (not a large block for a small batch)
      p = k.block, have = k.size, k.block = nullptr, k.size = 0;
    } else if (k.size > KEEP) {  // (a large one that does not fit is not held beside a new one)
      unfit = k.block, k.block = nullptr, k.size = 0;
    }
  }
  std::free(unfit);
  if (!p) {
    p = std::aligned_alloc(HUGE_PAGE, size);
    if (!p) throw std::bad_alloc();
#ifdef __linux__
    madvise(p, size, MADV_HUGEPAGE);  // advice only: a refusal leaves ordinary pages
#endif
  }
  nb::capsule owner(new Block{p, have}, release_block);
  return Array1<uint8_t>(static_cast<uint8_t*>(p), {n}, owner);
}

// The whole pages inside `a` given back to the system (their contents become zeros): the slot
// of an output block that a decoder declined (a kept block's pages are resident).
void discard(Out a) {
#ifdef __linux__
  const std::size_t page = 4096;
  const auto lo = (reinterpret_cast<uintptr_t>(a.data()) + page - 1) / page * page;
  const auto hi = (reinterpret_cast<uintptr_t>(a.data()) + a.nbytes()) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
#endif
}

// Index of the first of `payloads` whose bytes do not match their checksums, or -1. A payload is
// (bytes-like, chunk, [XXH3-64 of each `chunk` bytes]); every chunk is checked on one pass of the
// pool (container.py's format 4): a Part with no job.
int64_t first_bad(const std::vector<nb::tuple>& payloads, int threads) {
  Part part({}, payloads, false);
  {
    nb::gil_scoped_release release;
    part.run(threads);
  }
  return part.first_bad();
}

// Payloads copied into `out` (each at its offset) and checked on the copy, every chunk on the pool:
// the copy of a chunk is still in cache when its XXH3-64 reads it, so staging the compressed bytes
// for a device upload reads the file's pages once. A payload is (bytes-like, chunk, [XXH3-64 of each
// `chunk` bytes], offset in out). Returns the index of the first payload with a wrong chunk, or -1.
int64_t stage(const std::vector<nb::tuple>& payloads, Out out, int threads) {
  struct Task {
    const uint8_t* src;
    uint8_t* dst;
    std::size_t size;
    uint64_t sum;
    std::size_t owner;
  };
  std::vector<std::unique_ptr<InBuffer>> held;
  std::vector<Task> tasks;
  auto* base = static_cast<uint8_t*>(out.data());
  const std::size_t room = out.nbytes();
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    const nb::tuple& p = payloads[i];
    if (p.size() != 4) throw std::invalid_argument("a payload is (bytes, chunk, sums, offset)");
    held.emplace_back(new InBuffer(p[0]));
    const auto chunk = nb::cast<uint64_t>(p[1]);
    const auto sums = nb::cast<std::vector<uint64_t>>(p[2]);
    const auto at = nb::cast<uint64_t>(p[3]);
    const std::size_t size = held.back()->size();
    if (chunk == 0 || sums.size() != (size + chunk - 1) / chunk)
      throw std::invalid_argument("one checksum a chunk of the payload");
    if (at > room || size > room - at) throw std::invalid_argument("a payload past the end of out");
    for (std::size_t k = 0; k < sums.size(); ++k)
      tasks.push_back({held.back()->data() + k * chunk, base + at + k * chunk,
                       std::min<std::size_t>(chunk, size - k * chunk), sums[k], i});
  }
  std::vector<uint8_t> bad(tasks.size(), 0);
  {
    nb::gil_scoped_release release;
    parallel_for(tasks.size(), threads > 0 ? threads : default_threads(), [&](std::size_t t) {
      const Task& task = tasks[t];
      std::memcpy(task.dst, task.src, task.size);
      bad[t] = checksum(task.dst, task.size) != task.sum;
    });
  }
  for (std::size_t t = 0; t < tasks.size(); ++t)
    if (bad[t]) return static_cast<int64_t>(tasks[t].owner);
  return -1;
}

using Freqs = nb::ndarray<const uint32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// The CUDA decoder's table of an ans frame's frequencies (kernels/decode.py's slot_table): per slot,
// freq | bias << 16 (bias: the slot's place among its symbol's slots) and the symbol, in slot order.
nb::tuple slot_table(Freqs freq) {
  uint64_t total = 0;
  for (std::size_t s = 0; s < freq.shape(0); ++s) total += freq(s);
  if (total > (uint64_t(1) << 16) || freq.shape(0) > (std::size_t(1) << 16))
    throw std::invalid_argument("a table of at most 2^16 slots and symbols");
  uint32_t* fb;
  uint16_t* sym;
  auto slots = new_array<uint32_t>(total, &fb);
  auto syms = new_array<uint16_t>(total, &sym);
  for (std::size_t s = 0, at = 0; s < freq.shape(0); ++s)
    for (uint32_t k = 0, f = freq(s); k < f; ++k, ++at) {
      fb[at] = f | k << 16;
      sym[at] = static_cast<uint16_t>(s);
    }
  return nb::make_tuple(slots, syms);
}

using Symbols2 = nb::ndarray<const int64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Values2 = nb::ndarray<const double, nb::c_contig, nb::device::cpu>;

// plan::dequantize_groups on (rows, cols) symbols into `out` (rows * cols values of the kind); steps
// (rows, groups) or one, zeros (rows, groups) or None. False where a value is not finite in the kind.
bool group_dequantize(Symbols2 symbols, Values2 steps, std::optional<Values2> zeros, uint64_t group, int kind,
                      Out out, int threads) {
  const uint64_t rows = symbols.shape(0), cols = symbols.shape(1), groups = group ? (cols + group - 1) / group : 0;
  const bool per_group = steps.ndim() == 2;
  if (group < 1 || kind < 0 || kind > 2) throw std::invalid_argument("group at least 1, kind 0..2");
  if (per_group ? steps.shape(0) != rows || steps.shape(1) != groups : steps.size() != 1)
    throw std::invalid_argument("steps are (rows, groups) or one");
  if (zeros && (zeros->ndim() != 2 || zeros->shape(0) != rows || zeros->shape(1) != groups))
    throw std::invalid_argument("zeros are (rows, groups)");
  if (out.nbytes() != rows * cols * (kind == plan::F32 ? 4 : 2)) throw std::invalid_argument("output of the wrong size");
  nb::gil_scoped_release release;
  return plan::dequantize_groups(symbols.data(), rows, cols, steps.data(), per_group, zeros ? zeros->data() : nullptr,
                                 group, kind, out.data(), threads);
}

}  // namespace

void bind_plan(nb::module_& m) {
  m.def("group_dequantize", &group_dequantize, nb::arg("symbols"), nb::arg("steps"), nb::arg("zeros").none(),
        nb::arg("group"), nb::arg("kind"), nb::arg("out"), nb::arg("threads") = 0,
        "symbol * step (+ zero) of each group of `group` along the rows, in float64, rounded into out (kind 0 "
        "float32, 1 float16, 2 bfloat16) as the fused decoder rounds; False where a value is not finite there.");
  m.def("output_block", &output_block, nb::arg("n"),
        "A uint8 array of n bytes, on transparent huge pages from 4 MB on (the outputs of a decode batch); "
        "the last freed one is kept for the next call (lazily freed over 64 MiB; none over an eighth of "
        "the machine's memory).");
  m.def("discard", &discard, nb::arg("array"),
        "The whole pages inside a contiguous array given back to the system (they read as zeros after).");
  m.def("xxh3", [](nb::handle data) {
    InBuffer in(data);
    nb::gil_scoped_release release;
    return zc::checksum(in.data(), in.size());
  }, nb::arg("data"), "XXH3-64 (seed 0) of a bytes-like object: the chunk checksum of format 4, GIL released.");
  m.def("first_bad", &first_bad, nb::arg("payloads"), nb::arg("threads") = 0,
        "Index of the first (bytes, chunk, sums) whose chunks do not match their XXH3-64s, or -1; every chunk "
        "on one pass of the pool.");
  m.def("slot_table", &slot_table, nb::arg("freq"),
        "(freq | bias << 16, symbol) per slot of a uint32 frequency table (at most 2^16 slots): the CUDA "
        "decoder's table.");
  m.def("stage", &stage, nb::arg("payloads"), nb::arg("out"), nb::arg("threads") = 0,
        "Each (bytes, chunk, sums, offset) copied into out at its offset and its chunks' XXH3-64s checked on "
        "the copy, on the pool; the index of the first payload with a wrong chunk, or -1.");
  m.def("decode_fused", &decode_fused, nb::arg("jobs"), nb::arg("threads") = 0,
        "Many tensors' ans payloads -> symbol * step or codebook[symbol] in their dtype, and float-plane "
        "payloads -> their values, written into the given arrays, every substream on one pass of the pool; "
        "(status, error) per job.");
  nb::class_<Pass>(m, "Pass",
                   "A decoding pass that runs while its caller builds the next jobs: submit(jobs, payloads), jobs "
                   "as decode_fused's, payloads (bytes, chunk, [XXH3-64 of each chunk], index in this part of the "
                   "job whose tasks they precede or -1), their chunks checked on the pass; then wait() -> (index "
                   "of the first payload over all parts with a wrong chunk or -1, every job's (status, error)). "
                   "With threads "
                   "> 1 it decodes on threads - 1 threads of its own, and wait() joins it; with one, submit decodes. "
                   "`mapped`: the payloads are views of a read-only file mapping, whose pages it drops from the "
                   "resident set once decoded (MADV_DONTNEED). `overlap` False: no thread of its own; wait() "
                   "decodes the parts on the pool.")
      .def(nb::init<int, bool, bool>(), nb::arg("threads") = 0, nb::arg("mapped") = false, nb::arg("overlap") = true)
      .def("submit", &Pass::submit, nb::arg("jobs"), nb::arg("payloads"))
      .def("wait", &Pass::wait);
  m.def("ctx_decode", &ctx_decode, nb::arg("data"), nb::arg("count"), nb::arg("threads") = 0,
        "int64 symbols of a ctx payload, or None for order-0 symbols in a frame ans.py reads; CorruptStream if "
        "damaged.");
  m.def("ans_decode", &ans_decode, nb::arg("data"), nb::arg("count"), nb::arg("threads") = 0,
        "(lo, indices) of an ans payload's rANS frame, or None for packed and wide-alphabet frames.");
  m.def("rans_frame", &rans_frame, nb::arg("data"), nb::arg("count"),
        "The parsed frame of a bare rANS stream (lo 0, L, constant, freq, chunk, offsets, lengths).");
  m.def("ctx_frame", &ctx_frame, nb::arg("data"), nb::arg("count"),
        "A ctx payload parsed for the GPU decoder (mode, rows, cols, layout, row_base, col_class, lut, group, "
        "lo, hi, first_lo, first_hi, counts, (lowest, highest level), streams), or None for an order-0 one; "
        "CorruptStream if damaged.");
  m.def("ans_frame", &ans_frame, nb::arg("data"), nb::arg("count"),
        "The parsed frame of an ans payload (lo, L, constant, freq, chunk, offsets, lengths), or None.");
}
