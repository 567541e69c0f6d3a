//! Reaching a server for a new session, with HAProxy's `retries` and `option redispatch`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpStream;

use crate::balance::{PickContext, Server, ServerClaim};

use super::session::Backend;

pub struct Connected {
    pub stream: TcpStream,
    pub claim: ServerClaim,
    pub retries: u32,
    pub connect_time: Duration,
}

#[derive(Debug)]
pub enum ConnectFailure {
    /// No server is UP (or all are full): HAProxy's `<NOSRV>`.
    NoServer,
    /// Every attempt failed; the last server tried, and whether the last failure was a timeout.
    Failed {
        server: Arc<Server>,
        retries: u32,
        timed_out: bool,
    },
}

/// HAProxy waits min(`timeout connect`, 1 s) before retrying the same server, so a restarting
/// server is not hammered; a redispatch to another server goes at once.
const TURNAROUND: Duration = Duration::from_secs(1);

pub async fn connect_server(be: &Backend, client_ip: IpAddr) -> Result<Connected, ConnectFailure> {
    let mut tried: Vec<usize> = Vec::new();
    let mut server = be
        .set
        .pick_server(PickContext {
            client_ip,
            avoid: &[],
        })
        .ok_or(ConnectFailure::NoServer)?;
    let started = Instant::now();
    let mut timed_out = false;
    for attempt in 0..=be.retries {
        if attempt > 0 {
            let redispatch = be.redispatch && attempt == be.retries;
            match redispatch
                .then(|| {
                    be.set.pick_server(PickContext {
                        client_ip,
                        avoid: &tried,
                    })
                })
                .flatten()
            {
                Some(other) => server = other,
                None => {
                    compio::time::sleep(be.connect_timeout.unwrap_or(TURNAROUND).min(TURNAROUND))
                        .await
                }
            }
        }
        let claim = server.claim();
        match try_connect(&server, be.connect_timeout).await {
            Ok(stream) => {
                return Ok(Connected {
                    stream,
                    claim,
                    retries: attempt,
                    connect_time: started.elapsed(),
                })
            }
            Err(e) => {
                timed_out = e.kind() == std::io::ErrorKind::TimedOut;
                log::debug!("connect to {}/{} failed: {e}", be.set.backend, server.name);
                if !tried.contains(&server.index) {
                    tried.push(server.index);
                }
            }
        }
    }
    Err(ConnectFailure::Failed {
        server,
        retries: be.retries,
        timed_out,
    })
}

async fn try_connect(server: &Server, limit: Option<Duration>) -> std::io::Result<TcpStream> {
    let connect = TcpStream::connect(server.addr);
    let stream = match limit {
        Some(limit) => compio::time::timeout(limit, connect)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??,
        None => connect.await?,
    };
    // RTMP acks and control messages are small: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
