// Decode the native engine's order-0 rANS substreams on the GPU, with uniform
// dequantization fused: the output is the tensor's native float bits.
//
// Format: zoocodec/codecs/native/rans.h. A substream of m symbols has lanes(m) 32-bit
// states (8, or 1 below 4096 symbols; symbol j uses state j mod 8), then 16-bit words in
// the order the CPU decoder reads them. Eight threads decode one 8-lane substream: step g
// decodes symbols 8g..8g+7 (thread k symbol 8g+k); the threads that renormalise read
// consecutive words in lane order, so each finds its word from a ballot of the group
// (popc of the lanes below it that also read). One thread decodes a 1-lane substream.
//
// Many tensors decode in one launch: substream s belongs to tensor tensor_of[s], whose
// slot table, offset `lo`, steps and output start are per tensor. Every read is bounds-
// checked against the substream's length; a damaged substream sets bad[s] (the host
// raises ContainerError) and never reads or writes outside its own ranges.
//
// value = (double)(symbol + lo) * step[row] in float64 (uniform), or, for a tensor with k > 0,
// values[row * k + symbol + lo] (kmeans: row is the problem, `steps` holds its codebook;
// an index outside [0, k) marks the substream bad), then rounded to the output dtype
// exactly as NumPy does on the CPU (methods/arrays.from_float64), so the bytes are equal.
#include <cuda_fp16.h>

typedef unsigned int u32;
typedef unsigned long long u64;

#define LANES 8
#define STATE_LO 65536u

template <int KIND>  // 0 float32, 1 float16, 2 bfloat16 (as uint16 bits)
__device__ __forceinline__ void store(void* out, u64 i, double v) {
  if (KIND == 0) {
    reinterpret_cast<float*>(out)[i] = __double2float_rn(v);
  } else if (KIND == 1) {
    reinterpret_cast<unsigned short*>(out)[i] = __half_as_ushort(__double2half(v));
  } else {
    u32 b = __float_as_uint(__double2float_rn(v));
    b = b + 0x7FFFu + ((b >> 16) & 1u);  // nearest-even, as from_float64
    reinterpret_cast<unsigned short*>(out)[i] = (unsigned short)(b >> 16);
  }
}

struct Tensor {
  u64 out_start;   // first element of the tensor in the output buffer
  u64 row_len;     // elements per row of the 2-D view (steps are per row)
  long long lo;    // symbol offset (ans: lo)
  u32 table;       // offset of its slot table in `slots`
  u32 L;           // probability precision (1..16); 0: every symbol is `lo`
  u32 steps;       // offset of its steps (or codebooks) in `steps`
  u32 rows;        // number of rows (1: one for the tensor)
  u32 k;           // 0: steps; else codebook values per row
  u32 pad;
};

__device__ __forceinline__ u32 load16(const unsigned char* p) { return u32(p[0]) | u32(p[1]) << 8; }
__device__ __forceinline__ u32 load32(const unsigned char* p) {
  return u32(p[0]) | u32(p[1]) << 8 | u32(p[2]) << 16 | u32(p[3]) << 24;
}

// slots[table + x & mask] = freq | bias << 16 ; syms[table + ...] = symbol
// false: a codebook index outside [0, k) (nothing is read or written). KIND 3 stores the
// symbol itself as a byte (a float plane: rans_bytes).
template <int KIND>
__device__ bool emit(void* out, const Tensor& t, const double* steps, u64 elem, u32 sym) {
  const u64 row = t.rows > 1 ? elem / t.row_len : 0;
  const long long s = (long long)sym + t.lo;
  if (KIND == 3) {
    reinterpret_cast<unsigned char*>(out)[t.out_start + elem] = (unsigned char)s;
    return true;
  }
  if (t.k) {
    if (s < 0 || s >= (long long)t.k) return false;
    store<KIND>(out, t.out_start + elem, steps[t.steps + row * t.k + s]);
  } else {
    store<KIND>(out, t.out_start + elem, (double)s * steps[t.steps + row]);
  }
  return true;
}

template <int KIND>
__device__ void decode(const unsigned char* data, const u64* sub_off, const u32* sub_len, const u64* sub_first,
                       const u32* sub_count, const u32* tensor_of, const Tensor* tensors, const u32* slots,
                       const unsigned short* syms, const double* steps, void* out, int* bad, u64 nsub) {
  const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  const u64 s = tid / LANES;
  const int k = (int)(tid % LANES);
  if (s >= nsub) return;  // whole groups leave together (blockDim is a multiple of 8)
  const Tensor t = tensors[tensor_of[s]];
  const u32 m = sub_count[s];
  const u64 first = sub_first[s];
  if (t.L == 0) {  // a constant tensor: no coded bits
    for (u32 j = k; j < m; j += LANES)
      if (!emit<KIND>(out, t, steps, first + j, 0)) bad[s] = 1;
    return;
  }
  const unsigned char* q = data + sub_off[s];
  const u32 len = sub_len[s];
  const u32 mask = (1u << t.L) - 1;
  const u32* slot = slots + t.table;
  const unsigned short* sym = syms + t.table;
  if (m < 4096) {  // one lane: thread 0 of the group walks it
    if (k != 0) return;
    if (len < 4) { bad[s] = 1; return; }
    u32 x = load32(q), pos = 4;
    if (x < STATE_LO) { bad[s] = 1; return; }
    for (u32 j = 0; j < m; ++j) {
      const u32 e = slot[x & mask];
      if (!emit<KIND>(out, t, steps, first + j, sym[x & mask])) { bad[s] = 1; return; }
      x = (e & 0xFFFFu) * (x >> t.L) + (e >> 16);
      if (x < STATE_LO) {
        if (pos + 2 > len) { bad[s] = 1; return; }
        x = (x << 16) | load16(q + pos);
        pos += 2;
      }
    }
    if (pos != len || x != STATE_LO) bad[s] = 1;
    return;
  }
  const u32 lane = threadIdx.x & 31;
  const u32 group = 0xFFu << (lane & ~7u);  // the 8 threads of this substream in the warp
  int broken = len < 4 * LANES;
  u32 x = broken ? STATE_LO : load32(q + 4 * k);
  broken |= x < STATE_LO;
  broken = __any_sync(group, broken);
  u32 pos = 4 * LANES;
  for (u32 j = 0; j < m && !broken; j += LANES) {
    const bool active = j + k < m;
    bool need = false;
    if (active) {
      const u32 e = slot[x & mask];
      if (!emit<KIND>(out, t, steps, first + j + k, sym[x & mask])) broken = 1;
      x = (e & 0xFFFFu) * (x >> t.L) + (e >> 16);
      need = x < STATE_LO;
    }
    const u32 reads = (__ballot_sync(group, need) >> (lane & ~7u)) & 0xFFu;
    if (need) {
      const u32 at = pos + 2 * __popc(reads & ((1u << k) - 1));
      if (at + 2 > len) broken = 1;
      else x = (x << 16) | load16(q + at);
    }
    pos += 2 * __popc(reads);
    broken = __any_sync(group, broken);
  }
  if (broken || pos != len || __any_sync(group, x != STATE_LO)) {
    if (k == 0) bad[s] = 1;
  }
}

#define KERNEL(NAME, KIND)                                                                               \
  extern "C" __global__ void NAME(const unsigned char* data, const u64* sub_off, const u32* sub_len,     \
                                  const u64* sub_first, const u32* sub_count, const u32* tensor_of,     \
                                  const Tensor* tensors, const u32* slots, const unsigned short* syms,  \
                                  const double* steps, void* out, int* bad, u64 nsub) {                 \
    decode<KIND>(data, sub_off, sub_len, sub_first, sub_count, tensor_of, tensors, slots, syms, steps,   \
                 out, bad, nsub);                                                                        \
  }

KERNEL(rans_dequant_f32, 0)
KERNEL(rans_dequant_f16, 1)
KERNEL(rans_dequant_bf16, 2)
KERNEL(rans_bytes, 3)

// Lossless float planes (zoocodec/codecs/floatplanes.py), decoded into `planes` (plane k of
// n bytes at k * n, the top byte of each value first): each value's bits rotated back right
// by one, as floatplanes.cpp's merge does.
extern "C" __global__ void planes_merge4(const unsigned char* planes, u64 n, u32* out) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    const u32 r = u32(planes[i]) << 24 | u32(planes[n + i]) << 16 | u32(planes[2 * n + i]) << 8 | planes[3 * n + i];
    out[i] = r >> 1 | r << 31;
  }
}

extern "C" __global__ void planes_merge2(const unsigned char* planes, u64 n, unsigned short* out) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    const u32 r = u32(planes[i]) << 8 | planes[n + i];
    out[i] = (unsigned short)(r >> 1 | r << 15);
  }
}

// Packed frames (zoocodec/codecs/ans.py mode 1, inflated on the host by ans.unpack): symbol
// i = lo + the little-endian unsigned int of `width` bytes at i (wrapping as NumPy's int64
// does), value as above (k > 0: a codebook index; outside [0, k) sets *bad). A grid-stride loop.
template <int KIND>
__device__ void packed(const unsigned char* raw, u32 width, u64 n, long long lo, const double* steps, u32 rows,
                       u64 row_len, u32 k, void* out, int* bad) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    u64 v = 0;
    for (u32 b = 0; b < width; ++b) v |= (u64)raw[i * width + b] << (8 * b);
    const long long sym = (long long)(v + (u64)lo);
    const u64 row = rows > 1 ? i / row_len : 0;
    if (!k) {
      store<KIND>(out, i, (double)sym * steps[row]);
    } else if (sym >= 0 && sym < (long long)k) {
      store<KIND>(out, i, steps[row * k + sym]);
    } else {
      *bad = 1;
    }
  }
}

#define PACKED_KERNEL(NAME, KIND)                                                                        \
  extern "C" __global__ void NAME(const unsigned char* raw, u32 width, u64 n, long long lo,             \
                                  const double* steps, u32 rows, u64 row_len, u32 k, void* out,         \
                                  int* bad) {                                                            \
    packed<KIND>(raw, width, n, lo, steps, rows, row_len, k, out, bad);                                  \
  }

PACKED_KERNEL(packed_dequant_f32, 0)
PACKED_KERNEL(packed_dequant_f16, 1)
PACKED_KERNEL(packed_dequant_bf16, 2)
