//! What the runtime lends the runtime API ([`api::Control`]): everything comes from the
//! [`Reloader`], so each command sees the plan in force, and `reload` is the same swap the
//! signals run.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::reload::Reloader;
use crate::api;
use crate::plan::Registry;

pub struct RuntimeControl {
    reloader: Arc<Reloader>,
}

impl RuntimeControl {
    pub fn new(reloader: Arc<Reloader>) -> RuntimeControl {
        RuntimeControl { reloader }
    }
}

impl api::Control for RuntimeControl {
    fn registry(&self) -> Arc<Registry> {
        self.reloader.registry()
    }

    /// HAProxy's master CLI answers `Success=1` or `Success=0` then the messages; the same
    /// here, with the reload's summary line or every problem (`file:line: …`).
    fn reload(&self) -> Result<String, String> {
        match self.reloader.reload() {
            Ok(report) => Ok(format!("Success=1\n--\nreload done: {report}\n")),
            Err(problems) => Err(format!(
                "Success=0\n--\n{}\nreload failed: the running configuration is kept\n",
                problems.join("\n")
            )),
        }
    }

    fn set_frontend_maxconn(&self, frontend: &str, n: u32) -> Result<(), String> {
        let gate = self
            .reloader
            .frontend_limit(frontend)
            .ok_or_else(|| "No such frontend.".to_string())?;
        gate.set_max(Some(n));
        Ok(())
    }

    fn certificates(&self) -> Vec<PathBuf> {
        self.reloader.certificate_files()
    }

    fn listeners(&self) -> Vec<OwnedFd> {
        self.reloader.listening_sockets()
    }

    fn handover(&self, command: &str, stream: std::os::unix::net::UnixStream) {
        if let Err(e) = super::upgrade::answer(command, stream, &self.reloader) {
            log::warn!("upgrade: hand-over failed ({command}): {e}");
        }
    }
}
