//! The TOML configuration (`--config PATH` or `KEYBRIDGE_CONFIG`).
//!
//! Relative paths in the file are resolved against the directory that holds
//! the file, so a config can be moved together with its catalog and keys.
//! Unknown keys are refused: a typo must not silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use keybridge_kms::config::{BuiltinConfig, KmipConfig, KmsConfig, Pkcs11Config};

use crate::{Error, Result};

/// Default name of the configuration file.
pub const DEFAULT_CONFIG: &str = "keybridge.toml";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub kms: Vec<KmsConfig>,
    /// `[service]`: needed only by `keybridge serve`.
    pub service: Option<ServiceConfig>,
    /// `[lifecycle]`: key rotation schedule.
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// Where the file was read from (not a TOML key).
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[catalog]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// SQLite database file.
    pub path: PathBuf,
    /// The SHA-256 of each pool's public KEK once this host checked it
    /// against the KMS (see `flows::backup`): a file the catalog's writers
    /// cannot reach, next to the configuration by default.
    #[serde(default = "default_kek_pins")]
    pub kek_pins: PathBuf,
}

/// `[lifecycle]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Days between master-key rotations of a pool that sets none itself;
    /// `keybridge serve` rotates pools that are due. 0 turns scheduled
    /// rotation off.
    #[serde(default = "default_rotation_days")]
    pub rotation_days: u32,
    /// How often `keybridge serve` looks for pools due for rotation.
    #[serde(default = "default_rotation_check_secs")]
    pub rotation_check_secs: u64,
    /// At most this many pools rotated per check.
    #[serde(default = "default_rotations_per_check")]
    pub rotations_per_check: usize,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig { rotation_days: default_rotation_days(), rotation_check_secs: default_rotation_check_secs(), rotations_per_check: default_rotations_per_check() }
    }
}

fn default_rotation_days() -> u32 {
    90
}
fn default_rotation_check_secs() -> u64 {
    3600
}
fn default_rotations_per_check() -> usize {
    16
}

fn default_kek_pins() -> PathBuf {
    PathBuf::from("kek-pins.json")
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_skew() -> u64 {
    300
}
fn default_health_interval() -> u64 {
    10
}
fn default_grace() -> u64 {
    30
}

/// `[service]`: the adapter service (`keybridge serve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `host:port` to listen on (HTTPS).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Server certificate chain (PEM); `keybridge init` makes a self-signed
    /// one for localhost.
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// File holding the operator bearer token (first line; mode 0600).
    pub operator_token_file: PathBuf,
    /// Base URL of the MediaAgent clients are told to stream to.
    pub media_agent: String,
    /// File holding the key shared with the MediaAgent (64 hex digits, mode
    /// 0600), with which the service signs each job's upload and download
    /// tokens (see `api::agent_token`).
    pub media_agent_key_file: PathBuf,
    /// Largest accepted difference between a client's clock and ours; also
    /// how long used request nonces are remembered.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// How often every KMS is probed for `/healthz`.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: u64,
    /// How long shutdown waits for in-flight requests.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
}


impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_owned(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parse configuration text; `path` is used for messages and to resolve
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let bad = |reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        let mut config: Config = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.source = path.to_owned();
        config.catalog.path = base.join(&config.catalog.path);
        config.catalog.kek_pins = base.join(&config.catalog.kek_pins);
        let mut seen = std::collections::HashSet::new();
        for kms in &mut config.kms {
            if keybridge_proto::error::check_name("KMS name", kms.name()).is_err() {
                return Err(bad(format!(
                    "[[kms]] name '{}' must be 1-64 letters, digits, '.', '_' or '-'",
                    kms.name()
                )));
            }
            if !seen.insert(kms.name().to_owned()) {
                return Err(bad(format!("[[kms]] name '{}' appears twice", kms.name())));
            }
            match kms {
                KmsConfig::Pkcs11(c) => {
                    match (&c.token, &c.uri) {
                        (Some(_), None) | (None, Some(_)) => {}
                        _ => {
                            return Err(bad(format!(
                                "[[kms]] '{}': give exactly one of `token` and `uri`",
                                c.name
                            )))
                        }
                    }
                    match (&c.pin_env, &c.pin_file) {
                        (Some(_), None) | (None, Some(_)) => {}
                        _ => {
                            return Err(bad(format!(
                                "[[kms]] '{}': give exactly one of `pin_env` and `pin_file`",
                                c.name
                            )))
                        }
                    }
                    if let Some(f) = &mut c.pin_file {
                        *f = base.join(&*f);
                    }
                    if c.max_sessions == Some(0) {
                        return Err(bad(format!("[[kms]] '{}': max_sessions must be at least 1", c.name)));
                    }
                }
                KmsConfig::Kmip(c) => {
                    if c.servers.is_empty() {
                        return Err(bad(format!("[[kms]] '{}': `servers` must name at least one host:port", c.name)));
                    }
                    for p in [&mut c.ca, &mut c.cert, &mut c.key] {
                        *p = base.join(&*p);
                    }
                }
                KmsConfig::Builtin(c) => c.root_key = base.join(&c.root_key),
            }
        }
        if let Some(svc) = &mut config.service {
            for p in [&mut svc.cert, &mut svc.key, &mut svc.operator_token_file, &mut svc.media_agent_key_file] {
                *p = base.join(&*p);
            }
            if svc.listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(bad(format!("[service] listen '{}' is not an address like 127.0.0.1:8443", svc.listen)));
            }
            if !(svc.media_agent.starts_with("http://") || svc.media_agent.starts_with("https://")) {
                return Err(bad(format!("[service] media_agent '{}' must be an http:// or https:// URL", svc.media_agent)));
            }
        }
        Ok(config)
    }

    /// The `[[kms]]` entry with this name.
    pub fn kms(&self, name: &str) -> Result<&KmsConfig> {
        self.kms.iter().find(|k| k.name() == name).ok_or_else(|| Error::NotFound {
            what: "KMS (no [[kms]] entry in the configuration)",
            name: name.to_owned(),
        })
    }

    /// The configuration written by `keybridge init` when none exists: the
    /// embedded default, built-in KMS and SQLite catalog beside the file.
    pub fn default_text() -> &'static str {
        "# keybridge configuration written by `keybridge init`.\n\
         # See keybridge.toml.example for every key.\n\
         [catalog]\n\
         path = \"keybridge.db\"\n\
         \n\
         [[kms]]\n\
         name = \"builtin\"\n\
         kind = \"builtin\"\n\
         root_key = \"root.key\"\n\
         \n\
         [service]\n\
         listen = \"127.0.0.1:8443\"\n\
         cert = \"service.crt\"\n\
         key = \"service.key\"\n\
         operator_token_file = \"operator.token\"\n\
         media_agent = \"https://127.0.0.1:8444\"\n\
         media_agent_key_file = \"media-agent.key\"\n"
    }
}
