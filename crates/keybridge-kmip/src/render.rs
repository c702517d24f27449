//! Human- and machine-readable views of TTLV trees, for diagnostics, logs
//! and tests.
//!
//! [`render_tree`] prints an indented tree with tag names, types and
//! decoded values (enumerations by name, date-times as RFC 3339 UTC);
//! [`to_json`] builds the same information as JSON. Both print byte strings
//! in full, so they show key material when a message carries any: use
//! [`render_tree_redacted`] for anything that goes to a log.

use std::fmt::Write as _;

use serde_json::{json, Map, Value as Json};
use time::UtcDateTime;

use super::tags;
use super::ttlv::{Item, Tag, Value};

/// An indented, one-item-per-line rendering of `item` and its children.
///
/// ```text
/// RequestMessage (Structure)
///   RequestHeader (Structure)
///     ProtocolVersion (Structure)
///       ProtocolVersionMajor (Integer): 1
///   ...
///     Operation (Enumeration): Get (0x0000000A)
/// ```
pub fn render_tree(item: &Item) -> String {
    let mut out = String::new();
    write_tree(item, 0, false, &mut out);
    out
}

/// Like [`render_tree`], but byte strings and big integers show only their
/// length, never their contents.
pub fn render_tree_redacted(item: &Item) -> String {
    let mut out = String::new();
    write_tree(item, 0, true, &mut out);
    out
}

fn tag_text(tag: Tag) -> String {
    match tags::tag_name(tag) {
        Some(n) => n.to_owned(),
        None => format!("0x{:06X}", tag.0),
    }
}

fn write_tree(item: &Item, depth: usize, redact: bool, out: &mut String) {
    for _ in 0..depth {
        out.push_str("  ");
    }
    let _ = write!(
        out,
        "{} ({})",
        tag_text(item.tag),
        item.value.item_type().name()
    );
    match &item.value {
        Value::Structure(children) => {
            out.push('\n');
            for c in children {
                write_tree(c, depth + 1, redact, out);
            }
            return;
        }
        Value::Integer(v) => {
            let _ = write!(out, ": {v}");
            if let Some((names, rest)) = tags::mask_names(item.tag, *v as u32) {
                let mut parts: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                if rest != 0 {
                    parts.push(format!("0x{rest:08X}"));
                }
                let _ = write!(out, " [{}]", parts.join("|"));
            }
        }
        Value::LongInteger(v) => {
            let _ = write!(out, ": {v}");
        }
        Value::BigInteger(b) if redact => {
            let _ = write!(out, ": <{} bytes>", b.len());
        }
        Value::BigInteger(b) => {
            let _ = write!(out, ": 0x{}", hex::encode_upper(b));
        }
        Value::Enumeration(v) => match tags::enum_name(item.tag, *v) {
            Some(n) => {
                let _ = write!(out, ": {n} (0x{v:08X})");
            }
            None => {
                let _ = write!(out, ": 0x{v:08X}");
            }
        },
        Value::Boolean(v) => {
            let _ = write!(out, ": {v}");
        }
        Value::TextString(s) => {
            let _ = write!(out, ": {s:?}");
        }
        Value::ByteString(b) if redact => {
            let _ = write!(out, ": <{} bytes>", b.len());
        }
        Value::ByteString(b) => {
            let _ = write!(out, ": {} ({} bytes)", hex::encode_upper(b), b.len());
        }
        Value::DateTime(s) => {
            let _ = write!(out, ": {} ({s})", rfc3339(*s, None));
        }
        Value::DateTimeExtended(us) => {
            let secs = us.div_euclid(1_000_000);
            let micros = us.rem_euclid(1_000_000) as u32;
            let _ = write!(out, ": {} ({us} us)", rfc3339(secs, Some(micros)));
        }
        Value::Interval(v) => {
            let _ = write!(out, ": {v} s");
        }
    }
    out.push('\n');
}

/// `item` as JSON: `{"tag": ..., "type": ..., "value": ...}`.
///
/// `tag` is the tag's name or `"0x42XXXX"`; structures carry their
/// children as an array in `value`; enumerations with a known name are
/// `{"name": ..., "value": "0x0000000A"}`, others just the hex string;
/// byte strings and big integers are hex strings; date-times RFC 3339
/// strings; intervals seconds. Bit masks such as `CryptographicUsageMask`
/// also get a `flags` array.
pub fn to_json(item: &Item) -> Json {
    let mut obj = Map::new();
    obj.insert("tag".into(), Json::String(tag_text(item.tag)));
    obj.insert(
        "type".into(),
        Json::String(item.value.item_type().name().into()),
    );
    let value = match &item.value {
        Value::Structure(children) => Json::Array(children.iter().map(to_json).collect()),
        Value::Integer(v) => {
            if let Some((names, rest)) = tags::mask_names(item.tag, *v as u32) {
                let mut flags: Vec<Json> =
                    names.iter().map(|n| Json::String((*n).into())).collect();
                if rest != 0 {
                    flags.push(Json::String(format!("0x{rest:08X}")));
                }
                obj.insert("flags".into(), Json::Array(flags));
            }
            json!(v)
        }
        Value::LongInteger(v) => json!(v),
        Value::BigInteger(b) => Json::String(format!("0x{}", hex::encode_upper(b))),
        Value::Enumeration(v) => match tags::enum_name(item.tag, *v) {
            Some(n) => json!({ "name": n, "value": format!("0x{v:08X}") }),
            None => Json::String(format!("0x{v:08X}")),
        },
        Value::Boolean(v) => json!(v),
        Value::TextString(s) => Json::String(s.clone()),
        Value::ByteString(b) => Json::String(hex::encode_upper(b)),
        Value::DateTime(s) => Json::String(rfc3339(*s, None)),
        Value::DateTimeExtended(us) => Json::String(rfc3339(
            us.div_euclid(1_000_000),
            Some(us.rem_euclid(1_000_000) as u32),
        )),
        Value::Interval(v) => json!(v),
    };
    obj.insert("value".into(), value);
    Json::Object(obj)
}

/// Seconds since the Unix epoch as RFC 3339 UTC (`2010-02-15T09:49:30Z`),
/// with six fractional digits when `micros` is given. Works for every
/// `i64`; years outside 0000..=9999 are printed with as many digits as
/// they need (and a sign when negative), which RFC 3339 cannot express.
///
/// The calendar is `time`'s. `time` holds years -9999..=9999 only
/// (`UtcDateTime::from_unix_timestamp(253_402_300_800)`, year 10000, is an
/// error) and a KMIP date-time is any `i64` (a broken or hostile server
/// sends what it likes), so whole 400-year Gregorian cycles, which repeat
/// exactly, are taken off before `time` sees the instant and added back to
/// the year.
fn rfc3339(secs: i64, micros: Option<u32>) -> String {
    const CYCLE_SECS: i64 = 146_097 * 86_400; // 400 Gregorian years
    let cycles = secs.div_euclid(CYCLE_SECS);
    let in_cycle = secs.rem_euclid(CYCLE_SECS); // 1970-01-01 .. 2370-01-01
    let t = UtcDateTime::from_unix_timestamp(in_cycle)
        .expect("400 years after 1970 are within time's range");
    // |cycles| <= 7.4e8, so the year fits an i64 with room to spare.
    let y = i64::from(t.year()) + cycles * 400;
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else {
        format!("{y:+}")
    };
    let (m, d) = (u8::from(t.month()), t.day());
    let (hh, mm, ss) = (t.hour(), t.minute(), t.second());
    match micros {
        Some(us) => format!("{year}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}Z"),
        None => format!("{year}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(0x4B7918AA, None), "2010-02-15T09:49:30Z");
        assert_eq!(rfc3339(951_782_400, None), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_400, None), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339(-1, None), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(-62_135_596_800, None), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799, None), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(1_700_000_000, Some(42)),
            "2023-11-14T22:13:20.000042Z"
        );
        // Extremes must not panic.
        assert!(rfc3339(i64::MAX, None).starts_with('+'));
        assert!(rfc3339(i64::MIN, Some(0)).starts_with('-'));
        assert_eq!(rfc3339(i64::MAX, None), "+292277026596-12-04T15:30:07Z");
        assert_eq!(
            rfc3339(i64::MIN, Some(0)),
            "-292277022657-01-27T08:29:52.000000Z"
        );
        assert_eq!(rfc3339(253_402_300_800, None), "+10000-01-01T00:00:00Z");
        // Every day boundary over a few centuries agrees with a naive count,
        // also across the 400-year cycles taken off before `time` sees a date.
        let (mut y, mut m, mut d) = (1900i64, 1u32, 1u32);
        let mut days = -25_567i64;
        while y < 2400 {
            assert_eq!(
                rfc3339(days * 86_400, None),
                format!("{y:04}-{m:02}-{d:02}T00:00:00Z")
            );
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][m as usize - 1];
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
            days += 1;
        }
    }

    fn sample() -> Item {
        Item::structure(
            RESPONSE_MESSAGE,
            vec![
                Item::date_time(TIME_STAMP, 0x4B7918AA),
                Item::enumeration(OPERATION, operation::GET),
                Item::enumeration(OPERATION, 0x8000_0001),
                Item::text(UNIQUE_IDENTIFIER, "a\"b"),
                Item::bytes(KEY_MATERIAL, vec![0xDE, 0xAD]),
                Item::int(CRYPTOGRAPHIC_USAGE_MASK, 0x0C),
                Item::interval(LEASE_TIME, 3600),
                Item::boolean(Tag(0x540001), true),
                Item::new(Tag(0x420052), Value::BigInteger(vec![0, 1])),
                Item::new(Tag(0x420092), Value::DateTimeExtended(1_500_000)),
            ],
        )
    }

    #[test]
    fn tree() {
        let t = render_tree(&sample());
        let expected = "ResponseMessage (Structure)\n\
            \x20 TimeStamp (DateTime): 2010-02-15T09:49:30Z (1266227370)\n\
            \x20 Operation (Enumeration): Get (0x0000000A)\n\
            \x20 Operation (Enumeration): 0x80000001\n\
            \x20 UniqueIdentifier (TextString): \"a\\\"b\"\n\
            \x20 KeyMaterial (ByteString): DEAD (2 bytes)\n\
            \x20 CryptographicUsageMask (Integer): 12 [Encrypt|Decrypt]\n\
            \x20 LeaseTime (Interval): 3600 s\n\
            \x20 0x540001 (Boolean): true\n\
            \x20 Modulus (BigInteger): 0x0001\n\
            \x20 TimeStamp (DateTimeExtended): 1970-01-01T00:00:01.500000Z (1500000 us)\n";
        assert_eq!(t, expected);
        let r = render_tree_redacted(&sample());
        assert!(r.contains("KeyMaterial (ByteString): <2 bytes>"));
        assert!(!r.contains("DEAD"));
    }

    #[test]
    fn json() {
        let j = to_json(&sample());
        assert_eq!(j["tag"], "ResponseMessage");
        assert_eq!(j["type"], "Structure");
        let v = j["value"].as_array().unwrap();
        assert_eq!(v[0]["value"], "2010-02-15T09:49:30Z");
        assert_eq!(v[1]["value"], json!({"name": "Get", "value": "0x0000000A"}));
        assert_eq!(v[2]["value"], "0x80000001");
        assert_eq!(v[3]["value"], "a\"b");
        assert_eq!(v[4]["value"], "DEAD");
        assert_eq!(v[5]["value"], 12);
        assert_eq!(v[5]["flags"], json!(["Encrypt", "Decrypt"]));
        assert_eq!(v[6]["value"], 3600);
        assert_eq!(v[7]["tag"], "0x540001");
        assert_eq!(v[7]["value"], true);
        assert_eq!(v[8]["value"], "0x0001");
        assert_eq!(v[9]["value"], "1970-01-01T00:00:01.500000Z");
    }
}
