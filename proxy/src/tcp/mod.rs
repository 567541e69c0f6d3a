//! `mode tcp` sessions: accept → pick a server and connect (the `upstream` room) → forward.

mod session;

pub use session::{run_session, run_tls_session, Backend, Frontend};
