//! The bench library's one error type; `main` turns it into `anyhow` at the edge.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {what}: {text:?}")]
    Parse { what: String, text: String },
    /// A hop (HAProxy, this proxy) or a backend that did not come up or died.
    #[error("{what}: {why}")]
    Peer { what: String, why: String },
    /// The load did not behave: flows failed, bytes lost, nothing measured.
    #[error("run failed: {0}")]
    Run(String),
}

impl BenchError {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn peer(what: impl Into<String>, why: impl Into<String>) -> Self {
        BenchError::Peer {
            what: what.into(),
            why: why.into(),
        }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
