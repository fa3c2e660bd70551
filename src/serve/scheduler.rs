//! The scheduler: one OS thread that owns the model and decodes every active
//! request in one batched step ([`Model::forward_batch`]). A new request's
//! prompt is prefilled by its own forward pass, then it joins the batch at
//! the next step; a request whose client has gone is dropped at the next
//! token it would have received.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::engine::{Finish, GenerateOptions, Sequence};
use crate::model::{KvCache, Logits, Model};
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

/// A request being decoded.
struct Active {
    sequence: Sequence,
    events: UnboundedSender<Event>,
    /// Whether it needs no more steps (finished, failed or abandoned).
    over: bool,
}

impl Active {
    /// Chooses the next token from `logits` and sends it, and the end when it is over.
    fn advance(&mut self, logits: &[f32], tokenizer: &Tokenizer) {
        if let Some(token) = self.sequence.choose(logits, tokenizer) {
            // A closed channel: the client has gone.
            self.over = self.events.send(Event::Token(token)).is_err();
        }
        self.end_if_finished();
    }

    fn end_if_finished(&mut self) {
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
}

/// Runs requests from `jobs` until every sender is gone and the last active
/// request is over.
pub(crate) fn run(model: &Model, tokenizer: &Tokenizer, jobs: Receiver<Job>, limits: Limits) {
    let mut active: Vec<Active> = Vec::new();
    let mut logits = Vec::new();
    let vocab = model.config.vocab_size;
    loop {
        if active.is_empty() {
            // Idle: wait for a request.
            match jobs.recv() {
                Ok(job) => admit(model, tokenizer, job, limits, &mut active, &mut logits),
                Err(_) => return,
            }
        }
        while active.len() < limits.max_batch.max(1) {
            match jobs.try_recv() {
                Ok(job) => admit(model, tokenizer, job, limits, &mut active, &mut logits),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        active.retain(|a| !a.over);
        if active.is_empty() {
            continue;
        }
        let mut steps: Vec<(u32, &mut KvCache)> = active
            .iter_mut()
            .map(|a| {
                (*a.sequence.tokens().last().expect("an active sequence has chosen a token"), &mut a.sequence.cache)
            })
            .collect();
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

/// Prefills a new request's prompt and chooses its first token; it joins
/// `active` unless that ended it.
fn admit(
    model: &Model,
    tokenizer: &Tokenizer,
    job: Job,
    limits: Limits,
    active: &mut Vec<Active>,
    logits: &mut Vec<f32>,
) {
    let started = Sequence::new(model, job.prompt.len(), &job.options, limits.context).and_then(|mut sequence| {
        model.forward_into(&job.prompt, &mut sequence.cache, Logits::Last, None, logits)?;
        Ok(sequence)
    });
    let sequence = match started {
        Ok(sequence) => sequence,
        Err(e) => {
            let _ = job.events.send(Event::Failed(e.to_string()));
            return;
        }
    };
    let mut request = Active { sequence, events: job.events, over: false };
    match request.sequence.finish() {
        Some(_) => request.end_if_finished(),
        None => request.advance(logits, tokenizer),
    }
    if !request.over {
        active.push(request);
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
