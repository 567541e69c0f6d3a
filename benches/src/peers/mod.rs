//! Load generators and the backends they talk to.

pub mod backend;
pub mod bulk;
pub mod datagram;
pub mod dnsmasq;
pub mod h2load;
pub mod idle;
pub mod ingest;
pub mod nginx;
pub mod rate;
pub mod rtmp;
pub mod srt;
pub mod tls;
pub mod udp_backend;
pub mod wrk;

use crate::error::{BenchError, Result};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A load generator: its threads and the figures they share with the orchestrator, which
/// carry the flag that stops those threads. Dropping it raises the flag and waits for the
/// threads, so a failed run leaves no load behind.
pub struct Threads<S: Send + Sync + 'static> {
    pub shared: Arc<S>,
    stop_flag: fn(&S) -> &AtomicBool,
    handles: Vec<JoinHandle<()>>,
}

impl<S: Send + Sync + 'static> Threads<S> {
    /// `stop_flag` finds the stop flag in the figures.
    pub fn new(shared: S, stop_flag: fn(&S) -> &AtomicBool) -> Threads<S> {
        Threads {
            shared: Arc::new(shared),
            stop_flag,
            handles: Vec::new(),
        }
    }

    /// Starts one thread named `name` on the shared figures; `what` names it in errors.
    pub fn spawn(
        &mut self,
        name: &str,
        what: &str,
        run: impl FnOnce(Arc<S>) + Send + 'static,
    ) -> Result<()> {
        let s = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(s))
            .map_err(|e| BenchError::io(format!("spawn {what} thread"), e))?;
        self.handles.push(handle);
        Ok(())
    }

    /// Raises the stop flag and waits for every thread to end.
    pub fn stop(&mut self) {
        (self.stop_flag)(&self.shared).store(true, Relaxed);
        for t in self.handles.drain(..) {
            let _ = t.join();
        }
    }
}

impl<S: Send + Sync + 'static> Drop for Threads<S> {
    fn drop(&mut self) {
        self.stop();
    }
}
