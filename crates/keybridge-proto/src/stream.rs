//! The client-data stream format: chunked AES-256-GCM, sans-IO (bytes in,
//! bytes out; this module never reads or writes a file or socket).
//!
//! Version 1, all integers big-endian:
//!
//! ```text
//! header: "KBSTREAM" (8) | version u8 = 1 | alg u8 = 1 (AES-256-GCM)
//!         | chunk_size u32 (plaintext bytes per chunk, 1 KiB..=16 MiB)
//!         | dek_id_len u8 | dek_id (UTF-8, 1..=64 bytes)
//!         | nonce_prefix (7, random) | salt (16, random) | commitment (32)
//! chunks: AES-256-GCM ciphertext || tag (16), one per chunk_size plaintext
//!         bytes; the last chunk carries 0..=chunk_size bytes and there is
//!         always one (an empty stream is one empty last chunk).
//! ```
//!
//! Keys: HKDF-SHA256 (ikm = DEK, salt = header salt) gives a payload key
//! (info `keybridge/v1/stream/aes-256-gcm`) and a commitment key (info
//! `keybridge/v1/stream/commitment`). The commitment is HMAC-SHA256 under the
//! commitment key of every header byte before it, so a wrong DEK is refused
//! at the header, before any chunk is opened, and no stream opens under two
//! DEKs. Chunk `i` is sealed with nonce `nonce_prefix || i (u32) || last`
//! (`last` = 1 on the final chunk, else 0: the STREAM construction) and the
//! whole header, commitment included, as associated data. Reordered,
//! dropped, duplicated, truncated, appended or foreign chunks therefore fail
//! authentication, and an error says which chunk.
//!
//! [`Encryptor`] emits every full chunk as soon as it has its bytes, so its
//! final chunk holds the remainder (0..chunk_size bytes, possibly empty).
//! [`Decryptor`] releases a full-size chunk as soon as it opens as a middle
//! chunk (a final chunk opens only with `last` set); one that does not (a
//! full-size final chunk, allowed by the format, or damage) is held back
//! until more input or [`Decryptor::finish`] says which it was. Both keep
//! at most one chunk in memory. A decryptor that has failed keeps returning the
//! same error.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hmac;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::secret::Dek;

/// The 8-byte magic every stream starts with.
pub const MAGIC: &[u8; 8] = b"KBSTREAM";
/// The format version this module writes and reads.
pub const VERSION: u8 = 1;
/// Algorithm byte for AES-256-GCM.
pub const ALG_AES_256_GCM: u8 = 1;
/// Smallest accepted chunk size (plaintext bytes).
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest accepted chunk size (plaintext bytes).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Chunk size used unless the caller asks for another.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Longest DEK id, in bytes.
pub const MAX_DEK_ID_LEN: usize = 64;
/// The AES-GCM tag that follows every chunk's ciphertext.
pub const TAG_LEN: usize = 16;

const NONCE_PREFIX_LEN: usize = 7;
const SALT_LEN: usize = 16;
const COMMITMENT_LEN: usize = 32;
/// magic | version | alg | chunk_size | dek_id_len
const FIXED_LEN: usize = 8 + 1 + 1 + 4 + 1;
/// nonce_prefix | salt | commitment, after the DEK id.
const TRAILER_LEN: usize = NONCE_PREFIX_LEN + SALT_LEN + COMMITMENT_LEN;
const HKDF_PAYLOAD: &[u8] = b"keybridge/v1/stream/aes-256-gcm";
const HKDF_COMMITMENT: &[u8] = b"keybridge/v1/stream/commitment";

/// Everything that can be wrong with a stream, or with the parameters to
/// write one. No variant carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("not a keybridge stream (bad magic)")]
    BadMagic,

    #[error("unsupported stream format version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u8),

    #[error("unsupported stream algorithm {0} (this build knows 1 = AES-256-GCM)")]
    UnsupportedAlgorithm(u8),

    #[error("bad chunk size {0}: must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")]
    BadChunkSize(u32),

    #[error("bad DEK id in stream header: {0}")]
    BadDekId(&'static str),

    #[error("stream ends inside its header ({len} bytes)")]
    HeaderTruncated { len: usize },

    #[error("the DEK does not match this stream (key commitment mismatch)")]
    WrongKey,

    #[error("stream is for DEK '{found}', expected DEK '{expected}'")]
    DekIdMismatch { expected: String, found: String },

    #[error("chunk {index} failed authentication: the data was modified, reordered, cut short or appended to, or belongs to another stream")]
    ChunkAuth { index: u64 },

    #[error("stream ends after {chunks} chunks without its final chunk: truncated")]
    Truncated { chunks: u64 },

    #[error("data after the final chunk (chunk {after_chunk}): appended")]
    TrailingData { after_chunk: u64 },

    #[error("stream has more than 2^32 chunks; use a larger chunk size")]
    TooManyChunks,

    #[error("generating the stream's nonce prefix and salt: {0}")]
    Random(String),
}

// ------------------------------------------------------------------ header

/// A parsed stream header. Its raw bytes are kept: they are every chunk's
/// associated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    chunk_size: u32,
    dek_id: String,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    salt: [u8; SALT_LEN],
    raw: Vec<u8>,
}

fn check_chunk_size(chunk_size: u32) -> Result<(), StreamError> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(StreamError::BadChunkSize(chunk_size))
    }
}

fn check_dek_id(id: &[u8]) -> Result<&str, StreamError> {
    if id.is_empty() || id.len() > MAX_DEK_ID_LEN {
        return Err(StreamError::BadDekId("must be 1 to 64 bytes"));
    }
    let s = std::str::from_utf8(id).map_err(|_| StreamError::BadDekId("not UTF-8"))?;
    if s.chars().any(char::is_control) {
        return Err(StreamError::BadDekId("contains control characters"));
    }
    Ok(s)
}

impl Header {
    /// Parse a header from the start of `buf`. `Ok(None)` means `buf` is a
    /// valid prefix so far but too short: call again with more bytes. On
    /// success returns the header and how many bytes of `buf` it took; the
    /// chunks start there. Errors are reported as soon as the offending
    /// byte is present. The commitment is checked later, by
    /// [`Decryptor::new`], because it needs the DEK.
    pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, StreamError> {
        let magic_seen = buf.len().min(MAGIC.len());
        if buf[..magic_seen] != MAGIC[..magic_seen] {
            return Err(StreamError::BadMagic);
        }
        if let Some(&v) = buf.get(8) {
            if v != VERSION {
                return Err(StreamError::UnsupportedVersion(v));
            }
        }
        if let Some(&a) = buf.get(9) {
            if a != ALG_AES_256_GCM {
                return Err(StreamError::UnsupportedAlgorithm(a));
            }
        }
        let Some(cs) = buf.get(10..14) else { return Ok(None) };
        let chunk_size = u32::from_be_bytes(cs.try_into().expect("4 bytes"));
        check_chunk_size(chunk_size)?;
        let Some(&id_len) = buf.get(14) else { return Ok(None) };
        let id_len = usize::from(id_len);
        if id_len == 0 || id_len > MAX_DEK_ID_LEN {
            return Err(StreamError::BadDekId("must be 1 to 64 bytes"));
        }
        let Some(id) = buf.get(FIXED_LEN..FIXED_LEN + id_len) else { return Ok(None) };
        let dek_id = check_dek_id(id)?.to_owned();
        let len = FIXED_LEN + id_len + TRAILER_LEN;
        let Some(raw) = buf.get(..len) else { return Ok(None) };
        let rest = &raw[FIXED_LEN + id_len..];
        let header = Header {
            chunk_size,
            dek_id,
            nonce_prefix: rest[..NONCE_PREFIX_LEN].try_into().expect("7 bytes"),
            salt: rest[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + SALT_LEN].try_into().expect("16 bytes"),
            raw: raw.to_vec(),
        };
        Ok(Some((header, len)))
    }

    /// The format version (always [`VERSION`] for a parsed header).
    pub fn version(&self) -> u8 {
        VERSION
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The id of the DEK the stream was written with: look it up, then open
    /// the stream with [`Decryptor::new`].
    pub fn dek_id(&self) -> &str {
        &self.dek_id
    }

    /// The header's exact bytes (its length is [`Header::len`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Length of the header in bytes.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Always false: a header is never empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Refuse a stream written under another DEK id than `expected`.
    pub fn check_dek_id(&self, expected: &str) -> Result<(), StreamError> {
        if self.dek_id == expected {
            Ok(())
        } else {
            Err(StreamError::DekIdMismatch { expected: expected.to_owned(), found: self.dek_id.clone() })
        }
    }

    fn commitment(&self) -> &[u8] {
        &self.raw[self.raw.len() - COMMITMENT_LEN..]
    }

    fn committed(&self) -> &[u8] {
        &self.raw[..self.raw.len() - COMMITMENT_LEN]
    }
}

// ------------------------------------------------------------------ keys

/// The per-stream keys derived from the DEK and the header salt.
struct Keys {
    payload: LessSafeKey,
    commitment: hmac::Key,
}

fn derive(dek: &Dek, salt: &[u8; SALT_LEN]) -> Keys {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), dek.expose());
    let mut payload = Zeroizing::new([0u8; 32]);
    let mut commitment = Zeroizing::new([0u8; 32]);
    hk.expand(HKDF_PAYLOAD, &mut payload[..]).expect("32 bytes is a valid HKDF-SHA256 output length");
    hk.expand(HKDF_COMMITMENT, &mut commitment[..]).expect("32 bytes is a valid HKDF-SHA256 output length");
    Keys {
        payload: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &payload[..]).expect("32-byte AES-256 key")),
        commitment: hmac::Key::new(hmac::HMAC_SHA256, &commitment[..]),
    }
}

fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u32, last: bool) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
    n[aead::NONCE_LEN - 1] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn chunk_index(index: u64) -> Result<u32, StreamError> {
    u32::try_from(index).map_err(|_| StreamError::TooManyChunks)
}

// ------------------------------------------------------------------ encryptor

/// Writes a stream: [`Encryptor::new`] gives the header bytes, each
/// [`push`](Encryptor::push) appends the chunks it completed, and
/// [`finish`](Encryptor::finish) appends the final chunk.
pub struct Encryptor {
    key: LessSafeKey,
    header: Vec<u8>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    chunk_size: usize,
    /// Index of the next chunk to seal.
    next: u64,
    /// Plaintext of the chunk being filled (fewer than `chunk_size` bytes).
    pending: Zeroizing<Vec<u8>>,
    total: u64,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("chunk_size", &self.chunk_size)
            .field("next_chunk", &self.next)
            .field("plaintext_bytes", &self.total)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Start a stream under `dek` (whose id is `dek_id`) with `chunk_size`
    /// plaintext bytes per chunk. Returns the encryptor and the header bytes,
    /// which must be written before the chunks.
    pub fn new(dek: &Dek, dek_id: &str, chunk_size: u32) -> Result<(Encryptor, Vec<u8>), StreamError> {
        let nonce_prefix = crate::crypto::random_array::<NONCE_PREFIX_LEN>().map_err(|e| StreamError::Random(e.to_string()))?;
        let salt = crate::crypto::random_array::<SALT_LEN>().map_err(|e| StreamError::Random(e.to_string()))?;
        Self::build(dek, dek_id, chunk_size, *nonce_prefix, *salt)
    }

    /// [`Encryptor::new`] with a caller-chosen nonce prefix and salt, so
    /// that tests and fuzzing are reproducible. Never for real data: two
    /// streams with the same DEK, prefix and salt share their keystream.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn with_randomness(
        dek: &Dek,
        dek_id: &str,
        chunk_size: u32,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        salt: [u8; SALT_LEN],
    ) -> Result<(Encryptor, Vec<u8>), StreamError> {
        Self::build(dek, dek_id, chunk_size, nonce_prefix, salt)
    }

    fn build(
        dek: &Dek,
        dek_id: &str,
        chunk_size: u32,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        salt: [u8; SALT_LEN],
    ) -> Result<(Encryptor, Vec<u8>), StreamError> {
        check_chunk_size(chunk_size)?;
        check_dek_id(dek_id.as_bytes())?;
        let mut header = Vec::with_capacity(FIXED_LEN + dek_id.len() + TRAILER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.push(ALG_AES_256_GCM);
        header.extend_from_slice(&chunk_size.to_be_bytes());
        header.push(u8::try_from(dek_id.len()).expect("checked: at most 64 bytes"));
        header.extend_from_slice(dek_id.as_bytes());
        header.extend_from_slice(&nonce_prefix);
        header.extend_from_slice(&salt);
        let keys = derive(dek, &salt);
        header.extend_from_slice(hmac::sign(&keys.commitment, &header).as_ref());
        let chunk_size = chunk_size as usize;
        let enc = Encryptor {
            key: keys.payload,
            header: header.clone(),
            nonce_prefix,
            chunk_size,
            next: 0,
            pending: Zeroizing::new(Vec::with_capacity(chunk_size)),
            total: 0,
        };
        Ok((enc, header))
    }

    /// Encrypt `out[start..]` in place as the next chunk and append its tag.
    fn seal_tail(&mut self, out: &mut Vec<u8>, start: usize, last: bool) -> Result<(), StreamError> {
        let index = match chunk_index(self.next) {
            Ok(i) => i,
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        };
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(&self.nonce_prefix, index, last), Aad::from(&self.header[..]), &mut out[start..])
            .expect("AES-GCM seals any chunk of at most 16 MiB");
        out.extend_from_slice(tag.as_ref());
        self.next += 1;
        Ok(())
    }

    /// Add plaintext; every chunk it completes is sealed and appended to
    /// `out`. At most one partial chunk is kept back.
    pub fn push(&mut self, mut plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if !self.pending.is_empty() {
            let take = (self.chunk_size - self.pending.len()).min(plaintext.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
            if self.pending.len() < self.chunk_size {
                return Ok(());
            }
            chunk_index(self.next)?;
            let start = out.len();
            out.reserve(self.chunk_size + TAG_LEN);
            out.extend_from_slice(&self.pending);
            self.pending.clear();
            self.seal_tail(out, start, false)?;
            self.total += self.chunk_size as u64;
        }
        while plaintext.len() >= self.chunk_size {
            chunk_index(self.next)?;
            let start = out.len();
            out.reserve(self.chunk_size + TAG_LEN);
            out.extend_from_slice(&plaintext[..self.chunk_size]);
            self.seal_tail(out, start, false)?;
            self.total += self.chunk_size as u64;
            plaintext = &plaintext[self.chunk_size..];
        }
        self.pending.extend_from_slice(plaintext);
        Ok(())
    }

    /// Seal the final chunk (the remaining 0..chunk_size bytes) into `out`.
    /// Returns the number of plaintext bytes in the stream.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<u64, StreamError> {
        let start = out.len();
        out.reserve(self.pending.len() + TAG_LEN);
        out.extend_from_slice(&self.pending);
        self.seal_tail(out, start, true)?;
        Ok(self.total + self.pending.len() as u64)
    }
}

// ------------------------------------------------------------------ decryptor

/// Reads a stream's chunks after its header: each
/// [`push`](Decryptor::push) appends authenticated plaintext to `out`,
/// [`finish`](Decryptor::finish) checks that the stream ended with its final
/// chunk. A stream that decrypts gives the same output whatever the sizes
/// of the pushed pieces; one that fails may have released a chunk more or
/// less before the error, depending on them (every chunk released is
/// authentic and in order).
pub struct Decryptor {
    key: LessSafeKey,
    header: Vec<u8>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// Sealed size of a full chunk.
    sealed_full: usize,
    /// Index of the next chunk to open.
    next: u64,
    /// Sealed bytes not opened yet: at most one full sealed chunk.
    pending: Vec<u8>,
    total: u64,
    failed: Option<StreamError>,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("chunk_size", &(self.sealed_full - TAG_LEN))
            .field("next_chunk", &self.next)
            .field("plaintext_bytes", &self.total)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// Check `dek` against the header's key commitment and prepare to open
    /// the chunks. A wrong DEK fails here with [`StreamError::WrongKey`].
    pub fn new(dek: &Dek, header: &Header) -> Result<Decryptor, StreamError> {
        let keys = derive(dek, &header.salt);
        hmac::verify(&keys.commitment, header.committed(), header.commitment()).map_err(|_| StreamError::WrongKey)?;
        let sealed_full = header.chunk_size as usize + TAG_LEN;
        Ok(Decryptor {
            key: keys.payload,
            header: header.raw.clone(),
            nonce_prefix: header.nonce_prefix,
            sealed_full,
            next: 0,
            pending: Vec::with_capacity(sealed_full),
            total: 0,
            failed: None,
        })
    }

    /// Whether `sealed` opens as chunk `index` with the `last` flag, without
    /// producing output (used only to explain a failure).
    fn opens_as(&self, index: u64, last: bool, sealed: &[u8]) -> bool {
        let Ok(index) = u32::try_from(index) else { return false };
        if sealed.len() < TAG_LEN {
            return false;
        }
        let mut copy = Zeroizing::new(sealed.to_vec());
        self.key
            .open_in_place(nonce(&self.nonce_prefix, index, last), Aad::from(&self.header[..]), &mut copy[..])
            .is_ok()
    }

    /// Open `sealed` as chunk `self.next` and append its plaintext to `out`.
    /// On failure nothing is appended and the error says what went wrong.
    fn open(&mut self, sealed: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let index = self.next;
        if u32::try_from(index).is_err() {
            return Err(StreamError::TooManyChunks);
        }
        if sealed.len() < TAG_LEN {
            return Err(StreamError::Truncated { chunks: index });
        }
        if self.try_open(sealed, last, out) {
            Ok(())
        } else {
            Err(self.explain(index, sealed, last))
        }
    }

    /// Open `sealed` (at least a tag long) as chunk `self.next` with the
    /// `last` flag, appending its plaintext to `out`; if it does not open,
    /// `out` and the decryptor stay as they were.
    fn try_open(&mut self, sealed: &[u8], last: bool, out: &mut Vec<u8>) -> bool {
        let Ok(n) = u32::try_from(self.next) else { return false };
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let tag = aead::Tag::try_from(tag).expect("16-byte tag");
        let start = out.len();
        out.extend_from_slice(ct);
        let opened = self.key.open_in_place_separate_tag(nonce(&self.nonce_prefix, n, last), Aad::from(&self.header[..]), tag, &mut out[start..], 0..);
        if opened.is_err() {
            out.truncate(start);
            return false;
        }
        self.next += 1;
        self.total += ct.len() as u64;
        true
    }

    /// Why chunk `index` did not open with the expected `last` flag.
    fn explain(&self, index: u64, sealed: &[u8], last: bool) -> StreamError {
        if last {
            // Expected the final chunk but found a full middle chunk: the
            // rest of the stream is missing.
            if sealed.len() == self.sealed_full && self.opens_as(index, false, sealed) {
                return StreamError::Truncated { chunks: index + 1 };
            }
        } else if self.opens_as(index, true, sealed) {
            return StreamError::TrailingData { after_chunk: index };
        }
        // An empty final chunk (16 bytes) followed by more data.
        if sealed.len() > TAG_LEN && self.opens_as(index, true, &sealed[..TAG_LEN]) {
            return StreamError::TrailingData { after_chunk: index };
        }
        StreamError::ChunkAuth { index }
    }

    fn fail<T>(&mut self, e: StreamError) -> Result<T, StreamError> {
        self.failed = Some(e.clone());
        Err(e)
    }

    /// Add sealed bytes; the plaintext of every chunk known to be complete
    /// and authentic is appended to `out`. The latest full chunk is held back
    /// until more bytes arrive or [`finish`](Decryptor::finish) is called.
    pub fn push(&mut self, mut sealed: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let full = self.sealed_full;
        if !self.pending.is_empty() {
            if self.pending.len() + sealed.len() <= full {
                self.pending.extend_from_slice(sealed);
                return Ok(());
            }
            // More bytes follow the pending chunk, so it is a full middle chunk.
            let take = full - self.pending.len();
            self.pending.extend_from_slice(&sealed[..take]);
            sealed = &sealed[take..];
            let chunk = std::mem::take(&mut self.pending);
            let r = self.open(&chunk, false, out);
            self.pending = chunk;
            self.pending.clear();
            if let Err(e) = r {
                return self.fail(e);
            }
        }
        while sealed.len() > full {
            if let Err(e) = self.open(&sealed[..full], false, out) {
                return self.fail(e);
            }
            sealed = &sealed[full..];
        }
        // A whole chunk at the end of the input that opens as a middle
        // chunk is released now rather than copied aside: it can be nothing
        // else (a final chunk opens only with `last` set), and a stream that
        // ends after it still fails in `finish`. Only a full-size final
        // chunk, which the encryptor never writes, or a damaged one is held
        // back.
        if sealed.len() == full && self.try_open(sealed, false, out) {
            return Ok(());
        }
        self.pending.extend_from_slice(sealed);
        Ok(())
    }

    /// End of input: open the held-back bytes as the final chunk. Returns the
    /// number of plaintext bytes in the stream.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<u64, StreamError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let last = std::mem::take(&mut self.pending);
        self.open(&last, true, out)?;
        Ok(self.total)
    }
}

// ------------------------------------------------------------------ one-shot

/// Encrypt `data` as one stream (header and chunks) under `dek`.
pub fn encrypt_all(dek: &Dek, dek_id: &str, chunk_size: u32, data: &[u8]) -> Result<Vec<u8>, StreamError> {
    let (mut enc, mut out) = Encryptor::new(dek, dek_id, chunk_size)?;
    let chunks = data.len() / chunk_size.max(1) as usize + 1;
    out.reserve(data.len() + chunks * TAG_LEN);
    enc.push(data, &mut out)?;
    enc.finish(&mut out)?;
    Ok(out)
}

/// Decrypt a whole stream held in memory under `dek`.
pub fn decrypt_all(dek: &Dek, data: &[u8]) -> Result<(Header, Vec<u8>), StreamError> {
    let (header, used) = Header::parse(data)?.ok_or(StreamError::HeaderTruncated { len: data.len() })?;
    let mut dec = Decryptor::new(dek, &header)?;
    let mut out = Vec::with_capacity(data.len() - used);
    dec.push(&data[used..], &mut out)?;
    dec.finish(&mut out)?;
    Ok((header, out))
}


#[cfg(test)]
mod tests {
    use super::*;

    const CS: u32 = 1024;
    const FULL: usize = CS as usize + TAG_LEN;

    fn dek(n: u8) -> Dek {
        Dek::from_bytes([n; 32])
    }

    /// xorshift64: deterministic split sizes without a rand dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn plain(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    /// Cut `data` into random pieces (empty ones included).
    fn pieces<'a>(data: &'a [u8], rng: &mut Rng, max: usize) -> Vec<&'a [u8]> {
        let mut v = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = rng.below(max + 1).min(rest.len());
            v.push(&rest[..n]);
            rest = &rest[n..];
        }
        v
    }

    /// Decrypt as a streaming reader would: header fed piece by piece, then
    /// the body in random pieces. Returns the result and whatever plaintext
    /// was released before it.
    fn decrypt_split(key: &Dek, stream: &[u8], rng: &mut Rng, max: usize) -> (Result<u64, StreamError>, Vec<u8>) {
        let mut out = Vec::new();
        let mut head = Vec::new();
        let mut parts = pieces(stream, rng, max).into_iter();
        let (header, used) = loop {
            match Header::parse(&head) {
                Err(e) => return (Err(e), out),
                Ok(Some(h)) => break h,
                Ok(None) => match parts.next() {
                    Some(p) => head.extend_from_slice(p),
                    None => return (Err(StreamError::HeaderTruncated { len: head.len() }), out),
                },
            }
        };
        let mut dec = match Decryptor::new(key, &header) {
            Ok(d) => d,
            Err(e) => return (Err(e), out),
        };
        if let Err(e) = dec.push(&head[used..], &mut out) {
            return (Err(e), out);
        }
        for p in parts {
            if let Err(e) = dec.push(p, &mut out) {
                return (Err(e), out);
            }
        }
        (dec.finish(&mut out), out)
    }

    /// Decrypt in one push, returning the error and the plaintext released.
    fn decrypt_err(key: &Dek, stream: &[u8]) -> (StreamError, Vec<u8>) {
        let mut rng = Rng(1);
        match decrypt_split(key, stream, &mut rng, usize::MAX - 1) {
            (Ok(n), _) => panic!("stream of {n} bytes decrypted but should have failed"),
            (Err(e), out) => (e, out),
        }
    }

    fn fixed_stream(key: &Dek, cs: u32, data: &[u8]) -> Vec<u8> {
        let (mut enc, mut out) = Encryptor::with_randomness(key, "dek-1", cs, [7; 7], [9; 16]).unwrap();
        enc.push(data, &mut out).unwrap();
        enc.finish(&mut out).unwrap();
        out
    }

    /// (header length, chunk boundaries) of a stream of `len` bytes at `CS`.
    fn chunks(stream: &[u8]) -> (usize, Vec<std::ops::Range<usize>>) {
        let (h, used) = Header::parse(stream).unwrap().unwrap();
        let full = h.chunk_size() as usize + TAG_LEN;
        let mut v = Vec::new();
        let mut at = used;
        while at < stream.len() {
            let end = (at + full).min(stream.len());
            v.push(at..end);
            at = end;
        }
        (used, v)
    }

    #[test]
    fn round_trips_whatever_the_split() {
        let key = dek(1);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for cs in [CS, 4096] {
            let c = cs as usize;
            for len in [0, 1, c - 1, c, c + 1, 3 * c + 17] {
                let data = plain(len);
                let reference = fixed_stream(&key, cs, &data);
                let (h, used) = Header::parse(&reference).unwrap().unwrap();
                assert_eq!((h.version(), h.chunk_size(), h.dek_id()), (1, cs, "dek-1"));
                assert_eq!(reference.len(), used + len + TAG_LEN * (len / c + 1), "len {len}");

                // The encoder's output does not depend on how input is pushed.
                for _ in 0..10 {
                    let (mut enc, mut out) = Encryptor::with_randomness(&key, "dek-1", cs, [7; 7], [9; 16]).unwrap();
                    for p in pieces(&data, &mut rng, 3 * c) {
                        enc.push(p, &mut out).unwrap();
                    }
                    assert_eq!(enc.finish(&mut out).unwrap(), len as u64);
                    assert_eq!(out, reference, "cs {cs} len {len}");
                }
                // Nor does the decoder's.
                for max in [1, 17, c, 3 * c] {
                    for _ in 0..5 {
                        let (r, out) = decrypt_split(&key, &reference, &mut rng, max);
                        assert_eq!(r, Ok(len as u64), "cs {cs} len {len} max {max}");
                        assert!(out == data, "cs {cs} len {len} max {max}: plaintext differs");
                    }
                }
                let (h2, back) = decrypt_all(&key, &encrypt_all(&key, "dek-1", cs, &data).unwrap()).unwrap();
                assert_eq!(h2.dek_id(), "dek-1");
                assert!(back == data);
            }
        }
    }

    #[test]
    fn fresh_nonce_prefix_and_salt_per_stream() {
        let key = dek(1);
        let a = encrypt_all(&key, "d", CS, b"same").unwrap();
        let b = encrypt_all(&key, "d", CS, b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn header_parse_asks_for_more_bytes() {
        let stream = fixed_stream(&dek(1), CS, b"hello");
        let (h, used) = Header::parse(&stream).unwrap().unwrap();
        assert_eq!(used, FIXED_LEN + 5 + TRAILER_LEN);
        assert_eq!(h.len(), used);
        assert_eq!(h.as_bytes(), &stream[..used]);
        for n in 0..used {
            assert_eq!(Header::parse(&stream[..n]), Ok(None), "prefix of {n} bytes");
        }
        assert_eq!(Header::parse(&stream[..used]).unwrap().unwrap().1, used);
        assert_eq!(Header::parse(b"KBX"), Err(StreamError::BadMagic));
        assert_eq!(Header::parse(b"PK\x03\x04 a zip file"), Err(StreamError::BadMagic));
        assert_eq!(decrypt_all(&dek(1), &stream[..used - 1]).unwrap_err(), StreamError::HeaderTruncated { len: used - 1 });
        let mut v2 = stream.clone();
        v2[8] = 2;
        assert_eq!(Header::parse(&v2[..9]), Err(StreamError::UnsupportedVersion(2)));
        let mut alg = stream.clone();
        alg[9] = 7;
        assert_eq!(Header::parse(&alg[..10]), Err(StreamError::UnsupportedAlgorithm(7)));
        let mut cs = stream.clone();
        cs[10..14].copy_from_slice(&(MAX_CHUNK_SIZE + 1).to_be_bytes());
        assert_eq!(Header::parse(&cs[..14]), Err(StreamError::BadChunkSize(MAX_CHUNK_SIZE + 1)));
        let mut id = stream.clone();
        id[14] = 0;
        assert!(matches!(Header::parse(&id[..15]), Err(StreamError::BadDekId(_))));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let key = dek(1);
        for cs in [0, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1] {
            assert_eq!(Encryptor::new(&key, "d", cs).unwrap_err(), StreamError::BadChunkSize(cs));
        }
        for id in [String::new(), "x".repeat(65), "a\nb".into()] {
            assert!(matches!(Encryptor::new(&key, &id, CS).unwrap_err(), StreamError::BadDekId(_)), "{id:?}");
        }
        assert!(Encryptor::new(&key, &"é".repeat(32), MAX_CHUNK_SIZE).is_ok());
    }

    #[test]
    fn wrong_dek_is_refused_at_the_header() {
        let stream = fixed_stream(&dek(1), CS, &plain(3000));
        let (h, _) = Header::parse(&stream).unwrap().unwrap();
        assert_eq!(Decryptor::new(&dek(2), &h).unwrap_err(), StreamError::WrongKey);
        let (e, out) = decrypt_err(&dek(2), &stream);
        assert_eq!(e, StreamError::WrongKey);
        assert!(out.is_empty());
        assert_eq!(e.to_string(), "the DEK does not match this stream (key commitment mismatch)");
    }

    #[test]
    fn expected_dek_id_is_checked() {
        let stream = fixed_stream(&dek(1), CS, b"x");
        let (h, _) = Header::parse(&stream).unwrap().unwrap();
        assert_eq!(h.check_dek_id("dek-1"), Ok(()));
        assert_eq!(
            h.check_dek_id("dek-2"),
            Err(StreamError::DekIdMismatch { expected: "dek-2".into(), found: "dek-1".into() })
        );
    }

    #[test]
    fn every_bit_flip_fails_without_releasing_the_damaged_chunk() {
        let key = dek(1);
        let data = plain(2 * CS as usize + 100);
        let stream = fixed_stream(&key, CS, &data);
        let (used, bounds) = chunks(&stream);
        assert_eq!(bounds.len(), 3);
        let id_end = FIXED_LEN + 5;
        for byte in 0..stream.len() {
            for bit in 0..8 {
                let mut bad = stream.clone();
                bad[byte] ^= 1 << bit;
                let (e, out) = decrypt_err(&key, &bad);
                let ok = match byte {
                    0..=7 => e == StreamError::BadMagic,
                    8 => matches!(e, StreamError::UnsupportedVersion(_)),
                    9 => matches!(e, StreamError::UnsupportedAlgorithm(_)),
                    10..=13 => matches!(e, StreamError::BadChunkSize(_) | StreamError::WrongKey),
                    b if b < id_end => matches!(e, StreamError::BadDekId(_) | StreamError::WrongKey),
                    b if b < used => e == StreamError::WrongKey,
                    b => {
                        let index = bounds.iter().position(|r| r.contains(&b)).unwrap();
                        e == StreamError::ChunkAuth { index: index as u64 } && out == data[..index * CS as usize]
                    }
                };
                assert!(ok, "flip of bit {bit} in byte {byte}: {e:?}, {} plaintext bytes", out.len());
                if byte < used {
                    assert!(out.is_empty());
                }
            }
        }
    }

    fn splice(stream: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let (used, _) = chunks(stream);
        let mut v = stream[..used].to_vec();
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    #[test]
    fn reordered_dropped_and_foreign_chunks_fail() {
        let key = dek(1);
        let c = CS as usize;
        let data = plain(3 * c + 17);
        let a = fixed_stream(&key, CS, &data);
        let (_, ca) = chunks(&a);
        let ch = |i: usize| &a[ca[i].clone()];
        assert_eq!(ca.len(), 4);

        // Swapped chunks.
        let (e, out) = decrypt_err(&key, &splice(&a, &[ch(1), ch(0), ch(2), ch(3)]));
        assert_eq!((e, out.len()), (StreamError::ChunkAuth { index: 0 }, 0));
        // Last chunk dropped.
        // Every chunk before the cut is authentic and released; the stream
        // still fails.
        let (e, out) = decrypt_err(&key, &splice(&a, &[ch(0), ch(1), ch(2)]));
        assert_eq!(e, StreamError::Truncated { chunks: 3 });
        assert!(out == data[..3 * c]);
        // Middle chunk dropped.
        let (e, out) = decrypt_err(&key, &splice(&a, &[ch(0), ch(2), ch(3)]));
        assert_eq!(e, StreamError::ChunkAuth { index: 1 });
        assert!(out == data[..c]);
        // Chunk duplicated.
        let (e, _) = decrypt_err(&key, &splice(&a, &[ch(0), ch(0), ch(1), ch(2), ch(3)]));
        assert_eq!(e, StreamError::ChunkAuth { index: 1 });

        // A chunk from another stream under the same DEK, id and chunk size.
        let b = encrypt_all(&key, "dek-1", CS, &data).unwrap();
        let (_, cb) = chunks(&b);
        let (e, out) = decrypt_err(&key, &splice(&a, &[ch(0), &b[cb[1].clone()], ch(2), ch(3)]));
        assert_eq!(e, StreamError::ChunkAuth { index: 1 });
        assert!(out == data[..c]);
        // Header of A, body of B.
        let body: Vec<&[u8]> = cb.iter().map(|r| &b[r.clone()]).collect();
        let (e, out) = decrypt_err(&key, &splice(&a, &body));
        assert_eq!((e, out.len()), (StreamError::ChunkAuth { index: 0 }, 0));
        assert_eq!(StreamError::ChunkAuth { index: 0 }.to_string(),
            "chunk 0 failed authentication: the data was modified, reordered, cut short or appended to, or belongs to another stream");
    }

    #[test]
    fn truncation_is_detected() {
        let key = dek(1);
        let c = CS as usize;
        // Ends with a 17-byte final chunk (33 sealed bytes).
        let data = plain(3 * c + 17);
        let stream = fixed_stream(&key, CS, &data);
        for cut in 1..=(33 + 40) {
            let (e, out) = decrypt_err(&key, &stream[..stream.len() - cut]);
            let want = match 33 - cut as isize {
                n if n >= TAG_LEN as isize => StreamError::ChunkAuth { index: 3 },
                n if n >= 0 => StreamError::Truncated { chunks: 3 },
                _ => StreamError::ChunkAuth { index: 2 },
            };
            assert_eq!(e, want, "cut {cut}");
            assert!(out.len() <= 3 * c && out == data[..out.len()]);
        }
        // A multiple of the chunk size ends with an empty final chunk.
        let data = plain(3 * c);
        let stream = fixed_stream(&key, CS, &data);
        let (e, out) = decrypt_err(&key, &stream[..stream.len() - TAG_LEN]);
        assert_eq!(e, StreamError::Truncated { chunks: 3 });
        assert!(out == data[..3 * c]);
        assert_eq!(
            e.to_string(),
            "stream ends after 3 chunks without its final chunk: truncated"
        );
        // Only the header.
        let (used, _) = chunks(&stream);
        let (e, _) = decrypt_err(&key, &stream[..used]);
        assert_eq!(e, StreamError::Truncated { chunks: 0 });
    }

    #[test]
    fn appended_data_is_detected() {
        let key = dek(1);
        let c = CS as usize;
        // Short final chunk: appended bytes make it fail to open.
        let data = plain(3 * c + 17);
        let stream = fixed_stream(&key, CS, &data);
        let (_, cs) = chunks(&stream);
        let mut plus = stream.clone();
        plus.push(0);
        assert_eq!(decrypt_err(&key, &plus).0, StreamError::ChunkAuth { index: 3 });
        let mut plus = stream.clone();
        plus.extend_from_slice(&stream[cs[0].clone()]);
        assert_eq!(decrypt_err(&key, &plus).0, StreamError::ChunkAuth { index: 3 });

        // Empty final chunk followed by anything: recognised as appended.
        let data = plain(3 * c);
        let stream = fixed_stream(&key, CS, &data);
        let (_, cs) = chunks(&stream);
        for extra in [&b"x"[..], &b"more bytes"[..], &stream[cs[0].clone()]] {
            let mut plus = stream.clone();
            plus.extend_from_slice(extra);
            let (e, out) = decrypt_err(&key, &plus);
            assert_eq!(e, StreamError::TrailingData { after_chunk: 3 }, "{} bytes appended", extra.len());
            assert!(out == data);
        }
        assert_eq!(
            StreamError::TrailingData { after_chunk: 3 }.to_string(),
            "data after the final chunk (chunk 3): appended"
        );

        // A full-size final chunk (allowed by the format, written by hand
        // here) followed by more data.
        let (mut enc, mut full) = Encryptor::with_randomness(&key, "dek-1", CS, [7; 7], [9; 16]).unwrap();
        enc.push(&plain(2 * c - 1), &mut full).unwrap();
        enc.pending.push(0);
        enc.finish(&mut full).unwrap();
        let (_, back) = decrypt_all(&key, &full).unwrap();
        assert_eq!(back.len(), 2 * c);
        // Pushed one sealed chunk at a time, the final one does not open as
        // a middle chunk, is held back, and opens as the last in `finish`.
        let (h, used) = Header::parse(&full).unwrap().unwrap();
        let mut dec = Decryptor::new(&key, &h).unwrap();
        let mut out = Vec::new();
        for piece in full[used..].chunks(FULL) {
            dec.push(piece, &mut out).unwrap();
        }
        assert_eq!(out.len(), c, "the final chunk waits for finish");
        assert_eq!(dec.finish(&mut out).unwrap(), 2 * c as u64);
        assert!(out == back);
        full.extend_from_slice(b"appended");
        assert_eq!(decrypt_err(&key, &full).0, StreamError::TrailingData { after_chunk: 1 });
    }

    #[test]
    fn a_failed_decryptor_stays_failed() {
        let key = dek(1);
        let data = plain(4 * CS as usize);
        let mut stream = fixed_stream(&key, CS, &data);
        let (h, used) = Header::parse(&stream).unwrap().unwrap();
        stream[used + 3] ^= 1;
        let mut dec = Decryptor::new(&key, &h).unwrap();
        let mut out = Vec::new();
        let e = dec.push(&stream[used..used + FULL + 1], &mut out).unwrap_err();
        assert_eq!(e, StreamError::ChunkAuth { index: 0 });
        assert_eq!(dec.push(&stream[used + FULL + 1..], &mut out).unwrap_err(), e);
        assert_eq!(dec.finish(&mut out).unwrap_err(), e);
        assert!(out.is_empty());
    }

    #[test]
    fn chunk_counter_cannot_wrap() {
        let key = dek(1);
        let (mut enc, mut out) = Encryptor::new(&key, "d", CS).unwrap();
        enc.next = u64::from(u32::MAX);
        enc.push(&plain(CS as usize), &mut out).unwrap(); // chunk 2^32-1 is the last usable
        let before = out.len();
        assert_eq!(enc.push(&plain(CS as usize), &mut out).unwrap_err(), StreamError::TooManyChunks);
        assert_eq!(out.len(), before, "no unsealed plaintext left in the output");

        let stream = fixed_stream(&key, CS, &plain(2 * CS as usize));
        let (h, used) = Header::parse(&stream).unwrap().unwrap();
        let mut dec = Decryptor::new(&key, &h).unwrap();
        dec.next = u64::from(u32::MAX) + 1;
        let mut out = Vec::new();
        assert_eq!(dec.push(&stream[used..], &mut out).unwrap_err(), StreamError::TooManyChunks);
    }

    #[test]
    fn debug_shows_no_key() {
        let (enc, _) = Encryptor::new(&dek(0xAB), "d", CS).unwrap();
        let s = format!("{enc:?}");
        assert!(s.starts_with("Encryptor") && !s.contains("171") && !s.to_lowercase().contains("abab"), "{s}");
    }
}
