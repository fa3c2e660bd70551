// A CPU emulation of the CUDA features the kernels use, for the unit tests:
// the kernels compile as C++20 with this header first, each block's threads
// running as fibers of the launching thread (blocks one after another),
// __syncthreads a barrier of the block, __shfl_xor_sync an exchange through a
// barrier of the warp. It checks the kernels' arithmetic, indexing and
// barriers on the CPU; it says nothing of their speed or of how a device
// schedules them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <csetjmp>
#include <ucontext.h>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

// Each emulated thread is a fiber (its own stack, entered once by setcontext,
// then switched to and from the launching thread by _setjmp/_longjmp, which
// make no system call, and kept for every later block and launch); a fiber waiting at a barrier resumes once
// every live thread of its block (__syncthreads) or warp (a shuffle) waits there.
enum class State { Ready, AtBlock, AtWarp, Done };
struct Fiber {
    ucontext_t start;  // where the fiber begins (entered once, by setcontext)
    jmp_buf at;        // where it waits (switched to without a system call)
    bool started = false;
    std::vector<char> stack;
    State state = State::Ready;
};
std::vector<Fiber> fibers;
jmp_buf scheduler;
unsigned current = 0;
const std::function<void()>* running_kernel = nullptr;
float shuffle_slots[1024];

inline void wait(State at) {
    fibers[current].state = at;
    if (!_setjmp(fibers[current].at)) _longjmp(scheduler, 1);
}

inline void __syncthreads() { wait(State::AtBlock); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    unsigned t = threadIdx.x;
    shuffle_slots[t] = v;
    wait(State::AtWarp);
    float r = shuffle_slots[(t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask)];
    wait(State::AtWarp);
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

// A fiber's life: run the kernel as thread `current` of the block, wait as
// done, and run it again for the next block (or launch) when resumed.
inline void fiber_main() {
    for (;;) {
        (*running_kernel)();
        wait(State::Done);
    }
}

// Runs one block: every fiber until it waits or ends, then releases the
// barriers every live fiber (of the block, or of a warp) has reached.
inline void run_block(unsigned block) {
    for (unsigned t = 0; t < block; t++) {
        Fiber& f = fibers[t];
        f.state = State::Ready;
        if (f.started) continue;
        getcontext(&f.start);
        f.start.uc_stack.ss_sp = f.stack.data();
        f.start.uc_stack.ss_size = f.stack.size();
        f.start.uc_link = nullptr;
        makecontext(&f.start, fiber_main, 0);
    }
    for (;;) {
        for (unsigned t = 0; t < block; t++)
            if (fibers[t].state == State::Ready) {
                current = t;
                threadIdx.x = t;
                if (!_setjmp(scheduler)) {
                    if (fibers[t].started) _longjmp(fibers[t].at, 1);
                    fibers[t].started = true;
                    setcontext(&fibers[t].start);
                }
            }
        bool live = false, all_at_block = true, released = false;
        for (unsigned t = 0; t < block; t++) {
            live |= fibers[t].state != State::Done;
            all_at_block &= fibers[t].state == State::Done || fibers[t].state == State::AtBlock;
        }
        if (!live) return;
        if (all_at_block) {
            for (unsigned t = 0; t < block; t++)
                if (fibers[t].state == State::AtBlock) fibers[t].state = State::Ready;
            continue;
        }
        for (unsigned w = 0; w * 32 < block; w++) {
            unsigned end = std::min(block, 32 * w + 32);
            bool all_at_warp = true, any = false;
            for (unsigned t = 32 * w; t < end; t++) {
                all_at_warp &= fibers[t].state == State::Done || fibers[t].state == State::AtWarp;
                any |= fibers[t].state == State::AtWarp;
            }
            if (all_at_warp && any) {
                for (unsigned t = 32 * w; t < end; t++)
                    if (fibers[t].state == State::AtWarp) fibers[t].state = State::Ready;
                released = true;
            }
        }
        if (!released) std::abort();  // a barrier no live thread can pass: the kernel deadlocks
    }
}

// Runs `kernel` on `grid` blocks of `block` threads, blocks one after another.
inline void launch(unsigned grid, unsigned block, const std::function<void()>& kernel) {
    gridDim.x = grid;
    blockDim.x = block;
    running_kernel = &kernel;
    while (fibers.size() < block) fibers.emplace_back().stack.resize(64 * 1024);
    for (unsigned b = 0; b < grid; b++) {
        blockIdx.x = b;
        run_block(block);
    }
}
