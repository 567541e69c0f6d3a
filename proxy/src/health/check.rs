//! One check of one server: a TCP connection, the TLS handshake with `check-ssl`, then the
//! HTTP exchange when the backend has one, each within its part of the check's time. Where
//! the time ran out tells HAProxy's L4TOUT (no connection), L6TOUT (no handshake) and L7TOUT
//! (connected, no complete answer) apart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use compio::io::AsyncWriteExt;
use compio::net::TcpStream;

use crate::config::ServerParams;
use crate::upstream::proxy_proto;

use super::conn::CheckIo;
use super::error::CheckError;
use super::http::{self, HttpProbe};
use super::outcome::Outcome;
use super::tls::{self, TlsProbe};

/// What a check does after its connect: the HTTP exchange, the TLS handshake, both, or
/// neither (a bare connect).
#[derive(Debug, Clone, Copy, Default)]
pub struct Probes<'a> {
    pub http: Option<&'a HttpProbe>,
    pub tls: Option<&'a TlsProbe>,
}

/// How long a check may take, as HAProxy documents `timeout check`: when it is set, the
/// connect gets min(`timeout connect`, `inter`) and the answer `timeout check` more after
/// it; without it, the whole check (connect and answer) gets `inter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    connect: Duration,
    /// `None`: the answer shares the connect's deadline.
    answer: Option<Duration>,
}

impl Budget {
    pub fn new(check: Option<Duration>, connect: Option<Duration>, inter: Duration) -> Budget {
        match check {
            Some(answer) => Budget {
                connect: connect.unwrap_or(inter).min(inter),
                answer: Some(answer),
            },
            None => Budget {
                connect: inter,
                answer: None,
            },
        }
    }
}

pub async fn run(
    target: SocketAddr,
    budget: Budget,
    probes: Probes<'_>,
    params: &ServerParams,
) -> Outcome {
    match attempt(target, budget, probes, params).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::from_error(&error),
    }
}

async fn attempt(
    target: SocketAddr,
    budget: Budget,
    probes: Probes<'_>,
    params: &ServerParams,
) -> Result<Outcome, CheckError> {
    let connect_by = Instant::now() + budget.connect;
    let connect = async {
        let stream = TcpStream::connect(target).await?;
        send_header(&stream, params).await?;
        Ok::<_, std::io::Error>(stream)
    };
    let stream = match compio::time::timeout_at(connect_by, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(CheckError::Connect(e)),
        Err(_) => return Err(CheckError::ConnectTimeout),
    };
    // The handshake and the answer share the time after the connect, as HAProxy counts
    // the handshake in the check's I/O after the connection.
    let answer_by = budget.answer.map_or(connect_by, |d| Instant::now() + d);
    let Some(tls_probe) = probes.tls else {
        let mut stream = stream;
        let result = judge(&mut stream, probes.http, answer_by, Outcome::layer4_passed).await;
        let _ = stream.close().await;
        return result;
    };
    let mut session =
        match compio::time::timeout_at(answer_by, tls::connect(stream, tls_probe)).await {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(CheckError::HandshakeTimeout),
        };
    let result = judge(&mut session, probes.http, answer_by, Outcome::layer6_passed).await;
    session.close().await;
    result
}

/// The HTTP exchange when there is one, by `answer_by`; without one the connection (and the
/// handshake) was the whole check, and `passed` says at which layer.
async fn judge(
    stream: &mut impl CheckIo,
    http: Option<&HttpProbe>,
    answer_by: Instant,
    passed: fn() -> Outcome,
) -> Result<Outcome, CheckError> {
    match http {
        None => Ok(passed()),
        Some(probe) => compio::time::timeout_at(answer_by, http::exchange(stream, probe))
            .await
            .unwrap_or(Err(CheckError::ResponseTimeout)),
    }
}

/// The check's PROXY header, when checks send one (`send-proxy` without `port`, or
/// `check-send-proxy`): a v1 line naming the check connection's own ends, or a v2 `LOCAL`. A
/// server that expects the header would log every bare check as a broken connection.
async fn send_header(stream: &TcpStream, params: &ServerParams) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CheckExpect, CheckRequest, ExpectMatch, HttpCheck, Loc};
    use std::io::Write;
    use std::net::{Shutdown, TcpListener};
    use std::sync::mpsc;
    use std::thread;

    /// What a scripted server does with the one connection it takes.
    enum Script {
        /// Writes these pieces, pausing between them, then closes.
        Answer(Vec<&'static [u8]>),
        /// Writes, then keeps the connection open for a while.
        AnswerAndHold(&'static [u8]),
        /// Says nothing, holds the connection.
        Silent,
        /// Closes with a reset (SO_LINGER 0) before answering.
        Reset,
        /// Writes `n` bytes of filler after a head without length.
        Flood(usize),
    }

    /// A server on an ephemeral loopback port running `script` once; the request it read
    /// comes back on the channel.
    fn server(script: Script) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let _ = tx.send(read_head(&mut conn));
            play(&mut conn, script);
        });
        (addr, rx)
    }

    fn read_head(conn: &mut std::net::TcpStream) -> Vec<u8> {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        crate::health::tls_tests::read_head(conn)
    }

    fn play(conn: &mut std::net::TcpStream, script: Script) {
        let pause = Duration::from_millis(50);
        match script {
            Script::Answer(pieces) => {
                for piece in pieces {
                    let _ = conn.write_all(piece);
                    thread::sleep(pause);
                }
            }
            Script::AnswerAndHold(bytes) => {
                let _ = conn.write_all(bytes);
                thread::sleep(Duration::from_secs(3));
            }
            Script::Silent => thread::sleep(Duration::from_secs(3)),
            Script::Reset => {
                let _ = socket2::SockRef::from(&*conn).set_linger(Some(Duration::ZERO));
            }
            Script::Flood(n) => {
                let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
                let _ = conn.write_all(&vec![b'x'; n]);
                let _ = conn.shutdown(Shutdown::Write);
                thread::sleep(pause);
            }
        }
    }

    fn probe(matcher: ExpectMatch, limit: usize) -> HttpProbe {
        let check = HttpCheck {
            request: CheckRequest {
                method: "GET".into(),
                uri: "/liveness".into(),
                ..CheckRequest::haproxy_default()
            },
            expects: vec![CheckExpect {
                negate: false,
                matcher,
                comment: None,
                loc: Loc::default(),
            }],
            loc: Loc::default(),
        };
        HttpProbe::new(&check, limit)
    }

    fn status_200() -> HttpProbe {
        probe(ExpectMatch::Status(vec![(200, 200)]), 16 * 1024)
    }

    /// One check bounded by `inter` alone (no `timeout check`).
    fn run_once(addr: SocketAddr, inter: Duration, http: Option<&HttpProbe>) -> Outcome {
        run_with(addr, Budget::new(None, None, inter), http)
    }

    fn run_with(addr: SocketAddr, budget: Budget, http: Option<&HttpProbe>) -> Outcome {
        compio::runtime::Runtime::new()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
            .block_on(run(
                addr,
                budget,
                Probes { http, tls: None },
                &crate::config::ServerParams::default(),
            ))
    }

    fn summary(o: &Outcome) -> (&'static str, Option<u16>, &str) {
        (o.status.code(), o.code, o.info.as_str())
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_503_split_across_writes_fails_with_l7sts() {
        let (addr, request) = server(Script::Answer(vec![
            b"HTTP/1.1 503 Serv",
            b"ice Unavailable\r\nContent-Le",
            b"ngth: 4\r\n\r\ndown",
        ]));
        let probe = status_200();
        let o = run_once(addr, 5 * SECOND, Some(&probe));
        assert_eq!(summary(&o), ("L7STS", Some(503), "Service Unavailable"));
        let sent = request.recv_timeout(5 * SECOND).unwrap_or_default();
        assert_eq!(sent, b"GET /liveness HTTP/1.0\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn a_complete_answer_decides_without_waiting_for_the_close() {
        let (addr, _) = server(Script::AnswerAndHold(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalive",
        ));
        let probe = probe(ExpectMatch::Body("alive".into()), 16 * 1024);
        let started = Instant::now();
        let o = run_once(addr, 2 * SECOND, Some(&probe));
        assert_eq!(summary(&o), ("L7OK", Some(200), ""));
        assert!(started.elapsed() < SECOND, "{:?}", started.elapsed());
    }

    #[test]
    fn silence_after_connecting_is_l7tout() {
        let (addr, _) = server(Script::Silent);
        let probe = status_200();
        let o = run_once(addr, Duration::from_millis(300), Some(&probe));
        assert_eq!(summary(&o), ("L7TOUT", None, ""));
        // A plain TCP check of the same silent server passes: it only connects.
        let (addr, _) = server(Script::Silent);
        assert_eq!(summary(&run_once(addr, SECOND, None)), ("L4OK", None, ""));
    }

    #[test]
    fn timeout_check_bounds_the_answer_after_the_connect() {
        let ms = Duration::from_millis;
        assert_eq!(
            Budget::new(None, Some(ms(5000)), ms(300)),
            Budget {
                connect: ms(300),
                answer: None
            }
        );
        assert_eq!(
            Budget::new(Some(ms(1000)), Some(ms(5000)), ms(300)),
            Budget {
                connect: ms(300),
                answer: Some(ms(1000))
            }
        );
        assert_eq!(
            Budget::new(Some(ms(1000)), Some(ms(100)), ms(300)),
            Budget {
                connect: ms(100),
                answer: Some(ms(1000))
            }
        );
        // As HAProxy: with `timeout check 600ms` and `inter 100ms`, a silent server is given
        // the 600 ms, not `inter`.
        let (addr, _) = server(Script::Silent);
        let probe = status_200();
        let started = Instant::now();
        let o = run_with(
            addr,
            Budget::new(Some(ms(600)), None, ms(100)),
            Some(&probe),
        );
        assert_eq!(summary(&o), ("L7TOUT", None, ""));
        assert!(started.elapsed() >= ms(600), "{:?}", started.elapsed());
    }

    #[test]
    fn a_reset_before_any_answer_is_a_socket_error() {
        let (addr, _) = server(Script::Reset);
        let probe = status_200();
        let o = run_once(addr, 5 * SECOND, Some(&probe));
        assert_eq!(summary(&o), ("SOCKERR", None, "Connection reset by peer"));
    }

    #[test]
    fn a_close_without_answer_or_with_garbage_is_l7rsp() {
        for script in [
            Script::Answer(vec![]),
            Script::Answer(vec![b"HTTP/1.1 200 OK\r\nContent-Le"]),
            Script::Answer(vec![b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]),
        ] {
            let (addr, _) = server(script);
            let probe = status_200();
            let o = run_once(addr, 5 * SECOND, Some(&probe));
            assert_eq!(summary(&o), ("L7RSP", None, ""));
        }
    }

    #[test]
    fn only_the_buffer_is_read_of_a_big_answer() {
        let (addr, _) = server(Script::Flood(1 << 20));
        let probe = probe(ExpectMatch::Body("needle".into()), 4096);
        let o = run_once(addr, 5 * SECOND, Some(&probe));
        assert_eq!(
            summary(&o),
            ("L7RSP", Some(200), "HTTP content check did not match")
        );
    }

    #[test]
    fn refused_connections_are_l4con() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(listener);
        let probe = status_200();
        let o = run_once(addr, SECOND, Some(&probe));
        assert_eq!(summary(&o), ("L4CON", None, "Connection refused"));
    }
}
