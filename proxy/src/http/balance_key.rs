//! What `balance uri|url_param|hdr(…)` reads of a request, for the upstream room's picker.

use crate::upstream::RequestKey;

use super::head::Request;

impl RequestKey for Request {
    fn target(&self) -> &str {
        &self.target
    }

    /// The first `name=value` of the query string (HAProxy's `url_param` looks no further).
    fn query_param(&self, name: &str) -> Option<&[u8]> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then_some(value.as_bytes())
        })
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_request;

    #[test]
    fn reads_params_and_headers() {
        let req = parse_request(b"GET /live/a.m3u8?token=x&stream=cam1&stream=cam2 HTTP/1.1\r\nHost: h\r\nX-Stream: s9\r\n\r\n")
            .expect("parses");
        assert_eq!(req.query_param("stream"), Some(&b"cam1"[..]));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(req.header("x-stream"), Some(&b"s9"[..]));
        assert_eq!(req.target(), "/live/a.m3u8?token=x&stream=cam1&stream=cam2");
    }
}
