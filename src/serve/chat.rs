//! Conversations in the Qwen chat format (ChatML, as the model's GGUF
//! template writes it), and `falsify chat`, a terminal chat on the engine.

use std::io::{BufRead, Write};

use crate::engine::{self, GenerateOptions, TextStream};
use crate::model::{Model, ModelError};
use crate::tokenizer::{Tokenizer, DEFAULT_SYSTEM_PROMPT};

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name, as the template and the OpenAI API write it.
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// The role named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Role> {
        [Role::System, Role::User, Role::Assistant].into_iter().find(|r| r.name() == name)
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// The conversation as the model reads it, ending where the assistant's
/// answer begins: every message as `<|im_start|>role\ncontent<|im_end|>\n`,
/// after Qwen's default system message when the first is not a system one.
pub fn render(messages: &[Message]) -> String {
    let mut out = String::new();
    if messages.first().is_none_or(|m| m.role != Role::System) {
        out.push_str(&format!("<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"));
    }
    for m in messages {
        out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role.name(), m.content));
    }
    out.push_str("<|im_start|>assistant\n");
    out
}

/// How `falsify chat` answers.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Generation of each answer.
    pub generate: GenerateOptions,
    /// The system message (Qwen's default when `None`).
    pub system: Option<String>,
}

/// Why the chat stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Reading the input or writing the answer failed.
    #[error("chat: {0}")]
    Io(#[from] std::io::Error),
    /// The engine refused a turn for a reason other than the context's size.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Chats until `/exit` or the end of `input`: each line is the user's
/// message, and the answer streams to `output` as it is generated. The
/// conversation is kept; when it no longer fits the context, a note on
/// `notes` says so and it starts over. `marker` is written to `notes` before
/// each line is read (for a terminal).
pub fn chat(
    model: &Model,
    tokenizer: &Tokenizer,
    options: &ChatOptions,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    notes: &mut dyn Write,
    marker: &str,
) -> Result<(), ChatError> {
    let opening: Vec<Message> =
        options.system.iter().map(|s| Message { role: Role::System, content: s.clone() }).collect();
    let mut messages = opening.clone();
    let mut line = String::new();
    loop {
        write!(notes, "{marker}")?;
        notes.flush()?;
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let said = line.trim();
        if said == "/exit" {
            return Ok(());
        }
        if said.is_empty() {
            continue;
        }
        messages.push(Message { role: Role::User, content: said.to_owned() });
        let prompt = tokenizer.encode(&render(&messages), true);
        let mut text = TextStream::default();
        let mut written = Ok(());
        let answer = engine::generate(model, tokenizer, &prompt, &options.generate, |token| {
            if written.is_ok() {
                written = output.write_all(text.push(tokenizer, token).as_bytes()).and_then(|()| output.flush());
            }
        });
        written?;
        match answer {
            Ok(answer) => {
                writeln!(output, "{}", text.finish())?;
                messages.push(Message { role: Role::Assistant, content: answer.text });
            }
            Err(ModelError::ContextLength { needed, context, .. }) => {
                writeln!(
                    notes,
                    "note: the conversation takes {needed} tokens, more than the context of {context}; starting over"
                )?;
                messages.clone_from(&opening);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// [`chat`] on stdin and stdout, with a `> ` marker on stderr when stdin is a terminal.
pub fn run_in_terminal(model: &Model, tokenizer: &Tokenizer, options: &ChatOptions) -> Result<(), ChatError> {
    use std::io::IsTerminal;
    let marker = if std::io::stdin().is_terminal() { "> " } else { "" };
    chat(
        model,
        tokenizer,
        options,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr(),
        marker,
    )
}
