//! The upstream side, for `mode tcp` and `mode http` alike: a backend's servers and their
//! live state, the balancing algorithms, the backend and server queues, and reaching a server
//! with HAProxy's `retries` and `option redispatch` (and the PROXY protocol header it may
//! want first, `proxy_proto`, whose decoder `accept-proxy` binds share). `health` writes
//! server state here; the sessions of both modes read it.

mod backend;
pub mod connect;
mod hash;
pub mod proxy_proto;
mod queue;
mod server;
mod set;

pub use backend::Backend;
pub use connect::{connect_server, ConnectFailure, Connected, Failed};
pub use proxy_proto::Origin;
pub use queue::{Queue, Waiting};
pub use server::{Admin, Server, ServerClaim, ServerState};
pub use set::{Members, MembershipError, PickContext, RequestKey, ServerSet};

#[cfg(test)]
mod tests;
