//! Data-driven tests of the TTLV codec against real KMIP encodings.
//!
//! The vectors live in `hsm-fixtures/kmip/*.json` (see its README for
//! sources and licences): arrays of `{"name", "source", "hex"}`. Every
//! vector must decode with the default limits, re-encode byte for byte,
//! render without panicking and, in the `*-messages.json` files, be a whole
//! RequestMessage or ResponseMessage. Then each vector is damaged in ways
//! the decoder must catch: truncation, a non-zero padding byte, trailing
//! bytes, limits.
//!
//! Run with `cargo test --test ttlv_vectors -- --nocapture` for the counts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use keybridge_kmip::render::{render_tree, render_tree_redacted, to_json};
use keybridge_kmip::tags::{self, enum_name, enum_table, tag_name};
use keybridge_kmip::ttlv::{
    decode, encode, message_len, DecodeErrorKind, Item, Limits, Tag, Value,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    source: String,
    hex: String,
}

struct Fixture {
    file: String,
    vectors: Vec<(Vector, Vec<u8>)>,
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../hsm-fixtures/kmip");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let raw: Vec<Vector> = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
            let vectors = raw
                .into_iter()
                .map(|v| {
                    let bytes =
                        hex::decode(&v.hex).unwrap_or_else(|e| panic!("{}: bad hex: {e}", v.name));
                    (v, bytes)
                })
                .collect();
            Fixture {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                vectors,
            }
        })
        .collect()
}

/// Walk the raw bytes of a well-formed item, calling `f(offset, type byte,
/// value length)` for every item, parents before children.
fn walk(bytes: &[u8], pos: usize, f: &mut dyn FnMut(usize, u8, usize)) -> usize {
    let ty = bytes[pos + 3];
    let len = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
    f(pos, ty, len);
    let vstart = pos + 8;
    if ty == 0x01 {
        let mut p = vstart;
        while p < vstart + len {
            p = walk(bytes, p, f);
        }
    }
    vstart + len.div_ceil(8) * 8
}

/// Tally of what the vectors contain, for the printout.
#[derive(Default)]
struct Tally {
    vectors: usize,
    bytes: usize,
    roots: BTreeMap<String, usize>,
    unknown_tags: BTreeMap<u32, usize>,
    unnamed_enums: BTreeMap<(String, u32), usize>,
    types: BTreeMap<&'static str, usize>,
}

fn tally(item: &Item, t: &mut Tally) {
    if tag_name(item.tag).is_none() {
        *t.unknown_tags.entry(item.tag.0).or_default() += 1;
    }
    *t.types.entry(item.value.item_type().name()).or_default() += 1;
    match &item.value {
        Value::Structure(children) => children.iter().for_each(|c| tally(c, t)),
        Value::Enumeration(v)
            if enum_table(item.tag).is_some() && enum_name(item.tag, *v).is_none() =>
        {
            *t.unnamed_enums
                .entry((item.tag.to_string(), *v))
                .or_default() += 1;
        }
        _ => {}
    }
}

#[test]
fn vectors_round_trip_and_render() {
    let limits = Limits::default();
    let mut total = 0;
    for fx in fixtures() {
        let mut t = Tally::default();
        let messages_only = fx.file.contains("-messages");
        for (v, bytes) in &fx.vectors {
            let ctx = format!("{} {} ({})", fx.file, v.name, v.source);
            let item = decode(bytes, &limits).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(encode(&item), *bytes, "{ctx}: re-encoding differs");
            assert_eq!(
                message_len(&bytes[..8], &limits).unwrap(),
                Some(bytes.len()),
                "{ctx}: message_len"
            );

            let tree = render_tree(&item);
            assert!(
                tree.lines().count() >= 1 && tree.ends_with('\n'),
                "{ctx}: render_tree"
            );
            assert_eq!(
                tree.lines().count(),
                render_tree_redacted(&item).lines().count(),
                "{ctx}"
            );
            let json = to_json(&item);
            let expected_tag = tag_name(item.tag)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("0x{:06X}", item.tag.0));
            assert_eq!(json["tag"], expected_tag.as_str(), "{ctx}: to_json tag");
            assert_eq!(
                json["type"],
                item.value.item_type().name(),
                "{ctx}: to_json type"
            );

            let root = item.tag.to_string();
            if messages_only {
                assert!(
                    item.tag == tags::REQUEST_MESSAGE || item.tag == tags::RESPONSE_MESSAGE,
                    "{ctx}: root is {root}, not a RequestMessage or ResponseMessage"
                );
            }
            *t.roots.entry(root).or_default() += 1;
            t.vectors += 1;
            t.bytes += bytes.len();
            tally(&item, &mut t);
        }
        println!("{}: {} vectors, {} bytes", fx.file, t.vectors, t.bytes);
        println!("  roots: {:?}", t.roots);
        println!("  item types: {:?}", t.types);
        if !t.unknown_tags.is_empty() {
            let list: Vec<String> = t
                .unknown_tags
                .iter()
                .map(|(k, n)| format!("0x{k:06X}×{n}"))
                .collect();
            println!("  tags without a name: {}", list.join(", "));
        }
        if !t.unnamed_enums.is_empty() {
            let list: Vec<String> = t
                .unnamed_enums
                .iter()
                .map(|((tag, v), n)| format!("{tag}=0x{v:08X}×{n}"))
                .collect();
            println!("  enumeration values without a name: {}", list.join(", "));
        }
        assert!(t.vectors > 0, "{}: no vectors", fx.file);
        total += t.vectors;
    }
    println!("total: {total} vectors");
    assert!(total > 0);
}

#[test]
fn truncation_is_reported_never_panics() {
    let limits = Limits::default();
    let mut cuts = 0;
    let mut nested = 0;
    for fx in fixtures() {
        for (v, bytes) in &fx.vectors {
            // Plain truncation: the root's length no longer fits.
            for cut in (0..bytes.len()).step_by(4).chain([bytes.len() - 1]) {
                let e = decode(&bytes[..cut], &limits).expect_err(&v.name);
                assert_eq!(
                    e.kind,
                    DecodeErrorKind::Truncated,
                    "{} cut at {cut}: {e}",
                    v.name
                );
                cuts += 1;
            }
            // Truncation hidden by a consistent root length: the damage is
            // found inside, at the item that no longer fits.
            if bytes[3] != 0x01 {
                continue;
            }
            for cut in (16..bytes.len()).step_by(8) {
                let mut b = bytes[..cut].to_vec();
                b[4..8].copy_from_slice(&((cut - 8) as u32).to_be_bytes());
                match decode(&b, &limits) {
                    // The cut fell between two children of the root.
                    Ok(item) => assert_eq!(encode(&item), b, "{} cut at {cut}", v.name),
                    Err(e) => {
                        assert!(
                            matches!(
                                e.kind,
                                DecodeErrorKind::Truncated | DecodeErrorKind::StructureOverrun
                            ),
                            "{} cut at {cut}: {e}",
                            v.name
                        );
                        assert_eq!(
                            e.path.first(),
                            Some(&Tag(u32::from_be_bytes([0, b[0], b[1], b[2]]))),
                            "{}",
                            v.name
                        );
                        assert!(
                            e.offset < cut,
                            "{} cut at {cut}: offset {}",
                            v.name,
                            e.offset
                        );
                        nested += 1;
                    }
                }
            }
        }
    }
    println!("{cuts} plain truncations, {nested} nested truncations rejected");
    assert!(nested > 0);
}

#[test]
fn damaged_vectors_are_rejected_precisely() {
    let limits = Limits::default();
    let (mut padding, mut types, mut lengths) = (0, 0, 0);
    for fx in fixtures() {
        for (v, bytes) in &fx.vectors {
            let mut pads = Vec::new();
            let mut headers = Vec::new();
            walk(bytes, 0, &mut |pos, ty, len| {
                headers.push((pos, ty, len));
                if ty != 0x01 {
                    pads.extend(pos + 8 + len..pos + 8 + len.div_ceil(8) * 8);
                }
            });

            // A non-zero padding byte is reported at its own offset. Try the
            // first, the last and a few in between.
            let step = (pads.len() / 4).max(1);
            for &p in pads.iter().step_by(step).chain(pads.last()) {
                let mut b = bytes.clone();
                b[p] = 0x01;
                let e = decode(&b, &limits).expect_err(&v.name);
                assert_eq!(
                    e.kind,
                    DecodeErrorKind::NonZeroPadding,
                    "{} byte {p}: {e}",
                    v.name
                );
                assert_eq!(e.offset, p, "{}", v.name);
                padding += 1;
            }

            // An unknown type byte, and a wrong length for a fixed-size type.
            for &(pos, ty, len) in headers.iter().step_by((headers.len() / 4).max(1)) {
                let mut b = bytes.clone();
                b[pos + 3] = 0x0C;
                let e = decode(&b, &limits).expect_err(&v.name);
                assert_eq!(
                    e.kind,
                    DecodeErrorKind::UnknownType(0x0C),
                    "{} item at {pos}: {e}",
                    v.name
                );
                assert_eq!(e.offset, pos + 3);
                types += 1;
                if matches!(ty, 0x02 | 0x05 | 0x0A) && len == 4 {
                    let mut b = bytes.clone();
                    b[pos + 7] = 8;
                    let e = decode(&b, &limits).expect_err(&v.name);
                    assert!(
                        matches!(
                            e.kind,
                            DecodeErrorKind::BadLength {
                                expected: 4,
                                actual: 8,
                                ..
                            }
                        ),
                        "{}: {e}",
                        v.name
                    );
                    assert_eq!(e.offset, pos + 4);
                    lengths += 1;
                }
            }

            // Bytes after the message.
            let mut b = bytes.clone();
            b.extend_from_slice(&[0; 8]);
            assert_eq!(
                decode(&b, &limits).unwrap_err().kind,
                DecodeErrorKind::Trailing(8),
                "{}",
                v.name
            );

            // Limits.
            let small = Limits {
                max_len: bytes.len() - 1,
                ..limits
            };
            assert!(matches!(
                decode(bytes, &small).unwrap_err().kind,
                DecodeErrorKind::TooLong { .. }
            ));
            assert!(message_len(&bytes[..8], &small).is_err());
            let depth = depth_of(&decode(bytes, &limits).unwrap());
            if depth > 1 {
                let shallow = Limits {
                    max_depth: depth - 1,
                    ..limits
                };
                assert!(
                    matches!(
                        decode(bytes, &shallow).unwrap_err().kind,
                        DecodeErrorKind::TooDeep(_)
                    ),
                    "{}",
                    v.name
                );
                assert!(
                    decode(
                        bytes,
                        &Limits {
                            max_depth: depth,
                            ..limits
                        }
                    )
                    .is_ok(),
                    "{}",
                    v.name
                );
            }
        }
    }
    println!("{padding} padding flips, {types} type changes, {lengths} length changes rejected");
    assert!(padding > 0 && types > 0 && lengths > 0);
}

/// Structure nesting depth (a lone structure has depth 1).
fn depth_of(item: &Item) -> usize {
    match &item.value {
        Value::Structure(children) => 1 + children.iter().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}
