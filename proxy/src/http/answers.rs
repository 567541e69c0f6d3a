//! Answers the proxy writes itself: error pages (`errorfile CODE FILE` or built-in ones in
//! HAProxy's wording), redirects, `100 Continue`. Error pages always close the connection:
//! after an error the stream's framing cannot be trusted.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ErrorFile;

use super::error::HttpError;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Time-out",
        410 => "Gone",
        413 => "Payload Too Large",
        425 => "Too Early",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Time-out",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn explanation(status: u16) -> &'static str {
    match status {
        400 => "Your browser sent an invalid request.",
        403 => "Request forbidden by administrative rules.",
        408 => "Your browser didn't send a complete request in time.",
        429 => "You have sent too many requests in a given amount of time.",
        431 => "Your browser sent too large header fields.",
        500 => "An internal server error occurred.",
        501 => "The request uses a feature this proxy does not implement.",
        502 => "The server returned an invalid or incomplete response.",
        503 => "No server is available to handle this request.",
        504 => "The server didn't respond in time.",
        505 => "This proxy speaks HTTP/1.0 and HTTP/1.1 only.",
        _ => "",
    }
}

/// HAProxy's built-in page for `status`.
pub fn builtin(status: u16) -> Vec<u8> {
    let reason = reason(status);
    let body = format!(
        "<html><body><h1>{status} {reason}</h1>\n{}\n</body></html>\n",
        explanation(status)
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\ncache-control: no-cache\r\n\
         content-type: text/html\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// At most `max + 1` bytes of `path`: enough to tell a page too large, without reading a
/// huge file or a device such as /dev/zero into memory (which would never end).
fn read_at_most(path: &std::path::Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The `errorfile` pages of one proxy, read at start.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages(HashMap<u16, Arc<[u8]>>);

impl ErrorPages {
    /// Reads every file; it must hold a raw HTTP response, as HAProxy's errorfiles do.
    pub fn load(files: &[ErrorFile], max: usize) -> Result<ErrorPages, HttpError> {
        let mut pages = HashMap::new();
        for f in files {
            let refuse = |reason: String| HttpError::Config {
                loc: f.loc.clone(),
                reason,
            };
            let bytes = read_at_most(&f.path, max)
                .map_err(|e| refuse(format!("cannot read errorfile {}: {e}", f.path.display())))?;
            if !bytes.starts_with(b"HTTP/1.") {
                return Err(refuse(format!(
                    "errorfile {} does not start with an HTTP/1.x status line",
                    f.path.display()
                )));
            }
            if bytes.len() > max {
                return Err(refuse(format!(
                    "errorfile {} is larger than tune.bufsize ({max} bytes)",
                    f.path.display()
                )));
            }
            pages.insert(f.status, Arc::from(bytes));
        }
        Ok(ErrorPages(pages))
    }

    pub fn page(&self, status: u16) -> Vec<u8> {
        match self.0.get(&status) {
            Some(p) => p.to_vec(),
            None => builtin(status),
        }
    }

    pub fn has(&self, status: u16) -> bool {
        self.0.contains_key(&status)
    }
}

/// A redirect, empty-bodied; `close` adds `Connection: close`.
pub fn redirect(code: u16, location: &[u8], close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\ncontent-length: 0\r\nlocation: ",
        reason(code)
    )
    .into_bytes();
    out.extend_from_slice(location);
    out.extend_from_slice(b"\r\ncache-control: no-cache\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_response;

    #[test]
    fn builtin_pages_parse() {
        for status in [400, 403, 408, 431, 500, 501, 502, 503, 504, 505] {
            let page = builtin(status);
            let end = crate::http::head::head_end(&page, 0).unwrap();
            let r = parse_response(&page[..end], "GET").unwrap();
            assert_eq!(r.status, status);
            assert_eq!(
                r.framing,
                crate::http::head::Framing::Length((page.len() - end) as u64)
            );
            assert!(r.close);
        }
    }

    /// An errorfile naming a device or a huge file is refused after `max + 1` bytes; it
    /// used to be read whole (/dev/zero: never ending, memory growing).
    #[test]
    fn errorfile_reads_are_bounded() {
        let file = |path: &str| crate::config::ErrorFile {
            status: 503,
            path: path.into(),
            loc: crate::config::Loc::default(),
        };
        let err = ErrorPages::load(&[file("/dev/zero")], 16 * 1024).unwrap_err();
        assert!(err.to_string().contains("does not start with"), "{err}");
        let dir = std::env::temp_dir().join(format!("errorfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.http");
        let mut page = b"HTTP/1.1 503 Busy\r\n\r\n".to_vec();
        page.resize(1 << 20, b'x');
        std::fs::write(&big, &page).unwrap();
        let err = ErrorPages::load(&[file(big.to_str().unwrap())], 16 * 1024).unwrap_err();
        assert!(
            err.to_string().contains("larger than tune.bufsize"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redirect_page() {
        let r = redirect(302, b"https://a/b", false);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 302 Found\r\ncontent-length: 0\r\nlocation: https://a/b\r\ncache-control: no-cache\r\n\r\n"
        );
    }
}
