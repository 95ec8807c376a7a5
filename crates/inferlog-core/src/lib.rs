//! Shared vocabulary of Inferlog: the captured [`Record`], configuration types and their
//! validation. No I/O happens here, so every other crate can depend on it cheaply.

pub mod config;
#[cfg(any(test, feature = "fuzz-corpus"))]
pub mod fuzz_corpus;
pub mod llm;
pub mod record;

pub use config::{CaptureSettings, Config, ConfigError, Durability, EndpointSettings};
pub use record::Record;

/// Endpoint names become folder and table names, so they are restricted to a safe alphabet.
pub fn is_valid_endpoint_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
