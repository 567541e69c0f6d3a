//! `mode tcp` sessions: accept → pick a server → connect (retries, redispatch) → forward.

/// Shared with `mode http`, which brings its own first server (see `connect_from`).
pub(crate) mod connect;
mod session;

pub use session::{run_session, run_tls_session, session_count, Backend, Frontend};
/// Shared with `mode http`: the session counter guard and the TLS handshake of a `bind … ssl`.
pub(crate) use session::{tls_handshake, Count};
