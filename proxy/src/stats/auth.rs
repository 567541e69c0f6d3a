//! `stats auth`: HTTP Basic credentials checked against every configured user in constant
//! time, so neither a wrong user name nor a wrong password can be told apart by timing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::StatsError;

/// Longer `Authorization` values are refused before decoding (bounded work per request).
const MAX_HEADER: usize = 4096;

/// True when `users` is empty (no `stats auth`) or the header names one of them.
pub fn authorized(users: &[(String, String)], header: Option<&[u8]>) -> bool {
    if users.is_empty() {
        return true;
    }
    let Some(Ok((user, password))) = header.map(parse_basic) else {
        return false;
    };
    let mut ok = Choice::from(0);
    // Every user is compared, whatever matched before: the time taken does not depend on
    // which user (if any) the request names.
    for (u, p) in users {
        ok |= secret_eq(u.as_bytes(), &user) & secret_eq(p.as_bytes(), &password);
    }
    ok.into()
}

/// Compares the SHA-256 digests of both sides, so the comparison takes the same time
/// whatever the lengths and contents, and stops at no differing byte.
pub fn secret_eq(a: &[u8], b: &[u8]) -> Choice {
    Sha256::digest(a).ct_eq(&Sha256::digest(b))
}

/// `Basic base64(user:password)` → (user, password). The password may contain ':'.
pub fn parse_basic(header: &[u8]) -> Result<(Vec<u8>, Vec<u8>), StatsError> {
    if header.len() > MAX_HEADER {
        return Err(StatsError::BadCredentials("header too long"));
    }
    let text = std::str::from_utf8(header)
        .map_err(|_| StatsError::BadCredentials("not text"))?
        .trim();
    let (scheme, encoded) = text
        .split_once(' ')
        .ok_or(StatsError::BadCredentials("no scheme"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(StatsError::BadCredentials("not Basic"));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| StatsError::BadCredentials("bad base64"))?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(StatsError::BadCredentials("no ':'"))?;
    Ok((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// The `WWW-Authenticate` value: the realm quoted, with `"` and `\` escaped (RFC 7230).
pub fn challenge(realm: &str) -> String {
    let mut out = String::from("Basic realm=\"");
    for c in realm.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<(String, String)> {
        vec![
            ("Username".into(), "Password".into()),
            ("ops".into(), "s3:cret".into()),
        ]
    }

    fn basic(user_pass: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(user_pass)).into_bytes()
    }

    #[test]
    fn accepts_each_configured_user() {
        assert!(authorized(&users(), Some(&basic("Username:Password"))));
        assert!(authorized(&users(), Some(&basic("ops:s3:cret"))));
        assert!(authorized(
            &users(),
            Some(b"basic VXNlcm5hbWU6UGFzc3dvcmQ=".as_slice())
        ));
    }

    #[test]
    fn rejects_wrong_or_missing_credentials() {
        let u = users();
        assert!(!authorized(&u, None));
        assert!(!authorized(&u, Some(&basic("Username:password"))));
        assert!(!authorized(&u, Some(&basic("ops:Password"))), "no mixing");
        assert!(!authorized(&u, Some(&basic("Username"))));
        assert!(!authorized(&u, Some(&basic(":"))));
        assert!(!authorized(&u, Some(b"Bearer abc".as_slice())));
        assert!(!authorized(&u, Some(b"Basic !!!".as_slice())));
        assert!(!authorized(&u, Some(b"Basic".as_slice())));
        assert!(!authorized(&u, Some(&[0xff, 0xfe])));
        assert!(!authorized(&u, Some(&vec![b'A'; MAX_HEADER + 1])));
    }

    #[test]
    fn no_users_means_open() {
        assert!(authorized(&[], None));
    }

    #[test]
    fn constant_time_comparison_is_exact() {
        assert!(bool::from(secret_eq(b"Password", b"Password")));
        assert!(!bool::from(secret_eq(b"Password", b"Passwore")));
        assert!(!bool::from(secret_eq(b"Password", b"Password ")));
        assert!(!bool::from(secret_eq(b"", b"x")));
        assert!(bool::from(secret_eq(b"", b"")));
    }

    #[test]
    fn realm_is_quoted() {
        assert_eq!(
            challenge("Haproxy Statistics"),
            "Basic realm=\"Haproxy Statistics\""
        );
        assert_eq!(challenge("a\"b\\c\r\n"), "Basic realm=\"a\\\"b\\\\c\"");
    }
}
