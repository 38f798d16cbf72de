//! Bearer tokens with scopes. Presented tokens are hashed and compared against every
//! configured token in constant time, so neither timing nor the order of tokens tells
//! an attacker anything. Tokens never reach a log line.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::rate::Limiter;
use crate::config::{Scope, TokenConfig};

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name; `None` when the API runs open (no tokens, loopback only).
    pub name: Option<Arc<str>>,
    pub trusted: bool,
    /// The token's rate limit, if it has one.
    pub limiter: Option<Arc<Limiter>>,
}

struct Entry {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Vec<Scope>,
    trusted: bool,
    limiter: Option<Arc<Limiter>>,
}

pub struct Auth {
    entries: Vec<Entry>,
    /// Whether any token has a rate limit (else a request's token is not looked
    /// up for one).
    limited: bool,
}

impl Auth {
    pub fn new(tokens: &[TokenConfig]) -> Auth {
        Auth {
            limited: tokens.iter().any(|t| t.rate_per_second.is_some()),
            entries: tokens
                .iter()
                .map(|t| {
                    let name: Arc<str> = t.name.as_str().into();
                    Entry {
                        limiter: t
                            .rate_per_second
                            .map(|rate| Arc::new(Limiter::new(name.clone(), rate, t.burst))),
                        name,
                        digest: Sha256::digest(t.token.as_bytes()).into(),
                        scopes: t.scopes.iter().copied().collect(),
                        trusted: t.trusted,
                    }
                })
                .collect(),
        }
    }

    /// With no token configured the API is open, which the daemon allows on loopback only.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks the request's bearer token for `scope`.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<Principal, ApiError> {
        if self.is_open() {
            return Ok(Principal {
                name: None,
                trusted: true,
                limiter: None,
            });
        }
        let entry = self.entry(headers)?;
        if !entry.scopes.contains(&scope) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {:?} lacks the `{}` scope needed here",
                    &*entry.name,
                    scope.as_str()
                ),
            ));
        }
        Ok(Principal {
            name: Some(entry.name.clone()),
            trusted: entry.trusted,
            limiter: entry.limiter.clone(),
        })
    }

    /// Who the request's token is and what it may do: `(None, every scope)` when
    /// the API is open; 401 without a known token. Any scope will do, so a
    /// client can ask before it knows which it has.
    pub fn identify(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Option<Arc<str>>, Vec<Scope>), ApiError> {
        if self.is_open() {
            return Ok((None, vec![Scope::Publish, Scope::Read, Scope::Admin]));
        }
        let entry = self.entry(headers)?;
        Ok((Some(entry.name.clone()), entry.scopes.clone()))
    }

    /// The configured token the request bears, or 401 (none, or not a known one).
    fn entry(&self, headers: &HeaderMap) -> Result<&Entry, ApiError> {
        let presented = bearer(headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs a token: send `Authorization: Bearer <token>`",
            )
        })?;
        self.find(presented).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not valid",
            )
        })
    }

    /// The rate limit of the token the request bears, if it is a known token with one.
    pub fn limiter(&self, headers: &HeaderMap) -> Option<&Arc<Limiter>> {
        if !self.limited {
            return None;
        }
        self.find(bearer(headers)?)?.limiter.as_ref()
    }

    /// The entry whose token is `presented`. Every entry is compared, whatever
    /// matched, so timing does not reveal which.
    fn find(&self, presented: &str) -> Option<&Entry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }
}

/// Whether the request's bearer token is `secret` (compared in constant time).
pub fn presents(headers: &HeaderMap, secret: &str) -> bool {
    let Some(presented) = bearer(headers) else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let expected: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    bool::from(presented.ct_eq(&expected))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether the daemon may listen on `addr` with this auth: an open API only on loopback.
pub fn check_listen(auth: &Auth, addr: &SocketAddr) -> Result<(), String> {
    if auth.is_open() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {addr} with no API token configured: anyone who can reach it could publish. \
             Set EVHOST_API_TOKEN (or auth.tokens in the config), or listen on 127.0.0.1"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(&[
            TokenConfig {
                name: "smtp".into(),
                token: "publish-token-0001".into(),
                scopes: [Scope::Publish].into(),
                trusted: false,
                rate_per_second: None,
                burst: None,
            },
            TokenConfig {
                name: "ops".into(),
                token: "admin-token-000002".into(),
                scopes: [Scope::Read, Scope::Admin].into(),
                trusted: true,
                rate_per_second: None,
                burst: None,
            },
        ])
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn right_token_and_scope_pass() {
        let p = auth()
            .authorize(&headers("Bearer publish-token-0001"), Scope::Publish)
            .unwrap();
        assert_eq!(p.name.as_deref(), Some("smtp"));
        assert!(!p.trusted);
        let p = auth()
            .authorize(&headers("bearer admin-token-000002"), Scope::Read)
            .unwrap();
        assert!(p.trusted);
    }

    #[test]
    fn wrong_scope_is_403_and_bad_token_401() {
        let e = auth()
            .authorize(&headers("Bearer publish-token-0001"), Scope::Read)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = auth()
            .authorize(&headers("Bearer nope-nope-nope-nope"), Scope::Read)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = auth()
            .authorize(&HeaderMap::new(), Scope::Read)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = auth()
            .authorize(&headers("Basic publish-token-0001"), Scope::Publish)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn identify_names_the_token_and_its_scopes() {
        let (name, scopes) = auth()
            .identify(&headers("Bearer admin-token-000002"))
            .unwrap();
        assert_eq!(name.as_deref(), Some("ops"));
        assert_eq!(scopes, vec![Scope::Read, Scope::Admin]);
        let e = auth()
            .identify(&headers("Bearer unknown-token-00"))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let (name, scopes) = Auth::new(&[]).identify(&HeaderMap::new()).unwrap();
        assert_eq!((name, scopes.len()), (None, 3));
    }

    #[test]
    fn open_api_only_on_loopback() {
        let open = Auth::new(&[]);
        assert!(check_listen(&open, &"127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(check_listen(&open, &"[::1]:1".parse().unwrap()).is_ok());
        assert!(check_listen(&open, &"0.0.0.0:1".parse().unwrap()).is_err());
        assert!(check_listen(&auth(), &"0.0.0.0:1".parse().unwrap()).is_ok());
    }
}
