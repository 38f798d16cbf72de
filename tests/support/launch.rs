//! How a black-box test starts the daemon: its options, and the process.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Backend, evhost_bin};

/// Daemon settings for one test, as `EVHOST_…` environment variables.
#[derive(Default, Clone)]
pub struct Options {
    pub env: Vec<(String, String)>,
    /// Token the helper methods send.
    pub token: Option<String>,
    /// A YAML config file to write into the daemon's folder and pass as EVHOST_CONFIG.
    pub config_yaml: Option<String>,
    /// The daemon serves HTTPS (`server.tls` set by the test); the client trusts
    /// these PEM certificates and talks to `https://localhost:<port>`.
    pub tls_roots: Vec<Vec<u8>>,
    /// The daemon sees this file as its `/etc/hosts` (a mount namespace of its own;
    /// see [`private_hosts_supported`]). The test may rewrite it in place.
    pub hosts_file: Option<std::path::PathBuf>,
}

impl Options {
    pub fn env(mut self, key: &str, value: impl ToString) -> Options {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn config_yaml(mut self, yaml: &str) -> Options {
        self.config_yaml = Some(yaml.to_string());
        self
    }

    /// Runs the daemon on `backend`'s database.
    pub fn backend(self, backend: &Backend) -> Options {
        match backend {
            Backend::Sqlite => self,
            // Daemons sharing a database share the key that seals webhook secrets,
            // as an operator's fleet must.
            Backend::Postgres { url, schema } => self
                .env("EVHOST_DATABASE__URL", url)
                .env("EVHOST_DATABASE__SCHEMA", schema)
                .env(
                    "EVHOST_WEBHOOKS__SECRET_KEY_FILE",
                    backend.secret_key_file().display(),
                ),
        }
    }

    /// Webhook settings for tests: receivers on 127.0.0.1 allowed, short polls,
    /// retries in milliseconds.
    pub fn webhooks_local(self) -> Options {
        self.env("EVHOST_WEBHOOKS__ALLOWED_NETWORKS", "[127.0.0.0/8]")
            .env("EVHOST_WEBHOOKS__POLL_INTERVAL", "100ms")
            .env("EVHOST_WEBHOOKS__RETRY_DELAYS", "[100ms, 300ms]")
            .env("EVHOST_WEBHOOKS__TIMEOUT", "2s")
    }

    /// Talks HTTPS to the daemon, trusting `root_pem` (a self-signed certificate).
    pub fn trust(mut self, root_pem: &[u8]) -> Options {
        self.tls_roots.push(root_pem.to_vec());
        self
    }

    /// Runs the daemon with `path` as its `/etc/hosts`, so a test decides what names
    /// resolve to, and when.
    pub fn hosts_file(mut self, path: &std::path::Path) -> Options {
        self.hosts_file = Some(path.to_path_buf());
        self
    }

    pub fn token(mut self, token: &str) -> Options {
        self.token = Some(token.to_string());
        self
    }
}

/// An HTTP client for a daemon started with `options` (trusting its certificates).
pub(crate) fn client_for(options: &Options) -> reqwest::Client {
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(20));
    for pem in &options.tls_roots {
        client = client
            .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
            .tls_info(true);
    }
    client.build().unwrap()
}

pub(crate) fn spawn(dir: &tempfile::TempDir, port: u16, options: &Options) -> Child {
    {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("daemon.log"))
            .unwrap();
        let mut command = match &options.hosts_file {
            None => Command::new(evhost_bin()),
            Some(hosts) => {
                // unshare execs the shell, which execs evhost: the child is the daemon.
                let mut command = unshare_mount();
                command
                    .args(["sh", "-c", r#"mount --bind "$0" /etc/hosts && exec "$@""#])
                    .arg(hosts)
                    .arg(evhost_bin());
                command
            }
        };
        command
            .arg("serve")
            .env_remove("EVHOST_CONFIG")
            .env_remove("EVHOST_API_TOKEN")
            .env("EVHOST_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("EVHOST_DATA_DIR", dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(yaml) = &options.config_yaml {
            let path = dir.path().join("evhost.yaml");
            std::fs::write(&path, yaml).unwrap();
            command.env("EVHOST_CONFIG", path);
        }
        for (k, v) in &options.env {
            command.env(k, v);
        }
        command.spawn().expect("start evhost")
    }
}

/// `unshare --mount`, as root, or in a user namespace of its own otherwise.
fn unshare_mount() -> Command {
    let mut command = Command::new("unshare");
    command.arg("--mount");
    if !nix::unistd::geteuid().is_root() {
        command.arg("--map-root-user");
    }
    command
}

/// Whether this machine lets a process have a private `/etc/hosts` (a mount
/// namespace with a bind mount), which [`Options::hosts_file`] needs.
pub fn private_hosts_supported() -> bool {
    unshare_mount()
        .args(["sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
