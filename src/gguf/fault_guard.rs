//! Names the file when a mapped model file changes under a running process.
//!
//! Reading a page of a memory map that lies past the end of its file raises
//! SIGBUS, which by default kills the process without a word. That happens
//! when a model file is truncated or rewritten in place while it is mapped.
//! Copying the model into memory instead would cost its whole size (and the
//! time to read it all before the first token), so the map stays, and while a
//! [`FaultGuard`] lives, a SIGBUS whose address lies in its map prints which
//! file changed and ends the process with exit status 1. Any other SIGBUS is
//! left to the action installed before this one (by default, death by the
//! signal, as without the guard).
//!
//! The signal handler may only do async-signal-safe work, so each watched map
//! has a slot of atomics holding its address range and its message, written
//! when the map is watched; the handler reads them, `write(2)`s the message
//! and `_exit(2)`s.

use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How many maps can be watched at once; a map opened beyond them is not
/// named (a SIGBUS in it goes to the previous action).
const SLOTS: usize = 32;
/// Room for one message; a longer path is shortened from the front.
const MESSAGE_BYTES: usize = 1024;
/// The exit status after a watched map faults, as for any other error.
const EXIT_STATUS: libc::c_int = 1;

/// A slot's states: free, being filled in, watching a map.
const FREE: u8 = 0;
const FILLING: u8 = 1;
const WATCHING: u8 = 2;

/// One watched map: where it is and what to print when it faults.
struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    message_len: AtomicUsize,
    message: [AtomicU8; MESSAGE_BYTES],
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            message_len: AtomicUsize::new(0),
            message: [const { AtomicU8::new(0) }; MESSAGE_BYTES],
        }
    }

    /// Copies this slot's message into `out` when it watches a map that
    /// contains `addr`, returning the message's length. Async-signal-safe.
    fn message_for(&self, addr: usize, out: &mut [u8; MESSAGE_BYTES]) -> Option<usize> {
        if self.state.load(Ordering::Acquire) != WATCHING {
            return None;
        }
        if addr.wrapping_sub(self.start.load(Ordering::Relaxed)) >= self.len.load(Ordering::Relaxed) {
            return None;
        }
        let n = self.message_len.load(Ordering::Relaxed);
        for (byte, stored) in out[..n].iter_mut().zip(&self.message) {
            *byte = stored.load(Ordering::Relaxed);
        }
        Some(n)
    }
}

static WATCHED: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// The SIGBUS action in place before [`on_bus_error`] was installed; `None`
/// inside when installing failed.
static PREVIOUS_ACTION: OnceLock<Option<libc::sigaction>> = OnceLock::new();

/// Watches a memory map while it lives: a SIGBUS inside it prints which file
/// changed and exits with status 1 instead of killing the process silently.
#[derive(Debug)]
pub(super) struct FaultGuard {
    slot: Option<usize>,
}

impl FaultGuard {
    /// Watches `map`, a map of the file at `path`. Watching nothing (no free
    /// slot, or the handler could not be installed) leaves SIGBUS as it was.
    pub(super) fn watch(map: &[u8], path: &Path) -> FaultGuard {
        if map.is_empty() || !install_handler() {
            return FaultGuard { slot: None };
        }
        let message = fault_message(path);
        let slot = WATCHED
            .iter()
            .position(|s| s.state.compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed).is_ok());
        if let Some(i) = slot {
            let s = &WATCHED[i];
            s.start.store(map.as_ptr() as usize, Ordering::Relaxed);
            s.len.store(map.len(), Ordering::Relaxed);
            for (stored, &byte) in s.message.iter().zip(message.as_bytes()) {
                stored.store(byte, Ordering::Relaxed);
            }
            s.message_len.store(message.len(), Ordering::Relaxed);
            s.state.store(WATCHING, Ordering::Release);
        }
        FaultGuard { slot }
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            WATCHED[i].state.store(FREE, Ordering::Release);
        }
    }
}

/// What the handler prints for a fault in a map of `path`, at most
/// [`MESSAGE_BYTES`] long (a long path keeps its end, which names the file).
fn fault_message(path: &Path) -> String {
    let message = |shown: &str| {
        format!("error: {shown} changed while in use (truncated or rewritten after it was mapped); stopped at a read past its new end\n")
    };
    let shown = path.display().to_string();
    let room = MESSAGE_BYTES - message("…").len();
    if shown.len() <= room {
        return message(&shown);
    }
    message(&format!("…{}", &shown[shown.ceil_char_boundary(shown.len() - room)..]))
}

/// Installs [`on_bus_error`] for SIGBUS once; false when the system refused.
fn install_handler() -> bool {
    PREVIOUS_ACTION
        .get_or_init(|| {
            // SAFETY: `sigaction` is plain old data, for which all zeros is a
            // valid value (no handler, no flags, an empty mask).
            let (mut action, mut previous): (libc::sigaction, libc::sigaction) =
                unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_bus_error;
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: both pointers are to live `sigaction` values, and the
            // handler does only async-signal-safe work (atomic loads,
            // write(2), _exit(2), sigaction(2)).
            let installed = unsafe { libc::sigaction(libc::SIGBUS, &action, &mut previous) } == 0;
            installed.then_some(previous)
        })
        .is_some()
}

/// The SIGBUS handler: names the file when the faulting address lies in a
/// watched map and exits; otherwise puts the previous action back and
/// returns, so that the faulting read runs again and faults under it.
extern "C" fn on_bus_error(signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to a handler installed
    // with SA_SIGINFO, and fills in `si_addr` for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    let mut message = [0u8; MESSAGE_BYTES];
    if let Some(n) = WATCHED.iter().find_map(|slot| slot.message_for(addr, &mut message)) {
        // SAFETY: write(2) and _exit(2) are async-signal-safe, and `message`
        // holds `n` bytes. Nothing can be done about a failed write.
        unsafe {
            libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), n);
            libc::_exit(EXIT_STATUS);
        }
    }
    if let Some(Some(previous)) = PREVIOUS_ACTION.get() {
        // SAFETY: sigaction(2) is async-signal-safe and `previous` is a live value.
        unsafe { libc::sigaction(signal, previous, std::ptr::null_mut()) };
    } else {
        // SAFETY: signal(2) is async-signal-safe.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_freed_when_guards_drop() {
        let map = [0u8; 64];
        for _ in 0..2 * SLOTS {
            let guard = FaultGuard::watch(&map, Path::new("model.gguf"));
            assert!(guard.slot.is_some());
        }
    }

    #[test]
    fn the_message_fits_its_slot_and_keeps_the_file_name() {
        let short = fault_message(Path::new("/m/a.gguf"));
        assert!(short.starts_with("error: /m/a.gguf changed while in use"), "{short}");
        let long = format!("/{}/model-é.gguf", "é".repeat(2000));
        let message = fault_message(Path::new(&long));
        assert!(message.len() <= MESSAGE_BYTES, "{} bytes", message.len());
        assert!(message.starts_with("error: …é") && message.contains("é/model-é.gguf changed"), "{message}");
    }
}
