//! The stream format (src/stream.rs): header parser and decryptor.
//!
//! The first input byte picks a mode:
//!
//! * even: the rest is taken as a stream as it is and opened with a fixed
//!   DEK. Checks that `Header::parse` is consistent over every prefix (a
//!   prefix is either "need more bytes" or gives the same answer as the
//!   whole input) and that nothing panics.
//! * odd: part of the input is encrypted under the fixed DEK (fixed nonce
//!   prefix and salt, so runs are reproducible), the rest drives mutations
//!   of the result (bit flips, cuts, inserts, deletions, chunk swaps,
//!   appended copies). The mutated stream must open only if it is byte for
//!   byte the original, and then to the original plaintext.
//!
//! In both modes the body is pushed in pieces of sizes drawn from the input,
//! and the result must not depend on them: the same error or success, the
//! same plaintext when the stream opens, and when it fails, as the
//! decryptor documents, at most one chunk more or less released before the
//! error (each plaintext a prefix of the other).
#![no_main]

use keybridge_proto::secret::Dek;
use keybridge_proto::stream::{Decryptor, Encryptor, Header, StreamError, TAG_LEN};
use libfuzzer_sys::fuzz_target;

const CHUNK_SIZES: [u32; 4] = [1024, 1025, 2048, 4096];

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn dek() -> Dek {
    Dek::from_bytes([0x5A; 32])
}

/// Open `stream` pushing pieces of at most `max` bytes; returns the result
/// and the plaintext released.
fn open(stream: &[u8], seed: u64, max: usize) -> (Result<u64, StreamError>, Vec<u8>) {
    let mut out = Vec::new();
    let (header, used) = match Header::parse(stream) {
        Ok(Some(h)) => h,
        Ok(None) => return (Err(StreamError::HeaderTruncated { len: stream.len() }), out),
        Err(e) => return (Err(e), out),
    };
    let _ = header.dek_id();
    let mut dec = match Decryptor::new(&dek(), &header) {
        Ok(d) => d,
        Err(e) => return (Err(e), out),
    };
    let mut rng = Rng(seed | 1);
    let mut rest = &stream[used..];
    while !rest.is_empty() {
        let n = rng.below(max + 1).min(rest.len());
        if let Err(e) = dec.push(&rest[..n], &mut out) {
            let _ = e.to_string();
            return (Err(e), out);
        }
        rest = &rest[n..];
    }
    (dec.finish(&mut out), out)
}

fn check_prefixes(input: &[u8]) {
    let whole = Header::parse(input);
    for n in 0..input.len().min(256) {
        match Header::parse(&input[..n]) {
            Ok(None) => {}
            other => assert_eq!(other, whole, "prefix of {n} bytes parses differently"),
        }
    }
    if let Ok(Some((h, used))) = &whole {
        assert_eq!(h.as_bytes(), &input[..*used]);
    }
}

/// The same stream opened with two different piece sizes gives the same
/// result; the same plaintext if it opens; if it fails, plaintexts of
/// which one is the other's prefix, at most one chunk shorter.
fn open_twice(stream: &[u8], seed: u64) -> (Result<u64, StreamError>, Vec<u8>) {
    let a = open(stream, seed, 1 + (seed as usize % 5000));
    let b = open(stream, seed.rotate_left(17) ^ 0xA5A5, 1 + (seed as usize % 97));
    assert_eq!(a.0, b.0, "result depends on how the input was split");
    if a.0.is_ok() {
        assert!(a.1 == b.1, "plaintext depends on how the input was split");
    } else {
        let (short, long) = if a.1.len() <= b.1.len() { (&a.1, &b.1) } else { (&b.1, &a.1) };
        let chunk = Header::parse(stream).ok().flatten().map_or(0, |(h, _)| h.chunk_size() as usize);
        assert!(long.starts_with(short), "a failed stream released different plaintext depending on the split");
        assert!(long.len() - short.len() <= chunk, "a failed stream released more than a chunk more depending on the split");
    }
    if let Ok(n) = a.0 {
        assert_eq!(n, a.1.len() as u64);
    }
    a
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    if mode & 1 == 0 {
        check_prefixes(rest);
        let _ = open_twice(rest, seed);
        return;
    }

    // [len u16][chunk size selector][plaintext][mutations: op, pos u16, val]
    if rest.len() < 3 {
        return;
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % (rest.len() - 2);
    let chunk_size = CHUNK_SIZES[usize::from(rest[2]) % CHUNK_SIZES.len()];
    let (plain, ops) = rest[3..].split_at(len.min(rest.len() - 3));
    // Repeat the plaintext so streams have several chunks.
    let repeat = 1 + usize::from(mode >> 1) % 8;
    let plain: Vec<u8> = plain.iter().copied().cycle().take(plain.len() * repeat).collect();

    let (mut enc, mut stream) = Encryptor::with_randomness(&dek(), "fuzz-dek", chunk_size, [1; 7], [2; 16]).unwrap();
    let mut rng = Rng(seed | 1);
    let mut at = 0;
    while at < plain.len() {
        let n = (1 + rng.below(3 * chunk_size as usize)).min(plain.len() - at);
        enc.push(&plain[at..at + n], &mut stream).unwrap();
        at += n;
    }
    assert_eq!(enc.finish(&mut stream).unwrap(), plain.len() as u64);
    let original = stream.clone();

    let full = chunk_size as usize + TAG_LEN;
    for op in ops.chunks_exact(4) {
        let pos = usize::from(u16::from_be_bytes([op[1], op[2]]));
        let val = op[3];
        let n = stream.len();
        match op[0] % 7 {
            0 if n > 0 => stream[pos % n] ^= val,
            1 => stream.truncate(pos % (n + 1)),
            2 => stream.insert(pos % (n + 1), val),
            3 if n > 0 => {
                stream.remove(pos % n);
            }
            4 => {
                // Swap two chunk-sized blocks at chunk-aligned offsets.
                let hl = Header::parse(&original).unwrap().unwrap().1;
                let blocks = n.saturating_sub(hl) / full;
                if blocks >= 2 {
                    let (a, b) = (pos % blocks, usize::from(val) % blocks);
                    let (a, b) = (a.min(b), a.max(b));
                    if a != b {
                        let (x, y) = stream[hl..].split_at_mut(b * full);
                        x[a * full..(a + 1) * full].swap_with_slice(&mut y[..full]);
                    }
                }
            }
            5 => {
                // Append a copy of some bytes (e.g. a whole chunk again).
                let from = pos % (n + 1);
                let to = (from + usize::from(val) * 64).min(n);
                let copy = stream[from..to].to_vec();
                stream.extend_from_slice(&copy);
            }
            _ => {
                // Append a tag-sized tail.
                stream.extend_from_slice(&[val; TAG_LEN]);
            }
        }
    }

    let (result, out) = open_twice(&stream, seed);
    match result {
        Ok(_) => {
            assert!(stream == original, "a modified stream opened");
            assert!(out == plain, "the original stream opened to other plaintext");
        }
        Err(e) => {
            assert!(stream != original, "the unmodified stream failed: {e}");
            // Whatever was released before the error is authentic plaintext.
            assert!(out.len() <= plain.len() && out == plain[..out.len()], "released plaintext is not the original");
        }
    }
});
