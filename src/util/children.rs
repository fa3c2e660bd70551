//! Child processes that end with this one. Each child leads its own process
//! group and is registered while it runs: dropping its [`GroupChild`], or a
//! SIGINT or SIGTERM to this process (once [`handle_stop_signals`] is set up),
//! kills the whole group (the program and whatever it started) and reaps it,
//! so no child is left running, adopted by PID 1.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The process groups of the children running now (each child leads its own).
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The first SIGINT or SIGTERM this process received (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

fn running() -> MutexGuard<'static, Vec<i32>> {
    // The list stays meaningful whatever a panicking holder was doing.
    RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends SIGKILL to the process group `pgid`.
fn kill_group(pgid: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a
    // group that is already gone gives ESRCH, which is ignored.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// The name of a stopping signal, e.g. `SIGTERM`.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

/// The first SIGINT or SIGTERM this process received, by name, when one came.
pub fn stop_signal() -> Option<String> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal_name(signal)),
    }
}

/// What the first SIGINT or SIGTERM does; a second one always exits at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSignal {
    /// Kill every child and exit: the command has nothing worth saving.
    Exit,
    /// Kill every child, start no new one, and let the command stop at its
    /// next look at [`stop_signal`], keeping what it has measured.
    Stop,
}

/// Handles SIGINT and SIGTERM on a thread of their own for the rest of the
/// process: the first kills every registered child group, then acts as
/// `first` says; the second kills them again and exits at once with status
/// 128 + the signal number.
pub fn handle_stop_signals(first: FirstSignal) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
    std::thread::Builder::new().name("stop-signals".into()).spawn(move || {
        for signal in signals.forever() {
            let is_first = STOP_SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_ok();
            running().iter().copied().for_each(kill_group);
            let name = signal_name(signal);
            if is_first && first == FirstSignal::Stop {
                eprintln!(
                    "\nfalsify: {name}: child processes ended; stopping after the current step and keeping \
                     what was measured (send it again to exit at once)"
                );
            } else {
                eprintln!("\nfalsify: {name}: child processes ended; exiting");
                std::process::exit(128 + signal);
            }
        }
    })?;
    Ok(())
}

/// A running child process leading its own process group, registered until
/// it is reaped. Dropping it kills the group and reaps the child.
pub struct GroupChild {
    child: Child,
    program: String,
    status: Option<ExitStatus>,
}

impl GroupChild {
    /// Starts `command` in a new process group of its own and registers it.
    /// Refused once this process has received a stopping signal.
    pub fn spawn(command: &mut Command) -> std::io::Result<GroupChild> {
        let program = command.get_program().to_string_lossy().into_owned();
        // The registry is held across the spawn, so a signal's sweep either
        // sees the new child or comes first and is seen here.
        let mut running = running();
        if let Some(signal) = stop_signal() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                format!("{program}: not started: this process received {signal}"),
            ));
        }
        let child = command
            .process_group(0)
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{program}: cannot start: {e}")))?;
        running.push(child.id() as i32);
        Ok(GroupChild { child, program, status: None })
    }

    /// The child's process id (its process group's id too).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The program's name as it was started.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The child's standard streams and handle, e.g. to take its piped output.
    pub fn inner(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the child has exited, waiting for it until `deadline` (for
    /// ever when `None`) without reaping it: its process id stays reserved,
    /// so its group can still be killed safely.
    fn exited_by(&self, deadline: Option<Instant>) -> std::io::Result<bool> {
        let mut pause = Duration::from_millis(1);
        loop {
            let flags = libc::WEXITED | libc::WNOWAIT | if deadline.is_some() { libc::WNOHANG } else { 0 };
            // SAFETY: siginfo_t is plain data that waitid fills in; zeroed is a valid value of it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
            let rc = unsafe { libc::waitid(libc::P_PID, self.child.id(), &mut info, flags) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(std::io::Error::new(e.kind(), format!("waiting for {}: {e}", self.program)));
            }
            // SAFETY: waitid succeeded, so `info` holds a SIGCHLD record whose si_pid is set (0 when
            // WNOHANG found nothing).
            if unsafe { info.si_pid() } != 0 {
                return Ok(true);
            }
            match deadline {
                Some(d) if Instant::now() >= d => return Ok(false),
                _ => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    /// Kills the child's group (what is left of it) and reaps the child, once.
    fn end(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let mut running = running();
        let pid = self.child.id() as i32;
        kill_group(pid);
        let status =
            self.child.wait().map_err(|e| std::io::Error::new(e.kind(), format!("reaping {}: {e}", self.program)))?;
        running.retain(|&p| p != pid);
        self.status = Some(status);
        Ok(status)
    }

    /// Whether the child has exited (reaping it and ending its group if so), without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_some() || self.exited_by(Some(Instant::now()))? {
            return self.end().map(Some);
        }
        Ok(None)
    }

    /// Waits for the child to exit, at most `timeout` (for ever when `None`),
    /// then ends its group and reaps it. A child that outlives the timeout is
    /// killed, and the error says so. A child killed because this process
    /// received a stopping signal gives an `Interrupted` error naming it.
    pub fn wait(&mut self, timeout: Option<Duration>) -> std::io::Result<ExitStatus> {
        let exited = self.exited_by(timeout.map(|t| Instant::now() + t))?;
        let status = self.end()?;
        if !exited {
            let secs = timeout.unwrap_or_default().as_secs_f64();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{}: killed after a {secs:.0} s timeout", self.program),
            ));
        }
        match stop_signal() {
            Some(signal) if status.signal() == Some(libc::SIGKILL) => Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                format!("{}: ended because this process received {signal}", self.program),
            )),
            _ => Ok(status),
        }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// Runs `command` (its stdin closed) to completion in its own process group,
/// at most `timeout`, collecting its stdout and stderr: a registered
/// [`std::process::Command::output`]. When a process the command left behind
/// (outside its group) keeps the output open after the command exits, the
/// wait for it ends at the timeout or at a stopping signal, with an error.
pub fn output(command: &mut Command, timeout: Option<Duration>) -> std::io::Result<Output> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut child = GroupChild::spawn(command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let collect = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut s) = stream {
                let _ = s.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = collect(child.inner().stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let stderr = collect(child.inner().stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let status = child.wait(timeout)?;
    let program = child.program().to_owned();
    let joined = |reader: std::thread::JoinHandle<Vec<u8>>| {
        while !reader.is_finished() {
            let held = |why: String| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{program}: exited, but a process it left behind kept its output open ({why})"),
                )
            };
            if let Some(signal) = stop_signal() {
                return Err(held(format!("given up on {signal}")));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(held("given up at the timeout".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(reader.join().unwrap_or_default())
    };
    Ok(Output { status, stdout: joined(stdout)?, stderr: joined(stderr)? })
}

/// Runs `command` (its streams as configured) to completion in its own
/// process group, at most `timeout`: a registered [`std::process::Command::status`].
pub fn status(command: &mut Command, timeout: Option<Duration>) -> std::io::Result<ExitStatus> {
    GroupChild::spawn(command)?.wait(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a process `pid` exists (a zombie counts until it is reaped).
    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    fn read_pid(path: &std::path::Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()) {
                return pid;
            }
            assert!(Instant::now() < deadline, "the child never wrote its grandchild's pid");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn dropping_a_child_kills_its_whole_group_and_reaps_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let child = GroupChild::spawn(Command::new("sh").args(["-c", &script])).unwrap();
        let pid = child.id() as i32;
        let grandchild = read_pid(&pidfile);
        assert!(running().contains(&pid));
        drop(child);
        assert!(!alive(pid), "the child was reaped");
        let deadline = Instant::now() + Duration::from_secs(5);
        // The grandchild is not ours to reap: it is gone once init reaps it.
        while alive(grandchild) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!alive(grandchild), "the grandchild {grandchild} was killed with the group");
        assert!(!running().contains(&pid));
    }

    #[test]
    fn output_collects_streams_and_times_out_with_a_named_error() {
        let out = output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), None).unwrap();
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice(), out.status.code()),
            (&b"out\n"[..], &b"err\n"[..], Some(3))
        );
        let start = Instant::now();
        let e = output(Command::new("sleep").arg("30"), Some(Duration::from_millis(100))).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("sleep: killed after"), "{e}");
        if crate::util::on_path("setsid") {
            let dir = tempfile::tempdir().unwrap();
            let pidfile = dir.path().join("escaped.pid");
            // The script exits once its own child has left the group, holding stdout open.
            let escaped = format!(
                "setsid sh -c 'echo $$ > {0}; exec sleep 30' & while [ ! -s {0} ]; do sleep 0.01; done",
                pidfile.display()
            );
            let start = Instant::now();
            // Long enough for a loaded host to start the script and its escaping child.
            let e = output(Command::new("sh").args(["-c", &escaped]), Some(Duration::from_millis(1500))).unwrap_err();
            // SAFETY: kill(2) takes plain integers; this ends the sleep the script left behind.
            unsafe { libc::kill(read_pid(&pidfile), libc::SIGKILL) };
            assert!(start.elapsed() < Duration::from_secs(5));
            assert!(e.to_string().contains("sh: exited, but a process it left behind kept its output open"), "{e}");
        }
        let e = status(&mut Command::new("/no/such/program"), None).unwrap_err();
        assert!(e.to_string().contains("/no/such/program: cannot start"), "{e}");
    }

    #[test]
    fn try_wait_reaps_a_finished_child_once() {
        let mut child = GroupChild::spawn(&mut Command::new("true")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(2));
        };
        assert!(status.success());
        assert_eq!(child.try_wait().unwrap(), Some(status));
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
    }
}
