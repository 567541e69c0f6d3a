//! The answer to a check request, read from the bytes received so far.
//!
//! The status line and header fields are httparse's; the body is framed by `Content-Length`,
//! by chunked transfer coding (decoded, as HAProxy hands the decoded body to its matchers),
//! or runs to the end of the connection. The input is whatever a server sent, so nothing
//! here trusts it: every length is checked against the bytes at hand, and a malformed
//! message is `Invalid`, never a panic.

use std::borrow::Cow;

/// As HAProxy's default `tune.http.maxhdr`: more header fields make the response invalid.
const MAX_HEADERS: usize = 101;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'b> {
    /// The head is not complete yet.
    Partial,
    /// Not an HTTP/1.x response, or one whose framing cannot be trusted.
    Invalid,
    Response(Response<'b>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Response<'b> {
    pub status: u16,
    /// The reason phrase, as sent (may be empty).
    pub reason: &'b str,
    /// The body received so far, decoded when chunked.
    pub body: Cow<'b, [u8]>,
    /// The whole body is in (its framing says so, or there is none).
    pub complete: bool,
}

/// Parses `buf`, the bytes received so far. `bodyless`: the request was a HEAD, whose answer
/// has no body whatever its headers say.
pub fn parse(buf: &[u8], bodyless: bool) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let (Some(status), rest) = (response.code, buf.get(head_len..).unwrap_or_default()) else {
        return Parsed::Invalid;
    };
    let reason = response.reason.unwrap_or_default();
    if bodyless || has_no_body(status) {
        return Parsed::Response(Response {
            status,
            reason,
            body: Cow::Borrowed(&[]),
            complete: true,
        });
    }
    let framed = match framing(response.headers) {
        Some(Framing::Chunked) => dechunk(rest),
        Some(Framing::Length(len)) => Some(by_length(rest, len)),
        Some(Framing::ToEnd) => Some((Cow::Borrowed(rest), false)),
        None => None,
    };
    match framed {
        Some((body, complete)) => Parsed::Response(Response {
            status,
            reason,
            body,
            complete,
        }),
        None => Parsed::Invalid,
    }
}

/// RFC 9112, section 6.3: informational answers, 204 and 304 never have a body.
fn has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

enum Framing {
    Chunked,
    Length(u64),
    ToEnd,
}

/// How the body is delimited; `None` when the headers contradict each other (two different
/// lengths, a length that is not a number, a transfer coding other than chunked last), which
/// is how a response gets smuggled past a proxy, and which HAProxy refuses as well.
fn framing(headers: &[httparse::Header<'_>]) -> Option<Framing> {
    let named = |n: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(n))
            .map(|h| h.value)
    };
    if let Some(last) = named("transfer-encoding").next_back() {
        let chunked_last = std::str::from_utf8(last)
            .ok()?
            .rsplit(',')
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return chunked_last.then_some(Framing::Chunked);
    }
    let mut length = None;
    for value in named("content-length") {
        for item in std::str::from_utf8(value).ok()?.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = item.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    Some(length.map_or(Framing::ToEnd, Framing::Length))
}

fn by_length(rest: &[u8], len: u64) -> (Cow<'_, [u8]>, bool) {
    let take = usize::try_from(len).unwrap_or(usize::MAX).min(rest.len());
    let body = rest.get(..take).unwrap_or_default();
    (Cow::Borrowed(body), take as u64 == len)
}

/// Decodes the chunks received so far: (data, whether the last chunk and the trailers are
/// in). `None` on a malformed chunk.
fn dechunk(mut rest: &[u8]) -> Option<(Cow<'_, [u8]>, bool)> {
    let mut body = Vec::new();
    loop {
        let (start, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Some((Cow::Owned(body), false)),
            Err(_) => return None,
        };
        let data = rest.get(start..).unwrap_or_default();
        if size == 0 {
            return Some((Cow::Owned(body), trailers_end(data)?));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if data.len() < size {
            body.extend_from_slice(data);
            return Some((Cow::Owned(body), false));
        }
        let (chunk, after) = data.split_at(size);
        body.extend_from_slice(chunk);
        match after {
            [b'\r', b'\n', tail @ ..] => rest = tail,
            [] | [b'\r'] => return Some((Cow::Owned(body), false)),
            _ => return None,
        }
    }
}

/// After the last chunk: trailer fields, then an empty line. `Some(true)` once the empty
/// line is in, `Some(false)` while it may still come.
fn trailers_end(data: &[u8]) -> Option<bool> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(data, &mut headers) {
        Ok(httparse::Status::Complete(_)) => Some(true),
        Ok(httparse::Status::Partial) => Some(false),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(buf: &[u8]) -> Response<'_> {
        match parse(buf, false) {
            Parsed::Response(r) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn status_reason_and_body_by_length() {
        let r = response(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown");
        assert_eq!((r.status, r.reason), (503, "Service Unavailable"));
        assert_eq!((&r.body[..], r.complete), (&b"down"[..], true));
        let r = response(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nali");
        assert_eq!((&r.body[..], r.complete), (&b"ali"[..], false));
        // Bytes past the length are not the body.
        let r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA");
        assert_eq!(&r.body[..], b"ok");
        let r = response(b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((r.status, r.reason, r.complete), (503, "", true));
    }

    #[test]
    fn body_to_the_end_without_framing() {
        let r = response(b"HTTP/1.0 200 OK\r\n\r\nalive and kicking");
        assert_eq!(
            (&r.body[..], r.complete),
            (&b"alive and kicking"[..], false)
        );
    }

    #[test]
    fn bodyless_answers() {
        for raw in [
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            let r = response(raw);
            assert!(r.body.is_empty() && r.complete);
        }
        let Parsed::Response(r) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
        else {
            panic!("a HEAD answer parses");
        };
        assert!(r.body.is_empty() && r.complete);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let r = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nali\r\n2;x=y\r\nve\r\n0\r\n\r\n",
        );
        assert_eq!((&r.body[..], r.complete), (&b"alive"[..], true));
        let r = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nal");
        assert_eq!((&r.body[..], r.complete), (&b"al"[..], false));
        let r = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n");
        assert!(!r.complete, "the trailers' end is still to come");
        let r = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
        assert!(r.complete);
    }

    #[test]
    fn truncated_heads_wait() {
        for cut in [
            &b""[..],
            b"HTTP/1.1",
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert_eq!(parse(cut, false), Parsed::Partial, "{cut:?}");
        }
    }

    /// One deliberate difference: HAProxy 2.6.12 reads `HTTP/1.1 2000 OK` as status 2000
    /// (L7STS, code 2000); a status code has three digits (RFC 9110), so here it is not HTTP.
    #[test]
    fn garbage_is_invalid() {
        for raw in [
            &b"garbage garbage\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        ] {
            assert_eq!(parse(raw, false), Parsed::Invalid, "{raw:?}");
        }
    }

    #[test]
    fn too_many_headers_are_invalid() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(parse(&raw, false), Parsed::Invalid);
    }

    /// Every prefix of every sample parses without panicking, and a prefix of a valid
    /// response is never invalid (so a response split across reads is never misjudged).
    #[test]
    fn every_prefix_is_safe() {
        let samples: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalive",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nali\r\n2\r\nve\r\n0\r\n\r\n",
            b"HTTP/1.0 503 Service Unavailable\r\n\r\ndown",
        ];
        for sample in samples {
            for end in 0..=sample.len() {
                let prefix = &sample[..end];
                assert_ne!(parse(prefix, false), Parsed::Invalid, "{prefix:?}");
            }
        }
    }
}
