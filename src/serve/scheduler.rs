//! The scheduler: one OS thread that owns the model and runs every active
//! request in one batched step ([`Model::forward_batch`]): a new request's
//! whole prompt joins the step after it arrives, beside the decoding
//! requests' last tokens. A request whose client has gone is dropped at the
//! next token it would have received.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::engine::{Finish, GenerateOptions, Sequence};
use crate::model::{KvCache, Model};
use crate::tokenizer::Tokenizer;

/// A request for the scheduler: a prompt and what to generate after it.
#[derive(Debug)]
pub(crate) struct Job {
    /// The prompt's tokens (at least one).
    pub prompt: Vec<u32>,
    /// Tokens to generate and how to choose them.
    pub options: GenerateOptions,
    /// Where the tokens go, as they are chosen.
    pub events: UnboundedSender<Event>,
}

/// What the scheduler tells a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// The next token chosen.
    Token(u32),
    /// Generation is over, for this reason.
    Done(Finish),
    /// The request could not run (the message says why).
    Failed(String),
}

/// A request being served.
struct Active {
    sequence: Sequence,
    events: UnboundedSender<Event>,
    /// Its prompt, until the step that runs it.
    prompt: Option<Vec<u32>>,
    /// Whether it needs no more steps (finished, failed or abandoned).
    over: bool,
}

impl Active {
    /// The tokens this request puts into the next step: its whole prompt the
    /// first time, then the token it chose last.
    fn step_tokens(&self) -> &[u32] {
        match &self.prompt {
            Some(prompt) => prompt,
            None => {
                std::slice::from_ref(self.sequence.tokens().last().expect("a decoding sequence has chosen a token"))
            }
        }
    }

    /// Takes the logits of its last position run: chooses the next token and
    /// sends it, and the end when it is over.
    fn advance(&mut self, logits: &[f32], tokenizer: &Tokenizer) {
        self.prompt = None;
        if self.sequence.finish().is_none() {
            if let Some(token) = self.sequence.choose(logits, tokenizer) {
                // A closed channel: the client has gone.
                self.over = self.events.send(Event::Token(token)).is_err();
            }
        }
        if let Some(finish) = self.sequence.finish() {
            let _ = self.events.send(Event::Done(finish));
            self.over = true;
        }
    }
}

/// How the scheduler runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most sequences decoded in one step; more requests wait their turn.
    pub max_batch: usize,
    /// Most positions (prompt and generated tokens) of one sequence.
    pub context: usize,
    /// Most prompt tokens one step takes in besides the decoding sequences'
    /// tokens (a longer prompt still runs, alone among the new ones): a bound
    /// on how long the requests already decoding wait for new ones.
    pub prefill_per_step: usize,
}

/// Runs requests from `jobs` until every sender is gone and the last active
/// request is over. Each step runs, as one batch, the token every decoding
/// request chose last and the whole prompt of each request admitted since
/// the previous step ([`Model::forward_batch`]), so a new request neither waits
/// for the others to finish nor stops them for a pass of its own.
pub(crate) fn run(model: &Model, tokenizer: &Tokenizer, jobs: Receiver<Job>, limits: Limits) {
    let mut active: Vec<Active> = Vec::new();
    let mut logits = Vec::new();
    let vocab = model.config.vocab_size;
    let mut held: Option<Job> = None;
    loop {
        if active.is_empty() && held.is_none() {
            // Idle: wait for a request.
            match jobs.recv() {
                Ok(job) => held = Some(job),
                Err(_) => return,
            }
        }
        let mut prefill = 0;
        while active.len() < limits.max_batch.max(1) {
            let job = match held.take() {
                Some(job) => job,
                None => match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            if prefill > 0 && prefill + job.prompt.len() > limits.prefill_per_step {
                held = Some(job);
                break;
            }
            prefill += job.prompt.len();
            admit(model, job, limits, &mut active);
        }
        active.retain(|a| !a.over);
        if active.is_empty() {
            continue;
        }
        let tokens: Vec<Vec<u32>> = active.iter().map(|a| a.step_tokens().to_vec()).collect();
        let mut steps: Vec<(&[u32], &mut KvCache)> =
            tokens.iter().zip(active.iter_mut()).map(|(t, a)| (t.as_slice(), &mut a.sequence.cache)).collect();
        match model.forward_batch(&mut steps, &mut logits) {
            Ok(()) => {
                for (a, row) in active.iter_mut().zip(logits.chunks_exact(vocab)) {
                    a.advance(row, tokenizer);
                }
            }
            Err(e) => {
                for a in &mut active {
                    let _ = a.events.send(Event::Failed(e.to_string()));
                    a.over = true;
                }
            }
        }
        active.retain(|a| !a.over);
    }
}

/// Starts a new request: its cache, and its prompt for the next step.
fn admit(model: &Model, job: Job, limits: Limits, active: &mut Vec<Active>) {
    match Sequence::new(model, job.prompt.len(), &job.options, limits.context) {
        Ok(sequence) => active.push(Active { sequence, events: job.events, prompt: Some(job.prompt), over: false }),
        Err(e) => {
            let _ = job.events.send(Event::Failed(e.to_string()));
        }
    }
}

/// Starts the scheduler on its own thread, sharing `model` and `tokenizer`.
pub(crate) fn spawn(
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    jobs: Receiver<Job>,
    limits: Limits,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("falsify-scheduler".into()).spawn(move || run(&model, &tokenizer, jobs, limits))
}
