// Decode the native engine's order-0 rANS substreams on the GPU, with dequantization
// fused: the output is the tensor's native float bits.
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
// value (zoocodec/plan.py's kinds), with s = symbol + lo, in float64:
//   Affine   s * step[row]                        (uniform, rdoq)
//   Lookup   values[row * k + s]                  (kmeans: row is the problem, `steps` holds its
//            codebook; an index outside [0, k) marks the substream bad)
//   Grouped  s * step[g] (+ zero[g]), g = row * groups + col / group (uniform group=G); with
//            side values coded at M mantissa bits (uniform:side=M), step[g] and zero[g] are
//            computed from group g's step code and centre (side_values below)
// then rounded to the output dtype exactly as NumPy does on the CPU (methods/arrays.from_float64),
// so the bytes are equal. Products and sums are __dmul_rn / __dadd_rn: NVRTC would otherwise
// contract a product and a sum into an FMA, which NumPy does not do.
// Trellis (dq) decodes in two steps: the rANS kernel writes each symbol's index (rans_index),
// then dq_maps / dq_values (below) walk the state machine as a scan.
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

#define NO_ZEROS 0xFFFFFFFFu

struct Tensor {
  u64 out_start;   // first element of the tensor in the output buffer
  u64 row_len;     // elements per row of the 2-D view (steps are per row)
  long long lo;    // symbol offset (ans: lo)
  u64 low;         // shift > 0: byte offset of its raw low bits in `low`
  u32 table;       // offset of its slot table in `slots`
  u32 L;           // probability precision (1..16); 0: every symbol is `lo`
  u32 steps;       // offset of its steps (or codebooks) in `steps`
  u32 rows;        // steps (codebooks) it has: 1, one for the tensor; else one per row (per group)
  u32 k;           // 0: steps; else codebook values per row
  u32 group;       // > 0: weights per group of a row (Grouped)
  u32 groups;      // Grouped: groups per row
  u32 zeros;       // Grouped: offset of its zero points in `steps`, or NO_ZEROS
  u32 shift;       // > 0: the ans frame with raw low bits (alphabets wider than 2^16): symbol
                   // = (coded << shift | the shift bits at element * shift of `low`) (shift <= 48)
  u32 side;        // Grouped with coded side values: M | bits << 8 | code bytes << 16 | centre bytes << 24,
                   // the codes' signed ints at `steps` and the centres' at `zeros` (both offsets in
                   // doubles of `steps`, which carries their bytes); 0: float64 steps and zeros
};

// Signed int i of an array of them `bytes` wide.
__device__ __forceinline__ long long int_at(const unsigned char* p, u32 bytes, u64 i) {
  if (bytes == 1) return (long long)reinterpret_cast<const signed char*>(p)[i];
  if (bytes == 2) return (long long)reinterpret_cast<const short*>(p)[i];
  if (bytes == 4) return (long long)reinterpret_cast<const int*>(p)[i];
  return reinterpret_cast<const long long*>(p)[i];
}

// Group g's step and zero point from its codes, as the CPU computes them (codecs/native/quantize.h,
// side_step and ZeroGrid with frac = M - 2): step (2^M + code mod 2^M) * 2^(code div 2^M - M), zero
// (centre - (2^bits - 1) 2^(frac - 1)) * step / 2^frac. The host checked every pair (side_range).
__device__ __forceinline__ void side_values(const Tensor& t, const double* steps, u64 g, double* step,
                                            double* zero) {
  const int mant = (int)(t.side & 0xFFu), bits = (int)(t.side >> 8 & 0xFFu), frac = mant - 2;
  const long long code = int_at(reinterpret_cast<const unsigned char*>(steps + t.steps), t.side >> 16 & 0xFFu, g);
  const long long centre = int_at(reinterpret_cast<const unsigned char*>(steps + t.zeros), t.side >> 24, g);
  long long e = (code >> mant) - mant;
  e = e < -4096 ? -4096 : (e > 4096 ? 4096 : e);
  const double m = (double)((1ll << mant) + (code & ((1ll << mant) - 1)));
  *step = (e < -1022 || e > 1023) ? ldexp(m, (int)e) : __dmul_rn(m, __longlong_as_double((e + 1023) << 52));
  const double half_range = (double)(((1ll << bits) - 1) * (1ll << (frac - 1)));
  *zero = __ddiv_rn(__dmul_rn(__dsub_rn((double)centre, half_range), *step), (double)(1ll << frac));
}

// The value of element `elem` of tensor t whose symbol plus lo is s; false: a codebook index
// outside [0, k) (nothing is written).
template <int KIND>
__device__ __forceinline__ bool put(void* out, const Tensor& t, const double* steps, u64 elem, long long s) {
  if (t.k) {
    if (s < 0 || s >= (long long)t.k) return false;
    const u64 row = t.rows > 1 ? elem / t.row_len : 0;
    store<KIND>(out, t.out_start + elem, steps[t.steps + row * t.k + s]);
  } else if (t.group) {
    const u64 row = elem / t.row_len;
    const u64 g = row * t.groups + (elem - row * t.row_len) / t.group;
    double v;
    if (t.side) {
      double step, zero;
      side_values(t, steps, g, &step, &zero);
      v = __dadd_rn(__dmul_rn((double)s, step), zero);
    } else {
      v = __dmul_rn((double)s, steps[t.steps + (t.rows > 1 ? g : 0)]);
      if (t.zeros != NO_ZEROS) v = __dadd_rn(v, steps[t.zeros + g]);
    }
    store<KIND>(out, t.out_start + elem, v);
  } else {
    const u64 row = t.rows > 1 ? elem / t.row_len : 0;
    store<KIND>(out, t.out_start + elem, __dmul_rn((double)s, steps[t.steps + row]));
  }
  return true;
}

__device__ __forceinline__ u32 load16(const unsigned char* p) { return u32(p[0]) | u32(p[1]) << 8; }
__device__ __forceinline__ u32 load32(const unsigned char* p) {
  return u32(p[0]) | u32(p[1]) << 8 | u32(p[2]) << 16 | u32(p[3]) << 24;
}

// The `shift` low bits of element `elem` (the host pads `low` by 8 bytes: one unaligned 8-byte
// read covers them, shift + 7 <= 55).
__device__ __forceinline__ u64 low_bits(const unsigned char* low, const Tensor& t, u64 elem) {
  const u64 bit = elem * t.shift;
  const unsigned char* p = low + t.low + (bit >> 3);
  u64 v = 0;
  for (int b = 0; b < 8; ++b) v |= (u64)p[b] << (8 * b);
  return (v >> (bit & 7)) & ((1ull << t.shift) - 1);
}

// slots[table + x & mask] = freq | bias << 16 ; syms[table + ...] = symbol
// false: a codebook index outside [0, k) (nothing is read or written). KIND 3 stores the
// symbol plus lo as a byte (a float plane: rans_bytes); KIND 4 the symbol itself as a
// 16-bit index, KIND 5 with its low bits as a 64-bit one (rans_index, rans_index64:
// dq_values adds lo).
template <int KIND>
__device__ bool emit(void* out, const Tensor& t, const double* steps, const unsigned char* low, u64 elem, u32 sym) {
  const u64 index = t.shift ? (u64)sym << t.shift | low_bits(low, t, elem) : (u64)sym;
  const long long s = (long long)(index + (u64)t.lo);  // wrapping as NumPy's int64 does
  if (KIND == 3) {
    reinterpret_cast<unsigned char*>(out)[t.out_start + elem] = (unsigned char)s;
    return true;
  }
  if (KIND == 4) {
    reinterpret_cast<unsigned short*>(out)[t.out_start + elem] = (unsigned short)sym;
    return true;
  }
  if (KIND == 5) {
    reinterpret_cast<u64*>(out)[t.out_start + elem] = index;
    return true;
  }
  return put<KIND>(out, t, steps, elem, s);
}

template <int KIND>
__device__ void decode(const unsigned char* data, const u64* sub_off, const u32* sub_len, const u64* sub_first,
                       const u32* sub_count, const u32* tensor_of, const Tensor* tensors, const u32* slots,
                       const unsigned short* syms, const double* steps, const unsigned char* low, void* out,
                       int* bad, u64 nsub) {
  const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  const u64 s = tid / LANES;
  const int k = (int)(tid % LANES);
  if (s >= nsub) return;  // whole groups leave together (blockDim is a multiple of 8)
  const Tensor& t = tensors[tensor_of[s]];  // (a reference: fields read as used, fewer registers)
  const u32 m = sub_count[s];
  const u64 first = sub_first[s];
  if (t.L == 0) {  // a constant tensor: no coded bits
    for (u32 j = k; j < m; j += LANES)
      if (!emit<KIND>(out, t, steps, low, first + j, 0)) bad[s] = 1;
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
      if (!emit<KIND>(out, t, steps, low, first + j, sym[x & mask])) { bad[s] = 1; return; }
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
      if (!emit<KIND>(out, t, steps, low, first + j + k, sym[x & mask])) broken = 1;
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
                                  const double* steps, const unsigned char* low, void* out, int* bad,   \
                                  u64 nsub) {                                                           \
    decode<KIND>(data, sub_off, sub_len, sub_first, sub_count, tensor_of, tensors, slots, syms, steps,   \
                 low, out, bad, nsub);                                                                   \
  }

KERNEL(rans_dequant_f32, 0)
KERNEL(rans_dequant_f16, 1)
KERNEL(rans_dequant_bf16, 2)
KERNEL(rans_bytes, 3)
KERNEL(rans_index, 4)
KERNEL(rans_index64, 5)

// A float plane's canonical Huffman stream (zoocodec/codecs/native/huffman.h), one thread per
// substream, its bytes into out[first .. first + count). The one-symbol table (2^12 slots: symbol |
// code length << 8, built by the CPU's parser) sits in shared memory; each symbol peeks 12 bits,
// most significant first, zeros past the end, and must end inside the substream; then the end
// checks of huffman.cpp's finish(): every byte used, the last one's unused bits zero. A damaged
// substream sets bad[s] and stops. Every plane of a load in one launch: a block decodes substreams
// of one plane (block_plane), whose table it holds; each plane's substreams start at a block
// (kernels/decode.py's huff_layout pads them with empty ones).
#define HUFF_SLOTS 4096
extern "C" __global__ void huff_bytes(const unsigned char* data, const u64* sub_off, const u32* sub_len,
                                      const u64* sub_first, const u32* sub_count, const unsigned short* tables,
                                      const u32* block_plane, unsigned char* out, int* bad, u64 nsub) {
  __shared__ unsigned short t[HUFF_SLOTS];
  const unsigned short* table = tables + (u64)block_plane[blockIdx.x] * HUFF_SLOTS;
  for (u32 i = threadIdx.x; i < HUFF_SLOTS; i += blockDim.x) t[i] = table[i];
  __syncthreads();
  const u64 s = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= nsub) return;
  const unsigned char* b = data + sub_off[s];
  const u64 len = sub_len[s], total = len * 8;
  unsigned char* o = out + sub_first[s];
  u64 pos = 0;
  for (u32 i = 0, m = sub_count[s]; i < m; ++i) {
    const u64 at = pos >> 3;
    u32 v = 0;
    for (int k = 0; k < 3; ++k) v = v << 8 | (at + k < len ? b[at + k] : 0u);
    const unsigned short e = t[(v >> (12 - (pos & 7))) & (HUFF_SLOTS - 1)];
    if (pos + (e >> 8) > total) {
      bad[s] = 1;
      return;
    }
    o[i] = (unsigned char)(e & 0xFF);
    pos += e >> 8;
  }
  if ((pos + 7) / 8 != len || ((pos & 7) && (unsigned char)(b[len - 1] << (pos & 7)) != 0)) bad[s] = 1;
}

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
// does), value as above (an index outside a codebook sets *bad). One tensor t (its out_start
// 0: `out` is its start); a grid-stride loop.
template <int KIND>
__device__ void packed(const unsigned char* raw, u32 width, u64 n, const Tensor* t, const double* steps, void* out,
                       int* bad) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    u64 v = 0;
    for (u32 b = 0; b < width; ++b) v |= (u64)raw[i * width + b] << (8 * b);
    if (!put<KIND>(out, *t, steps, i, (long long)(v + (u64)t->lo))) *bad = 1;
  }
}

#define PACKED_KERNEL(NAME, KIND)                                                                        \
  extern "C" __global__ void NAME(const unsigned char* raw, u32 width, u64 n, const Tensor* t,          \
                                  const double* steps, void* out, int* bad) {                            \
    packed<KIND>(raw, width, n, t, steps, out, bad);                                                     \
  }

PACKED_KERNEL(packed_dequant_f32, 0)
PACKED_KERNEL(packed_dequant_f16, 1)
PACKED_KERNEL(packed_dequant_bf16, 2)

// ---- dq levels (zoocodec/plan.py Trellis; methods/rdoq.py DQ) ----------------------------
// The state machine of kernels/rdoq.py (NEXT_STATE[state][parity]) walks each row of the
// (rows, cols) view from state 0, or each column (by_column). Level k reconstructs 2k in
// states 0-1 and 2k - sgn k in states 2-3 (int64, wrapping as NumPy does), times the
// float64 step of its row. A walk is cut into segments of `seg` levels, one thread each:
// dq_maps writes each segment's map of the four states (2 bits per state: state s goes to
// (map >> 2s) & 3); dq_values applies the maps of the segments before its own to state 0
// (composition is associative: this is a scan, sequential over at most rows / seg maps),
// then walks its segment writing values. Threads of one segment index run across walks,
// so the column walks read consecutive addresses. The levels are read from `idx`: each
// tensor's indices (rans_index's 16-bit ones, or a packed frame's `width`-byte ones) at
// byte `src`, plus lo.
#define DQ_NEXT0 0xD8u  // NEXT_STATE[s][0] at bits 2s: 0 2 1 3
#define DQ_NEXT1 0x72u  // NEXT_STATE[s][1]: 2 0 3 1
#define DQ_IDENTITY 0xE4u

struct DqTensor {
  u64 out_start;   // first element in the output buffer
  u64 src;         // byte offset of its indices in idx (a multiple of 8)
  u64 seg_start;   // its first segment (threads of all tensors are numbered together)
  u64 rows, cols;  // the 2-D view
  long long lo;
  u32 width;       // bytes per index: 1, 2, 4 or 8
  u32 by_column;   // 1: the walks run down the columns
  u32 steps;       // offset of its steps in `steps`
  u32 nsteps;      // 1, or one per row
};

__device__ __forceinline__ long long dq_level(const unsigned char* idx, const DqTensor& t, u64 flat) {
  const unsigned char* p = idx + t.src;
  u64 v;
  switch (t.width) {
    case 1: v = p[flat]; break;
    case 2: v = reinterpret_cast<const unsigned short*>(p)[flat]; break;
    case 4: v = reinterpret_cast<const u32*>(p)[flat]; break;
    default: v = reinterpret_cast<const u64*>(p)[flat];
  }
  return (long long)(v + (u64)t.lo);
}

__device__ __forceinline__ u32 dq_next(u32 state, long long k) {
  return (((k & 1) ? DQ_NEXT1 : DQ_NEXT0) >> (2 * state)) & 3u;
}

// The segment `seg` of all tensors: its tensor (the last whose seg_start <= seg), walk, and range.
__device__ __forceinline__ u32 dq_find(const DqTensor* ts, u32 nt, u64 seg) {
  u32 lo = 0, hi = nt;
  while (hi - lo > 1) {
    const u32 mid = (lo + hi) / 2;
    if (ts[mid].seg_start <= seg) lo = mid; else hi = mid;
  }
  return lo;
}

#define DQ_THIS_SEGMENT                                                           \
  const u64 gid = (u64)blockIdx.x * blockDim.x + threadIdx.x;                     \
  if (gid >= nseg) return;                                                        \
  const DqTensor t = ts[dq_find(ts, nt, gid)];                                    \
  const u64 walks = t.by_column ? t.cols : t.rows;                                \
  const u64 length = t.by_column ? t.rows : t.cols;                               \
  const u64 j = gid - t.seg_start, w = j % walks, g = j / walks;                  \
  const u64 begin = g * seg, end = begin + seg < length ? begin + seg : length;   \
  const u64 first = t.by_column ? w : w * t.cols, stride = t.by_column ? t.cols : 1;

extern "C" __global__ void dq_maps(const unsigned char* idx, const DqTensor* ts, u32 nt, u64 nseg, u32 seg,
                                   unsigned char* maps) {
  DQ_THIS_SEGMENT
  u32 m = DQ_IDENTITY;
  for (u64 p = begin; p < end; ++p) {
    const long long k = dq_level(idx, t, first + p * stride);
    const u32 next = (k & 1) ? DQ_NEXT1 : DQ_NEXT0;
    m = (next >> (2 * (m & 3))) & 3u | ((next >> (2 * (m >> 2 & 3))) & 3u) << 2 |
        ((next >> (2 * (m >> 4 & 3))) & 3u) << 4 | ((next >> (2 * (m >> 6 & 3))) & 3u) << 6;
  }
  maps[gid] = (unsigned char)m;
}

template <int KIND>
__device__ void dq_values(const unsigned char* idx, const DqTensor* ts, u32 nt, u64 nseg, u32 seg,
                          const unsigned char* maps, const double* steps, void* out) {
  DQ_THIS_SEGMENT
  u32 state = 0;
  for (u64 h = 0; h < g; ++h) state = (maps[t.seg_start + h * walks + w] >> (2 * state)) & 3u;
  for (u64 p = begin; p < end; ++p) {
    const u64 flat = first + p * stride;
    const long long k = dq_level(idx, t, flat);
    const u64 twice = (u64)k * 2;  // wraps as NumPy's int64 does
    const long long level = (long long)(state < 2 ? twice : twice - (u64)((k > 0) - (k < 0)));
    const u64 row = t.by_column ? p : w;
    store<KIND>(out, t.out_start + flat, __dmul_rn((double)level, steps[t.steps + (t.nsteps > 1 ? row : 0)]));
    state = dq_next(state, k);
  }
}

#define DQ_KERNEL(NAME, KIND)                                                                            \
  extern "C" __global__ void NAME(const unsigned char* idx, const DqTensor* ts, u32 nt, u64 nseg, u32 seg, \
                                  const unsigned char* maps, const double* steps, void* out) {           \
    dq_values<KIND>(idx, ts, nt, nseg, seg, maps, steps, out);                                           \
  }

DQ_KERNEL(dq_values_f32, 0)
DQ_KERNEL(dq_values_f16, 1)
DQ_KERNEL(dq_values_bf16, 2)
