//! The single error type shared by all parsers.

/// Why a body could not be turned into rows.
///
/// A single human-readable line (e.g. `request is not JSON: expected value at
/// line 1 column 1`), meant to be stored next to the raw body so an operator
/// can see why a capture was not split into columns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

impl PayloadError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Renders an input-derived string (a key or tensor name) for an error
/// message: escaped so the message stays on one line, and truncated so a
/// hostile name cannot make the message huge.
pub(crate) fn shown(raw: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out: String = raw
        .chars()
        .take(MAX_CHARS)
        .collect::<String>()
        .escape_debug()
        .collect();
    if raw.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}
