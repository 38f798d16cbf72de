//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
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
        super::plugins::list,
        super::plugins::get,
        super::plugins::reload,
        super::healthz,
        super::readyz,
        super::metrics,
    ),
    components(schemas(events::EventRequest, events::AcceptedBody, events::HandledBody, events::AcceptedBatchBody, events::DeadLettered, super::deadletters::DeadLetterPage, super::deadletters::DeadLetterView, super::deadletters::RetryOutcome, super::nodes::NodeList, super::nodes::NodeView, crate::deadletter::Kind, super::audit::AuditPage, super::audit::AuditRow,
        crate::webhooks::NewEndpoint, crate::webhooks::EndpointPatch, crate::webhooks::Endpoint, crate::webhooks::Format,
        super::webhooks::EndpointWithSecret, super::webhooks::EndpointList, super::webhooks::DeliveryView,
        super::webhooks::AttemptView, super::webhooks::DeliveryPage, super::webhooks::Replayed,
        super::plugins::PluginList, crate::plugins::PluginStatus, crate::plugins::Mode, crate::plugins::OnError)),
    modifiers(&BearerAuth),
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

/// The OpenAPI 3.1 document of this API.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
