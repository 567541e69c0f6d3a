//! The proxy as a library: every room of DESIGN.md lives here; `main.rs` is a thin CLI.

pub mod config;
