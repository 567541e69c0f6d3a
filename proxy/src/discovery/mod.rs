//! Servers discovered through DNS: the `resolvers` sections' client and the slots it fills
//! (`server … resolvers R`, `server-template`). It runs on a thread and event loop of its own,
//! so a slow nameserver never delays a worker; it changes servers only through the upstream
//! room's run-time calls (address, weight, administrative state), which the data path and
//! the health checker read through atomics.
//!
//! One concern per file: `query` builds a query, `answer` reads one (defensively: network
//! input), `client` runs one bounded resolution over the section's nameservers, `udp` and
//! `tcp` one exchange each (`frame`: the length prefix of DNS over TCP), `records` turns a
//! name into records (A/AAAA or SRV), `slots` decides which slot a record takes (no I/O),
//! `watch` follows one name over time, `error` names what went wrong.

mod answer;
mod client;
mod error;
#[cfg(test)]
mod fake;
mod frame;
mod query;
mod records;
mod slots;
mod tcp;
mod udp;
mod watch;

pub use answer::{parse_answer, Answer, Srv};
pub use error::DnsError;

use std::io;
use std::sync::Arc;

use crate::config::{Config, Resolvers};
use crate::upstream::ServerSet;

use watch::{Group, Timing};

/// Starts the resolver thread when some server follows DNS; `sets` are the backends' server
/// sets the data path uses. `runtime` builds the thread's event loop (the runtime room's
/// driver choice, handed down).
pub fn spawn(
    cfg: &Config,
    sets: &[Arc<ServerSet>],
    runtime: impl FnOnce() -> io::Result<compio::runtime::Runtime> + Send + 'static,
) -> io::Result<Option<std::thread::JoinHandle<()>>> {
    let followed: Vec<(Group, Resolvers)> = groups(cfg, sets);
    if followed.is_empty() {
        return Ok(None);
    }
    let handle = std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("DNS resolver cannot start its runtime: {e}; servers keep their start addresses");
                    return;
                }
            };
            rt.block_on(run(followed));
        })?;
    Ok(Some(handle))
}

async fn run(followed: Vec<(Group, Resolvers)>) {
    let tasks: Vec<_> = followed
        .into_iter()
        .map(|(group, r)| {
            let timing = Timing {
                hold: r.hold,
                resolve: r.resolve,
            };
            let client = Arc::new(client::Client::new(&r));
            compio::runtime::spawn(watch::follow(group, client, timing))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// One group per name and backend: a `server-template`'s slots, or one `server` line.
fn groups(cfg: &Config, sets: &[Arc<ServerSet>]) -> Vec<(Group, Resolvers)> {
    let mut out: Vec<(Group, Resolvers)> = Vec::new();
    for p in cfg.proxies.iter().filter(|p| p.kind.has_backend()) {
        let Some(set) = sets.iter().find(|s| s.backend == p.name) else {
            continue;
        };
        for s in &p.servers {
            let Some(dns) = &s.dns else { continue };
            let Some(r) = cfg.resolvers.iter().find(|r| r.name == dns.resolvers) else {
                continue;
            };
            let same = |g: &Group| g.backend == p.name && g.slots_of(&dns.group);
            match out.iter_mut().find(|(g, _)| same(g)) {
                Some((g, _)) => g.slots.push(s.name.clone()),
                None => out.push((
                    Group {
                        set: Arc::downgrade(set),
                        backend: p.name.clone(),
                        slots: vec![s.name.clone()],
                        group: dns.group.clone(),
                        fqdn: dns.fqdn.clone(),
                        port: s.addr.port(),
                        prefer: s.params.resolve_prefer,
                        srv: dns.is_srv(),
                        resolvers: r.name.clone(),
                    },
                    r.clone(),
                )),
            }
        }
    }
    out
}
