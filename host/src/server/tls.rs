//! TLS from files (`server.tls.cert`, `server.tls.key`, PEM), with rustls. The files
//! are read at start (a bad pair stops the start) and watched: when either changes,
//! the pair is read again and new connections get it; a pair that does not load is
//! logged and the previous one kept, so a half-written renewal never takes the API
//! down.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ServerConfig as RustlsConfig, version};

/// `server.tls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM (leaf first).
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds no {what} in PEM")]
    Empty { path: PathBuf, what: &'static str },
    #[error("the key in {key} does not fit the certificate in {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The pair in use, swapped when the files change.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Reads the pair into a key rustls can serve.
fn load(config: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(&config.cert)?;
    let key_pem = read(&config.key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::Empty {
            path: config.cert.clone(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Empty {
        path: config.key.clone(),
        what: "private key",
    })?;
    let mismatch = |message: String| TlsError::Mismatch {
        cert: config.cert.clone(),
        key: config.key.clone(),
        message,
    };
    let provider = default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(certified)
}

/// When the files were last changed, as far as the pair is concerned.
fn stamp(config: &TlsConfig) -> Option<(SystemTime, u64, SystemTime, u64)> {
    let c = std::fs::metadata(&config.cert).ok()?;
    let k = std::fs::metadata(&config.key).ok()?;
    Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
}

/// Loads the pair and returns the acceptor; a task started here reads the files
/// again when they change, until `stop`.
pub fn acceptor(
    config: TlsConfig,
    stop: tokio_util::sync::CancellationToken,
) -> Result<TlsAcceptor, TlsError> {
    let current = Arc::new(Current(ArcSwap::from_pointee(load(&config)?)));
    let mut server = RustlsConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let watched = current;
    tokio::spawn(async move {
        let mut seen = stamp(&config);
        let mut tried = seen;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&config);
            if now.is_none() || now == seen || now == tried {
                continue;
            }
            tried = now;
            match load(&config) {
                Ok(pair) => {
                    watched.0.store(Arc::new(pair));
                    seen = now;
                    tracing::info!(cert = %config.cert.display(), "TLS certificate reloaded");
                }
                // Perhaps half-written: keep the old pair; the next change is tried.
                Err(error) => tracing::warn!(
                    error = %crate::error_chain(&error),
                    "the changed TLS files do not load; still serving the previous certificate"
                ),
            }
        }
    });
    Ok(TlsAcceptor::from(Arc::new(server)))
}
