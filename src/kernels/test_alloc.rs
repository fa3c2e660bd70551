//! The unit tests' allocator: the counting allocator of the binaries
//! (`stats_alloc`) for the threads that measure and for the pool's workers
//! while they run those threads' jobs, the system's for every other thread, so tests running in parallel do not
//! add to the heap counts of the falsifiability audit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use stats_alloc::INSTRUMENTED_SYSTEM;

thread_local! {
    /// Whether this thread's allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

/// One counting window at a time in the whole process: the counts are global,
/// so two tests counting at once would add to each other's.
static ONE_WINDOW: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with this thread's allocations counted, no other thread's
/// window open meanwhile (a window inside a window is the outer one).
pub fn counting<T>(f: impl FnOnce() -> T) -> T {
    if counted() {
        return f();
    }
    let _window = ONE_WINDOW.lock().unwrap_or_else(|e| e.into_inner());
    COUNTED.set(true);
    let out = f();
    COUNTED.set(false);
    out
}

/// Whether this thread's allocations are counted now (the pool hands it to its workers).
pub fn is_counted() -> bool {
    counted()
}

/// Counts this thread's allocations, or stops counting them (a pool worker,
/// for each job, as its caller does).
pub fn set_counted(on: bool) {
    COUNTED.set(on);
}

/// Counts the allocations of counted threads.
struct Split;

// SAFETY (every method): the layout and pointer are the caller's, passed on
// unchanged; both allocators are the system's, so a block allocated through
// one may be resized or freed through the other (only the counts differ).
unsafe impl GlobalAlloc for Split {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if counted() {
                INSTRUMENTED_SYSTEM.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if counted() {
                INSTRUMENTED_SYSTEM.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: see the impl.
        unsafe {
            if counted() {
                INSTRUMENTED_SYSTEM.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if counted() {
                INSTRUMENTED_SYSTEM.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Split = Split;
