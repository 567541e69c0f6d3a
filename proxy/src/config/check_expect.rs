//! `http-check expect [comment MSG] [!] status|rstatus|string|rstring PATTERN`.
//!
//! As in HAProxy 2.6 the words may come in any order, `!` may stand alone or stick to the
//! match keyword (`!string`), and a status list takes codes and ranges (`200,300-399`).
//! The other matches and options HAProxy has (`hdr`, `fhdr`, `string-lf`, `min-recv`,
//! `ok-status`, `on-error`, …) are refused by name: the health room does not act on them.

use super::args::Args;
use super::model::{CheckExpect, ExpectMatch, Loc, Pattern};

/// HAProxy's expect options this proxy does not implement, with what they would change.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "min-recv",
        "the check reads the whole response (up to tune.bufsize)",
    ),
    ("ok-status", "a pass is always reported as L7OK"),
    (
        "error-status",
        "failures are reported with HAProxy's default codes",
    ),
    ("tout-status", "a timeout is always reported as L7TOUT"),
    ("on-success", "the report text is HAProxy's default one"),
    ("on-error", "the report text is HAProxy's default one"),
    ("status-code", "check_code is the response's status"),
    ("hdr", "only status and body matches are implemented"),
    ("fhdr", "only status and body matches are implemented"),
    ("string-lf", "log-format patterns are not implemented"),
    ("custom", "only status and body matches are implemented"),
];

/// Reads the words after `http-check expect`.
pub(crate) fn expect(args: &mut Args<'_>, loc: &Loc) -> Result<CheckExpect, String> {
    let mut negate = false;
    let mut matcher = None;
    let mut comment = None;
    // A `!` standing alone applies to the next word, which must then be a match.
    let mut bang_before = false;
    while let Some(raw) = args.next() {
        let word = raw.trim_start_matches('!');
        let bangs = raw.len() - word.len();
        negate ^= bangs % 2 == 1;
        let negated = bangs > 0 || std::mem::take(&mut bang_before);
        match word {
            "" => bang_before = true,
            "comment" if negated => return Err("'!' cannot be used with 'comment'".to_string()),
            "comment" => comment = Some(args.value_of(word)?.to_string()),
            "status" | "rstatus" | "string" | "rstring" if matcher.is_some() => {
                return Err("only one pattern per 'http-check expect' line".to_string())
            }
            "status" | "rstatus" | "string" | "rstring" => {
                let pattern = args
                    .next()
                    .ok_or_else(|| format!("'{word}' in 'http-check expect' needs a pattern"))?;
                matcher = Some(parse_match(word, pattern)?);
            }
            _ => return Err(unsupported(word)),
        }
    }
    let matcher = matcher.ok_or_else(|| {
        "'http-check expect' needs a match: [!] status|rstatus|string|rstring PATTERN".to_string()
    })?;
    Ok(CheckExpect {
        negate,
        matcher,
        comment,
        loc: loc.clone(),
    })
}

fn unsupported(word: &str) -> String {
    match UNSUPPORTED.iter().find(|(name, _)| *name == word) {
        Some((name, why)) => format!("'{name}' in 'http-check expect' is not supported ({why})"),
        None => format!(
            "unexpected argument '{word}' to 'http-check expect' (supported: [!] status, \
             rstatus, string, rstring, and comment)"
        ),
    }
}

fn parse_match(kind: &str, pattern: &str) -> Result<ExpectMatch, String> {
    Ok(match kind {
        "status" => ExpectMatch::Status(status_ranges(pattern)?),
        "rstatus" => ExpectMatch::StatusRegex(Pattern::new(pattern)?),
        "string" => ExpectMatch::Body(pattern.to_string()),
        _ => ExpectMatch::BodyRegex(Pattern::new(pattern)?),
    })
}

/// `200`, `200-399`, `200,201,300-310`: inclusive ranges.
fn status_ranges(list: &str) -> Result<Vec<(u16, u16)>, String> {
    list.split(',')
        .map(|part| {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let (low, high) = (status_code(low, list)?, status_code(high, list)?);
            if low > high {
                return Err(format!("invalid range of status codes '{list}'"));
            }
            Ok((low, high))
        })
        .collect()
}

/// A status code is three digits (RFC 9110, section 15).
fn status_code(text: &str, list: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|c| text.bytes().all(|b| b.is_ascii_digit()) && (100..=999).contains(c))
        .ok_or_else(|| format!("invalid status code '{text}' in '{list}' (100 to 999)"))
}

#[cfg(test)]
mod tests {
    use crate::config::keywords::Scope;
    use crate::config::model::{CheckExpect, ExpectMatch, Pattern};
    use crate::config::proxy::tests::{err, ok};

    fn expect(line: &str) -> CheckExpect {
        let p = ok(Scope::Backend, &["option httpchk", line]);
        let expects = p.http_check.map(|c| c.expects).unwrap_or_default();
        assert_eq!(expects.len(), 1, "{line}");
        expects.into_iter().next().unwrap_or_else(|| unreachable!())
    }

    fn pattern(text: &str) -> Pattern {
        Pattern::new(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_match() {
        let e = expect("http-check expect status 200");
        assert_eq!(
            (e.matcher, e.negate),
            (ExpectMatch::Status(vec![(200, 200)]), false)
        );
        assert_eq!(e.loc.line, 2);
        assert_eq!(
            expect("http-check expect status 200,201,300-310").matcher,
            ExpectMatch::Status(vec![(200, 200), (201, 201), (300, 310)])
        );
        assert_eq!(
            expect("http-check expect rstatus ^5").matcher,
            ExpectMatch::StatusRegex(pattern("^5"))
        );
        assert_eq!(
            expect("http-check expect string alive").matcher,
            ExpectMatch::Body("alive".into())
        );
        assert_eq!(
            expect("http-check expect rstring <!--tag:[0-9a-f]*--></html>").matcher,
            ExpectMatch::BodyRegex(pattern("<!--tag:[0-9a-f]*--></html>"))
        );
    }

    #[test]
    fn negation_and_comment() {
        for line in [
            "http-check expect ! string SQL\\ Error",
            "http-check expect !string SQL\\ Error",
            "http-check expect comment db !string SQL\\ Error",
            "http-check expect ! ! ! string SQL\\ Error",
        ] {
            let e = expect(line);
            assert!(e.negate, "{line}");
            assert_eq!(e.matcher, ExpectMatch::Body("SQL Error".into()), "{line}");
        }
        assert!(!expect("http-check expect !!status 200").negate);
        let e = expect("http-check expect status 200 comment liveness\\ probe");
        assert_eq!(e.comment.as_deref(), Some("liveness probe"));
    }

    #[test]
    fn refusals() {
        for (line, want) in [
            ("http-check expect", "needs a match"),
            ("http-check expect !", "needs a match"),
            (
                "http-check expect status",
                "'status' in 'http-check expect' needs a pattern",
            ),
            ("http-check expect status 200 string x", "only one pattern"),
            ("http-check expect status 2x0", "invalid status code '2x0'"),
            ("http-check expect status 99", "invalid status code '99'"),
            (
                "http-check expect status 1000",
                "invalid status code '1000'",
            ),
            (
                "http-check expect status 400-200",
                "invalid range of status codes",
            ),
            ("http-check expect status 200,", "invalid status code ''"),
            ("http-check expect rstatus (", "invalid regex '('"),
            ("http-check expect rstring [a", "invalid regex '[a'"),
            (
                "http-check expect ! comment x status 200",
                "'!' cannot be used with 'comment'",
            ),
            (
                "http-check expect min-recv 10 string x",
                "'min-recv' in 'http-check expect' is not supported",
            ),
            (
                "http-check expect hdr name x",
                "'hdr' in 'http-check expect' is not supported",
            ),
            ("http-check expect on-error x status 200", "'on-error'"),
            ("http-check expect frob 200", "unexpected argument 'frob'"),
        ] {
            let got = err(Scope::Backend, line);
            assert!(got.contains(want), "{line}: {got}");
        }
    }
}
