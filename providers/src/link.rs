//! Link definitions: which provider instance serves an actor's calls to a contract under a
//! link name, and with what configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ActorIdentity, ProviderError};

/// The link name used when an actor or an operator does not pick one.
pub const DEFAULT_LINK_NAME: &str = "default";

/// Per-link configuration: string keys and string values, so that any provider, in any
/// language, can read it. A list is one value with comma-separated items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LinkConfig(pub BTreeMap<String, String>);

impl LinkConfig {
    /// An empty configuration.
    pub fn new() -> Self {
        LinkConfig::default()
    }

    /// Adds a value (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The value of `key`, if set and not blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// The comma-separated items of `key` (empty when unset).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `key` as a duration (`"500ms"`, `"30s"`, `"2m"`), or `default` when unset.
    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration, ProviderError> {
        self.parsed(
            key,
            default,
            parse_duration,
            "a duration",
            "\"500ms\", \"30s\" or \"2m\"",
        )
    }

    /// `key` as a size in bytes (`"1048576"`, `"64KiB"`, `"16MiB"`), or `default`.
    pub fn bytes(&self, key: &str, default: u64) -> Result<u64, ProviderError> {
        self.parsed(
            key,
            default,
            parse_size,
            "a size",
            "\"65536\", \"64KiB\" or \"16MiB\"",
        )
    }

    /// `key` read with `parse`, or `default` when unset; the error names what was expected
    /// and shows `examples`.
    fn parsed<T>(
        &self,
        key: &str,
        default: T,
        parse: fn(&str) -> Option<T>,
        what: &str,
        examples: &str,
    ) -> Result<T, ProviderError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse(v).ok_or_else(|| {
                ProviderError::Config(format!(
                    "`{key}` = {v:?} is not {what}; write it like {examples}"
                ))
            }),
        }
    }

    /// `key` as a boolean (`true`/`false`), or `default`.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ProviderError> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(ProviderError::Config(format!(
                "`{key}` = {v:?} must be \"true\" or \"false\""
            ))),
        }
    }

    /// The value of a required `key`.
    pub fn require(&self, key: &str) -> Result<&str, ProviderError> {
        self.get(key)
            .ok_or_else(|| ProviderError::Config(format!("`{key}` is required")))
    }

    /// Fails if any key is not one of `known`, naming the stray key and the known ones:
    /// a typo in a security setting (an allowlist) must not pass silently.
    pub fn only(&self, known: &[&str]) -> Result<(), ProviderError> {
        for key in self.0.keys() {
            if !known.contains(&key.as_str()) {
                return Err(ProviderError::Config(format!(
                    "unknown key `{key}`; this provider reads {}",
                    if known.is_empty() {
                        "no keys".to_string()
                    } else {
                        known
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            }
        }
        Ok(())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for LinkConfig {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        LinkConfig(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Parses `"250ms"`, `"30s"`, `"2m"`, `"1h"` (or plain seconds, `"30"`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Parses `"65536"`, `"64KiB"`, `"16MiB"`, `"1GiB"` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// What an operator declares: bind `actor` (public key or name) to the provider instance
/// `provider` for `contract_id` under `link_name`, with `config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDefinition {
    /// The actor, by public key or unique name.
    pub actor: String,
    /// The capability contract, e.g. `wasmcloud:keyvalue`.
    pub contract_id: String,
    /// The link name; `default` unless the actor uses another.
    #[serde(default = "default_link_name")]
    pub link_name: String,
    /// The provider instance that serves it (its name in the host configuration).
    pub provider: String,
    /// Per-link configuration, read by the provider.
    #[serde(default)]
    pub config: LinkConfig,
}

fn default_link_name() -> String {
    DEFAULT_LINK_NAME.to_string()
}

/// A link as a provider sees it: the resolved actor, and the link's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The linked actor.
    pub actor: Arc<ActorIdentity>,
    /// The contract.
    pub contract_id: String,
    /// The link name.
    pub link_name: String,
    /// The provider instance's name.
    pub provider: String,
    /// The link's configuration.
    pub config: LinkConfig,
}

impl Link {
    /// The key under which providers keep this link's state.
    pub fn key(&self) -> LinkKey {
        LinkKey {
            actor: self.actor.subject.clone(),
            link_name: self.link_name.clone(),
        }
    }
}

/// Identifies a link inside one provider instance: the actor's public key and the link
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkKey {
    /// The actor's public key.
    pub actor: String,
    /// The link name.
    pub link_name: String,
}

/// Per-link state of a provider, keyed by actor and link name: the building block every
/// provider uses to find what a link configured when a call arrives.
#[derive(Debug)]
pub struct LinkTable<T> {
    contract_id: &'static str,
    links: RwLock<HashMap<LinkKey, Arc<T>>>,
}

impl<T> LinkTable<T> {
    /// An empty table for a provider of `contract_id`.
    pub fn new(contract_id: &'static str) -> Self {
        LinkTable {
            contract_id,
            links: RwLock::new(HashMap::new()),
        }
    }

    /// Stores the state of `link`, replacing any earlier state of the same link.
    pub fn insert(&self, link: &Link, state: T) -> Option<Arc<T>> {
        self.write().insert(link.key(), Arc::new(state))
    }

    /// Removes and returns the state of `link`.
    pub fn remove(&self, link: &Link) -> Option<Arc<T>> {
        self.write().remove(&link.key())
    }

    /// Removes and returns every link's state.
    pub fn drain(&self) -> Vec<Arc<T>> {
        self.write().drain().map(|(_, v)| v).collect()
    }

    /// The state of the link `link_name` of `actor`, or [`ProviderError::NotLinked`].
    pub fn get(&self, actor: &ActorIdentity, link_name: &str) -> Result<Arc<T>, ProviderError> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        links
            .get(&LinkKey {
                actor: actor.subject.clone(),
                link_name: link_name.to_string(),
            })
            .cloned()
            .ok_or_else(|| ProviderError::NotLinked {
                actor: actor.describe(),
                contract_id: self.contract_id.to_string(),
                link_name: link_name.to_string(),
            })
    }

    /// Every link's state.
    pub fn all(&self) -> Vec<Arc<T>> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        links.values().cloned().collect()
    }

    /// How many links the table holds.
    pub fn len(&self) -> usize {
        self.links.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no link is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<LinkKey, Arc<T>>> {
        self.links.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2 weeks"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("99999999999999999999GiB"), None);
        assert_eq!(parse_size("1TiB"), None);
    }

    #[test]
    fn config_lists_and_unknown_keys() {
        let c = LinkConfig::new()
            .with("allow", " a.> , b ,, ")
            .with("max", "1MiB");
        assert_eq!(c.list("allow"), vec!["a.>", "b"]);
        assert!(c.list("missing").is_empty());
        assert_eq!(c.bytes("max", 0).unwrap(), 1 << 20);
        assert!(c.only(&["allow", "max"]).is_ok());
        let err = c.only(&["allow"]).unwrap_err().to_string();
        assert!(err.contains("unknown key `max`"), "{err}");
    }
}
