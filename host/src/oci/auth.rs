//! Where registry credentials come from: `[[registries]]` in `host.toml`, the
//! `SIGIL_REGISTRY_*` environment variables, and Docker's `config.json`.

use std::path::{Path, PathBuf};

use oci_client::secrets::RegistryAuth;

use super::RegistryError;

/// How to reach one registry: `[[registries]]` in `host.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// The registry's host, with its port when not the default (`localhost:5000`).
    pub host: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// A PEM file of certificate authorities trusted for this registry, besides the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// User name for basic authentication (with `password_file`).
    pub username: Option<String>,
    /// A file holding the password (one line).
    pub password_file: Option<PathBuf>,
    /// A file holding a bearer token, sent as it is.
    pub token_file: Option<PathBuf>,
}

/// The credentials for one registry, and where they came from (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) auth: RegistryAuth,
    pub(crate) source: String,
}

impl Credentials {
    fn anonymous() -> Self {
        Credentials {
            auth: RegistryAuth::Anonymous,
            source: "none (anonymous)".into(),
        }
    }
}

fn read_secret(path: &Path, what: &str, host: &str) -> Result<String, RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Credentials {
        registry: host.to_string(),
        reason: format!("cannot read its {what} file {}: {e}", path.display()),
    })?;
    let secret = text.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        return Err(RegistryError::Credentials {
            registry: host.to_string(),
            reason: format!("its {what} file {} is empty", path.display()),
        });
    }
    Ok(secret)
}

/// Credentials from a `[[registries]]` entry, if it has any.
pub(crate) fn from_settings(s: &RegistrySettings) -> Result<Option<Credentials>, RegistryError> {
    if let Some(token) = &s.token_file {
        return Ok(Some(Credentials {
            auth: RegistryAuth::Bearer(read_secret(token, "token", &s.host)?),
            source: format!("token_file {}", token.display()),
        }));
    }
    match (&s.username, &s.password_file) {
        (Some(user), Some(file)) => Ok(Some(Credentials {
            auth: RegistryAuth::Basic(user.clone(), read_secret(file, "password", &s.host)?),
            source: format!("username {user:?} with password_file {}", file.display()),
        })),
        (None, None) => Ok(None),
        _ => Err(RegistryError::Credentials {
            registry: s.host.clone(),
            reason: "its [[registries]] entry needs both username and password_file (or \
                     token_file alone)"
                .into(),
        }),
    }
}

/// Credentials from `SIGIL_REGISTRY_USER` and `SIGIL_REGISTRY_PASSWORD` (or
/// `SIGIL_REGISTRY_TOKEN`), for the registry named by `SIGIL_REGISTRY` or, when that is
/// unset, for any registry.
pub(crate) fn from_env(
    host: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, RegistryError> {
    if let Some(only) = var("SIGIL_REGISTRY").filter(|v| !v.is_empty())
        && !same_host(&only, host)
    {
        return Ok(None);
    }
    if let Some(token) = var("SIGIL_REGISTRY_TOKEN").filter(|v| !v.is_empty()) {
        return Ok(Some(Credentials {
            auth: RegistryAuth::Bearer(token),
            source: "SIGIL_REGISTRY_TOKEN".into(),
        }));
    }
    match (
        var("SIGIL_REGISTRY_USER").filter(|v| !v.is_empty()),
        var("SIGIL_REGISTRY_PASSWORD"),
    ) {
        (Some(user), Some(password)) => Ok(Some(Credentials {
            source: format!("SIGIL_REGISTRY_USER {user:?} and SIGIL_REGISTRY_PASSWORD"),
            auth: RegistryAuth::Basic(user, password),
        })),
        (None, None) | (None, Some(_)) => Ok(None),
        (Some(_), None) => Err(RegistryError::Credentials {
            registry: host.to_string(),
            reason: "SIGIL_REGISTRY_USER is set but SIGIL_REGISTRY_PASSWORD is not".into(),
        }),
    }
}

/// The Docker configuration file: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub(crate) fn docker_config_path(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = var("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::home_dir().map(|h| h.join(".docker").join("config.json"))
}

#[derive(serde::Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// The host part of a key of `auths`: keys may be `host`, `https://host` or
/// `https://host/v1/`.
fn auths_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn same_host(a: &str, b: &str) -> bool {
    let canon = |h: &str| match h {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_ascii_lowercase(),
    };
    canon(auths_host(a)) == canon(auths_host(b))
}

/// Credentials for `host` from a Docker `config.json`, where `docker login` (and `oras
/// login`, `helm registry login`) keep them. A missing file means none.
pub(crate) fn from_docker_config(
    path: &Path,
    host: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError::Credentials {
                registry: host.to_string(),
                reason: format!("cannot read {}: {e}", path.display()),
            });
        }
    };
    let bad = |reason: String| RegistryError::Credentials {
        registry: host.to_string(),
        reason: format!("{}: {reason}", path.display()),
    };
    let config: DockerConfig =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Some((key, entry)) = config.auths.iter().find(|(k, _)| same_host(k, host)) else {
        let helper = config
            .cred_helpers
            .iter()
            .find(|(k, _)| same_host(k, host))
            .map(|(_, v)| v.clone())
            .or(config.creds_store.clone());
        if let Some(helper) = helper {
            tracing::warn!(
                registry = host,
                helper,
                "{}: credentials for this registry are kept by a credential helper, which \
                 Sigil does not run; give them in [[registries]] or SIGIL_REGISTRY_* instead",
                path.display()
            );
        }
        return Ok(None);
    };
    let source = format!("{} (auths entry {key:?})", path.display());
    if let Some(token) = entry.registrytoken.clone().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials {
            auth: RegistryAuth::Bearer(token),
            source,
        }));
    }
    let (user, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(auth), _, _) if !auth.is_empty() => {
            let decoded = data_encoding::BASE64
                .decode(auth.trim().as_bytes())
                .map_err(|e| bad(format!("the auth of entry {key:?} is not base64: {e}")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| bad(format!("the auth of entry {key:?} is not UTF-8")))?;
            let (u, p) = decoded.split_once(':').ok_or_else(|| {
                bad(format!(
                    "the auth of entry {key:?} is not base64 of USER:PASSWORD"
                ))
            })?;
            (u.to_string(), p.to_string())
        }
        (_, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return Ok(None),
    };
    Ok(Some(Credentials {
        auth: RegistryAuth::Basic(user, password),
        source,
    }))
}

/// The credentials for `host`, first found of: its `[[registries]]` entry, the
/// environment, Docker's `config.json`; anonymous when none has any.
pub(crate) fn resolve(
    host: &str,
    settings: Option<&RegistrySettings>,
    docker_config: Option<&Path>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, RegistryError> {
    if let Some(c) = settings.map(from_settings).transpose()?.flatten() {
        return Ok(c);
    }
    if let Some(c) = from_env(host, &var)? {
        return Ok(c);
    }
    if let Some(path) = docker_config
        && let Some(c) = from_docker_config(path, host)?
    {
        return Ok(c);
    }
    Ok(Credentials::anonymous())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn docker_config_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = data_encoding::BASE64.encode(b"alice:s3cret");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"https://reg.example:5000/v1/": {{"auth": "{auth}"}},
                    "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}}}}}}"#
            ),
        )
        .unwrap();
        let c = from_docker_config(&path, "reg.example:5000")
            .unwrap()
            .unwrap();
        assert!(matches!(c.auth, RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret"));
        let c = from_docker_config(&path, "docker.io").unwrap().unwrap();
        assert!(matches!(c.auth, RegistryAuth::Basic(u, _) if u == "bob"));
        assert!(from_docker_config(&path, "other:5000").unwrap().is_none());
        assert!(
            from_docker_config(&dir.path().join("none.json"), "x")
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, r#"{"auths": {"h": {"auth": "!!"}}}"#).unwrap();
        let e = from_docker_config(&path, "h").unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("not base64"), "{e}");
    }

    #[test]
    fn precedence_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let settings = RegistrySettings {
            host: "r:5000".into(),
            username: Some("u".into()),
            password_file: Some(pw.clone()),
            ..Default::default()
        };
        let vars = [
            ("SIGIL_REGISTRY_USER", "e"),
            ("SIGIL_REGISTRY_PASSWORD", "p"),
        ];
        let c = resolve("r:5000", Some(&settings), None, env(&vars)).unwrap();
        assert!(matches!(c.auth, RegistryAuth::Basic(_, p) if p == "from-file"));
        let c = resolve("r:5000", None, None, env(&vars)).unwrap();
        assert!(matches!(c.auth, RegistryAuth::Basic(u, _) if u == "e"));
        let scoped = [("SIGIL_REGISTRY", "other:1"), vars[0], vars[1]];
        let c = resolve("r:5000", None, None, env(&scoped)).unwrap();
        assert!(matches!(c.auth, RegistryAuth::Anonymous));
        let e = resolve("r:5000", None, None, env(&vars[..1]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SIGIL_REGISTRY_PASSWORD is not"), "{e}");
        let half = RegistrySettings {
            username: Some("u".into()),
            ..settings.clone()
        };
        let half = RegistrySettings {
            password_file: None,
            ..half
        };
        let e = resolve("r:5000", Some(&half), None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r:5000") && e.contains("password_file"), "{e}");
        let missing = RegistrySettings {
            password_file: Some(dir.path().join("absent")),
            ..settings
        };
        let e = resolve("r:5000", Some(&missing), None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent"), "{e}");
    }
}
