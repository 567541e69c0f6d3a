//! The HTTP room's one error type. Every variant says which side is at fault, because that
//! decides the answer (4xx to a bad client, 502/504 for a bad or slow server), the access log's
//! termination state, and whether a pooled server connection may be retried.

use std::io;

use crate::config::Loc;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A config line the HTTP room cannot act on (ACL outside the subset, bad header value …).
    #[error("{loc}: {reason}")]
    Config { loc: Loc, reason: String },
    /// The client's request is malformed or ambiguous: answered with `status`, then closed.
    #[error("bad request ({status}): {reason}")]
    BadRequest { status: u16, reason: &'static str },
    /// The server's response is malformed or its framing ambiguous: 502 to the client.
    #[error("bad response from the server: {0}")]
    BadResponse(&'static str),
    /// The client went silent past its timeout.
    #[error("client timeout")]
    ClientTimeout,
    /// The server went silent past `timeout server`.
    #[error("server timeout")]
    ServerTimeout,
    /// The client closed or reset the connection.
    #[error("client closed: {0}")]
    ClientClosed(io::Error),
    /// The server closed or reset the connection before the message was complete.
    #[error("server closed: {0}")]
    ServerClosed(io::Error),
}

impl HttpError {
    pub fn bad_request(status: u16, reason: &'static str) -> HttpError {
        HttpError::BadRequest { status, reason }
    }

    /// An early end of stream, as an error of the side that closed.
    pub fn client_eof() -> HttpError {
        HttpError::ClientClosed(io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    pub fn server_eof() -> HttpError {
        HttpError::ServerClosed(io::Error::from(io::ErrorKind::UnexpectedEof))
    }
}
