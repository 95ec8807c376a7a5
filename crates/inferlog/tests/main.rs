//! End-to-end tests: real gateway processes (`inferlog serve`) in front of a real upstream on
//! ephemeral ports, with the tables read back through SQL and through Python's deltalake.

mod support;

mod admin;
mod auth;
mod bad_input;
mod cli;
mod config;
mod crash;
mod deploy;
mod e2e;
mod edge;
mod hostile;
mod interop;
mod llm;
mod log_safety;
mod metrics;
mod monitoring;
mod monitoring_fixes;
mod net;
mod object_store;
mod query_limits;
mod redaction;
mod retention;
mod streaming;
mod tables;
mod tls;
