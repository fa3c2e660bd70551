//! External engines the embedded one is compared with, run as real processes.

pub mod llama_cpp;
pub mod ollama;
pub mod recorded;

/// Why a baseline could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The baseline is not installed here.
    #[error("{what} not found at {path} ({hint})")]
    Missing {
        /// The missing piece.
        what: String,
        /// Where it was looked for.
        path: String,
        /// How to provide it.
        hint: &'static str,
    },
    /// A process could not be started or failed.
    #[error("{program}: {message}")]
    Process {
        /// The program.
        program: String,
        /// What went wrong.
        message: String,
    },
    /// An HTTP request failed or timed out.
    #[error("{url}: {message}")]
    Http {
        /// The request URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A response did not have the expected shape.
    #[error("unexpected response from {from}: {message}")]
    BadResponse {
        /// Which endpoint.
        from: String,
        /// What was wrong.
        message: String,
    },
}

impl BaselineError {
    /// An HTTP failure, without repeating the URL that ureq's message already starts with.
    pub fn http(url: &str, e: &dyn std::fmt::Display) -> BaselineError {
        BaselineError::Http { url: url.to_owned(), message: without_url(url, e) }
    }
}

/// An error's text without a leading "URL: ".
pub(crate) fn without_url(url: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    text.strip_prefix(&format!("{url}: ")).unwrap_or(&text).to_owned()
}
