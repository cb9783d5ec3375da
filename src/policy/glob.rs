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

    /// Stems that every matching value starts with one of: the leading
    /// literals, with leading classes spelled out while there are at most
    /// `max` stems (`1[2-5]?*` gives `12`, `13`, `14`, `15`).
    pub(crate) fn stems(&self, max: usize) -> Vec<String> {
        let mut stems = vec![String::new()];
        for token in &self.tokens {
            match token {
                Token::Literal(c) => stems.iter_mut().for_each(|stem| stem.push(*c)),
                Token::Class {
                    negated: false,
                    ranges,
                } => {
                    let count: usize = ranges
                        .iter()
                        .map(|(lo, hi)| (*hi as usize).saturating_sub(*lo as usize) + 1)
                        .sum();
                    if count == 0 || stems.len().saturating_mul(count) > max {
                        break;
                    }
                    let chars: Vec<char> = ranges.iter().flat_map(|(lo, hi)| *lo..=*hi).collect();
                    stems = stems
                        .iter()
                        .flat_map(|stem| {
                            chars.iter().map(move |c| {
                                let mut next = stem.clone();
                                next.push(*c);
                                next
                            })
                        })
                        .collect();
                }
                _ => break,
            }
        }
        stems
    }

    /// Whether `value` matches the whole pattern.
    pub(crate) fn is_match(&self, value: &str) -> bool {
        if value.is_ascii() {
            // Numbers: every byte is a char, no decoding.
            let bytes = value.as_bytes();
            self.is_match_by(bytes.len(), |at| bytes.get(at).map(|b| (char::from(*b), 1)))
        } else {
            self.is_match_by(value.len(), |at| {
                let c = value.get(at..)?.chars().next()?;
                Some((c, c.len_utf8()))
            })
        }
    }

    /// [`SimpleGlob::is_match`] over a value of `len` bytes whose char at
    /// byte `at` (and its length) `char_at` gives.
    #[inline]
    fn is_match_by(&self, len: usize, char_at: impl Fn(usize) -> Option<(char, usize)>) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut s) = (0usize, 0usize);
        // After a `*`: the token after it and the value position to retry from.
        let mut backtrack: Option<(usize, usize)> = None;
        while s < len {
            let Some((c, width)) = char_at(s) else {
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
                    s += width;
                    continue;
                }
            }
            match backtrack {
                Some((after_star, from)) => {
                    let skipped = char_at(from).map_or(1, |(_, width)| width);
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
        assert_eq!(g("1[2-5]??8*").stems(16), ["12", "13", "14", "15"]);
        assert_eq!(g("1[2-5]??8*").stems(3), ["1"]);
        assert_eq!(g("4[!4]*").stems(16), ["4"]);
        assert_eq!(g("*").stems(16), [""]);
        assert_eq!(g("[a-\u{10ffff}]").stems(16), [""]);
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
                if simple.is_match(&value) {
                    prop_assert!(
                        simple.stems(16).iter().any(|stem| value.starts_with(stem.as_str())),
                        "pattern {:?} value {:?} stems {:?}", pattern, value, simple.stems(16)
                    );
                }
                prop_assert_eq!(
                    simple.is_match(&value),
                    glob.compile_matcher().is_match(&value),
                    "pattern {:?} value {:?}", pattern, value
                );
            }
        }
    }
}
