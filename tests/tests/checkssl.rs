//! `check-ssl` health checks against real nginx nodes:
//! - `tls`, an nginx TLS listener (certificate for `site.test` from a test CA), checked with
//!   `option httpchk GET /liveness` and `check-sni site.test`: UP (`L7OK`) while it answers
//!   200 over TLS, DOWN with `L7STS` 503 when its liveness turns 503, UP again after;
//! - `plain`, an nginx speaking plain HTTP where the check expects TLS: DOWN with `L6RSP`
//!   ("SSL handshake failure");
//! - the same TLS node in a mode tcp backend without `option httpchk`: the handshake alone
//!   passes, `L6OK`.
//!
//! `E2E_PROXY=haproxy` runs the same test against HAProxy.

use e2e::http_client::Conn;
use e2e::nginx_http::{Liveness, NginxHttp};
use e2e::tls::{KeyKind, TestCa};
use e2e::util::poll_until;
use e2e::{free_addr, free_port, loopback, Proxy, TestDir};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const INTER: Duration = Duration::from_millis(300);
const FALL: u32 = 2;
const RISE: u32 = 2;
/// Scheduling slack on top of inter × fall (or rise) on a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(3);
/// nginx's reason phrase for 503, which HAProxy reports as the check's text.
const NGINX_503: &str = "Service Temporarily Unavailable";

/// Column `column` of `backend/server` in the stats CSV. The harness client that decodes
/// chunks reads it: HAProxy answers the stats page chunked even to HTTP/1.0.
fn csv_field(stats: u16, backend: &str, server: &str, column: &str) -> String {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, stats));
    let r = Conn::open(addr).get("/stats;csv", &["Connection: close"]);
    let body = r.text();
    assert_eq!(r.status, 200, "{body}");
    let mut lines = body.lines();
    let header = lines.next().unwrap_or_default().trim_start_matches("# ");
    let at = header.split(',').position(|c| c == column);
    let at = at.unwrap_or_else(|| panic!("no column {column} in {header}"));
    let row = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r.first() == Some(&backend) && r.get(1) == Some(&server))
        .unwrap_or_else(|| panic!("no row {backend}/{server} in\n{body}"));
    // HAProxy prefixes a check in progress with "* ".
    row.get(at)
        .map(|v| v.trim_start_matches("* ").to_string())
        .unwrap_or_default()
}

/// (status, check_status, check_code, last_chk) of `backend/server` in the stats CSV.
fn check(stats: u16, backend: &str, server: &str) -> [String; 4] {
    ["status", "check_status", "check_code", "last_chk"]
        .map(|c| csv_field(stats, backend, server, c))
}

fn wait_check(stats: u16, backend: &str, server: &str, want: [&str; 4], limit: Duration) {
    let mut last = Default::default();
    let reached = poll_until(limit, || {
        last = check(stats, backend, server);
        (last == want).then_some(())
    });
    assert!(
        reached.is_some(),
        "{backend}/{server} did not reach {want:?} within {limit:?}; last seen {last:?}"
    );
}

#[test]
fn checks_over_tls_pass_fail_on_503_and_on_plain_http() {
    let certs = TestDir::new("checkssl-certs");
    let pem = TestCa::new(certs.path()).leaf("site", &["site.test"], KeyKind::EcPkcs8, false);
    let tls = NginxHttp::start_tls("tls", free_addr(loopback(2)), &pem);
    let plain = NginxHttp::start("plain", free_addr(loopback(3)), None);
    let stats = free_port(Ipv4Addr::LOCALHOST);
    let web = free_addr(Ipv4Addr::LOCALHOST);
    let raw = free_addr(Ipv4Addr::LOCALHOST);
    let ms = INTER.as_millis();
    let every = format!("check check-ssl verify none inter {ms}ms fall {FALL} rise {RISE}");
    let cfg = format!(
        "global
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

listen stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats

frontend web
    bind {web}
    default_backend ams

frontend raw
    mode tcp
    bind {raw}
    default_backend tcpchk

backend ams
    option httpchk GET /liveness
    server tls {} {every} check-sni site.test
    server plain {} {every}

backend tcpchk
    mode tcp
    server tls {} {every}
",
        tls.addr(),
        plain.addr(),
        tls.addr()
    );
    let _proxy = Proxy::start(&cfg);
    let up = ["UP", "L7OK", "200", ""];
    wait_check(stats, "ams", "tls", up, Duration::from_secs(20));
    assert!(
        tls.snis().iter().any(|s| s == "site.test"),
        "check-sni reaches the server: {:?}",
        tls.snis()
    );
    assert!(tls.requests().iter().any(|r| r == "GET /liveness HTTP/1.0"));
    let handshake = ["UP", "L6OK", "", ""];
    wait_check(stats, "tcpchk", "tls", handshake, SLACK);
    assert_eq!(
        csv_field(stats, "tcpchk", "tls", "check_desc"),
        "Layer6 check passed"
    );
    let not_tls = ["DOWN", "L6RSP", "", "SSL handshake failure"];
    wait_check(stats, "ams", "plain", not_tls, INTER * FALL + SLACK);
    assert_eq!(
        csv_field(stats, "ams", "plain", "check_desc"),
        "Layer6 invalid response"
    );

    tls.set_liveness(Liveness::Down);
    let down = ["DOWN", "L7STS", "503", NGINX_503];
    wait_check(stats, "ams", "tls", down, INTER * FALL + SLACK);
    tls.set_liveness(Liveness::Alive);
    wait_check(stats, "ams", "tls", up, INTER * RISE + SLACK);
}
