// One leaf of NumPy's pairwise summation tree (kernels/uniform.py: leaves(), at most 128
// consecutive values) summed as np.sum sums a block: 8 accumulators over the largest multiple
// of 8 (none below 8 values), combined pairwise, then the tail one by one. The host adds the
// leaf sums up the same tree and gets np.sum's float bit for bit. Every sum is __dadd_rn, so
// NVRTC cannot contract a caller's product and this sum into an FMA, which NumPy does not do.
// Included by uniform.cu and stats.cu (kernels/backend.cuda_source inlines it for NVRTC).
struct LeafSum {
  double r[8];
  double s;
  unsigned main, n;

  __device__ explicit LeafSum(unsigned count) : s(0.0), main(count < 8 ? 0 : count - count % 8), n(count) {}

  __device__ __forceinline__ double combined() const {
    return __dadd_rn(__dadd_rn(__dadd_rn(r[0], r[1]), __dadd_rn(r[2], r[3])),
                     __dadd_rn(__dadd_rn(r[4], r[5]), __dadd_rn(r[6], r[7])));
  }

  // the leaf's value k, in order k = 0, 1, ...
  __device__ __forceinline__ void add(unsigned k, double v) {
    if (k < 8 && main) {
      r[k] = v;
    } else if (k < main) {
      r[k % 8] = __dadd_rn(r[k % 8], v);
    } else {
      if (k == main && main) s = combined();
      s = __dadd_rn(s, v);
    }
  }

  __device__ __forceinline__ double total() const { return main && main == n ? combined() : s; }
};
