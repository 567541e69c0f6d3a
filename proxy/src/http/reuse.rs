//! `http-reuse`: when a request may go on an idle server connection another request used
//! before, and whether a request may be sent again after such a connection failed under it.

use crate::config::HttpReuse;
use crate::upstream::Server;

/// Which pooled connections a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// None: a fresh connection.
    Fresh,
    /// Only one that has already served two requests or more (proven to keep connections
    /// alive properly): `aggressive` for a session's first request.
    Proven,
    /// Any idle one.
    Any,
}

/// What `mode` allows for a request. `first`: the first request of its client connection
/// (HAProxy's `safe` sends it on a connection of its own, so that a client's first request
/// never lands on another client's connection: if the server closes that connection at the
/// same moment, the failure is the client's to see, not a request silently lost).
/// Non-idempotent requests are never put on a pooled connection except with `always`: they
/// may not be sent twice (RFC 9110 §9.2.2), so a connection that dies under them would
/// cost the client a 502 rather than a transparent retry.
/// With `never` the only idle connection offered is the client's own ([`pools`]).
pub fn take(mode: HttpReuse, first: bool, idempotent: bool) -> Take {
    match mode {
        HttpReuse::Always => Take::Any,
        _ if !idempotent => Take::Fresh,
        HttpReuse::Never => Take::Any,
        HttpReuse::Safe if first => Take::Fresh,
        HttpReuse::Aggressive if first => Take::Proven,
        HttpReuse::Safe | HttpReuse::Aggressive => Take::Any,
    }
}

/// Whether a finished exchange's connection goes back to the worker's shared pool; with
/// `never` it stays private to its client connection instead, as HAProxy keeps it.
pub fn pools(mode: HttpReuse) -> bool {
    mode != HttpReuse::Never
}

/// Whether connections to `server` go to the worker's shared pool: not under `never`, and
/// not when they began with a PROXY header (it names one client for the connection's life);
/// otherwise they stay private to their client connection, as HAProxy keeps them.
pub fn shared(mode: HttpReuse, server: &Server) -> bool {
    pools(mode) && !server.sends_proxy_header()
}

/// RFC 9110 §9.2.2: requests that may be sent again after a failure without changing what
/// the server ends up with.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_haproxy() {
        use HttpReuse::*;
        assert_eq!(
            take(Safe, true, true),
            Take::Fresh,
            "a first request goes alone"
        );
        assert_eq!(take(Safe, false, true), Take::Any);
        assert_eq!(take(Aggressive, true, true), Take::Proven);
        assert_eq!(take(Aggressive, false, true), Take::Any);
        assert_eq!(take(Always, true, false), Take::Any);
        assert_eq!(
            take(Never, false, true),
            Take::Any,
            "its own connection only"
        );
        assert_eq!(take(Never, false, false), Take::Fresh);
        assert_eq!(
            take(Safe, false, false),
            Take::Fresh,
            "a POST never rides a pooled one"
        );
        assert_eq!(take(Aggressive, false, false), Take::Fresh);
        assert!(!pools(Never) && pools(Safe));
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get"] {
            assert!(!is_idempotent(m), "{m}");
        }
    }
}
