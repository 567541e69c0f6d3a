//! Heads between HTTP/2 and the proxy's HTTP/1.1 model (RFC 9113 §8.3, RFC 9110):
//!
//! * an HTTP/2 request becomes a [`Request`] as if an HTTP/1.1 client had sent it: `:authority`
//!   is the `Host` (a `Host` field that names another authority is refused), `cookie` fields
//!   split by the client are joined again (§8.2.3: an HTTP/1.1 server expects one), the body's
//!   length comes from `content-length`, else from an END_STREAM on the head (no body), else the
//!   body goes on chunked;
//! * a server's [`Response`] (already stripped of hop-by-hop fields by `head.rs`) becomes an
//!   HTTP/2 head: `:status`, its end-to-end fields, `content-length` when known.
//!
//! h2 itself refuses what HTTP/2 forbids in a request (connection-specific fields, `te` other
//! than `trailers`, uppercase names, a body longer or shorter than its `content-length`).

use http::header::{HeaderName, HeaderValue};

use super::super::error::HttpError;
use super::super::head::{
    content_length, field_name, valid_host, Framing, Header, Headers, Request, Response, Value,
};

fn bad(status: u16, reason: &'static str) -> HttpError {
    HttpError::bad_request(status, reason)
}

/// The request of a stream; `end_stream`: the head carried END_STREAM (there is no body).
pub(super) fn request(
    parts: &http::request::Parts,
    end_stream: bool,
) -> Result<Request, HttpError> {
    let method = parts.method.as_str().to_string();
    if method == "CONNECT" {
        // Extended CONNECT (RFC 8441) is not offered and a plain CONNECT has no use in front
        // of an AMS node: said, not served.
        return Err(bad(501, "CONNECT over HTTP/2 is not served"));
    }
    let target = target(parts)?;
    let (headers, cl_fields) = fields(parts)?;
    let framing = match content_length(&cl_fields).map_err(|r| bad(400, r))? {
        Some(n) => Framing::Length(n),
        None if end_stream => Framing::Empty,
        None => Framing::Chunked,
    };
    let expect_continue = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    Ok(Request {
        method,
        target,
        minor: 1,
        headers,
        framing,
        codings: Vec::new(),
        close: false,
        upgrade: None,
        expect_continue,
        h2: true,
    })
}

/// `:path`: origin-form, or `*` for OPTIONS.
fn target(parts: &http::request::Parts) -> Result<String, HttpError> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("", |p| p.as_str())
        .to_string();
    let asterisk = path == "*" && parts.method == http::Method::OPTIONS;
    if (path.starts_with('/') || asterisk) && path.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(path)
    } else {
        Err(bad(400, "invalid :path"))
    }
}

/// The fields as an HTTP/1.1 server gets them (`Host` first), and the `content-length`
/// fields apart (the framing says the length).
fn fields(parts: &http::request::Parts) -> Result<(Headers, Headers), HttpError> {
    let mut out = Vec::with_capacity(parts.headers.len() + 1);
    out.push(Header {
        name: "host".into(),
        value: host(parts)?.into(),
    });
    let mut cookies: Vec<&[u8]> = Vec::new();
    let mut lengths = Headers::default();
    for (name, value) in &parts.headers {
        let v = value.as_bytes();
        if v.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(bad(400, "control character in a header value"));
        }
        match name.as_str() {
            "host" | "te" => {}
            // Answered by the proxy (see `stream.rs`), as on HTTP/1.1.
            "expect" if v.eq_ignore_ascii_case(b"100-continue") => {}
            "cookie" => cookies.push(v),
            "content-length" => lengths.add("content-length", v),
            n => out.push(Header {
                name: field_name(n),
                value: Value::from_slice(v),
            }),
        }
    }
    if !cookies.is_empty() {
        out.push(Header {
            name: "cookie".into(),
            value: cookies.join(&b"; "[..]).into(),
        });
    }
    Ok((Headers(out), lengths))
}

/// `:authority`, else the `Host` field; both must agree when both are sent (RFC 9113
/// §8.3.1), as a backend routing on `Host` and the proxy's ACLs must see the same name.
fn host(parts: &http::request::Parts) -> Result<Vec<u8>, HttpError> {
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    let mut fields = parts.headers.get_all(http::header::HOST).iter();
    let field = fields.next().map(HeaderValue::as_bytes);
    if fields.next().is_some() {
        return Err(bad(400, "more than one Host field"));
    }
    let host = match (authority, field) {
        (Some(a), Some(f)) if !a.eq_ignore_ascii_case(f) => {
            return Err(bad(400, ":authority and Host differ"))
        }
        (Some(a), _) => a,
        (None, Some(f)) => f,
        (None, None) => return Err(bad(400, "no :authority and no Host field")),
    };
    if valid_host(host) && !host.contains(&b'@') {
        Ok(host.to_vec())
    } else {
        Err(bad(400, "invalid :authority"))
    }
}

/// The HTTP/2 head of a server's response. A field HTTP/2 cannot carry (a name with
/// uppercase letters is lowered; anything else invalid) makes the response unusable.
pub(super) fn response(resp: &Response) -> Result<http::Response<()>, HttpError> {
    let mut out = http::Response::new(());
    *out.status_mut() = http::StatusCode::from_u16(resp.status)
        .map_err(|_| HttpError::BadResponse("invalid status code"))?;
    let headers = out.headers_mut();
    for h in &resp.headers.0 {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HttpError::BadResponse("header name HTTP/2 cannot carry"))?;
        let value = HeaderValue::from_bytes(&h.value)
            .map_err(|_| HttpError::BadResponse("header value HTTP/2 cannot carry"))?;
        headers.append(name, value);
    }
    let length = match resp.framing {
        Framing::Length(n) => Some(n),
        Framing::Empty => resp.length,
        Framing::Chunked | Framing::UntilClose => None,
    };
    if let Some(n) = length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(out)
}

/// The size of `resp`'s head as HTTP/1.1 would carry it: what the log's `%B` and the byte
/// counters add for it, so that the same answer counts the same over either protocol.
pub(super) fn head_size(status_line: usize, headers: &Headers) -> u64 {
    let fields: usize = headers
        .0
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum();
    (status_line + fields + 2) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    fn get(uri: &str) -> http::request::Builder {
        http::Request::builder().method("GET").uri(uri)
    }

    #[test]
    fn authority_becomes_host_and_cookies_are_joined() {
        let p = parts(
            get("https://lb.example:8443/app/x?y=1")
                .header("cookie", "a=1")
                .header("x-one", "1")
                .header("cookie", "JSESSIONID=ams1~s")
                .body(())
                .unwrap(),
        );
        let r = request(&p, true).unwrap();
        assert_eq!(r.target, "/app/x?y=1");
        assert_eq!(r.host(), Some(&b"lb.example:8443"[..]));
        assert_eq!(r.headers.0[0].name, "host");
        assert_eq!(
            r.headers.get("cookie"),
            Some(&b"a=1; JSESSIONID=ams1~s"[..])
        );
        assert_eq!(r.headers.count("cookie"), 1);
        assert_eq!(r.framing, Framing::Empty);
        assert_eq!(r.line(), "GET /app/x?y=1 HTTP/2.0");
        let sent = String::from_utf8(r.serialize(None)).unwrap();
        assert!(
            sent.starts_with("GET /app/x?y=1 HTTP/1.1\r\nhost: lb.example:8443\r\n"),
            "{sent}"
        );
    }

    #[test]
    fn body_framing() {
        let post = |cl: Option<&str>, end: bool| {
            let mut b = http::Request::builder().method("POST").uri("https://a/b");
            if let Some(cl) = cl {
                b = b.header("content-length", cl);
            }
            request(&parts(b.body(()).unwrap()), end)
        };
        assert_eq!(post(Some("5"), false).unwrap().framing, Framing::Length(5));
        assert_eq!(post(None, false).unwrap().framing, Framing::Chunked);
        assert!(
            String::from_utf8(post(None, false).unwrap().serialize(None))
                .unwrap()
                .contains("Transfer-Encoding: chunked\r\n")
        );
        assert!(post(Some("x"), false).is_err());
    }

    #[test]
    fn refusals() {
        let status = |r: Result<Request, HttpError>| match r {
            Err(HttpError::BadRequest { status, .. }) => status,
            other => panic!("{other:?}"),
        };
        let connect = http::Request::builder()
            .method("CONNECT")
            .uri("a:443")
            .body(())
            .unwrap();
        assert_eq!(status(request(&parts(connect), false)), 501);
        let differ = get("https://a/").header("host", "b").body(()).unwrap();
        assert_eq!(status(request(&parts(differ), true)), 400);
        let none = get("/x").body(()).unwrap();
        assert_eq!(status(request(&parts(none), true)), 400);
        let host_only = get("/x").header("host", "h:1").body(()).unwrap();
        assert_eq!(
            request(&parts(host_only), true).unwrap().host(),
            Some(&b"h:1"[..])
        );
    }

    #[test]
    fn response_head() {
        let mut headers = Headers::default();
        headers.add("Set-Cookie", b"JSESSIONID=ams1~x");
        let resp = Response {
            status: 200,
            reason: "OK".into(),
            headers,
            framing: Framing::Length(12),
            codings: Vec::new(),
            length: None,
            close: false,
            upgrade: None,
        };
        let h = response(&resp).unwrap();
        assert_eq!(h.status(), 200);
        assert_eq!(h.headers()["set-cookie"], "JSESSIONID=ams1~x");
        assert_eq!(h.headers()["content-length"], "12");
    }
}
