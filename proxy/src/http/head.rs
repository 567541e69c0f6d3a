//! Message heads: httparse reads the request or status line and the header fields; the checks
//! against request smuggling (RFC 9112 §2.2, §5, §6; RFC 9110 §5.5) are ours. A head that
//! passes is re-serialised by us, never forwarded as received, so the next hop only ever sees
//! CRLF line ends, one framing header and no hop-by-hop fields it did not ask for.

use std::borrow::Cow;
use std::io::Write;

use smallvec::SmallVec;

use super::error::HttpError;

/// More header fields than this is an attack or a broken client: 431.
pub const MAX_HEADERS: usize = 100;

/// A field value; short ones (most are) live inside the field, not on the heap.
pub type Value = SmallVec<[u8; 32]>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// As received (its case is kept): a common name spelled as this table has it is
    /// borrowed from the table rather than allocated.
    pub name: Cow<'static, str>,
    pub value: Value,
}

/// Names as browsers, curl, wrk, nginx and Ant Media Server usually spell them.
const COMMON_NAMES: &[&str] = &[
    "Host",
    "host",
    "User-Agent",
    "user-agent",
    "Accept",
    "accept",
    "Accept-Encoding",
    "accept-encoding",
    "Accept-Language",
    "Accept-Ranges",
    "Connection",
    "connection",
    "Content-Length",
    "content-length",
    "Content-Type",
    "content-type",
    "Date",
    "date",
    "Server",
    "server",
    "Last-Modified",
    "ETag",
    "Etag",
    "Cache-Control",
    "cache-control",
    "Cookie",
    "cookie",
    "Set-Cookie",
    "Keep-Alive",
    "Transfer-Encoding",
    "Vary",
    "Origin",
    "Referer",
    "Access-Control-Allow-Origin",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "If-Modified-Since",
    "If-None-Match",
    "Expires",
    "Pragma",
];

/// `name` as an owned field name, borrowed from [`COMMON_NAMES`] where it is spelled so.
pub fn field_name(name: &str) -> Cow<'static, str> {
    match COMMON_NAMES.iter().find(|n| **n == name) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(name.to_string()),
    }
}

/// Header fields in arrival order, names compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.0.push(Header {
            name: field_name(name),
            value: Value::from_slice(value),
        });
    }

    pub fn set(&mut self, name: &str, value: &[u8]) {
        self.remove(name);
        self.add(name, value);
    }

    /// The comma-separated elements of every `name` field, trimmed (RFC 9110 §5.6.1).
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(|t| String::from_utf8_lossy(t.trim_ascii()).into_owned())
            .filter(|t| !t.is_empty())
            .collect()
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.token_bytes(name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// [`Headers::tokens`] as bytes, without allocating.
    pub fn token_bytes<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        for h in &self.0 {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Origin-form (`/path?query`), `*`, or an authority for CONNECT.
    pub target: String,
    /// The `x` of `HTTP/1.x`.
    pub minor: u8,
    /// End-to-end fields only: framing and hop-by-hop fields are taken out.
    pub headers: Headers,
    pub framing: Framing,
    /// Transfer codings before the final `chunked`, kept for the next hop.
    pub codings: Vec<String>,
    /// The client wants the connection closed after this exchange.
    pub close: bool,
    /// The `Upgrade` value when the client asked for one (`Connection: upgrade`).
    pub upgrade: Option<Vec<u8>>,
    /// `Expect: 100-continue`: the proxy answers it itself (see session.rs).
    pub expect_continue: bool,
    /// The client spoke HTTP/2 (the request goes on to the server as HTTP/1.1): its log line
    /// says `HTTP/2.0`, and the `HTTP_1.0`/`HTTP_1.1` ACLs do not match it.
    pub h2: bool,
}

impl Request {
    pub fn host(&self) -> Option<&[u8]> {
        self.headers.get("host")
    }

    /// The path without the query string, as the `path` ACL fetch sees it.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn version(&self) -> &'static str {
        if self.minor == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }

    /// `GET /x HTTP/1.1`, as the access log quotes it.
    pub fn line(&self) -> String {
        let version = if self.h2 { "HTTP/2.0" } else { self.version() };
        format!("{} {} {}", self.method, self.target, version)
    }

    /// The head as sent to the server; `connection` is the `Connection` value to add, if any.
    pub fn serialize(&self, connection: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        for part in [self.method.as_bytes(), b" ", self.target.as_bytes(), b" "] {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(self.version().as_bytes());
        out.extend_from_slice(b"\r\n");
        self.headers.write_to(&mut out);
        write_framing(&mut out, self.framing, &self.codings, None);
        if let Some(upgrade) = &self.upgrade {
            out.extend_from_slice(b"Upgrade: ");
            out.extend_from_slice(upgrade);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(c) = connection {
            out.extend_from_slice(b"Connection: ");
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// `OK`, the most common by far, is not allocated.
    pub reason: Cow<'static, str>,
    pub headers: Headers,
    pub framing: Framing,
    pub codings: Vec<String>,
    /// `Content-Length` as sent, also where the body is empty (HEAD, 304).
    pub length: Option<u64>,
    /// The server will close after this response.
    pub close: bool,
    pub upgrade: Option<Vec<u8>>,
}

impl Response {
    /// The head as sent to the client; `connection` is the `Connection` value to add.
    /// `chunked_out` false sends a chunked body de-chunked (to an HTTP/1.0 client).
    pub fn serialize(&self, connection: Option<&str>, chunked_out: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        // Writing into a Vec cannot fail.
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, self.reason);
        self.headers.write_to(&mut out);
        let framing = match self.framing {
            Framing::Chunked if !chunked_out => Framing::UntilClose,
            f => f,
        };
        write_framing(&mut out, framing, &self.codings, self.length);
        if let Some(upgrade) = &self.upgrade {
            out.extend_from_slice(b"Upgrade: ");
            out.extend_from_slice(upgrade);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(c) = connection {
            out.extend_from_slice(b"Connection: ");
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

fn write_framing(out: &mut Vec<u8>, framing: Framing, codings: &[String], length: Option<u64>) {
    match framing {
        // Writing into a Vec cannot fail.
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::Chunked => {
            out.extend_from_slice(b"Transfer-Encoding: ");
            for c in codings {
                out.extend_from_slice(c.as_bytes());
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(b"chunked\r\n");
        }
        Framing::Empty | Framing::UntilClose => {
            if let Some(n) = length {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
        }
    }
}

/// Where the head ends: the index just past the blank line, if it has arrived.
/// `from` lets a caller resume the search where the previous one stopped.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// NUL anywhere, a CR not followed by LF, or an LF not preceded by CR (RFC 9112 §2.2: a bare
/// CR must be rejected or replaced; a bare LF is where parsers disagree, so we refuse it).
pub fn check_line_ends(head: &[u8]) -> Result<(), &'static str> {
    let mut previous = 0u8;
    for (i, &b) in head.iter().enumerate() {
        match b {
            0 => return Err("NUL byte in the head"),
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err("bare CR in the head"),
            b'\n' if previous != b'\r' => return Err("bare LF in the head"),
            _ => {}
        }
        previous = b;
    }
    Ok(())
}

/// [`check_line_ends`] on a head still arriving (a final CR may yet get its LF): a head with
/// bare LF line ends has no CRLF blank line, so without this check it would be waited for
/// until the request timeout instead of refused at once (found by the differential test).
pub fn check_partial_head(buf: &[u8]) -> Result<(), &'static str> {
    check_line_ends(buf.strip_suffix(b"\r").unwrap_or(buf))
}

fn bad(status: u16, reason: &'static str) -> HttpError {
    HttpError::bad_request(status, reason)
}

/// Parses and checks a complete request head (`head` ends with the blank line).
pub fn parse_request(head: &[u8]) -> Result<Request, HttpError> {
    check_line_ends(head).map_err(|r| bad(400, r))?;
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(bad(431, "too many header fields")),
        Err(httparse::Error::Version) => return Err(bad(505, "unsupported HTTP version")),
        Err(_) => return Err(bad(400, "malformed request head")),
    }
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default().to_string();
    let minor = parsed.version.unwrap_or(1);
    let mut headers = collect(parsed.headers).map_err(|r| bad(400, r))?;
    let target = check_target(&method, target, &mut headers)?;
    check_host(&headers, minor)?;
    let (framing, codings) = request_framing(&headers, minor)?;
    let has = |t: &str| headers.has_token("connection", t);
    let close = if minor == 0 {
        !has("keep-alive")
    } else {
        has("close")
    };
    let upgrade = match (minor, headers.get("upgrade")) {
        (1, Some(u)) if has("upgrade") => Some(u.to_vec()),
        _ => None,
    };
    let expect_continue = minor == 1
        && headers
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    if expect_continue {
        headers.remove("expect");
    }
    strip_hop_by_hop(&mut headers);
    Ok(Request {
        method,
        target,
        minor,
        headers,
        framing,
        codings,
        close,
        upgrade,
        expect_continue,
        h2: false,
    })
}

/// Owned fields; values must hold no control character but HTAB (RFC 9110 §5.5).
fn collect(fields: &[httparse::Header<'_>]) -> Result<Headers, &'static str> {
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        if f.value
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err("control character in a header value");
        }
        out.push(Header {
            name: field_name(f.name),
            value: Value::from_slice(f.value),
        });
    }
    Ok(Headers(out))
}

/// Origin-form, `*` (OPTIONS), authority-form (CONNECT) or absolute-form, which becomes
/// origin-form with its authority as the Host (RFC 9112 §3.2.2).
fn check_target(method: &str, target: String, headers: &mut Headers) -> Result<String, HttpError> {
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(400, "invalid request target"));
    }
    if method == "CONNECT" {
        return match target.rsplit_once(':') {
            Some((host, port)) if valid_host(host.as_bytes()) && port.parse::<u16>().is_ok() => {
                Ok(target)
            }
            _ => Err(bad(400, "CONNECT needs host:port")),
        };
    }
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok(target);
    }
    let lower = target.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| bad(400, "invalid request target"))?;
    let skip = target.len() - rest.len();
    let after = target.get(skip..).unwrap_or_default();
    let (authority, path) = match after.find(['/', '?']) {
        Some(i) => after.split_at(i),
        None => (after, "/"),
    };
    if !valid_host(authority.as_bytes()) || authority.contains('@') {
        return Err(bad(400, "invalid authority in the request target"));
    }
    if headers.count("host") > 1 {
        return Err(bad(400, "more than one Host field"));
    }
    headers.set("Host", authority.as_bytes());
    Ok(if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    })
}

/// `reg-name`/IP literal with an optional port, no whitespace (RFC 3986 §3.2.2).
pub fn valid_host(h: &[u8]) -> bool {
    !h.is_empty()
        && h.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

/// HTTP/1.1 needs exactly one Host (RFC 9112 §3.2); two are never acceptable.
fn check_host(headers: &Headers, minor: u8) -> Result<(), HttpError> {
    match headers.count("host") {
        0 if minor == 1 => Err(bad(400, "missing Host field")),
        0 => Ok(()),
        1 if headers.get("host").is_some_and(valid_host) => Ok(()),
        1 => Err(bad(400, "invalid Host field")),
        _ => Err(bad(400, "more than one Host field")),
    }
}

/// Content-Length: every element of every field must be the same number (RFC 9110 §8.6 lets
/// a recipient fold `42, 42`); anything else is unrecoverable.
pub fn content_length(headers: &Headers) -> Result<Option<u64>, &'static str> {
    let mut found = None;
    for element in headers
        .get_all("content-length")
        .flat_map(|v| v.split(|b| *b == b','))
    {
        let digits = element.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err("invalid Content-Length");
        }
        let n: u64 = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("invalid Content-Length")?;
        match found {
            Some(previous) if previous != n => return Err("conflicting Content-Length values"),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// Transfer-Encoding codings, validated: `chunked` exactly once and last.
/// `Ok(None)` when there is no such field.
fn transfer_codings(headers: &Headers) -> Result<Option<(Vec<String>, bool)>, &'static str> {
    if headers.count("transfer-encoding") == 0 {
        return Ok(None);
    }
    let codings: Vec<String> = headers
        .get_all("transfer-encoding")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .collect();
    if codings.iter().any(|c| c.is_empty() || !is_token(c)) {
        return Err("invalid Transfer-Encoding");
    }
    let chunked_last = codings.last().is_some_and(|c| c == "chunked");
    let chunked_count = codings.iter().filter(|c| *c == "chunked").count();
    if chunked_count > 1 || (chunked_count == 1 && !chunked_last) {
        return Err("chunked applied more than once or not last");
    }
    let before: Vec<String> = codings
        .iter()
        .filter(|c| *c != "chunked")
        .cloned()
        .collect();
    Ok(Some((before, chunked_last)))
}

pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Codings a server may meet before `chunked`; anything else is 501 (RFC 9112 §6.1).
const KNOWN_CODINGS: &[&str] = &["gzip", "x-gzip", "deflate", "compress", "x-compress"];

/// Request framing (RFC 9112 §6.1, §6.3): Content-Length with Transfer-Encoding, TE on
/// HTTP/1.0, and TE not ending in chunked are refused outright.
fn request_framing(headers: &Headers, minor: u8) -> Result<(Framing, Vec<String>), HttpError> {
    let length = content_length(headers).map_err(|r| bad(400, r))?;
    let codings = transfer_codings(headers).map_err(|r| bad(400, r))?;
    match (codings, length) {
        (Some(_), Some(_)) => Err(bad(400, "both Content-Length and Transfer-Encoding")),
        (Some(_), None) if minor == 0 => Err(bad(400, "Transfer-Encoding in an HTTP/1.0 request")),
        (Some((_, false)), None) => Err(bad(400, "Transfer-Encoding does not end in chunked")),
        (Some((before, true)), None) => {
            if before.iter().any(|c| !KNOWN_CODINGS.contains(&c.as_str())) {
                return Err(bad(501, "unknown transfer coding"));
            }
            Ok((Framing::Chunked, before))
        }
        (None, Some(n)) => Ok((Framing::Length(n), Vec::new())),
        (None, None) => Ok((Framing::Empty, Vec::new())),
    }
}

/// Fields that concern one hop only; the proxy writes its own. Fields the sender names in
/// `Connection` go too, except those the framing and routing depend on.
fn strip_hop_by_hop(headers: &mut Headers) {
    // The `Connection` fields are taken out first (kept aside, inline for up to two, so
    // that this costs no allocation) and their tokens then name what else goes.
    let mut connection: SmallVec<[Header; 2]> = SmallVec::new();
    let mut i = 0;
    while let Some(h) = headers.0.get(i) {
        if h.name.eq_ignore_ascii_case("connection") {
            connection.push(headers.0.remove(i));
        } else {
            i += 1;
        }
    }
    let named = |name: &str| {
        connection
            .iter()
            .flat_map(|h| h.value.split(|b| *b == b','))
            .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
            .any(|t| !t.eq_ignore_ascii_case("host") && is_token(t) && t.eq_ignore_ascii_case(name))
    };
    headers.0.retain(|h| {
        let fixed = [
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "content-length",
            "upgrade",
        ]
        .iter()
        .any(|n| h.name.eq_ignore_ascii_case(n));
        !fixed && !named(&h.name)
    });
}

fn bad_response(reason: &'static str) -> HttpError {
    HttpError::BadResponse(reason)
}

/// Parses and checks a complete response head. `method` is the request's (HEAD and CONNECT
/// change the framing).
pub fn parse_response(head: &[u8], method: &str) -> Result<Response, HttpError> {
    check_line_ends(head).map_err(bad_response)?;
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(bad_response("malformed response head")),
    }
    let status = parsed.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(bad_response("invalid status code"));
    }
    let reason = match parsed.reason.unwrap_or_default() {
        "OK" => Cow::Borrowed("OK"),
        r => Cow::Owned(r.to_string()),
    };
    if reason.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(bad_response("control character in the reason phrase"));
    }
    let minor = parsed.version.unwrap_or(1);
    let mut headers = collect(parsed.headers).map_err(bad_response)?;
    let length = content_length(&headers).map_err(bad_response)?;
    let codings = transfer_codings(&headers).map_err(bad_response)?;
    let framing = response_framing(status, method, length, &codings)?;
    let has = |t: &str| headers.has_token("connection", t);
    let close = framing == Framing::UntilClose
        || if minor == 0 {
            !has("keep-alive")
        } else {
            has("close")
        };
    let upgrade = match headers.get("upgrade") {
        Some(u) if status == 101 => Some(u.to_vec()),
        _ => None,
    };
    strip_hop_by_hop(&mut headers);
    let codings = codings.map(|(before, _)| before).unwrap_or_default();
    let keep_length = matches!(framing, Framing::Empty) && (method == "HEAD" || status == 304);
    Ok(Response {
        status,
        reason,
        headers,
        framing,
        codings,
        length: length.filter(|_| keep_length),
        close,
        upgrade,
    })
}

/// RFC 9112 §6.3, in its order; a response with both framing headers is a 502 (a server that
/// sends it is broken or an attacker's, and a cache behind us would be poisoned).
fn response_framing(
    status: u16,
    method: &str,
    length: Option<u64>,
    codings: &Option<(Vec<String>, bool)>,
) -> Result<Framing, HttpError> {
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    if method == "CONNECT" && (200..300).contains(&status) {
        return Ok(Framing::Empty);
    }
    match (codings, length) {
        (Some(_), Some(_)) => Err(bad_response(
            "both Content-Length and Transfer-Encoding in the response",
        )),
        (Some((_, true)), None) => Ok(Framing::Chunked),
        (Some((_, false)), None) => Ok(Framing::UntilClose),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::UntilClose),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Request, u16> {
        parse_request(text.as_bytes()).map_err(|e| match e {
            HttpError::BadRequest { status, .. } => status,
            other => panic!("{other}"),
        })
    }

    fn status(text: &str) -> u16 {
        req(text).map(|_| 0).unwrap_or_else(|s| s)
    }

    #[test]
    fn a_plain_request() {
        let r = req("GET /a?b=1 HTTP/1.1\r\nHost: x:8080\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n\r\n")
            .unwrap();
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.minor),
            ("GET", "/a?b=1", 1)
        );
        assert_eq!(r.path(), "/a");
        assert_eq!(r.framing, Framing::Empty);
        assert!(!r.close);
        assert_eq!(r.headers.get("x-drop"), None);
        assert_eq!(r.headers.get("x-keep"), Some(&b"2"[..]));
        assert_eq!(
            String::from_utf8(r.serialize(Some("close"))).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: x:8080\r\nX-Keep: 2\r\nConnection: close\r\n\r\n"
        );
    }

    /// Common names are borrowed, not allocated, but only where spelled exactly so: the
    /// next hop sees every name as the sender wrote it. Values past the inline size and
    /// two `Connection` fields (both read, both dropped) take the other paths.
    #[test]
    fn names_keep_their_spelling_and_values_their_bytes() {
        let long = "v".repeat(100);
        let r = req(&format!(
            "GET / HTTP/1.1\r\nhost: a\r\nUSER-AGENT: u\r\nAccept: */*\r\nConnection: x-a\r\nX-Long: {long}\r\nconnection: X-B\r\nX-A: 1\r\nx-b: 2\r\nX-C: 3\r\n\r\n"
        ))
        .unwrap();
        let names: Vec<&str> = r.headers.0.iter().map(|h| &*h.name).collect();
        assert_eq!(names, ["host", "USER-AGENT", "Accept", "X-Long", "X-C"]);
        assert!(matches!(r.headers.0[0].name, Cow::Borrowed(_)));
        assert!(matches!(r.headers.0[1].name, Cow::Owned(_)));
        assert_eq!(r.headers.get("x-long"), Some(long.as_bytes()));
        let resp = parse_response(
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
            "GET",
        )
        .unwrap();
        assert!(matches!(resp.reason, Cow::Borrowed("OK")));
        assert_eq!(
            String::from_utf8(resp.serialize(None, true)).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\n\r\n"
        );
    }

    #[test]
    fn smuggling_corpus() {
        let cases: &[(&str, u16)] = &[
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET nothing HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ];
        for (text, want) in cases {
            assert_eq!(status(text), *want, "{text:?}");
        }
    }

    #[test]
    fn normalised_where_the_rfc_allows() {
        let r =
            req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n")
                .unwrap();
        assert_eq!(r.framing, Framing::Length(5));
        let r = req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(
            (r.framing, r.codings.clone()),
            (Framing::Chunked, vec!["gzip".to_string()])
        );
        assert!(String::from_utf8(r.serialize(None))
            .unwrap()
            .contains("Transfer-Encoding: gzip, chunked\r\n"));
        let r = req("GET http://Example.com:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
        assert_eq!(
            (r.target.as_str(), r.host()),
            ("/x?y", Some(&b"Example.com:81"[..]))
        );
        let r = req("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(r.close);
        let r = req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(!r.close);
    }

    #[test]
    fn upgrade_and_expect() {
        let r =
            req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap();
        assert_eq!(r.upgrade.as_deref(), Some(&b"websocket"[..]));
        let r = req("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert_eq!(r.upgrade, None);
        let r =
            req("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .unwrap();
        assert!(r.expect_continue);
        assert_eq!(r.headers.get("expect"), None);
    }

    #[test]
    fn too_many_fields() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_HEADERS {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(status(&text), 431);
    }

    #[test]
    fn partial_heads_with_bad_line_ends_are_refused_before_they_end() {
        assert_eq!(check_partial_head(b"GET / HTTP/1.1\r\nHost: a\r"), Ok(()));
        assert_eq!(check_partial_head(b"GET / HTTP/1.1\r\nHo"), Ok(()));
        assert_eq!(
            check_partial_head(b"GET / HTTP/1.1\nHost: a\nX-A: b\n\n"),
            Err("bare LF in the head")
        );
        assert_eq!(
            check_partial_head(b"GET / HTTP/1.1\rHost"),
            Err("bare CR in the head")
        );
    }

    #[test]
    fn head_end_resumes() {
        let b = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        assert_eq!(head_end(b, 0), Some(b.len() - 4));
        assert_eq!(head_end(b, 25), Some(b.len() - 4));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
    }

    fn resp(text: &str, method: &str) -> Result<Response, HttpError> {
        parse_response(text.as_bytes(), method)
    }

    #[test]
    fn response_framing_rules() {
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "GET").unwrap();
        assert_eq!(r.framing, Framing::Length(3));
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD").unwrap();
        assert_eq!((r.framing, r.length), (Framing::Empty, Some(3)));
        let r = resp("HTTP/1.1 304 Not Modified\r\n\r\n", "GET").unwrap();
        assert_eq!(r.framing, Framing::Empty);
        let r = resp("HTTP/1.1 200 OK\r\n\r\n", "GET").unwrap();
        assert_eq!(r.framing, Framing::UntilClose);
        assert!(r.close);
        let r = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET",
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        let r = resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "GET").unwrap();
        assert!(r.close);
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
            "HTTP/1.1 099 Odd\r\n\r\n",
        ] {
            assert!(
                matches!(resp(bad, "GET"), Err(HttpError::BadResponse(_))),
                "{bad:?}"
            );
        }
    }
}
