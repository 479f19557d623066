// Fused uniform quantization on the device, for compress(device="gpu"): the tensor's bits go
// to the GPU once; symbols (narrow integers) and the error statistics come back; the
// reconstruction stays there (written only when asked for). No float64 array anywhere.
//
// One thread per leaf of NumPy's pairwise summation tree (kernels/uniform.py: leaves(), at
// most 128 consecutive weights). A thread quantizes its weights in order, exactly as the CPU
// does (x / step in IEEE double, rint, symbol * step, the cast back), and sums the squared
// error and the squared weights as NumPy sums a block (8 accumulators, then the tail), so the
// host, adding the leaf sums up the same tree, gets np.sum's floats bit for bit.
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#include "leafsum.cuh"

template <int KIND>  // 0 float32 (u32 bits), 1 bfloat16 (u16 bits)
__device__ __forceinline__ double value(const void* w, u64 i) {
  if (KIND == 0) return (double)__uint_as_float(reinterpret_cast<const u32*>(w)[i]);
  return (double)__uint_as_float(((u32)reinterpret_cast<const u16*>(w)[i]) << 16);
}

// S: the symbol type (signed char, short, int). steps: one per row of `cols` weights, or one.
template <int KIND, typename S>
__device__ void quantize(const void* w, const double* steps, u64 nsteps, u64 cols, const u64* leaf_start,
                         const u32* leaf_count, u64 nleaves, S* symbols, void* recon, double* err2, double* power,
                         double* max_err) {
  const u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= nleaves) return;
  const u64 lo = leaf_start[t];
  const u32 n = leaf_count[t];
  LeafStats leaf(n);
  for (u32 k = 0; k < n; ++k) {
    const u64 i = lo + k;
    const double step = steps[nsteps > 1 ? i / cols : 0];
    const double x = value<KIND>(w, i);
    const S q = (S)rint(x / step);
    symbols[i] = q;
    const u32 r = narrow<KIND>((double)q * step);
    if (recon) put_bits<KIND>(recon, i, r);
    leaf.add(k, x, from_bits<KIND>(r));
  }
  leaf.store(t, err2, power, max_err);
}

#define ZC_KERNEL(NAME, KIND, S)                                                                          \
  extern "C" __global__ void NAME(const void* w, const double* steps, u64 nsteps, u64 cols,                \
                                  const u64* leaf_start, const u32* leaf_count, u64 nleaves, S* symbols,  \
                                  void* recon, double* err2, double* power, double* max_err) {            \
    quantize<KIND, S>(w, steps, nsteps, cols, leaf_start, leaf_count, nleaves, symbols, recon, err2, power, \
                      max_err);                                                                           \
  }
ZC_KERNEL(uniform_f32_i8, 0, signed char)
ZC_KERNEL(uniform_f32_i16, 0, short)
ZC_KERNEL(uniform_f32_i32, 0, int)
ZC_KERNEL(uniform_bf16_i8, 1, signed char)
ZC_KERNEL(uniform_bf16_i16, 1, short)
ZC_KERNEL(uniform_bf16_i32, 1, int)

// The leaf sums added up np.sum's tree below the nodes of at most NODE values (kernels/uniform.py:
// tree): one thread a node, its subtree walked as NumPy recurses (a block over 128 values split at
// half its size rounded down to a multiple of 8), left + right, reading its leaves in order from
// its first; the recursion as a loop over an explicit stack (depth <= 24 for nodes below 2^29
// values). The host adds the nodes up the tree above them.
extern "C" __global__ void pairwise_nodes(const double* leaf, const u64* first, const u64* count, u64 nodes,
                                          double* out) {
  const u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= nodes) return;
  u64 next = first[t], c = count[t], right[24];
  double left[24];
  bool has_left[24];
  int sp = 0;
  for (;;) {
    while (c > 128) {  // down the left side, each right half pending
      u64 half = c / 2;
      half -= half % 8;
      right[sp] = c - half;
      has_left[sp++] = false;
      c = half;
    }
    double v = leaf[next++];
    for (;;) {  // up while both halves are done
      if (sp == 0) {
        out[t] = v;
        return;
      }
      if (!has_left[sp - 1]) {  // a left half done: its right half next
        left[sp - 1] = v;
        has_left[sp - 1] = true;
        c = right[sp - 1];
        break;
      }
      v = left[--sp] + v;
    }
  }
}
