//! Judges a check's answer against the backend's `http-check expect` lines, as HAProxy 2.6's
//! `tcpcheck_eval_expect_http` does: every line in order on the same response, the first
//! one not met decides, with HAProxy's status and text for each kind of failure.
//!
//! The judgement runs on each read: a status is known once the head is in, a body pattern
//! may be found before the body ends (or needs all of it), so the answer is `Wait` until
//! the bytes at hand decide. `last_read` says no more will come (the server closed, the
//! buffer is full, or the body is complete by its framing).

use crate::config::{CheckExpect, ExpectMatch};
use crate::counters::CheckStatus;

use super::outcome::Outcome;
use super::response::{Parsed, Response};

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// More bytes may change the answer.
    Wait,
    Done(Outcome),
}

/// What one expectation says about the response.
enum Step {
    Met,
    Wait,
    Failed(Outcome),
}

pub fn judge(expects: &[CheckExpect], parsed: &Parsed<'_>, last_read: bool) -> Verdict {
    let response = match parsed {
        Parsed::Partial if !last_read => return Verdict::Wait,
        // Nothing, a cut head or not HTTP: HAProxy reports L7RSP without a text.
        Parsed::Partial | Parsed::Invalid => {
            return Verdict::Done(Outcome::new(CheckStatus::L7Response, None, ""))
        }
        Parsed::Response(r) => r,
    };
    let last_read = last_read || response.complete;
    for expect in expects {
        match step(expect, response, last_read) {
            Step::Met => {}
            Step::Wait => return Verdict::Wait,
            Step::Failed(outcome) => return Verdict::Done(outcome),
        }
    }
    Verdict::Done(Outcome::new(CheckStatus::L7Ok, Some(response.status), ""))
}

fn step(expect: &CheckExpect, response: &Response<'_>, last_read: bool) -> Step {
    let status = response.status;
    let (found, failure) = match &expect.matcher {
        ExpectMatch::Status(ranges) => (
            ranges
                .iter()
                .any(|(low, high)| (*low..=*high).contains(&status)),
            (CheckStatus::L7Status, response.reason),
        ),
        ExpectMatch::StatusRegex(pattern) => (
            pattern.is_match(status.to_string().as_bytes()),
            (CheckStatus::L7Status, response.reason),
        ),
        ExpectMatch::Body(_) | ExpectMatch::BodyRegex(_) => {
            return body_step(expect, response, last_read)
        }
    };
    if found != expect.negate {
        return Step::Met;
    }
    Step::Failed(failed(expect, failure.0, status, failure.1))
}

/// A body pattern: HAProxy waits for more data while nothing matched and more may come, and
/// reports an empty body on its own.
fn body_step(expect: &CheckExpect, response: &Response<'_>, last_read: bool) -> Step {
    let body = &response.body[..];
    if body.is_empty() {
        if !last_read {
            return Step::Wait;
        }
        let text = "HTTP content check could not find a response body";
        return Step::Failed(failed(
            expect,
            CheckStatus::L7Response,
            response.status,
            text,
        ));
    }
    let found = match &expect.matcher {
        ExpectMatch::Body(text) => contains(body, text.as_bytes()),
        ExpectMatch::BodyRegex(pattern) => pattern.is_match(body),
        ExpectMatch::Status(_) | ExpectMatch::StatusRegex(_) => false,
    };
    if !found && !last_read {
        return Step::Wait;
    }
    if found != expect.negate {
        return Step::Met;
    }
    let text = if expect.negate {
        "HTTP check matched unwanted content"
    } else {
        "HTTP content check did not match"
    };
    Step::Failed(failed(
        expect,
        CheckStatus::L7Response,
        response.status,
        text,
    ))
}

/// HAProxy appends a failing line's comment to the text, after a space, even when the text
/// is empty.
fn failed(expect: &CheckExpect, status: CheckStatus, code: u16, text: &str) -> Outcome {
    let info = match &expect.comment {
        Some(comment) => format!("{text} comment: {comment}"),
        None => text.to_string(),
    };
    Outcome::new(status, Some(code), &info)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loc, Pattern};
    use crate::health::response::parse;

    fn expect(negate: bool, matcher: ExpectMatch) -> CheckExpect {
        CheckExpect {
            negate,
            matcher,
            comment: None,
            loc: Loc::default(),
        }
    }

    fn status(low: u16, high: u16) -> CheckExpect {
        expect(false, ExpectMatch::Status(vec![(low, high)]))
    }

    fn body(text: &str) -> CheckExpect {
        expect(false, ExpectMatch::Body(text.into()))
    }

    fn regex(text: &str) -> Pattern {
        Pattern::new(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn verdict(expects: &[CheckExpect], raw: &[u8], last_read: bool) -> Verdict {
        judge(expects, &parse(raw, false), last_read)
    }

    /// (status code, check_code, last_chk) of a finished judgement.
    fn done(expects: &[CheckExpect], raw: &[u8]) -> (&'static str, Option<u16>, String) {
        match verdict(expects, raw, true) {
            Verdict::Done(o) => (o.status.code(), o.code, o.info),
            Verdict::Wait => panic!("no verdict for {raw:?}"),
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalive";
    const DOWN: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown";

    #[test]
    fn status_lists_and_ranges() {
        let only_200 = [status(200, 200)];
        assert_eq!(done(&only_200, OK), ("L7OK", Some(200), String::new()));
        assert_eq!(
            done(&only_200, DOWN),
            ("L7STS", Some(503), "Service Unavailable".into())
        );
        let list = [expect(
            false,
            ExpectMatch::Status(vec![(200, 201), (500, 503)]),
        )];
        assert_eq!(done(&list, DOWN).0, "L7OK");
        assert_eq!(
            done(
                &[status(200, 399)],
                b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n"
            ),
            ("L7STS", Some(503), String::new()),
            "no reason phrase, no text"
        );
    }

    #[test]
    fn negated_and_regex_status() {
        let not_5xx = [expect(true, ExpectMatch::StatusRegex(regex("^5")))];
        assert_eq!(done(&not_5xx, OK).0, "L7OK");
        assert_eq!(done(&not_5xx, DOWN).0, "L7STS");
        let not_503 = [expect(true, ExpectMatch::Status(vec![(503, 503)]))];
        assert_eq!(done(&not_503, DOWN).0, "L7STS");
        assert_eq!(done(&not_503, OK).0, "L7OK");
    }

    #[test]
    fn body_strings() {
        assert_eq!(done(&[body("alive")], OK).0, "L7OK");
        let sick = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsick";
        assert_eq!(
            done(&[body("alive")], sick),
            (
                "L7RSP",
                Some(200),
                "HTTP content check did not match".into()
            )
        );
        let unwanted = [expect(true, ExpectMatch::Body("sick".into()))];
        assert_eq!(
            done(&unwanted, sick).2,
            "HTTP check matched unwanted content"
        );
        assert_eq!(done(&unwanted, OK).0, "L7OK");
        let rstring = [expect(false, ExpectMatch::BodyRegex(regex("^al[a-z]+$")))];
        assert_eq!(done(&rstring, OK).0, "L7OK");
        let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            done(&[body("alive")], empty).2,
            "HTTP content check could not find a response body"
        );
    }

    #[test]
    fn every_line_must_hold_and_the_first_failure_speaks() {
        let both = [status(200, 200), body("alive")];
        assert_eq!(done(&both, OK).0, "L7OK");
        assert_eq!(done(&both, DOWN).0, "L7STS");
        let mut commented = body("nope");
        commented.comment = Some("liveness".into());
        assert_eq!(
            done(&[status(200, 200), commented], OK).2,
            "HTTP content check did not match comment: liveness"
        );
    }

    #[test]
    fn waits_until_the_bytes_decide() {
        let head_only = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let passed = Verdict::Done(Outcome::new(CheckStatus::L7Ok, Some(200), ""));
        assert_eq!(verdict(&[status(200, 200)], head_only, false), passed);
        assert_eq!(verdict(&[body("alive")], head_only, false), Verdict::Wait);
        let part = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nali";
        assert_eq!(verdict(&[body("alive")], part, false), Verdict::Wait);
        // Found before the end: decided (HAProxy does not wait for the rest).
        let early = b"HTTP/1.0 200 OK\r\n\r\nalive, more to come";
        assert!(matches!(
            verdict(&[body("alive")], early, false),
            Verdict::Done(_)
        ));
        // The body is complete by its length: no more waiting.
        let sick = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsick";
        assert!(matches!(
            verdict(&[body("alive")], sick, false),
            Verdict::Done(_)
        ));
        assert_eq!(
            verdict(&[status(200, 200)], b"HTTP/1.1 20", false),
            Verdict::Wait
        );
    }

    #[test]
    fn nothing_cut_or_garbage_is_an_invalid_response() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"garbage garbage\r\n\r\n",
            b"\x00\xff\xfe",
        ] {
            assert_eq!(
                done(&[status(200, 399)], raw),
                ("L7RSP", None, String::new())
            );
        }
    }
}
