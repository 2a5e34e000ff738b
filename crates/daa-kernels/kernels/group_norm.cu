// GroupNorm over (B, C, S) rows, S = the product of the spatial dims, one block per
// (sample, group). Statistics and every sum are accumulated in float (double for f64 data),
// whatever the storage type: bf16 activations get f32 statistics.
//
//   gn_fwd_T(x, gamma, beta, y, C, G, S, eps)
//   gn_bwd_T(x, gamma, dy, out, C, G, S, eps, B): out = [dx (B*C*S) | dgamma (B*C) | dbeta (B*C)],
//       dgamma and dbeta per sample; the caller sums them over the batch.
#include <cuda_bf16.h>
#include <stdint.h>

#define BLOCK 256

__device__ __forceinline__ float load(const float* p, size_t i) { return p[i]; }
__device__ __forceinline__ double load(const double* p, size_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float* p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(double* p, size_t i, double v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, size_t i, float v) { p[i] = __float2bfloat16(v); }

// Sum over the block; every thread gets the result. `shm` holds BLOCK / 32 partial sums.
template <typename A>
__device__ A block_sum(A v, A* shm) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // the previous call's readers are done with shm
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    if (warp == 0) {
        A r = lane < BLOCK / 32 ? shm[lane] : A(0);
        for (int o = 16; o > 0; o >>= 1) r += __shfl_down_sync(0xffffffffu, r, o);
        if (lane == 0) shm[0] = r;
    }
    __syncthreads();
    return shm[0];
}

// Mean and reciprocal standard deviation of the n values at x (two passes: exact for large means).
template <typename T, typename A>
__device__ void moments(const T* x, long n, A eps, A* shm, A* mean, A* rstd) {
    A s = 0;
    for (long i = threadIdx.x; i < n; i += BLOCK) s += load(x, i);
    const A m = block_sum(s, shm) / (A)n;
    A q = 0;
    for (long i = threadIdx.x; i < n; i += BLOCK) {
        const A d = load(x, i) - m;
        q += d * d;
    }
    const A var = block_sum(q, shm) / (A)n;
    *mean = m;
    *rstd = A(1) / sqrt(var + eps);
}

template <typename T, typename A>
__device__ void gn_fwd(const T* x, const T* gamma, const T* beta, T* y, int C, int G, long S, A eps) {
    __shared__ A shm[BLOCK / 32];
    const int g = blockIdx.x % G, cg = C / G;
    const long n = (long)cg * S;
    const size_t base = (size_t)blockIdx.x * n;
    A mean, rstd;
    moments(x + base, n, eps, shm, &mean, &rstd);
    for (long i = threadIdx.x; i < n; i += BLOCK) {
        const int c = g * cg + (int)(i / S);
        store(y, base + i, (load(x, base + i) - mean) * rstd * load(gamma, c) + load(beta, c));
    }
}

template <typename T, typename A>
__device__ void gn_bwd(const T* x, const T* gamma, const T* dy, T* out, int C, int G, long S, A eps, int B) {
    __shared__ A shm[BLOCK / 32];
    const int b = blockIdx.x / G, g = blockIdx.x % G, cg = C / G;
    const long n = (long)cg * S;
    const size_t base = (size_t)blockIdx.x * n;
    T* dx = out;
    T* dgamma = out + (size_t)B * C * S;
    T* dbeta = dgamma + (size_t)B * C;
    A mean, rstd;
    moments(x + base, n, eps, shm, &mean, &rstd);
    // Per channel: sum(dy) and sum(dy * xhat); m1, m2 are their gamma-weighted means.
    A m1 = 0, m2 = 0;
    for (int cc = 0; cc < cg; ++cc) {
        const int c = g * cg + cc;
        const size_t cb = base + (size_t)cc * S;
        A sdy = 0, sdx = 0;
        for (long s = threadIdx.x; s < S; s += BLOCK) {
            const A d = load(dy, cb + s);
            sdy += d;
            sdx += d * (load(x, cb + s) - mean) * rstd;
        }
        sdy = block_sum(sdy, shm);
        sdx = block_sum(sdx, shm);
        if (threadIdx.x == 0) {
            store(dgamma, (size_t)b * C + c, sdx);
            store(dbeta, (size_t)b * C + c, sdy);
        }
        const A ga = load(gamma, c);
        m1 += ga * sdy;
        m2 += ga * sdx;
    }
    m1 /= (A)n;
    m2 /= (A)n;
    for (long i = threadIdx.x; i < n; i += BLOCK) {
        const int c = g * cg + (int)(i / S);
        const A xhat = (load(x, base + i) - mean) * rstd;
        store(dx, base + i, rstd * (load(dy, base + i) * load(gamma, c) - m1 - xhat * m2));
    }
}

#define GN(SUFFIX, T, A)                                                                        \
    extern "C" __global__ void __launch_bounds__(BLOCK) gn_fwd_##SUFFIX(                        \
        const T* x, const T* gamma, const T* beta, T* y, int C, int G, long S, double eps) {    \
        gn_fwd<T, A>(x, gamma, beta, y, C, G, S, (A)eps);                                       \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(BLOCK) gn_bwd_##SUFFIX(                        \
        const T* x, const T* gamma, const T* dy, T* out, int C, int G, long S, double eps,      \
        int B) {                                                                                \
        gn_bwd<T, A>(x, gamma, dy, out, C, G, S, (A)eps, B);                                    \
    }

GN(f32, float, float)
GN(f64, double, double)
GN(bf16, __nv_bfloat16, float)
