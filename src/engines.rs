//! Engines as declared subjects: every engine a claim or `falsify load` can
//! measure, by name. Five are built in (`falsify` in process, `llama.cpp`'s
//! command-line tools, `llama-server` and `falsify-server` started on loopback,
//! and `ollama` at `$OLLAMA_HOST`); a TOML file adds more, each either an
//! OpenAI-compatible URL already running or a command falsify starts:
//!
//! ```toml
//! [[engine]]
//! name = "my-server"
//! url = "http://127.0.0.1:8000/v1"        # its OpenAI base URL
//! model = "qwen2.5-coder"                  # optional: the model name requests carry
//! api_key_env = "MY_SERVER_KEY"            # optional: sent as a bearer token
//!
//! [[engine]]
//! name = "my-build"
//! command = ["./server", "--port", "{port}", "-m", "{model}", "-t", "{threads}"]
//! ready = "http://127.0.0.1:{port}/health"  # optional (this is the default)
//! ```
//!
//! A started engine is a child process in its own group ([`crate::util::children`]),
//! so none outlives falsify.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use toml::Spanned;

use crate::baseline::llama_cpp::{LlamaCpp, LlamaServer};
use crate::util::children::{self, GroupChild};

/// The built-in engines' names.
pub const BUILTIN: [&str; 5] = ["falsify", "llama.cpp", "llama-server", "ollama", "falsify-server"];

/// Where an engine comes from and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded engine, in this process.
    InProcess,
    /// llama.cpp's command-line tools (llama-bench, llama-completion).
    LlamaCli,
    /// `llama-server` from the project's llama.cpp build, started on loopback.
    LlamaServer,
    /// An Ollama server at `$OLLAMA_HOST`, through its OpenAI-compatible API.
    Ollama,
    /// This binary's `serve`, started on loopback.
    FalsifyServer,
    /// An OpenAI-compatible endpoint that is already running.
    Url {
        /// Its base URL, ending in `/v1`.
        url: String,
        /// The model name requests carry (default: the model file's stem).
        model: Option<String>,
        /// The environment variable holding its API key, sent as a bearer token.
        api_key_env: Option<String>,
    },
    /// An OpenAI-compatible server falsify starts on a free loopback port.
    Command {
        /// Program and arguments; `{port}`, `{model}` and `{threads}` are replaced.
        command: Vec<String>,
        /// The URL that answers 200 once it is ready (`{port}` replaced).
        ready: String,
        /// The model name requests carry (default: the model file's stem).
        model: Option<String>,
    },
}

/// A named engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// Its name (`llama-server`, `my-server`).
    pub name: String,
    /// How it is reached.
    pub source: Source,
    /// Where it was declared: `built-in` or `file:line:column`.
    pub declared_at: String,
}

/// Every engine known to a run, by name.
#[derive(Debug, Clone)]
pub struct Engines {
    list: Vec<Engine>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    engine: Vec<Spanned<RawEngine>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    name: Spanned<String>,
    url: Option<Spanned<String>>,
    model: Option<String>,
    api_key_env: Option<String>,
    command: Option<Spanned<Vec<String>>>,
    ready: Option<Spanned<String>>,
}

/// The readiness URL of a command engine that names none.
const DEFAULT_READY: &str = "http://127.0.0.1:{port}/health";

impl Engines {
    /// The built-in engines.
    pub fn builtin() -> Engines {
        let source = |name: &str| match name {
            "falsify" => Source::InProcess,
            "llama.cpp" => Source::LlamaCli,
            "llama-server" => Source::LlamaServer,
            "ollama" => Source::Ollama,
            _ => Source::FalsifyServer,
        };
        let list = BUILTIN
            .iter()
            .map(|n| Engine { name: (*n).into(), source: source(n), declared_at: "built-in".into() })
            .collect();
        Engines { list }
    }

    /// Adds the `[[engine]]` tables of `path` (other tables, such as claims,
    /// are left to their own readers); returns how many it added.
    pub fn add_file(&mut self, path: &Path) -> Result<usize, String> {
        let text = crate::util::read_text_limited(path, crate::util::MAX_TEXT_FILE_BYTES).map_err(|e| e.to_string())?;
        self.add_text(&text, &path.display().to_string())
    }

    /// Adds the `[[engine]]` tables of `text`, read from `file` (named in errors
    /// as `file:line:column: message`).
    pub fn add_text(&mut self, text: &str, file: &str) -> Result<usize, String> {
        let at = |offset: usize, message: String| {
            let (line, column) = crate::util::line_col(text, offset);
            format!("{file}:{line}:{column}: {message}")
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| at(e.span().map_or(0, |s| s.start), e.message().trim_end().to_owned()))?;
        let mut added = 0;
        for spanned in raw.engine {
            let start = spanned.span().start;
            let e = spanned.into_inner();
            let name = e.name.get_ref().trim();
            let name_at = e.name.span().start;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(at(name_at, format!("engine name {:?} must be one word", e.name.get_ref())));
            }
            if let Some(known) = self.list.iter().find(|k| k.name == name) {
                return Err(at(name_at, format!("engine `{name}` is already declared ({})", known.declared_at)));
            }
            let source = match (e.url, e.command) {
                (Some(url), None) => {
                    if e.ready.is_some() {
                        return Err(at(start, format!("engine `{name}`: `ready` applies to `command` engines only")));
                    }
                    if !url.get_ref().starts_with("http://") {
                        return Err(at(
                            url.span().start,
                            format!("engine `{name}`: url {:?} must start with http://", url.get_ref()),
                        ));
                    }
                    Source::Url {
                        url: url.into_inner().trim_end_matches('/').to_owned(),
                        model: e.model,
                        api_key_env: e.api_key_env,
                    }
                }
                (None, Some(command)) => {
                    if command.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
                        return Err(at(command.span().start, format!("engine `{name}`: `command` names no program")));
                    }
                    if e.api_key_env.is_some() {
                        return Err(at(start, format!("engine `{name}`: `api_key_env` applies to `url` engines only")));
                    }
                    if !command.get_ref().iter().any(|a| a.contains("{port}")) {
                        return Err(at(
                            command.span().start,
                            format!("engine `{name}`: `command` does not pass the {{port}} placeholder to the server"),
                        ));
                    }
                    let ready = e.ready.map_or(DEFAULT_READY.to_owned(), Spanned::into_inner);
                    Source::Command { command: command.into_inner(), ready, model: e.model }
                }
                _ => return Err(at(start, format!("engine `{name}` needs exactly one of `url` or `command`"))),
            };
            let (line, column) = crate::util::line_col(text, start);
            self.list.push(Engine { name: name.to_owned(), source, declared_at: format!("{file}:{line}:{column}") });
            added += 1;
        }
        Ok(added)
    }

    /// The engine called `name`, or an error naming the known ones.
    pub fn get(&self, name: &str) -> Result<&Engine, String> {
        self.list
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| format!("unknown engine `{name}` (known: {})", self.names().join(", ")))
    }

    /// Every engine's name, built-ins first.
    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|e| e.name.as_str()).collect()
    }
}

/// Why an engine cannot be served: missing on this host (a skip) or broken (an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// It is not present here; the message says what is missing.
    Missing(String),
    /// It failed; the message says how.
    Failed(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Missing(m) | Unavailable::Failed(m) => f.write_str(m),
        }
    }
}

/// How long a server falsify starts may take to become ready, by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// What starting an engine's server needs.
#[derive(Debug, Clone)]
pub struct ServeWith {
    /// The model file.
    pub model: PathBuf,
    /// Threads the server computes with.
    pub threads: usize,
    /// Requests it must serve at once (llama-server's parallel slots).
    pub slots: usize,
    /// This `falsify` binary, for `falsify-server`.
    pub falsify_exe: Option<PathBuf>,
    /// How long a started server may take to become ready.
    pub ready_timeout: Duration,
}

/// An engine's OpenAI-compatible endpoint, with the server behind it when
/// falsify started one (stopped when this is dropped).
pub struct Endpoint {
    /// The engine's name.
    pub engine: String,
    /// Base URL, ending in `/v1`.
    pub base: String,
    /// The model name requests carry.
    pub model: String,
    /// A bearer token to send, if any.
    pub api_key: Option<String>,
    /// The server falsify started, kept running while this lives.
    _server: Option<Server>,
}

enum Server {
    Llama(LlamaServer),
    Child(GroupChild),
}

impl Endpoint {
    /// The process id of the server falsify started, if it started one.
    pub fn server_pid(&self) -> Option<u32> {
        match &self._server {
            Some(Server::Llama(s)) => Some(s.pid()),
            Some(Server::Child(c)) => Some(c.id()),
            None => None,
        }
    }

    /// An endpoint at `base` (ending in `/v1`) that falsify did not start.
    pub fn at(engine: &str, base: &str, model: &str) -> Endpoint {
        Endpoint {
            engine: engine.into(),
            base: base.trim_end_matches('/').into(),
            model: model.into(),
            api_key: None,
            _server: None,
        }
    }
}

/// The name requests carry for `model` by default: the file's stem.
fn model_name(model: &Path) -> String {
    model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
}

/// Ollama's tag for a project model file (`qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`
/// → `qwen2.5-coder:0.5b-instruct-q4_K_M`), else the file's stem.
pub fn ollama_model(model: &Path) -> String {
    let stem = model_name(model);
    match stem.strip_prefix("qwen2.5-coder-").and_then(|r| r.strip_suffix("-instruct-q4_k_m")) {
        Some(size) => format!("qwen2.5-coder:{size}-instruct-q4_K_M"),
        None => stem,
    }
}

/// A free TCP port on loopback.
fn free_port() -> Result<u16, Unavailable> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Unavailable::Failed(format!("no free loopback port: {e}")))
}

/// Starts `argv` (placeholders replaced) and waits until `ready` answers 200.
fn start_command(name: &str, argv: &[String], ready: &str, timeout: Duration) -> Result<GroupChild, Unavailable> {
    let mut child = GroupChild::spawn(
        Command::new(&argv[0]).args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()),
    )
    .map_err(|e| Unavailable::Failed(format!("{name}: {e}")))?;
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            return Err(Unavailable::Failed(format!("{name}: `{}` exited during startup with {status}", argv[0])));
        }
        if matches!(agent.get(ready).call(), Ok(r) if r.status() == 200) {
            return Ok(child);
        }
        if start.elapsed() > timeout {
            return Err(Unavailable::Failed(format!("{name}: {ready} not ready after {} s", timeout.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether this `falsify` binary has the `serve` command.
fn has_serve(exe: &Path) -> bool {
    children::output(Command::new(exe).args(["serve", "--help"]), Some(Duration::from_secs(20)))
        .is_ok_and(|o| o.status.success())
}

impl Engine {
    /// Whether the engine speaks OpenAI's HTTP API (every one but `falsify`
    /// in process and llama.cpp's command-line tools).
    pub fn is_http(&self) -> bool {
        !matches!(self.source, Source::InProcess | Source::LlamaCli)
    }

    /// The engine's endpoint, starting its server when it is one falsify starts.
    pub fn serve(&self, with: &ServeWith) -> Result<Endpoint, Unavailable> {
        let name = &self.name;
        let endpoint = |base: String, model: String, server: Option<Server>| Endpoint {
            engine: name.clone(),
            base,
            model,
            api_key: None,
            _server: server,
        };
        let fill = |s: &str, port: u16| {
            s.replace("{port}", &port.to_string())
                .replace("{model}", &with.model.display().to_string())
                .replace("{threads}", &with.threads.to_string())
        };
        match &self.source {
            Source::InProcess | Source::LlamaCli => Err(Unavailable::Failed(format!(
                "engine `{name}` has no HTTP endpoint (it runs {}); serve it with `falsify-server` or `llama-server`",
                if self.source == Source::InProcess { "in process" } else { "as command-line tools" }
            ))),
            Source::LlamaServer => {
                let llama = LlamaCpp::locate().map_err(|e| Unavailable::Missing(format!("llama.cpp: {e}")))?;
                let slots = with.slots.max(1).to_string();
                let server =
                    LlamaServer::start_with(&llama, &with.model, with.threads, with.ready_timeout, &["-np", &slots])
                        .map_err(|e| Unavailable::Failed(e.to_string()))?;
                let base = format!("{}/v1", server.base_url());
                Ok(endpoint(base, model_name(&with.model), Some(Server::Llama(server))))
            }
            Source::Ollama => {
                let host = std::env::var("OLLAMA_HOST").unwrap_or_default();
                let base = crate::baseline::ollama::base_url(&host).map_err(|e| Unavailable::Failed(e.to_string()))?;
                let probe = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build().get(&base).call();
                if probe.is_err() {
                    return Err(Unavailable::Missing(format!("ollama: no server answers at {base}")));
                }
                Ok(endpoint(format!("{base}/v1"), ollama_model(&with.model), None))
            }
            Source::FalsifyServer => {
                let exe =
                    with.falsify_exe.as_deref().filter(|p| p.is_file()).ok_or_else(|| {
                        Unavailable::Missing("falsify-server: the falsify binary was not found".into())
                    })?;
                if !has_serve(exe) {
                    return Err(Unavailable::Missing(format!(
                        "falsify-server: {} has no `serve` command (this build does not serve over HTTP)",
                        exe.display()
                    )));
                }
                let port = free_port()?;
                let argv: Vec<String> =
                    [&exe.display().to_string(), "serve", "--model", "{model}", "--host", "127.0.0.1"]
                        .into_iter()
                        .chain(["--port", "{port}", "--threads", "{threads}"])
                        .map(|a| fill(a, port))
                        .collect();
                let child = start_command(name, &argv, &fill(DEFAULT_READY, port), with.ready_timeout)?;
                Ok(endpoint(format!("http://127.0.0.1:{port}/v1"), model_name(&with.model), Some(Server::Child(child))))
            }
            Source::Url { url, model, api_key_env } => {
                let api_key = match api_key_env {
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        Unavailable::Missing(format!("engine `{name}`: ${var} (its api_key_env) is not set"))
                    })?),
                    None => None,
                };
                let model = model.clone().unwrap_or_else(|| model_name(&with.model));
                Ok(Endpoint { api_key, ..endpoint(url.clone(), model, None) })
            }
            Source::Command { command, ready, model } => {
                let port = free_port()?;
                let argv: Vec<String> = command.iter().map(|a| fill(a, port)).collect();
                let child = start_command(name, &argv, &fill(ready, port), with.ready_timeout)?;
                let model = model.clone().unwrap_or_else(|| model_name(&with.model));
                Ok(endpoint(format!("http://127.0.0.1:{port}/v1"), model, Some(Server::Child(child))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(text: &str) -> Result<Engines, String> {
        let mut e = Engines::builtin();
        e.add_text(text, "mine.toml").map(|_| e)
    }

    #[test]
    fn the_builtins_are_known_and_an_unknown_name_lists_them() {
        let e = Engines::builtin();
        assert_eq!(e.names(), BUILTIN.to_vec());
        assert_eq!(e.get("llama-server").unwrap().source, Source::LlamaServer);
        assert!(!e.get("falsify").unwrap().is_http());
        let err = e.get("vllm").unwrap_err();
        assert!(err.contains("unknown engine `vllm`") && err.contains("falsify-server"), "{err}");
    }

    #[test]
    fn a_file_adds_url_and_command_engines_beside_claims() {
        let text = "[[claim]]\nid = \"X1\"\n\n[[engine]]\nname = \"my-server\"\nurl = \"http://10.0.0.2:8000/v1/\"\n\
                    api_key_env = \"KEY\"\n\n[[engine]]\nname = \"mine\"\ncommand = [\"./srv\", \"-p\", \"{port}\"]\n";
        let e = added(text).unwrap();
        let url = e.get("my-server").unwrap();
        assert_eq!(
            url.source,
            Source::Url { url: "http://10.0.0.2:8000/v1".into(), model: None, api_key_env: Some("KEY".into()) }
        );
        assert_eq!(url.declared_at, "mine.toml:4:1");
        match &e.get("mine").unwrap().source {
            Source::Command { command, ready, .. } => {
                assert_eq!(command[2], "{port}");
                assert_eq!(ready, DEFAULT_READY);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_claims_file_may_declare_the_engines_its_claims_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine.toml");
        let text = "[[engine]]\nname = \"mine\"\nurl = \"http://127.0.0.1:9/v1\"\n\n[[claim]]\nid = \"X1\"\n\
                    title = \"t\"\ncategory = \"performance\"\ncheck = \"serving\"\nsource = \"s\"\n[claim.params]\n\
                    model = \"0.5b\"\na = \"mine\"\nconcurrency = 1\nmetric = \"throughput_ratio\"\nop = \">=\"\n\
                    threshold = 1.0\n";
        std::fs::write(&file, text).unwrap();
        let registry = crate::claims::checks::Registry::builtin();
        let set = crate::claims::ClaimSet::load(std::slice::from_ref(&file), &registry, false).unwrap();
        assert_eq!(set.claims.len(), 1);
        let mut e = Engines::builtin();
        assert_eq!(e.add_file(&file).unwrap(), 1);
        assert!(e.add_file(&dir.path().join("none.toml")).unwrap_err().contains("none.toml"));
    }

    #[test]
    fn malformed_engine_tables_are_named_at_line_and_column() {
        let cases = [
            ("[[engine]]\nname = \"a\"\nurl = 3\n", "mine.toml:3:7"),
            ("[[engine]]\nname = \"a\"\nurl = \"ftp://x\"\n", "mine.toml:3:7: engine `a`: url"),
            ("[[engine]]\nname = \"a\"\n", "needs exactly one of `url` or `command`"),
            ("[[engine]]\nname = \"a\"\nurl = \"http://x/v1\"\ncommand = [\"s\"]\n", "exactly one"),
            ("[[engine]]\nname = \"a\"\ncommand = [\"s\"]\n", "mine.toml:3:11: engine `a`: `command` does not pass"),
            ("[[engine]]\nname = \"a\"\ncommand = []\n", "names no program"),
            (
                "[[engine]]\nname = \"llama-server\"\nurl = \"http://x/v1\"\n",
                "mine.toml:2:8: engine `llama-server` is already declared (built-in)",
            ),
            ("[[engine]]\nname = \"a\"\nurl = \"http://x/v1\"\nport = 1\n", "mine.toml:4:1: unknown field `port`"),
            ("[[engine]]\nname = \"two words\"\nurl = \"http://x/v1\"\n", "must be one word"),
        ];
        for (text, want) in cases {
            let err = added(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("mine.toml:"), "{err}");
        }
    }

    #[test]
    fn in_process_engines_have_no_endpoint_and_a_command_engine_that_exits_is_an_error() {
        let with = ServeWith {
            model: "m.gguf".into(),
            threads: 1,
            slots: 1,
            falsify_exe: None,
            ready_timeout: Duration::from_secs(5),
        };
        let e = Engines::builtin();
        assert!(
            matches!(e.get("falsify").unwrap().serve(&with), Err(Unavailable::Failed(m)) if m.contains("in process"))
        );
        assert!(matches!(e.get("falsify-server").unwrap().serve(&with), Err(Unavailable::Missing(_))));
        let mut e = Engines::builtin();
        e.add_text("[[engine]]\nname = \"gone\"\ncommand = [\"false\", \"{port}\"]\n", "t.toml").unwrap();
        match e.get("gone").unwrap().serve(&with) {
            Err(Unavailable::Failed(m)) => assert!(m.contains("exited during startup"), "{m}"),
            other => panic!("{:?}", other.map(|p| p.base)),
        }
    }

    #[test]
    fn project_model_files_map_to_ollama_tags() {
        assert_eq!(
            ollama_model(Path::new("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")),
            "qwen2.5-coder:0.5b-instruct-q4_K_M"
        );
        assert_eq!(ollama_model(Path::new("x/other.gguf")), "other");
    }
}
