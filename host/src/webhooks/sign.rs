//! Webhook secrets and signatures.
//!
//! Each request carries two signatures so both kinds of receiver can check it:
//! - the platform plan's `X-ESP-Signature: sha256=<hex>`: HMAC-SHA256 of the body,
//!   keyed with the secret string exactly as shown (`whsec_…` included);
//! - Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-signature:
//!   v1,<base64>` over `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the
//!   base64-decoded part after `whsec_`. The timestamp lets receivers reject replays.
//! - for an endpoint with `asymmetric` on, also Standard Webhooks' `v1a,<base64>`: an
//!   Ed25519 signature of the same content, checked with the endpoint's public key
//!   (`whpk_…`), so a receiver that holds only that key cannot sign. The key pair is
//!   derived from the endpoint's secret (HMAC-SHA256 of a fixed label), so it is
//!   sealed at rest with it and rotates with it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Every secret starts with this, as in Standard Webhooks.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new random secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system's random source works");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The `X-ESP-Signature` value: `sha256=<hex HMAC-SHA256(secret string, body)>`.
pub fn esp_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &[body])))
}

/// One `webhook-signature` entry, `v1,<base64>`. Secrets evhost made always decode;
/// a secret that does not (never stored by evhost) signs with its raw bytes.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = hmac(&key_of(secret), &[&signed_content(id, timestamp, body)]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// What both Standard Webhooks signatures cover: `{webhook-id}.{webhook-timestamp}.{body}`.
fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// The prefix of a public key, as in Standard Webhooks.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// The bytes a secret keys with: the base64 after `whsec_` (raw bytes for a secret
/// evhost did not make).
fn key_of(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| encoded.as_bytes().to_vec())
}

/// The Ed25519 key pair of an endpoint, derived from its secret.
fn signing_key(secret: &str) -> SigningKey {
    SigningKey::from_bytes(&hmac(&key_of(secret), &[b"evhost webhook v1a ed25519"]))
}

/// The public key receivers check `v1a` signatures with: `whpk_<base64>`.
pub fn public_key(secret: &str) -> String {
    let key = signing_key(secret).verifying_key();
    format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(key.as_bytes()))
}

/// One asymmetric `webhook-signature` entry, `v1a,<base64 Ed25519 signature>` over
/// `{webhook-id}.{webhook-timestamp}.{body}`.
pub fn asymmetric_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = signing_key(secret).sign(&signed_content(id, timestamp, body));
    format!("v1a,{}", STANDARD.encode(signature.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_base64() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        let key = STANDARD
            .decode(a.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
    }

    #[test]
    fn esp_signature_is_hex_hmac_of_the_body() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            esp_signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_signature_matches_the_specification_example() {
        // The example in the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn asymmetric_signatures_verify_with_the_public_key_only() {
        use ed25519_dalek::{Signature, Verifier, VerifyingKey};
        let secret = new_secret();
        let public = public_key(&secret);
        let key: [u8; 32] = STANDARD
            .decode(public.strip_prefix(PUBLIC_KEY_PREFIX).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = VerifyingKey::from_bytes(&key).unwrap();
        let entry = asymmetric_signature(&secret, "msg_1", 1614265330, b"{}");
        let signature: [u8; 64] = STANDARD
            .decode(entry.strip_prefix("v1a,").unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let signature = Signature::from_bytes(&signature);
        assert!(key.verify(b"msg_1.1614265330.{}", &signature).is_ok());
        assert!(key.verify(b"msg_1.1614265331.{}", &signature).is_err());
        // Another secret, another key.
        assert_ne!(public_key(&new_secret()), public);
    }
}
