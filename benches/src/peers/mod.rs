//! Load generators and the backends they talk to.

pub mod backend;
pub mod bulk;
pub mod ingest;
pub mod nginx;
pub mod rate;
pub mod rtmp;
pub mod tls;
pub mod wrk;
