//! HTTP/2 to clients (`bind … ssl … alpn h2,http/1.1` in `mode http`), to HTTP/1.1 servers.
//!
//! The protocol (framing, HPACK, flow control, stream states, SETTINGS) is the `h2` crate's;
//! what happens to each request is the same code as for HTTP/1.1: every stream runs the shared
//! exchange (`serve.rs`: frontend rules, `use_backend`, backend rules, stats, `forwardfor`,
//! persistence, the pooled server connection, response rules, httplog line, counters) with a
//! stream as its client end.
//!
//! Modules, one concern each:
//! - `io`: the TLS stream under h2's IO traits, on the worker's compio runtime;
//! - `conn`: one connection: preface, the streams driven side by side, limits, Rapid Reset;
//! - `stream`: one stream as an exchange's client end (bodies, flow control, resets);
//! - `convert`: HTTP/2 heads to and from the proxy's HTTP/1.1 model.
//!
//! WebSocket stays on HTTP/1.1: extended CONNECT (RFC 8441) is not advertised, so a browser
//! opens its WebSocket on an HTTP/1.1 connection of its own.

mod conn;
mod convert;
mod io;
mod stream;

#[cfg(any(fuzzing, test))]
pub(super) mod fuzzing;

pub(crate) use conn::serve;
