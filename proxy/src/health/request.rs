//! The bytes of an HTTP check request, built once per backend from the config.
//!
//! As HAProxy 2.6 sends it: the request line, the configured headers in order, then
//! `Content-Length` when there is a body and `Connection: close` unless a `Connection` header
//! was configured (one request per connection: the check reads the answer to its end).
//! HAProxy leaves `Connection: close` out for HTTP/1.0, where closing is the default; it is
//! sent here for both versions, so a server that keeps HTTP/1.0 connections open anyway
//! still closes this one. The config room has already refused values that could break the
//! framing (CR, LF, spaces in the URI).

use crate::config::CheckRequest;

pub fn encode(request: &CheckRequest) -> Vec<u8> {
    let mut out = format!("{} {} {}\r\n", request.method, request.uri, request.version);
    for (name, value) in &request.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !request.body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    let has_connection = request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"));
    if !has_connection {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&request.body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxys_default_request() {
        let bytes = encode(&CheckRequest::haproxy_default());
        assert_eq!(bytes, b"OPTIONS / HTTP/1.0\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn headers_body_and_length() {
        let request = CheckRequest {
            method: "GET".into(),
            uri: "/x".into(),
            version: "HTTP/1.1".into(),
            headers: vec![("Host".into(), "foo".into()), ("X-A".into(), "b".into())],
            body: "abc".into(),
        };
        assert_eq!(
            String::from_utf8_lossy(&encode(&request)),
            "GET /x HTTP/1.1\r\nHost: foo\r\nX-A: b\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\nabc"
        );
    }

    #[test]
    fn a_configured_connection_header_is_kept() {
        let request = CheckRequest {
            headers: vec![("connection".into(), "keep-alive".into())],
            ..CheckRequest::haproxy_default()
        };
        assert_eq!(
            encode(&request),
            b"OPTIONS / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"
        );
    }
}
