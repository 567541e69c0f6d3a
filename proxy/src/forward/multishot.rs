//! The copy engine's io_uring pump: one multishot recv per direction, buffers from the
//! worker's provided-buffer ring, each received buffer written to the peer and handed back to
//! the ring when its write is done. One recv submission serves many chunks, so a busy
//! direction costs one completion per chunk instead of a submission and a completion.
//!
//! The ring is shared by every flow on the worker, which gives two failure modes the plain
//! pump does not have (LIFECYCLE.md, "Multishot copy"):
//! - the ring runs dry: the kernel ends the multishot with ENOBUFS; that turn is a plain read
//!   into a buffer of our own, then the multishot is armed again. The flow never aborts for it.
//! - a stalled destination: while a write is pending the kernel keeps filling ring buffers for
//!   the source. Once a direction holds `MAX_HELD` buffers its multishot is cancelled (what
//!   was already received is still delivered, in order) and armed again only when the queue
//!   has drained, so the source's TCP window, not the ring, absorbs the stall.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::Poll;

use compio::buf::BufResult;
use compio::driver::op::{RecvFlags, RecvMulti};
use compio::driver::{BufferRef, ToSharedFd};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;
use compio::runtime::{CancelToken, Runtime, StreamExt as _};
use futures_util::Stream;

use super::copy::Count;
use super::idle::Activity;
use super::pair::DirEnd;

/// Ring buffers one direction may hold (received, not yet written) before its multishot is
/// stopped: 4 × 16 KiB, the order of the splice engine's 64 KiB pipe. A cancel lands after
/// the completions already posted, so a direction can briefly hold a few more.
pub const MAX_HELD: usize = 4;

/// A received chunk: a ring buffer, or our own buffer when the ring was empty.
enum Chunk {
    Ring(BufferRef),
    Own(Vec<u8>),
}

/// What woke the pump.
enum Event {
    Wrote(io::Result<usize>),
    Shot(Option<io::Result<Option<BufferRef>>>),
    Read(io::Result<Vec<u8>>),
}

/// Where the receiving side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// No recv outstanding: arm the multishot when the queue has room.
    Idle,
    /// A multishot is outstanding and may post more buffers.
    Armed,
    /// Its cancel was requested because the queue is full; what it posted still arrives.
    Stopping,
    /// The ring was empty: one plain read is outstanding.
    Fallback,
    /// The source sent FIN: drain the queue, then pass the FIN on.
    Eof,
}

pub async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    bufsize: usize,
    activity: &Activity,
    mut moved: Count<'_>,
) -> DirEnd {
    let mut queue: VecDeque<Chunk> = VecDeque::with_capacity(MAX_HELD * 2);
    let mut recv = Recv::Idle;
    let mut token = CancelToken::new();
    let mut shot = pin!(None);
    let mut read = pin!(None);
    let mut write = pin!(None);
    loop {
        if write.is_none() {
            match queue.pop_front() {
                Some(chunk) => write.set(Some(write_chunk(to, chunk))),
                None if recv == Recv::Eof => return pass_fin(to).await,
                None => {}
            }
        }
        if recv == Recv::Idle && queue.len() < MAX_HELD {
            token = CancelToken::new();
            match arm(from, &token) {
                Ok(s) => {
                    shot.set(Some(s));
                    recv = Recv::Armed;
                }
                // No ring on this runtime (cannot happen on io_uring once built): read plainly.
                Err(_) => {
                    read.set(Some(read_own(from, bufsize)));
                    recv = Recv::Fallback;
                }
            }
        }
        let event = next_event(write.as_mut(), shot.as_mut(), read.as_mut()).await;
        match event {
            Event::Wrote(Ok(n)) => {
                write.set(None);
                moved.add(n);
                activity.touch();
            }
            Event::Wrote(Err(_)) => return DirEnd::DestFailed,
            Event::Shot(Some(Ok(Some(buf)))) if !buf.is_empty() => {
                activity.touch();
                queue.push_back(Chunk::Ring(buf));
                if recv == Recv::Armed && queue.len() >= MAX_HELD {
                    token.clone().cancel();
                    recv = Recv::Stopping;
                }
            }
            // A zero-length completion is the source's FIN.
            Event::Shot(Some(Ok(_))) => {
                shot.set(None);
                recv = Recv::Eof;
            }
            // The multishot ended without an error (after its last buffer, or after the
            // cancel we asked for): arm again once there is room.
            Event::Shot(None) => {
                shot.set(None);
                recv = Recv::Idle;
            }
            Event::Shot(Some(Err(e))) => {
                shot.set(None);
                match ring_error(&e) {
                    Some(libc::ENOBUFS) => {
                        read.set(Some(read_own(from, bufsize)));
                        recv = Recv::Fallback;
                    }
                    Some(libc::ECANCELED) | Some(libc::EINTR) => recv = Recv::Idle,
                    // Reset or any other failure: the flow ends, as in the plain pump.
                    _ => return DirEnd::SourceFailed,
                }
            }
            Event::Read(Ok(v)) if v.is_empty() => {
                read.set(None);
                recv = Recv::Eof;
            }
            Event::Read(Ok(v)) => {
                read.set(None);
                activity.touch();
                queue.push_back(Chunk::Own(v));
                recv = Recv::Idle;
            }
            Event::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                read.set(None);
                recv = Recv::Idle;
            }
            Event::Read(Err(_)) => return DirEnd::SourceFailed,
        }
    }
}

/// The errno of a multishot's end; compio reports ENOBUFS (the ring is empty) as a
/// `ResourceBusy` error without the raw code.
fn ring_error(e: &io::Error) -> Option<i32> {
    match e.kind() {
        io::ErrorKind::ResourceBusy => Some(libc::ENOBUFS),
        _ => e.raw_os_error(),
    }
}

/// Pass the FIN on; a shutdown failure means the peer is gone already.
async fn pass_fin(to: &TcpStream) -> DirEnd {
    match super::shut_write(to) {
        Ok(()) => DirEnd::Eof,
        Err(_) => DirEnd::DestFailed,
    }
}

/// A multishot recv on `from` from this runtime's ring, cancelled through `token`. Each arm
/// is one submission; it ends on FIN, an error, ENOBUFS, our cancel, or when the kernel
/// stops it (then it is armed again).
fn arm(
    from: &TcpStream,
    token: &CancelToken,
) -> io::Result<impl Stream<Item = io::Result<Option<BufferRef>>>> {
    let rt = Runtime::current();
    let pool = rt.buffer_pool()?;
    // len 0: each completion may fill a whole ring buffer (a non-zero len with multishot is
    // refused by older kernels).
    let op = RecvMulti::new(from.to_shared_fd(), &pool, 0, RecvFlags::empty())?;
    Ok(rt
        .submit_multi(op)
        .into_managed(pool)
        .with_cancel(token.clone()))
}

/// One plain read into a buffer of our own, for a turn when the ring was empty.
async fn read_own(from: &TcpStream, bufsize: usize) -> io::Result<Vec<u8>> {
    let mut reader = from;
    let BufResult(res, buf) = reader.read(Vec::with_capacity(bufsize)).await;
    res.map(|_| buf)
}

async fn write_chunk(to: &TcpStream, chunk: Chunk) -> io::Result<usize> {
    let mut writer = to;
    match chunk {
        Chunk::Ring(b) => {
            let n = b.len();
            // The buffer goes back to the ring when `b` drops, after the write.
            writer.write_all(b).await.0.map(|()| n)
        }
        Chunk::Own(v) => {
            let n = v.len();
            writer.write_all(v).await.0.map(|()| n)
        }
    }
}

/// Waits for whichever of the pending write, multishot and fallback read finishes first.
/// The write is polled first so a drained queue re-arms before more is received.
async fn next_event<W, S, R>(
    mut write: Pin<&mut Option<W>>,
    mut shot: Pin<&mut Option<S>>,
    mut read: Pin<&mut Option<R>>,
) -> Event
where
    W: Future<Output = io::Result<usize>>,
    S: Stream<Item = io::Result<Option<BufferRef>>>,
    R: Future<Output = io::Result<Vec<u8>>>,
{
    poll_fn(|cx| {
        if let Some(w) = write.as_mut().as_pin_mut() {
            if let Poll::Ready(r) = w.poll(cx) {
                return Poll::Ready(Event::Wrote(r));
            }
        }
        if let Some(s) = shot.as_mut().as_pin_mut() {
            if let Poll::Ready(x) = s.poll_next(cx) {
                return Poll::Ready(Event::Shot(x));
            }
        }
        if let Some(r) = read.as_mut().as_pin_mut() {
            if let Poll::Ready(x) = r.poll(cx) {
                return Poll::Ready(Event::Read(x));
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::num::NonZeroU16;

    use compio::driver::{DriverType, ProactorBuilder};
    use compio::net::TcpListener;

    use super::*;
    use crate::forward::Progress;

    const FLOWS: usize = 8;
    const BYTES: usize = 1 << 20;

    fn pattern(flow: usize, i: usize) -> u8 {
        (i.wrapping_mul(31) ^ flow.wrapping_mul(7)) as u8
    }

    /// A ring of two 4 KiB buffers shared by eight 1 MiB flows: the ring runs dry again and
    /// again (ENOBUFS → plain read → re-arm), and every byte must still arrive, in order.
    #[test]
    fn tiny_ring_many_flows_intact() {
        let mut pb = ProactorBuilder::new();
        pb.driver_type(DriverType::IoUring)
            .buffer_pool_size(NonZeroU16::new(2).expect("nonzero"))
            .buffer_pool_buffer_len(4096);
        let rt = compio::runtime::Runtime::builder()
            .with_proactor(pb)
            .build()
            .expect("runtime");
        assert!(
            rt.driver_type().is_iouring(),
            "this test needs io_uring (the multishot pump runs only there)"
        );
        let results = rt.block_on(async {
            let flows = (0..FLOWS).map(one_flow);
            futures_util::future::join_all(flows).await
        });
        for (flow, (end, moved, received)) in results.into_iter().enumerate() {
            assert_eq!(end, DirEnd::Eof, "flow {flow}");
            assert_eq!(moved, BYTES as u64, "flow {flow} counted");
            assert_eq!(received.len(), BYTES, "flow {flow} received");
            let bad = (0..BYTES).find(|&i| received[i] != pattern(flow, i));
            assert_eq!(bad, None, "flow {flow}: first wrong byte");
        }
    }

    /// Client thread → (proxy side a) pump (proxy side b) → server thread, one direction.
    async fn one_flow(flow: usize) -> (DirEnd, u64, Vec<u8>) {
        let front = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let back = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (front_addr, back_addr) = (
            front.local_addr().expect("addr"),
            back.local_addr().expect("addr"),
        );
        std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(front_addr).expect("connect");
            let data: Vec<u8> = (0..BYTES).map(|i| pattern(flow, i)).collect();
            c.write_all(&data).expect("client write");
        });
        let server = std::thread::spawn(move || {
            let (mut s, _) = back.accept().expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("server read");
            got
        });
        let front = TcpListener::from_std(front).expect("listener");
        let (a, _) = front.accept().await.expect("accept");
        let b = TcpStream::connect(back_addr).await.expect("connect");
        let activity = Activity::new();
        let mut total = 0u64;
        let count = Count {
            total: &mut total,
            progress: Progress::none(),
            is_up: true,
        };
        let end = pump(&a, &b, 4096, &activity, count).await;
        drop(b);
        let received = server.join().expect("server thread");
        (end, total, received)
    }
}
