//! Reaching a server for one request, with `retries` and `option redispatch`. The first
//! server is chosen by the caller (persistence cookie, or the balancing algorithm): retries go
//! to the same server, HAProxy's way, and with redispatch the last retry goes elsewhere.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::TcpStream;

use crate::balance::{PickContext, Server, ServerClaim};
use crate::tcp::Backend;

pub struct Connected {
    pub stream: TcpStream,
    pub server: Arc<Server>,
    pub claim: ServerClaim,
    pub retries: u32,
    pub connect_time: Duration,
}

#[derive(Debug)]
pub struct Failed {
    pub server: Arc<Server>,
    pub retries: u32,
    pub timed_out: bool,
}

/// HAProxy waits min(`timeout connect`, 1 s) before retrying the same server.
const TURNAROUND: Duration = Duration::from_secs(1);

pub async fn connect(
    be: &Backend,
    first: Arc<Server>,
    client_ip: IpAddr,
) -> Result<Connected, Failed> {
    let started = Instant::now();
    let mut server = first;
    let mut tried: Vec<usize> = Vec::new();
    let mut timed_out = false;
    for attempt in 0..=be.retries {
        if attempt > 0 {
            let redispatch = be.redispatch && attempt == be.retries;
            let other = redispatch
                .then(|| {
                    be.set.pick_server(PickContext {
                        client_ip,
                        avoid: &tried,
                    })
                })
                .flatten();
            match other {
                Some(o) => server = o,
                None => {
                    let pause = be.connect_timeout.unwrap_or(TURNAROUND).min(TURNAROUND);
                    compio::time::sleep(pause).await;
                }
            }
        }
        let claim = server.claim();
        match try_connect(&server, be.connect_timeout).await {
            Ok(stream) => {
                return Ok(Connected {
                    stream,
                    server: server.clone(),
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
    Err(Failed {
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
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
