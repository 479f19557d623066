// The error statistics of a reconstruction on the device (kernels/stats.py), for methods whose
// reconstruction is made there from float32 values (kmeans' codebook lookups): the
// reconstruction narrowed to the tensor's dtype (optionally written), and per leaf of NumPy's
// pairwise summation tree (kernels/uniform.py: leaves(), at most 128 consecutive weights) the
// sums of the squared error and of the squared weights as NumPy sums a block (8 accumulators,
// then the tail) and the largest |error|: the host adds the leaf sums up the same tree and gets
// arrays.error_stats' floats bit for bit. The same arithmetic as uniform.cu's leaves (leafsum.cuh).
typedef unsigned int u32;
typedef unsigned long long u64;

#include "leafsum.cuh"

// KIND 0: float32 (recon written as its bits), 1: bfloat16 (narrow: nearest-even, as from_float64)
template <int KIND>
__device__ void leaf_stats(const float* x, const float* r, const u64* leaf_start, const u32* leaf_count,
                           u64 nleaves, void* recon, double* err2, double* power, double* max_err) {
  const u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= nleaves) return;
  const u64 lo = leaf_start[t];
  const u32 n = leaf_count[t];
  LeafStats leaf(n);
  for (u32 k = 0; k < n; ++k) {
    const u64 i = lo + k;
    const u32 b = narrow<KIND>((double)r[i]);  // r is a float32: float32 keeps its bits
    if (recon) put_bits<KIND>(recon, i, b);
    leaf.add(k, (double)x[i], from_bits<KIND>(b));
  }
  leaf.store(t, err2, power, max_err);
}

#define ZC_STATS(NAME, KIND)                                                                              \
  extern "C" __global__ void NAME(const float* x, const float* r, const u64* leaf_start,                   \
                                  const u32* leaf_count, u64 nleaves, void* recon, double* err2,           \
                                  double* power, double* max_err) {                                        \
    leaf_stats<KIND>(x, r, leaf_start, leaf_count, nleaves, recon, err2, power, max_err);                 \
  }
ZC_STATS(error_stats_f32, 0)
ZC_STATS(error_stats_bf16, 1)
