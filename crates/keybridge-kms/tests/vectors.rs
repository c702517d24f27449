//! Data-driven known-answer tests for `keybridge_kms::crypto`.
//!
//! The vectors live in `hsm-fixtures/` (see its README for sources and
//! licences) and are read at run time:
//!
//! * Wycheproof RSA-OAEP decryption files: every case is run; "valid" must
//!   decrypt to `msg`, "invalid" must fail, "acceptable" may do either.
//! * Wycheproof AES-KWP: "valid" must wrap to `ct` byte for byte and unwrap
//!   back; "invalid" must be rejected by unwrap.
//! * RFC 5649 section 6: both 192-bit-KEK examples, byte for byte.
//!
//! Run with `cargo test --test vectors -- --nocapture` to see the per-file counts.

use std::path::PathBuf;

use keybridge_kms::crypto::kwp;
use keybridge_kms::crypto::oaep::{PrivateKek, PublicKek};
use keybridge_kms::crypto::OaepHash;
use serde::Deserialize;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../hsm-fixtures")
        .join(rel)
}

fn load<T: for<'de> Deserialize<'de>>(rel: &str) -> T {
    let path = fixture(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// Tally of one vector file.
#[derive(Default, Debug)]
struct Counts {
    valid: usize,
    invalid: usize,
    /// "invalid" cases accepted because of a documented deviation (see
    /// [`OAEP_KNOWN_DEVIATIONS`]); every other invalid case must be rejected.
    invalid_accepted_known: usize,
    acceptable_accepted: usize,
    acceptable_rejected: usize,
}

impl Counts {
    fn total(&self) -> usize {
        self.valid
            + self.invalid
            + self.invalid_accepted_known
            + self.acceptable_accepted
            + self.acceptable_rejected
    }

    fn report(&self, file: &str, declared: Option<usize>) {
        println!(
            "{file}: ran {} cases (valid {}, invalid rejected {}, invalid accepted as known \
             deviation {}, acceptable {} accepted / {} rejected){}",
            self.total(),
            self.valid,
            self.invalid,
            self.invalid_accepted_known,
            self.acceptable_accepted,
            self.acceptable_rejected,
            declared.map_or(String::new(), |n| format!(", file declares {n}")),
        );
        assert!(self.total() > 0, "{file}: no test cases were run");
        if let Some(n) = declared {
            assert_eq!(self.total(), n, "{file}: not every declared case was run");
        }
    }
}

// ---------------------------------------------------------------------------
// Wycheproof RSA-OAEP

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OaepFile {
    algorithm: String,
    number_of_tests: usize,
    test_groups: Vec<OaepGroup>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OaepGroup {
    key_size: usize,
    sha: String,
    mgf: String,
    mgf_sha: String,
    private_key: OaepPrivateKey,
    private_key_pkcs8: String,
    tests: Vec<OaepCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OaepPrivateKey {
    modulus: String,
    public_exponent: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OaepCase {
    tc_id: u32,
    comment: String,
    msg: String,
    ct: String,
    label: String,
    result: String,
}

/// Wycheproof OAEP cases (by `comment`) that `rsa` 0.10.0 accepts although
/// they are "invalid".
///
/// "First byte is 1": RFC 8017 section 7.1.2 step 3g says a non-zero leading
/// octet Y of the encoded message is a decryption error. `rsa` 0.10.0 stopped
/// checking Y on purpose (its test `decrypt_ignores_first_octet`; 0.10.0-rc.17
/// still checked it), and the raw RSA result is not reachable through its
/// public API without the `hazmat` feature, so keybridge cannot add the check
/// itself. The remaining checks (label hash, PS, 0x01 separator) still run in
/// constant time and every failure gives the same error, so this is not a
/// padding oracle; it only widens the set of accepted encodings by 8 bits out
/// of a >= 160-bit check. If a later `rsa` rejects these cases again, the
/// test still passes (they are then counted as rejected).
const OAEP_KNOWN_DEVIATIONS: &[&str] = &["First byte is 1"];

fn wycheproof_hash(name: &str) -> OaepHash {
    match name {
        "SHA-1" => OaepHash::Sha1,
        "SHA-256" => OaepHash::Sha256,
        other => panic!("fixture uses hash {other}, which keybridge does not support"),
    }
}

fn run_wycheproof_oaep(file: &str) {
    let data: OaepFile = load(&format!("wycheproof/{file}"));
    assert_eq!(data.algorithm, "RSAES-OAEP");
    let mut counts = Counts::default();

    for group in &data.test_groups {
        assert_eq!(group.mgf, "MGF1");
        let hash = wycheproof_hash(&group.sha);
        assert_eq!(
            wycheproof_hash(&group.mgf_sha),
            hash,
            "only MGF1 with the OAEP hash is supported"
        );

        let pkcs8 = unhex(&group.private_key_pkcs8);
        let key = PrivateKek::from_pkcs8_der(&pkcs8).expect("fixture PKCS#8 key must load");
        assert_eq!(key.bits(), group.key_size);

        // The same key must come out of the PKCS#11-style components, and the
        // SoftHSM-style zero padding must not change it.
        let public = PublicKek::from_components(
            &unhex(&group.private_key.modulus),
            &unhex(&group.private_key.public_exponent),
        )
        .expect("fixture modulus/exponent must load");
        assert_eq!(format!("{public:?}"), format!("{:?}", key.public()));
        assert_eq!(
            public.to_spki_der().unwrap(),
            key.public().to_spki_der().unwrap()
        );
        let mut padded = pkcs8.clone();
        padded.resize(pkcs8.len().div_ceil(8) * 8 + 8, 0);
        let padded_key = PrivateKek::from_pkcs8_der(&padded).expect("zero padding tolerated");
        assert_eq!(
            padded_key.public().to_spki_der().unwrap(),
            public.to_spki_der().unwrap()
        );

        for case in &group.tests {
            let ct = unhex(&case.ct);
            let label = unhex(&case.label);
            let msg = unhex(&case.msg);
            let got = key.decrypt_with_label(hash, &label, &ct);
            let id = format!("{file} tcId {} ({})", case.tc_id, case.comment);
            match case.result.as_str() {
                "valid" => {
                    let pt = got.unwrap_or_else(|e| panic!("{id}: valid case failed: {e}"));
                    assert_eq!(pt.as_slice(), msg.as_slice(), "{id}: wrong plaintext");
                    if label.is_empty() {
                        let pt = key.decrypt(hash, &ct).expect("label-less API agrees");
                        assert_eq!(pt.as_slice(), msg.as_slice(), "{id}");
                    }
                    // Our own encryption of the message under the imported
                    // public key must decrypt with the fixture key.
                    let again = public.encrypt_with_label(hash, &label, &msg).unwrap();
                    let pt = key.decrypt_with_label(hash, &label, &again).unwrap();
                    assert_eq!(pt.as_slice(), msg.as_slice(), "{id}: re-encryption");
                    counts.valid += 1;
                }
                "invalid" => match got {
                    Err(_) => counts.invalid += 1,
                    Ok(_) if OAEP_KNOWN_DEVIATIONS.contains(&case.comment.as_str()) => {
                        println!("{id}: invalid case accepted (known rsa 0.10 deviation)");
                        counts.invalid_accepted_known += 1;
                    }
                    Ok(_) => panic!("{id}: invalid case was accepted"),
                },
                "acceptable" => {
                    if got.is_ok() {
                        counts.acceptable_accepted += 1;
                    } else {
                        counts.acceptable_rejected += 1;
                    }
                    println!("{id}: acceptable case, accepted = {}", got.is_ok());
                }
                other => panic!("{id}: unknown result {other:?}"),
            }
        }
    }
    counts.report(file, Some(data.number_of_tests));
}

#[test]
fn wycheproof_rsa_oaep_2048_sha1_mgf1sha1() {
    run_wycheproof_oaep("rsa_oaep_2048_sha1_mgf1sha1_test.json");
}

#[test]
fn wycheproof_rsa_oaep_2048_sha256_mgf1sha256() {
    run_wycheproof_oaep("rsa_oaep_2048_sha256_mgf1sha256_test.json");
}

#[test]
fn wycheproof_rsa_oaep_3072_sha256_mgf1sha256() {
    run_wycheproof_oaep("rsa_oaep_3072_sha256_mgf1sha256_test.json");
}

// ---------------------------------------------------------------------------
// Wycheproof AES-KWP

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KwpFile {
    algorithm: String,
    number_of_tests: usize,
    test_groups: Vec<KwpGroup>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KwpGroup {
    key_size: usize,
    tests: Vec<KwpCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KwpCase {
    tc_id: u32,
    comment: String,
    key: String,
    msg: String,
    ct: String,
    result: String,
}

#[test]
fn wycheproof_aes_kwp() {
    let file = "aes_kwp_test.json";
    let data: KwpFile = load(&format!("wycheproof/{file}"));
    assert_eq!(data.algorithm, "AES-KWP");
    let mut counts = Counts::default();

    for group in &data.test_groups {
        for case in &group.tests {
            let kek = unhex(&case.key);
            assert_eq!(kek.len() * 8, group.key_size);
            let msg = unhex(&case.msg);
            let ct = unhex(&case.ct);
            let id = format!("{file} tcId {} ({})", case.tc_id, case.comment);
            let got = kwp::unwrap(&kek, &ct);
            match case.result.as_str() {
                "valid" => {
                    let wrapped =
                        kwp::wrap(&kek, &msg).unwrap_or_else(|e| panic!("{id}: wrap failed: {e}"));
                    assert_eq!(hex::encode(&wrapped), case.ct, "{id}: wrap output differs");
                    let pt = got.unwrap_or_else(|e| panic!("{id}: valid case failed: {e}"));
                    assert_eq!(pt.as_slice(), msg.as_slice(), "{id}: wrong plaintext");
                    counts.valid += 1;
                }
                "invalid" => {
                    assert!(got.is_err(), "{id}: invalid case was accepted");
                    counts.invalid += 1;
                }
                "acceptable" => {
                    if got.is_ok() {
                        counts.acceptable_accepted += 1;
                    } else {
                        counts.acceptable_rejected += 1;
                    }
                    println!("{id}: acceptable case, accepted = {}", got.is_ok());
                }
                other => panic!("{id}: unknown result {other:?}"),
            }
        }
    }
    counts.report(file, Some(data.number_of_tests));
}

// ---------------------------------------------------------------------------
// RFC 5649 section 6

#[derive(Deserialize)]
struct RfcFile {
    vectors: Vec<RfcVector>,
}

#[derive(Deserialize)]
struct RfcVector {
    name: String,
    kek: String,
    key_data: String,
    wrapped: String,
}

#[test]
fn rfc5649_section6() {
    let file = "rfc5649.json";
    let data: RfcFile = load(file);
    let mut counts = Counts::default();
    for v in &data.vectors {
        let kek = unhex(&v.kek);
        let key_data = unhex(&v.key_data);
        let wrapped = kwp::wrap(&kek, &key_data).unwrap();
        assert_eq!(
            hex::encode(&wrapped),
            v.wrapped,
            "{}: wrap output differs",
            v.name
        );
        let back = kwp::unwrap(&kek, &unhex(&v.wrapped)).unwrap();
        assert_eq!(back.as_slice(), key_data.as_slice(), "{}: unwrap", v.name);

        let mut wrong = kek.clone();
        wrong[0] ^= 0x80;
        assert!(
            kwp::unwrap(&wrong, &wrapped).is_err(),
            "{}: wrong KEK accepted",
            v.name
        );
        counts.valid += 1;
    }
    counts.report(file, None);
    assert_eq!(counts.valid, 2);
}
