// Rate-distortion decisions on the device (loaded by rdoq.py with cupy.RawModule): the same
// float64 operations, in the same order, as the NumPy path of rdoq.py, so the levels are the
// CPU's bit for bit. Every product and sum is an explicit round-to-nearest intrinsic
// (__dmul_rn, __dadd_rn: never contracted into an FMA), as NumPy computes d*d + lam*rate.
//
// Rate tables bits[context, state, level - origin] (float64) and worst[context, state] (the
// largest entry plus one bit, the price of a level outside the table) sit in shared memory
// when they fit (`shared` bytes > 0), else they are read through the read-only cache.
typedef long long i64;

#define INF __longlong_as_double(0x7ff0000000000000LL)

// The tables: in shared memory when the launch gave it, else the global arrays.
__device__ __forceinline__ void tables(const double* bits, const double* worst, i64 nbits, i64 nworst,
                                       i64 shared, const double** b, const double** w) {
  extern __shared__ double smem[];
  if (shared) {
    for (i64 i = threadIdx.x; i < nbits; i += blockDim.x) smem[i] = bits[i];
    for (i64 i = threadIdx.x; i < nworst; i += blockDim.x) smem[nbits + i] = worst[i];
    __syncthreads();
    *b = smem;
    *w = smem + nbits;
  } else {
    *b = bits;
    *w = worst;
  }
}

// (x - recon)^2 + lam * bits(level) for one candidate; `row` is the table of its context (and state).
__device__ __forceinline__ double cost(double x, double recon, double level, const double* row, double worst,
                                       i64 origin, i64 size, double lam) {
  const i64 idx = (i64)level - origin;
  const double rate = (idx >= 0 && idx < size) ? row[idx] : worst;
  const double d = __dsub_rn(x, recon);
  return __dadd_rn(__dmul_rn(d, d), __dmul_rn(lam, rate));
}

// ---- rdoq: every value alone (rdoq.decide) ------------------------------------------------
// Candidates nearest, other neighbour, zero; the first of equal costs wins.
extern "C" __global__ void rdoq_decide(const double* __restrict__ x, const int* __restrict__ ctx, i64 n,
                                       const double* __restrict__ bits, const double* __restrict__ worst,
                                       i64 contexts, i64 size, i64 origin, double lam, i64 shared,
                                       i64* __restrict__ out) {
  const double *b, *w;
  tables(bits, worst, contexts * size, contexts, shared, &b, &w);
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const double v = x[i];
    const int c = ctx[i];
    const double* row = b + (i64)c * size;
    const double near = rint(v);
    const double other = near > v ? __dsub_rn(near, 1.0) : __dadd_rn(near, 1.0);
    double best = near, best_cost = cost(v, near, near, row, w[c], origin, size, lam);
    const double cand[2] = {other, 0.0};
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const double cc = cost(v, cand[k], cand[k], row, w[c], origin, size, lam);
      if (cc < best_cost) {
        best = cand[k];
        best_cost = cc;
      }
    }
    out[i] = (i64)best;
  }
}

// ---- dq: a Viterbi search per row (rdoq.dq_trellis) ----------------------------------------
// NEXT_STATE = ((0, 2), (2, 0), (1, 3), (3, 1)) [state][parity]. The two (state, parity) pairs
// that lead to state t, in order of state then parity (rdoq.py's preds), are
// (2 (t & 1) + i, i ^ (t >> 1)) for i = 0, 1: compile-time constants once the loops unroll.
__device__ __forceinline__ constexpr int pred_state(int t, int i) { return 2 * (t & 1) + i; }
__device__ __forceinline__ constexpr int pred_parity(int t, int i) { return i ^ (t >> 1); }

// For one quantizer Q and one value (magnitude a, sign): per parity p of the level, the best
// (cost, signed level) among the nearest pair of Q's reconstructions and zero (rdoq._dq_options).
template <int Q>
__device__ __forceinline__ void options(double a, double sign, const double* row, double worst, i64 origin, i64 size,
                                        double lam, double* best_cost, double* best_level) {
  double mag[3], recon[3];
  if (Q == 0) {  // recon 2m: the pair around a/2
    const double m = floor(__ddiv_rn(a, 2.0));
    mag[0] = m;
    recon[0] = __dmul_rn(2.0, m);
    mag[1] = __dadd_rn(m, 1.0);
    recon[1] = __dadd_rn(__dmul_rn(2.0, m), 2.0);
  } else {  // recon 2m - 1 (m > 0): the odd values around a
    const double m = floor(__ddiv_rn(__dadd_rn(a, 1.0), 2.0));
    const double r = __dsub_rn(__dmul_rn(2.0, m), 1.0);
    mag[0] = m;
    recon[0] = r < 0.0 ? 0.0 : r;  // np.maximum(r, 0): a NaN stays
    mag[1] = __dadd_rn(m, 1.0);
    recon[1] = __dadd_rn(__dmul_rn(2.0, m), 1.0);
  }
  mag[2] = 0.0;
  recon[2] = 0.0;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const double level = __dmul_rn(sign, mag[k]);
    const double c = cost(a, recon[k], level, row, worst, origin, size, lam);
    const int parity = (int)((i64)mag[k] & 1);
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const double cp = parity == p ? c : INF;
      if (k == 0 || cp < best_cost[p]) {
        best_cost[p] = cp;
        best_level[p] = level;
      }
    }
  }
}

// One thread per row; x, ctx and out are column-major ([col][row]) so a warp reads and writes
// consecutive words. STATEFUL: four rate tables, one per state (option set = state), else one
// per quantizer (option set = state >> 1, table 0). Forward pass: per column and next state
// t, the level of the winning predecessor (levels[col][t][row], int32 as rdoq.py's `kept`) and
// which predecessor won (bit t of choice[col][row]); then the walk back from the cheapest state.
template <bool STATEFUL>
__device__ void trellis(const double* __restrict__ x, const int* __restrict__ ctx, i64 rows, i64 cols,
                        const double* bits, const double* worst, i64 contexts, i64 size, i64 origin, double lam,
                        i64 shared, int* __restrict__ levels, unsigned char* __restrict__ choice,
                        i64* __restrict__ out) {
  constexpr int SETS = STATEFUL ? 4 : 2, STATES = STATEFUL ? 4 : 1;
  const double *b, *w;
  tables(bits, worst, contexts * STATES * size, contexts * STATES, shared, &b, &w);
  const i64 r = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  double cost_[4] = {0.0, INF, INF, INF};
  for (i64 j = 0; j < cols; ++j) {
    const double v = x[j * rows + r];
    const i64 c = ctx[j * rows + r];
    const double a = fabs(v), sign = v < 0 ? -1.0 : 1.0;
    double oc[SETS][2], ol[SETS][2];
#pragma unroll
    for (int o = 0; o < SETS; ++o) {
      const int k = STATEFUL ? o : 0;
      const double* row = b + (c * STATES + k) * size;
      if ((STATEFUL ? o >> 1 : o) == 0)
        options<0>(a, sign, row, w[c * STATES + k], origin, size, lam, oc[o], ol[o]);
      else
        options<1>(a, sign, row, w[c * STATES + k], origin, size, lam, oc[o], ol[o]);
    }
    double next[4];
    unsigned bitsel = 0;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int s0 = pred_state(t, 0), p0 = pred_parity(t, 0), s1 = pred_state(t, 1), p1 = pred_parity(t, 1);
      const int o0 = STATEFUL ? s0 : s0 >> 1, o1 = STATEFUL ? s1 : s1 >> 1;
      const double c0 = __dadd_rn(cost_[s0], oc[o0][p0]), c1 = __dadd_rn(cost_[s1], oc[o1][p1]);
      const bool second = c1 < c0;
      next[t] = second ? c1 : (isnan(c1) ? c1 : c0);  // np.minimum: a NaN wins
      levels[(j * 4 + t) * rows + r] = (int)(second ? ol[o1][p1] : ol[o0][p0]);
      bitsel |= (unsigned)second << t;
    }
    choice[j * rows + r] = (unsigned char)bitsel;
#pragma unroll
    for (int t = 0; t < 4; ++t) cost_[t] = next[t];
  }
  int state = 0;  // np.argmin: the first minimum, or the first NaN
  double least = cost_[0];
#pragma unroll
  for (int s = 1; s < 4; ++s)
    if (!isnan(least) && (cost_[s] < least || isnan(cost_[s]))) {
      state = s;
      least = cost_[s];
    }
  for (i64 j = cols - 1; j >= 0; --j) {
    const int second = (choice[j * rows + r] >> state) & 1;
    out[j * rows + r] = levels[(j * 4 + state) * rows + r];
    state = pred_state(state, second);
  }
}

#define ZC_TRELLIS(NAME, STATEFUL)                                                                           \
  extern "C" __global__ void NAME(const double* x, const int* ctx, i64 rows, i64 cols, const double* bits,     \
                                  const double* worst, i64 contexts, i64 size, i64 origin, double lam,         \
                                  i64 shared, int* levels, unsigned char* choice, i64* out) {                  \
    trellis<STATEFUL>(x, ctx, rows, cols, bits, worst, contexts, size, origin, lam, shared, levels, choice, out); \
  }
ZC_TRELLIS(dq_trellis_1, false)
ZC_TRELLIS(dq_trellis_4, true)
