//! One name followed for its slots: resolve, fill or free the slots, sleep for the TTL
//! (between `timeout resolve` and `hold valid`), again. Errors keep the last valid answer
//! for their `hold` period; then the slots go to maintenance.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;

use super::client::{Client, Notice};
use super::error::DnsError;
use super::records::{self, Resolved};
use super::slots::{self, Change, Found, Slot};
use crate::config::{Hold, IpFamily};
use crate::upstream::{Admin, Server, ServerSet, ServerState};

/// The servers one name fills, in slot order.
pub struct Group {
    /// Weak: once the plan that owns the backend is gone (a reload replaced it), the name
    /// is no longer followed.
    pub set: Weak<ServerSet>,
    pub backend: String,
    pub slots: Vec<String>,
    /// The `server-template` name (or the `server`'s own).
    pub group: String,
    pub fqdn: String,
    /// The port of A/AAAA records (SRV records carry their own).
    pub port: u16,
    pub prefer: IpFamily,
    pub srv: bool,
    pub resolvers: String,
}

impl Group {
    pub fn slots_of(&self, group: &str) -> bool {
        self.group == group
    }
}

/// The timing of a `resolvers` section.
#[derive(Clone, Copy)]
pub struct Timing {
    pub hold: Hold,
    pub resolve: Duration,
}

pub async fn follow(group: Group, client: Arc<Client>, timing: Timing) {
    let name = match super::query::name(&group.fqdn) {
        Ok(n) => n,
        Err(e) => {
            log::error!("DNS: {}/{}: {e}; not followed", group.backend, group.fqdn);
            return;
        }
    };
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    if let Some(set) = group.set.upgrade() {
        for s in group.slots.iter().filter_map(|n| set.server(n)) {
            if s.has_addr() {
                seen.insert(s.name.clone(), started);
            }
        }
    }
    let mut last_valid = started;
    // One warning per name and kind of dropped packet until an answer is good again.
    let warned = Cell::new(0u8);
    // Answers asked again over TCP: said once per name, not at every resolution.
    let over_tcp = Cell::new(false);
    loop {
        let told = |ns: SocketAddr, n: Notice<'_>| match n {
            Notice::OverTcp => say_over_tcp_once(&over_tcp, &group, ns),
            n => warn_once(&warned, &group, ns, n),
        };
        let outcome = resolve(&group, &client, &name, &told).await;
        let Some(set) = group.set.upgrade() else {
            log::info!(
                "DNS: {}: backend {} is gone; no longer followed",
                group.fqdn,
                group.backend
            );
            return;
        };
        let now = Instant::now();
        let wait = match outcome {
            Ok(r) => {
                warned.set(0);
                last_valid = now;
                apply(&group, &set, &mut seen, &r.found, now, timing.hold.obsolete);
                next_resolution(r.ttl, timing)
            }
            Err(e) => {
                let hold = hold_of(&timing.hold, &e);
                log::warn!(
                    "DNS: {}: {e} (resolvers {}); last valid answer {:?} ago, kept for {hold:?}",
                    group.fqdn,
                    group.resolvers,
                    now.duration_since(last_valid)
                );
                if now.duration_since(last_valid) > hold {
                    apply(&group, &set, &mut seen, &[], now, Duration::ZERO);
                }
                timing.resolve
            }
        };
        compio::time::sleep(wait).await;
    }
}

async fn resolve(
    group: &Group,
    client: &Client,
    name: &Name,
    told: &dyn Fn(SocketAddr, Notice<'_>),
) -> Result<Resolved, DnsError> {
    if group.srv {
        records::services(client, name, group.prefer, told).await
    } else {
        records::addresses(client, name, group.port, group.prefer, told).await
    }
}

/// The record TTL, no sooner than `timeout resolve` and no later than `hold valid`.
fn next_resolution(ttl: Option<u32>, t: Timing) -> Duration {
    let ttl = ttl.map_or(t.hold.valid, |s| Duration::from_secs(u64::from(s)));
    ttl.min(t.hold.valid).max(t.resolve)
}

fn hold_of(hold: &Hold, e: &DnsError) -> Duration {
    match e {
        DnsError::NxDomain => hold.nx,
        DnsError::Refused => hold.refused,
        DnsError::Timeout | DnsError::Io(_) => hold.timeout,
        _ => hold.other,
    }
}

/// A packet that changed nothing: one warning per kind until an answer is good again.
fn warn_once(warned: &Cell<u8>, group: &Group, ns: SocketAddr, n: Notice<'_>) {
    let (bit, what) = match n {
        Notice::Dropped(e @ DnsError::Malformed(_)) => (1, e.to_string()),
        Notice::Dropped(e @ DnsError::Truncated) => (2, e.to_string()),
        Notice::TcpFailed(e) => (
            2,
            format!(
                "{}, and asking again over TCP failed ({e})",
                DnsError::Truncated
            ),
        ),
        Notice::Dropped(e) => (4, e.to_string()),
        Notice::OverTcp => return,
    };
    if warned.get() & bit == 0 {
        warned.set(warned.get() | bit);
        log::warn!(
            "DNS: {}: {what} from {ns}: ignored, nothing changed (logged once until a valid \
             answer)",
            group.fqdn
        );
    }
}

/// Answers too large for `accepted_payload_size` work, at the cost of a second query:
/// worth saying, once.
fn say_over_tcp_once(said: &Cell<bool>, group: &Group, ns: SocketAddr) {
    if !said.replace(true) {
        log::info!(
            "DNS: {}: truncated answer (TC bit set) from {ns}: asked again over TCP, whose \
             answer is used (logged once; a larger accepted_payload_size in resolvers {} \
             saves the second query)",
            group.fqdn,
            group.resolvers
        );
    }
}

/// Applies the answer's records to the group's slots.
fn apply(
    group: &Group,
    set: &ServerSet,
    seen: &mut HashMap<String, Instant>,
    found: &[Found],
    now: Instant,
    obsolete: Duration,
) {
    let servers: Vec<Arc<Server>> = group.slots.iter().filter_map(|n| set.server(n)).collect();
    let view: Vec<Slot> = servers
        .iter()
        .map(|s| Slot {
            addr: s.has_addr().then(|| s.addr()),
            seen: seen.get(&s.name).copied(),
        })
        .collect();
    // In address order, not the DNS server's (which may rotate): instances that start from
    // the same records give them the same slots, so slot-named hashing agrees across them.
    let mut found = found.to_vec();
    found.sort_by_key(|f| f.addr);
    let (changes, waiting) = slots::assign(&view, &found, now, obsolete);
    if waiting > 0 {
        log::warn!(
            "DNS: {}: {waiting} record(s) found no free slot in backend {}",
            group.fqdn,
            set.backend
        );
    }
    for (server, change) in servers.iter().zip(changes) {
        match change {
            Change::Seen { weight } => {
                seen.insert(server.name.clone(), now);
                set_weight(set, server, weight);
            }
            Change::Fill(f) => {
                seen.insert(server.name.clone(), now);
                fill(group, set, server, f);
            }
            Change::Free => {
                seen.remove(&server.name);
                free(group, set, server);
            }
            Change::Held | Change::Idle => {}
        }
    }
}

fn set_weight(set: &ServerSet, server: &Server, weight: Option<u32>) {
    if let Some(w) = weight.filter(|w| *w != server.weight()) {
        set.set_weight(server, w);
    }
}

/// A new record in this slot: with `check`, traffic waits for the checks to pass (`rise`).
fn fill(group: &Group, set: &ServerSet, server: &Server, f: Found) {
    if server.params.check {
        server.set_state(ServerState::Down);
    }
    server.set_addr(f.addr);
    set_weight(set, server, f.weight);
    if !server.params.disabled {
        server.set_admin(Admin::Ready);
    }
    log::warn!(
        "Server {}/{} is taking address {} from DNS ({}){}",
        set.backend,
        server.name,
        f.addr,
        group.fqdn,
        if server.params.check {
            "; traffic after its checks pass"
        } else {
            ""
        }
    );
}

/// The record is gone: maintenance (established flows go on), no address.
fn free(group: &Group, set: &ServerSet, server: &Server) {
    let was = server.addr();
    server.set_admin(Admin::Maint);
    let none: IpAddr = match was {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    server.set_addr(SocketAddr::new(none, was.port()));
    log::warn!(
        "Server {}/{} is going into maintenance: its DNS record ({}, {was}) is gone; \
         {} established connection(s) continue",
        set.backend,
        server.name,
        group.fqdn,
        server.current()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend with a checked three-slot template, no record yet, as the config room
    /// builds it.
    fn template() -> (Arc<ServerSet>, Group) {
        let text = "resolvers dns\n    nameserver a 127.0.0.53:53\n\
                    backend b\n    server-template s 3 ams.test:80 check resolvers dns \
                    init-addr none resolve-prefer ipv4\n";
        let cfg = crate::config::parse_str(text, std::path::Path::new("t.cfg")).expect("valid");
        let set = Arc::new(ServerSet::from_config(cfg.proxy("b").expect("backend")));
        let group = Group {
            set: Arc::downgrade(&set),
            backend: "b".into(),
            slots: vec!["s1".into(), "s2".into(), "s3".into()],
            group: "s".into(),
            fqdn: "ams.test".into(),
            port: 80,
            prefer: IpFamily::V4,
            srv: false,
            resolvers: "dns".into(),
        };
        (set, group)
    }

    fn found(last: u8, weight: Option<u32>) -> Found {
        Found {
            addr: SocketAddr::from(([10, 0, 0, last], 80)),
            weight,
        }
    }

    #[test]
    fn records_fill_slots_down_until_checked_and_gone_ones_go_to_maintenance() {
        let (set, group) = template();
        let s = |n: &str| set.server(n).expect("slot");
        assert!((1..=3).all(|i| s(&format!("s{i}")).state() == ServerState::Maint));
        let mut seen = HashMap::new();
        let now = Instant::now();
        // Given out of order: slots take records in address order.
        let records = [found(3, Some(4)), found(2, None)];
        apply(&group, &set, &mut seen, &records, now, Duration::ZERO);
        assert_eq!(s("s1").addr(), found(2, None).addr);
        assert_eq!(s("s2").addr(), found(3, None).addr);
        assert_eq!(s("s2").weight(), 4, "SRV weight applied");
        for slot in ["s1", "s2"] {
            // Ready, but DOWN until its checks pass: no traffic yet.
            assert_eq!(s(slot).admin(), Admin::Ready);
            assert_eq!(s(slot).state(), ServerState::Down);
        }
        assert_eq!(s("s3").state(), ServerState::Maint);
        assert!(!s("s3").has_addr());

        // 10.0.0.3 disappears: its slot goes to maintenance with no address; the other stays.
        s("s2").set_state(ServerState::Up);
        apply(&group, &set, &mut seen, &records[1..], now, Duration::ZERO);
        assert_eq!(s("s2").state(), ServerState::Maint);
        assert!(!s("s2").has_addr());
        assert_eq!(s("s1").addr(), found(2, None).addr);
    }

    #[test]
    fn ttl_is_bounded_by_timeout_resolve_and_hold_valid() {
        let t = Timing {
            hold: Hold {
                valid: Duration::from_secs(10),
                ..Hold::default()
            },
            resolve: Duration::from_secs(1),
        };
        assert_eq!(next_resolution(Some(3), t), Duration::from_secs(3));
        assert_eq!(next_resolution(Some(0), t), Duration::from_secs(1));
        assert_eq!(next_resolution(Some(3600), t), Duration::from_secs(10));
        assert_eq!(next_resolution(None, t), Duration::from_secs(10));
    }
}
