//! The nftables script that puts the nat frontends in the kernel, rendered from what they
//! should be now. One script is one `nft -f` transaction: the kernel sees the old rules or
//! the new ones, never a mix. The table is flushed and refilled rather than deleted and
//! made again (chains with `flush table`, each map and set by name, as `flush table` leaves
//! their elements), so the `ct timeout` objects that established flows point at stay (deleting
//! one would send those flows back to the kernel's default timeouts).

use std::fmt::Write;
use std::net::SocketAddrV4;

use super::local;
use super::slots::{Selector, Table};

/// The table the process owns; nothing else of ours is in the kernel.
pub const TABLE: &str = "amsproxy_nat";

/// The high half of every conntrack mark we set: events of other flows are not ours.
pub const MARK_BASE: u32 = 0xa5a5_0000;
pub const MARK_MASK: u32 = 0xffff_0000;

/// One frontend as the kernel should balance it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendRules {
    /// `MARK_BASE | n`: set on its flows' conntrack entries.
    pub mark: u32,
    pub binds: Vec<SocketAddrV4>,
    pub table: Table,
    /// The idle timeout of its established flows, in seconds.
    pub idle_secs: Option<u64>,
    /// The timeout of its half-closed flows, in seconds.
    pub fin_secs: Option<u64>,
    /// Where the proxy itself connects (servers, check targets): connections made on this
    /// host to them are not balanced (`local.rs`).
    pub untouched: Vec<SocketAddrV4>,
}

impl FrontendRules {
    pub fn map_name(&self) -> String {
        format!("slots_{:04x}", self.mark & !MARK_MASK)
    }
}

/// The whole table: `owner` (our pid) is kept in a set so that a process stopping can tell
/// whether the table is still its own or a newer process (a binary upgrade) took it over.
/// `stale_maps`: maps of frontends a reload removed, deleted in the same transaction.
pub fn render(owner: u32, frontends: &[FrontendRules], stale_maps: &[String]) -> String {
    let mut s = String::new();
    // Made if missing, then emptied: rules and set elements go, chains and objects stay.
    let _ = writeln!(s, "table ip {TABLE} {{}}");
    let _ = writeln!(s, "flush table ip {TABLE}");
    let _ = writeln!(s, "table ip {TABLE} {{");
    let _ = writeln!(s, "  set owner {{ type mark; }}");
    for fe in frontends {
        let _ = writeln!(
            s,
            "  map {} {{ typeof numgen inc mod 65536 : ip daddr . tcp dport; }}",
            fe.map_name()
        );
    }
    let timeouts: std::collections::BTreeSet<(Option<u64>, Option<u64>)> = frontends
        .iter()
        .map(|f| (f.idle_secs, f.fin_secs))
        .collect();
    for (idle, fin) in timeouts {
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
            "  ct timeout {} {{ protocol tcp; l3proto ip; \
             policy = {{ {policy}time_wait: {CLOSED_SECS}, close: {CLOSED_SECS} }}; }}",
            timeout_name(idle, fin)
        );
    }
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
    let _ = writeln!(s, "}}");
    // `flush table` empties chains, not sets and maps.
    for fe in frontends {
        let _ = writeln!(s, "flush map ip {TABLE} {}", fe.map_name());
    }
    for name in stale_maps {
        let _ = writeln!(s, "delete map ip {TABLE} {name}");
    }
    let _ = writeln!(s, "flush set ip {TABLE} owner");
    let _ = writeln!(s, "add element ip {TABLE} owner {{ {owner:#010x} }}");
    for fe in frontends {
        frontend(&mut s, fe);
    }
    s
}

fn frontend(s: &mut String, fe: &FrontendRules) {
    let map = fe.map_name();
    if !fe.table.slots.is_empty() {
        let elements: Vec<String> = fe
            .table
            .slots
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i} : {} . {}", a.ip(), a.port()))
            .collect();
        let _ = writeln!(
            s,
            "add element ip {TABLE} {map} {{ {} }}",
            elements.join(", ")
        );
    }
    let action = action(fe);
    for bind in &fe.binds {
        let forwarded = bind_match(bind);
        let local = local::output_match(bind, &fe.untouched);
        let _ = writeln!(s, "add rule ip {TABLE} pre {forwarded} {action}");
        let _ = writeln!(s, "add rule ip {TABLE} out {local} {action}");
    }
    // The client's address is replaced by the balancer's on the way to the server, so that
    // the server's answers come back through the balancer to be translated back.
    let _ = writeln!(
        s,
        "add rule ip {TABLE} post ct mark {:#010x} masquerade",
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
    let selector = match fe.table.selector {
        Selector::Next => format!("numgen inc mod {n}"),
        Selector::Random => format!("numgen random mod {n}"),
        Selector::SourceHash => format!("jhash ip saddr mod {n} seed 0x0"),
    };
    // In a nat chain, which sees a connection's first packet only: the entry exists and is
    // not confirmed yet, the one moment a timeout policy can be attached to it.
    format!(
        "ct mark set {:#010x} ct timeout set \"{}\" dnat ip to {selector} map @{}",
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

/// `bind :PORT` takes every local address, as a listening socket on 0.0.0.0 would.
fn bind_match(bind: &SocketAddrV4) -> String {
    if bind.ip().is_unspecified() {
        format!("fib daddr type local tcp dport {}", bind.port())
    } else {
        format!("ip daddr {} tcp dport {}", bind.ip(), bind.port())
    }
}

/// The script that removes everything of ours.
pub fn delete() -> String {
    format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn a_round_robin_frontend() {
        let fe = FrontendRules {
            mark: MARK_BASE | 1,
            binds: vec![a("0.0.0.0:1935"), a("10.0.2.1:1936")],
            table: Table {
                selector: Selector::Next,
                slots: vec![a("10.0.3.2:1935"), a("10.0.4.2:1935")],
            },
            idle_secs: Some(30),
            fin_secs: Some(5),
            untouched: vec![a("10.0.3.2:1935")],
        };
        let s = render(42, &[fe], &["slots_0009".to_string()]);
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
    }

    #[test]
    fn no_server_resets() {
        let fe = FrontendRules {
            mark: MARK_BASE | 2,
            binds: vec![a("0.0.0.0:1935")],
            table: Table {
                selector: Selector::SourceHash,
                slots: vec![],
            },
            idle_secs: None,
            fin_secs: None,
            untouched: vec![],
        };
        let s = render(1, &[fe], &[]);
        assert!(
            s.contains("pre fib daddr type local tcp dport 1935 reject with tcp reset"),
            "{s}"
        );
        assert!(s.contains("out fib daddr type local ip daddr != 127.0.0.0/8 ip saddr != 127.0.0.0/8 tcp dport 1935 reject with tcp reset"), "{s}");
        assert!(!s.contains("dnat"));
        assert!(s.contains("ct timeout idle_kernel_fin_kernel { protocol tcp; l3proto ip; policy = { time_wait: 1, close: 1 }; }"), "{s}");
    }
}
