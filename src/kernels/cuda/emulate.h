// A CPU emulation of the CUDA features the kernels use, for the unit tests:
// the kernels compile as C++20 with this header first, each block's threads
// running as host threads at once (blocks one after another, the same threads
// for each), __syncthreads a barrier of the block, __shfl_xor_sync an exchange
// through a barrier of the warp. It checks the kernels' arithmetic and indexing on the CPU; it says
// nothing of their speed or of how a device schedules them.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

std::unique_ptr<std::barrier<>> block_barrier;
std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
float shuffle_slots[1024];

inline void __syncthreads() { block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    unsigned t = threadIdx.x, w = t / 32;
    shuffle_slots[t] = v;
    warp_barriers[w]->arrive_and_wait();
    float r = shuffle_slots[(t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask)];
    warp_barriers[w]->arrive_and_wait();
    return r;
}

inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __int_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline int __float2int_rn(float f) { return (int)std::nearbyint(f); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float half_to_float(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
inline unsigned short float_to_half(float f) { _Float16 x = (_Float16)f; unsigned short h; std::memcpy(&h, &x, 2); return h; }

// Runs `kernel` on `grid` blocks of `block` threads: `block` host threads,
// each taking its place in every block in turn, a barrier between blocks.
inline void launch(unsigned grid, unsigned block, const std::function<void()>& kernel) {
    gridDim.x = grid;
    blockDim.x = block;
    block_barrier = std::make_unique<std::barrier<>>(block);
    warp_barriers.clear();
    for (unsigned w = 0; w < (block + 31) / 32; w++)
        warp_barriers.push_back(std::make_unique<std::barrier<>>(std::min(32u, block - 32 * w)));
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; t++)
        threads.emplace_back([=, &kernel] {
            threadIdx.x = t;
            for (unsigned b = 0; b < grid; b++) {
                blockIdx.x = b;
                kernel();
                block_barrier->arrive_and_wait();
            }
        });
    for (auto& t : threads) t.join();
}
