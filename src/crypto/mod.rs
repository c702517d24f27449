//! Software cryptographic primitives used by keybridge.
//!
//! Everything here runs in-process and is independent of any HSM:
//!
//! * [`kwp`]: AES key wrap with padding (RFC 5649, NIST SP 800-38F "KWP",
//!   PKCS#11 `CKM_AES_KEY_WRAP_PAD` / `CKM_AES_KEY_WRAP_KWP`).
//! * [`oaep`]: RSA-OAEP encryption under the key-encryption key (KEK), with
//!   import/export in the DER encodings that PKCS#11 tokens exchange.
//! * [`random_array`] / [`fill_random`]: the operating system CSPRNG.
//!
//! Errors are reported through [`CryptoError`]. Its messages describe the
//! operation that failed and why, but never contain key material.

pub mod kwp;
pub mod oaep;

pub use oaep::{PrivateKek, PublicKek};

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

/// Errors from the software crypto primitives.
///
/// Messages never include key bytes, plaintext or other secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The AES key-encryption key handed to wrap/unwrap has an unusable length.
    #[error("AES key wrap: key-encryption key must be 16, 24 or 32 bytes, got {len}")]
    KeyWrapKeyLength {
        /// Length of the key that was supplied.
        len: usize,
    },

    /// The key data to wrap is empty or larger than AES-KWP allows.
    #[error("AES key wrap: key data must be 1 to {max} bytes, got {len}")]
    KeyWrapDataLength {
        /// Length of the data that was supplied.
        len: usize,
        /// Largest length accepted.
        max: usize,
    },

    /// The wrapped blob is shorter than the smallest possible AES-KWP output.
    #[error("AES key unwrap: wrapped key is {len} bytes, at least 16 are required")]
    WrappedTooShort {
        /// Length of the blob that was supplied.
        len: usize,
    },

    /// The wrapped blob is not a whole number of 8-byte semiblocks, or is too long.
    #[error(
        "AES key unwrap: wrapped key length {len} is not a multiple of 8 bytes or is too large"
    )]
    WrappedBadLength {
        /// Length of the blob that was supplied.
        len: usize,
    },

    /// The AES-KWP integrity check failed.
    #[error("AES key unwrap: integrity check failed (wrong key-encryption key or tampered blob)")]
    KeyUnwrapFailed,

    /// An RSA public key could not be decoded or is not acceptable.
    #[error("invalid RSA public key: {0}")]
    InvalidPublicKey(String),

    /// An RSA private key could not be decoded or is not acceptable.
    #[error("invalid RSA private key: {0}")]
    InvalidPrivateKey(String),

    /// A key could not be serialised.
    #[error("RSA key encoding failed: {0}")]
    KeyEncoding(String),

    /// RSA-OAEP decryption failed. Deliberately carries no detail: distinguishing
    /// padding failures from other failures would open a Manger-style oracle.
    #[error("RSA-OAEP decryption failed (wrong key, wrong hash/label, or corrupted ciphertext)")]
    OaepDecryptFailed,

    /// RSA-OAEP encryption failed.
    #[error("RSA-OAEP encryption failed: {0}")]
    OaepEncryptFailed(String),

    /// RSA key-pair generation failed or was asked for an unsupported size.
    #[error("RSA key generation failed: {0}")]
    KeyGeneration(String),

    /// The operating system random number generator failed.
    #[error("operating system random number generator failed: {0}")]
    Random(String),

    /// An [`OaepHash`] name could not be parsed.
    #[error("unknown OAEP hash {0:?}: expected \"sha1\" or \"sha256\"")]
    UnknownOaepHash(String),
}

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

/// Returns `N` bytes from the operating system CSPRNG, in a buffer that is
/// wiped when dropped.
pub fn random_array<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; N]);
    fill_random(out.as_mut_slice())?;
    Ok(out)
}

/// Constant-time equality of two byte strings. Lengths are compared in the
/// open: they are never secret where this is used.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fills `buf` from the operating system CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
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

    #[test]
    fn random_is_not_constant() {
        let a = random_array::<32>().unwrap();
        let b = random_array::<32>().unwrap();
        assert_ne!(*a, *b);
        assert_ne!(*a, [0u8; 32]);

        let mut buf = [0u8; 0];
        fill_random(&mut buf).unwrap();
    }
}
