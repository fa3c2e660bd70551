// Decode attention over an f16 KV cache laid out [position][kv_dim]; the
// current position is read from the device buffer `pos`, so one captured
// graph serves every step.

// Stores this step's k and v (kv_dim floats each) as f16 at position *pos.
extern "C" __global__ void kv_store_f16(const float* k, const float* v, u16* k_cache, u16* v_cache,
                                        const int* pos, int kv_dim) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < kv_dim) {
        size_t at = (size_t)(*pos) * kv_dim + i;
        k_cache[at] = f2h(k[i]);
        v_cache[at] = f2h(v[i]);
    }
}

// One 128-thread block per query head: scores q·k·scale over positions
// 0..=*pos into `scores` (n_head × max_ctx floats of scratch), a softmax, then
// out = Σ softmax·v. Query head h reads KV head h / (n_head / n_kv_head).
// head_dim is at most 256.
extern "C" __global__ void attention_f16(const float* q, const u16* k_cache, const u16* v_cache, float* scores,
                                         float* out, const int* pos, int n_head, int n_kv_head, int head_dim,
                                         int max_ctx, float scale) {
    __shared__ float qs[256];
    __shared__ float scratch[32];
    int h = blockIdx.x, kvh = h / (n_head / n_kv_head), n = *pos + 1;
    int kv_dim = n_kv_head * head_dim;
    const u16* kc = k_cache + (size_t)kvh * head_dim;
    const u16* vc = v_cache + (size_t)kvh * head_dim;
    float* sc = scores + (size_t)h * max_ctx;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = q[(size_t)h * head_dim + d];
    __syncthreads();
    float mx = NEG_INF;
    for (int p = threadIdx.x; p < n; p += blockDim.x) {
        const u16* kp = kc + (size_t)p * kv_dim;
        float s = 0.0f;
        for (int d = 0; d < head_dim; d++) s += qs[d] * h2f(kp[d]);
        s *= scale;
        sc[p] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_reduce(mx, scratch, true);
    float total = 0.0f;
    for (int p = threadIdx.x; p < n; p += blockDim.x) {
        float e = expf(sc[p] - mx);
        sc[p] = e;
        total += e;
    }
    total = block_reduce(total, scratch, false);
    __syncthreads();
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int p = 0; p < n; p++) acc += sc[p] * h2f(vc[(size_t)p * kv_dim + d]);
        out[(size_t)h * head_dim + d] = acc / total;
    }
}
