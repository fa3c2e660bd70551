//! `falsify top` in a real terminal: tmux starts it on the real 0.5B model,
//! the test reads the screen, presses keys and checks that the live numbers
//! change and each view answers its key. Skips, saying why, when tmux or the
//! model is missing (`make deps`, `make model`).

use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

const MODEL: &str = "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pane's text once it contains `want`, or what it showed after `timeout`.
fn wait_for(session: &str, want: &str, timeout: Duration) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if screen.contains(want) {
            return Ok(screen);
        }
        if start.elapsed() > timeout {
            return Err(screen);
        }
        sleep(Duration::from_millis(200));
    }
}

/// The number before " tokens ·" in the title.
fn tokens_seen(screen: &str) -> Option<u64> {
    let at = screen.find(" tokens · score")?;
    screen[..at].rsplit(' ').next()?.parse().ok()
}

#[test]
fn top_runs_in_a_real_terminal_and_answers_its_keys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join(MODEL);
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (make deps)");
        return;
    }
    if !model.is_file() {
        eprintln!("skipped: {} is missing (make model)", model.display());
        return;
    }
    let session = format!("falsify-top-{}", std::process::id());
    let probe = std::env::temp_dir().join(format!("{session}-probe.json"));
    let cmd = format!(
        "{} top --model {} --threads 2 --probe-cache {}",
        env!("CARGO_BIN_EXE_falsify"),
        model.display(),
        probe.display()
    );
    tmux(&["new-session", "-d", "-s", &session, "-x", "160", "-y", "40", &cmd]);
    let result = (|| -> Result<(), String> {
        let first = wait_for(&session, "brick pipeline", Duration::from_secs(60))?;
        for brick in ["embed", "qkv", "attention", "ffn", "lm_head", "◀ bottleneck"] {
            if !first.contains(brick) {
                return Err(format!("no {brick} on the pipeline view:\n{first}"));
            }
        }
        sleep(Duration::from_secs(2));
        let later = tmux(&["capture-pane", "-p", "-t", &session]);
        match (tokens_seen(&first), tokens_seen(&later)) {
            (Some(a), Some(b)) if b > a => {}
            other => return Err(format!("the token count did not advance: {other:?}\n{later}")),
        }
        for (key, want) in [("b", "roofline µs"), ("h", "token latency"), ("m", "of read bandwidth")] {
            tmux(&["send-keys", "-t", &session, key]);
            wait_for(&session, want, Duration::from_secs(5))
                .map_err(|s| format!("key {key} did not show {want:?}:\n{s}"))?;
        }
        tmux(&["send-keys", "-t", &session, "Escape"]);
        wait_for(&session, "brick pipeline", Duration::from_secs(5))
            .map_err(|s| format!("Esc did not go back:\n{s}"))?;
        tmux(&["send-keys", "-t", &session, "Down", "Enter"]);
        wait_for(&session, "p999", Duration::from_secs(5)).map_err(|s| format!("Enter did not drill down:\n{s}"))?;
        tmux(&["send-keys", "-t", &session, "q"]);
        let start = Instant::now();
        while Command::new("tmux").args(["has-session", "-t", &session]).status().is_ok_and(|s| s.success()) {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("q did not quit".into());
            }
            sleep(Duration::from_millis(100));
        }
        Ok(())
    })();
    tmux(&["kill-session", "-t", &session]);
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = result {
        panic!("{e}");
    }
}
