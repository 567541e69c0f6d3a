//! The listening sockets: `_getsocks` answered with one message per listener (its key and
//! the socket), then `end`. The old process keeps its own copies until it stops, so a
//! connection is never refused: both processes accept from the same queue meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::wire;
use super::{Reloader, UpgradeError};
use crate::runtime::listeners::Key;

pub const COMMAND: &str = "_getlisteners";

fn v6_word(v6only: Option<bool>) -> &'static str {
    match v6only {
        None => "-",
        Some(true) => "v6only",
        Some(false) => "v4v6",
    }
}

fn parse_v6(word: &str) -> Option<Option<bool>> {
    match word {
        "-" => Some(None),
        "v6only" => Some(Some(true)),
        "v4v6" => Some(Some(false)),
        _ => None,
    }
}

pub fn give(sock: &UnixStream, reloader: &Reloader) -> Result<(), UpgradeError> {
    let listeners = reloader.listener_sockets();
    for ((addr, v6only), socket) in &listeners {
        let line = format!("listener {addr} {}", v6_word(*v6only));
        wire::send(sock, &line, &[socket.as_raw_fd()])?;
    }
    wire::send(sock, &format!("end {}", listeners.len()), &[])?;
    log::info!(
        "upgrade: {} listening socket(s) handed to the new process",
        listeners.len()
    );
    Ok(())
}

pub fn take(sock: &UnixStream) -> Result<HashMap<Key, std::net::TcpListener>, UpgradeError> {
    wire::send_line(sock, COMMAND)?;
    let mut got = HashMap::new();
    loop {
        let (text, mut fds) = wire::recv(sock)?;
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["end", _] => return Ok(got),
            ["listener", addr, v6] => {
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| UpgradeError::Protocol(text.clone()))?;
                let v6 = parse_v6(v6).ok_or_else(|| UpgradeError::Protocol(text.clone()))?;
                let fd = fds
                    .pop()
                    .ok_or_else(|| UpgradeError::Protocol(text.clone()))?;
                got.insert((addr, v6), std::net::TcpListener::from(fd));
            }
            _ => return Err(UpgradeError::Protocol(text)),
        }
    }
}
