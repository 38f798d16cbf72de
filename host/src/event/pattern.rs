use std::fmt;

/// An event-type pattern: an exact type (`message.received`), a family
/// (`message.*`, which matches any depth below `message`), or everything (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypePattern {
    All,
    /// Holds the prefix including the trailing dot (`message.`).
    Prefix(String),
    Exact(String),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "type pattern {0:?} is not valid: use `*`, a type such as `message.received`, or a family such as `message.*`"
)]
pub struct PatternError(pub String);

impl TypePattern {
    pub fn parse(text: &str) -> Result<TypePattern, PatternError> {
        let text = text.trim();
        if text == "*" {
            return Ok(TypePattern::All);
        }
        if let Some(prefix) = text.strip_suffix(".*") {
            if !prefix.is_empty() && prefix.split('.').all(is_segment) {
                return Ok(TypePattern::Prefix(format!("{prefix}.")));
            }
            return Err(PatternError(text.into()));
        }
        if !text.is_empty() && text.split('.').all(is_segment) {
            return Ok(TypePattern::Exact(text.into()));
        }
        Err(PatternError(text.into()))
    }

    /// Parses a comma-separated list; an empty list means everything.
    pub fn parse_list(text: &str) -> Result<Vec<TypePattern>, PatternError> {
        let patterns: Vec<_> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(TypePattern::parse)
            .collect::<Result<_, _>>()?;
        Ok(if patterns.is_empty() {
            vec![TypePattern::All]
        } else {
            patterns
        })
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            TypePattern::All => true,
            TypePattern::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            TypePattern::Exact(exact) => exact == event_type,
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypePattern::All => f.write_str("*"),
            TypePattern::Prefix(prefix) => write!(f, "{prefix}*"),
            TypePattern::Exact(exact) => f.write_str(exact),
        }
    }
}

fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `name` has the form of a custom event type: `[a-z0-9_]+(\.[a-z0-9_]+)+`,
/// at most 128 characters.
pub fn is_custom_type_name(name: &str) -> bool {
    name.len() <= 128 && name.contains('.') && name.split('.').all(is_segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        let exact = TypePattern::parse("message.received").unwrap();
        assert!(exact.matches("message.received"));
        assert!(!exact.matches("message.received2"));
        assert!(!exact.matches("message.sent"));

        let family = TypePattern::parse("message.*").unwrap();
        assert!(family.matches("message.received"));
        assert!(family.matches("message.flags_changed"));
        assert!(!family.matches("messages.x"));
        assert!(!family.matches("message"));

        let all = TypePattern::parse("*").unwrap();
        assert!(all.matches("anything.at_all"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "Message.*",
            "message.",
            ".*",
            "a..b",
            "message.*.x",
            "a b",
        ] {
            assert!(TypePattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lists_default_to_everything() {
        assert_eq!(TypePattern::parse_list("").unwrap(), vec![TypePattern::All]);
        let list = TypePattern::parse_list("message.*, user.login").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].to_string(), "message.*");
    }

    #[test]
    fn custom_type_names() {
        assert!(is_custom_type_name("billing.invoice_paid"));
        assert!(is_custom_type_name("a.b.c"));
        assert!(!is_custom_type_name("billing"));
        assert!(!is_custom_type_name("Billing.Paid"));
        assert!(!is_custom_type_name("a..b"));
        assert!(!is_custom_type_name("a.b-c"));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = String> {
            "[a-z0-9_]{1,8}"
        }

        fn segments(min: usize) -> impl Strategy<Value = Vec<String>> {
            proptest::collection::vec(segment(), min..6)
        }

        proptest! {
            /// Whatever the text, parsing does not panic, and what parses prints
            /// back to a text that parses to the same pattern.
            #[test]
            fn any_text_parses_or_is_refused_and_round_trips(text in "\\PC{0,40}") {
                if let Ok(pattern) = TypePattern::parse(&text) {
                    let printed = pattern.to_string();
                    prop_assert_eq!(TypePattern::parse(&printed).unwrap(), pattern);
                }
            }

            /// A family matches exactly the types below it, at any depth, and not
            /// the family's own name or a sibling sharing a prefix of its last segment.
            #[test]
            fn a_family_matches_the_types_below_it(family in segments(1), rest in segments(0), extra in segment()) {
                let pattern = TypePattern::parse(&format!("{}.*", family.join("."))).unwrap();
                let mut below = family.clone();
                below.extend(rest.iter().cloned());
                below.push(extra.clone());
                prop_assert!(pattern.matches(&below.join(".")));
                prop_assert!(!pattern.matches(&family.join(".")));
                let mut sibling = family.clone();
                let last = sibling.pop().unwrap();
                sibling.push(format!("{last}{extra}"));
                sibling.push(extra);
                prop_assert!(!pattern.matches(&sibling.join(".")));
            }

            /// An exact type matches itself and nothing longer or shorter.
            #[test]
            fn an_exact_type_matches_only_itself(parts in segments(1), extra in segment()) {
                let name = parts.join(".");
                let pattern = TypePattern::parse(&name).unwrap();
                prop_assert!(pattern.matches(&name));
                let longer = format!("{name}.{extra}");
                let joined = format!("{name}{extra}");
                prop_assert!(!pattern.matches(&longer));
                prop_assert!(!pattern.matches(&joined));
                prop_assert_eq!(is_custom_type_name(&name), parts.len() > 1 && name.len() <= 128);
            }
        }
    }
}
