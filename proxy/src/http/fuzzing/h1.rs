//! HTTP/1.1 messages as the session and the exchange read them: head search, head parse and
//! checks, re-serialisation, then the body relay (Content-Length, chunked with trailers,
//! until close), message after message on one connection.
//!
//! Besides "no panic", two properties are checked, as a smuggling bug would break them:
//! * the head the proxy sends on parses again to the same message (method, target, version,
//!   fields, framing): the next hop cannot read it differently;
//! * a re-encoded chunked body is canonical: relayed a second time it comes out unchanged.

use super::super::body::{Dir, Relay};
use super::super::head::{
    check_partial_head, head_end, parse_request, parse_response, Framing, MAX_HEADERS,
};
use super::super::side::Side;
use super::mem::{MemConn, MemSink};
use super::{block_on, split_step, BUFSIZE};

/// Messages read from one input at most (pipelining).
const MAX_MESSAGES: usize = 16;

/// Whether a head of `fields` end-to-end fields, with those the proxy writes itself
/// (Connection, the framing field, Upgrade), stays within [`MAX_HEADERS`], the limit the
/// re-parse applies. A message at the limit goes on with a few fields more, as through
/// HAProxy (whose `tune.http.maxhdr` also counts received fields only): the first `response`
/// fuzz run found that case (fuzz/regressions/response/), docs/fuzzing.md says more.
pub(super) fn within_limit(fields: usize) -> bool {
    fields + 3 <= MAX_HEADERS
}

/// Reads until a whole head is buffered; its length, or `None` (EOF, or too large).
async fn read_head(side: &mut Side<MemConn>) -> Option<usize> {
    let mut searched = 0;
    loop {
        // The empty lines RFC 9112 §2.2 lets a client send between requests.
        while side.data().starts_with(b"\r\n") {
            side.consume(2);
        }
        if let Some(end) = head_end(side.data(), searched) {
            return Some(end);
        }
        searched = side.data().len();
        if check_partial_head(side.data()).is_err() {
            return None;
        }
        if side.is_full() {
            return None;
        }
        match side.fill(None).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The body relayed, its bytes as the next hop gets them; `None` when the relay refused it.
async fn relay(
    side: &mut Side<MemConn>,
    dir: Dir,
    framing: Framing,
    chunked_out: bool,
) -> Option<Vec<u8>> {
    let out = MemSink::default();
    let mut relay = Relay {
        from: side,
        to: &out,
        dir,
        read_idle: None,
        write_idle: None,
    };
    let total = relay.run(framing, chunked_out).await.ok()?;
    let bytes = out.0.into_inner();
    assert_eq!(total, bytes.len() as u64, "relay's byte count");
    Some(bytes)
}

/// A chunked body the proxy wrote, relayed again: must come out the same.
async fn assert_canonical(encoded: &[u8], dir: Dir) {
    let mut again = Side::new(MemConn::new(encoded, encoded.len()), BUFSIZE);
    let twice = relay(&mut again, dir, Framing::Chunked, true).await;
    assert_eq!(
        twice.as_deref(),
        Some(encoded),
        "a re-encoded chunked body is not canonical"
    );
}

/// A client's bytes: `data[0]` is the read size, the rest what the client sends.
pub fn request(data: &[u8]) {
    let (step, input) = split_step(data);
    block_on(async {
        let mut client = Side::new(MemConn::new(input, step), BUFSIZE);
        for _ in 0..MAX_MESSAGES {
            let Some(end) = read_head(&mut client).await else {
                return;
            };
            let parsed = parse_request(client.data().get(..end).unwrap_or_default());
            client.consume(end);
            let Ok(req) = parsed else { return };
            if within_limit(req.headers.0.len()) {
                let sent = req.serialize(Some("keep-alive"));
                let again = parse_request(&sent).expect("the head sent on parses again");
                assert_eq!(
                    (&again.method, &again.target, again.minor, &again.headers),
                    (&req.method, &req.target, req.minor, &req.headers),
                    "the head sent on reads differently"
                );
                assert_eq!((again.framing, &again.codings), (req.framing, &req.codings));
            }
            if req.upgrade.is_some() || req.method == "CONNECT" {
                return; // a tunnel follows: bytes, not messages
            }
            let Some(body) = relay(&mut client, Dir::Up, req.framing, true).await else {
                return;
            };
            if req.framing == Framing::Chunked {
                assert_canonical(&body, Dir::Up).await;
            }
            if req.close {
                return;
            }
        }
    });
}

/// A server's bytes: `data[0]` is the read size, `data[1]` picks the request method (GET,
/// HEAD, CONNECT) and whether the client takes chunked; the rest is what the server sends.
pub fn response(data: &[u8]) {
    let (step, rest) = split_step(data);
    let (&pick, input) = rest.split_first().unwrap_or((&0, &[]));
    let method = ["GET", "HEAD", "CONNECT", "POST"][usize::from(pick & 3)];
    let chunked_out = pick & 4 == 0;
    block_on(async {
        let mut server = Side::new(MemConn::new(input, step), BUFSIZE);
        for _ in 0..MAX_MESSAGES {
            let Some(end) = read_head(&mut server).await else {
                return;
            };
            let parsed = parse_response(server.data().get(..end).unwrap_or_default(), method);
            server.consume(end);
            let Ok(resp) = parsed else { return };
            if resp.is_interim() && resp.status != 101 {
                continue;
            }
            if within_limit(resp.headers.0.len()) {
                let sent = resp.serialize(Some("keep-alive"), chunked_out);
                let again = parse_response(&sent, method).expect("the head sent on parses again");
                assert_eq!(
                    (again.status, &again.headers, again.length),
                    (resp.status, &resp.headers, resp.length),
                    "the head sent on reads differently"
                );
                let framing = match resp.framing {
                    Framing::Chunked if !chunked_out => Framing::UntilClose,
                    f => f,
                };
                assert_eq!(
                    again.framing, framing,
                    "the framing sent on reads differently"
                );
            }
            if resp.status == 101 || (method == "CONNECT" && resp.status / 100 == 2) {
                return;
            }
            let Some(body) = relay(&mut server, Dir::Down, resp.framing, chunked_out).await else {
                return;
            };
            if resp.framing == Framing::Chunked && chunked_out {
                assert_canonical(&body, Dir::Down).await;
            }
            if resp.close {
                return;
            }
        }
    });
}
