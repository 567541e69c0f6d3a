//! An in-memory connection for the fuzz entry points: reads hand out a fixed input in pieces
//! of a chosen size (so that every "need more bytes" path of the parsers runs), then EOF;
//! writes are collected. No socket, so one run costs microseconds.

use std::cell::{Cell, RefCell};
use std::io;

use compio::buf::{BufResult, IoBuf, IoBufMut};
use compio::net::TcpStream;

use super::super::conn::{Conn, Sink};

pub(crate) struct MemConn {
    input: Vec<u8>,
    pos: Cell<usize>,
    /// Most bytes one read returns (at least 1).
    step: usize,
}

impl MemConn {
    pub(crate) fn new(input: &[u8], step: usize) -> MemConn {
        MemConn {
            input: input.to_vec(),
            pos: Cell::new(0),
            step: step.max(1),
        }
    }
}

/// Collects what is written.
#[derive(Default)]
pub(crate) struct MemSink(pub RefCell<Vec<u8>>);

impl Sink for MemSink {
    fn splice_sink(&self) -> Option<&TcpStream> {
        None
    }

    async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        self.0.borrow_mut().extend_from_slice(buf.as_init());
        BufResult(Ok(()), buf)
    }
}

impl Sink for MemConn {
    fn splice_sink(&self) -> Option<&TcpStream> {
        None
    }

    async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        BufResult(Ok(()), buf)
    }
}

impl Conn for MemConn {
    fn tcp(&self) -> &TcpStream {
        // The body relay and the head reader never ask for the socket (only the session
        // does, for socket options); a fuzz run that gets here found a new caller.
        unreachable!("the in-memory connection has no socket")
    }

    fn splice_source(&self) -> Option<&TcpStream> {
        None
    }

    async fn read<B: IoBufMut>(&self, mut buf: B) -> BufResult<usize, B> {
        let pos = self.pos.get();
        let rest = self.input.get(pos..).unwrap_or_default();
        let len = buf.buf_len();
        let room = buf.as_uninit().get_mut(len..).unwrap_or_default();
        let n = rest.len().min(room.len()).min(self.step);
        for (dst, src) in room.iter_mut().zip(rest.iter().take(n)) {
            dst.write(*src);
        }
        // SAFETY: the `n` bytes after the initialised ones were written just above.
        unsafe { buf.set_len(len + n) };
        self.pos.set(pos + n);
        BufResult(Ok(n), buf)
    }

    async fn shutdown(&self) -> io::Result<()> {
        Ok(())
    }
}
