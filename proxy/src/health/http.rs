//! The HTTP part of a check, on a connected socket: send the request, then read the answer
//! until the expectations are decided. At most `limit` bytes are read (HAProxy reads one
//! buffer, `tune.bufsize`); a bigger answer is judged on what fits, as there.

use std::io;

use crate::config::{CheckExpect, HttpCheck};

use super::conn::CheckIo;
use super::error::CheckError;
use super::expect::{self, Verdict};
use super::outcome::Outcome;
use super::{request, response};

/// Bytes asked of the socket per read; most check answers fit in one.
const READ_CHUNK: usize = 4096;

/// A backend's HTTP check, ready to run against any of its servers.
#[derive(Debug)]
pub struct HttpProbe {
    request: Vec<u8>,
    expects: Vec<CheckExpect>,
    /// A HEAD request: the answer has no body, whatever its headers say.
    bodyless: bool,
    limit: usize,
}

impl HttpProbe {
    pub fn new(check: &HttpCheck, limit: usize) -> HttpProbe {
        HttpProbe {
            request: request::encode(&check.request),
            expects: check.expects.clone(),
            bodyless: check.request.method.eq_ignore_ascii_case("HEAD"),
            limit: limit.max(1),
        }
    }
}

/// Sends the request and reads until the verdict; the caller bounds it in time.
pub async fn exchange(stream: &mut impl CheckIo, probe: &HttpProbe) -> Result<Outcome, CheckError> {
    stream
        .send(probe.request.clone())
        .await
        .map_err(CheckError::Socket)?;
    let mut received = Vec::with_capacity(probe.limit.min(READ_CHUNK));
    loop {
        let (got, buf) = read_more(&mut *stream, received, probe.limit).await;
        received = buf;
        let last_read = match got {
            Ok(0) => true,
            Ok(_) => received.len() >= probe.limit,
            // As HAProxy: a network error counts only when nothing came before it; a reset
            // right after the last bytes of an answer is common and the answer stands.
            Err(e) if received.is_empty() => return Err(CheckError::Socket(e)),
            Err(_) => true,
        };
        let parsed = response::parse(&received, probe.bodyless);
        match expect::judge(&probe.expects, &parsed, last_read) {
            Verdict::Done(outcome) => return Ok(outcome),
            Verdict::Wait if last_read => {
                // The judge never waits once told nothing more comes; should it, the answer
                // is as unusable as a cut one.
                return Ok(Outcome::new(
                    crate::counters::CheckStatus::L7Response,
                    None,
                    "",
                ));
            }
            Verdict::Wait => {}
        }
    }
}

/// Reads more bytes after those in `buf`, never past `limit` in all.
async fn read_more(
    stream: &mut impl CheckIo,
    buf: Vec<u8>,
    limit: usize,
) -> (io::Result<usize>, Vec<u8>) {
    let want = limit.saturating_sub(buf.len()).min(READ_CHUNK);
    if want == 0 {
        return (Ok(0), buf);
    }
    stream.recv(buf, want).await
}
