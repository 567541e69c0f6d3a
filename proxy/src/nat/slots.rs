//! A backend's algorithm turned into what the kernel's NAT can run: a selector evaluated per
//! new connection (`numgen inc`, `numgen random`, `jhash ip saddr`) modulo S, and a table of
//! S slots naming servers. The table is recomputed from the servers' live state (health,
//! admin state, weight, `maxconn`, backups) and rewritten whenever it changes.

use std::net::SocketAddr;

use super::family::{self, Family};
use crate::config::Balance;
use crate::upstream::{Server, ServerSet};

/// Slots of a `balance source` table: the kernel hashes the client address modulo this,
/// and upstream's hashing spreads the slots over the servers.
pub const HASH_SLOTS: u32 = 256;

/// The most slots a weighted table gets; larger total weights are scaled down to it.
const MAX_SLOTS: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// `numgen inc`: each new connection takes the next slot (round robin, leastconn).
    Next,
    /// `numgen random` (`balance random`).
    Random,
    /// `jhash ip saddr` (`ip6 saddr`) (`balance source`): one client address, one slot.
    SourceHash,
}

/// What a frontend's NAT rule balances over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub selector: Selector,
    /// The servers in slot order; empty: no server can take a connection.
    pub slots: Vec<SocketAddr>,
}

/// The table for `set`'s algorithm now, over its servers of `family` (the frontend's: a
/// server the runtime API or DNS moved to the other family cannot be reached by its NAT).
pub fn table(set: &ServerSet, family: Family) -> Table {
    match set.algorithm {
        Balance::Source => hashed(set, family),
        Balance::Random => Table {
            selector: Selector::Random,
            slots: interleave(&weighted(&set.usable_now(), family)),
        },
        Balance::LeastConn => Table {
            selector: Selector::Next,
            slots: interleave(&weighted(&least_loaded(set.usable_now()), family)),
        },
        // The first usable server takes every connection until it is full.
        Balance::First => Table {
            selector: Selector::Next,
            slots: set
                .usable_now()
                .first()
                .and_then(|s| reachable(s, family))
                .into_iter()
                .collect(),
        },
        // roundrobin; the request-hashing kinds are refused by the config room.
        _ => Table {
            selector: Selector::Next,
            slots: interleave(&weighted(&set.usable_now(), family)),
        },
    }
}

/// `balance source`: every slot filled by upstream's hashing, so a client keeps its server
/// while that server is usable. A slot without a server (none usable) empties the table.
fn hashed(set: &ServerSet, family: Family) -> Table {
    let slots: Option<Vec<SocketAddr>> = set
        .hashed_slots(HASH_SLOTS)
        .iter()
        .map(|s| s.as_deref().and_then(|s| reachable(s, family)))
        .collect();
    Table {
        selector: Selector::SourceHash,
        slots: slots.unwrap_or_default(),
    }
}

/// leastconn, approximated: the servers with the fewest flows per unit of weight (as the
/// conntrack events counted them) share the slots until the counts change, when the table is
/// rewritten. Connections that arrive before the rewrite still go to the same servers.
fn least_loaded(usable: Vec<std::sync::Arc<Server>>) -> Vec<std::sync::Arc<Server>> {
    let load = |s: &Server| u64::from(s.current()) * 256 / u64::from(s.weight().max(1));
    let Some(min) = usable.iter().map(|s| load(s)).min() else {
        return usable;
    };
    usable.into_iter().filter(|s| load(s) == min).collect()
}

fn weighted(servers: &[std::sync::Arc<Server>], family: Family) -> Vec<(SocketAddr, u32)> {
    servers
        .iter()
        .filter_map(|s| Some((reachable(s, family)?, s.weight())))
        .collect()
}

/// The server's address, when it has one (not yet resolved: none) of `family`.
fn reachable(s: &Server, family: Family) -> Option<SocketAddr> {
    let addr = family::plain(s.addr());
    (!addr.ip().is_unspecified() && Family::of(&addr) == family).then_some(addr)
}

/// Each server as many times as its weight (scaled to at most `MAX_SLOTS` in all, at least
/// once each), spread out by smooth weighted round robin so that consecutive connections
/// alternate instead of going to one server weight times in a row.
pub fn interleave(servers: &[(SocketAddr, u32)]) -> Vec<SocketAddr> {
    let total: u64 = servers.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let scaled: Vec<i64> = servers
        .iter()
        .map(|(_, w)| {
            let w = u64::from(*w);
            let w = if total > MAX_SLOTS {
                (w * MAX_SLOTS / total).max(1)
            } else {
                w
            };
            w as i64
        })
        .collect();
    let sum: i64 = scaled.iter().sum();
    let mut current = vec![0i64; servers.len()];
    let mut out = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        for (c, w) in current.iter_mut().zip(&scaled) {
            *c += w;
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, -(*i as i64)))
        else {
            break;
        };
        current[best] -= sum;
        out.push(servers[best].0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 1935))
    }

    #[test]
    fn weights_are_kept_and_spread() {
        let t = interleave(&[(a(1), 3), (a(2), 1)]);
        assert_eq!(t, vec![a(1), a(1), a(2), a(1)]);
        let t = interleave(&[(a(1), 1), (a(2), 1)]);
        assert_eq!(t, vec![a(1), a(2)]);
        assert!(interleave(&[(a(1), 0)]).is_empty());
        assert!(interleave(&[]).is_empty());
    }

    fn set(balance: &str, servers: &str) -> ServerSet {
        let cfg = crate::config::parse_str(
            &format!("backend be\n mode tcp\n balance {balance}\n{servers}"),
            std::path::Path::new("slots.cfg"),
        )
        .expect("cfg");
        ServerSet::from_config(cfg.proxy_backend("be").expect("backend"))
    }

    const THREE: &str = " hash-type consistent\n server s1 10.0.0.1:1935\n \
                         server s2 10.0.0.2:1935\n server s3 10.0.0.3:1935\n \
                         server b1 10.0.0.9:1935 backup\n";

    #[test]
    fn source_slots_depend_on_the_config_and_move_only_with_their_server() {
        let one = table(&set("source", THREE), Family::V4);
        let two = table(&set("source", THREE), Family::V4);
        assert_eq!(one.selector, Selector::SourceHash);
        assert_eq!(one.slots.len(), HASH_SLOTS as usize);
        assert_eq!(one, two, "two instances with one config agree");
        for n in 1..=3 {
            let share = one.slots.iter().filter(|s| **s == a(n)).count();
            assert!((40..=130).contains(&share), "s{n} holds {share} of 256");
        }
        assert!(!one.slots.contains(&a(9)), "the backup waits");
        let s = set("source", THREE);
        s.server("s2")
            .expect("s2")
            .set_admin(crate::upstream::Admin::Maint);
        let without = table(&s, Family::V4);
        for (before, after) in one.slots.iter().zip(&without.slots) {
            if *before != a(2) {
                assert_eq!(before, after, "a slot moved although its server stayed");
            }
        }
        assert!(!without.slots.contains(&a(2)));
    }

    #[test]
    fn down_full_and_drained_servers_leave_and_backups_step_in() {
        let s = set(
            "roundrobin",
            " server s1 10.0.0.1:1935 weight 2\n server s2 10.0.0.2:1935 maxconn 1\n \
             server b1 10.0.0.9:1935 backup\n",
        );
        assert_eq!(table(&s, Family::V4).slots, vec![a(1), a(2), a(1)]);
        let s2 = s.server("s2").expect("s2");
        let claim = s2.claim();
        assert_eq!(
            table(&s, Family::V4).slots,
            vec![a(1), a(1)],
            "s2 is at its maxconn"
        );
        drop(claim);
        s.server("s1")
            .expect("s1")
            .set_admin(crate::upstream::Admin::Drain);
        assert_eq!(table(&s, Family::V4).slots, vec![a(2)], "s1 drains");
        s2.set_state(crate::upstream::ServerState::Down);
        assert_eq!(
            table(&s, Family::V4).slots,
            vec![a(9)],
            "only the backup is left"
        );
        s.server("b1")
            .expect("b1")
            .set_state(crate::upstream::ServerState::Down);
        assert!(
            table(&s, Family::V4).slots.is_empty(),
            "nothing usable: the rule resets"
        );
    }

    #[test]
    fn leastconn_gives_the_slots_to_the_least_loaded() {
        let s = set(
            "leastconn",
            " server s1 10.0.0.1:1935\n server s2 10.0.0.2:1935\n",
        );
        assert_eq!(table(&s, Family::V4).slots, vec![a(1), a(2)]);
        let _busy = s.server("s1").expect("s1").claim();
        assert_eq!(table(&s, Family::V4).slots, vec![a(2)]);
    }

    #[test]
    fn an_ipv6_table_holds_the_ipv6_servers() {
        let s = set(
            "roundrobin",
            " server s1 [fd00:3::2]:9000\n server s2 [fd00:4::2]:9000\n server s3 10.0.0.3:1935\n",
        );
        let v6 = |t: &str| -> SocketAddr { t.parse().unwrap() };
        assert_eq!(
            table(&s, Family::V6).slots,
            vec![v6("[fd00:3::2]:9000"), v6("[fd00:4::2]:9000")],
            "a server of the other family cannot be reached by this NAT"
        );
        assert_eq!(table(&s, Family::V4).slots, vec![a(3)]);
    }

    #[test]
    fn large_weights_are_scaled_down() {
        let t = interleave(&[
            (a(1), 256),
            (a(2), 256),
            (a(3), 256),
            (a(4), 256),
            (a(5), 1),
        ]);
        assert!(t.len() as u64 <= MAX_SLOTS + 5);
        assert!(t.contains(&a(5)), "a light server keeps one slot");
        let ones = t.iter().filter(|x| **x == a(1)).count();
        assert!((250..=256).contains(&ones), "{ones}");
    }
}
