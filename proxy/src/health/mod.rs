//! Active health checks. They run on a thread of their own so a slow check never delays a
//! worker; results reach the workers only through each server's atomic state.
//!
//! One concern per file: `check` runs one check (connect, the TLS handshake with `check-ssl`,
//! then HTTP when configured), `tls` the client side of TLS (rustls), `conn` the stream the
//! exchange talks over (TCP or TLS), `http` the exchange, `request` and `response` its bytes each way, `expect` the
//! judgement against `http-check expect`, `outcome` HAProxy's status and text for the
//! result, `state` the rise/fall machine.

mod check;
mod conn;
mod error;
mod expect;
mod http;
mod outcome;
mod request;
mod response;
mod state;
mod tls;
#[cfg(test)]
mod tls_tests;

pub use error::CheckError;
pub use outcome::Outcome;
pub use state::{CheckState, Transition};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::HttpCheck;
use crate::upstream::{Server, ServerSet, ServerState};

use check::Budget;
use http::HttpProbe;
use tls::TlsProbe;

/// One backend's servers, the time a check may take, and its HTTP check if it has one.
pub struct CheckedBackend {
    pub servers: Arc<ServerSet>,
    /// `timeout check`.
    pub timeout: Option<Duration>,
    /// `timeout connect`, which bounds a check's connect when `timeout check` is set.
    pub connect_timeout: Option<Duration>,
    /// `option httpchk`: servers are checked with this request instead of a bare connect.
    pub http: Option<HttpCheck>,
    /// The most bytes of an answer read (`tune.bufsize`, as HAProxy's check buffer).
    pub response_limit: usize,
}

/// The running checker: a reload stops it (and waits for its thread) before the next plan's
/// starts, so no server is ever checked by two loops at once.
pub struct Checker {
    stop: Arc<StopFlag>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checker {
    /// Ends every check loop at its next await point (an in-flight check is dropped, its
    /// socket closed) and waits for the thread to end.
    pub fn stop(mut self) {
        self.stop.raise();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Raised once; check loops watch it.
#[derive(Default)]
struct StopFlag {
    raised: std::sync::atomic::AtomicBool,
    event: event_listener::Event,
}

impl StopFlag {
    fn raise(&self) {
        self.raised
            .store(true, std::sync::atomic::Ordering::Release);
        self.event.notify(usize::MAX);
    }

    async fn wait(&self) {
        loop {
            if self.raised.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let listener = self.event.listen();
            if self.raised.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }
}

/// Starts the checker thread (none when there is no backend to watch): servers with `check`
/// are checked, those added at run time too (see [`watch_backend`]). `runtime` builds the
/// checker's event loop: the runtime room's driver choice, handed down so this room does not
/// reach up for it. A server that is DOWN when its loop starts (carried over a reload) needs
/// `rise` good checks to come back, as before it.
pub fn spawn_checker(
    backends: Vec<CheckedBackend>,
    runtime: impl FnOnce() -> io::Result<compio::runtime::Runtime> + Send + 'static,
) -> io::Result<Checker> {
    let stop = Arc::new(StopFlag::default());
    if backends.is_empty() {
        return Ok(Checker { stop, thread: None });
    }
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("health checker cannot start its runtime: {e}; servers stay UP");
                    return;
                }
            };
            rt.block_on(async {
                let all = std::pin::pin!(run_all(backends));
                let stopped = std::pin::pin!(flag.wait());
                futures_util::future::select(all, stopped).await;
            });
        })?;
    Ok(Checker {
        stop,
        thread: Some(thread),
    })
}

/// How often a backend's server list is looked at for servers added at run time (runtime
/// API, DNS).
const MEMBERSHIP_POLL: Duration = Duration::from_secs(1);

async fn run_all(backends: Vec<CheckedBackend>) {
    let tasks: Vec<_> = backends
        .into_iter()
        .map(|b| compio::runtime::spawn(watch_backend(b)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Keeps one check loop per server with `check`, whatever its administrative state (so a
/// server leaving maintenance is as healthy as its checks say): new servers get a loop
/// within [`MEMBERSHIP_POLL`], a removed server's loop ends by itself.
async fn watch_backend(b: CheckedBackend) {
    let probe = b
        .http
        .as_ref()
        .map(|h| Arc::new(HttpProbe::new(h, b.response_limit)));
    let mut checking: Vec<Arc<Server>> = Vec::new();
    loop {
        checking.retain(|s| !s.is_retired());
        for s in b.servers.servers().iter().filter(|s| s.params.check) {
            if checking.iter().any(|c| Arc::ptr_eq(c, s)) {
                continue;
            }
            checking.push(s.clone());
            let budget = Budget::new(b.timeout, b.connect_timeout, s.params.inter);
            compio::runtime::spawn(check_loop(
                b.servers.clone(),
                s.clone(),
                budget,
                probe.clone(),
            ))
            .detach();
        }
        compio::time::sleep(MEMBERSHIP_POLL).await;
    }
}

async fn check_loop(
    set: Arc<ServerSet>,
    server: Arc<Server>,
    budget: Budget,
    probe: Option<Arc<HttpProbe>>,
) {
    let mut state = CheckState::resume(&server.params, server.state() != ServerState::Down);
    let Some(tls) = tls_probe(&server, server.check_target()) else {
        return;
    };
    let mut checked_addr = server.addr();
    while !server.is_retired() {
        // Read each time: `set server … addr` and DNS move a server. A new address starts
        // the rise/fall count again from the verdict the mover left (DNS marks a slot it
        // fills DOWN until its checks pass).
        if server.addr() != checked_addr {
            checked_addr = server.addr();
            state = CheckState::starting(&server.params, server.health() == ServerState::Up);
        }
        // A DNS slot without a record has nothing to check.
        if !server.has_addr() {
            compio::time::sleep(server.params.inter).await;
            continue;
        }
        let target = server.check_target();
        let started = Instant::now();
        let probes = check::Probes {
            http: probe.as_deref(),
            tls: tls.as_ref(),
        };
        let outcome = check::run(target, budget, probes, &server.params).await;
        let took = started.elapsed();
        let was_up = state.is_up();
        let transition = state.record(outcome.passed());
        let stats = &server.stats.check;
        stats.set_http_code(outcome.code);
        stats.set_info(&outcome.info);
        stats.record(
            outcome.status,
            took.as_millis() as u64,
            state.streak(),
            was_up,
        );
        match transition {
            Transition::WentDown => {
                server.set_state(ServerState::Down);
                report(&set, &server, false, &outcome, took);
            }
            Transition::WentUp => {
                server.set_state(ServerState::Up);
                // Sessions queued while every server was full or down may take it now.
                set.queue.wake_all();
                report(&set, &server, true, &outcome, took);
            }
            Transition::None => {}
        }
        compio::time::sleep(state.next_interval().saturating_sub(took)).await;
    }
}

/// The server's TLS check settings: `Some(None)` without `check-ssl`, `None` when they
/// cannot be built (logged; the server is left unchecked, as when the checker cannot start).
fn tls_probe(server: &Server, target: SocketAddr) -> Option<Option<TlsProbe>> {
    if !server.params.check_ssl {
        return Some(None);
    }
    match TlsProbe::new(&server.params, target.ip()) {
        Ok(probe) => Some(Some(probe)),
        Err(e) => {
            log::error!("server {}: check-ssl: {e}; not checked", server.name);
            None
        }
    }
}

/// Logs a transition in HAProxy's words, so operators' log alerts keep matching.
fn report(set: &ServerSet, server: &Server, went_up: bool, outcome: &Outcome, took: Duration) {
    let up = |backup: bool| {
        set.servers()
            .iter()
            .filter(|s| s.backup == backup && s.state() == ServerState::Up)
            .count()
    };
    let (active, backup) = (up(false), up(true));
    let reason = reason(outcome, took);
    let (backend, name) = (&set.backend, &server.name);
    if went_up {
        log::warn!(
            "Server {backend}/{name} is UP{reason}. \
             {active} active and {backup} backup servers online."
        );
    } else {
        log::warn!(
            "Server {backend}/{name} is DOWN{reason}. {active} active and {backup} backup \
             servers left. {} sessions active.",
            server.current()
        );
    }
    set.stats.transitions.record(active + backup > 0);
    if active + backup == 0 {
        log::error!("backend {backend} has no server available!");
    }
}

/// HAProxy's `srv_append_status`: the check's description, the HTTP status where the status
/// carries one, the check's text when it has one (quotes and control characters escaped, as
/// it comes from the server), and the duration.
fn reason(outcome: &Outcome, took: Duration) -> String {
    let mut text = format!(", reason: {}", outcome.status.description());
    if let (true, Some(code)) = (outcome.status.has_code(), outcome.code) {
        text.push_str(&format!(", code: {code}"));
    }
    if !outcome.info.is_empty() {
        text.push_str(&format!(", info: \"{}\"", outcome.info.escape_debug()));
    }
    text.push_str(&format!(", check duration: {}ms", took.as_millis()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::CheckStatus;
    use std::io::Read;

    /// What one check delivers to a listening server, with `words` on the server line.
    fn check_bytes(words: &str) -> Vec<u8> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let cfg = crate::config::parse_str(
            &format!("backend be\n    server s {addr} check {words}\n"),
            std::path::Path::new("t.cfg"),
        )
        .expect("valid config");
        let params = cfg.proxy("be").expect("be").servers[0].params.clone();
        let rt = compio::runtime::Runtime::new().expect("runtime");
        let budget = check::Budget::new(None, None, Duration::from_secs(5));
        let outcome = rt.block_on(check::run(addr, budget, check::Probes::default(), &params));
        assert!(outcome.passed(), "{outcome:?}");
        let (mut s, peer) = l.accept().expect("the check's connection");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        if words.contains("send-proxy-v2") {
            return got;
        }
        let mine = format!(
            "{} {} {} {}",
            peer.ip(),
            addr.ip(),
            peer.port(),
            addr.port()
        );
        String::from_utf8_lossy(&got)
            .replace(&mine, "CHECK-ENDS")
            .into_bytes()
    }

    #[test]
    fn checks_send_the_proxy_header_as_haproxy() {
        assert_eq!(check_bytes(""), b"");
        assert_eq!(check_bytes("send-proxy"), b"PROXY TCP4 CHECK-ENDS\r\n");
        assert_eq!(
            check_bytes("send-proxy port 1"),
            b"",
            "another port: no header"
        );
        assert_eq!(
            check_bytes("send-proxy port 1 check-send-proxy"),
            b"PROXY TCP4 CHECK-ENDS\r\n"
        );
        assert_eq!(
            check_bytes("check-send-proxy"),
            b"PROXY TCP4 CHECK-ENDS\r\n"
        );
        assert_eq!(
            check_bytes("send-proxy-v2"),
            b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00",
            "v2 checks are LOCAL"
        );
    }

    #[test]
    fn transition_reasons_read_as_haproxys() {
        let ms = Duration::from_millis(3);
        let down = Outcome::new(CheckStatus::L7Status, Some(503), "Service Unavailable");
        assert_eq!(
            reason(&down, ms),
            ", reason: Layer7 wrong status, code: 503, info: \"Service Unavailable\", \
             check duration: 3ms"
        );
        let up = Outcome::new(CheckStatus::L7Ok, Some(200), "");
        assert_eq!(
            reason(&up, ms),
            ", reason: Layer7 check passed, code: 200, check duration: 3ms"
        );
        // L7RSP has a status but, as in HAProxy, no code in the message.
        let body = Outcome::new(CheckStatus::L7Response, Some(200), "say \"hi\"\n");
        assert_eq!(
            reason(&body, ms),
            ", reason: Layer7 invalid response, info: \"say \\\"hi\\\"\\n\", check duration: 3ms"
        );
        assert_eq!(
            reason(&Outcome::layer4_passed(), ms),
            ", reason: Layer4 check passed, check duration: 3ms"
        );
    }

    /// A stopped checker has ended its thread: nothing checks the server afterwards, so the
    /// next plan's checker is the only one.
    #[test]
    fn a_stopped_checker_checks_no_more() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let cfg = crate::config::parse_str(
            &format!("backend be\n    server s {addr} check inter 50ms\n"),
            std::path::Path::new("t.cfg"),
        )
        .expect("valid config");
        let set = Arc::new(ServerSet::from_config(cfg.proxy("be").expect("be")));
        let backend = CheckedBackend {
            servers: set,
            timeout: None,
            connect_timeout: None,
            http: None,
            response_limit: 16384,
        };
        let checker = spawn_checker(vec![backend], compio::runtime::Runtime::new).expect("checker");
        l.accept().expect("a first check");
        checker.stop();
        l.set_nonblocking(true).expect("nonblocking");
        while l.accept().is_ok() {}
        std::thread::sleep(Duration::from_millis(300));
        assert!(l.accept().is_err(), "a check came after the stop");
    }

    #[test]
    fn the_check_goes_to_addr_and_port() {
        let config = crate::config::parse_str(
            "backend b\n server s 10.0.0.1:80 check addr 127.0.0.9 port 8080\n \
             server t 10.0.0.2:80 check\n",
            std::path::Path::new("t.cfg"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let set = ServerSet::from_config(config.proxy("b").unwrap_or_else(|| unreachable!()));
        let targets: Vec<String> = set
            .servers()
            .iter()
            .map(|s| s.check_target().to_string())
            .collect();
        assert_eq!(targets, ["127.0.0.9:8080", "10.0.0.2:80"]);
    }
}
