//! What each `[[kms]]` entry of the configuration file says: the KMS kind
//! and how to reach it. The application's configuration embeds these; the
//! backends read nothing else.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;


/// One `[[kms]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KmsConfig {
    Pkcs11(Pkcs11Config),
    Kmip(KmipConfig),
    Builtin(BuiltinConfig),
}

impl KmsConfig {
    pub fn name(&self) -> &str {
        match self {
            KmsConfig::Pkcs11(c) => &c.name,
            KmsConfig::Kmip(c) => &c.name,
            KmsConfig::Builtin(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            KmsConfig::Pkcs11(_) => "pkcs11",
            KmsConfig::Kmip(_) => "kmip",
            KmsConfig::Builtin(_) => "builtin",
        }
    }
}

fn default_timeout() -> u64 {
    30
}
fn default_ttl() -> u64 {
    300
}

/// `kind = "pkcs11"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    pub name: String,
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Token label. Exactly one of `token` and `uri` is required.
    pub token: Option<String>,
    /// RFC 7512 PKCS#11 URI naming the token (`pkcs11:token=...`).
    pub uri: Option<String>,
    /// Environment variable that holds the user PIN.
    pub pin_env: Option<String>,
    /// File whose first line is the user PIN.
    pub pin_file: Option<PathBuf>,
    /// Upper bound on concurrent sessions (default: the token's own limit,
    /// at most 16).
    pub max_sessions: Option<usize>,
    /// Timeout for one PKCS#11 call, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// How long an unwrapped KEK handle stays cached in the token.
    #[serde(default = "default_ttl")]
    pub kek_cache_ttl_secs: u64,
}

impl Pkcs11Config {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
    pub fn kek_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.kek_cache_ttl_secs)
    }
}

fn default_connect_timeout() -> u64 {
    5
}
fn default_idle_timeout() -> u64 {
    20
}
fn default_max_connections() -> usize {
    8
}

/// `kind = "kmip"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmipConfig {
    pub name: String,
    /// `host:port` (port 5696 if omitted), in priority order; later ones
    /// are failover replicas of the first.
    pub servers: Vec<String>,
    /// CA bundle (PEM) that signed the servers' certificates. Only these
    /// CAs are trusted.
    pub ca: PathBuf,
    /// Client certificate chain (PEM).
    pub cert: PathBuf,
    /// Client private key (PEM, PKCS#8/PKCS#1/SEC1, unencrypted).
    pub key: PathBuf,
    /// Name to verify in the servers' certificates (default: the host part
    /// of each server address).
    pub server_name: Option<String>,
    /// Pin the KMIP version ("2.0", "1.4", ...) instead of negotiating.
    pub version: Option<String>,
    /// Allow the seed's literal flow on servers without Encrypt/Decrypt:
    /// Get of the master key. The key then leaves the appliance.
    #[serde(default)]
    pub allow_key_export: bool,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Timeout of one request/response exchange.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Pooled connections idle longer than this are closed; keep it below
    /// the appliance's own idle timeout (often 30 s).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a decrypted KEK stays cached in (zeroizing) memory.
    #[serde(default = "default_ttl")]
    pub kek_cache_ttl_secs: u64,
}

impl KmipConfig {
    pub fn kek_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.kek_cache_ttl_secs)
    }
}

/// `kind = "builtin"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinConfig {
    pub name: String,
    /// Root key file (32 random bytes, mode 0600), created by `keybridge init`.
    pub root_key: PathBuf,
    /// How long an unwrapped KEK stays cached in (zeroizing) memory.
    #[serde(default = "default_ttl")]
    pub kek_cache_ttl_secs: u64,
}

impl BuiltinConfig {
    pub fn kek_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.kek_cache_ttl_secs)
    }
}
