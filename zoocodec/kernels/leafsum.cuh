// One leaf of NumPy's pairwise summation tree (kernels/uniform.py: leaves(), at most 128
// consecutive values) summed as np.sum sums a block: 8 accumulators over the largest multiple
// of 8 (none below 8 values), combined pairwise, then the tail one by one. The host adds the
// leaf sums up the same tree and gets np.sum's float bit for bit. Every sum is __dadd_rn, so
// NVRTC cannot contract a caller's product and this sum into an FMA, which NumPy does not do.
// Included by uniform.cu and stats.cu (kernels/backend.cuda_source inlines it for NVRTC), which
// also share the narrowing to the tensor's dtype and the per-leaf error statistics below.
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

// KIND 0: float32 (u32 bits), 1: bfloat16 (u16 bits, nearest-even, as methods/arrays.from_float64)
template <int KIND>
__device__ __forceinline__ u32 narrow(double r) {
  u32 b = __float_as_uint(__double2float_rn(r));
  return KIND == 0 ? b : ((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

template <int KIND>
__device__ __forceinline__ double from_bits(u32 b) {
  return KIND == 0 ? (double)__uint_as_float(b) : (double)__uint_as_float(b << 16);
}

template <int KIND>
__device__ __forceinline__ void put_bits(void* out, u64 i, u32 b) {
  if (KIND == 0) reinterpret_cast<u32*>(out)[i] = b;
  else reinterpret_cast<unsigned short*>(out)[i] = (unsigned short)b;
}

// One leaf's error statistics, as arrays.error_stats sums them: the squared error and the squared
// weights (each a LeafSum) and the largest |error|.
struct LeafStats {
  LeafSum se, sx;
  double m;

  __device__ explicit LeafStats(unsigned count) : se(count), sx(count), m(0.0) {}

  // weight k of the leaf, x, and its reconstruction in the tensor's dtype, back
  __device__ __forceinline__ void add(unsigned k, double x, double back) {
    const double e = x - back;
    m = fmax(m, fabs(e));
    se.add(k, e * e);
    sx.add(k, x * x);
  }

  __device__ __forceinline__ void store(u64 t, double* err2, double* power, double* max_err) const {
    err2[t] = se.total();
    power[t] = sx.total();
    max_err[t] = m;
  }
};
