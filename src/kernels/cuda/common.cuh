// Shared helpers, prepended to every unit (NVRTC compiles without the toolkit's
// headers, so f16 conversion is written in PTX here).

// −∞ (no math.h under NVRTC).
#define NEG_INF __int_as_float(0xff800000)

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

// f16 bits to f32.
__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// f32 to f16 bits, rounded to nearest even.
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Little-endian u16 at any byte address.
__device__ __forceinline__ u16 ld16(const u8* p) {
    return (u16)(p[0] | (p[1] << 8));
}

// Little-endian u32 at any byte address (GGUF blocks of 22, 34 and 210 bytes
// leave most words unaligned).
__device__ __forceinline__ u32 ld32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The sum (or max) over the block of every thread's `v`, returned to all
// threads; `scratch` holds 32 floats. Safe to call repeatedly.
__device__ float block_reduce(float v, float* scratch, bool is_max) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : (is_max ? NEG_INF : 0.0f);
    r = is_max ? warp_max(r) : warp_sum(r);
    return r;
}

// Activations quantized for the GEMVs: 32 values as one f32 scale and 32 int8
// quants, 9 words (the scale's bits, then 8 words of 4 quants).
#define QA_WORDS 9
