//! Webhook secrets and signatures.
//!
//! Each request carries two signatures so both kinds of receiver can check it:
//! - the platform plan's `X-ESP-Signature: sha256=<hex>`: HMAC-SHA256 of the body,
//!   keyed with the secret string exactly as shown (`whsec_…` included);
//! - Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-signature:
//!   v1,<base64>` over `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the
//!   base64-decoded part after `whsec_`. The timestamp lets receivers reject replays.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
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
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| encoded.as_bytes().to_vec());
    let timestamp = timestamp.to_string();
    let mac = hmac(
        &key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(mac))
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
}
