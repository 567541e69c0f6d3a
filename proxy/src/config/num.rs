//! Integers in directives: plain decimal digits only (no sign, no suffix), range-checked.

use std::str::FromStr;

/// Parses an unsigned integer of type `T` given to `keyword`. `str::parse` alone would accept
/// a leading `+`, which HAProxy does not.
pub(crate) fn parse_uint<T: FromStr>(text: &str, keyword: &str) -> Result<T, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid number '{text}' for '{keyword}': expected decimal digits"
        ));
    }
    text.parse::<T>()
        .map_err(|_| format!("number '{text}' for '{keyword}' is too large"))
}

/// An integer that must lie in `min..=max` (both shown in the error).
pub(crate) fn parse_in_range<T>(text: &str, keyword: &str, min: T, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let value = parse_uint::<T>(text, keyword).map_err(|e| {
        if e.contains("too large") {
            out_of_range(text, keyword, min, max)
        } else {
            e
        }
    })?;
    if value < min || value > max {
        return Err(out_of_range(text, keyword, min, max));
    }
    Ok(value)
}

fn out_of_range<T: std::fmt::Display>(text: &str, keyword: &str, min: T, max: T) -> String {
    format!("'{keyword}' must be between {min} and {max}, got {text}")
}

/// A count that must be at least 1 (`maxconn`, `rise`, `nbthread`, …).
pub(crate) fn parse_positive<T>(text: &str, keyword: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Default,
{
    let value = parse_uint::<T>(text, keyword)?;
    if value == T::default() {
        return Err(format!("'{keyword}' must be greater than 0"));
    }
    Ok(value)
}

/// A TCP/UDP port, 1..=65535.
pub(crate) fn parse_port(text: &str, context: &str) -> Result<u16, String> {
    match parse_uint::<u32>(text, context) {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ if text.contains('-') && !text.starts_with('-') => Err(format!(
            "port ranges are not supported ('{text}' in '{context}')"
        )),
        _ => Err(format!(
            "invalid port '{text}' in '{context}': must be 1..65535"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint() {
        assert_eq!(parse_uint::<u32>("2000", "maxconn"), Ok(2000));
        for bad in ["", "2k", "-1", "+1", " 1", "1.0", "0x10"] {
            let e = parse_uint::<u32>(bad, "maxconn").expect_err(bad);
            assert!(
                e.contains("invalid number") && e.contains("'maxconn'"),
                "{e}"
            );
        }
        assert!(parse_uint::<u32>("4294967296", "maxconn")
            .expect_err("")
            .contains("too large"));
    }

    #[test]
    fn range() {
        assert_eq!(parse_in_range::<u32>("256", "weight", 0, 256), Ok(256));
        assert_eq!(parse_in_range::<u32>("0", "weight", 0, 256), Ok(0));
        let e = parse_in_range::<u32>("300", "weight", 0, 256).expect_err("");
        assert_eq!(e, "'weight' must be between 0 and 256, got 300");
        assert!(parse_in_range::<u32>("99999999999", "weight", 0, 256)
            .expect_err("")
            .contains("between"));
        assert!(parse_in_range::<u32>("x", "weight", 0, 256)
            .expect_err("")
            .contains("invalid number"));
    }

    #[test]
    fn positive() {
        assert_eq!(parse_positive::<u32>("1", "rise"), Ok(1));
        assert_eq!(
            parse_positive::<u32>("0", "rise").expect_err(""),
            "'rise' must be greater than 0"
        );
    }

    #[test]
    fn port() {
        assert_eq!(parse_port("1935", "bind"), Ok(1935));
        assert_eq!(parse_port("65535", "bind"), Ok(65535));
        for bad in ["0", "65536", "99999999999", "", "http", "-1"] {
            assert!(
                parse_port(bad, "bind")
                    .expect_err(bad)
                    .contains("must be 1..65535"),
                "{bad}"
            );
        }
        assert!(parse_port("80-81", "bind")
            .expect_err("")
            .contains("port ranges"));
    }
}
