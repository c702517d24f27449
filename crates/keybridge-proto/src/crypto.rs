//! The software primitives' error type and the operating system CSPRNG,
//! shared by every layer that draws random bytes.

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

    /// An OAEP hash name (keybridge-kms's `OaepHash`) could not be parsed.
    #[error("unknown OAEP hash {0:?}: expected \"sha1\" or \"sha256\"")]
    UnknownOaepHash(String),
}

/// Returns `N` bytes from the operating system CSPRNG, in a buffer that is
/// wiped when dropped.
pub fn random_array<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; N]);
    fill_random(out.as_mut_slice())?;
    Ok(out)
}

/// Fills `buf` from the operating system CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
