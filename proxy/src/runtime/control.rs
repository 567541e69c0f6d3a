//! What the runtime lends the runtime API ([`api::Control`]): the registry in force, the
//! frontends' connection gates, the certificate files, and (once wired) the reload.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::limit::ConnLimit;
use super::worker::WorkerListener;
use crate::api;
use crate::plan::Registry;

pub struct RuntimeControl {
    registry: ArcSwap<Registry>,
    /// Each frontend's `maxconn` gate, shared by its listeners in every worker.
    limits: Mutex<HashMap<String, Arc<ConnLimit>>>,
    certificates: Mutex<Vec<PathBuf>>,
    /// One descriptor of each listening socket, for `_getsocks`.
    listeners: Mutex<Vec<std::net::TcpListener>>,
}

impl RuntimeControl {
    pub fn new(
        registry: Arc<Registry>,
        limits: HashMap<String, Arc<ConnLimit>>,
        certificates: Vec<PathBuf>,
        listeners: Vec<std::net::TcpListener>,
    ) -> RuntimeControl {
        RuntimeControl {
            registry: ArcSwap::new(registry),
            limits: Mutex::new(limits),
            certificates: Mutex::new(certificates),
            listeners: Mutex::new(listeners),
        }
    }

    /// After a reload: the new plan's registry, gates and certificates, for the commands
    /// that follow.
    pub fn replace(
        &self,
        registry: Arc<Registry>,
        limits: HashMap<String, Arc<ConnLimit>>,
        certificates: Vec<PathBuf>,
    ) {
        // The listening sockets a reload keeps, adds or closes are the reload's to replace
        // here too, once it exists.
        self.registry.store(registry);
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
        *self.certificates.lock().unwrap_or_else(|e| e.into_inner()) = certificates;
    }
}

impl api::Control for RuntimeControl {
    fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    fn reload(&self) -> Result<String, String> {
        Err("reload is not wired to the runtime API yet: send SIGHUP to the process".into())
    }

    fn set_frontend_maxconn(&self, frontend: &str, n: u32) -> Result<(), String> {
        let limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let gate = limits
            .get(frontend)
            .ok_or_else(|| "No such frontend.".to_string())?;
        gate.set_max(n);
        Ok(())
    }

    fn certificates(&self) -> Vec<PathBuf> {
        self.certificates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn listeners(&self) -> Vec<OwnedFd> {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners
            .iter()
            .filter_map(|l| match l.try_clone() {
                Ok(dup) => Some(OwnedFd::from(dup)),
                Err(e) => {
                    log::warn!("_getsocks: cannot duplicate a listening socket: {e}");
                    None
                }
            })
            .collect()
    }
}

/// A descriptor of each listening socket (every worker holds a duplicate of the same
/// socket; the first worker's are copied).
pub(super) fn listening_sockets(
    per_worker: &[Vec<WorkerListener>],
) -> std::io::Result<Vec<std::net::TcpListener>> {
    per_worker
        .first()
        .into_iter()
        .flatten()
        .map(|l| l.socket.try_clone())
        .collect()
}

/// Each frontend's gate, as the listeners of the first worker hold it (every worker's
/// listeners of one frontend share it).
pub(super) fn frontend_gates(
    per_worker: &[Vec<WorkerListener>],
) -> HashMap<String, Arc<ConnLimit>> {
    per_worker
        .first()
        .into_iter()
        .flatten()
        .map(|l| (l.service.name().to_string(), l.limit.clone()))
        .collect()
}
