//! A persistent pool of worker threads for the matrix products of a forward
//! pass. Spawning threads per product (about 170 per decoded token) costs
//! milliseconds; these workers instead spin briefly waiting for the next job,
//! then park, and the caller's thread takes part in every job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How many times an idle worker checks for work before parking.
const SPINS_BEFORE_PARK: u32 = 20_000;
/// How many times the caller checks for the workers' completion before yielding its core.
const SPINS_BEFORE_YIELD: u32 = 10_000;

type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// Cores this process may run on (its affinity mask and cgroup quota
/// honoured), at least one.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The threads a pool asked for `threads` runs: at least one, at most
/// [`available_cores`]. Measured on 2 cores (0.5B Q4_K_M decode): 56 tok/s on
/// 2 threads, 3.1 on 8 and not 4 tokens in 120 s on 1000, the spinning
/// workers outnumbering the cores.
pub fn usable_threads(threads: usize) -> usize {
    threads.clamp(1, available_cores())
}

struct Shared {
    /// Points at the current job (a `Job` on the caller's stack) while one runs.
    job: AtomicPtr<()>,
    /// Bumped for every job; workers run a job when they see it change.
    epoch: AtomicU64,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    /// Whether a worker's part of the current job panicked.
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Whether the caller of the current job counts its allocations (unit
    /// tests' allocator): its workers count theirs for that job only.
    #[cfg(test)]
    counted: AtomicBool,
}

/// Worker threads that run `f(i)` for `i` in `0..threads` together with the caller.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool running jobs on `threads` threads in all (the caller plus
    /// workers), capped at [`usable_threads`]: more threads than cores only
    /// make the spinning workers wait on each other. Fewer run when the system
    /// refuses to start a worker (out of memory, a process limit). Worker `i`
    /// is pinned to core `i` when the system allows it (the caller is not moved).
    pub fn new(threads: usize) -> Pool {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            #[cfg(test)]
            counted: AtomicBool::new(false),
        });
        let workers = (1..usable_threads(threads))
            .map_while(|index| {
                let shared = Arc::clone(&shared);
                let core = cores.get(index).copied();
                std::thread::Builder::new()
                    .name(format!("falsify-worker-{index}"))
                    .spawn(move || {
                        if let Some(core) = core {
                            // Best effort: an unpinned worker is slower to measure, not wrong.
                            core_affinity::set_for_current(core);
                        }
                        worker(&shared, index)
                    })
                    .ok()
            })
            .collect();
        Pool { shared, workers }
    }

    /// Threads taking part in each job.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every `i` in `0..self.threads()`, `f(0)` on the calling
    /// thread, and returns when all have finished. A panic in any part is
    /// re-raised here.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        let job: Job<'_> = f;
        self.shared.pending.store(self.workers.len(), Ordering::Relaxed);
        self.shared.job.store((&job as *const Job<'_>).cast_mut().cast(), Ordering::Relaxed);
        #[cfg(test)]
        self.shared.counted.store(super::test_alloc::is_counted(), Ordering::Relaxed);
        self.shared.epoch.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let mut spins = 0u32;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                std::hint::spin_loop();
            } else {
                // A descheduled worker needs this core more than we need to watch it.
                std::thread::yield_now();
            }
        }
        self.shared.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if self.shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a worker thread panicked");
        }
    }

    /// Runs `f(j, piece)` for the pieces of `out` between consecutive
    /// `bounds`: piece `j` is `out[bounds[j]..bounds[j + 1]]`, run on thread
    /// `j % threads()`. Hands out disjoint mutable pieces without allocating
    /// (a decode step must not).
    ///
    /// # Panics
    /// When `bounds` decrease or go past `out`'s end.
    pub fn run_split<T: Send>(&self, out: &mut [T], bounds: &[usize], f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        for (j, w) in bounds.windows(2).enumerate() {
            assert!(w[0] <= w[1] && w[1] <= out.len(), "piece {j} ({}..{}) of {} elements", w[0], w[1], out.len());
        }
        self.run_pieces(out, bounds.len().saturating_sub(1), &|j| bounds[j], f);
    }

    /// Runs `f(j, piece)` for every `chunk` elements of `out` (the last piece
    /// may be shorter), piece `j` on thread `j % threads()`, without allocating.
    pub fn run_chunks<T: Send>(&self, out: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let (len, chunk) = (out.len(), chunk.max(1));
        self.run_pieces(out, len.div_ceil(chunk), &|j| (j * chunk).min(len), f);
    }

    /// Piece `j` of `out` is `cut(j)..cut(j + 1)`; `cut` must be a pure,
    /// non-decreasing function with `cut(parts) <= out.len()` (both callers
    /// check or construct it so).
    fn run_pieces<T: Send>(
        &self,
        out: &mut [T],
        parts: usize,
        cut: &(dyn Fn(usize) -> usize + Sync),
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let base = SendPtr(out.as_mut_ptr());
        let threads = self.threads();
        self.run(&|i| {
            for j in (i..parts).step_by(threads) {
                let (a, b) = (cut(j), cut(j + 1));
                // SAFETY: a <= b <= out.len() (see above), so the piece lies within
                // `out`, which stays borrowed until every part has returned; the
                // pieces of a non-decreasing cut are disjoint, and each is handed
                // to exactly one call of `f`.
                let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(a), b - a) };
                f(j, piece);
            }
        });
    }
}

/// The start of a mutable slice, shared with the workers of one job.
struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: the pointer is only used by `run_pieces`, to form disjoint pieces of a
// slice of `T: Send` that outlives the job.
unsafe impl<T: Send> Sync for SendPtr<T> {}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        let epoch = loop {
            let e = shared.epoch.load(Ordering::Acquire);
            if e != seen || shared.stop.load(Ordering::Relaxed) {
                break e;
            }
            spins += 1;
            if spins < SPINS_BEFORE_PARK {
                std::hint::spin_loop();
            } else {
                std::thread::park();
            }
        };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = epoch;
        let ptr = shared.job.load(Ordering::Relaxed) as *const Job<'static>;
        // SAFETY: `run` stored a pointer to a live `Job` before bumping the epoch
        // (Release/Acquire orders the two), and does not return, so the job and
        // everything it borrows stay alive, until this worker has decremented `pending`.
        let job: Job<'_> = unsafe { *ptr };
        #[cfg(test)]
        super::test_alloc::set_counted(shared.counted.load(Ordering::Relaxed));
        if catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
            shared.panicked.store(true, Ordering::Relaxed);
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.epoch.fetch_add(1, Ordering::Release);
        for w in self.workers.drain(..) {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_part_runs_once_per_job() {
        let pool = Pool::new(3);
        let hits = Mutex::new(vec![0usize; pool.threads()]);
        for _ in 0..1000 {
            pool.run(&|i| hits.lock().unwrap()[i] += 1);
        }
        assert_eq!(*hits.lock().unwrap(), vec![1000; pool.threads()]);
    }

    /// `-t 100000` once started a thread per count until the process died.
    #[test]
    fn thread_counts_are_capped_at_the_usable_cores() {
        let start = std::time::Instant::now();
        for asked in [0, 1, available_cores() + 1, 100_000, usize::MAX] {
            let pool = Pool::new(asked);
            assert_eq!(pool.threads(), usable_threads(asked), "{asked} threads asked");
            assert!((1..=available_cores()).contains(&pool.threads()), "{asked} threads asked");
            let count = AtomicUsize::new(0);
            pool.run(&|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), pool.threads());
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
    }

    #[test]
    fn jobs_may_borrow_the_callers_data() {
        let pool = Pool::new(2);
        let data: Vec<u64> = (0..1000).collect();
        let sums = [AtomicU64::new(0), AtomicU64::new(0)];
        pool.run(&|i| {
            let s: u64 = data.iter().skip(i).step_by(pool.threads()).sum();
            sums[i].store(s, Ordering::Relaxed);
        });
        assert_eq!(sums[0].load(Ordering::Relaxed) + sums[1].load(Ordering::Relaxed), 499_500);
    }

    #[test]
    fn a_panicking_part_is_reported_and_the_pool_survives() {
        let pool = Pool::new(2);
        let last = pool.threads() - 1;
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(&|i| assert!(i != last, "the last part fails"))));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), pool.threads());
    }

    /// Processes started from the caller (the baselines) inherit its affinity:
    /// making a pool and running jobs must leave the caller free to use every core.
    #[test]
    fn the_caller_is_never_pinned() {
        let before = crate::testing::cpus_allowed();
        let pool = Pool::new(2);
        pool.run(&|_| {});
        assert_eq!(crate::testing::cpus_allowed(), before);
    }

    #[test]
    fn run_split_hands_out_each_piece_once() {
        let pool = Pool::new(3);
        let mut out = vec![0u32; 100];
        pool.run_split(&mut out, &[0, 10, 10, 55, 99], &|j, piece| piece.iter_mut().for_each(|x| *x += j as u32 + 1));
        let want: Vec<u32> = (0..100)
            .map(|i| [1, 3, 4].into_iter().zip([10, 55, 99]).find(|&(_, e)| i < e).map_or(0, |(v, _)| v))
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    #[should_panic(expected = "piece 1")]
    fn run_split_refuses_overlapping_pieces() {
        Pool::new(2).run_split(&mut [0u8; 20], &[0, 10, 5], &|_, _| {});
    }

    #[test]
    fn run_chunks_covers_every_element_once() {
        let pool = Pool::new(2);
        for (len, chunk) in [(0, 3), (7, 3), (9, 3), (5, 10)] {
            let mut out = vec![0usize; len];
            pool.run_chunks(&mut out, chunk, &|j, piece| piece.iter_mut().for_each(|x| *x += j + 1));
            assert_eq!(out, (0..len).map(|i| i / chunk + 1).collect::<Vec<_>>(), "{len} by {chunk}");
        }
    }

    #[test]
    fn one_thread_runs_inline() {
        let pool = Pool::new(1);
        let ran = AtomicBool::new(false);
        pool.run(&|i| ran.store(i == 0, Ordering::Relaxed));
        assert!(ran.load(Ordering::Relaxed) && pool.threads() == 1);
    }
}
