//! Arbitrary bytes into the TTLV decoder.
//!
//! Whatever the input, decoding must not panic, and an error must point
//! inside the input. Whenever decoding succeeds:
//!
//! * `message_len` on the first 8 bytes agrees with the input's length;
//! * encoding the tree reproduces the input byte for byte. The decoder
//!   accepts exactly one encoding of each tree: lengths must match the
//!   value, padding must be zero and BigIntegers keep their width (they are
//!   stored as the multiple-of-8 bytes that were on the wire), so this is
//!   the canonical-form check as well;
//! * that encoding decodes back to an equal tree;
//! * the renderers do not panic on it.
#![no_main]

use keybridge_kmip::render::{render_tree, render_tree_redacted, to_json};
use keybridge_kmip::ttlv::{decode, encode, message_len, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let framed = message_len(data, &limits);
    let item = match decode(data, &limits) {
        Ok(item) => item,
        Err(e) => {
            assert!(
                e.offset <= data.len(),
                "error offset {} beyond input of {} bytes",
                e.offset,
                data.len()
            );
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(
        framed.expect("message_len of a decodable message"),
        Some(data.len())
    );
    let bytes = encode(&item);
    assert_eq!(bytes, data, "re-encoding differs from the input");
    let again = decode(&bytes, &limits).expect("re-encoding must decode");
    assert_eq!(again, item, "re-decoded tree differs");
    let _ = render_tree(&item);
    let _ = render_tree_redacted(&item);
    let _ = to_json(&item).to_string();
    let _ = format!("{item:?}");
});
