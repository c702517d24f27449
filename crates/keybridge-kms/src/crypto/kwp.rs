//! AES key wrap with padding (RFC 5649 / NIST SP 800-38F KWP).
//!
//! This is the same transformation as PKCS#11 `CKM_AES_KEY_WRAP_PAD`
//! (called `CKM_AES_KEY_WRAP_KWP` in PKCS#11 3.x), so blobs produced here can
//! be unwrapped by an HSM and vice versa. The AES block work is done by the
//! `aes-kw` crate; this module adds the length checks that crate leaves to the
//! caller (notably it would "unwrap" an 8-byte blob to an empty key) and maps
//! failures to [`CryptoError`].

use aes_kw::cipher::{consts::U16, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes_kw::{AesKwp, KwpAes128, KwpAes192, KwpAes256};
use zeroize::Zeroizing;

use super::CryptoError;

/// Size of one AES-KW semiblock; wrapped output is a whole number of these.
const SEMIBLOCK: usize = 8;

/// Largest plaintext RFC 5649 can describe (its length field is 32 bits).
pub const MAX_PLAINTEXT_LEN: usize = u32::MAX as usize;

/// Smallest valid wrapped blob: the integrity block plus one semiblock of data.
pub const MIN_WRAPPED_LEN: usize = 2 * SEMIBLOCK;

/// Length of the blob [`wrap`] produces for `plaintext_len` bytes of key data.
pub fn wrapped_len(plaintext_len: usize) -> usize {
    plaintext_len.div_ceil(SEMIBLOCK) * SEMIBLOCK + SEMIBLOCK
}

/// Wraps `plaintext` (1 to 2^32-1 bytes) under the AES key `kek`
/// (16, 24 or 32 bytes) with AES-KWP.
///
/// The output is [`wrapped_len`]`(plaintext.len())` bytes. Wrapping is
/// deterministic: the same key and data always give the same blob.
pub fn wrap(kek: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::KeyWrapDataLength {
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    match kek.len() {
        16 => wrap_with(&new_kwp::<KwpAes128>(kek)?, plaintext),
        24 => wrap_with(&new_kwp::<KwpAes192>(kek)?, plaintext),
        32 => wrap_with(&new_kwp::<KwpAes256>(kek)?, plaintext),
        len => Err(CryptoError::KeyWrapKeyLength { len }),
    }
}

/// Unwraps an AES-KWP blob produced by [`wrap`] (or by an HSM using
/// `CKM_AES_KEY_WRAP_PAD`) with the AES key `kek`.
///
/// Fails with [`CryptoError::KeyUnwrapFailed`] if the integrity check does not
/// hold, which is what a wrong key or any modification of the blob produces.
pub fn unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if !matches!(kek.len(), 16 | 24 | 32) {
        return Err(CryptoError::KeyWrapKeyLength { len: kek.len() });
    }
    if wrapped.len() < MIN_WRAPPED_LEN {
        return Err(CryptoError::WrappedTooShort { len: wrapped.len() });
    }
    if wrapped.len() % SEMIBLOCK != 0 || wrapped.len() - SEMIBLOCK > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::WrappedBadLength { len: wrapped.len() });
    }
    match kek.len() {
        16 => unwrap_with(&new_kwp::<KwpAes128>(kek)?, wrapped),
        24 => unwrap_with(&new_kwp::<KwpAes192>(kek)?, wrapped),
        _ => unwrap_with(&new_kwp::<KwpAes256>(kek)?, wrapped),
    }
}

fn new_kwp<K: KeyInit>(kek: &[u8]) -> Result<K, CryptoError> {
    K::new_from_slice(kek).map_err(|_| CryptoError::KeyWrapKeyLength { len: kek.len() })
}

fn wrap_with<C>(kwp: &AesKwp<C>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError>
where
    C: BlockCipherEncrypt<BlockSize = U16>,
{
    let mut out = vec![0u8; wrapped_len(plaintext.len())];
    let written = kwp
        .wrap_key(plaintext, &mut out)
        .map_err(|_| CryptoError::KeyWrapDataLength {
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        })?
        .len();
    debug_assert_eq!(written, out.len());
    out.truncate(written);
    Ok(out)
}

fn unwrap_with<C>(kwp: &AesKwp<C>, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>
where
    C: BlockCipherDecrypt<BlockSize = U16>,
{
    // Holds the padded key data; Zeroizing wipes it, padding included.
    let mut buf = Zeroizing::new(vec![0u8; wrapped.len() - SEMIBLOCK]);
    let len = match kwp.unwrap_key(wrapped, &mut buf) {
        Ok(key) => key.len(),
        Err(aes_kw::Error::IntegrityCheckFailed) => return Err(CryptoError::KeyUnwrapFailed),
        Err(_) => return Err(CryptoError::WrappedBadLength { len: wrapped.len() }),
    };
    // The library already checked that the padding bytes are zero, so
    // truncating only drops zeros; the buffer is still wiped on drop.
    buf.truncate(len);
    if buf.is_empty() {
        // Cannot happen for len >= 16 (the length field must then be >= 1), but
        // an empty key is never a legitimate result.
        return Err(CryptoError::KeyUnwrapFailed);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(37).wrapping_add(5))
            .collect()
    }

    #[test]
    fn round_trip_all_key_sizes_and_many_lengths() {
        for kek_len in [16, 24, 32] {
            let k = kek(kek_len);
            for n in 1..=70usize {
                let pt: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
                let w = wrap(&k, &pt).unwrap();
                assert_eq!(w.len(), wrapped_len(n));
                assert_eq!(w.len() % 8, 0);
                assert!(w.len() >= MIN_WRAPPED_LEN);
                assert_eq!(unwrap(&k, &w).unwrap().as_slice(), pt.as_slice());
            }
        }
    }

    #[test]
    fn wrap_is_deterministic() {
        let k = kek(32);
        assert_eq!(wrap(&k, b"abc").unwrap(), wrap(&k, b"abc").unwrap());
    }

    #[test]
    fn bad_kek_length_rejected() {
        for len in [0, 8, 15, 17, 20, 31, 33, 64] {
            assert!(matches!(
                wrap(&kek(len), b"data"),
                Err(CryptoError::KeyWrapKeyLength { len: l }) if l == len
            ));
            assert!(matches!(
                unwrap(&kek(len), &[0u8; 24]),
                Err(CryptoError::KeyWrapKeyLength { len: l }) if l == len
            ));
        }
    }

    #[test]
    fn empty_plaintext_rejected() {
        assert!(matches!(
            wrap(&kek(16), b""),
            Err(CryptoError::KeyWrapDataLength { len: 0, .. })
        ));
    }

    #[test]
    fn short_and_misaligned_blobs_rejected() {
        let k = kek(16);
        for len in [0, 1, 7, 8, 15] {
            assert!(matches!(
                unwrap(&k, &vec![0xA6; len]),
                Err(CryptoError::WrappedTooShort { .. })
            ));
        }
        for len in [17, 23, 25, 31] {
            assert!(matches!(
                unwrap(&k, &vec![0u8; len]),
                Err(CryptoError::WrappedBadLength { .. })
            ));
        }
    }

    /// aes-kw 0.3 on its own accepts the bare 8-byte integrity block
    /// `A65959A6 00000000` as a wrapping of the empty string (no AES call is
    /// made at all). Our length check must stop that.
    #[test]
    fn bare_integrity_block_is_not_an_empty_key() {
        let forged = [0xA6, 0x59, 0x59, 0xA6, 0, 0, 0, 0];
        assert!(matches!(
            unwrap(&kek(16), &forged),
            Err(CryptoError::WrappedTooShort { len: 8 })
        ));
    }

    #[test]
    fn tampering_and_wrong_key_detected() {
        let k = kek(32);
        for n in [1usize, 7, 8, 9, 16, 32, 33, 100] {
            let pt: Vec<u8> = (0..n).map(|i| i as u8 ^ 0x5a).collect();
            let w = wrap(&k, &pt).unwrap();
            for byte in 0..w.len() {
                for bit in [0u8, 3, 7] {
                    let mut t = w.clone();
                    t[byte] ^= 1 << bit;
                    assert!(
                        matches!(unwrap(&k, &t), Err(CryptoError::KeyUnwrapFailed)),
                        "flip of byte {byte} bit {bit} (n={n}) not detected"
                    );
                }
            }
            let mut other = k.clone();
            other[0] ^= 1;
            assert!(matches!(
                unwrap(&other, &w),
                Err(CryptoError::KeyUnwrapFailed)
            ));
            // Truncating or extending by a semiblock must not verify either.
            if w.len() > MIN_WRAPPED_LEN {
                assert!(unwrap(&k, &w[..w.len() - 8]).is_err());
            }
            let mut longer = w.clone();
            longer.extend_from_slice(&[0u8; 8]);
            assert!(unwrap(&k, &longer).is_err());
        }
    }

    #[test]
    fn error_messages_do_not_leak_key_bytes() {
        let k = [0xABu8; 16];
        let w = wrap(&k, &[0xCD; 20]).unwrap();
        let mut t = w.clone();
        t[3] ^= 1;
        let msg = unwrap(&k, &t).unwrap_err().to_string();
        assert!(!msg.to_lowercase().contains("abab"), "{msg}");
        assert!(!msg.to_lowercase().contains("cdcd"), "{msg}");
    }
}
