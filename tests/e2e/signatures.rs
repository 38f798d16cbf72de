//! Standard Webhooks asymmetric signatures (`v1a`, Ed25519), per endpoint: on, each
//! request carries `v1` and `v1a` entries, the endpoint shows its `whpk_` public key,
//! and a receiver holding only that key verifies; a rotation signs with both keys
//! during the overlap; off, no `v1a` is sent.

use std::time::Duration;

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Daemon, Options, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asymmetric_endpoint_signs_with_ed25519_verifiable_with_its_public_key() {
    let rx = Receiver::start().await;
    let d = Daemon::start_with(Options::default().webhooks_local()).await;
    let (status, created) = d
        .post_json(
            "/v1/webhooks",
            &json!({"name": "v1a", "url": rx.url("/"), "events": ["sig.*"], "asymmetric": true}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    let public = created["public_key"].as_str().unwrap().to_string();
    assert!(public.starts_with("whpk_"), "{created}");
    let (_, shown) = d.get_json(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(
        shown["public_key"],
        public.as_str(),
        "listed with the endpoint"
    );
    assert_eq!(shown["asymmetric"], true);

    d.publish("sig.one", &json!({"n": 1})).await;
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    let signature = got[0].header("webhook-signature");
    assert!(
        signature.contains("v1,") && signature.contains("v1a,"),
        "{signature}"
    );
    got[0].verify_asymmetric(&public).unwrap();
    got[0].verify_standard(&secret).unwrap();
    // Another endpoint's key does not verify it.
    let (_, other) = d
        .post_json(
            "/v1/webhooks",
            &json!({"name": "other", "url": rx.url("/other"), "events": ["none.*"], "asymmetric": true}),
        )
        .await;
    assert!(
        got[0]
            .verify_asymmetric(other["public_key"].as_str().unwrap())
            .is_err()
    );

    // Rotation: a new key pair; during the overlap both sign.
    let (status, rotated) = d
        .post_json(&format!("/v1/webhooks/{id}/rotate-secret"), &json!({}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_public = rotated["public_key"].as_str().unwrap().to_string();
    assert_ne!(new_public, public);
    d.publish("sig.two", &json!({"n": 2})).await;
    let got = rx.wait_for(2, Duration::from_secs(20)).await;
    let second = got.iter().find(|r| r.json()["event"] == "sig.two").unwrap();
    second.verify_asymmetric(&new_public).unwrap();
    second.verify_asymmetric(&public).unwrap();

    // Off: no v1a entry, no public key.
    let (status, off) = evhost_e2e::status_json(
        d.request(reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"))
            .json(&json!({"asymmetric": false}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{off}");
    assert!(off.get("public_key").is_none(), "{off}");
    d.publish("sig.three", &json!({"n": 3})).await;
    let got = rx.wait_for(3, Duration::from_secs(20)).await;
    let third = got
        .iter()
        .find(|r| r.json()["event"] == "sig.three")
        .unwrap();
    assert!(!third.header("webhook-signature").contains("v1a,"));
    third
        .verify_standard(rotated["secret"].as_str().unwrap())
        .unwrap();
}
