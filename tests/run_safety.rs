//! `falsify run` as a careless or hostile user meets it, through the binary:
//! SIGTERM while a claim's child process runs (the child and its own child
//! end, the claims judged so far are kept as a report marked interrupted), a
//! second signal when the first cannot finish, a second run on the same
//! report directory, a directory that cannot be written, a filter that
//! selects nothing, and `/dev/zero` given as a file to read. The claims are
//! the project's own plus an `--add`ed file whose `workflow_lint` claims run
//! `sh` scripts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_falsify");

/// A claims file: one quick claim, then one whose `sh` runs `script`.
fn claims_file(dir: &Path, script: &str) -> PathBuf {
    let target = dir.join("lint-target");
    std::fs::write(&target, "").unwrap();
    let claim = |id: &str, title: &str, script: &str| {
        format!(
            "[[claim]]\nid = \"{id}\"\ntitle = \"{title}\"\ncategory = \"measurement\"\npoints = 1\n\
             source = \"tests/run_safety.rs\"\ncheck = \"workflow_lint\"\n[claim.params]\ntool = \"sh\"\n\
             args = [\"-c\", {script:?}]\nfiles = [{:?}]\n\n",
            target.display()
        )
    };
    let path = dir.join("extra.toml");
    let text = claim("ZZSIG1", "a quick check", "true") + &claim("ZZSIG2", "a check whose child runs on", script);
    std::fs::write(&path, text).unwrap();
    path
}

/// `falsify run` of the project's claims and the ZZSIG claims into `out`, its
/// output in files under `dir`.
fn start_run(dir: &Path, extra: &Path, out: &Path, tag: &str) -> Child {
    start_run_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("claims"), dir, extra, out, tag)
}

/// [`start_run`] with the claims directory `claims`.
fn start_run_in(claims: &Path, dir: &Path, extra: &Path, out: &Path, tag: &str) -> Child {
    Command::new(EXE)
        .args(["run", "--runs", "2", "--filter", "ZZSIG", "--claims"])
        .arg(claims)
        .arg("--add")
        .arg(extra)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{tag}.stdout"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{tag}.stderr"))).unwrap())
        .spawn()
        .unwrap()
}

/// The process ids a script wrote to `path`, once it has written them.
fn pids_in(path: &Path, child: &mut Child) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') {
            return text.split_whitespace().map(|p| p.parse().unwrap()).collect();
        }
        assert!(child.try_wait().unwrap().is_none(), "falsify ended before the claim's script ran");
        assert!(Instant::now() < deadline, "the claim's script never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is running (a zombie, already dead, does not count).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) takes plain integers; the child is ours and not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// The child's exit status, waiting at most `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn text(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn sigterm_ends_every_child_and_keeps_the_claims_judged_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let script = format!("sleep 300 & echo $$ $! > {}; wait", pidfile.display());
    let extra = claims_file(dir.path(), &script);
    let out = dir.path().join("out");
    let mut run = start_run(dir.path(), &extra, &out, "first");
    let pids = pids_in(&pidfile, &mut run);

    // A second run on the same directory meanwhile fails at once, naming the first.
    let mut second = start_run(dir.path(), &extra, &out, "second");
    let status = exit_within(&mut second, Duration::from_secs(60)).expect("the second run waited");
    let err = text(dir.path().join("second.stderr"));
    assert!(!status.success());
    assert!(err.contains(&format!("in use by falsify run (pid {})", run.id())), "{err}");

    let sent = Instant::now();
    signal(&run, libc::SIGTERM);
    let status = exit_within(&mut run, Duration::from_secs(30)).expect("falsify run did not stop on SIGTERM");
    let stderr = text(dir.path().join("first.stderr"));
    eprintln!("stopped {:.2} s after SIGTERM\n{stderr}", sent.elapsed().as_secs_f64());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted (SIGTERM"), "{stderr}");
    for pid in pids {
        assert!(!running(pid), "process {pid} outlived falsify run");
    }
    let report: serde_json::Value = serde_json::from_str(&text(out.join("latest.json"))).unwrap();
    assert_eq!(report, serde_json::from_str::<serde_json::Value>(&text(out.join("report.json"))).unwrap());
    let why = report["interrupted"].as_str().unwrap();
    assert!(why.contains("SIGTERM while ZZSIG2 was being judged: 1 of 2 claims judged"), "{why}");
    let ids: Vec<&str> = report["claims"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ZZSIG1"]);
    assert_eq!((report["summary"]["total"].as_u64(), report["summary"]["pass"].as_u64()), (Some(1), Some(1)));
    assert_eq!(std::fs::read_dir(out.join("history")).unwrap().count(), 1);
}

#[test]
fn a_second_signal_exits_at_once_when_the_first_cannot_finish() {
    // A project whose 0.5B model is a 64 GiB sparse file never hashed before:
    // after the first signal, the run hashes it for the partial report's
    // provenance, which takes far longer than the test waits.
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("claims")).unwrap();
    std::fs::create_dir_all(project.join("models")).unwrap();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("claims")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, project.join("claims").join(path.file_name().unwrap())).unwrap();
        }
    }
    let model = std::fs::File::create(project.join("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")).unwrap();
    model.set_len(64 << 30).unwrap();
    let pidfile = dir.path().join("pids");
    let extra = claims_file(dir.path(), &format!("echo $$ > {}; sleep 300", pidfile.display()));
    let out = dir.path().join("out");
    let mut run = start_run_in(&project.join("claims"), dir.path(), &extra, &out, "run");
    let pids = pids_in(&pidfile, &mut run);
    signal(&run, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(1000));
    let still_running = run.try_wait().unwrap().is_none();
    let stderr = text(dir.path().join("run.stderr"));
    assert!(still_running, "the first signal was expected to let the run finish its report\n{stderr}");
    let sent = Instant::now();
    signal(&run, libc::SIGINT);
    let status = exit_within(&mut run, Duration::from_secs(5)).expect("a second signal did not exit at once");
    eprintln!("exited {:.3} s after the second signal", sent.elapsed().as_secs_f64());
    let stderr = text(dir.path().join("run.stderr"));
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{stderr}");
    assert!(!pids.into_iter().any(running), "a child outlived falsify run");
    assert!(!out.join("latest.json").exists());
}

#[test]
fn a_report_directory_that_cannot_be_written_is_refused_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let extra = claims_file(dir.path(), &format!("echo $$ > {}", pidfile.display()));
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    let out = plain.join("reports");
    let mut run = start_run(dir.path(), &extra, &out, "run");
    let status = exit_within(&mut run, Duration::from_secs(60)).expect("falsify run hung");
    let stderr = text(dir.path().join("run.stderr"));
    assert!(!status.success());
    assert!(stderr.contains(&format!("{}: cannot write in this directory", out.display())), "{stderr}");
    assert!(!pidfile.exists(), "a claim was judged before the directory was checked");
}

#[test]
fn a_filter_that_selects_no_claim_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("latest.json"), "the previous run").unwrap();
    let claims = Path::new(env!("CARGO_MANIFEST_DIR")).join("claims");
    let run = Command::new(EXE)
        .args(["run", "--filter", "NO-SUCH-CLAIM", "--claims"])
        .arg(claims)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("no claim matches --filter \"NO-SUCH-CLAIM\""), "{stderr}");
    assert_eq!(text(out.join("latest.json")), "the previous run");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn endless_files_are_refused_by_name_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 3] = [
        &["diff", "/dev/zero", "x.json"],
        &["report", "/dev/zero", "--out", "unused"],
        &["bench", "--baseline", "none", "--compare", "/dev/zero"],
    ];
    for args in cases {
        let start = Instant::now();
        let run = Command::new(EXE).args(args).current_dir(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?}");
        assert!(stderr.contains("/dev/zero: not a regular file"), "{args:?}: {stderr}");
        assert!(start.elapsed() < Duration::from_secs(10), "{args:?} took {:?}", start.elapsed());
    }
}

/// A stand-in for llama-server: answers `/health`, writes its pid to
/// `$FAKE_LLAMA_PIDFILE` when the first request a check makes arrives, and
/// never answers that request.
const FAKE_SERVER: &str = r#"#!/usr/bin/env python3
import http.server, os, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status":"ok"}')
    def do_POST(self):
        with open(os.environ["FAKE_LLAMA_PIDFILE"], "w") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(300)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// A stand-in for llama-bench: writes its pid to `$FAKE_LLAMA_PIDFILE` and sleeps.
const FAKE_BENCH: &str = "#!/bin/sh\necho $$ > \"$FAKE_LLAMA_PIDFILE\"\nexec sleep 300\n";

/// The 0.5B model, or `None` (saying why) when the stand-ins cannot run here.
fn model_and_python() -> Option<PathBuf> {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    if !model.is_file() {
        eprintln!("skipped: the 0.5B model is not in models/ (run `make model`)");
        return None;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 (the stand-in llama-server) is not installed");
        return None;
    }
    Some(model)
}

/// A directory of stand-in llama.cpp programs, for `FALSIFY_LLAMA_CPP`.
fn fake_llama_cpp(dir: &Path) -> PathBuf {
    let bin = dir.join("llama.cpp");
    std::fs::create_dir(&bin).unwrap();
    let fail = "#!/bin/sh\nexit 1\n";
    for (name, script) in [
        ("llama-server", FAKE_SERVER),
        ("llama-bench", FAKE_BENCH),
        ("llama-completion", fail),
        ("llama-tokenize", fail),
    ] {
        std::fs::write(bin.join(name), script).unwrap();
        std::fs::set_permissions(bin.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn sigterm_ends_a_llama_server_the_run_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if model_and_python().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_llama_cpp(dir.path());
    let pidfile = dir.path().join("server.pid");
    let out = dir.path().join("out");
    let mut run = Command::new(EXE)
        .args(["run", "--runs", "2", "--filter", "F052", "--claims"])
        .arg(root.join("claims"))
        .arg("--out")
        .arg(&out)
        .env("FALSIFY_LLAMA_CPP", &bin)
        .env("FAKE_LLAMA_PIDFILE", &pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("run.stderr")).unwrap())
        .spawn()
        .unwrap();
    let server = pids_in(&pidfile, &mut run)[0];
    signal(&run, libc::SIGTERM);
    let status = exit_within(&mut run, Duration::from_secs(30)).expect("falsify run did not stop on SIGTERM");
    let stderr = text(dir.path().join("run.stderr"));
    assert!(!running(server), "llama-server {server} outlived falsify run\n{stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted (SIGTERM while F052 was being judged: 0 of 1"), "{stderr}");
    assert!(!out.join("latest.json").exists(), "nothing was judged, so nothing is written");
}

#[test]
fn sigterm_to_bench_ends_llama_bench() {
    let Some(model) = model_and_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bench.pid");
    let mut bench = Command::new(EXE)
        .args(["bench", "-p", "1", "-n", "1", "-r", "2", "--warmup", "0", "--model"])
        .arg(model)
        .env("FALSIFY_LLAMA_CPP", fake_llama_cpp(dir.path()))
        .env("FAKE_LLAMA_PIDFILE", &pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("bench.stderr")).unwrap())
        .spawn()
        .unwrap();
    let llama_bench = pids_in(&pidfile, &mut bench)[0];
    signal(&bench, libc::SIGTERM);
    let status = exit_within(&mut bench, Duration::from_secs(10)).expect("falsify bench did not stop on SIGTERM");
    let stderr = text(dir.path().join("bench.stderr"));
    assert!(!running(llama_bench), "llama-bench {llama_bench} outlived falsify bench\n{stderr}");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
}
