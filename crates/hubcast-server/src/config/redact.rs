//! The effective configuration as `hubcast config` prints it: TOML, with
//! every secret replaced. A key is a secret by its name (`key`, `secret`,
//! `password`, `token`, or ending in `_secret`, `_password`, `_token`), so a
//! new section's secrets (webhook signing secrets…) are covered when they are
//! named that way; a password inside a URL (`postgres://user:PASS@host`) is
//! replaced wherever it appears.

use serde_json::Value;

use super::Config;

/// What a secret is printed as.
pub const REDACTED: &str = "[redacted]";

impl Config {
    /// The configuration as TOML, secrets redacted, unset options left out.
    pub fn to_redacted_toml(&self) -> String {
        let mut value = serde_json::to_value(self).expect("config serializes");
        redact(&mut value, None);
        toml::to_string(&value).expect("a config without nulls is TOML")
    }
}

fn is_secret_key(name: &str) -> bool {
    matches!(name, "key" | "secret" | "password" | "token")
        || ["_secret", "_password", "_token"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// Redacts in place and drops nulls (TOML has none).
fn redact(value: &mut Value, key: Option<&str>) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for (name, v) in map.iter_mut() {
                redact(v, Some(name));
            }
        }
        Value::Array(items) => {
            items.retain(|v| !v.is_null());
            for v in items {
                redact(v, key);
            }
        }
        Value::String(s) => {
            if key.is_some_and(is_secret_key) {
                *s = REDACTED.to_owned();
            } else if let Some(clean) = url_without_password(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// `scheme://user:PASS@host…` → `scheme://user:[redacted]@host…` (each of a
/// comma-separated list of URLs, as a NATS bus may be); `None` when there is
/// no password.
pub(crate) fn url_without_password(text: &str) -> Option<String> {
    let mut changed = false;
    let parts: Vec<String> = text
        .split(',')
        .map(|part| {
            let Some((scheme, rest)) = part.split_once("://") else {
                return part.to_owned();
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let Some((userinfo, host)) = authority.rsplit_once('@') else {
                return part.to_owned();
            };
            let Some((user, _password)) = userinfo.split_once(':') else {
                return part.to_owned();
            };
            changed = true;
            format!("{scheme}://{user}:{REDACTED}@{host}{tail}")
        })
        .collect();
    changed.then(|| parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ApiKeyConfig, JwtKeyConfig};

    #[test]
    fn secrets_and_url_passwords_are_redacted() {
        let mut config = Config {
            store: "postgres://app:hunter2hunter2@db:5432/hubcast?sslmode=require"
                .to_owned()
                .try_into()
                .unwrap(),
            bus: "nats://u:natspw@n1:4222,nats://n2:4222"
                .to_owned()
                .try_into()
                .unwrap(),
            ..Config::default()
        };
        config.auth.api_keys.push(ApiKeyConfig {
            key: Some("sixteen-chars-key-1".into()),
            key_env: Some("HUBCAST_KEY_VAR".into()),
            name: Some("backend".into()),
            ..Default::default()
        });
        config.auth.jwt.push(JwtKeyConfig {
            alg: "HS256".into(),
            secret: Some("a-very-long-shared-secret-of-32-bytes".into()),
            ..Default::default()
        });
        let printed = config.to_redacted_toml();
        for secret in ["hunter2", "natspw", "sixteen-chars", "very-long-shared"] {
            assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
        }
        for kept in [
            "postgres://app:[redacted]@db:5432/hubcast?sslmode=require",
            "nats://u:[redacted]@n1:4222,nats://n2:4222",
            "HUBCAST_KEY_VAR",
            "backend",
            "listen = \"127.0.0.1:8787\"",
        ] {
            assert!(printed.contains(kept), "{kept} in:\n{printed}");
        }
        // What is printed reads back as a configuration (secrets aside).
        let _: toml::Value = toml::from_str(&printed).expect("valid TOML");
    }

    #[test]
    fn secret_key_names() {
        for name in [
            "key",
            "secret",
            "password",
            "token",
            "signing_secret",
            "db_password",
        ] {
            assert!(is_secret_key(name), "{name}");
        }
        for name in [
            "key_file",
            "key_env",
            "secret_env",
            "secret_file",
            "name",
            "rooms",
        ] {
            assert!(!is_secret_key(name), "{name}");
        }
    }
}
