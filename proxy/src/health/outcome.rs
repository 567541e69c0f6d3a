//! What one check found, in HAProxy's terms: the status code of `show stat`, the HTTP status
//! when there was one, and the `last_chk` text.

use crate::counters::CheckStatus;

use super::error::CheckError;

/// HAProxy keeps a check's description in a 128-byte buffer (`HCHK_DESC_LEN`), so a long
/// reason phrase from a server is cut there too.
const INFO_LIMIT: usize = 127;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: CheckStatus,
    /// The response's status, when one was read.
    pub code: Option<u16>,
    /// HAProxy's `last_chk`.
    pub info: String,
}

impl Outcome {
    pub fn new(status: CheckStatus, code: Option<u16>, info: &str) -> Outcome {
        Outcome {
            status,
            code,
            info: bounded(info).to_string(),
        }
    }

    /// A TCP check that connected; HAProxy reports no text for it.
    pub fn layer4_passed() -> Outcome {
        Outcome::new(CheckStatus::Ok, None, "")
    }

    /// `check-ssl` without an HTTP check: the handshake completed; no text, as HAProxy.
    pub fn layer6_passed() -> Outcome {
        Outcome::new(CheckStatus::L6Ok, None, "")
    }

    pub fn passed(&self) -> bool {
        self.status.passed()
    }

    /// The failures below HTTP. HAProxy's text is the system's error message
    /// ("Connection refused"), and nothing for a timeout, where no error was raised.
    pub fn from_error(error: &CheckError) -> Outcome {
        let (status, info) = match error {
            CheckError::Connect(e) => (CheckStatus::ConnRefused, os_text(e)),
            CheckError::ConnectTimeout => (CheckStatus::Timeout, String::new()),
            CheckError::Socket(e) => (CheckStatus::SocketError, os_text(e)),
            CheckError::HandshakeTimeout => (CheckStatus::L6Timeout, String::new()),
            CheckError::Handshake(text) => (CheckStatus::L6Response, text.clone()),
            CheckError::ResponseTimeout => (CheckStatus::L7Timeout, String::new()),
        };
        Outcome::new(status, None, &info)
    }
}

/// `strerror` as HAProxy prints it: Rust's io::Error adds " (os error N)".
pub(super) fn os_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.split_once(" (os error") {
        Some((message, _)) => message.to_string(),
        None => text,
    }
}

fn bounded(text: &str) -> &str {
    let mut end = text.len().min(INFO_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn errors_read_as_haproxy_reports_them() {
        let refused = CheckError::Connect(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(
            Outcome::from_error(&refused),
            Outcome::new(CheckStatus::ConnRefused, None, "Connection refused")
        );
        let reset = CheckError::Socket(io::Error::from_raw_os_error(libc::ECONNRESET));
        assert_eq!(
            Outcome::from_error(&reset),
            Outcome::new(CheckStatus::SocketError, None, "Connection reset by peer")
        );
        let l4 = Outcome::from_error(&CheckError::ConnectTimeout);
        assert_eq!((l4.status.code(), l4.info.as_str()), ("L4TOUT", ""));
        let l7 = Outcome::from_error(&CheckError::ResponseTimeout);
        assert_eq!((l7.status.code(), l7.info.as_str()), ("L7TOUT", ""));
        assert!(Outcome::layer4_passed().passed());
        let l6 = Outcome::from_error(&CheckError::HandshakeTimeout);
        assert_eq!((l6.status.code(), l6.info.as_str()), ("L6TOUT", ""));
        let l6 = Outcome::from_error(&CheckError::Handshake("SSL handshake failure".into()));
        assert_eq!(
            (l6.status.code(), l6.info.as_str()),
            ("L6RSP", "SSL handshake failure")
        );
        assert!(Outcome::layer6_passed().passed());
    }

    #[test]
    fn long_texts_are_cut_on_a_character() {
        let long = "é".repeat(100);
        let info = Outcome::new(CheckStatus::L7Status, Some(503), &long).info;
        assert!(info.len() <= INFO_LIMIT && info.len() >= INFO_LIMIT - 1);
        assert!(long.starts_with(&info));
    }
}
