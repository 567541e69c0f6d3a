//! A cursor over the words of one directive, with the checks every directive needs
//! (missing argument, unexpected extra argument, trailing `if`/`unless` condition).
//! Errors are reasons only; the parser adds `file:line`.

use super::model::Condition;

pub(crate) struct Args<'a> {
    /// The directive's name as shown in messages (`timeout client`, `stats uri`, …).
    keyword: &'a str,
    words: &'a [String],
    pos: usize,
}

impl<'a> Args<'a> {
    /// `words` are the arguments that follow `keyword`.
    pub(crate) fn new(keyword: &'a str, words: &'a [String]) -> Args<'a> {
        Args {
            keyword,
            words,
            pos: 0,
        }
    }

    pub(crate) fn keyword(&self) -> &'a str {
        self.keyword
    }

    pub(crate) fn next(&mut self) -> Option<&'a str> {
        let word = self.words.get(self.pos)?;
        self.pos += 1;
        Some(word.as_str())
    }

    pub(crate) fn peek(&self) -> Option<&'a str> {
        self.words.get(self.pos).map(String::as_str)
    }

    /// The next word, which must be there; `what` names it in the error.
    pub(crate) fn need(&mut self, what: &str) -> Result<&'a str, String> {
        self.next()
            .ok_or_else(|| format!("'{}' needs {what}", self.keyword))
    }

    /// The value after an option word such as `inter` in a server line.
    pub(crate) fn value_of(&mut self, option: &str) -> Result<&'a str, String> {
        self.next()
            .ok_or_else(|| format!("'{option}' in '{}' needs a value", self.keyword))
    }

    /// Everything not consumed yet.
    pub(crate) fn rest(&mut self) -> &'a [String] {
        let rest = self.words.get(self.pos..).unwrap_or_default();
        self.pos = self.words.len();
        rest
    }

    /// Fails if a word is left over.
    pub(crate) fn end(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(word) => Err(format!(
                "unexpected argument '{word}' to '{}'",
                self.keyword
            )),
        }
    }

    /// An optional trailing `if COND…` / `unless COND…`, which must end the line. The words
    /// are kept as written (`if ! { ssl_fc }` → `["!", "{", "ssl_fc", "}"]`); the HTTP room
    /// compiles them.
    pub(crate) fn condition(&mut self) -> Result<Option<Condition>, String> {
        let negate = match self.peek() {
            None => return Ok(None),
            Some("if") => false,
            Some("unless") => true,
            Some(_) => return self.end().map(|()| None),
        };
        let word = self.next().unwrap_or_default();
        let words = self.rest().to_vec();
        if words.is_empty() {
            return Err(format!(
                "missing condition after '{word}' in '{}'",
                self.keyword
            ));
        }
        Ok(Some(Condition { negate, words }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn cursor() {
        let w = words("a b");
        let mut args = Args::new("kw", &w);
        assert_eq!(args.peek(), Some("a"));
        assert_eq!(args.need("a name"), Ok("a"));
        assert_eq!(
            args.end(),
            Err("unexpected argument 'b' to 'kw'".to_string())
        );
        assert_eq!(args.next(), Some("b"));
        assert_eq!(args.need("a value"), Err("'kw' needs a value".to_string()));
        assert!(args.rest().is_empty());
        assert_eq!(args.end(), Ok(()));
    }

    #[test]
    fn conditions() {
        let w = words("if ! { ssl_fc }");
        let cond = Args::new("redirect", &w).condition();
        assert_eq!(
            cond,
            Ok(Some(Condition {
                negate: false,
                words: words("! { ssl_fc }")
            }))
        );

        let w = words("unless is_api");
        let cond = Args::new("redirect", &w).condition();
        assert_eq!(
            cond,
            Ok(Some(Condition {
                negate: true,
                words: words("is_api")
            }))
        );

        let w = words("if");
        assert!(Args::new("redirect", &w)
            .condition()
            .expect_err("")
            .contains("missing condition"));

        let w = words("oops if x");
        assert!(Args::new("redirect", &w)
            .condition()
            .expect_err("")
            .contains("unexpected argument 'oops'"));

        assert_eq!(Args::new("redirect", &[]).condition(), Ok(None));
    }
}
