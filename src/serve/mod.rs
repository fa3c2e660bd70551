//! `falsify serve`: the embedded engine behind an OpenAI-compatible HTTP API
//! (`/v1/completions`, `/v1/chat/completions`, `/v1/models`, `/health`), on
//! axum and tokio. The model runs on its own thread ([`scheduler`]), which
//! decodes every active request in one batched step; the HTTP side only
//! reads requests, hands them over and turns the tokens into responses or
//! server-sent events.
//!
//! The server sums every product in a batch-invariant order, by default
//! whole blocks ([`crate::quant::SumOrder::for_serving`]): with llama.cpp's
//! order the last bits of a request's logits would depend on how many other
//! requests share its step, so the same seeded request could give different
//! text under different load. So a request's tokens are those of `falsify
//! --sums blocks generate` on its own, whatever else is served.

pub mod api;
pub mod chat;
mod scheduler;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::TextStream;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use api::{BadRequest, Endpoint, Input, Reply, StopScan};
use scheduler::{Event, Job, Limits};

/// Most prompt tokens one scheduler step takes in beside the decoding
/// requests' tokens: a 512-token prompt costs a decoding request about one
/// prefill's time (about 2 s on 2 cores for the 0.5B model), a bound on its
/// inter-token gap.
const PREFILL_PER_STEP: usize = 512;

/// How `falsify serve` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// Most requests decoded in one batched step; more wait their turn.
    pub max_batch: usize,
    /// Most positions (prompt and generated tokens) of one request, at most the model's context length.
    pub context: usize,
    /// The model's id in `/v1/models` and in responses (the file's stem).
    pub model_id: String,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be listened on.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `host:port` as given.
        address: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// A thread or the async runtime could not start, or the server failed.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
}

/// What every request handler shares.
struct Shared {
    /// Requests for the scheduler.
    jobs: Mutex<mpsc::Sender<Job>>,
    tokenizer: Arc<Tokenizer>,
    model_id: String,
    /// Most positions of one request.
    context: usize,
    /// Unix time the server started (the model's `created`).
    started: u64,
    /// Requests so far (response ids, default seeds).
    requests: AtomicU64,
}

/// A running server: HTTP on one thread, the model on another.
pub struct Server {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    scheduler: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving `model` with `tokenizer`; it stops when [`Server::stop`]
    /// is called or the server is dropped.
    pub fn start(model: Model, tokenizer: Tokenizer, options: &ServeOptions) -> Result<Server, ServeError> {
        Server::launch(model, tokenizer, options, false)
    }

    /// [`Server::start`], also stopping on SIGINT or SIGTERM when `on_signals`.
    fn launch(
        mut model: Model,
        tokenizer: Tokenizer,
        options: &ServeOptions,
        on_signals: bool,
    ) -> Result<Server, ServeError> {
        let address = format!("{}:{}", options.host, options.port);
        let bind = |source| ServeError::Bind { address: address.clone(), source };
        let listener = std::net::TcpListener::bind(&address).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        model.sum_order = model.sum_order.for_serving();
        let context = options.context.min(model.config.context_length);
        let (model, tokenizer) = (Arc::new(model), Arc::new(tokenizer));
        let (jobs, queue) = mpsc::channel();
        let limits = Limits { max_batch: options.max_batch, context, prefill_per_step: PREFILL_PER_STEP };
        let scheduler = scheduler::spawn(model, tokenizer.clone(), queue, limits)
            .map_err(|source| ServeError::Io { what: "cannot start the scheduler thread", source })?;
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let shared = Arc::new(Shared {
            jobs: Mutex::new(jobs),
            tokenizer,
            model_id: options.model_id.clone(),
            context,
            started,
            requests: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("falsify-http")
            .enable_all()
            .build()
            .map_err(|source| ServeError::Io { what: "cannot start the async runtime", source })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = std::thread::Builder::new()
            .name("falsify-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let shutdown = async move {
                        match on_signals {
                            true => tokio::select! { _ = stopped => {}, _ = signalled() => {} },
                            false => {
                                let _ = stopped.await;
                            }
                        }
                    };
                    axum::serve(listener, router(shared)).with_graceful_shutdown(shutdown).await
                })
            })
            .map_err(|source| ServeError::Io { what: "cannot start the HTTP thread", source })?;
        Ok(Server { address: local, stop: Some(stop), http: Some(http), scheduler: Some(scheduler) })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops taking requests, lets those under way finish and waits for both threads.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Waits for the HTTP thread (then the scheduler, whose requests end with it) to end.
    fn join(&mut self) -> Result<(), ServeError> {
        let served = match self.http.take() {
            Some(http) => http.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        };
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        served.map_err(|source| ServeError::Io { what: "the HTTP server failed", source })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// Serves until SIGINT or SIGTERM, after printing `listening on http://HOST:PORT`
/// on stdout once requests are taken.
pub fn serve(model: Model, tokenizer: Tokenizer, options: &ServeOptions) -> Result<(), ServeError> {
    let mut server = Server::launch(model, tokenizer, options, true)?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    writeln!(out, "listening on http://{}", server.address())
        .and_then(|()| out.flush())
        .map_err(|source| ServeError::Io { what: "cannot write to stdout", source })?;
    drop(out);
    server.join()
}

/// Resolves on SIGINT or SIGTERM (never, where they cannot be watched).
async fn signalled() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => if r.is_err() { std::future::pending::<()>().await },
        () = terminate => {},
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(|s, b| generate(s, b, Endpoint::Completions)))
        .route("/v1/chat/completions", post(|s, b| generate(s, b, Endpoint::Chat)))
        .fallback(|| async { failure(StatusCode::NOT_FOUND, "no such endpoint", "invalid_request_error") })
        .with_state(shared)
}

async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{ "id": shared.model_id, "object": "model", "created": shared.started, "owned_by": "falsify" }],
    }))
}

/// An error response in the OpenAI shape.
fn failure(status: StatusCode, message: &str, kind: &str) -> Response {
    (status, Json(api::error(message, kind))).into_response()
}

fn bad_request(message: &str) -> Response {
    failure(StatusCode::BAD_REQUEST, message, "invalid_request_error")
}

/// Handles a generation request: reads it, checks it against the context,
/// hands it to the scheduler and answers whole or as a stream.
async fn generate(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return failure(rejection.status(), &rejection.body_text(), "invalid_request_error"),
    };
    let number = shared.requests.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let request = match api::parse(&body, endpoint, nanos ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
        Ok(request) => request,
        Err(BadRequest(message)) => return bad_request(&message),
    };
    let text = match &request.input {
        Input::Prompt(prompt) => prompt.clone(),
        Input::Messages(messages) => chat::render(messages),
    };
    let prompt = shared.tokenizer.encode(&text, true);
    if prompt.is_empty() {
        return bad_request("prompt: empty (at least one token is needed)");
    }
    let context = shared.context;
    if prompt.len() >= context {
        return bad_request(&format!("the prompt takes {} tokens, the context holds {context}", prompt.len()));
    }
    let room = context - prompt.len();
    let max_tokens = request.max_tokens.unwrap_or(room);
    if max_tokens > room {
        return bad_request(&format!(
            "max_tokens {max_tokens}: after a prompt of {} tokens the context of {context} holds {room} more",
            prompt.len()
        ));
    }
    let mut outputs = Vec::with_capacity(request.n);
    for index in 0..request.n {
        let (events, tokens) = tokio::sync::mpsc::unbounded_channel();
        let job = Job { prompt: prompt.clone(), options: request.options(max_tokens, index), events };
        let sent = shared.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job);
        if sent.is_err() {
            return failure(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down", "server_error");
        }
        outputs.push(Output {
            index,
            tokens,
            tokenizer: shared.tokenizer.clone(),
            text: TextStream::default(),
            stop: StopScan::new(request.stop.clone()),
            generated: 0,
        });
    }
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let reply = Reply {
        id: format!("{prefix}-{number}"),
        created: nanos / 1_000_000_000,
        model: shared.model_id.clone(),
        endpoint,
    };
    match request.stream {
        true => stream(outputs, reply, prompt.len(), request.include_usage),
        false => whole(outputs, reply, prompt.len()).await,
    }
}

/// One choice's tokens from the scheduler, as text cut at its stop strings.
struct Output {
    /// Which choice of the request it is.
    index: usize,
    tokens: UnboundedReceiver<Event>,
    tokenizer: Arc<Tokenizer>,
    text: TextStream,
    stop: StopScan,
    /// Tokens received so far.
    generated: usize,
}

impl Output {
    /// The next text ready to send, with the `finish_reason` once generation
    /// is over, or the reason it failed.
    async fn next(&mut self) -> Result<(String, Option<&'static str>), String> {
        loop {
            match self.tokens.recv().await {
                Some(Event::Token(token)) => {
                    self.generated += 1;
                    let (text, stopped) = self.stop.push(&self.text.push(&self.tokenizer, token));
                    if stopped {
                        // The scheduler drops the request at its next token.
                        self.tokens.close();
                        return Ok((text, Some("stop")));
                    }
                    if !text.is_empty() {
                        return Ok((text, None));
                    }
                }
                Some(Event::Done(finish)) => {
                    let (mut text, stopped) = self.stop.push(&self.text.finish());
                    text.push_str(&self.stop.finish());
                    return Ok((text, Some(api::finish_reason(finish, stopped))));
                }
                Some(Event::Failed(message)) => return Err(message),
                None => return Err("the scheduler stopped before the request ended".into()),
            }
        }
    }

    /// All of this choice's text and its `finish_reason`, once generation is over.
    async fn collect(&mut self) -> Result<(String, &'static str), String> {
        let mut text = String::new();
        loop {
            let (piece, end) = self.next().await?;
            text.push_str(&piece);
            if let Some(reason) = end {
                return Ok((text, reason));
            }
        }
    }
}

/// The whole response, once every choice's generation is over (they run
/// side by side in the scheduler's steps).
async fn whole(mut outputs: Vec<Output>, reply: Reply, prompt_tokens: usize) -> Response {
    let mut choices = Vec::with_capacity(outputs.len());
    for output in &mut outputs {
        match output.collect().await {
            Ok(choice) => choices.push(choice),
            Err(message) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &message, "server_error"),
        }
    }
    let usage = api::usage(prompt_tokens, outputs.iter().map(|o| o.generated).sum());
    Json(reply.complete(&choices, usage)).into_response()
}

/// The response as server-sent events: a chunk per piece of each choice's
/// text as it comes, a closing chunk per choice with its `finish_reason`, the
/// usage chunk when asked for, `[DONE]`.
fn stream(outputs: Vec<Output>, reply: Reply, prompt_tokens: usize, include_usage: bool) -> Response {
    let (events, body) = tokio::sync::mpsc::channel::<SseEvent>(64);
    let reply = Arc::new(reply);
    let choices: Vec<_> =
        outputs.into_iter().map(|output| tokio::spawn(stream_choice(output, reply.clone(), events.clone()))).collect();
    tokio::spawn(async move {
        let mut generated = 0;
        for choice in choices {
            match choice.await {
                Ok(Some(n)) => generated += n,
                // The client has gone, or a choice failed (its error is sent).
                Ok(None) | Err(_) => return,
            }
        }
        if include_usage {
            let usage = reply.usage_chunk(api::usage(prompt_tokens, generated));
            let _ = events.send(SseEvent::default().data(usage.to_string())).await;
        }
        let _ = events.send(SseEvent::default().data("[DONE]")).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(body).map(Ok::<_, Infallible>)).into_response()
}

/// Sends one choice's chunks; its count of generated tokens once it is over,
/// `None` when the client has gone or generation failed.
async fn stream_choice(
    mut output: Output,
    reply: Arc<Reply>,
    events: tokio::sync::mpsc::Sender<SseEvent>,
) -> Option<usize> {
    let send = |value: Value| events.send(SseEvent::default().data(value.to_string()));
    let mut first = true;
    loop {
        let (text, end) = match output.next().await {
            Ok(next) => next,
            Err(message) => {
                let _ = send(api::error(&message, "server_error")).await;
                let _ = events.send(SseEvent::default().data("[DONE]")).await;
                return None;
            }
        };
        if !text.is_empty() {
            send(reply.chunk(output.index, &text, first, None)).await.ok()?;
            first = false;
        }
        if let Some(reason) = end {
            send(reply.chunk(output.index, "", first, Some(reason))).await.ok()?;
            return Some(output.generated);
        }
    }
}

#[cfg(test)]
mod tests;
