// Quantized matrix-vector products y = W·x, W in a GGUF block format, x
// quantized to int8 blocks of 32 (quantize_q8a). One warp per output row,
// 4 rows per 128-thread block; each lane takes 32-value units of the row and
// multiplies them with __dp4a (4 int8 products summed per instruction).

// x (n floats, n a multiple of 32) to n/32 activation blocks: d = max|x|/127,
// q = round(x/d). One warp per block of 32, 8 per 256-thread block.
extern "C" __global__ void quantize_q8a(const float* x, int* out, int n) {
    int blk = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (blk * 32 >= n) return;
    float v = x[blk * 32 + lane];
    float amax = warp_max(fabsf(v));
    float d = amax / 127.0f;
    int q = d == 0.0f ? 0 : __float2int_rn(v / d);
    int* o = out + blk * QA_WORDS;
    if (lane == 0) o[0] = __float_as_int(d);
    ((signed char*)(o + 1))[lane] = (signed char)q;
}

// Q8_0: 34-byte blocks of 32, an f16 scale then 32 int8 quants.
extern "C" __global__ void gemv_q8_0(const u8* w, const int* a, float* y, int rows, int cols) {
    int row = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int nb = cols / 32;
    const u8* rw = w + (size_t)row * nb * 34;
    float sum = 0.0f;
    for (int u = lane; u < nb; u += 32) {
        const u8* b = rw + u * 34;
        const int* av = a + u * QA_WORDS;
        int dot = 0;
        for (int k = 0; k < 8; k++) dot = __dp4a((int)ld32(b + 2 + 4 * k), av[1 + k], dot);
        sum += h2f(ld16(b)) * __int_as_float(av[0]) * (float)dot;
    }
    sum = warp_sum(sum);
    if (lane == 0) y[row] = sum;
}

// The fifth bits of 4 Q5_0 quants (bits 0..3 of h) moved to bit 4 of each byte.
__device__ __forceinline__ u32 q5_spread(u32 h) {
    return ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
}

// Q5_0: 22-byte blocks of 32: f16 scale, 32 fifth bits, 16 bytes of nibbles
// (quant i in the low nibble of byte i, quant i+16 in the high); x = d·(q − 16).
extern "C" __global__ void gemv_q5_0(const u8* w, const int* a, float* y, int rows, int cols) {
    int row = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int nb = cols / 32;
    const u8* rw = w + (size_t)row * nb * 22;
    float sum = 0.0f;
    for (int u = lane; u < nb; u += 32) {
        const u8* b = rw + u * 22;
        const int* av = a + u * QA_WORDS;
        u32 qh = ld32(b + 2);
        int dot = 0, asum = 0;
        for (int k = 0; k < 4; k++) {
            u32 q = ld32(b + 6 + 4 * k);
            u32 lo = (q & 0x0F0F0F0Fu) | q5_spread((qh >> (4 * k)) & 0xFu);
            u32 hi = ((q >> 4) & 0x0F0F0F0Fu) | q5_spread((qh >> (16 + 4 * k)) & 0xFu);
            dot = __dp4a((int)lo, av[1 + k], dot);
            dot = __dp4a((int)hi, av[5 + k], dot);
        }
        for (int k = 0; k < 8; k++) asum = __dp4a(0x01010101, av[1 + k], asum);
        sum += h2f(ld16(b)) * __int_as_float(av[0]) * (float)(dot - 16 * asum);
    }
    sum = warp_sum(sum);
    if (lane == 0) y[row] = sum;
}

// Q4_K: 144-byte super-blocks of 256: f16 d, f16 dmin, 12 bytes of 6-bit
// scales and mins for 8 sub-blocks of 32, 128 bytes of nibbles (sub-block 2g
// in the low nibbles of bytes 32g..32g+32, sub-block 2g+1 in the high ones);
// x = d·sc·q − dmin·m. Rows are 144·cols/256 bytes, so words here are aligned.
extern "C" __global__ void gemv_q4_k(const u8* w, const int* a, float* y, int rows, int cols) {
    int row = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int nsb = cols / 256;
    const u8* rw = w + (size_t)row * nsb * 144;
    float sum = 0.0f;
    for (int u = lane; u < nsb * 8; u += 32) {
        int j = u & 7;
        const u8* b = rw + (u >> 3) * 144;
        const u8* s = b + 4;
        int sc, m;
        if (j < 4) {
            sc = s[j] & 63;
            m = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
            m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        const u32* qs = (const u32*)(b + 16 + 32 * (j >> 1));
        int shift = (j & 1) * 4;
        const int* av = a + u * QA_WORDS;
        int dot = 0, asum = 0;
        for (int k = 0; k < 8; k++) {
            dot = __dp4a((int)((qs[k] >> shift) & 0x0F0F0F0Fu), av[1 + k], dot);
            asum = __dp4a(0x01010101, av[1 + k], asum);
        }
        float da = __int_as_float(av[0]);
        sum += da * (h2f(ld16(b)) * (float)(sc * dot) - h2f(ld16(b + 2)) * (float)(m * asum));
    }
    sum = warp_sum(sum);
    if (lane == 0) y[row] = sum;
}

// Q6_K: 210-byte super-blocks of 256: 128 bytes of low nibbles (ql), 64 bytes
// of high 2-bit pairs (qh), 16 int8 scales (one per 16 values), f16 d at 208;
// x = d·sc·(q − 32). Unit j (0..8) of a super-block is values 32j..32j+32:
// half n = j/4, quarter t = j%4.
extern "C" __global__ void gemv_q6_k(const u8* w, const int* a, float* y, int rows, int cols) {
    int row = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int nsb = cols / 256;
    const u8* rw = w + (size_t)row * nsb * 210;
    float sum = 0.0f;
    for (int u = lane; u < nsb * 8; u += 32) {
        int j = u & 7, n = j >> 2, t = j & 3;
        const u8* b = rw + (u >> 3) * 210;
        const u8* ql = b + 64 * n + 32 * (t & 1);
        const u8* qh = b + 128 + 32 * n;
        int shift_l = (t >> 1) * 4, shift_h = 2 * t;
        const int* av = a + u * QA_WORDS;
        int dot0 = 0, dot1 = 0, s0 = 0, s1 = 0;
        for (int k = 0; k < 8; k++) {
            u32 lq = (ld32(ql + 4 * k) >> shift_l) & 0x0F0F0F0Fu;
            u32 hq = ((ld32(qh + 4 * k) >> shift_h) & 0x03030303u) << 4;
            int q = (int)(lq | hq);
            if (k < 4) {
                dot0 = __dp4a(q, av[1 + k], dot0);
                s0 = __dp4a(0x01010101, av[1 + k], s0);
            } else {
                dot1 = __dp4a(q, av[1 + k], dot1);
                s1 = __dp4a(0x01010101, av[1 + k], s1);
            }
        }
        int sc0 = (signed char)b[192 + 8 * n + 2 * t], sc1 = (signed char)b[192 + 8 * n + 2 * t + 1];
        float d = h2f(ld16(b + 208)) * __int_as_float(av[0]);
        sum += d * (float)(sc0 * (dot0 - 32 * s0) + sc1 * (dot1 - 32 * s1));
    }
    sum = warp_sum(sum);
    if (lane == 0) y[row] = sum;
}
