//! RSA-OAEP under the key-encryption key (KEK).
//!
//! [`PublicKek`] encrypts, [`PrivateKek`] decrypts. OAEP always uses the same
//! hash for the label and for MGF1 (the `CKM_RSA_PKCS_OAEP` parameter sets
//! keybridge supports: SHA-1/MGF1-SHA-1 and SHA-256/MGF1-SHA-256). The label
//! is empty unless the `*_with_label` variants are used.
//!
//! Key formats are the ones PKCS#11 tokens exchange: SubjectPublicKeyInfo DER
//! or raw modulus/exponent for public keys, unencrypted PKCS#8 DER for private
//! keys. Keys smaller than [`MIN_BITS`] are refused.

use std::fmt;

use rsa::pkcs8::der::{self, Header, Reader, SliceReader, Tag};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, Oaep, PrivateKey, PublicKey};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{CryptoError, OaepHash};

/// Smallest RSA modulus, in bits, accepted for a KEK.
pub const MIN_BITS: usize = 2048;

/// Modulus sizes [`PrivateKek::generate`] accepts.
pub const GENERATE_BITS: [usize; 3] = [2048, 3072, 4096];

fn modulus_bits(key: &PublicKey) -> usize {
    key.n().bit_width() as usize
}

/// Largest message OAEP can carry under a `modulus_bytes`-byte key (RFC 8017 §7.1.1).
fn max_message_len(modulus_bytes: usize, hash: OaepHash) -> usize {
    modulus_bytes.saturating_sub(2 * hash.output_len() + 2)
}

/// Public half of an RSA key-encryption key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKek {
    key: PublicKey,
}

impl fmt::Debug for PublicKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKek")
            .field("bits", &self.bits())
            .finish()
    }
}

impl PublicKek {
    fn checked(key: PublicKey) -> Result<Self, CryptoError> {
        let bits = modulus_bits(&key);
        if bits < MIN_BITS {
            return Err(CryptoError::InvalidPublicKey(format!(
                "modulus is {bits} bits, at least {MIN_BITS} are required"
            )));
        }
        Ok(Self { key })
    }

    /// Decodes an X.509 SubjectPublicKeyInfo (DER) holding an `rsaEncryption` key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key = PublicKey::from_public_key_der(der).map_err(|e| {
            CryptoError::InvalidPublicKey(format!("cannot decode SubjectPublicKeyInfo DER: {e}"))
        })?;
        Self::checked(key)
    }

    /// Builds a key from big-endian modulus and public exponent, as read from
    /// PKCS#11 `CKA_MODULUS` / `CKA_PUBLIC_EXPONENT`. Leading zero bytes are ignored.
    pub fn from_components(
        modulus_be: &[u8],
        public_exponent_be: &[u8],
    ) -> Result<Self, CryptoError> {
        let n = strip_leading_zeros(modulus_be);
        let e = strip_leading_zeros(public_exponent_be);
        if n.is_empty() {
            return Err(CryptoError::InvalidPublicKey(
                "modulus is zero or empty".into(),
            ));
        }
        if e.is_empty() {
            return Err(CryptoError::InvalidPublicKey(
                "public exponent is zero or empty".into(),
            ));
        }
        let key = PublicKey::new(
            BoxedUint::from_be_slice_vartime(n),
            BoxedUint::from_be_slice_vartime(e),
        )
        .map_err(|err| CryptoError::InvalidPublicKey(format!("bad modulus/exponent: {err}")))?;
        Self::checked(key)
    }

    /// Encodes the key as X.509 SubjectPublicKeyInfo DER (`rsaEncryption`, NULL parameters).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.key
            .to_public_key_der()
            .map(|doc| doc.into_vec())
            .map_err(|e| CryptoError::KeyEncoding(format!("SubjectPublicKeyInfo: {e}")))
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        modulus_bits(&self.key)
    }

    /// Big-endian modulus without leading zeros (compare with `CKA_MODULUS`).
    pub fn modulus_be(&self) -> Vec<u8> {
        self.key.n_bytes().into_vec()
    }

    /// Big-endian public exponent without leading zeros (compare with `CKA_PUBLIC_EXPONENT`).
    pub fn public_exponent_be(&self) -> Vec<u8> {
        self.key.e_bytes().into_vec()
    }

    /// Largest plaintext [`encrypt`](Self::encrypt) accepts with `hash`.
    pub fn max_plaintext_len(&self, hash: OaepHash) -> usize {
        max_message_len(self.key.size(), hash)
    }

    /// RSA-OAEP encrypts `plaintext` with `hash` for both OAEP and MGF1 and an empty label.
    pub fn encrypt(&self, hash: OaepHash, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.encrypt_with_label(hash, &[], plaintext)
    }

    /// As [`encrypt`](Self::encrypt), binding the ciphertext to `label`.
    pub fn encrypt_with_label(
        &self,
        hash: OaepHash,
        label: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let max = self.max_plaintext_len(hash);
        if plaintext.len() > max {
            return Err(CryptoError::OaepEncryptFailed(format!(
                "plaintext is {} bytes, RSA-{} with OAEP-{hash} carries at most {max}",
                plaintext.len(),
                self.bits()
            )));
        }
        let mut rng = getrandom::SysRng;
        let result = match hash {
            OaepHash::Sha1 => {
                self.key
                    .encrypt(&mut rng, Oaep::<Sha1>::new_with_label(label), plaintext)
            }
            OaepHash::Sha256 => {
                self.key
                    .encrypt(&mut rng, Oaep::<Sha256>::new_with_label(label), plaintext)
            }
        };
        result.map_err(|e| match e {
            rsa::Error::Rng => CryptoError::Random("while generating the OAEP seed".into()),
            other => CryptoError::OaepEncryptFailed(other.to_string()),
        })
    }
}

/// Private RSA key-encryption key.
///
/// The key material is wiped when the value is dropped (the `rsa` crate
/// zeroizes its private components). `Debug` shows only the size.
pub struct PrivateKek {
    key: PrivateKey,
}

impl fmt::Debug for PrivateKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKek")
            .field("bits", &self.bits())
            .finish()
    }
}

// `rsa::PrivateKey` zeroizes itself on drop and is the only field.
impl zeroize::ZeroizeOnDrop for PrivateKek {}

impl PrivateKek {
    fn checked(key: PrivateKey) -> Result<Self, CryptoError> {
        let bits = modulus_bits(key.as_public_key());
        if bits < MIN_BITS {
            return Err(CryptoError::InvalidPrivateKey(format!(
                "modulus is {bits} bits, at least {MIN_BITS} are required"
            )));
        }
        Ok(Self { key })
    }

    /// Generates a fresh key pair with public exponent 65537 from the OS CSPRNG.
    /// `bits` must be one of [`GENERATE_BITS`] (2048, 3072, 4096).
    pub fn generate(bits: usize) -> Result<Self, CryptoError> {
        if !GENERATE_BITS.contains(&bits) {
            return Err(CryptoError::KeyGeneration(format!(
                "unsupported modulus size {bits}; use 2048, 3072 or 4096"
            )));
        }
        let key = PrivateKey::new(&mut getrandom::SysRng, bits).map_err(|e| match e {
            rsa::Error::Rng => CryptoError::Random("while generating RSA primes".into()),
            other => CryptoError::KeyGeneration(other.to_string()),
        })?;
        let got = modulus_bits(key.as_public_key());
        if got != bits {
            return Err(CryptoError::KeyGeneration(format!(
                "asked for a {bits}-bit modulus, got {got} bits"
            )));
        }
        Ok(Self { key })
    }

    /// Decodes an unencrypted PKCS#8 `PrivateKeyInfo` (DER) holding an RSA key.
    ///
    /// Zero bytes after the end of the DER structure are tolerated: SoftHSM2
    /// (and other tokens) zero-pad the PKCS#8 encoding to a multiple of the
    /// wrapping block size before `C_WrapKey`, and RFC 5649 unwrapping cannot
    /// tell that padding from data. The real end is found from the outer DER
    /// length; any non-zero byte after it is an error.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let end = der_sequence_end(der).map_err(CryptoError::InvalidPrivateKey)?;
        if der[end..].iter().any(|&b| b != 0) {
            return Err(CryptoError::InvalidPrivateKey(format!(
                "{} bytes follow the PKCS#8 structure and they are not all zero",
                der.len() - end
            )));
        }
        let key = PrivateKey::from_pkcs8_der(&der[..end]).map_err(|e| {
            CryptoError::InvalidPrivateKey(format!("cannot decode PKCS#8 RSA key: {e}"))
        })?;
        Self::checked(key)
    }

    /// Encodes the key as unencrypted PKCS#8 `PrivateKeyInfo` DER.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let doc = self
            .key
            .to_pkcs8_der()
            .map_err(|e| CryptoError::KeyEncoding(format!("PKCS#8: {e}")))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKek {
        PublicKek {
            key: self.key.to_public_key(),
        }
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        modulus_bits(self.key.as_public_key())
    }

    /// Decrypts an RSA-OAEP ciphertext (`hash` for OAEP and MGF1, empty label).
    pub fn decrypt(
        &self,
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.decrypt_with_label(hash, &[], ciphertext)
    }

    /// As [`decrypt`](Self::decrypt), for ciphertexts bound to `label`.
    ///
    /// Every failure other than an RNG failure is reported as the same
    /// [`CryptoError::OaepDecryptFailed`], so callers cannot become a padding
    /// oracle by accident. The private operation is blinded.
    ///
    /// Note: `rsa` 0.10.0 does not check that the leading octet of the encoded
    /// message is zero (RFC 8017 §7.1.2 step 3g); the label-hash, padding and
    /// separator checks still apply. See `tests/vectors.rs`.
    pub fn decrypt_with_label(
        &self,
        hash: OaepHash,
        label: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let result = match hash {
            OaepHash::Sha1 => self
                .key
                .decrypt(Oaep::<Sha1>::new_with_label(label), ciphertext),
            OaepHash::Sha256 => self
                .key
                .decrypt(Oaep::<Sha256>::new_with_label(label), ciphertext),
        };
        match result {
            Ok(pt) => Ok(Zeroizing::new(pt)),
            Err(rsa::Error::Rng) => Err(CryptoError::Random(
                "while generating RSA blinding factors".into(),
            )),
            Err(_) => Err(CryptoError::OaepDecryptFailed),
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Returns the length of the DER SEQUENCE at the start of `der` (header plus
/// contents), reading only its outer header with `der`; the contents are
/// validated later by the real decoder.
fn der_sequence_end(der: &[u8]) -> Result<usize, String> {
    let read = |e: der::Error| format!("PKCS#8 DER cannot be read: {e}");
    let mut reader = SliceReader::new(der).map_err(read)?;
    let header = Header::peek(&reader).map_err(read)?;
    if header.tag() != Tag::Sequence {
        return Err(format!(
            "PKCS#8 must start with a DER SEQUENCE (0x30), found tag 0x{:02x}",
            der[0]
        ));
    }
    reader.tlv_bytes().map(<[u8]>::len).map_err(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One 2048-bit key shared by the tests; generation is the slow part.
    fn key() -> &'static PrivateKek {
        static KEY: OnceLock<PrivateKek> = OnceLock::new();
        KEY.get_or_init(|| PrivateKek::generate(2048).unwrap())
    }

    #[test]
    fn generate_has_requested_size_and_e_65537() {
        let k = key();
        assert_eq!(k.bits(), 2048);
        assert_eq!(k.public().bits(), 2048);
        assert_eq!(k.public().public_exponent_be(), vec![0x01, 0x00, 0x01]);
    }

    #[test]
    fn generate_larger_sizes() {
        for bits in [3072, 4096] {
            let k = PrivateKek::generate(bits).unwrap();
            assert_eq!(k.bits(), bits);
            let ct = k.public().encrypt(OaepHash::Sha256, b"kek test").unwrap();
            assert_eq!(ct.len(), bits / 8);
            let pt = k.decrypt(OaepHash::Sha256, &ct).unwrap();
            assert_eq!(pt.as_slice(), b"kek test");
        }
    }

    #[test]
    fn generate_rejects_odd_sizes() {
        for bits in [0, 512, 1024, 2047, 2049, 8192] {
            assert!(matches!(
                PrivateKek::generate(bits),
                Err(CryptoError::KeyGeneration(_))
            ));
        }
    }

    #[test]
    fn oaep_round_trip_both_hashes() {
        let k = key();
        let p = k.public();
        for hash in [OaepHash::Sha1, OaepHash::Sha256] {
            for len in [0usize, 1, 32, p.max_plaintext_len(hash)] {
                let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let ct = p.encrypt(hash, &pt).unwrap();
                assert_eq!(ct.len(), 256);
                assert_eq!(k.decrypt(hash, &ct).unwrap().as_slice(), pt.as_slice());
                // Randomised: a second encryption differs.
                assert_ne!(ct, p.encrypt(hash, &pt).unwrap());
            }
            let too_long = vec![0u8; p.max_plaintext_len(hash) + 1];
            assert!(matches!(
                p.encrypt(hash, &too_long),
                Err(CryptoError::OaepEncryptFailed(_))
            ));
        }
    }

    #[test]
    fn oaep_detects_wrong_hash_label_and_tampering() {
        let k = key();
        let p = k.public();
        let ct = p.encrypt(OaepHash::Sha256, b"data key").unwrap();
        assert!(matches!(
            k.decrypt(OaepHash::Sha1, &ct),
            Err(CryptoError::OaepDecryptFailed)
        ));
        assert!(matches!(
            k.decrypt_with_label(OaepHash::Sha256, b"x", &ct),
            Err(CryptoError::OaepDecryptFailed)
        ));
        let labelled = p
            .encrypt_with_label(OaepHash::Sha256, b"ctx", b"data key")
            .unwrap();
        assert_eq!(
            k.decrypt_with_label(OaepHash::Sha256, b"ctx", &labelled)
                .unwrap()
                .as_slice(),
            b"data key"
        );
        assert!(k.decrypt(OaepHash::Sha256, &labelled).is_err());
        for i in [0usize, 1, 100, 255] {
            let mut t = ct.clone();
            t[i] ^= 0x40;
            assert!(matches!(
                k.decrypt(OaepHash::Sha256, &t),
                Err(CryptoError::OaepDecryptFailed)
            ));
        }
        assert!(k.decrypt(OaepHash::Sha256, &ct[1..]).is_err());
        assert!(k.decrypt(OaepHash::Sha256, &[]).is_err());
    }

    #[test]
    fn public_key_encodings_round_trip() {
        let p = key().public();
        let spki = p.to_spki_der().unwrap();
        assert_eq!(PublicKek::from_spki_der(&spki).unwrap(), p);
        let from_parts =
            PublicKek::from_components(&p.modulus_be(), &p.public_exponent_be()).unwrap();
        assert_eq!(from_parts, p);
        // PKCS#11 tokens sometimes hand back a sign byte or a 4-byte exponent.
        let mut n = vec![0u8];
        n.extend(p.modulus_be());
        assert_eq!(PublicKek::from_components(&n, &[0, 1, 0, 1]).unwrap(), p);
        assert_eq!(format!("{p:?}"), "PublicKek { bits: 2048 }");
    }

    #[test]
    fn public_key_rejects_garbage() {
        let p = key().public();
        assert!(matches!(
            PublicKek::from_spki_der(b"not der"),
            Err(CryptoError::InvalidPublicKey(_))
        ));
        assert!(PublicKek::from_components(&[], &[1, 0, 1]).is_err());
        assert!(PublicKek::from_components(&p.modulus_be(), &[0, 0]).is_err());
        assert!(PublicKek::from_components(&p.modulus_be(), &[2]).is_err()); // even e
        let mut even = p.modulus_be();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(PublicKek::from_components(&even, &[1, 0, 1]).is_err());
        // 1024-bit modulus (any odd number will do): below MIN_BITS.
        let mut small = vec![0xffu8; 128];
        small[127] = 0xfb;
        let err = PublicKek::from_components(&small, &[1, 0, 1]).unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{err}");
    }

    #[test]
    fn pkcs8_round_trip() {
        let k = key();
        let der = k.to_pkcs8_der().unwrap();
        let back = PrivateKek::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.public(), k.public());
        let ct = k.public().encrypt(OaepHash::Sha1, b"abc").unwrap();
        assert_eq!(
            back.decrypt(OaepHash::Sha1, &ct).unwrap().as_slice(),
            b"abc"
        );
        assert_eq!(format!("{back:?}"), "PrivateKek { bits: 2048 }");
    }

    #[test]
    fn pkcs8_tolerates_trailing_zeros_only() {
        let k = key();
        let der = k.to_pkcs8_der().unwrap();
        for pad in 1..=16usize {
            let mut padded = der.to_vec();
            padded.resize(der.len() + pad, 0);
            let back = PrivateKek::from_pkcs8_der(&padded).unwrap();
            assert_eq!(back.public(), k.public());

            for pos in [der.len(), der.len() + pad - 1] {
                let mut bad = padded.clone();
                bad[pos] = 0x01;
                let err = PrivateKek::from_pkcs8_der(&bad).unwrap_err();
                assert!(
                    matches!(err, CryptoError::InvalidPrivateKey(ref m) if m.contains("not all zero")),
                    "{err}"
                );
            }
        }
        // Exactly what SoftHSM2 + CKM_AES_KEY_WRAP_PAD hands back: PKCS#8 padded
        // to a multiple of 8, then wrapped and unwrapped.
        let mut padded = der.to_vec();
        padded.resize(der.len().div_ceil(8) * 8, 0);
        let kek = [7u8; 32];
        let blob = crate::crypto::kwp::wrap(&kek, &padded).unwrap();
        let unwrapped = crate::crypto::kwp::unwrap(&kek, &blob).unwrap();
        assert_eq!(
            PrivateKek::from_pkcs8_der(&unwrapped).unwrap().public(),
            k.public()
        );
    }

    #[test]
    fn pkcs8_rejects_truncation_and_garbage() {
        let der = key().to_pkcs8_der().unwrap();
        // The same key with its outer length in a longer form than DER
        // allows (0x83 00 LL LL instead of 0x82 LL LL).
        assert_eq!(der[1], 0x82);
        let mut long_form = vec![0x30, 0x83, 0x00];
        long_form.extend_from_slice(&der[2..]);
        assert!(matches!(
            PrivateKek::from_pkcs8_der(&long_form),
            Err(CryptoError::InvalidPrivateKey(_))
        ));
        for bad in [
            &der[..0],
            &der[..1],
            &der[..3],
            &der[..der.len() - 1],
            &b"\x04\x03abc"[..],
            &b"\x30\x80\x00\x00"[..],
            &b"\x30\x85\x01\x02\x03\x04\x05"[..],
        ] {
            assert!(matches!(
                PrivateKek::from_pkcs8_der(bad),
                Err(CryptoError::InvalidPrivateKey(_))
            ));
        }
    }

    #[test]
    fn der_sequence_end_parses_lengths() {
        assert_eq!(der_sequence_end(&[0x30, 0x00]).unwrap(), 2);
        assert_eq!(der_sequence_end(&[0x30, 0x02, 1, 2, 0, 0]).unwrap(), 4);
        let mut one_octet = vec![0x30, 0x81, 0x80];
        one_octet.resize(3 + 128 + 2, 0);
        assert_eq!(der_sequence_end(&one_octet).unwrap(), 131);
        // A long-form length below 128 is BER, not DER (X.690 10.1); the
        // PKCS#8 decoder refuses it too, so the key was never accepted.
        assert!(der_sequence_end(&[0x30, 0x81, 0x01, 9, 0]).is_err());
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.resize(4 + 256 + 3, 0);
        assert_eq!(der_sequence_end(&long).unwrap(), 260);
        assert!(der_sequence_end(&[0x30, 0x82, 0x01]).is_err());
        assert!(der_sequence_end(&[0x30, 0x05, 0]).is_err());
        assert!(der_sequence_end(&[]).is_err());
        let err = der_sequence_end(&[0x04, 0x01, 0]).unwrap_err();
        assert!(err.contains("found tag 0x04"), "{err}");
    }

    #[test]
    fn error_messages_do_not_leak_key_material() {
        let der = key().to_pkcs8_der().unwrap();
        let mut bad = der.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        if let Err(e) = PrivateKek::from_pkcs8_der(&bad) {
            let msg = e.to_string();
            let window = hex::encode(&der[mid - 8..mid]);
            assert!(!msg.contains(&window), "{msg}");
        }
    }
}
