// The `ans` coder's order-0 rANS stream encoded on the device (kernels/rans_encode.py), in the
// native encoder's format and bytes (codecs/native/rans.h, rans.cpp): the symbols never leave
// the GPU, only the coded substreams do.
//
// rans_histogram_*: counts of symbol - lo (a block's counts in shared memory for alphabets up
// to 8192 symbols, then added to the 64-bit totals).
// rans_encode_*: 8 threads a substream of 2^16 symbols, thread k its interleaved state k
// (symbol i of a substream uses state i mod 8; substreams below 4096 symbols have one state,
// thread 0 codes them alone). From the last symbol back, a group of 8 at a time (first the
// partial group of m mod 8), as rans.cpp's sub_begin / sub_groups: each lane whose state is at
// or above f << (32 - L) emits its low 16 bits, and the group's words are pushed below the
// stack's top in lane order (rans.cpp pushes lane 7 first: lane k's word lands at top - c +
// the number of emitting lanes below k; a ballot of the substream's 8 lanes gives both), then
// x' = (x / f << L) + x mod f + start, the state rans.cpp's multiply by a reciprocal gives.
// Words go to `words` at the substream's own symbol offsets (at most one word a symbol).
// rans_gather: each substream's bytes, its states (4 bytes each, little-endian) then its words
// from the stack's top, packed at the offsets the host computed from the word counts.
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;
typedef long long i64;

#define HIST_SHARED 8192u

template <typename S>
__device__ __forceinline__ u32 index_of(const S* sym, u64 i, i64 lo) {
  return (u32)((i64)sym[i] - lo);
}

template <typename S>
__device__ void histogram(const S* sym, u64 n, i64 lo, u32 nsym, u64* counts) {
  extern __shared__ u32 local[];
  const bool shared = nsym <= HIST_SHARED;
  if (shared) {
    for (u32 s = threadIdx.x; s < nsym; s += blockDim.x) local[s] = 0;
    __syncthreads();
  }
  const u64 stride = (u64)gridDim.x * blockDim.x;
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const u32 v = index_of(sym, i, lo);
    if (shared) atomicAdd(&local[v], 1u);
    else atomicAdd(&counts[v], 1ull);
  }
  if (shared) {
    __syncthreads();
    for (u32 s = threadIdx.x; s < nsym; s += blockDim.x)
      if (local[s]) atomicAdd(&counts[s], (u64)local[s]);
  }
}

// One symbol of state x (lanes whose `active` is false take no part but join the ballot).
__device__ __forceinline__ void put(u32& x, bool active, u32 e, int L, unsigned octet, int k, u16* words, u64& top) {
  const u32 f = e & 0xffffu, start = e >> 16;
  const bool out = active && x >= (f << (32 - L));
  const unsigned ballot = (__ballot_sync(octet, out) >> (threadIdx.x & 24)) & 0xffu;
  const u32 c = __popc(ballot);
  if (out) {
    words[top - c + __popc(ballot & ((1u << k) - 1u))] = (u16)x;
    x >>= 16;
  }
  top -= c;
  if (active) {
    const u32 q = x / f;
    x = (q << L) + (x - q * f) + start;
  }
}

template <typename S>
__device__ void encode(const S* sym, u64 n, i64 lo, u64 chunk, const u32* fc, u32 nsym, int L, u16* words,
                       u32* states, u32* count) {
  const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  const u64 sub = g >> 3;
  const int k = (int)(g & 7);
  const u64 parts = (n + chunk - 1) / chunk;
  if (sub >= parts) return;  // (a substream's 8 threads leave together)
  const unsigned octet = 0xffu << (threadIdx.x & 24);
  const u64 base = sub * chunk, m = n - base < chunk ? n - base : chunk;
  const S* s = sym + base;
  u16* w = words + base;
  u32 x = 1u << 16;
  u64 top = m;
  if (m < 4096) {  // one state: thread 0 alone (the ballot of one lane)
    if (k == 0) {
      for (u64 j = m; j-- > 0;) put(x, true, fc[index_of(s, j, lo)], L, 1u << (threadIdx.x & 31), 0, w, top);
      states[sub * 8] = x;
      count[sub] = (u32)(m - top);
    }
    return;
  }
  const u64 r = m % 8;
  u64 j = m - r;
  if (r) {
    const bool active = (u64)k < r;
    put(x, active, active ? fc[index_of(s, j + k, lo)] : 1u, L, octet, k, w, top);
  }
  while (j > 0) {
    j -= 8;
    put(x, true, fc[index_of(s, j + k, lo)], L, octet, k, w, top);
  }
  states[sub * 8 + k] = x;
  if (k == 0) count[sub] = (u32)(m - top);
}

#define ZC_KINDS(X) X(i8, signed char) X(i16, short) X(i32, int) X(i64, long long) X(u8, unsigned char) \
  X(u16, unsigned short) X(u32, unsigned int)

#define ZC_HISTOGRAM(NAME, S)                                                                             \
  extern "C" __global__ void rans_histogram_##NAME(const S* sym, u64 n, i64 lo, u32 nsym, u64* counts) { \
    histogram<S>(sym, n, lo, nsym, counts);                                                              \
  }
#define ZC_ENCODE(NAME, S)                                                                                \
  extern "C" __global__ void rans_encode_##NAME(const S* sym, u64 n, i64 lo, u64 chunk, const u32* fc,    \
                                                u32 nsym, int L, u16* words, u32* states, u32* count) {   \
    encode<S>(sym, n, lo, chunk, fc, nsym, L, words, states, count);                                     \
  }
ZC_KINDS(ZC_HISTOGRAM)
ZC_KINDS(ZC_ENCODE)

extern "C" __global__ void rans_gather(const u16* words, const u32* states, const u32* count, const u64* offset,
                                       u64 n, u64 chunk, u8* out) {
  const u64 sub = blockIdx.x, base = sub * chunk, m = n - base < chunk ? n - base : chunk;
  const u32 lanes = m < 4096 ? 1u : 8u, c = count[sub];
  u8* o = out + offset[sub];
  for (u32 t = threadIdx.x; t < 4 * lanes; t += blockDim.x) o[t] = (u8)(states[sub * 8 + t / 4] >> (8 * (t % 4)));
  const u16* src = words + base + (m - c);
  u8* dst = o + 4 * lanes;
  for (u32 t = threadIdx.x; t < c; t += blockDim.x) {
    const u16 v = src[t];
    dst[2 * t] = (u8)v;
    dst[2 * t + 1] = (u8)(v >> 8);
  }
}
