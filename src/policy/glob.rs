//! A small allocation-free glob matcher for the common shapes (`*`, `?`,
//! `[...]`), used instead of the regex-backed [`globset`] engine on the hot
//! path. Patterns it does not understand (`{a,b}`, escapes, `**`) stay with
//! `globset`; the two are checked to agree by a property test.

/// One token of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyOne => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimpleGlob {
    tokens: Vec<Token>,
}

impl SimpleGlob {
    /// Compiles `pattern`, or `None` when it uses syntax left to `globset`.
    pub(crate) fn new(pattern: &str) -> Option<Self> {
        if pattern.contains(['{', '}', '\\']) || pattern.contains("**") {
            return None;
        }
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::AnyOne),
                '[' => {
                    let negated = matches!(chars.peek(), Some('!') | Some('^'));
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let c = chars.next()?;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let mut lookahead = chars.clone();
                        if lookahead.next() == Some('-') {
                            match lookahead.next() {
                                Some(end) if end != ']' => {
                                    chars.next();
                                    chars.next();
                                    if end < c {
                                        return None;
                                    }
                                    ranges.push((c, end));
                                    continue;
                                }
                                _ => {}
                            }
                        }
                        ranges.push((c, c));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                ']' => return None,
                other => tokens.push(Token::Literal(other)),
            }
        }
        Some(Self { tokens })
    }

    /// The literal characters before the first wildcard or class: every
    /// value the pattern matches starts with them.
    pub(crate) fn literal_prefix(&self) -> String {
        self.tokens
            .iter()
            .map_while(|token| match token {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Whether `value` matches the whole pattern.
    pub(crate) fn is_match(&self, value: &str) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut s) = (0usize, 0usize);
        // After a `*`: the token after it and the value position to retry from.
        let mut backtrack: Option<(usize, usize)> = None;
        while s < value.len() {
            let Some(c) = value[s..].chars().next() else {
                return false;
            };
            if let Some(token) = tokens.get(t) {
                if *token == Token::Star {
                    backtrack = Some((t + 1, s));
                    t += 1;
                    continue;
                }
                if token.matches(c) {
                    t += 1;
                    s += c.len_utf8();
                    continue;
                }
            }
            match backtrack {
                Some((after_star, from)) => {
                    let skipped = value[from..].chars().next().map_or(1, char::len_utf8);
                    backtrack = Some((after_star, from + skipped));
                    t = after_star;
                    s = from + skipped;
                }
                None => return false,
            }
        }
        tokens[t.min(tokens.len())..]
            .iter()
            .all(|token| *token == Token::Star)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basics() {
        let g = |p: &str| SimpleGlob::new(p).unwrap();
        assert!(g("1900*").is_match("19005551234"));
        assert!(!g("1900*").is_match("1800"));
        assert!(g("1[2-5]??3*").is_match("1299399"));
        assert!(!g("1[2-5]??3*").is_match("1699399"));
        assert!(g("[!4]*").is_match("1"));
        assert!(!g("[!4]*").is_match("44"));
        assert!(g("*").is_match(""));
        assert!(g("a*b*c").is_match("aXbYbc"));
        assert!(g("é?").is_match("éx"));
        assert!(SimpleGlob::new("{a,b}").is_none());
        assert!(SimpleGlob::new("[ab").is_none());
    }

    proptest! {
        #[test]
        fn agrees_with_globset(
            pattern in "[12ab*?!^\\-\\[\\]]{0,8}",
            value in "[12ab\\-!^\\]]{0,8}",
        ) {
            let Ok(glob) = globset::GlobBuilder::new(&pattern)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
            else {
                return Ok(());
            };
            if let Some(simple) = SimpleGlob::new(&pattern) {
                prop_assert_eq!(
                    simple.is_match(&value),
                    glob.compile_matcher().is_match(&value),
                    "pattern {:?} value {:?}", pattern, value
                );
            }
        }
    }
}
