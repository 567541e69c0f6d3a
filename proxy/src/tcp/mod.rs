//! `mode tcp` sessions: accept → pick a server and connect (the `upstream` room) → forward.
//! A plain flow may also leave for, or arrive from, another process in a binary upgrade.

mod adopt;
pub mod handover;
mod session;

pub use adopt::run_adopted;
pub use session::{run_session, run_tls_session, Backend, Frontend};
