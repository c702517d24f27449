//! Secret value types. Each zeroizes on drop and none prints its contents in
//! `Debug`. Converting a secret into bytes that leave the process is always an
//! explicit call (`expose_*`).

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

pub use secrecy::{ExposeSecret, SecretString};

/// Length of a data-encryption key in bytes (AES-256).
pub const DEK_LEN: usize = 32;

/// A data-encryption key. Never printed, zeroized on drop, and not `Clone`:
/// a move leaves no copy behind, so where the key lives is where it was
/// passed.
#[derive(Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Dek([u8; DEK_LEN]);

impl Dek {
    /// A fresh DEK from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, crate::crypto::CryptoError> {
        let bytes = crate::crypto::random_array::<DEK_LEN>()?;
        Ok(Dek(*bytes))
    }

    /// Wrap existing key bytes.
    pub fn from_bytes(bytes: [u8; DEK_LEN]) -> Self {
        Dek(bytes)
    }

    /// The raw key, for encryption or sealing.
    pub fn expose(&self) -> &[u8; DEK_LEN] {
        &self.0
    }

    /// Lower-case hex of the key, for the client-side `dek open` output.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

impl PartialEq for Dek {
    fn eq(&self, other: &Self) -> bool {
        // Constant-time comparison; only tests compare DEKs.
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}
impl Eq for Dek {}

/// Read a secret (PIN or password) from a file: the first line, without the
/// trailing newline. The file is read into zeroizing memory.
pub fn read_secret_file(path: &std::path::Path, what: &'static str) -> crate::Result<SecretString> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|source| crate::Error::Io {
        context: what,
        path: path.to_owned(),
        source,
    })?);
    let text = std::str::from_utf8(&raw).map_err(|_| crate::Error::Config {
        path: path.to_owned(),
        reason: format!("{what} file is not UTF-8"),
    })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(crate::Error::Config {
            path: path.to_owned(),
            reason: format!("{what} file is empty"),
        });
    }
    Ok(SecretString::from(line.to_owned()))
}
