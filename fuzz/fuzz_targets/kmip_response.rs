//! Arbitrary bytes as a KMIP server's answer: the TTLV decoder, then the
//! response parser and every accessor the KMIP client calls on a response.
//!
//! Whatever the server sends, nothing may panic; each accessor answers a
//! value or an error.
#![no_main]

use keybridge_kmip::messages::parse_response;
use keybridge_kmip::ttlv::{decode, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(item) = decode(data, &Limits::default()) else { return };
    let Ok(response) = parse_response(&item) else { return };
    for result in &response.items {
        let _ = result.is_success();
        let _ = result.describe_failure();
        let _ = result.uid();
        let _ = result.encrypted();
        let _ = result.decrypted();
        let _ = result.key_material();
        let _ = result.located();
        let _ = result.attributes();
        let _ = result.query().map(|q| (q.operation_names(), q.supports(0x1F)));
        let _ = result.versions();
    }
});
