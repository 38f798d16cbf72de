//! The operator's console at `/ui/`: a small client over the JSON API, its files
//! embedded in the binary (`assets/`), served with a strict Content-Security-Policy.
//!
//! The console holds no power of its own: every action it offers is a call to the
//! documented API with the token the operator typed in, under that token's scopes.
//! Nothing is built with Node.js and nothing is fetched from another site, so the
//! console works offline and the daemon's build needs only cargo (DESIGN.md, "The
//! console").

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `ui.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the console at `/ui/` (and redirect `/` to it).
    pub enabled: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: true }
    }
}

/// Scripts and styles only from this origin, no inline script or style, requests
/// only to this origin, no framing, no form posts and no `<base>`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $type:expr),* $(,)?) => {
        &[$(Asset { path: $path, content_type: $type, body: include_bytes!(concat!("assets/", $path)) }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page first: [`with_console`] serves it at `/ui/`, and [`index_page`] reads it.
static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
    "js/app.js" => JS,
    "js/api.js" => JS,
    "js/dom.js" => JS,
    "js/chart.js" => JS,
    "js/schema-form.js" => JS,
    "js/pages/overview.js" => JS,
    "js/pages/live.js" => JS,
    "js/pages/webhooks.js" => JS,
    "js/pages/deliveries.js" => JS,
    "js/pages/plugins.js" => JS,
    "js/pages/audit.js" => JS,
    "js/pages/catalog.js" => JS,
};

/// A file as served: its body (the page with `data-auth` filled in) and its ETag,
/// made once when the router is built.
struct File {
    path: &'static str,
    content_type: &'static str,
    body: Bytes,
    etag: HeaderValue,
}

/// `router` with the console's routes added when `ui.enabled`. `open_api` (no token
/// configured) is written into the page, so that the console asks for a token
/// without first sending a request that would be refused (and audited as such).
pub fn with_console(router: Router, config: &UiConfig, open_api: bool) -> Router {
    if !config.enabled {
        return router;
    }
    let files: Arc<Vec<File>> = Arc::new(
        ASSETS
            .iter()
            .map(|a| {
                let body = match a.path {
                    "index.html" => index_page(open_api),
                    _ => Bytes::from_static(a.body),
                };
                File {
                    path: a.path,
                    content_type: a.content_type,
                    etag: HeaderValue::from_str(&etag(&body)).expect("hex is a valid header"),
                    body,
                }
            })
            .collect(),
    );
    router.merge(
        Router::new()
            .route("/", get(|| async { Redirect::to("/ui/") }))
            .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
            .route(
                "/ui/",
                get({
                    let files = files.clone();
                    move |headers: HeaderMap| async move { serve(&files[0], &headers) }
                }),
            )
            .route(
                "/ui/{*path}",
                get(
                    move |Path(path): Path<String>, headers: HeaderMap| async move {
                        match files.iter().find(|f| f.path == path) {
                            Some(file) => serve(file, &headers),
                            None => crate::api::error::ApiError::not_found(format!(
                                "the console has no file {path:?}; open /ui/"
                            ))
                            .into_response(),
                        }
                    },
                ),
            ),
    )
}

/// `index.html` with `data-auth="open"` or `"token"` on its root element.
fn index_page(open_api: bool) -> Bytes {
    let auth = if open_api { "open" } else { "token" };
    let html = String::from_utf8_lossy(ASSETS[0].body).replacen(
        "<html lang=\"en\">",
        &format!("<html lang=\"en\" data-auth=\"{auth}\">"),
        1,
    );
    Bytes::from(html)
}

/// A file, with its security headers; 304 when the client's copy is this build's.
fn serve(file: &File, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v == file.etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, file.content_type)],
            file.body.clone(),
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Revalidated on every load, so a new daemon's console is never mixed with an
    // old one's cached files.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, file.etag.clone());
    response
}

fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_loads_is_embedded() {
        // Each `import … from "./x.js"` and `<script src>` names a file in ASSETS.
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            let base = asset.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            for part in text
                .split("from \"")
                .skip(1)
                .chain(text.split("src=\"").skip(1))
            {
                let target = part.split('"').next().unwrap();
                let resolved = resolve(base, target);
                assert!(
                    ASSETS.iter().any(|a| a.path == resolved),
                    "{} refers to {target} ({resolved}), which is not embedded",
                    asset.path
                );
            }
        }
    }

    fn resolve(base: &str, target: &str) -> String {
        if let Some(abs) = target.strip_prefix("/ui/") {
            return abs.to_string();
        }
        let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
        for piece in target.split('/') {
            match piece {
                "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.join("/")
    }

    #[test]
    fn the_page_says_whether_a_token_is_needed() {
        let page = |open| String::from_utf8(index_page(open).to_vec()).unwrap();
        assert!(page(true).contains(r#"<html lang="en" data-auth="open">"#));
        assert!(page(false).contains(r#"<html lang="en" data-auth="token">"#));
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let index = ASSETS.iter().find(|a| a.path == "index.html").unwrap();
        let html = std::str::from_utf8(index.body).unwrap();
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "{html}"
        );
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
