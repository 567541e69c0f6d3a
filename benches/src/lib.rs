//! `cargo xtask bench`: the same workloads against a direct connection, HAProxy and this proxy,
//! with whole-machine CPU accounting. `main.rs` is the CLI; everything else lives here.

pub mod dnschange;
pub mod error;
pub mod hop;
pub mod machine;
pub mod measure;
pub mod netns;
pub mod nsrun;
pub mod peers;
pub mod pin;
pub mod procfs;
pub mod profile;
pub mod record;
pub mod reload;
pub mod report;
pub mod scenario;
pub mod srtingest;
pub mod stats;
pub mod udphop;
pub mod vm;

pub use error::{BenchError, Result};
