//! Software cryptographic primitives used by keybridge.
//!
//! Everything here runs in-process and is independent of any HSM:
//!
//! * [`kwp`]: AES key wrap with padding (RFC 5649, NIST SP 800-38F "KWP",
//!   PKCS#11 `CKM_AES_KEY_WRAP_PAD` / `CKM_AES_KEY_WRAP_KWP`).
//! * [`oaep`]: RSA-OAEP encryption under the key-encryption key (KEK), with
//!   import/export in the DER encodings that PKCS#11 tokens exchange.
//!
//! Errors are reported through [`CryptoError`]. Its messages describe the
//! operation that failed and why, but never contain key material.

pub mod kwp;
pub mod oaep;

pub use oaep::{PrivateKek, PublicKek};
pub use keybridge_proto::crypto::{random_array, CryptoError};

use std::fmt;
use std::str::FromStr;


/// Hash function used by RSA-OAEP, both for the label hash and for MGF1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OaepHash {
    /// SHA-1 (what many older HSM configurations default to).
    Sha1,
    /// SHA-256.
    Sha256,
}

impl OaepHash {
    /// Lower-case name, as used in configuration and serialisation.
    pub fn as_str(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "sha1",
            OaepHash::Sha256 => "sha256",
        }
    }

    /// Digest output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            OaepHash::Sha1 => 20,
            OaepHash::Sha256 => 32,
        }
    }
}

impl fmt::Display for OaepHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OaepHash {
    type Err = CryptoError;

    /// Accepts `sha1`/`sha256` case-insensitively, also with a dash (`SHA-256`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sha1" | "sha-1" => Ok(OaepHash::Sha1),
            "sha256" | "sha-256" => Ok(OaepHash::Sha256),
            _ => Err(CryptoError::UnknownOaepHash(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oaep_hash_names_round_trip() {
        for h in [OaepHash::Sha1, OaepHash::Sha256] {
            assert_eq!(h.to_string().parse::<OaepHash>().unwrap(), h);
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(json, format!("\"{h}\""));
            assert_eq!(serde_json::from_str::<OaepHash>(&json).unwrap(), h);
        }
        assert_eq!("SHA-256".parse::<OaepHash>().unwrap(), OaepHash::Sha256);
        assert!(matches!(
            "md5".parse::<OaepHash>(),
            Err(CryptoError::UnknownOaepHash(_))
        ));
        assert!(serde_json::from_str::<OaepHash>("\"SHA1\"").is_err());
    }
}
