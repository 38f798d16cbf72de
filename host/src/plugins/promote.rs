//! Promoting a shadow: its file and sidecar become the plugin's it ran beside, that
//! version is loaded from them, and it replaces the serving version and the shadow
//! in one swap of the live set, so every event runs on either the old set or the
//! new one: none is lost or handled twice.
//!
//! The new sidecar is the serving version's with the shadow's keys over it (its
//! `[config]` whole), less `mode` and `shadow_of`. Until the swap, the files the
//! serving version came from are kept aside and put back if the load fails.

use std::path::{Path, PathBuf};

use super::loader::{Fresh, PluginError, Plugins, load_version, valid_name};
use super::{Mode, PluginStatus};

/// The files of one promotion, for putting things back.
struct Files {
    dir: PathBuf,
    target: String,
    shadow: String,
    /// Whether the target had a sidecar and a file before (`toml`, `wasm`).
    had: [bool; 2],
}

impl Files {
    fn path(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }

    fn aside(&self, ext: &str) -> PathBuf {
        self.dir
            .join(format!(".{}.{ext}.before-promote", self.target))
    }

    /// Writes the target's new sidecar and file, keeping the old ones aside.
    fn write(&self) -> Result<(), PluginError> {
        let sidecar = merged_sidecar(
            &self.path(&self.target, "toml"),
            &self.path(&self.shadow, "toml"),
        )?;
        let staged_toml = self.dir.join(format!(".{}.toml.promoting", self.target));
        let staged_wasm = self.dir.join(format!(".{}.wasm.promoting", self.target));
        std::fs::write(&staged_toml, sidecar).map_err(|e| io(&staged_toml, e))?;
        std::fs::copy(self.path(&self.shadow, "wasm"), &staged_wasm)
            .map_err(|e| io(&staged_wasm, e))?;
        for ext in ["toml", "wasm"] {
            let current = self.path(&self.target, ext);
            if current.exists() {
                std::fs::rename(&current, self.aside(ext)).map_err(|e| io(&current, e))?;
            }
        }
        std::fs::rename(&staged_toml, self.path(&self.target, "toml"))
            .map_err(|e| io(&staged_toml, e))?;
        std::fs::rename(&staged_wasm, self.path(&self.target, "wasm"))
            .map_err(|e| io(&staged_wasm, e))?;
        Ok(())
    }

    /// Puts the target's previous files back (the promotion failed).
    fn restore(&self) {
        for (ext, had) in ["toml", "wasm"].into_iter().zip(self.had) {
            let _ =
                std::fs::remove_file(self.dir.join(format!(".{}.{ext}.promoting", self.target)));
            let aside = self.aside(ext);
            if aside.exists() {
                let _ = std::fs::rename(&aside, self.path(&self.target, ext));
            } else if !had {
                let _ = std::fs::remove_file(self.path(&self.target, ext));
            }
        }
    }

    /// Removes the shadow's files and what was kept aside (the swap is done).
    fn finish(&self) {
        for ext in ["toml", "wasm"] {
            let _ = std::fs::remove_file(self.path(&self.shadow, ext));
            let _ = std::fs::remove_file(self.aside(ext));
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> PluginError {
    PluginError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The serving sidecar with the shadow's keys over it, less `mode` and `shadow_of`.
fn merged_sidecar(serving: &Path, shadow: &Path) -> Result<String, PluginError> {
    let read = |path: &Path| -> Result<toml::Table, PluginError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                PluginError::Info(format!("{} is not valid TOML: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
            Err(e) => Err(io(path, e)),
        }
    };
    let mut table = read(serving)?;
    table.remove("shadow_of");
    for (key, value) in read(shadow)? {
        if key != "mode" && key != "shadow_of" {
            table.insert(key, value);
        }
    }
    if table.get("mode").and_then(|m| m.as_str()) == Some("shadow") {
        table.remove("mode");
    }
    toml::to_string(&table).map_err(|e| PluginError::Info(format!("the new sidecar: {e}")))
}

impl Plugins {
    /// Makes the shadow `name` (or the one beside the plugin `name`) the serving
    /// version of the plugin it ran beside. Returns that plugin's status.
    pub async fn promote(&self, name: &str) -> Result<PluginStatus, PluginError> {
        if !valid_name(name) {
            return Err(PluginError::BadName(name.to_string()));
        }
        let _guard = self.loading.lock().await;
        let shadow = self
            .registry
            .shadow(name)
            .filter(|s| s.manifest.mode == Mode::Shadow)
            .ok_or_else(|| PluginError::NoShadow(name.to_string()))?;
        let target = shadow.manifest.shadow_of.clone().unwrap_or_default();
        let dir = self.registry.dir.clone();
        let had = ["toml", "wasm"].map(|ext| dir.join(format!("{target}.{ext}")).exists());
        let files = std::sync::Arc::new(Files {
            dir,
            target: target.clone(),
            shadow: shadow.name.clone(),
            had,
        });
        let (registry, runtime, job_files) =
            (self.registry.clone(), self.runtime.clone(), files.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            if let Err(error) = job_files.write() {
                job_files.restore();
                return Err(error);
            }
            match load_version(&registry, &runtime, &job_files.target, true) {
                Ok(Fresh::Loaded(loaded) | Fresh::Unchanged(loaded)) => Ok(loaded),
                Err(error) => {
                    job_files.restore();
                    Err(error)
                }
            }
        })
        .await
        .unwrap_or_else(|e| Err(PluginError::Runtime(format!("promotion panicked: {e}"))))?;
        self.registry.promote(loaded.clone(), &shadow.name);
        files.finish();
        tracing::info!(plugin = %target, version = %loaded.info.version, hash = %&loaded.hash[..12], from = %shadow.name, "shadow promoted: it serves now");
        let details = serde_json::json!({
            "version": loaded.info.version,
            "plugin_name": loaded.info.name,
            "file_hash": loaded.hash,
            "mode": loaded.manifest.mode,
            "priority": loaded.manifest.priority,
            "promoted_from": shadow.name,
        });
        self.record(&target, "loaded", details).await;
        let details = serde_json::json!({ "promoted_into": target });
        self.record(&shadow.name, "unloaded", details).await;
        Ok(self
            .registry
            .status(&target)
            .expect("a promoted plugin has a status"))
    }

    /// How the shadow `name` (or the one beside the plugin `name`) compares.
    pub fn shadow_report(&self, name: &str) -> Option<super::shadow::ShadowReport> {
        self.registry.shadow_report(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_sidecar_is_the_serving_one_with_the_shadows_keys_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let serving = dir.path().join("a.toml");
        let shadow = dir.path().join("b.toml");
        std::fs::write(
            &serving,
            "priority = 10\non_error = \"drop\"\n[config]\nthreshold = 5\nold = 1\n",
        )
        .unwrap();
        std::fs::write(
            &shadow,
            "mode = \"shadow\"\nshadow_of = \"a\"\ntimeout = \"20ms\"\n[config]\nthreshold = 3\n",
        )
        .unwrap();
        let merged: toml::Table =
            toml::from_str(&merged_sidecar(&serving, &shadow).unwrap()).unwrap();
        assert_eq!(merged["priority"].as_integer(), Some(10));
        assert_eq!(merged["on_error"].as_str(), Some("drop"));
        assert_eq!(merged["timeout"].as_str(), Some("20ms"));
        assert_eq!(merged["config"]["threshold"].as_integer(), Some(3));
        assert!(
            merged["config"].get("old").is_none(),
            "the shadow's config is taken whole"
        );
        assert!(merged.get("mode").is_none() && merged.get("shadow_of").is_none());
        // Neither file: an empty sidecar.
        let none = merged_sidecar(&dir.path().join("x.toml"), &dir.path().join("y.toml")).unwrap();
        assert_eq!(none.trim(), "");
    }
}
