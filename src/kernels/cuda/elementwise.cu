// The small kernels of a decode step: RMSNorm, NEOX RoPE, SwiGLU, the
// residual add and the argmax of the logits.

// y = x / sqrt(mean(x²) + eps) · w, one row of n per 256-thread block.
extern "C" __global__ void rmsnorm(const float* x, const float* w, float* y, int n, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * n;
    float* yr = y + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_reduce(ss, scratch, false);
    float inv = rsqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * inv * w[i];
}

// NEOX rotary embedding in place: in each head (one per block), element i and
// i + head_dim/2 rotate by pos·base^(−2i/head_dim), the position read from the
// device buffer `pos`, so a captured graph replays for every position.
extern "C" __global__ void rope_neox(float* x, int head_dim, const int* pos, float base) {
    int half = head_dim / 2;
    float* h = x + (size_t)blockIdx.x * head_dim;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = (float)(*pos) * powf(base, -2.0f * (float)i / (float)head_dim);
        float c, s;
        sincosf(theta, &s, &c);
        float a = h[i], b = h[i + half];
        h[i] = a * c - b * s;
        h[i + half] = a * s + b * c;
    }
}

// out = silu(gate) · up.
extern "C" __global__ void swiglu(const float* gate, const float* up, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// The residual add: x += y.
extern "C" __global__ void add(float* x, const float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// The index of the largest of n logits (the lowest index among equals), one
// 1024-thread block.
extern "C" __global__ void argmax(const float* x, int n, int* out) {
    __shared__ float best_v[1024];
    __shared__ int best_i[1024];
    float v = NEG_INF;
    int idx = n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        if (x[i] > v) {
            v = x[i];
            idx = i;
        }
    }
    best_v[threadIdx.x] = v;
    best_i[threadIdx.x] = idx;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float ov = best_v[threadIdx.x + s];
            int oi = best_i[threadIdx.x + s];
            if (ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x])) {
                best_v[threadIdx.x] = ov;
                best_i[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = best_i[0] < n ? best_i[0] : 0;
}
