//! `mode tcp` sessions: accept → pick a server → connect (retries, redispatch) → forward.

mod connect;
mod session;

pub use session::{run_session, session_count, Backend, Frontend};
