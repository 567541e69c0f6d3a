//! Active health checks. They run on a thread of their own so a slow check never delays a
//! worker; results reach the workers only through each server's atomic state.

mod state;

pub use state::{CheckState, Transition};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::io::AsyncWriteExt;
use compio::net::TcpStream;

use crate::config::ServerParams;
use crate::counters::CheckStatus;
use crate::upstream::{proxy_proto, Server, ServerSet, ServerState};

/// One backend's servers and the time a check may take.
pub struct CheckedBackend {
    pub servers: Arc<ServerSet>,
    pub timeout: Option<Duration>,
}

/// Starts the checker thread for every server with `check`; returns `None` when there is none.
/// `runtime` builds the checker's event loop: the runtime room's driver choice, handed down
/// so this room does not reach up for it.
pub fn spawn_checker(
    backends: Vec<CheckedBackend>,
    runtime: impl FnOnce() -> io::Result<compio::runtime::Runtime> + Send + 'static,
) -> io::Result<Option<std::thread::JoinHandle<()>>> {
    let any = backends
        .iter()
        .any(|b| b.servers.servers.iter().any(|s| is_checked(s)));
    if !any {
        return Ok(None);
    }
    let handle = std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("health checker cannot start its runtime: {e}; servers stay UP");
                    return;
                }
            };
            rt.block_on(run_all(backends));
        })?;
    Ok(Some(handle))
}

fn is_checked(s: &Server) -> bool {
    s.params.check && s.state() != ServerState::Maint
}

async fn run_all(backends: Vec<CheckedBackend>) {
    let mut tasks = Vec::new();
    for b in &backends {
        for s in b.servers.servers.iter().filter(|s| is_checked(s)) {
            let set = b.servers.clone();
            let server = s.clone();
            let timeout = check_timeout(b.timeout, server.params.inter);
            tasks.push(compio::runtime::spawn(check_loop(set, server, timeout)));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// HAProxy bounds a check by `timeout check` when set, and never lets it outlive `inter`.
fn check_timeout(configured: Option<Duration>, inter: Duration) -> Duration {
    configured.unwrap_or(inter).min(inter)
}

async fn check_loop(set: Arc<ServerSet>, server: Arc<Server>, timeout: Duration) {
    let mut state = CheckState::new(&server.params);
    let target = check_target(&server);
    loop {
        let started = Instant::now();
        let result = tcp_check(target, timeout, &server.params).await;
        let took = started.elapsed();
        let was_up = state.is_up();
        let transition = state.record(result.is_ok());
        server.stats.check.record(
            check_status(&result),
            took.as_millis() as u64,
            state.streak(),
            was_up,
        );
        server.stats.check.set_info(last_check_text(&result));
        match transition {
            Transition::WentDown => {
                server.set_state(ServerState::Down);
                report(&set, &server, "DOWN", &result, took);
            }
            Transition::WentUp => {
                server.set_state(ServerState::Up);
                // Sessions queued while every server was full or down may take it now.
                set.queue.wake_all();
                report(&set, &server, "UP", &result, took);
            }
            Transition::None => {}
        }
        compio::time::sleep(state.next_interval().saturating_sub(took)).await;
    }
}

fn check_target(server: &Server) -> SocketAddr {
    let mut addr = server.addr;
    if let Some(port) = server.params.check_port {
        addr.set_port(port);
    }
    addr
}

/// The failure text of a check that ran out of time.
const CHECK_TIMEOUT: &str = "Connection timeout";

/// HAProxy's check status code for a layer-4 check result (stats page, exporter).
fn check_status(result: &Result<(), String>) -> CheckStatus {
    match result {
        Ok(()) => CheckStatus::Ok,
        Err(e) if e == CHECK_TIMEOUT => CheckStatus::Timeout,
        Err(_) => CheckStatus::ConnRefused,
    }
}

/// HAProxy's `last_chk` for a layer-4 check: the system's error text ("Connection refused"),
/// nothing for a pass, and nothing for a timeout (no error was raised, HAProxy prints none).
fn last_check_text(result: &Result<(), String>) -> &str {
    match result {
        Ok(()) => "",
        Err(e) if e == CHECK_TIMEOUT => "",
        Err(e) => e.split(" (os error").next().unwrap_or(e),
    }
}

/// Layer-4 check: the server accepts a TCP connection within the timeout, and takes the
/// PROXY header when checks send one (`send-proxy` without `port`, or `check-send-proxy`):
/// a server that expects the header would log every bare check as a broken connection.
async fn tcp_check(
    addr: SocketAddr,
    timeout: Duration,
    params: &ServerParams,
) -> Result<(), String> {
    let check = async {
        let stream = TcpStream::connect(addr).await?;
        send_header(&stream, params).await?;
        stream.close().await
    };
    match compio::time::timeout(timeout, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(CHECK_TIMEOUT.to_string()),
    }
}

/// The check's header: a v1 line naming the check connection's own ends, or a v2 `LOCAL`.
async fn send_header(stream: &TcpStream, params: &ServerParams) -> io::Result<()> {
    // The usual check sends none: no address look-ups for it.
    if params.check_proxy_version().is_none() {
        return Ok(());
    }
    let Some(header) = proxy_proto::for_check(params, stream.local_addr()?, stream.peer_addr()?)
    else {
        return Ok(());
    };
    let mut w = stream;
    w.write_all(header).await.0
}

/// Logs a transition in HAProxy's words, so operators' log alerts keep matching.
fn report(
    set: &ServerSet,
    server: &Server,
    now: &str,
    result: &Result<(), String>,
    took: Duration,
) {
    let active = set
        .servers
        .iter()
        .filter(|s| !s.backup && s.state() == ServerState::Up)
        .count();
    let backup = set
        .servers
        .iter()
        .filter(|s| s.backup && s.state() == ServerState::Up)
        .count();
    let ms = took.as_millis();
    match result {
        Ok(()) => log::warn!(
            "Server {}/{} is {now}, reason: Layer4 check passed, check duration: {ms}ms. \
             {active} active and {backup} backup servers online.",
            set.backend,
            server.name
        ),
        Err(info) => log::warn!(
            "Server {}/{} is {now}, reason: Layer4 connection problem, info: \"{info}\", \
             check duration: {ms}ms. {active} active and {backup} backup servers left. \
             {} sessions active.",
            set.backend,
            server.name,
            server.current()
        ),
    }
    set.stats.transitions.record(active + backup > 0);
    if active + backup == 0 {
        log::error!("backend {} has no server available!", set.backend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let passed = rt.block_on(tcp_check(addr, Duration::from_secs(5), &params));
        assert_eq!(passed, Ok(()));
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
    fn last_check_text_is_haproxys() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED).to_string();
        assert_eq!(last_check_text(&Err(refused)), "Connection refused");
        assert_eq!(last_check_text(&Ok(())), "");
        assert_eq!(last_check_text(&Err(CHECK_TIMEOUT.into())), "");
    }
}
