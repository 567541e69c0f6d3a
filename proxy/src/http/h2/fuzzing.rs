//! The HTTP/2 frame path for the fuzz target `h2`: raw client bytes through the same IO
//! bridge as a TLS client's (compio's compat stream, then tokio-util's), into the h2 crate's
//! server side built with the proxy's settings and limits (`conn::builder`); every stream
//! accepted goes through `convert` into the HTTP/1.1 model, its body and trailers are read
//! with flow control released, and it is answered.
//!
//! Property checked besides "no panic": the HTTP/1.1 head made from a stream parses again
//! to the same message, so an HTTP/2 client cannot smuggle a second request to the server.

use std::future::poll_fn;
use std::task::Poll;

use bytes::Bytes;
use compio::buf::{BufResult, IoBuf, IoBufMut};
use compio::io::compat::AsyncStream;
use compio::io::{AsyncRead, AsyncWrite};
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::RecvStream;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::super::head::{parse_request, Framing, Headers, Response};
use super::conn::builder;
use super::convert;

/// The client's bytes, `step` at a time, then EOF.
struct MemRead {
    input: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for MemRead {
    async fn read<B: IoBufMut>(&mut self, mut buf: B) -> BufResult<usize, B> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let len = buf.buf_len();
        let room = buf.as_uninit().get_mut(len..).unwrap_or_default();
        let n = rest.len().min(room.len()).min(self.step);
        for (dst, src) in room.iter_mut().zip(rest.iter().take(n)) {
            dst.write(*src);
        }
        // SAFETY: the `n` bytes after the initialised ones were written just above.
        unsafe { buf.set_len(len + n) };
        self.pos += n;
        BufResult(Ok(n), buf)
    }
}

/// What the proxy writes to the client goes nowhere.
struct Discard;

impl AsyncWrite for Discard {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let n = buf.buf_len();
        BufResult(Ok(n), buf)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serves `input` as one client connection; `bufsize` as `tune.bufsize`.
pub async fn frames(input: &[u8], step: usize, bufsize: usize) {
    let read = MemRead {
        input: input.to_vec(),
        pos: 0,
        step: step.max(1),
    };
    let io = Box::pin(AsyncStream::with_limits(
        bufsize,
        bufsize * 4,
        (read, Discard),
    ))
    .compat();
    let Ok(mut conn) = builder(bufsize).handshake::<_, Bytes>(io).await else {
        return;
    };
    let mut streams = FuturesUnordered::new();
    loop {
        let next = poll_fn(|cx| {
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            conn.poll_accept(cx)
        });
        match next.await {
            Some(Ok((req, respond))) => streams.push(answer(req, respond)),
            Some(Err(_)) | None => return,
        }
    }
}

async fn answer(req: http::Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let (parts, mut body) = req.into_parts();
    let converted = convert::request(&parts, body.is_end_stream());
    // Fields past the HTTP/1.1 limit are the server's to refuse (see fuzzing/h1.rs).
    if let Some(req) = converted
        .as_ref()
        .ok()
        .filter(|r| r.headers.0.len() + 3 <= super::super::head::MAX_HEADERS)
    {
        let sent = req.serialize(Some("keep-alive"));
        let again = parse_request(&sent).expect("the head made from a stream parses");
        assert_eq!(
            (&again.method, &again.target, &again.headers, again.framing),
            (&req.method, &req.target, &req.headers, req.framing),
            "the head made from a stream reads differently"
        );
    }
    while let Some(data) = body.data().await {
        let Ok(data) = data else { return };
        let _ = body.flow_control().release_capacity(data.len());
    }
    if body.trailers().await.is_err() {
        return;
    }
    let status = if converted.is_ok() { 200 } else { 400 };
    let answer = Response {
        status,
        reason: Default::default(),
        headers: Headers::default(),
        framing: Framing::Length(2),
        codings: Vec::new(),
        length: None,
        close: false,
        upgrade: None,
    };
    let Ok(head) = convert::response(&answer) else {
        return;
    };
    if let Ok(mut send) = respond.send_response(head, false) {
        let _ = send.send_data(Bytes::from_static(b"ok"), true);
    }
}
