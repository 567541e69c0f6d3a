//! The proxy as a library: every room of DESIGN.md lives here; `main.rs` is a thin CLI.

pub mod balance;
pub mod config;
pub mod forward;
pub mod health;
pub mod http;
pub mod log;
pub mod runtime;
pub mod stats;
pub mod tcp;
pub mod tls;
