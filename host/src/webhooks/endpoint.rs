//! Webhook endpoints: what an operator configures, and how requests to change them
//! are checked.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::event::{Catalog, TypePattern};

/// The body format an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"id", "event", "timestamp", "data"}`, the platform plan's shape.
    #[default]
    Esp,
    /// A structured-mode CloudEvent 1.0 (`application/cloudevents+json`).
    Cloudevents,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Esp => "esp",
            Format::Cloudevents => "cloudevents",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "esp" => Some(Format::Esp),
            "cloudevents" => Some(Format::Cloudevents),
            _ => None,
        }
    }
}

/// A webhook endpoint as stored. The secrets never leave through the API's lists.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub name: String,
    pub url: String,
    /// Type patterns: `message.received`, `message.*` or `*`.
    pub events: Vec<String>,
    /// When set, only events of this mail domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub format: Format,
    pub enabled: bool,
    /// Why it is disabled: `operator`, `gone` (the receiver answered 410) or
    /// `failing` (a run of failed deliveries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Failed deliveries in a row.
    pub failure_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_triggered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// True while a rotated-out secret still signs beside the current one.
    pub rotating: bool,
    /// Requests also carry a `v1a` (Ed25519) signature, checked with `public_key`.
    pub asymmetric: bool,
    /// `whpk_…`: the key receivers check `v1a` signatures with (when `asymmetric`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(skip)]
    pub secret: String,
    #[serde(skip)]
    pub previous_secret: Option<String>,
    #[serde(skip)]
    pub previous_secret_until_us: Option<i64>,
}

impl Endpoint {
    /// The patterns, parsed (they were checked when stored).
    pub fn patterns(&self) -> Vec<TypePattern> {
        self.events
            .iter()
            .filter_map(|p| TypePattern::parse(p).ok())
            .collect()
    }

    /// Sets `public_key` from the secret and `asymmetric`; call after either changes.
    pub fn derive_public_key(&mut self) {
        self.public_key = self
            .asymmetric
            .then(|| super::sign::public_key(&self.secret));
    }

    /// The secrets that sign now: the current one, then the rotated-out one while its
    /// overlap lasts.
    pub fn signing_secrets(&self, now_us: i64) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(old), Some(until)) = (&self.previous_secret, self.previous_secret_until_us)
            && now_us < until
        {
            secrets.push(old);
        }
        secrets
    }

    /// The payload of the `webhook.*` events about this endpoint (never the secret).
    pub fn change(&self, reason: Option<&str>) -> evhost_catalog::WebhookChanged {
        evhost_catalog::WebhookChanged {
            webhook_id: self.id.clone(),
            name: self.name.clone(),
            url: self.url.clone(),
            events: self.events.clone(),
            domain: self.domain.clone(),
            enabled: self.enabled,
            reason: reason.map(str::to_string),
        }
    }
}

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub name: String,
    pub url: String,
    /// Type patterns such as `message.*`; at least one.
    pub events: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Also sign with Ed25519 (`v1a`); the answer carries the public key.
    #[serde(default)]
    pub asymmetric: Option<bool>,
}

/// `PATCH /v1/webhooks/{id}`: the fields to change. `"domain": null` removes the
/// domain scope.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub domain: Option<Option<String>>,
    pub format: Option<Format>,
    pub enabled: Option<bool>,
    pub asymmetric: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A rejected field, with a message a person can act on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
    /// The value is well formed but names nothing that can arrive (a pattern that
    /// matches no type): a refusal no schema can state, which the API answers 422.
    pub unknown: bool,
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
        unknown: false,
    }
}

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_PATTERNS: usize = 100;

pub fn check_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(field_error(
            "name",
            format!("the name must be 1 to {MAX_NAME_LEN} printable characters"),
        ));
    }
    Ok(name.to_string())
}

/// Checks the patterns: valid syntax, and each names something that can arrive.
/// A pattern that matches no catalog type is refused when it looks like a typo of
/// one (an unknown type inside a catalog family, or a family a letter or two away
/// from a catalog family), and otherwise accepted only while custom types are
/// allowed (`events.allow_custom_types`).
pub fn check_events(events: &[String], catalog: &Catalog) -> Result<Vec<String>, FieldError> {
    if events.is_empty() || events.len() > MAX_PATTERNS {
        return Err(field_error(
            "events",
            format!("give 1 to {MAX_PATTERNS} type patterns, such as [\"message.*\"]"),
        ));
    }
    let mut families: Vec<&str> = catalog
        .types()
        .iter()
        .map(|t| t.name.split('.').next().unwrap_or(""))
        .collect();
    families.dedup();
    let mut out = Vec::with_capacity(events.len());
    for text in events {
        let pattern = TypePattern::parse(text).map_err(|e| field_error("events", e.to_string()))?;
        let known = catalog.types().iter().any(|t| pattern.matches(t.name));
        if !known {
            let shown = pattern.to_string();
            let family = shown.split('.').next().unwrap_or("");
            let suggestion = catalog
                .types()
                .iter()
                .map(|t| t.name.to_string())
                .chain(families.iter().map(|f| format!("{f}.*")))
                .min_by_key(|candidate| edit_distance(candidate, &shown));
            let typo = families.contains(&family)
                || families.iter().any(|f| edit_distance(f, family) <= 2);
            if typo || !catalog.allows_custom_types() {
                let hint = match suggestion {
                    Some(s) if typo => format!("; did you mean {s:?}?"),
                    _ => format!("; known families: {}", families.join(", ")),
                };
                return Err(FieldError {
                    unknown: true,
                    ..field_error(
                        "events",
                        format!(
                            "{text:?} matches no event type{hint} (GET /v1/event-types lists every type)"
                        ),
                    )
                });
            }
        }
        let text = pattern.to_string();
        if !out.contains(&text) {
            out.push(text);
        }
    }
    Ok(out)
}

/// Levenshtein distance, for typo hints on short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Checks a mail domain scope: a lowercase DNS name.
pub fn check_domain(domain: &str) -> Result<String, FieldError> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(field_error(
            "domain",
            format!("{domain:?} is not a mail domain such as example.org"),
        ));
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_must_match_a_known_type() {
        let catalog = Catalog::new(false, false);
        assert_eq!(
            check_events(
                &["message.*".into(), " user.login".into(), "message.*".into()],
                &catalog
            )
            .unwrap(),
            vec!["message.*", "user.login"]
        );
        let err = check_events(&["billing.*".into()], &catalog).unwrap_err();
        assert!(err.message.contains("matches no event type"), "{err}");
        assert!(check_events(&[], &catalog).is_err());
        assert!(check_events(&["Message".into()], &catalog).is_err());
        // With custom types allowed, new families pass but typos do not.
        let relaxed = Catalog::new(true, false);
        assert!(check_events(&["billing.*".into(), "billing.paid".into()], &relaxed).is_ok());
        let err = check_events(&["mesage.*".into()], &relaxed).unwrap_err();
        assert!(err.message.contains("did you mean \"message.*\""), "{err}");
        let err = check_events(&["message.recieved".into()], &relaxed).unwrap_err();
        assert!(
            err.message.contains("did you mean \"message.received\""),
            "{err}"
        );
    }

    #[test]
    fn domains_and_names_are_checked() {
        assert_eq!(check_domain("Example.ORG.").unwrap(), "example.org");
        assert!(check_domain("not a domain").is_err());
        assert!(check_domain("").is_err());
        assert!(check_name(" ").is_err());
        assert!(check_name("ops\nhook").is_err());
        assert_eq!(check_name(" CRM ").unwrap(), "CRM");
    }

    #[test]
    fn the_previous_secret_signs_only_during_the_overlap() {
        let now = 1_000;
        let mut e = Endpoint {
            id: "w".into(),
            name: "n".into(),
            url: "http://x".into(),
            events: vec!["*".into()],
            domain: None,
            format: Format::Esp,
            enabled: true,
            disabled_reason: None,
            failure_count: 0,
            last_triggered_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            rotating: true,
            asymmetric: false,
            public_key: None,
            secret: "new".into(),
            previous_secret: Some("old".into()),
            previous_secret_until_us: Some(now + 1),
        };
        assert_eq!(e.signing_secrets(now), vec!["new", "old"]);
        e.previous_secret_until_us = Some(now);
        assert_eq!(e.signing_secrets(now), vec!["new"]);
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("new\"") && !json.contains("old"), "{json}");
    }
}
