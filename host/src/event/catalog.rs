use std::collections::HashMap;

use evhost_catalog::Payload;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::pattern::is_custom_type_name;

/// Why an event's type or payload was refused. Each names what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error(
        "event type {0:?} is not in the catalog and custom types are turned off (events.allow_custom_types)"
    )]
    CustomTypesOff(String),
    #[error(
        "event type {0:?} is not valid: custom types look like `billing.invoice_paid` ([a-z0-9_] segments joined by dots)"
    )]
    BadTypeName(String),
    #[error("`data` of a {kind} event must be a JSON object")]
    NotAnObject { kind: String },
    #[error("`data.{field}` of a {kind} event: {message}")]
    Field {
        kind: String,
        field: String,
        message: String,
    },
    #[error(
        "`data.{field}` is not a field of {kind} events (see GET /v1/event-types; events.allow_unknown_fields accepts extra fields)"
    )]
    UnknownField { kind: String, field: String },
}

type ValidateFn = fn(&str, &RawValue, bool) -> Result<(), ValidationError>;

/// One entry of `GET /v1/event-types`.
#[derive(Debug, Clone, Serialize)]
pub struct EventTypeInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: Value,
}

/// The known event types and the rules for the rest.
pub struct Catalog {
    validators: HashMap<&'static str, ValidateFn>,
    infos: Vec<EventTypeInfo>,
    allow_custom_types: bool,
    allow_unknown_fields: bool,
}

impl Catalog {
    pub fn new(allow_custom_types: bool, allow_unknown_fields: bool) -> Catalog {
        struct Build<'a>(&'a mut Catalog);
        impl evhost_catalog::Visitor for Build<'_> {
            fn visit<P: Payload>(&mut self, name: &'static str, description: &'static str) {
                let strict = !self.0.allow_unknown_fields;
                self.0.validators.insert(name, validate::<P>);
                self.0.infos.push(EventTypeInfo {
                    name,
                    description,
                    schema: schema_of::<P>(name, description, strict),
                });
            }
        }
        let mut catalog = Catalog {
            validators: HashMap::new(),
            infos: Vec::new(),
            allow_custom_types,
            allow_unknown_fields,
        };
        evhost_catalog::visit(&mut Build(&mut catalog));
        catalog
    }

    /// The known types, in catalog order, with their JSON Schemas.
    pub fn types(&self) -> &[EventTypeInfo] {
        &self.infos
    }

    /// Whether types outside the catalog may be published (`events.allow_custom_types`).
    pub fn allows_custom_types(&self) -> bool {
        self.allow_custom_types
    }

    pub fn is_known(&self, kind: &str) -> bool {
        self.validators.contains_key(kind)
    }

    /// Checks that `kind` may be published and that `data` fits it.
    pub fn validate(&self, kind: &str, data: &RawValue) -> Result<(), ValidationError> {
        match self.validators.get(kind) {
            Some(validate) => validate(kind, data, self.allow_unknown_fields),
            None if !is_custom_type_name(kind) => Err(ValidationError::BadTypeName(
                kind.chars().take(140).collect(),
            )),
            None if !self.allow_custom_types => Err(ValidationError::CustomTypesOff(kind.into())),
            None => Ok(()),
        }
    }

    /// [`Catalog::validate`], and when a catalog type's payload fails it only for
    /// numbers such as `276.0` where an integer is due (JSON Schema, and so the
    /// OpenAPI document, counts them as integers), the payload with those written
    /// as integers. The number is the same; the typed payload can now be read.
    pub fn validate_or_fix(
        &self,
        kind: &str,
        data: &RawValue,
    ) -> Result<Option<Box<RawValue>>, ValidationError> {
        let error = match self.validate(kind, data) {
            Ok(()) => return Ok(None),
            Err(e) => e,
        };
        if !matches!(error, ValidationError::Field { .. }) || !data.get().contains('.') {
            return Err(error);
        }
        let Ok(mut value) = serde_json::from_str::<Value>(data.get()) else {
            return Err(error);
        };
        if !integral_floats_to_integers(&mut value) {
            return Err(error);
        }
        let fixed = serde_json::value::to_raw_value(&value).map_err(|_| error)?;
        self.validate(kind, &fixed)?;
        Ok(Some(fixed))
    }
}

/// Rewrites every float with no fraction and below 2^53 as an integer; whether any
/// was.
fn integral_floats_to_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Only where the float is exact: past 2^53 it may be a rounded integer
            // that was out of range as written.
            let fits = f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0;
            if fits {
                *n = (f as i64).into();
            }
            fits
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, v| integral_floats_to_integers(v) | any),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |any, v| integral_floats_to_integers(v) | any),
        _ => false,
    }
}

/// Deserializes `data` into the payload type, naming the first field that does not
/// fit, and (unless relaxed) the first field the type does not define.
fn validate<P: Payload>(
    kind: &str,
    data: &RawValue,
    allow_unknown: bool,
) -> Result<(), ValidationError> {
    // Serde would also accept a JSON array for a struct (fields by position).
    if !data.get().trim_start().starts_with('{') {
        return Err(ValidationError::NotAnObject { kind: kind.into() });
    }
    let mut unknown: Option<String> = None;
    let mut json = serde_json::Deserializer::from_str(data.get());
    let mut note_unknown = |path: serde_ignored::Path<'_>| {
        if unknown.is_none() {
            unknown = Some(path.to_string());
        }
    };
    let tracked = serde_ignored::Deserializer::new(&mut json, &mut note_unknown);
    let parsed: Result<P, _> = serde_path_to_error::deserialize(tracked);
    if let Err(e) = parsed {
        let field = e.path().to_string();
        return Err(ValidationError::Field {
            kind: kind.into(),
            field: if field == "." { String::new() } else { field },
            message: strip_position(&e.into_inner().to_string()),
        }
        .tidy());
    }
    match unknown {
        Some(field) if !allow_unknown => Err(ValidationError::UnknownField {
            kind: kind.into(),
            field,
        }),
        _ => Ok(()),
    }
}

impl ValidationError {
    /// `missing field` errors point at the object; name the field itself instead.
    fn tidy(self) -> ValidationError {
        match self {
            ValidationError::Field {
                kind,
                field,
                message,
            } if message.starts_with("missing field `") => {
                let missing = message
                    .trim_start_matches("missing field `")
                    .trim_end_matches('`')
                    .to_string();
                let field = if field.is_empty() {
                    missing
                } else {
                    format!("{field}.{missing}")
                };
                ValidationError::Field {
                    kind,
                    field,
                    message: "is required but missing".into(),
                }
            }
            other => other,
        }
    }

    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ValidationError::Field { field, .. } | ValidationError::UnknownField { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn schema_of<P: Payload>(name: &str, description: &str, strict: bool) -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(P)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut schema {
        map.insert("title".into(), Value::String(name.into()));
        map.insert("description".into(), Value::String(description.into()));
        if strict {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    const RECEIVED: &str = r#"{"message_id":"m1","from":"a@x.org","to":["b@example.com"],"subject":"hi","size":12,"domain":"example.com","user":"b@example.com","mailbox":"INBOX","is_spam":false}"#;

    #[test]
    fn an_integer_written_as_a_float_is_read_as_the_integer() {
        let c = Catalog::new(true, false);
        let data = raw(&RECEIVED.replace(r#""size":12"#, r#""size":12.0"#));
        let fixed = c
            .validate_or_fix("message.received", &data)
            .unwrap()
            .unwrap();
        assert!(fixed.get().contains(r#""size":12,"#), "{}", fixed.get());
        assert!(
            c.validate_or_fix("message.received", &raw(RECEIVED))
                .unwrap()
                .is_none()
        );
        let fraction = raw(&RECEIVED.replace(r#""size":12"#, r#""size":12.5"#));
        assert!(c.validate_or_fix("message.received", &fraction).is_err());
        // Past 2^53 a float is not exact: -9223372036854775809 must not become i64::MIN.
        let huge = raw(&RECEIVED.replace(r#""size":12"#, r#""size":-9223372036854775809"#));
        assert!(c.validate_or_fix("message.received", &huge).is_err());
    }

    #[test]
    fn lists_every_type_with_a_schema() {
        let c = Catalog::new(true, false);
        assert_eq!(c.types().len(), evhost_catalog::COUNT);
        let received = c
            .types()
            .iter()
            .find(|t| t.name == "message.received")
            .unwrap();
        let props = received.schema["properties"].as_object().unwrap();
        for field in [
            "message_id",
            "from",
            "to",
            "subject",
            "size",
            "domain",
            "user",
            "mailbox",
            "spam_score",
            "is_spam",
            "filter_results",
        ] {
            assert!(props.contains_key(field), "schema lacks {field}");
        }
        assert_eq!(received.schema["additionalProperties"], Value::Bool(false));
        let required: Vec<_> = received.schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(required.contains(&"subject"));
        assert!(!required.contains(&"spam_score"));
    }

    #[test]
    fn accepts_a_valid_payload() {
        let c = Catalog::new(true, false);
        c.validate("message.received", &raw(RECEIVED)).unwrap();
    }

    #[test]
    fn names_a_field_of_the_wrong_type() {
        let c = Catalog::new(true, false);
        let bad = RECEIVED.replace(r#""size":12"#, r#""size":"big""#);
        let err = c.validate("message.received", &raw(&bad)).unwrap_err();
        assert_eq!(err.field(), Some("size"), "{err}");
        assert!(err.to_string().contains("data.size"), "{err}");
    }

    #[test]
    fn names_a_missing_field() {
        let c = Catalog::new(true, false);
        let bad = RECEIVED.replace(r#""subject":"hi","#, "");
        let err = c.validate("message.received", &raw(&bad)).unwrap_err();
        assert_eq!(err.field(), Some("subject"), "{err}");
        assert!(err.to_string().contains("required"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused_unless_relaxed() {
        let extra = RECEIVED.replace('}', r#","colour":"red"}"#);
        let strict = Catalog::new(true, false);
        let err = strict
            .validate("message.received", &raw(&extra))
            .unwrap_err();
        assert!(
            matches!(err, ValidationError::UnknownField { ref field, .. } if field == "colour"),
            "{err}"
        );
        Catalog::new(true, true)
            .validate("message.received", &raw(&extra))
            .unwrap();
    }

    #[test]
    fn arrays_and_scalars_are_not_payloads() {
        let c = Catalog::new(true, false);
        assert!(matches!(
            c.validate("user.deleted", &raw(r#"["a","b","c"]"#)),
            Err(ValidationError::NotAnObject { .. })
        ));
        assert!(matches!(
            c.validate("user.deleted", &raw("3")),
            Err(ValidationError::NotAnObject { .. })
        ));
    }

    #[test]
    fn custom_types_follow_the_switch() {
        let data = raw(r#"{"anything": [1, 2]}"#);
        Catalog::new(true, false)
            .validate("billing.invoice_paid", &data)
            .unwrap();
        assert!(matches!(
            Catalog::new(false, false).validate("billing.invoice_paid", &data),
            Err(ValidationError::CustomTypesOff(_))
        ));
        assert!(matches!(
            Catalog::new(true, false).validate("Billing", &data),
            Err(ValidationError::BadTypeName(_))
        ));
    }

    #[test]
    fn uuid_and_time_fields_are_checked() {
        let c = Catalog::new(true, false);
        let login = r#"{"user_id":"not-a-uuid","email":"a@b.c","ip":"1.2.3.4","user_agent":"x","protocol":"imap","success":true}"#;
        assert_eq!(
            c.validate("user.login", &raw(login)).unwrap_err().field(),
            Some("user_id")
        );
        let cert = r#"{"domain":"x.org","expires_at":"tomorrow","issuer":"LE"}"#;
        assert_eq!(
            c.validate("certificate.expiring", &raw(cert))
                .unwrap_err()
                .field(),
            Some("expires_at")
        );
    }
}
