//! Reading a configuration: the YAML file, the plan's nesting, values from the
//! environment, and error messages that name the key and the value.

use std::path::Path;

use serde_json::Value;

use super::{API_TOKEN_ENV, Config, ConfigError, ENV_PREFIX, Scope, TokenConfig};

pub(super) fn mask(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    format!("{shown}****")
}

/// Hides the password of a URL such as `postgres://user:secret@host/db`.
pub(super) fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

pub(super) fn read_yaml_file(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(&text, path)
}

/// The YAML text of a config file (named `path` in errors) as a tree of keys.
pub(super) fn parse_yaml(text: &str, path: &Path) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Default::default())),
        other => Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            message: format!("the top level must be a mapping of keys, found {other}"),
        }),
    }
}

/// The configuration a file's tree and the environment give, checked.
pub(super) fn build(
    mut tree: Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    hoist_seed_sections(&mut tree)?;
    let mut api_token = None;
    for (var, raw) in env {
        if var == API_TOKEN_ENV {
            api_token = Some(raw);
            continue;
        }
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") && rest != "DATA_DIR" {
            // EVHOST_CONFIG, EVHOST_URL, EVHOST_TOKEN and the like belong to the CLI.
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let value: Value = parse_env_value(&raw).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        set_path(&mut tree, &path, value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
    }
    let mut config: Config =
        serde_path_to_error::deserialize(&tree).map_err(|e| ConfigError::Invalid {
            key: path_to_key(e.path()),
            message: explain(e.inner().to_string(), lookup(&tree, e.path())),
        })?;
    if let Some(token) = api_token {
        config.auth.tokens.push(TokenConfig {
            name: "env".into(),
            token,
            scopes: [Scope::Publish, Scope::Read, Scope::Admin].into(),
            trusted: true,
            rate_per_second: None,
            burst: None,
        });
    }
    config.check()?;
    if let Some(queue_size) = config.events.queue_size.take() {
        config.events.max_lag = queue_size;
    }
    Ok(config)
}

/// Moves the plan's `events.audit` and `events.webhooks` to the top level.
fn hoist_seed_sections(tree: &mut Value) -> Result<(), ConfigError> {
    for section in ["audit", "webhooks"] {
        let nested = tree
            .get_mut("events")
            .and_then(Value::as_object_mut)
            .and_then(|events| events.remove(section));
        if let Some(nested) = nested {
            let root = tree.as_object_mut().expect("checked to be a mapping");
            if root.contains_key(section) {
                return Err(ConfigError::Invalid {
                    key: section.into(),
                    message: format!(
                        "given both as `{section}` and as `events.{section}`; keep one"
                    ),
                });
            }
            root.insert(section.into(), nested);
        }
    }
    Ok(())
}

/// Reads an environment value as YAML, so `8`, `true` and `[1s, 5s]` get their types;
/// anything YAML cannot read is taken as a plain string.
fn parse_env_value(raw: &str) -> Result<Value, String> {
    if raw.trim().is_empty() {
        return Ok(Value::String(String::new()));
    }
    match serde_saphyr::from_str::<Value>(raw) {
        Ok(Value::Null) => Ok(Value::String(raw.to_string())),
        Ok(Value::Object(_)) => Ok(Value::String(raw.to_string())),
        Ok(value) => Ok(value),
        Err(_) => Ok(Value::String(raw.to_string())),
    }
}

fn set_path(tree: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let mut node = tree;
    for (i, part) in path.iter().enumerate() {
        if part.is_empty() {
            return Err("has an empty key segment".into());
        }
        let map = node
            .as_object_mut()
            .ok_or_else(|| format!("`{}` is not a section", path[..i].join(".")))?;
        if i + 1 == path.len() {
            map.insert(part.clone(), value);
            return Ok(());
        }
        node = map
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

fn path_to_key(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } | Segment::Enum { variant: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
            }
            Segment::Unknown => {}
        }
    }
    if key.is_empty() {
        "(top level)".into()
    } else {
        key
    }
}

fn lookup<'a>(tree: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    let mut node = tree;
    for segment in path.iter() {
        node = match segment {
            Segment::Seq { index } => node.get(*index)?,
            Segment::Map { key } => node.get(key)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Adds the offending value to serde's message.
fn explain(message: String, value: Option<&Value>) -> String {
    match value {
        Some(v) if !v.is_object() => format!("value {v} is not allowed: {message}"),
        _ => message,
    }
}
