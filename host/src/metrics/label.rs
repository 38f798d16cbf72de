//! Label values as the exposition format wants them, whatever they hold.
//!
//! `prometheus_client` writes a label value as it is given, so a value holding a `"`,
//! a `\` or a newline would break every scrape after it. Values that can come from
//! outside (a payload's domain, a subscriber's or plugin's name) are written
//! through [`Escaped`]; the payload's domain is also held to the shape of a DNS
//! name before it becomes a label at all (see [`dns_name`]).

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value written escaped: `\` as `\\`, `"` as `\"`, a newline as `\n`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Escaped(pub String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl From<String> for Escaped {
    fn from(value: String) -> Escaped {
        Escaped(value)
    }
}

/// Whether `name` (lower case already) has the shape of a DNS name: at most 253
/// bytes, dot-separated labels of 1 to 63 of `a-z 0-9 -`, none starting or ending
/// with `-`.
pub fn dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dns_names_pass() {
        for ok in [
            "example.com",
            "mx-1.example.co.uk",
            "localhost",
            "xn--bcher-kva.example",
        ] {
            assert!(dns_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a-.com",
            "a b.com",
            "a\"b",
            "a\nb",
            "é.com",
            long.as_str(),
        ] {
            assert!(!dns_name(bad), "{bad:?}");
        }
    }
}
