//! The OpenAPI document, generated from the handlers' annotations and made exact
//! for the running daemon ([`exact`]).

mod exact;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::events;

#[derive(OpenApi)]
#[openapi(
    info(title = "evhost", description = "The event system of an email platform: validated ingest, WebAssembly plugins, signed webhooks, audit log, metrics. Errors are `{\"error\": {\"code\", \"message\", \"field\"?}}`."),
    paths(
        events::publish_one,
        events::publish_batch,
        events::stream,
        super::event_types,
        super::audit::query,
        super::audit::verify,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::get,
        super::webhooks::update,
        super::webhooks::delete,
        super::webhooks::enable,
        super::webhooks::disable,
        super::webhooks::rotate_secret,
        super::webhooks::test,
        super::webhooks::deliveries,
        super::webhooks::replay,
        super::webhooks::delivery,
        super::webhooks::retry,
        super::deadletters::list,
        super::deadletters::get,
        super::deadletters::retry,
        super::deadletters::discard,
        super::nodes::list,
        super::overview::me,
        super::overview::rates,
        super::plugins::list,
        super::plugins::get,
        super::plugins::reload,
        super::plugins::shadow,
        super::plugins::promote,
        super::healthz,
        super::readyz,
        super::metrics,
    ),
    components(schemas(events::EventRequest, events::AcceptedBody, events::HandledBody, events::AcceptedBatchBody, events::DeadLettered, super::deadletters::DeadLetterPage, super::deadletters::DeadLetterView, super::deadletters::RetryOutcome, super::nodes::NodeList, super::nodes::NodeView, super::overview::Me, super::overview::Rates, crate::metrics::history::RatePoint, crate::deadletter::Kind, super::audit::AuditPage, super::audit::AuditRow,
        crate::webhooks::NewEndpoint, crate::webhooks::EndpointPatch, crate::webhooks::Endpoint, crate::webhooks::Format,
        super::webhooks::EndpointWithSecret, super::webhooks::EndpointList, super::webhooks::DeliveryView,
        super::webhooks::AttemptView, super::webhooks::DeliveryPage, super::webhooks::Replayed,
        super::plugins::PluginList, crate::plugins::PluginStatus, crate::plugins::Mode, crate::plugins::OnError,
        crate::plugins::shadow::ShadowReport, crate::plugins::shadow::ShadowDifference)),
    modifiers(&BearerAuth, &WhatEveryRouteAnswers),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What the handlers' annotations leave out but every route does, filled in once:
/// - each `{name}` in a path is declared as a required string path parameter, so a
///   generated client can call the route;
/// - every route with a token answers 401 (no or unknown token), 403 (the token lacks
///   the scope) and 429 (`rate_limited`: the token is over its rate);
/// - every write under `/v1/` answers 408 (`body_timeout`), 413 (`too_large`) and 415
///   (`unsupported_media_type`), all with the error body.
struct WhatEveryRouteAnswers;

impl Modify for WhatEveryRouteAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ContentBuilder, Object, Ref, Required, ResponseBuilder, Type};

        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            "ErrorBody".into(),
            utoipa::openapi::RefOr::T(error_body_schema()),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names: Vec<&str> = path
                .split('/')
                .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let writes = path.starts_with("/v1/");
            for (write, operation) in [
                (false, item.get.as_mut()),
                (writes, item.post.as_mut()),
                (writes, item.put.as_mut()),
                (writes, item.patch.as_mut()),
                (false, item.delete.as_mut()),
            ]
            .into_iter()
            .filter_map(|(write, op)| op.map(|op| (write, op)))
            {
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                for name in &names {
                    let declared = parameters
                        .iter()
                        .any(|p| p.name == *name && p.parameter_in == ParameterIn::Path);
                    if !declared {
                        parameters.push(
                            ParameterBuilder::new()
                                .name(*name)
                                .parameter_in(ParameterIn::Path)
                                .required(Required::True)
                                .schema(Some(Object::with_type(Type::String)))
                                .build(),
                        );
                    }
                }
                if parameters.is_empty() {
                    operation.parameters = None;
                }
                let has_parameters = operation.parameters.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description).into());
                };
                if has_parameters {
                    add(
                        "400",
                        "`bad_query` or `bad_path`: a parameter is not what this document allows",
                    );
                }
                if operation.security.is_some() {
                    add("401", "`unauthorized`: no token, or not a valid one");
                    add(
                        "403",
                        "`forbidden`: the token lacks the scope this route needs",
                    );
                    add(
                        "429",
                        "`rate_limited`: the token is over its rate_per_second (Retry-After says when to retry)",
                    );
                }
                if write {
                    add(
                        "408",
                        "`body_timeout`: the body did not arrive within server.body_timeout",
                    );
                    add("413", "`too_large`: the body is over server.max_body_bytes");
                    add(
                        "415",
                        "`unsupported_media_type`: the Content-Type is not one this route takes",
                    );
                }
            }
        }
    }
}

/// `{"error": {"code", "message", "field"?}}`.
fn error_body_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::{ObjectBuilder, Type};
    let string = || ObjectBuilder::new().schema_type(Type::String);
    ObjectBuilder::new()
        .property(
            "error",
            ObjectBuilder::new()
                .property("code", string())
                .property("message", string())
                .property("field", string())
                .required("code")
                .required("message"),
        )
        .required("error")
        .into()
}

/// The OpenAPI 3.1 document of this API.
pub async fn document(State(state): State<Arc<super::AppState>>) -> Json<serde_json::Value> {
    Json(of(state.ingest.catalog(), state.limits.max_batch_events))
}

/// The document for a daemon with this catalog and batch limit.
pub fn of(catalog: &crate::event::Catalog, max_batch_events: usize) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
    exact::tighten(&mut doc, catalog, max_batch_events);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_parameter_is_declared_and_every_guarded_route_documents_its_refusals() {
        let doc = of(&crate::event::Catalog::new(true, false), 1000);
        let paths = doc["paths"].as_object().unwrap();
        let mut checked = 0;
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                for name in path
                    .split('/')
                    .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
                {
                    assert!(
                        declared.contains(&name),
                        "{method} {path}: {{{name}}} undeclared"
                    );
                }
                if operation.get("security").is_some() {
                    for status in ["401", "403", "429"] {
                        assert!(
                            operation["responses"].get(status).is_some(),
                            "{method} {path} lacks {status}"
                        );
                    }
                }
                if path.starts_with("/v1/") && ["post", "put", "patch"].contains(&method.as_str()) {
                    for status in ["408", "413", "415"] {
                        assert!(
                            operation["responses"].get(status).is_some(),
                            "{method} {path} lacks {status}"
                        );
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 30, "{checked} operations");
        // What the server refuses, the schema does not allow.
        let batch = &paths["/v1/events/batch"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(batch["minItems"], 1, "{batch}");
        assert_eq!(batch["maxItems"], 1000, "{batch}");
        let branches = doc["components"]["schemas"]["EventRequest"]["oneOf"]
            .as_array()
            .unwrap();
        assert_eq!(
            branches.len(),
            evhost_catalog::COUNT + 1,
            "one per type, and custom"
        );
        assert_eq!(
            branches[0]["$ref"],
            "#/components/schemas/MessageReceivedEvent"
        );
        let received = &doc["components"]["schemas"]["MessageReceivedEvent"]["properties"];
        assert_eq!(received["type"]["const"], "message.received");
        assert_eq!(
            doc["components"]["schemas"]["MessageReceived"]["properties"]["size"]["maximum"],
            i64::MAX
        );
        assert_eq!(received["time"]["format"], "date-time", "{received}");
        assert!(received["id"]["pattern"].is_string(), "{received}");
        let limit = &paths["/v1/audit"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["in"], "query");
        assert_eq!(limit["schema"]["maximum"], 1000);
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    }
}
