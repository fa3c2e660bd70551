//! External engines the embedded one is compared with, run as real processes.

pub mod kl_base;
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
    /// A setting (an environment variable) is malformed.
    #[error("{setting}: {message}")]
    Config {
        /// The setting, with its value.
        setting: String,
        /// What is wrong with it.
        message: String,
    },
    /// Nothing listens at the address (the connection was refused): the one
    /// failure that means the baseline is absent rather than broken.
    #[error("{url}: no server is listening ({message})")]
    NoServer {
        /// The request URL.
        url: String,
        /// The connection error.
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
    /// Whether the baseline is simply not running here (a skip), rather than
    /// misconfigured or broken (an error).
    pub fn is_no_server(&self) -> bool {
        matches!(self, BaselineError::NoServer { .. })
    }

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
