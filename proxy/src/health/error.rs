//! The health room's error: why a check could not get as far as judging an answer. Each
//! maps to one of HAProxy's check statuses (see `Outcome::from_error`).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The connection was refused or failed (L4CON).
    #[error("connection failed: {0}")]
    Connect(io::Error),
    /// No connection within the check's time (L4TOUT).
    #[error("connection timeout")]
    ConnectTimeout,
    /// The connection broke after it was established, before any answer (SOCKERR).
    #[error("socket error: {0}")]
    Socket(io::Error),
    /// `check-ssl`: connected, but the TLS handshake did not finish in time (L6TOUT).
    #[error("TLS handshake timeout")]
    HandshakeTimeout,
    /// `check-ssl`: the TLS handshake failed; HAProxy's text for why (L6RSP).
    #[error("{0}")]
    Handshake(String),
    /// Connected, but no complete answer within the check's time (L7TOUT).
    #[error("response timeout")]
    ResponseTimeout,
}
