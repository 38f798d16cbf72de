//! The wire formats an event may arrive in, all mapped to one [`Draft`]:
//!
//! - evhost's own JSON: `{"type", "data", "id"?, "source"?, "time"?}` (the platform
//!   plan's `timestamp` is accepted for `time`);
//! - CloudEvents 1.0 in structured mode (`application/cloudevents+json`) and in
//!   batches (`application/cloudevents-batch+json`);
//! - CloudEvents 1.0 in binary mode (`ce-*` headers, the body is the data).
//!
//! The CloudEvents SDK's HTTP bindings pin old HTTP crates, so the few `ce-*` headers
//! are mapped here by hand.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

/// An event as a publisher sent it, before validation and enrichment.
#[derive(Debug)]
pub struct Draft {
    pub kind: String,
    pub data: Box<RawValue>,
    pub id: Option<String>,
    pub source: Option<String>,
    pub time: Option<DateTime<Utc>>,
    pub on_behalf_of: Option<String>,
}

/// Why a request body is not an event.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub message: String,
}

fn wire_error(message: impl Into<String>) -> WireError {
    WireError {
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    #[serde(rename = "type")]
    kind: String,
    data: Box<RawValue>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    time: Option<DateTime<Utc>>,
    /// The platform plan's name for `time`.
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    on_behalf_of: Option<String>,
}

impl Plain {
    fn into_draft(self) -> Result<Draft, WireError> {
        if self.time.is_some() && self.timestamp.is_some() {
            return Err(wire_error("give `time` or `timestamp`, not both"));
        }
        Ok(Draft {
            kind: self.kind,
            data: self.data,
            id: self.id,
            source: self.source,
            time: self.time.or(self.timestamp),
            on_behalf_of: self.on_behalf_of,
        })
    }
}

#[derive(Deserialize)]
struct Structured {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    time: Option<DateTime<Utc>>,
    #[serde(default)]
    datacontenttype: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_base64: Option<serde::de::IgnoredAny>,
}

impl Structured {
    fn into_draft(self) -> Result<Draft, WireError> {
        check_specversion(&self.specversion)?;
        if self.data_base64.is_some() {
            return Err(wire_error(
                "`data_base64` is not supported: evhost events carry JSON `data`",
            ));
        }
        if let Some(ct) = &self.datacontenttype
            && !is_json_media_type(ct)
        {
            return Err(wire_error(format!(
                "datacontenttype {ct:?} is not supported: evhost events carry JSON data"
            )));
        }
        let data = self
            .data
            .ok_or_else(|| wire_error("the CloudEvent has no `data`"))?;
        Ok(Draft {
            kind: self.kind,
            data,
            id: Some(self.id),
            source: Some(self.source),
            time: self.time,
            on_behalf_of: None,
        })
    }
}

fn check_specversion(v: &str) -> Result<(), WireError> {
    if v == "1.0" {
        Ok(())
    } else {
        Err(wire_error(format!(
            "CloudEvents specversion {v:?} is not supported; use \"1.0\""
        )))
    }
}

/// Whether a media type carries JSON (`application/json`, `…+json`), parameters aside.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Runs a serde parse and reports the failing field by its path.
fn parse_with_path<'a, T: Deserialize<'a>>(body: &'a str) -> Result<T, WireError> {
    let mut de = serde_json::Deserializer::from_str(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            wire_error(format!("body is not valid JSON: {inner}"))
        } else {
            wire_error(format!("`{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| wire_error(format!("body is not valid JSON: {e}")))?;
    Ok(value)
}

/// One event in evhost's own JSON shape.
pub fn parse_plain(body: &str) -> Result<Draft, WireError> {
    parse_with_path::<Plain>(body).and_then(Plain::into_draft)
}

/// A JSON array of events in evhost's own shape.
pub fn parse_plain_batch(body: &str) -> Result<Vec<Draft>, WireError> {
    let items: Vec<Plain> = parse_with_path(body)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.into_draft()
                .map_err(|e| wire_error(format!("[{i}]: {e}")))
        })
        .collect()
}

/// One structured-mode CloudEvent.
pub fn parse_structured(body: &str) -> Result<Draft, WireError> {
    let attributes: HashMap<String, &RawValue> = parse_with_path(body)?;
    check_extensions(&attributes)?;
    parse_with_path::<Structured>(body).and_then(Structured::into_draft)
}

/// A CloudEvents JSON batch.
pub fn parse_structured_batch(body: &str) -> Result<Vec<Draft>, WireError> {
    let items: Vec<HashMap<String, &RawValue>> = parse_with_path(body)?;
    for (i, attributes) in items.iter().enumerate() {
        check_extensions(attributes).map_err(|e| wire_error(format!("[{i}]: {e}")))?;
    }
    let items: Vec<Structured> = parse_with_path(body)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.into_draft()
                .map_err(|e| wire_error(format!("[{i}]: {e}")))
        })
        .collect()
}

const CONTEXT_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "dataschema",
    "subject",
    "data",
    "data_base64",
];

/// CloudEvents extension attributes are scalars named `[a-z0-9]{1,20}`; evhost does
/// not keep them, but it does not let malformed ones through either.
fn check_extensions(attributes: &HashMap<String, &RawValue>) -> Result<(), WireError> {
    for (name, value) in attributes {
        if CONTEXT_ATTRIBUTES.contains(&name.as_str()) {
            continue;
        }
        let good_name = !name.is_empty()
            && name.len() <= 20
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !good_name {
            return Err(wire_error(format!(
                "CloudEvents attribute name {name:?} is not valid: use 1 to 20 of a-z 0-9"
            )));
        }
        if value.get().starts_with(['[', '{']) {
            return Err(wire_error(format!(
                "CloudEvents extension attribute `{name}` must be a string, number or boolean"
            )));
        }
    }
    Ok(())
}

/// Whether the request is a binary-mode CloudEvent.
pub fn is_binary_mode(headers: &HeaderMap) -> bool {
    headers.contains_key("ce-specversion")
}

/// A binary-mode CloudEvent: attributes in `ce-*` headers, the body is the data.
pub fn parse_binary(headers: &HeaderMap, body: &str) -> Result<Draft, WireError> {
    let header = |name: &str| -> Result<Option<String>, WireError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.to_string()))
                .map_err(|_| wire_error(format!("header {name} is not visible ASCII"))),
        }
    };
    let required = |name: &str| -> Result<String, WireError> {
        header(name)?
            .ok_or_else(|| wire_error(format!("binary-mode CloudEvent lacks the {name} header")))
    };
    check_specversion(&required("ce-specversion")?)?;
    let time = match header("ce-time")? {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(&t)
                .map_err(|e| {
                    wire_error(format!("header ce-time {t:?} is not an RFC 3339 time: {e}"))
                })?
                .with_timezone(&Utc),
        ),
    };
    let data: Box<RawValue> = parse_with_path(body)?;
    Ok(Draft {
        kind: required("ce-type")?,
        data,
        id: Some(required("ce-id")?),
        source: Some(required("ce-source")?),
        time,
        on_behalf_of: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_accepts_timestamp_as_time() {
        let d = parse_plain(r#"{"type":"a.b","data":{"x":1},"timestamp":"2026-01-02T03:04:05Z"}"#)
            .unwrap();
        assert_eq!(d.time.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(d.data.get(), r#"{"x":1}"#);
    }

    #[test]
    fn plain_refuses_unknown_and_missing_fields() {
        let e = parse_plain(r#"{"tpye":"a.b","data":{}}"#).unwrap_err();
        assert!(e.message.contains("tpye"), "{e}");
        let e = parse_plain(r#"{"type":"a.b"}"#).unwrap_err();
        assert!(e.message.contains("data"), "{e}");
        let e = parse_plain(r#"{"type":"a.b","data":{},"time":"yesterday"}"#).unwrap_err();
        assert!(e.message.contains("time"), "{e}");
    }

    #[test]
    fn bad_json_is_reported_as_such() {
        let e = parse_plain(r#"{"type": "#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = parse_plain(r#"{"type":"a.b","data":{}} trailing"#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // `data` is kept raw, and serde_json skips raw values without recursion; the
        // depth limit itself is applied at ingest (ingest::MAX_DATA_DEPTH).
        let deep = format!(
            r#"{{"type":"a.b","data":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_plain(&deep).is_ok());
        let deep_envelope = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_plain_batch(&deep_envelope).is_err());
    }

    #[test]
    fn structured_cloudevent() {
        let d = parse_structured(
            r#"{"specversion":"1.0","id":"e1","source":"/smtp","type":"a.b","datacontenttype":"application/json","data":{"k":true},"ext1":"x"}"#,
        )
        .unwrap();
        assert_eq!(d.id.as_deref(), Some("e1"));
        assert_eq!(d.source.as_deref(), Some("/smtp"));
        let e = parse_structured(
            r#"{"specversion":"0.3","id":"e1","source":"/s","type":"a.b","data":{}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("specversion"), "{e}");
        let e = parse_structured(r#"{"specversion":"1.0","source":"/s","type":"a.b","data":{}}"#)
            .unwrap_err();
        assert!(e.message.contains("id"), "{e}");
        let e = parse_structured(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"a.b","data_base64":"AA=="}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("data_base64"), "{e}");
        let e = parse_structured(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"a.b","data":{},"ext":[1]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("`ext`"), "{e}");
        let e = parse_structured(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"a.b","data":{},"Bad-Name":1}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("Bad-Name"), "{e}");
    }

    #[test]
    fn binary_cloudevent() {
        let mut h = HeaderMap::new();
        h.insert("ce-specversion", "1.0".parse().unwrap());
        h.insert("ce-id", "b1".parse().unwrap());
        h.insert("ce-source", "/imap".parse().unwrap());
        h.insert("ce-type", "a.b".parse().unwrap());
        h.insert("ce-time", "2026-05-01T00:00:00Z".parse().unwrap());
        assert!(is_binary_mode(&h));
        let d = parse_binary(&h, r#"{"k":1}"#).unwrap();
        assert_eq!(d.kind, "a.b");
        assert_eq!(d.id.as_deref(), Some("b1"));
        h.remove("ce-source");
        assert!(
            parse_binary(&h, "{}")
                .unwrap_err()
                .message
                .contains("ce-source")
        );
    }

    #[test]
    fn media_types() {
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/cloudevents+json"));
        assert!(!is_json_media_type("text/plain"));
    }
}
