// The diffusion condition cat[y, A, B] with the per-sample slot swap, and its backward (the
// same swap of the two slot halves). Pure copies, so one kernel per element size serves every
// dtype: u16 (bf16, f16), u32 (f32), u64 (f64).
//
//   swap_cat_uN(y, a, b, swap, out, N, ny, ns): out[i] = [y[i] | A | B], (A, B) = swap[i] ? (b, a) : (a, b)
//   swap_halves_uN(x, swap, out, N, half): per sample, the two halves exchanged where swap[i]
#include <stdint.h>

template <typename T>
__device__ void swap_cat(const T* y, const T* a, const T* b, const uint8_t* swap, T* out, long n,
                         long ny, long ns) {
    const long per = ny + 2 * ns;
    const long total = n * per;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long)blockDim.x * gridDim.x) {
        const long s = i / per;
        long r = i - s * per;
        if (r < ny) {
            out[i] = y[s * ny + r];
        } else {
            r -= ny;
            const bool second = r >= ns;
            const long k = second ? r - ns : r;
            const bool from_b = second != (swap[s] != 0);
            out[i] = from_b ? b[s * ns + k] : a[s * ns + k];
        }
    }
}

template <typename T>
__device__ void swap_halves(const T* x, const uint8_t* swap, T* out, long n, long half) {
    const long per = 2 * half;
    const long total = n * per;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long)blockDim.x * gridDim.x) {
        const long s = i / per;
        long r = i - s * per;
        if (swap[s]) r = r < half ? r + half : r - half;
        out[i] = x[s * per + r];
    }
}

#define SWAP(SUFFIX, T)                                                                        \
    extern "C" __global__ void swap_cat_##SUFFIX(const T* y, const T* a, const T* b,           \
                                                 const uint8_t* swap, T* out, long n, long ny, \
                                                 long ns) {                                    \
        swap_cat<T>(y, a, b, swap, out, n, ny, ns);                                            \
    }                                                                                          \
    extern "C" __global__ void swap_halves_##SUFFIX(const T* x, const uint8_t* swap, T* out,   \
                                                    long n, long half) {                       \
        swap_halves<T>(x, swap, out, n, half);                                                 \
    }

SWAP(u16, uint16_t)
SWAP(u32, uint32_t)
SWAP(u64, uint64_t)
