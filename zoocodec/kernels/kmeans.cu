// Batched scalar k-means kernels (loaded by kmeans.py with cupy.RawModule).
//
// Same arithmetic as the NumPy path, so the symbols are bit-identical:
//  - assignment = number of float32 midpoints <= x (midpoints of sorted centroids);
//  - cluster sums in fixed point, rint(x * scale) as int64 (scale per problem): exact in any order;
//  - centroid = float(((double)sum / (double)count) / scale); an empty cluster copies
//    the nearest non-empty one below it (else above).
// The order in which blocks add their sums differs from run to run; the integer sums do not.

#define FULL 0xffffffffu
#define MAXK_SMALL 8

// Number of the nm sorted midpoints that are <= v; top = largest power of two <= nm.
__device__ __forceinline__ int upper_count(const float* mids, int nm, float v, int top) {
    int idx = 0;
    for (int step = top; step > 0; step >>= 1) {
        int j = idx + step;
        if (j <= nm && mids[j - 1] <= v) idx = j;
    }
    return idx;
}

__device__ __forceinline__ int visit(float v, int nm, const float* smid, int top, double scale, int per_lane,
                                     long long* ssum, int* scnt, int slot, int copies) {
    int a = upper_count(smid, nm, v, top);
    long long q = __double2ll_rn((double)v * scale);
    int at = a * copies + slot;
    if (per_lane) {
        ssum[at] += q;
        scnt[at] += 1;
    } else {
        atomicAdd((unsigned long long*)&ssum[at], (unsigned long long)q);
        atomicAdd(&scnt[at], 1);
    }
    return a;
}

#define DEPTH 4  // float4 loads each thread issues before using the first

__device__ __forceinline__ void visit4(float4 v, long long i, int nm, const float* smid, int top, double scale,
                                       int per_lane, long long* ssum, int* scnt, int slot, int copies,
                                       unsigned char* ob) {
    int a0 = visit(v.x, nm, smid, top, scale, per_lane, ssum, scnt, slot, copies);
    int a1 = visit(v.y, nm, smid, top, scale, per_lane, ssum, scnt, slot, copies);
    int a2 = visit(v.z, nm, smid, top, scale, per_lane, ssum, scnt, slot, copies);
    int a3 = visit(v.w, nm, smid, top, scale, per_lane, ssum, scnt, slot, copies);
    if (ob) ((uchar4*)ob)[i] = make_uchar4(a0, a1, a2, a3);
}

// After a block has added its sums: the last block of problem b to finish computes the
// problem's new centroids (an empty cluster copies the nearest non-empty one below, else
// above) and midpoints, and clears the sums. `smem` is the block's shared memory, free again.
__device__ void finish(int b, int K, double scale, long long* sums, int* counts, float* mids, float* c, int* done,
                       int* changed, unsigned char* smem) {
    __shared__ int is_last;
    const int T = blockDim.x, tid = threadIdx.x, nm = K - 1;
    long long* sb = sums + (long long)b * K;
    int* nb = counts + (long long)b * K;
    __threadfence();
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(&done[b], 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    float* smean = (float*)smem;  // the private copies are done with: reuse their memory
    int* sne = (int*)(smean + K);
    for (int j = tid; j < K; j += T) {
        const long long s = __ldcg(sb + j);
        const int m = __ldcg(nb + j);
        sne[j] = m > 0;
        smean[j] = m > 0 ? (float)(((double)s / (double)m) / scale) : 0.0f;
        sb[j] = 0;
        nb[j] = 0;
    }
    __syncthreads();
    float* cb = c + (long long)b * K;
    int moved = 0;
    for (int j = tid; j < K; j += T) {  // empty: nearest non-empty below, else above
        int src = j;
        while (src >= 0 && !sne[src]) --src;
        if (src < 0) {
            src = j + 1;
            while (src < K && !sne[src]) ++src;
        }
        if (src < K) {
            moved |= cb[j] != smean[src];
            cb[j] = smean[src];
        }
    }
    if (moved) atomicOr(changed, 1);
    __syncthreads();
    for (int j = tid; j < nm; j += T) mids[(long long)b * nm + j] = (cb[j] + cb[j + 1]) * 0.5f;
    if (tid == 0) done[b] = 0;
}

// One fused Lloyd iteration: every value is read once, assigned, and added to its
// cluster's sum and count; the last block of each problem to finish then computes the
// problem's new centroids and midpoints and clears its sums (so an iteration is one
// launch). Grid (gx, B): blockIdx.y is the problem. Shared memory holds private
// accumulators, one copy per lane (per_lane, small k: no atomics) or per warp, then one
// global atomic per cluster and block. idx_out (optional) receives the indices; with
// c == nullptr the pass only assigns.
extern "C" __global__ void lloyd_pass(const float* __restrict__ x, long long n, int K, float* mids, int top,
                                      const double* __restrict__ scales, int per_lane, long long* sums, int* counts,
                                      unsigned char* __restrict__ idx_out, float* c, int* done, int* changed) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int T = blockDim.x, tid = threadIdx.x, b = blockIdx.y;
    const int copies = per_lane ? T : (T >> 5);
    const int slot = per_lane ? tid : (tid >> 5);
    long long* ssum = (long long*)smem;
    int* scnt = (int*)(ssum + copies * K);
    float* smid = (float*)(scnt + copies * K);
    const int nm = K - 1;
    for (int i = tid; i < copies * K; i += T) {
        ssum[i] = 0;
        scnt[i] = 0;
    }
    for (int i = tid; i < nm; i += T) smid[i] = mids[(long long)b * nm + i];
    __syncthreads();

    const double scale = scales[b];
    const float* xb = x + (long long)b * n;
    unsigned char* ob = idx_out ? idx_out + (long long)b * n : nullptr;
    const long long start = (long long)blockIdx.x * T + tid, stride = (long long)gridDim.x * T;
    if ((n & 3) == 0) {  // 16-byte loads (rows start 16-byte aligned when n % 4 == 0)
        const float4* x4 = (const float4*)xb;
        const long long n4 = n >> 2;
        long long i = start;
        for (; i + (DEPTH - 1) * stride < n4; i += DEPTH * stride) {  // DEPTH loads in flight first
            float4 v[DEPTH];
#pragma unroll
            for (int u = 0; u < DEPTH; ++u) v[u] = __ldcs(x4 + i + u * stride);
#pragma unroll
            for (int u = 0; u < DEPTH; ++u) visit4(v[u], i + u * stride, nm, smid, top, scale, per_lane, ssum, scnt, slot, copies, ob);
        }
        for (; i < n4; i += stride) visit4(__ldcs(x4 + i), i, nm, smid, top, scale, per_lane, ssum, scnt, slot, copies, ob);
    } else {
        for (long long i = start; i < n; i += stride) {
            int a = visit(xb[i], nm, smid, top, scale, per_lane, ssum, scnt, slot, copies);
            if (ob) ob[i] = (unsigned char)a;
        }
    }
    __syncthreads();

    long long* sb = sums + (long long)b * K;
    int* nb = counts + (long long)b * K;
    const int warp = tid >> 5, lane = tid & 31, nwarps = T >> 5;
    for (int j = warp; j < K; j += nwarps) {  // one warp per cluster: sum the copies, one atomic
        long long s = 0;
        int m = 0;
        for (int i = lane; i < copies; i += 32) {
            s += ssum[j * copies + i];
            m += scnt[j * copies + i];
        }
        for (int o = 16; o > 0; o >>= 1) {
            s += __shfl_down_sync(FULL, s, o);
            m += __shfl_down_sync(FULL, m, o);
        }
        if (lane == 0 && m) {
            atomicAdd((unsigned long long*)&sb[j], (unsigned long long)s);
            atomicAdd(&nb[j], m);
        }
    }
    if (c == nullptr) return;
    finish(b, K, scale, sums, counts, mids, c, done, changed, smem);
}

// ---- k <= 16 -------------------------------------------------------------------------
// The count of the 15 sorted midpoints (padded with +inf) that are <= v: a binary search whose
// probes are picked by selects from registers (no shared-memory loads, no local memory).
__device__ __forceinline__ int search16(const float* m, float v) {
    int a = m[7] <= v ? 8 : 0;
    float p = a ? m[11] : m[3];
    a += p <= v ? 4 : 0;
    p = (a & 8) ? ((a & 4) ? m[13] : m[9]) : ((a & 4) ? m[5] : m[1]);
    a += p <= v ? 2 : 0;
    p = (a & 8) ? ((a & 4) ? ((a & 2) ? m[14] : m[12]) : ((a & 2) ? m[10] : m[8]))
                : ((a & 4) ? ((a & 2) ? m[6] : m[4]) : ((a & 2) ? m[2] : m[0]));
    return a + (p <= v ? 1 : 0);
}

__device__ __forceinline__ void visit16(float v, const float* m, double scale, float fs, int fscale, long long* word,
                                        int tid, int T, long long one) {
    const int a = search16(m, v);
    const long long q = fscale ? __float2ll_rn(v * fs) : __double2ll_rn((double)v * scale);
    word[a * T + tid] += one + q;
}

// lloyd_pass for k <= 16 (the slowest case per byte of lloyd_pass, whose per-lane sums cost
// four shared-memory accesses per value plus four for the search): the midpoints sit in
// registers (search16), and each lane's count and fixed-point sum of a cluster share one
// 64-bit shared word, count << pack plus the signed sum below it, so a value costs one
// read-modify-write. The host picks `pack` so that neither part can overflow (kmeans.py:
// pack16), else it launches lloyd_pass. fscale: every scale is a power of two >= 1, so the
// float32 product v * scale is exact and rounds to the integer the double one gives.
// The same sums and counts as lloyd_pass, so the same centroids.
extern "C" __global__ void lloyd_pass16(const float* __restrict__ x, long long n, int K, float* mids,
                                        const double* __restrict__ scales, int pack, int fscale, long long* sums,
                                        int* counts, float* c, int* done, int* changed) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int T = blockDim.x, tid = threadIdx.x, b = blockIdx.y, nm = K - 1;
    long long* word = (long long*)smem;  // [cluster][lane]
    for (int i = tid; i < K * T; i += T) word[i] = 0;
    float m[15];
#pragma unroll
    for (int j = 0; j < 15; ++j) m[j] = j < nm ? mids[(long long)b * nm + j] : __int_as_float(0x7f800000);
    __syncthreads();

    const double scale = scales[b];
    const float fs = (float)scale;
    const long long one = 1LL << pack;
    const float* xb = x + (long long)b * n;
    const long long start = (long long)blockIdx.x * T + tid, stride = (long long)gridDim.x * T;
    if ((n & 3) == 0) {
        const float4* x4 = (const float4*)xb;
        const long long n4 = n >> 2;
        long long i = start;
        for (; i + (DEPTH - 1) * stride < n4; i += DEPTH * stride) {
            float4 v[DEPTH];
#pragma unroll
            for (int u = 0; u < DEPTH; ++u) v[u] = __ldcs(x4 + i + u * stride);
#pragma unroll
            for (int u = 0; u < DEPTH; ++u) {
                visit16(v[u].x, m, scale, fs, fscale, word, tid, T, one);
                visit16(v[u].y, m, scale, fs, fscale, word, tid, T, one);
                visit16(v[u].z, m, scale, fs, fscale, word, tid, T, one);
                visit16(v[u].w, m, scale, fs, fscale, word, tid, T, one);
            }
        }
        for (; i < n4; i += stride) {
            const float4 v = __ldcs(x4 + i);
            visit16(v.x, m, scale, fs, fscale, word, tid, T, one);
            visit16(v.y, m, scale, fs, fscale, word, tid, T, one);
            visit16(v.z, m, scale, fs, fscale, word, tid, T, one);
            visit16(v.w, m, scale, fs, fscale, word, tid, T, one);
        }
    } else {
        for (long long i = start; i < n; i += stride) visit16(xb[i], m, scale, fs, fscale, word, tid, T, one);
    }
    __syncthreads();

    long long* sb = sums + (long long)b * K;
    int* nb = counts + (long long)b * K;
    const int warp = tid >> 5, lane = tid & 31, nwarps = T >> 5;
    for (int j = warp; j < K; j += nwarps) {  // one warp per cluster: unpack the lanes' words, one atomic
        long long s = 0;
        int cnt = 0;
        for (int i = lane; i < T; i += 32) {
            const long long w = word[j * T + i];
            const long long k = (w + (one >> 1)) >> pack;
            s += w - (k << pack);
            cnt += (int)k;
        }
        for (int o = 16; o > 0; o >>= 1) {
            s += __shfl_down_sync(FULL, s, o);
            cnt += __shfl_down_sync(FULL, cnt, o);
        }
        if (lane == 0 && cnt) {
            atomicAdd((unsigned long long*)&sb[j], (unsigned long long)s);
            atomicAdd(&nb[j], cnt);
        }
    }
    finish(b, K, scale, sums, counts, mids, c, done, changed, smem);
}

// Many small problems (n <= 4096, K <= 8, e.g. LNQ units): one warp runs every Lloyd
// iteration of one problem; sums live in registers and are combined with butterfly
// shuffles, so every lane holds the same totals. iters = 0 only assigns.
extern "C" __global__ void lloyd_small(const float* __restrict__ x, int B, int n, int K, float* c, int iters,
                                       const double* __restrict__ scales, unsigned char* __restrict__ idx_out) {
    const int p = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (p >= B) return;  // whole warps leave together
    const double scale = scales[p];
    const float* xb = x + (long long)p * n;
    float* cb = c + (long long)p * K;
    float cc[MAXK_SMALL], mid[MAXK_SMALL];
#pragma unroll
    for (int k = 0; k < MAXK_SMALL; ++k) cc[k] = k < K ? cb[k] : 0.0f;

    for (int it = 0; it < iters; ++it) {
#pragma unroll
        for (int k = 0; k + 1 < MAXK_SMALL; ++k) mid[k] = (cc[k] + cc[k + 1]) * 0.5f;
        long long s[MAXK_SMALL];
        int m[MAXK_SMALL];
#pragma unroll
        for (int k = 0; k < MAXK_SMALL; ++k) {
            s[k] = 0;
            m[k] = 0;
        }
        for (int i = lane; i < n; i += 32) {
            const float v = xb[i];
            int a = 0;
#pragma unroll
            for (int k = 0; k + 1 < MAXK_SMALL; ++k) a += (k + 1 < K) && (mid[k] <= v);
            const long long q = __double2ll_rn((double)v * scale);
#pragma unroll
            for (int k = 0; k < MAXK_SMALL; ++k)
                if (a == k) {
                    s[k] += q;
                    m[k] += 1;
                }
        }
#pragma unroll
        for (int k = 0; k < MAXK_SMALL; ++k)
            for (int o = 16; o > 0; o >>= 1) {
                s[k] += __shfl_xor_sync(FULL, s[k], o);
                m[k] += __shfl_xor_sync(FULL, m[k], o);
            }
        float first = 0.0f;
        bool found = false;
#pragma unroll
        for (int k = 0; k < MAXK_SMALL; ++k)
            if (k < K && !found && m[k] > 0) {
                first = (float)(((double)s[k] / (double)m[k]) / scale);
                found = true;
            }
        if (!found) break;
        float last = first;
        bool moved = false;
#pragma unroll
        for (int k = 0; k < MAXK_SMALL; ++k)
            if (k < K) {
                if (m[k] > 0) last = (float)(((double)s[k] / (double)m[k]) / scale);
                moved |= cc[k] != last;
                cc[k] = last;
            }
        if (!moved) break;
    }
    if (lane < K) {
#pragma unroll
        for (int k = 0; k < MAXK_SMALL; ++k)
            if (k == lane) cb[k] = cc[k];
    }
    if (idx_out) {
#pragma unroll
        for (int k = 0; k + 1 < MAXK_SMALL; ++k) mid[k] = (cc[k] + cc[k + 1]) * 0.5f;
        for (int i = lane; i < n; i += 32) {
            const float v = xb[i];
            int a = 0;
#pragma unroll
            for (int k = 0; k + 1 < MAXK_SMALL; ++k) a += (k + 1 < K) && (mid[k] <= v);
            idx_out[(long long)p * n + i] = (unsigned char)a;
        }
    }
}
