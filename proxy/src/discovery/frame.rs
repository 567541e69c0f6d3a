//! DNS over TCP frames each message with its length (RFC 1035 §4.2.2, RFC 7766 §8): two bytes
//! in network order, then the message. The peer is not trusted: the length is at most 65535 by
//! construction (the buffer is sized by it, never by what arrives), a length of 0 is refused,
//! and a peer that closes before the message is whole ends the read with an error. Waiting
//! for a peer that sends less than it announced is bounded by the caller (`timeout retry`).

use std::io;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncReadExt};

use super::error::DnsError;

/// `message` preceded by its length.
pub fn framed(message: &[u8]) -> Result<Vec<u8>, DnsError> {
    let len = u16::try_from(message.len())
        .map_err(|_| DnsError::Io(format!("query of {} bytes too long for TCP", message.len())))?;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(out)
}

/// The next message of `r`: its length, then exactly that many bytes (reads may come short;
/// they are joined).
pub async fn read<R: AsyncRead>(mut r: R) -> Result<Vec<u8>, DnsError> {
    let head = exactly(&mut r, 2, "length").await?;
    let len = match <[u8; 2]>::try_from(head.as_slice()) {
        Ok(b) => usize::from(u16::from_be_bytes(b)),
        Err(_) => return Err(DnsError::Malformed("length prefix cut short".into())),
    };
    if len == 0 {
        return Err(DnsError::Malformed(
            "empty message (length 0) over TCP".into(),
        ));
    }
    exactly(&mut r, len, "message").await
}

/// `n` bytes of `r`, or why not: a close before them is a message cut short.
async fn exactly<R: AsyncRead>(r: &mut R, n: usize, what: &str) -> Result<Vec<u8>, DnsError> {
    // Sliced to `n`: `read_exact` fills the buffer's capacity, which `with_capacity` may round
    // up; one byte more would be read from the next message, or waited for.
    let BufResult(got, buf) = r.read_exact(Vec::with_capacity(n).slice(..n)).await;
    match got {
        Ok(()) => Ok(buf.into_inner()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(DnsError::Malformed(format!(
            "connection closed before the {what} ({n} bytes) was whole"
        ))),
        Err(e) => Err(DnsError::Io(format!("reading the {what}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read, then EOF.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        async fn read<B: compio::buf::IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
            let mut part = &self.data[..self.step.min(self.data.len())];
            let BufResult(n, buf) = part.read(buf).await;
            // Only what the buffer took is consumed.
            if let Ok(n) = n {
                self.data = &self.data[n..];
            }
            BufResult(n, buf)
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(f)
    }

    fn read_all(data: &[u8], step: usize) -> Result<Vec<u8>, DnsError> {
        run(read(Trickle { data, step }))
    }

    #[test]
    fn a_frame_is_read_whole_whatever_the_read_sizes() {
        let msg: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let wire = framed(&msg).expect("frame");
        assert_eq!(&wire[..2], &[0x0b, 0xb8]);
        for step in [1, 2, 3, 7, 1500, 4000] {
            assert!(read_all(&wire, step) == Ok(msg.clone()), "step {step}");
        }
    }

    #[test]
    fn only_the_announced_length_is_read() {
        let mut wire = framed(b"first").expect("frame");
        wire.extend_from_slice(&framed(b"second").expect("frame"));
        let got = run(async {
            let mut r: &[u8] = &wire;
            let one = read(&mut r).await;
            let two = read(&mut r).await;
            (one, two, r.len())
        });
        assert_eq!(got, (Ok(b"first".to_vec()), Ok(b"second".to_vec()), 0));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let malformed = |data: &[u8], step: usize| {
            let got = read_all(data, step);
            assert!(
                matches!(got, Err(DnsError::Malformed(_))),
                "{data:?}: {got:?}"
            );
        };
        // Nothing, half a length, a length of 0.
        malformed(b"", 1);
        malformed(&[0x01], 1);
        malformed(&[0, 0, 1, 2, 3], 5);
        // 300 bytes announced, 4 sent then EOF (a peer that closes mid-message).
        malformed(&[0x01, 0x2c, 1, 2, 3, 4], 1);
        // The largest length with nothing after it.
        malformed(&[0xff, 0xff], 2);
        // Every cut of a valid frame.
        let wire = framed(&[7u8; 40]).expect("frame");
        for cut in 0..wire.len() {
            malformed(&wire[..cut], 3);
        }
    }

    #[test]
    fn a_query_longer_than_a_frame_is_refused() {
        assert!(framed(&vec![0u8; 65535]).is_ok());
        assert!(matches!(framed(&vec![0u8; 65536]), Err(DnsError::Io(_))));
    }
}
