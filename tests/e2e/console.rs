//! The console's serving (files, headers, `ui.enabled`) and the two routes it reads
//! beyond the resources: `GET /v1/me` and `GET /v1/stats/rates`. The pages
//! themselves are tested in Chromium (tests/browser).

use evhost_e2e::*;

const READER: &str = "reader-token-00000002";

#[tokio::test]
async fn the_console_is_served_with_a_strict_csp_and_revalidated() {
    let d = Daemon::start().await;
    let r = d.client.get(d.url("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(header(&r, "content-type").starts_with("text/html"));
    let csp = header(&r, "content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    let html = r.text().await.unwrap();
    assert!(html.contains("/ui/js/app.js"), "{html}");
    // No token is configured here: the page says so, and asks for none.
    assert!(html.contains(r#"data-auth="open""#), "{html}");

    let js = d.client.get(d.url("/ui/js/app.js")).send().await.unwrap();
    assert!(header(&js, "content-type").starts_with("text/javascript"));
    let etag = header(&js, "etag");
    let again = d
        .client
        .get(d.url("/ui/js/app.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // `/` leads to the console; an unknown file is the API's JSON 404.
    let root = d.client.get(d.url("/")).send().await.unwrap();
    assert_eq!(root.url().path(), "/ui/");
    let (status, body) =
        status_json(d.client.get(d.url("/ui/nope.js")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn ui_enabled_false_leaves_no_console() {
    let d = Daemon::start_with(Options::default().env("EVHOST_UI__ENABLED", "false")).await;
    for path in ["/ui/", "/ui/js/app.js", "/"] {
        let r = d.client.get(d.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn me_names_the_token_and_its_scopes() {
    let yaml =
        format!("auth:\n  tokens:\n    - {{name: dashboard, token: {READER}, scopes: [read]}}\n");
    let d = Daemon::start_with(Options::default().config_yaml(&yaml)).await;
    let r = d
        .client
        .get(d.url("/v1/me"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"token": "dashboard", "scopes": ["read"], "open": false})
    );
    let r = d.client.get(d.url("/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = d
        .client
        .get(d.url("/v1/me"))
        .bearer_auth("an-unknown-token-000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let open = Daemon::start().await;
    let (status, body) = open.get_json("/v1/me").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"token": null, "scopes": ["publish", "read", "admin"], "open": true})
    );
}

#[tokio::test]
async fn rates_show_what_was_just_accepted_and_refused() {
    let d = Daemon::start().await;
    for _ in 0..20 {
        d.publish("message.received", &received("example.com", false))
            .await;
    }
    let (status, _) = d
        .post_json(
            "/v1/events",
            &json!({"type": "message.received", "data": {"size": "big"}}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = d.get_json("/v1/stats/rates").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            body["interval_seconds"].as_u64(),
            body["span_seconds"].as_u64()
        ),
        (Some(5), Some(900))
    );
    let points = body["points"].as_array().unwrap();
    assert!(!points.is_empty(), "{body}");
    assert!(
        points.iter().any(|p| p["accepted"].as_f64().unwrap() > 0.0),
        "{body}"
    );
    assert!(
        points.iter().any(|p| p["rejected"].as_f64().unwrap() > 0.0),
        "{body}"
    );
}
