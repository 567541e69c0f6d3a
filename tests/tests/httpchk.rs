//! HTTP health checks (`option httpchk`, `http-check expect`) against two real nginx nodes
//! whose `/liveness` the test switches between `200 alive`, `503` and `200 sick`:
//! - with `http-check expect status 200`, a node answering 503 goes DOWN within inter × fall
//!   in the stats CSV (`L7STS`, `check_code` 503, `last_chk` the reason phrase), in
//!   `/metrics` and in the log, gets no more requests, and comes back UP after rise passes;
//! - with `http-check expect string alive`, a node answering `200 sick` goes DOWN with
//!   `L7RSP` and no `check_code`, as HAProxy reports a body mismatch.
//!
//! `E2E_PROXY=haproxy` runs the same tests against HAProxy: the expected columns and texts
//! are what HAProxy 2.6 shows for the same situation.

use e2e::http_client::Conn;
use e2e::nginx_http::{Liveness, NginxHttp};
use e2e::util::poll_until;
use e2e::{free_addr, free_port, loopback, wait_until, Proxy};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const INTER: Duration = Duration::from_millis(300);
const FALL: u32 = 2;
const RISE: u32 = 2;
/// Scheduling slack on top of inter × fall (or rise) on a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(3);
/// nginx's reason phrase for 503, which HAProxy reports as the check's text.
const NGINX_503: &str = "Service Temporarily Unavailable";

struct Setup {
    proxy: Proxy,
    nodes: [NginxHttp; 2],
    stats: SocketAddr,
    web: SocketAddr,
}

/// A `mode http` frontend in front of backend `ams` (nodes `a` and `b`, round robin), with
/// `check_lines` in the backend, and a stats listener with the Prometheus exporter.
fn setup(check_lines: &str) -> Setup {
    let nodes = [
        NginxHttp::start("a", free_addr(loopback(2)), None),
        NginxHttp::start("b", free_addr(loopback(3)), None),
    ];
    let stats = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let web = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let ms = INTER.as_millis();
    let server = |n: &NginxHttp| {
        format!(
            "    server {} {} check inter {ms}ms fall {FALL} rise {RISE}\n",
            n.name(),
            n.addr()
        )
    };
    let cfg = format!(
        "global
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

listen stats
    bind {stats}
    stats enable
    stats uri /stats
    http-request use-service prometheus-exporter if {{ path /metrics }}

frontend web
    bind {web}
    default_backend ams

backend ams
    balance roundrobin
{check_lines}{}{}",
        server(&nodes[0]),
        server(&nodes[1])
    );
    let proxy = Proxy::start(&cfg);
    Setup {
        proxy,
        nodes,
        stats,
        web,
    }
}

/// One GET on its own connection: (status, body). HAProxy answers the stats page chunked
/// even to HTTP/1.0, so the harness client that decodes chunks reads it.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = Conn::open(addr).get(path, &["Connection: close"]);
    (r.status, r.text())
}

impl Setup {
    /// Server `name`'s row of the stats CSV, by column name.
    fn row(&self, name: &str) -> HashMap<String, String> {
        let (status, body) = get(self.stats, "/stats;csv");
        assert_eq!(status, 200, "{body}");
        let mut lines = body.lines();
        let header = lines.next().expect("a CSV header").trim_start_matches("# ");
        let names: Vec<&str> = header.split(',').collect();
        let row = lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|r| r.first() == Some(&"ams") && r.get(1) == Some(&name))
            .unwrap_or_else(|| panic!("no row ams/{name} in\n{body}"));
        names
            .iter()
            .zip(row)
            // HAProxy prefixes a check in progress with "* ".
            .map(|(n, v)| (n.to_string(), v.trim_start_matches("* ").to_string()))
            .collect()
    }

    /// (status, check_status, check_code, last_chk) of server `name`.
    fn check(&self, name: &str) -> (String, String, String, String) {
        let r = self.row(name);
        let col = |c: &str| r.get(c).cloned().unwrap_or_default();
        (
            col("status"),
            col("check_status"),
            col("check_code"),
            col("last_chk"),
        )
    }

    /// Waits until server `name` shows `want` (as [`Setup::check`]); panics with what it
    /// showed last.
    fn wait_check(&self, name: &str, want: (&str, &str, &str, &str), limit: Duration) -> Duration {
        let started = Instant::now();
        let mut last = Default::default();
        let reached = poll_until(limit, || {
            last = self.check(name);
            (last.0 == want.0 && last.1 == want.1 && last.2 == want.2 && last.3 == want.3)
                .then_some(())
        });
        assert!(
            reached.is_some(),
            "ams/{name} did not reach {want:?} within {limit:?}; last seen {last:?}"
        );
        started.elapsed()
    }

    /// Which node answered each of `n` requests through the proxy.
    fn served_by(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let (status, body) = get(self.web, "/");
                assert_eq!(status, 200, "{body}");
                body.trim().trim_start_matches("node ").to_string()
            })
            .collect()
    }

    fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let (_, text) = get(self.stats, "/metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
    }
}

#[test]
fn a_node_failing_its_liveness_url_goes_down_and_comes_back() {
    let s = setup("    option httpchk GET /liveness\n    http-check expect status 200\n");
    let up = ("UP", "L7OK", "200", "");
    for name in ["a", "b"] {
        s.wait_check(name, up, Duration::from_secs(20));
    }
    assert_eq!(s.served_by(4).iter().filter(|n| *n == "b").count(), 2);

    s.nodes[1].set_liveness(Liveness::Down);
    let took = s.wait_check(
        "b",
        ("DOWN", "L7STS", "503", NGINX_503),
        INTER * FALL + SLACK,
    );
    eprintln!("ams/b DOWN {took:?} after its liveness turned 503 (inter {INTER:?} x fall {FALL})");
    let row = s.row("b");
    assert_eq!(row["check_desc"], "Layer7 wrong status");
    let chkfail: u32 = row["chkfail"].parse().unwrap_or(0);
    assert!(
        chkfail >= FALL,
        "chkfail {chkfail}: failed checks while it was UP"
    );
    assert_eq!(
        s.check("a"),
        ("UP".into(), "L7OK".into(), "200".into(), String::new())
    );
    let (_, page) = get(s.stats, "/stats");
    assert!(
        page.contains("L7STS/503 in "),
        "the page's LastChk, as HAProxy's"
    );
    let served = s.served_by(6);
    assert!(
        served.iter().all(|n| n == "a"),
        "a DOWN node gets no traffic: {served:?}"
    );
    let b = r#"proxy="ams",server="b""#;
    assert_eq!(
        s.metric(
            "haproxy_server_check_status",
            &format!(r#"{b},state="L7STS""#)
        ),
        Some(1.0)
    );
    assert_eq!(s.metric("haproxy_server_check_code", b), Some(503.0));
    assert_eq!(
        s.metric("haproxy_server_status", &format!(r#"{b},state="DOWN""#)),
        Some(1.0)
    );
    let line = format!(
        "Server ams/b is DOWN, reason: Layer7 wrong status, code: 503, info: \"{NGINX_503}\""
    );
    wait_until("the DOWN line in the log", SLACK, || {
        s.proxy.stderr().contains(&line).then_some(())
    });

    s.nodes[1].set_liveness(Liveness::Alive);
    let took = s.wait_check("b", up, INTER * RISE + SLACK);
    eprintln!("ams/b UP {took:?} after its liveness turned 200 (rise {RISE})");
    let served = s.served_by(4);
    assert!(
        served.iter().any(|n| n == "b"),
        "b takes traffic again: {served:?}"
    );
    assert!(s
        .proxy
        .stderr()
        .contains("Server ams/b is UP, reason: Layer7 check passed, code: 200"));
    assert!(s.row("b")["chkdown"].parse::<u64>().unwrap_or(0) >= 1);
}

#[test]
fn expect_string_fails_a_node_whose_body_does_not_say_alive() {
    let s = setup("    option httpchk GET /liveness\n    http-check expect string alive\n");
    let up = ("UP", "L7OK", "200", "");
    for name in ["a", "b"] {
        s.wait_check(name, up, Duration::from_secs(20));
    }
    // Status 200 still, but not the body the check wants: HAProxy's L7RSP shows no code.
    s.nodes[0].set_liveness(Liveness::Sick);
    let sick = ("DOWN", "L7RSP", "", "HTTP content check did not match");
    s.wait_check("a", sick, INTER * FALL + SLACK);
    assert_eq!(s.check("b").1, "L7OK");
    let served = s.served_by(4);
    assert!(served.iter().all(|n| n == "b"), "{served:?}");

    s.nodes[0].set_liveness(Liveness::Alive);
    s.wait_check("a", up, INTER * RISE + SLACK);
}
