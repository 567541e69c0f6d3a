//! The proxy as a library: every room lives here (README's Layout says which may import
//! which); `main.rs` is a thin CLI. Listed from the ground floor up.

pub mod api;
pub mod config;
pub mod counters;
pub mod discovery;
pub mod forward;
pub mod health;
pub mod http;
pub mod log;
pub mod nat;
pub mod plan;
pub mod runtime;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod upstream;
