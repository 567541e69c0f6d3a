//! One logical line of HAProxy configuration → its words.
//!
//! HAProxy's rules, as its `parse_line()` applies them:
//! - words are separated by spaces and tabs; `#` outside quotes starts a comment;
//! - a backslash escapes the next character (`\ `, `\#`, `\\`, `\'`, `\"`, `\$`), `\r`, `\n`,
//!   `\t` and `\xHH` give control characters; any other backslash is kept as written;
//! - `'…'` (strong quoting) is taken literally, backslashes included;
//! - `"…"` (weak quoting) still honours backslash escapes and expands `$NAME` and `${NAME}`
//!   from the environment. Outside double quotes a `$` is an ordinary character, which is why
//!   seed 001's `crt /etc/haproxy/certs/$DOMAIN.pem` reaches the model unchanged;
//! - an undefined variable expands to the empty string, as in HAProxy 2.0;
//! - quoted parts glue to their neighbours: `a"b c"d` is one word `ab cd`, and `""` is an
//!   (empty) word of its own.

/// Looks up an environment variable; injected so that tests do not depend on the process env.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for real loads.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Splits `line` (without its line ending) into words. An empty result means a blank or
/// comment-only line. The error is the reason only: the caller knows file and line.
pub(crate) fn split_words(line: &str, env: EnvLookup<'_>) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    // `None` between words, so that an empty quoted word ("") still counts as a word.
    let mut word: Option<String> = None;
    let mut quote = Quote::None;
    let mut chars = line.chars().peekable();

    while let Some(c) = chars.next() {
        match (quote, c) {
            (Quote::Single, '\'') | (Quote::Double, '"') => quote = Quote::None,
            (Quote::Single, _) => word.get_or_insert_with(String::new).push(c),
            (Quote::None, ' ' | '\t') => words.extend(word.take()),
            (Quote::None, '#') => break,
            (Quote::None, '\'') => {
                word.get_or_insert_with(String::new);
                quote = Quote::Single;
            }
            (Quote::None, '"') => {
                word.get_or_insert_with(String::new);
                quote = Quote::Double;
            }
            (_, '\\') => unescape(&mut chars, word.get_or_insert_with(String::new))?,
            (Quote::Double, '$') => {
                expand_var(&mut chars, word.get_or_insert_with(String::new), env)?
            }
            (_, _) => word.get_or_insert_with(String::new).push(c),
        }
    }
    match quote {
        Quote::None => {
            words.extend(word);
            Ok(words)
        }
        Quote::Single => Err("unterminated single quote (')".to_string()),
        Quote::Double => Err("unterminated double quote (\")".to_string()),
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Handles what follows a backslash and appends the result to `out`.
fn unescape(chars: &mut Chars<'_>, out: &mut String) -> Result<(), String> {
    let Some(&next) = chars.peek() else {
        // A trailing backslash: HAProxy has no line continuation, the backslash stays.
        out.push('\\');
        return Ok(());
    };
    match next {
        ' ' | '#' | '\\' | '\'' | '"' | '$' => out.push(next),
        'r' => out.push('\r'),
        'n' => out.push('\n'),
        't' => out.push('\t'),
        'x' => {
            chars.next();
            out.push(hex_escape(chars)?);
            return Ok(());
        }
        _ => {
            // Unknown escape: HAProxy keeps the backslash and lets the next character be read
            // normally (it may be a space that ends the word).
            out.push('\\');
            return Ok(());
        }
    }
    chars.next();
    Ok(())
}

/// `\xHH`: two hex digits naming an ASCII character (other bytes would not be valid UTF-8).
fn hex_escape(chars: &mut Chars<'_>) -> Result<char, String> {
    let digits: String = (0..2)
        .filter_map(|_| chars.next_if(char::is_ascii_hexdigit))
        .collect();
    let byte = match u8::from_str_radix(&digits, 16) {
        Ok(b) if digits.len() == 2 => b,
        _ => return Err("'\\x' must be followed by two hexadecimal digits".to_string()),
    };
    if !byte.is_ascii() {
        return Err(format!("'\\x{digits}' is not an ASCII character"));
    }
    Ok(char::from(byte))
}

/// Inside double quotes, after a `$`: `${NAME}` or `$NAME` is replaced by the variable's value;
/// a `$` not followed by a name stays literal.
fn expand_var(chars: &mut Chars<'_>, out: &mut String, env: EnvLookup<'_>) -> Result<(), String> {
    let name = if chars.next_if_eq(&'{').is_some() {
        let mut name = String::new();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(c) => name.push(c),
                None => return Err("missing '}' after '${'".to_string()),
            }
        }
        if !is_var_name(&name) {
            return Err(format!("invalid environment variable name '{name}'"));
        }
        name
    } else {
        let mut name = String::new();
        if let Some(first) = chars.next_if(|c| c.is_ascii_alphabetic() || *c == '_') {
            name.push(first);
            while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                name.push(c);
            }
        }
        if name.is_empty() {
            out.push('$');
            return Ok(());
        }
        name
    };
    out.push_str(&env(&name).unwrap_or_default());
    Ok(())
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DOMAIN" => Some("example.com".to_string()),
            "SPACED" => Some("a b".to_string()),
            _ => None,
        }
    }

    fn words(line: &str) -> Vec<String> {
        split_words(line, &env).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn err(line: &str) -> String {
        split_words(line, &env).expect_err(line)
    }

    #[test]
    fn splits_on_spaces_and_tabs() {
        assert_eq!(words("  bind\t*:1935  \t"), ["bind", "*:1935"]);
        assert!(words("").is_empty());
        assert!(words(" \t ").is_empty());
    }

    #[test]
    fn comments() {
        assert_eq!(words("listen stats # Define a listen"), ["listen", "stats"]);
        assert_eq!(words("server a b#c"), ["server", "a", "b"]);
        assert!(words("# only a comment").is_empty());
        assert_eq!(words(r"x a\#b"), ["x", "a#b"]);
        assert_eq!(words("x 'a#b' \"c#d\""), ["x", "a#b", "c#d"]);
    }

    #[test]
    fn backslash_escapes() {
        assert_eq!(
            words(r"stats realm Haproxy\ Statistics"),
            ["stats", "realm", "Haproxy Statistics"]
        );
        assert_eq!(
            words(r"reqadd X-Forwarded-Proto:\ http"),
            ["reqadd", "X-Forwarded-Proto: http"]
        );
        assert_eq!(words(r#"a \\ \' \" \$"#), ["a", "\\", "'", "\"", "$"]);
        assert_eq!(words(r"a \r\n\t"), ["a", "\r\n\t"]);
        assert_eq!(words(r"a \x41\x7a"), ["a", "Az"]);
        // Unknown escapes and a trailing backslash keep the backslash.
        assert_eq!(words(r"a \q b\"), ["a", r"\q", r"b\"]);
        assert_eq!(words(r"a\ b\	c"), [r"a b\", "c"]);
    }

    #[test]
    fn bad_hex_escape() {
        assert!(err(r"a \x4").contains("two hexadecimal"));
        assert!(err(r"a \xzz").contains("two hexadecimal"));
        assert!(err(r"a \xff").contains("not an ASCII"));
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(words(r#"a 'b c\ $HOME "d"'"#), ["a", r#"b c\ $HOME "d""#]);
        assert_eq!(words("a '' b"), ["a", "", "b"]);
    }

    #[test]
    fn double_quotes_escape_and_expand() {
        assert_eq!(words(r#"a "b c" "\"q\"""#), ["a", "b c", "\"q\""]);
        assert_eq!(
            words(r#"crt "/etc/${DOMAIN}.pem""#),
            ["crt", "/etc/example.com.pem"]
        );
        assert_eq!(
            words(r#"crt "/etc/$DOMAIN.pem""#),
            ["crt", "/etc/example.com.pem"]
        );
        assert_eq!(words(r#"v "$SPACED""#), ["v", "a b"]);
        assert_eq!(
            words(r#"v "\$DOMAIN" "$ 5" "$""#),
            ["v", "$DOMAIN", "$ 5", "$"]
        );
        assert_eq!(words(r#"v """#), ["v", ""]);
    }

    #[test]
    fn unquoted_dollar_is_literal() {
        assert_eq!(
            words("crt /etc/haproxy/certs/$DOMAIN.pem"),
            ["crt", "/etc/haproxy/certs/$DOMAIN.pem"]
        );
    }

    #[test]
    fn undefined_variable_is_empty() {
        assert_eq!(words(r#"v "x${NOPE}y" "$NOPE""#), ["v", "xy", ""]);
    }

    #[test]
    fn bad_variables() {
        assert!(err(r#"v "${DOMAIN""#).contains("missing '}'"));
        assert!(err(r#"v "${1X}""#).contains("invalid environment variable name '1X'"));
        assert!(err(r#"v "${}""#).contains("invalid environment variable name ''"));
    }

    #[test]
    fn quotes_glue_to_neighbours() {
        assert_eq!(words(r#"a"b c"d'e f'g"#), ["ab cde fg"]);
    }

    #[test]
    fn unterminated_quotes() {
        assert!(err("a 'b c").contains("unterminated single quote"));
        assert!(err("a \"b c").contains("unterminated double quote"));
        assert!(err(r#"a "b\""#).contains("unterminated double quote"));
    }
}
