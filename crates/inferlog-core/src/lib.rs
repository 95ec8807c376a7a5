//! Shared vocabulary of Inferlog: the captured [`Record`], configuration types and their
//! validation, the data [`Layout`], and the [`SharedState`] documents every gateway of a fleet
//! reads. Only the last does I/O (a file or an object store).

pub mod config;
pub mod layout;
#[cfg(any(test, feature = "fuzz-corpus"))]
pub mod fuzz_corpus;
pub mod llm;
pub mod record;
pub mod shared_state;

pub use config::{CaptureSettings, Config, ConfigError, Durability, EndpointSettings};
pub use layout::{EndpointTable, Layout, LayoutError};
pub use record::Record;
pub use shared_state::SharedState;

/// Writes a unit enum variant under its serde name, so what the CLI and the logs print is
/// what config files, JSON and the docs call it (`async`, not `Async`).
pub fn write_serde_name<T: serde::Serialize>(value: &T, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => f.write_str(&name),
        _ => Err(std::fmt::Error),
    }
}

/// `Display` as [`write_serde_name`] for unit-variant enums.
#[macro_export]
macro_rules! display_as_serde_name {
    ($($t:ty),+) => {$(
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $crate::write_serde_name(self, f)
            }
        }
    )+};
}

/// Endpoint names become folder and table names, so they are restricted to a safe alphabet.
pub fn is_valid_endpoint_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
