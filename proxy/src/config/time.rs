//! Durations as HAProxy writes them: a decimal number and an optional unit (`us`, `ms`, `s`,
//! `m`, `h`, `d`); a bare number is milliseconds.

use std::time::Duration;

/// HAProxy keeps timers as signed 32-bit milliseconds and refuses larger values ("timer
/// overflow"); we refuse them too so that a config means the same thing on both.
const MAX_MS: u64 = i32::MAX as u64;

/// Parses `text` given to `keyword` (named in error messages).
pub(crate) fn parse_duration(text: &str, keyword: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let bad = || {
        format!(
            "invalid time '{text}' for '{keyword}': expected a number with an optional unit \
             (us, ms, s, m, h, d; milliseconds by default)"
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    let micros_per_unit: u64 = match unit {
        "us" => 1,
        "" | "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60 * 1_000_000,
        "h" => 3_600 * 1_000_000,
        "d" => 86_400 * 1_000_000,
        _ => return Err(bad()),
    };
    let micros = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(micros_per_unit))
        .filter(|us| *us <= MAX_MS * 1_000)
        .ok_or_else(|| {
            format!(
                "time '{text}' for '{keyword}' is too large \
                 (maximum {MAX_MS} ms, about 24.8 days)"
            )
        })?;
    Ok(Duration::from_micros(micros))
}

/// A duration that must not be zero (check intervals: zero would spin).
pub(crate) fn parse_nonzero_duration(text: &str, keyword: &str) -> Result<Duration, String> {
    let d = parse_duration(text, keyword)?;
    if d.is_zero() {
        return Err(format!("'{keyword}' must be greater than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse_duration(text, "timeout client").unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        parse_duration(text, "timeout client").expect_err(text)
    }

    #[test]
    fn units() {
        assert_eq!(ok("5000"), Duration::from_millis(5000));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1500us"), Duration::from_micros(1500));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        assert_eq!(ok("0"), Duration::ZERO);
    }

    #[test]
    fn garbage() {
        for bad in [
            "", "s", "5x", "5 s", "-5", "+5", "5sec", "1.5s", "5S", "1m30s",
        ] {
            assert!(err(bad).contains("invalid time"), "{bad}");
        }
        assert!(err("5x").contains("'timeout client'"));
    }

    #[test]
    fn overflow() {
        assert_eq!(ok("2147483647"), Duration::from_millis(2_147_483_647));
        assert!(err("2147483648").contains("too large"));
        assert!(err("25d").contains("too large"));
        assert!(err("99999999999999999999999").contains("too large"));
        assert!(err("18446744073709551615d").contains("too large"));
    }

    #[test]
    fn nonzero() {
        assert!(parse_nonzero_duration("0s", "inter").is_err());
        assert_eq!(
            parse_nonzero_duration("1s", "inter"),
            Ok(Duration::from_secs(1))
        );
    }
}
