// The CUDA a kernel source of zoocodec/kernels uses, for g++ on x86-64: each thread of a block
// is a fiber, blocks run one after another. __syncthreads() and the warp intrinsics switch to
// the block's scheduler, which releases a barrier once every live thread (every lane of the
// mask) waits at one; a warp operation whose mask names a lane that exited or does not exist,
// a shuffle from such a lane, and a barrier nobody can leave (a deadlock) end the launch with
// an error. Arithmetic is the host's IEEE double and float (no FMA: -ffp-contract=off), which
// is what the kernels' __dmul_rn / __dadd_rn ask of the GPU. Force-included before the source
// (tests/cuda_emu/__init__.py compiles it); not a model of timing, memory order or caches.
#pragma once
#include <math.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <mutex>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <csetjmp>
#include <csignal>
#include <sys/mman.h>

#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static  // one block at a time (launches take a lock)
#ifndef EMU_SCAN
#define EMU_KERNEL
#endif
#define __global__ EMU_KERNEL  // (a marker the scan for kernel names finds after preprocessing)

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct uchar4 {
  unsigned char x, y, z, w;
};
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) { return {x, y, z, w}; }
constexpr int warpSize = 32;

namespace emu {

enum State { RUN, AT_BLOCK, AT_WARP, DONE };

struct Fiber {
  void* sp;  // its stack pointer while switched out
  uint3 idx;
  unsigned linear;
  State state;
  unsigned mask;  // lanes it waits for at a warp operation
};

struct Launch {
  dim3 grid, block;
  uint3 block_idx;
  std::vector<Fiber> fibers;
  // Each thread's value in its warp operation (posted before its barrier), and the warp's values as they
  // were when the scheduler released the barrier: the released lanes read those, so a lane that runs on
  // to its next operation first cannot overwrite what a slower one has yet to read.
  std::vector<uint64_t> slots, released;
  std::vector<unsigned char> dynamic_shared;
  Fiber* cur = nullptr;
  void* sched_sp = nullptr;
  void (*body)(const void*) = nullptr;
  const void* args = nullptr;
  std::string error;
};

inline Launch* L = nullptr;  // the launch running (one at a time)
inline std::mutex launching;

}  // namespace emu

#define threadIdx (::emu::L->cur->idx)
#define blockIdx (::emu::L->block_idx)
#define blockDim (::emu::L->block)
#define gridDim (::emu::L->grid)

// emu_switch(&from_sp, to_sp): saves the callee-saved registers on this stack, stores its pointer in
// *from_sp, and resumes the stack at to_sp (System V x86-64; nothing changes MXCSR or the x87 control
// word between switches, so they are not saved).
extern "C" void emu_switch(void** from_sp, void* to_sp);
asm(R"(
.text
.p2align 4
.hidden emu_switch
.type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_switch, .-emu_switch
)");

namespace emu {

constexpr std::size_t STACK = std::size_t(1) << 17;  // bytes a thread: the kernels' frames and locals, and room

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error(what); }

// A fiber's first frame: the kernel, then back to the scheduler for good.
inline void entry() {
  Launch* l = L;
  try {
    l->body(l->args);
  } catch (const std::exception& e) {
    if (l->error.empty()) l->error = e.what();
  }
  Fiber* f = l->cur;
  f->state = DONE;
  void* gone;
  emu_switch(&gone, l->sched_sp);
  __builtin_unreachable();
}

// Fiber i's stack: its top staggered by i cache lines within a page, or the tops (STACK apart) would
// all fall in the same cache sets and evict one another at every switch.
inline void* fresh_stack(char* stacks, unsigned i) {
  uint64_t* top = reinterpret_cast<uint64_t*>(stacks + (std::size_t(i) + 1) * STACK - 64 * (i % 64));
  top[-1] = 0;                                    // entry's return address slot
  top[-2] = reinterpret_cast<uint64_t>(&entry);  // emu_switch's ret
  for (int r = 3; r <= 8; ++r) top[-r] = 0;      // rbp rbx r12 r13 r14 r15
  return &top[-8];
}

inline void wait(State s, unsigned mask) {
  Fiber* f = L->cur;
  f->state = s;
  f->mask = mask;
  emu_switch(&f->sp, L->sched_sp);
}

inline std::string where(const Fiber& f) {
  return "thread " + std::to_string(f.linear) + " of block " + std::to_string(L->block_idx.x) + "," +
         std::to_string(L->block_idx.y);
}

// The fibers of a warp operation that may go on: those whose mask's lanes all wait at one with that
// mask (lanes of a half warp one operation ahead wait for each other, not for the other half).
inline bool release_warps(Launch& l) {
  bool released = false;
  const std::size_t n = l.fibers.size();
  for (std::size_t base = 0; base < n; base += 32) {
    const unsigned lanes = unsigned(std::min<std::size_t>(32, n - base));
    const unsigned present = lanes == 32 ? ~0u : (1u << lanes) - 1;
    unsigned waiting = 0, done = 0;
    for (unsigned lane = 0; lane < lanes; ++lane) {
      const State s = l.fibers[base + lane].state;
      waiting |= unsigned(s == AT_WARP) << lane;
      done |= unsigned(s == DONE) << lane;
    }
    unsigned go = 0, common = waiting ? l.fibers[base + unsigned(__builtin_ctz(waiting))].mask : 0;
    for (unsigned w = waiting; w; w &= w - 1)
      if (l.fibers[base + unsigned(__builtin_ctz(w))].mask != common) common = 0;
    if (common && common == (common & waiting)) {  // (the usual case: one operation, every lane of it waiting)
      go = common;
      waiting = 0;
    }
    for (unsigned w = waiting; w; w &= w - 1) {
      const unsigned lane = unsigned(__builtin_ctz(w));
      const Fiber& f = l.fibers[base + lane];
      if (const unsigned absent = f.mask & ~present)
        fail(where(f) + ": its warp mask names lane " + std::to_string(__builtin_ctz(absent)) + ", which the block lacks");
      if (const unsigned gone = f.mask & done)
        fail(where(f) + ": its warp mask names lane " + std::to_string(__builtin_ctz(gone)) + ", which has exited");
      bool ready = !(f.mask & ~waiting);  // every lane of its mask at a warp operation of the same mask
      for (unsigned m = f.mask; ready && m; m &= m - 1) ready = l.fibers[base + unsigned(__builtin_ctz(m))].mask == f.mask;
      if (ready) go |= 1u << lane;
    }
    for (unsigned g = go; g; g &= g - 1) l.fibers[base + unsigned(__builtin_ctz(g))].state = RUN;
    if (go) std::copy_n(l.slots.begin() + base, lanes, l.released.begin() + base);
    released |= go != 0;
  }
  return released;
}

inline void run_block(Launch& l, char* stacks) {
  const unsigned n = l.block.x * l.block.y * l.block.z;
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = l.fibers[i];
    f = Fiber{fresh_stack(stacks, i), {i % l.block.x, i / l.block.x % l.block.y, i / (l.block.x * l.block.y)}, i, RUN, 0};
  }
  for (;;) {
    bool ran = false;
    for (Fiber& f : l.fibers) {
      if (f.state != RUN) continue;
      l.cur = &f;
      emu_switch(&l.sched_sp, f.sp);
      ran = true;
      if (!l.error.empty()) fail(where(f) + ": " + l.error);
    }
    std::size_t alive = 0, at_block = 0;
    for (const Fiber& f : l.fibers) alive += f.state != DONE, at_block += f.state == AT_BLOCK;
    if (!alive) return;
    bool released = false;
    if (at_block == alive) {
      for (Fiber& f : l.fibers)
        if (f.state == AT_BLOCK) f.state = RUN;
      released = true;
    } else {
      released = release_warps(l);
    }
    if (!ran && !released)
      fail("deadlock in block " + std::to_string(l.block_idx.x) + "," + std::to_string(l.block_idx.y) + ": " +
           std::to_string(at_block) + " of " + std::to_string(alive) + " live threads at __syncthreads, the others at a warp operation");
  }
}

// A fault while a launch runs: a thread read or wrote where nothing is mapped (the stand-in for CuPy
// puts a page nobody may touch right after each array), or an emulator bug. The handler leaves the
// fiber for the launch's frame; the launch then fails naming the thread.
inline sigjmp_buf escape;
inline void* fault_at = nullptr;
inline void on_fault(int, siginfo_t* info, void*) {
  fault_at = info->si_addr;
  siglongjmp(escape, 1);
}
struct FaultsCaught {
  std::vector<char> stack = std::vector<char>(1 << 16);
  stack_t old_stack;
  struct sigaction old_segv, old_bus;
  FaultsCaught() {
    const stack_t ss{stack.data(), 0, stack.size()};
    sigaltstack(&ss, &old_stack);
    struct sigaction sa = {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
  }
  ~FaultsCaught() {
    sigaction(SIGSEGV, &old_segv, nullptr);
    sigaction(SIGBUS, &old_bus, nullptr);
    sigaltstack(&old_stack, nullptr);
  }
};

template <class T>
T arg(void* const* args, const long long* sizes, int i) {
  constexpr long long want = std::is_pointer_v<T> ? -1 : (long long)sizeof(T);
  if (want == -1 && sizes[i] != -1 && sizes[i] != (long long)sizeof(T))  // (0 as an int64: CuPy's null pointer)
    fail("argument " + std::to_string(i) + ": a " + std::to_string(sizes[i]) + "-byte scalar where the kernel takes a pointer");
  if (want != -1 && sizes[i] == -1) fail("argument " + std::to_string(i) + ": an array where the kernel takes a " + std::to_string(want) + "-byte scalar");
  if (want != -1 && sizes[i] < want)
    fail("argument " + std::to_string(i) + ": a " + std::to_string(sizes[i]) + "-byte scalar where the kernel takes " + std::to_string(want) + " bytes (the driver would read past it)");
  T v;
  std::memcpy(&v, args[i], sizeof(T));
  return v;
}

template <class... A, std::size_t... I>
std::tuple<A...> unpack(void* const* args, const long long* sizes, std::index_sequence<I...>) {
  return std::tuple<A...>(arg<A>(args, sizes, int(I))...);
}

// Runs `kernel` on grid dims[0..2] of blocks dims[3..5] with `shared` bytes of dynamic shared memory.
// args[i] points at argument i's bytes (CuPy's kernel parameters), sizes[i] is their size (-1: a
// device pointer). Returns nullptr, or what went wrong.
template <class... A>
const char* launch(void (*kernel)(A...), const unsigned* dims, unsigned long long shared, void* const* args, const long long* sizes, int nargs) {
  static thread_local std::string error;
  const std::lock_guard<std::mutex> one_at_a_time(launching);
  Launch l;
  char* stacks = nullptr;
  std::size_t mapped = 0;
  try {
    if (nargs != int(sizeof...(A))) fail(std::to_string(nargs) + " arguments for a kernel of " + std::to_string(sizeof...(A)));
    l.grid = {dims[0], dims[1], dims[2]};
    l.block = {dims[3], dims[4], dims[5]};
    const std::size_t n = std::size_t(l.block.x) * l.block.y * l.block.z;
    if (!n || n > 1024) fail(std::to_string(n) + " threads a block (CUDA allows 1 to 1024)");
    if (!l.grid.x || !l.grid.y || !l.grid.z || l.grid.y > 65535 || l.grid.z > 65535) fail("grid dimensions out of CUDA's range");
    auto params = unpack<A...>(args, sizes, std::index_sequence_for<A...>{});
    l.fibers.resize(n);
    l.slots.assign(n, 0);
    l.released.assign(n, 0);
    l.dynamic_shared.assign(shared, 0xA5);  // (garbage, as shared memory starts)
    mapped = n * STACK;
    void* m = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) fail("no memory for the fibers' stacks");
    stacks = static_cast<char*>(m);
    struct Call {
      void (*kernel)(A...);
      std::tuple<A...>* params;
    } call{kernel, &params};
    l.args = &call;
    l.body = [](const void* p) {
      const Call* c = static_cast<const Call*>(p);
      std::apply(c->kernel, *c->params);
    };
    L = &l;
    FaultsCaught faults;
    if (sigsetjmp(escape, 1)) {
      char at[32];
      std::snprintf(at, sizeof at, "%p", fault_at);
      fail(where(*l.cur) + ": read or wrote outside its arrays, at " + at);
    }
    for (unsigned z = 0; z < l.grid.z; ++z)
      for (unsigned y = 0; y < l.grid.y; ++y)
        for (unsigned x = 0; x < l.grid.x; ++x) {
          l.block_idx = {x, y, z};
          run_block(l, stacks);
        }
    L = nullptr;
    munmap(stacks, mapped);
    return nullptr;
  } catch (const std::exception& e) {
    L = nullptr;
    if (stacks) munmap(stacks, mapped);
    error = e.what();
    return error.c_str();
  }
}

inline unsigned char* dynamic_shared() { return L->dynamic_shared.data(); }

inline void warp_sync(unsigned mask) { wait(AT_WARP, mask); }

// This thread's value `v` in a warp operation, then the operation's barrier.
inline void post(unsigned mask, uint64_t v) {
  L->slots[L->cur->linear] = v;
  warp_sync(mask);
}

// Lane `src`'s value in the warp operation this thread has just posted to.
inline uint64_t lane_value(unsigned mask, unsigned src, const char* op) {
  const Fiber& f = *L->cur;
  const std::size_t at = (f.linear & ~31u) + src;
  if (!(mask >> src & 1) || at >= L->fibers.size())
    fail(where(f) + ": " + op + " reads lane " + std::to_string(src) + ", outside its mask");
  return L->released[at];
}

}  // namespace emu

inline void __syncthreads() { emu::wait(emu::AT_BLOCK, 0); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T, class Pick>
T emu_shuffle(unsigned mask, T v, const char* op, Pick pick) {
  static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
  uint64_t mine = 0;
  std::memcpy(&mine, &v, sizeof(T));
  emu::post(mask, mine);
  const int src = pick(int(emu::L->cur->linear & 31));
  T r = v;
  if (src >= 0) {
    const uint64_t bits = emu::lane_value(mask, unsigned(src), op);
    std::memcpy(&r, &bits, sizeof(T));
  }
  return r;
}

template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu_shuffle(mask, v, "__shfl_down_sync", [&](int lane) { return lane % width + int(delta) < width ? lane + int(delta) : -1; });
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return emu_shuffle(mask, v, "__shfl_xor_sync", [&](int lane) {
    const int src = lane ^ lane_mask;
    return src / width > lane / width ? -1 : src;  // (a later group's lane: its own value)
  });
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  emu::post(mask, pred != 0);
  unsigned out = 0;
  for (unsigned lane = 0; lane < 32; ++lane)
    if (mask >> lane & 1) out |= unsigned(emu::lane_value(mask, lane, "__ballot_sync") != 0) << lane;
  return out;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }

// Atomics: one host thread runs a whole launch, so a read-modify-write is atomic by itself.
template <class T>
T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <class T>
T atomicOr(T* p, T v) {
  T old = *p;
  *p = old | v;
  return old;
}

template <class T>
T __ldcs(const T* p) { return *p; }
template <class T>
T __ldcg(const T* p) { return *p; }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) { return std::min<std::common_type_t<A, B>>(a, b); }
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) { return std::max<std::common_type_t<A, B>>(a, b); }

inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __double2float_rn(double d) { return static_cast<float>(d); }
// PTX's cvt.rni.s64: nearest even, clamped to the range, NaN to 0 (a C++ cast of such a value is undefined).
inline long long __double2ll_rn(double d) {
  if (d != d) return 0;
  if (d >= 9223372036854775808.0) return LLONG_MAX;
  if (d < -9223372036854775808.0) return LLONG_MIN;
  return llrint(d);
}
inline long long __float2ll_rn(float f) { return __double2ll_rn(f); }

template <class To, class From>
inline To emu_bits(From v) {
  static_assert(sizeof(To) == sizeof(From));
  To t;
  std::memcpy(&t, &v, sizeof(To));
  return t;
}
inline unsigned __float_as_uint(float f) { return emu_bits<unsigned>(f); }
inline float __uint_as_float(unsigned u) { return emu_bits<float>(u); }
inline float __int_as_float(int i) { return emu_bits<float>(i); }
inline double __longlong_as_double(long long v) { return emu_bits<double>(v); }
