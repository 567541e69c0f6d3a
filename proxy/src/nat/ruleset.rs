//! The nftables script that puts the nat frontends in the kernel, rendered from what they
//! should be now. One script is one `nft -f` transaction: the kernel sees the old rules or
//! the new ones, never a mix. A table is flushed and refilled rather than deleted and
//! made again (chains with `flush table`, each map and set by name, as `flush table` leaves
//! their elements), so the `ct timeout` objects that established flows point at stay (deleting
//! one would send those flows back to the kernel's default timeouts). IPv4 frontends are in
//! `ip amsproxy_nat`, IPv6 ones in `ip6 amsproxy_nat` (`family.rs`), both in one script.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::SocketAddr;

use super::family::{self, Family};
use super::local;
use super::slots::{Selector, Table};

/// The table the process owns (one per family); nothing else of ours is in the kernel.
pub const TABLE: &str = "amsproxy_nat";

/// The high half of every conntrack mark we set: events of other flows are not ours.
pub const MARK_BASE: u32 = 0xa5a5_0000;
pub const MARK_MASK: u32 = 0xffff_0000;

/// One frontend as the kernel should balance it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendRules {
    /// `MARK_BASE | n`: set on its flows' conntrack entries.
    pub mark: u32,
    /// Of its binds and its servers: which table it goes in.
    pub family: Family,
    pub binds: Vec<SocketAddr>,
    pub table: Table,
    /// The idle timeout of its established flows, in seconds.
    pub idle_secs: Option<u64>,
    /// The timeout of its half-closed flows, in seconds.
    pub fin_secs: Option<u64>,
    /// Where the proxy itself connects (servers, check targets): connections made on this
    /// host to them are not balanced (`local.rs`).
    pub untouched: Vec<SocketAddr>,
}

impl FrontendRules {
    pub fn map_name(&self) -> String {
        format!("slots_{:04x}", self.mark & !MARK_MASK)
    }
}

/// Both tables. `owner` (our pid) is kept in a set of the IPv4 table, which always exists, so
/// that a process stopping can tell whether the tables are still its own or a newer process
/// (a binary upgrade) took them over. `stale_maps`: maps of frontends a reload removed,
/// deleted in the same transaction. `v6_exists`: the IPv6 table is there (ours, from before),
/// to be deleted when no IPv6 frontend is left.
pub fn render(
    owner: u32,
    frontends: &[FrontendRules],
    stale_maps: &[(Family, String)],
    v6_exists: bool,
) -> String {
    let mut s = String::new();
    for family in [Family::V4, Family::V6] {
        let mine: Vec<&FrontendRules> = frontends.iter().filter(|f| f.family == family).collect();
        let stale: Vec<&String> = stale_maps
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, name)| name)
            .collect();
        match family {
            Family::V4 => table(&mut s, family, &mine, &stale, Some(owner)),
            Family::V6 if !mine.is_empty() => table(&mut s, family, &mine, &stale, None),
            // Made if missing first: a table deleted by hand must not fail the transaction.
            Family::V6 if v6_exists => {
                let _ = writeln!(s, "table ip6 {TABLE} {{}}\ndelete table ip6 {TABLE}");
            }
            Family::V6 => {}
        }
    }
    s
}

/// One family's table, made if missing, then emptied and refilled.
fn table(
    s: &mut String,
    family: Family,
    frontends: &[&FrontendRules],
    stale_maps: &[&String],
    owner: Option<u32>,
) {
    let t = family.table();
    let _ = writeln!(s, "table {t} {TABLE} {{}}");
    let _ = writeln!(s, "flush table {t} {TABLE}");
    let _ = writeln!(s, "table {t} {TABLE} {{");
    if owner.is_some() {
        let _ = writeln!(s, "  set owner {{ type mark; }}");
    }
    for fe in frontends {
        let _ = writeln!(
            s,
            "  map {} {{ typeof numgen inc mod 65536 : {} daddr . tcp dport; }}",
            fe.map_name(),
            family.proto()
        );
    }
    timeouts(s, family, frontends);
    chains(s);
    let _ = writeln!(s, "}}");
    // `flush table` empties chains, not sets and maps.
    for fe in frontends {
        let _ = writeln!(s, "flush map {t} {TABLE} {}", fe.map_name());
    }
    for name in stale_maps {
        let _ = writeln!(s, "delete map {t} {TABLE} {name}");
    }
    if let Some(owner) = owner {
        let _ = writeln!(s, "flush set {t} {TABLE} owner");
        let _ = writeln!(s, "add element {t} {TABLE} owner {{ {owner:#010x} }}");
    }
    for fe in frontends {
        frontend(s, fe);
    }
}

/// One `ct timeout` object per pair of idle and half-close timeouts in use.
fn timeouts(s: &mut String, family: Family, frontends: &[&FrontendRules]) {
    let pairs: BTreeSet<(Option<u64>, Option<u64>)> = frontends
        .iter()
        .map(|f| (f.idle_secs, f.fin_secs))
        .collect();
    for (idle, fin) in pairs {
        let mut policy = String::new();
        if let Some(secs) = idle {
            let _ = write!(policy, "established: {secs}, ");
        }
        if let Some(secs) = fin {
            let _ = write!(
                policy,
                "fin_wait: {secs}, close_wait: {secs}, last_ack: {secs}, "
            );
        }
        let _ = writeln!(
            s,
            "  ct timeout {} {{ protocol tcp; l3proto {}; \
             policy = {{ {policy}time_wait: {CLOSED_SECS}, close: {CLOSED_SECS} }}; }}",
            timeout_name(idle, fin),
            family.l3proto()
        );
    }
}

fn chains(s: &mut String) {
    let _ = writeln!(
        s,
        "  chain pre {{ type nat hook prerouting priority dstnat; policy accept; }}"
    );
    // Connections made on this host (`local.rs`); nft 1.0.6 has no `dstnat` keyword for
    // the output hook, whose number it is.
    let _ = writeln!(
        s,
        "  chain out {{ type nat hook output priority -100; policy accept; }}"
    );
    let _ = writeln!(
        s,
        "  chain post {{ type nat hook postrouting priority srcnat; policy accept; }}"
    );
}

fn frontend(s: &mut String, fe: &FrontendRules) {
    let t = fe.family.table();
    let map = fe.map_name();
    if !fe.table.slots.is_empty() {
        let elements: Vec<String> = fe
            .table
            .slots
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i} : {}", family::element(a)))
            .collect();
        let _ = writeln!(
            s,
            "add element {t} {TABLE} {map} {{ {} }}",
            elements.join(", ")
        );
    }
    let action = action(fe);
    for bind in &fe.binds {
        let forwarded = bind_match(fe.family, bind);
        let local = local::output_match(fe.family, bind, &fe.untouched);
        let _ = writeln!(s, "add rule {t} {TABLE} pre {forwarded} {action}");
        let _ = writeln!(s, "add rule {t} {TABLE} out {local} {action}");
    }
    // The client's address is replaced by the balancer's on the way to the server, so that
    // the server's answers come back through the balancer to be translated back.
    let _ = writeln!(
        s,
        "add rule {t} {TABLE} post ct mark {:#010x} masquerade",
        fe.mark
    );
}

/// What a matched new connection gets: the frontend's mark, its idle timeout and a server
/// from the slot table; with no usable server, a TCP reset, as a proxy with no server closes.
fn action(fe: &FrontendRules) -> String {
    let n = fe.table.slots.len();
    if n == 0 {
        return "reject with tcp reset".to_string();
    }
    let proto = fe.family.proto();
    let selector = match fe.table.selector {
        Selector::Next => format!("numgen inc mod {n}"),
        Selector::Random => format!("numgen random mod {n}"),
        Selector::SourceHash => format!("jhash {proto} saddr mod {n} seed 0x0"),
    };
    // In a nat chain, which sees a connection's first packet only: the entry exists and is
    // not confirmed yet, the one moment a timeout policy can be attached to it.
    format!(
        "ct mark set {:#010x} ct timeout set \"{}\" dnat {proto} to {selector} map @{}",
        fe.mark,
        timeout_name(fe.idle_secs, fe.fin_secs),
        fe.map_name()
    )
}

/// How long a closed flow's entry stays (TIME_WAIT after FINs, CLOSE after an RST): its
/// DESTROY event, and so its log line, comes this long after the close instead of the
/// kernel's two minutes. Both ends keep their own TIME_WAIT; a late segment of the old flow
/// finds no entry and is dropped or reset, as it would be by a proxy that closed.
const CLOSED_SECS: u64 = 1;

/// The `ct timeout` object of an idle and a half-close timeout (`None`: the kernel's).
fn timeout_name(idle_secs: Option<u64>, fin_secs: Option<u64>) -> String {
    let part = |t: Option<u64>| t.map_or("kernel".to_string(), |s| s.to_string());
    format!("idle_{}_fin_{}", part(idle_secs), part(fin_secs))
}

/// `bind :PORT` (`bind [::]:PORT`) takes every local address of its family, as a listening
/// socket on the wildcard would.
fn bind_match(family: Family, bind: &SocketAddr) -> String {
    let bind = family::plain(*bind);
    if bind.ip().is_unspecified() {
        format!("fib daddr type local tcp dport {}", bind.port())
    } else {
        format!(
            "{} daddr {} tcp dport {}",
            family.proto(),
            bind.ip(),
            bind.port()
        )
    }
}

/// The script that removes everything of ours; `v6`: the IPv6 table exists too.
pub fn delete(v6: bool) -> String {
    let mut s = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n");
    if v6 {
        let _ = writeln!(s, "table ip6 {TABLE} {{}}\ndelete table ip6 {TABLE}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_round_robin_frontend() {
        let fe = FrontendRules {
            mark: MARK_BASE | 1,
            family: Family::V4,
            binds: vec![a("0.0.0.0:1935"), a("10.0.2.1:1936")],
            table: Table {
                selector: Selector::Next,
                slots: vec![a("10.0.3.2:1935"), a("10.0.4.2:1935")],
            },
            idle_secs: Some(30),
            fin_secs: Some(5),
            untouched: vec![a("10.0.3.2:1935")],
        };
        let s = render(42, &[fe], &[(Family::V4, "slots_0009".to_string())], false);
        assert!(s.contains("flush table ip amsproxy_nat"), "{s}");
        assert!(s.contains("flush map ip amsproxy_nat slots_0001"), "{s}");
        assert!(s.contains("add element ip amsproxy_nat owner { 0x0000002a }"));
        assert!(s.contains(
            "add element ip amsproxy_nat slots_0001 { 0 : 10.0.3.2 . 1935, 1 : 10.0.4.2 . 1935 }"
        ));
        assert!(s.contains(
            "add rule ip amsproxy_nat pre fib daddr type local tcp dport 1935 ct mark set \
             0xa5a50001 ct timeout set \"idle_30_fin_5\" dnat ip to numgen inc mod 2 map @slots_0001"
        ));
        assert!(s.contains("pre ip daddr 10.0.2.1 tcp dport 1936 ct mark set"));
        // The same balancing for connections made on this host, the servers' own left alone.
        assert!(s.contains("chain out { type nat hook output priority -100; policy accept; }"));
        assert!(
            s.contains(
                "add rule ip amsproxy_nat out fib daddr type local ip daddr != 127.0.0.0/8 \
                 ip saddr != 127.0.0.0/8 tcp dport 1935 ip daddr . tcp dport != { 10.0.3.2 . 1935 } \
                 ct mark set 0xa5a50001 ct timeout set \"idle_30_fin_5\" dnat ip to numgen inc mod 2 \
                 map @slots_0001"
            ),
            "{s}"
        );
        assert!(
            s.contains("out ip daddr 10.0.2.1 ip saddr != 127.0.0.0/8 tcp dport 1936 ct mark set")
        );
        assert!(s.contains(
            "ct timeout idle_30_fin_5 { protocol tcp; l3proto ip; policy = { established: 30, \
             fin_wait: 5, close_wait: 5, last_ack: 5, time_wait: 1, close: 1 }; }"
        ));
        assert!(s.contains("post ct mark 0xa5a50001 masquerade"));
        assert!(s.contains("delete map ip amsproxy_nat slots_0009"));
        assert!(
            !s.contains("ip6"),
            "no IPv6 table without an IPv6 frontend: {s}"
        );
    }

    #[test]
    fn an_ipv6_frontend_has_its_own_table() {
        let fe = FrontendRules {
            mark: MARK_BASE | 3,
            family: Family::V6,
            binds: vec![a("[fd00:1::1]:1935"), a("[::]:1936")],
            table: Table {
                selector: Selector::SourceHash,
                slots: vec![a("[fd00:3::2]:9000"), a("[fd00:4::2]:9000")],
            },
            idle_secs: Some(30),
            fin_secs: None,
            untouched: vec![a("[fd00:3::2]:9000")],
        };
        let s = render(42, std::slice::from_ref(&fe), &[], false);
        // The IPv4 table stays, with the owner, and no frontend.
        assert!(
            s.contains("add element ip amsproxy_nat owner { 0x0000002a }"),
            "{s}"
        );
        assert!(!s.contains("add rule ip amsproxy_nat"), "{s}");
        for line in [
            "table ip6 amsproxy_nat {}",
            "flush table ip6 amsproxy_nat",
            "  map slots_0003 { typeof numgen inc mod 65536 : ip6 daddr . tcp dport; }",
            "  ct timeout idle_30_fin_kernel { protocol tcp; l3proto ip6; policy = { \
             established: 30, time_wait: 1, close: 1 }; }",
            "flush map ip6 amsproxy_nat slots_0003",
            "add element ip6 amsproxy_nat slots_0003 { 0 : fd00:3::2 . 9000, 1 : fd00:4::2 . 9000 }",
            "add rule ip6 amsproxy_nat pre ip6 daddr fd00:1::1 tcp dport 1935 ct mark set \
             0xa5a50003 ct timeout set \"idle_30_fin_kernel\" dnat ip6 to jhash ip6 saddr mod 2 \
             seed 0x0 map @slots_0003",
            "add rule ip6 amsproxy_nat pre fib daddr type local tcp dport 1936 ct mark set",
            "add rule ip6 amsproxy_nat out ip6 daddr fd00:1::1 ip6 saddr != ::1 tcp dport 1935 \
             ct mark set",
            "add rule ip6 amsproxy_nat post ct mark 0xa5a50003 masquerade",
        ] {
            assert!(s.lines().any(|l| l.starts_with(line)), "{line}\n{s}");
        }
        assert!(!s.contains("set ip6 amsproxy_nat owner"), "{s}");
        // The last IPv6 frontend gone: its table goes, a table deleted by hand or not.
        let s = render(42, &[], &[(Family::V6, fe.map_name())], true);
        assert!(
            s.ends_with("table ip6 amsproxy_nat {}\ndelete table ip6 amsproxy_nat\n"),
            "{s}"
        );
        assert!(!render(42, &[], &[], false).contains("ip6"));
        assert!(delete(true).contains("delete table ip6 amsproxy_nat"));
        assert!(!delete(false).contains("ip6"));
    }

    #[test]
    fn no_server_resets() {
        let fe = FrontendRules {
            mark: MARK_BASE | 2,
            family: Family::V4,
            binds: vec![a("0.0.0.0:1935")],
            table: Table {
                selector: Selector::SourceHash,
                slots: vec![],
            },
            idle_secs: None,
            fin_secs: None,
            untouched: vec![],
        };
        let s = render(1, &[fe], &[], false);
        assert!(
            s.contains("pre fib daddr type local tcp dport 1935 reject with tcp reset"),
            "{s}"
        );
        assert!(s.contains("out fib daddr type local ip daddr != 127.0.0.0/8 ip saddr != 127.0.0.0/8 tcp dport 1935 reject with tcp reset"), "{s}");
        assert!(!s.contains("dnat"));
        assert!(s.contains("ct timeout idle_kernel_fin_kernel { protocol tcp; l3proto ip; policy = { time_wait: 1, close: 1 }; }"), "{s}");
    }
}
