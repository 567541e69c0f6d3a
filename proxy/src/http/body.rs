//! Moving a message body from one side to the other with bounded memory: never more than one
//! buffer (`tune.bufsize`) of it is held. Chunked bodies are parsed and re-encoded, not passed
//! through: the next hop gets canonical chunk lines (no extensions, no odd spacing), so a
//! chunk syntax the two ends would read differently cannot cross the proxy.

use std::io;
use std::time::Duration;

use compio::net::TcpStream;

use super::conn::{Conn, Sink};
use super::error::HttpError;
use super::head::{check_line_ends, head_end, Framing};
use super::side::{deadline, write_all, Side};
use super::splice::{self, Cut, Splicer};

/// Which way the body goes; decides whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → server (a request body).
    Up,
    /// Server → client (a response body).
    Down,
}

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Re-encoded chunk bytes gathered before a write: HAProxy's default buffer size.
const GATHER: usize = 16 * 1024;

/// How a body moves: its framing in and whether it leaves chunked.
pub struct Relay<'a, F = TcpStream, T = TcpStream> {
    pub from: &'a mut Side<F>,
    pub to: &'a T,
    pub dir: Dir,
    /// Idle limit reading the source, and writing the destination.
    pub read_idle: Option<Duration>,
    pub write_idle: Option<Duration>,
}

impl<F: Conn, T: Sink> Relay<'_, F, T> {
    /// Moves the whole body; returns the bytes written to the destination.
    pub async fn run(&mut self, framing: Framing, chunked_out: bool) -> Result<u64, HttpError> {
        match framing {
            Framing::Empty => Ok(0),
            Framing::Length(n) => self.length(n).await.map(|()| n),
            Framing::UntilClose => self.until_close().await,
            Framing::Chunked => self.chunked(chunked_out).await,
        }
    }

    fn read_failed(&self, e: io::Error) -> HttpError {
        match (self.dir, e.kind()) {
            (Dir::Up, io::ErrorKind::TimedOut) => HttpError::ClientTimeout,
            (Dir::Down, io::ErrorKind::TimedOut) => HttpError::ServerTimeout,
            (Dir::Up, _) => HttpError::ClientClosed(e),
            (Dir::Down, _) => HttpError::ServerClosed(e),
        }
    }

    fn write_failed(&self, e: io::Error) -> HttpError {
        match (self.dir, e.kind()) {
            (Dir::Up, io::ErrorKind::TimedOut) => HttpError::ServerTimeout,
            (Dir::Down, io::ErrorKind::TimedOut) => HttpError::ClientTimeout,
            (Dir::Up, _) => HttpError::ServerClosed(e),
            (Dir::Down, _) => HttpError::ClientClosed(e),
        }
    }

    fn malformed(&self, reason: &'static str) -> HttpError {
        match self.dir {
            Dir::Up => HttpError::bad_request(400, reason),
            Dir::Down => HttpError::BadResponse(reason),
        }
    }

    fn early_eof(&self) -> HttpError {
        match self.dir {
            Dir::Up => HttpError::client_eof(),
            Dir::Down => HttpError::server_eof(),
        }
    }

    /// Reads more; EOF is an error here (the body is not complete).
    async fn more(&mut self) -> Result<(), HttpError> {
        match self.from.fill(deadline(self.read_idle)).await {
            Ok(0) => Err(self.early_eof()),
            Ok(_) => Ok(()),
            Err(e) => Err(self.read_failed(e)),
        }
    }

    async fn pass(&mut self, n: usize) -> Result<(), HttpError> {
        let to = self.to;
        let limit = deadline(self.write_idle);
        match self.from.pass_to(n, to, limit).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.write_failed(e)),
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), HttpError> {
        match write_all(self.to, bytes, deadline(self.write_idle)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.write_failed(e)),
        }
    }

    /// A Content-Length body: what is buffered goes first, then the rest by splice(2) when
    /// it is large and both sockets allow it (see `splice.rs`), else through the buffer.
    async fn length(&mut self, n: u64) -> Result<(), HttpError> {
        let buffered = (self.from.data().len() as u64).min(n);
        if n - buffered < splice::MIN_BODY {
            return self.exact(n).await;
        }
        // Bytes already read sit in the buffer: they reach the destination before any
        // spliced byte does (and before the sockets turn nonblocking for the splice).
        self.exact(buffered).await?;
        let rest = n - buffered;
        let splicer = match (self.from.stream.splice_source(), self.to.splice_sink()) {
            (Some(src), Some(dst)) => match Splicer::new(src, dst) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("splice unavailable for this body ({e}); copying");
                    return self.exact(rest).await;
                }
            },
            _ => return self.exact(rest).await,
        };
        let mut read = 0u64;
        let cut = splicer
            .run(rest, &mut read, self.read_idle, self.write_idle)
            .await;
        self.from.read_total += read;
        match cut {
            Ok(()) => Ok(()),
            Err(Cut::Eof) => Err(self.early_eof()),
            Err(Cut::Read(e)) => Err(self.read_failed(e)),
            Err(Cut::Write(e)) => Err(self.write_failed(e)),
        }
    }

    async fn exact(&mut self, mut left: u64) -> Result<(), HttpError> {
        while left > 0 {
            if self.from.data().is_empty() {
                self.more().await?;
            }
            let n = (self.from.data().len() as u64).min(left) as usize;
            self.pass(n).await?;
            left -= n as u64;
        }
        Ok(())
    }

    async fn until_close(&mut self) -> Result<u64, HttpError> {
        let mut total = 0u64;
        loop {
            if self.from.data().is_empty() {
                match self.from.fill(deadline(self.read_idle)).await {
                    Ok(0) => return Ok(total),
                    Ok(_) => {}
                    Err(e) => return Err(self.read_failed(e)),
                }
            }
            let n = self.from.data().len();
            self.pass(n).await?;
            total += n as u64;
        }
    }

    /// A line ending in CRLF at the start of the unread bytes, without the CRLF; consumed.
    /// `pending` (re-encoded bytes not yet written) goes out before waiting for more input.
    async fn line(&mut self, max: usize, pending: &mut Vec<u8>) -> Result<Vec<u8>, HttpError> {
        loop {
            let data = self.from.data();
            if let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
                let line = data.get(..i).unwrap_or_default().to_vec();
                if line.iter().any(|&b| b == b'\r' || b == b'\n') {
                    return Err(self.malformed("bare CR or LF in a chunk line"));
                }
                self.from.consume(i + 2);
                return Ok(line);
            }
            if data.len() >= max || self.from.is_full() {
                return Err(self.malformed("chunk line too long"));
            }
            self.flush(pending).await?;
            self.more().await?;
        }
    }

    /// Writes what `pending` holds, in one write.
    async fn flush(&mut self, pending: &mut Vec<u8>) -> Result<(), HttpError> {
        if pending.is_empty() {
            return Ok(());
        }
        self.send(std::mem::take(pending)).await
    }

    /// `size` bytes of chunk data. Small pieces are gathered into `pending` with the framing
    /// around them, so that many small chunks that arrived together leave in one write
    /// (1-byte chunks would otherwise cost three writes each on a TCP_NODELAY socket); a large
    /// piece goes straight from the read buffer after `pending`.
    async fn chunk_data(&mut self, mut left: u64, pending: &mut Vec<u8>) -> Result<(), HttpError> {
        while left > 0 {
            if self.from.data().is_empty() {
                self.flush(pending).await?;
                self.more().await?;
            }
            let n = (self.from.data().len() as u64).min(left) as usize;
            if pending.len() + n <= GATHER {
                pending.extend_from_slice(self.from.data().get(..n).unwrap_or_default());
                self.from.consume(n);
            } else {
                self.flush(pending).await?;
                self.pass(n).await?;
            }
            left -= n as u64;
        }
        Ok(())
    }

    /// Returns the bytes written, chunk framing included (the log's `%B` and the `bout`
    /// counters are bytes on the wire). Re-encoded bytes are written when the input runs dry
    /// (never held while waiting for the peer) or when `GATHER` bytes are waiting.
    async fn chunked(&mut self, chunked_out: bool) -> Result<u64, HttpError> {
        let mut total = 0u64;
        let mut pending = Vec::new();
        loop {
            let line = self.line(MAX_CHUNK_LINE, &mut pending).await?;
            let size = parse_chunk_size(&line).map_err(|r| self.malformed(r))?;
            if size == 0 {
                break;
            }
            if chunked_out {
                let size_line = format!("{size:x}\r\n");
                total += size_line.len() as u64;
                pending.extend_from_slice(size_line.as_bytes());
            }
            self.chunk_data(size, &mut pending).await?;
            total += size;
            let end = self.line(2, &mut pending).await?;
            if !end.is_empty() {
                return Err(self.malformed("chunk data longer than its size"));
            }
            if chunked_out {
                pending.extend_from_slice(b"\r\n");
                total += 2;
            }
        }
        let trailers = self.trailers(&mut pending).await?;
        if chunked_out {
            pending.extend_from_slice(b"0\r\n");
            pending.extend_from_slice(&trailers);
            pending.extend_from_slice(b"\r\n");
            total += 5 + trailers.len() as u64;
        }
        self.flush(&mut pending).await?;
        Ok(total)
    }

    /// The trailer section after the last chunk, checked like a head; returned without the
    /// final blank line (empty when there is none).
    async fn trailers(&mut self, pending: &mut Vec<u8>) -> Result<Vec<u8>, HttpError> {
        loop {
            let data = self.from.data();
            if data.starts_with(b"\r\n") {
                self.from.consume(2);
                return Ok(Vec::new());
            }
            if let Some(end) = head_end(data, 0) {
                let block = data.get(..end).unwrap_or_default().to_vec();
                self.from.consume(end);
                check_line_ends(&block).map_err(|r| self.malformed(r))?;
                let mut fields = [httparse::EMPTY_HEADER; super::head::MAX_HEADERS];
                match httparse::parse_headers(&block, &mut fields) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => return Err(self.malformed("malformed trailer section")),
                }
                return Ok(block.get(..end - 2).unwrap_or_default().to_vec());
            }
            if self.from.is_full() {
                return Err(self.malformed("trailer section too large"));
            }
            // A lone CR so far may still become the final CRLF.
            self.flush(pending).await?;
            self.more().await?;
        }
    }
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`: at most 16 hex digits (no u64 overflow), and extensions
/// made of visible characters, spaces and tabs only. Extensions are dropped on re-encoding.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("missing chunk size");
    }
    if digits > 16 {
        return Err("chunk size overflow");
    }
    let rest = line.get(digits..).unwrap_or_default();
    let ext = rest.trim_ascii_start();
    if !ext.is_empty() && !ext.starts_with(b";") {
        return Err("invalid chunk size");
    }
    if ext
        .iter()
        .any(|&b| !(b.is_ascii_graphic() || b == b' ' || b == b'\t'))
    {
        return Err("invalid chunk extension");
    }
    let text = std::str::from_utf8(line.get(..digits).unwrap_or_default())
        .map_err(|_| "invalid chunk size")?;
    u64::from_str_radix(text, 16).map_err(|_| "chunk size overflow")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    /// Data segments a socket has sent (TCP_INFO `tcpi_data_segs_out`).
    fn data_segments_out(fd: std::os::fd::RawFd) -> u32 {
        let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` is a writable tcp_info of `len` bytes; the kernel writes at most `len`.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        // SAFETY: zero-initialised and filled by the kernel: plain data.
        unsafe { info.assume_init() }.tcpi_data_segs_out
    }

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (a, b)
    }

    /// 1000 one-byte chunks that arrive together leave, re-encoded, in a handful of segments
    /// on a TCP_NODELAY socket, not in three writes each; the bytes are exact.
    #[test]
    fn small_chunks_that_arrive_together_leave_together() {
        let (mut source, relay_in) = pair();
        let (relay_out, mut sink) = pair();
        let mut body: Vec<u8> = b"1\r\nx\r\n".repeat(1000);
        body.extend_from_slice(b"0\r\n\r\n");
        source.write_all(&body).expect("source");
        let rt = compio::runtime::Runtime::new().expect("runtime");
        let (total, segments) = rt.block_on(async {
            let from = compio::net::TcpStream::from_std(relay_in).expect("from");
            let to = compio::net::TcpStream::from_std(relay_out).expect("to");
            to.set_nodelay(true).expect("nodelay");
            let mut side = Side::new(from, 16 * 1024);
            let mut relay = Relay {
                from: &mut side,
                to: &to,
                dir: Dir::Down,
                read_idle: Some(Duration::from_secs(5)),
                write_idle: Some(Duration::from_secs(5)),
            };
            let total = relay.run(Framing::Chunked, true).await.expect("relayed");
            (total, data_segments_out(to.as_raw_fd()))
        });
        assert_eq!(total, body.len() as u64);
        let mut got = vec![0u8; body.len()];
        sink.read_exact(&mut got).expect("sink");
        assert_eq!(got, body);
        assert!(segments <= 4, "{segments} data segments for 1000 chunks");
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Ok(26));
        assert_eq!(parse_chunk_size(b"0"), Ok(0));
        assert_eq!(parse_chunk_size(b"A;name=val"), Ok(10));
        assert_eq!(parse_chunk_size(b"A ;name=\"v v\""), Ok(10));
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
        assert!(parse_chunk_size(b"10000000000000000").is_err());
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"-1").is_err());
        assert!(parse_chunk_size(b"0x10").is_err());
        assert!(parse_chunk_size(b"1 2").is_err());
        assert!(parse_chunk_size(b"1;\x01").is_err());
    }
}
