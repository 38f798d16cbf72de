//! `/v1/plugins…`: what is loaded from the plugin folder and how a shadow compares
//! (read scope); reloading a plugin from its file and promoting a shadow (admin
//! scope, recorded in the audit log).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::webhooks::Admin;
use crate::config::Scope;
use crate::plugins::PluginStatus;
use crate::plugins::loader::{PluginError, Plugins};
use crate::plugins::shadow::ShadowReport;

/// Every plugin that is serving, or whose file failed to load.
#[derive(Serialize, ToSchema)]
pub struct PluginList {
    plugins: Vec<PluginStatus>,
}

fn plugins(state: &AppState) -> Result<&Plugins, ApiError> {
    state.plugins.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "plugins_disabled",
            "plugins are turned off (plugins.enabled: false)",
        )
    })
}

/// Lists the plugins: name, version, file hash, state, load time, last error, counters.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    responses((status = 200, description = "The plugins", body = PluginList)),
    security(("bearer" = ["read"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<Json<PluginList>, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    Ok(Json(PluginList {
        plugins: plugins(&state)?.list(),
    }))
}

/// One plugin.
#[utoipa::path(get, path = "/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "The file's stem: `spam-router` for spam-router.wasm")),
    responses((status = 200, description = "The plugin", body = PluginStatus), (status = 404, description = "No such plugin")),
    security(("bearer" = ["read"])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<PluginStatus>, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    plugins(&state)?
        .status(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no plugin named {name:?}")))
}

/// Loads a plugin again from its file and sidecar. On failure the previous version
/// keeps serving and the answer says why.
#[utoipa::path(post, path = "/v1/plugins/{name}/reload", tag = "plugins",
    params(("name" = String, Path, description = "The file's stem")),
    responses((status = 200, description = "Reloaded", body = PluginStatus),
              (status = 404, description = "No such plugin file"),
              (status = 422, description = "The file did not compile, match the contract or init; the previous version (if any) keeps serving")),
    security(("bearer" = ["admin"])))]
pub async fn reload(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let result = plugins(&state)?.reload(&name).await;
    answer(&state, &actor, "plugin.reload", &name, result).await
}

/// How a shadow compares with the version it runs beside: events, agreement, its
/// errors, skipped events, the time of each, the latest differing events. `name` is
/// the shadow's or the serving plugin's.
#[utoipa::path(get, path = "/v1/plugins/{name}/shadow", tag = "plugins",
    params(("name" = String, Path, description = "The shadow's name, or the plugin it runs beside")),
    responses((status = 200, description = "The comparison so far", body = ShadowReport),
              (status = 404, description = "No such shadow")),
    security(("bearer" = ["read"])))]
pub async fn shadow(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ShadowReport>, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    plugins(&state)?
        .shadow_report(&name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no shadow named {name:?} or beside a plugin of that name"
            ))
        })
}

/// Makes a shadow the serving version of the plugin it runs beside, in one swap: its
/// file and sidecar become that plugin's (the shadow's files go), recorded in the
/// audit log like any load.
#[utoipa::path(post, path = "/v1/plugins/{name}/promote", tag = "plugins",
    params(("name" = String, Path, description = "The shadow's name, or the plugin it runs beside")),
    responses((status = 200, description = "Promoted: the plugin it ran beside, now serving it", body = PluginStatus),
              (status = 404, description = "No such shadow"),
              (status = 422, description = "The promoted version did not load; the previous version keeps serving and its files are put back")),
    security(("bearer" = ["admin"])))]
pub async fn promote(
    State(state): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let result = plugins(&state)?.promote(&name).await;
    answer(&state, &actor, "plugin.promote", &name, result).await
}

/// Records an admin action on plugin `name` in the audit log (whatever its outcome)
/// and answers with the plugin's status, 404 for no such plugin or shadow, or 422
/// when the version did not load.
async fn answer(
    state: &AppState,
    actor: &crate::event::Actor,
    action: &str,
    name: &str,
    result: Result<PluginStatus, PluginError>,
) -> Result<Response, ApiError> {
    if let Some(audit) = &state.audit {
        let outcome = match &result {
            Ok(status) => serde_json::json!({
                "ok": true, "plugin": status.name, "version": status.version, "file_hash": status.file_hash,
            }),
            Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
        };
        audit
            .record_action(crate::audit::Entry::of_action(
                action, actor, "plugin", name, outcome,
            ))
            .await;
    }
    match result {
        Ok(status) => Ok(Json(status).into_response()),
        Err(
            e @ (PluginError::BadName(_) | PluginError::NotFound(_) | PluginError::NoShadow(_)),
        ) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "plugin_not_loaded",
            e.to_string(),
        )),
    }
}
