//! TTLV, the KMIP wire encoding: sans-IO (bytes in, bytes out).
//!
//! Every item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length and
//! a value padded with zeros to a multiple of 8 bytes. Structures nest items.
//! The decoder is strict: lengths must match the type, padding must be zero,
//! nesting depth and total size are bounded, and nothing may trail the
//! message. Errors say at which byte offset and under which tag path the
//! message went wrong.

use std::fmt;

use zeroize::Zeroizing;

pub use crate::tags::Tag;

/// The TTLV item types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ItemType {
    Structure = 0x01,
    Integer = 0x02,
    LongInteger = 0x03,
    BigInteger = 0x04,
    Enumeration = 0x05,
    Boolean = 0x06,
    TextString = 0x07,
    ByteString = 0x08,
    DateTime = 0x09,
    Interval = 0x0A,
    /// KMIP 2.0.
    DateTimeExtended = 0x0B,
}

impl ItemType {
    fn from_byte(b: u8) -> Option<ItemType> {
        use ItemType::*;
        Some(match b {
            0x01 => Structure,
            0x02 => Integer,
            0x03 => LongInteger,
            0x04 => BigInteger,
            0x05 => Enumeration,
            0x06 => Boolean,
            0x07 => TextString,
            0x08 => ByteString,
            0x09 => DateTime,
            0x0A => Interval,
            0x0B => DateTimeExtended,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use ItemType::*;
        match self {
            Structure => "Structure",
            Integer => "Integer",
            LongInteger => "LongInteger",
            BigInteger => "BigInteger",
            Enumeration => "Enumeration",
            Boolean => "Boolean",
            TextString => "TextString",
            ByteString => "ByteString",
            DateTime => "DateTime",
            Interval => "Interval",
            DateTimeExtended => "DateTimeExtended",
        }
    }
}

/// An item's value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    /// Big-endian two's complement, a multiple of 8 bytes on the wire.
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    /// Zeroized on drop: byte strings carry key material (a decrypted
    /// private KEK, an exported key) as often as anything else.
    ByteString(Zeroizing<Vec<u8>>),
    /// Seconds since the Unix epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
    /// Microseconds since the Unix epoch (KMIP 2.0).
    DateTimeExtended(i64),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(items) => f.debug_list().entries(items).finish(),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Value::Enumeration(v) => write!(f, "Enumeration(0x{v:08X})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::TextString(v) => write!(f, "TextString({v:?})"),
            // Byte strings may be key material: never print their contents.
            Value::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
            Value::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

impl Value {
    pub fn item_type(&self) -> ItemType {
        match self {
            Value::Structure(_) => ItemType::Structure,
            Value::Integer(_) => ItemType::Integer,
            Value::LongInteger(_) => ItemType::LongInteger,
            Value::BigInteger(_) => ItemType::BigInteger,
            Value::Enumeration(_) => ItemType::Enumeration,
            Value::Boolean(_) => ItemType::Boolean,
            Value::TextString(_) => ItemType::TextString,
            Value::ByteString(_) => ItemType::ByteString,
            Value::DateTime(_) => ItemType::DateTime,
            Value::Interval(_) => ItemType::Interval,
            Value::DateTimeExtended(_) => ItemType::DateTimeExtended,
        }
    }
}

/// One TTLV item.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    pub tag: Tag,
    pub value: Value,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.tag, self.value)
    }
}

impl Item {
    pub fn new(tag: Tag, value: Value) -> Item {
        Item { tag, value }
    }
    pub fn structure(tag: Tag, items: Vec<Item>) -> Item {
        Item::new(tag, Value::Structure(items))
    }
    pub fn int(tag: Tag, v: i32) -> Item {
        Item::new(tag, Value::Integer(v))
    }
    pub fn long(tag: Tag, v: i64) -> Item {
        Item::new(tag, Value::LongInteger(v))
    }
    pub fn enumeration(tag: Tag, v: u32) -> Item {
        Item::new(tag, Value::Enumeration(v))
    }
    pub fn boolean(tag: Tag, v: bool) -> Item {
        Item::new(tag, Value::Boolean(v))
    }
    pub fn text(tag: Tag, v: impl Into<String>) -> Item {
        Item::new(tag, Value::TextString(v.into()))
    }
    pub fn bytes(tag: Tag, v: impl Into<Vec<u8>>) -> Item {
        Item::new(tag, Value::ByteString(Zeroizing::new(v.into())))
    }
    pub fn date_time(tag: Tag, v: i64) -> Item {
        Item::new(tag, Value::DateTime(v))
    }
    pub fn interval(tag: Tag, v: u32) -> Item {
        Item::new(tag, Value::Interval(v))
    }

    /// The children of a structure (empty for other types).
    pub fn items(&self) -> &[Item] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }
    /// The first child with `tag`.
    pub fn child(&self, tag: Tag) -> Option<&Item> {
        self.items().iter().find(|i| i.tag == tag)
    }
    /// Every child with `tag`.
    pub fn children(&self, tag: Tag) -> impl Iterator<Item = &Item> {
        self.items().iter().filter(move |i| i.tag == tag)
    }
    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Boolean(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_long(&self) -> Option<i64> {
        match self.value {
            Value::LongInteger(v) => Some(v),
            _ => None,
        }
    }
}

/// Length of the tag/type/length header.
pub const HEADER_LEN: usize = 8;

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Append the encoding of `item` to `out`.
pub fn encode_into(item: &Item, out: &mut Vec<u8>) {
    out.extend_from_slice(&item.tag.0.to_be_bytes()[1..]);
    out.push(item.value.item_type() as u8);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let start = out.len();
    match &item.value {
        Value::Structure(items) => {
            for i in items {
                encode_into(i, out);
            }
        }
        Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::BigInteger(v) => {
            // Sign-extend on the left to a multiple of 8 bytes.
            let fill = if v.first().is_some_and(|b| b & 0x80 != 0) { 0xFF } else { 0x00 };
            out.extend(std::iter::repeat_n(fill, padded(v.len()) - v.len()));
            out.extend_from_slice(v);
        }
        Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
        Value::TextString(v) => out.extend_from_slice(v.as_bytes()),
        Value::ByteString(v) => out.extend_from_slice(v),
    }
    let len = out.len() - start;
    out[len_at..len_at + 4].copy_from_slice(&(len as u32).to_be_bytes());
    out.resize(start + padded(len), 0);
}

/// Encode `item` into a new buffer.
pub fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(item, &mut out);
    out
}

/// Bounds applied while decoding untrusted input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest structure nesting accepted.
    pub max_depth: usize,
    /// Largest message accepted, in bytes.
    pub max_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 32, max_len: 16 * 1024 * 1024 }
    }
}

/// What was wrong with a TTLV message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    #[error("message ends inside an item header or value")]
    Truncated,
    #[error("{0} bytes follow the end of the message")]
    Trailing(usize),
    #[error("unknown item type 0x{0:02X}")]
    UnknownType(u8),
    #[error("{ty} must have length {expected}, has {actual}")]
    BadLength { ty: &'static str, expected: u32, actual: u32 },
    #[error("BigInteger length {0} is not a multiple of 8")]
    BigIntegerLength(u32),
    #[error("Boolean value {0} is neither 0 nor 1")]
    BadBoolean(u64),
    #[error("TextString is not UTF-8")]
    BadUtf8,
    #[error("padding bytes are not zero")]
    NonZeroPadding,
    #[error("structure content does not end on an item boundary")]
    StructureOverrun,
    #[error("nesting deeper than {0} structures")]
    TooDeep(usize),
    #[error("message length {len} exceeds the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
}

/// A decoding error: what, where (byte offset) and under which tags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TTLV decode error at byte {offset}{}: {kind}", path_text(.path))]
pub struct DecodeError {
    pub offset: usize,
    /// Tags of the enclosing structures, outermost first, then the item.
    pub path: Vec<Tag>,
    pub kind: DecodeErrorKind,
}

fn path_text(path: &[Tag]) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" (in {})", path.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" > "))
    }
}

/// Given at least the first 8 bytes of a message, the length of the whole
/// message; `None` if fewer than 8 bytes are available. For framing a
/// stream: read 8 bytes, then the rest.
pub fn message_len(header: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
    if header.len() < HEADER_LEN {
        return Ok(None);
    }
    let err = |kind| DecodeError { offset: 0, path: vec![], kind };
    if ItemType::from_byte(header[3]).is_none() {
        return Err(err(DecodeErrorKind::UnknownType(header[3])));
    }
    let len = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let total = HEADER_LEN + padded(len);
    if total > limits.max_len {
        return Err(err(DecodeErrorKind::TooLong { len: total, max: limits.max_len }));
    }
    Ok(Some(total))
}

struct Decoder<'a> {
    buf: &'a [u8],
    limits: Limits,
    path: Vec<Tag>,
}

impl Decoder<'_> {
    fn fail<T>(&self, offset: usize, kind: DecodeErrorKind) -> Result<T, DecodeError> {
        Err(DecodeError { offset, path: self.path.clone(), kind })
    }

    /// Decode one item starting at `pos`; returns it and the position after it.
    fn item(&mut self, pos: usize, end: usize) -> Result<(Item, usize), DecodeError> {
        if end - pos < HEADER_LEN {
            return self.fail(pos, DecodeErrorKind::Truncated);
        }
        let h = &self.buf[pos..pos + HEADER_LEN];
        let tag = Tag(u32::from_be_bytes([0, h[0], h[1], h[2]]));
        self.path.push(tag);
        let ty = match ItemType::from_byte(h[3]) {
            Some(t) => t,
            None => return self.fail(pos + 3, DecodeErrorKind::UnknownType(h[3])),
        };
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let vstart = pos + HEADER_LEN;
        let vend = vstart.checked_add(len as usize).filter(|e| *e <= end);
        let Some(vend) = vend else {
            return self.fail(pos + 4, DecodeErrorKind::Truncated);
        };
        let pend = vstart + padded(len as usize);
        if pend > end {
            return self.fail(vend, DecodeErrorKind::Truncated);
        }
        let fixed = |expected: u32| -> Result<(), DecodeError> {
            if len == expected {
                Ok(())
            } else {
                Err(DecodeError { offset: pos + 4, path: self.path.clone(), kind: DecodeErrorKind::BadLength { ty: ty.name(), expected, actual: len } })
            }
        };
        let v = &self.buf[vstart..vend];
        let value = match ty {
            ItemType::Structure => {
                if self.path.len() > self.limits.max_depth {
                    return self.fail(pos, DecodeErrorKind::TooDeep(self.limits.max_depth));
                }
                let mut items = Vec::new();
                let mut p = vstart;
                while p < vend {
                    if vend - p < HEADER_LEN {
                        return self.fail(p, DecodeErrorKind::StructureOverrun);
                    }
                    let (child, next) = self.item(p, vend)?;
                    items.push(child);
                    p = next;
                }
                if p != vend {
                    return self.fail(p, DecodeErrorKind::StructureOverrun);
                }
                Value::Structure(items)
            }
            ItemType::Integer => {
                fixed(4)?;
                Value::Integer(i32::from_be_bytes(v.try_into().expect("4")))
            }
            ItemType::LongInteger => {
                fixed(8)?;
                Value::LongInteger(i64::from_be_bytes(v.try_into().expect("8")))
            }
            ItemType::DateTime => {
                fixed(8)?;
                Value::DateTime(i64::from_be_bytes(v.try_into().expect("8")))
            }
            ItemType::DateTimeExtended => {
                fixed(8)?;
                Value::DateTimeExtended(i64::from_be_bytes(v.try_into().expect("8")))
            }
            ItemType::BigInteger => {
                if len % 8 != 0 {
                    return self.fail(pos + 4, DecodeErrorKind::BigIntegerLength(len));
                }
                Value::BigInteger(v.to_vec())
            }
            ItemType::Enumeration => {
                fixed(4)?;
                Value::Enumeration(u32::from_be_bytes(v.try_into().expect("4")))
            }
            ItemType::Interval => {
                fixed(4)?;
                Value::Interval(u32::from_be_bytes(v.try_into().expect("4")))
            }
            ItemType::Boolean => {
                fixed(8)?;
                match u64::from_be_bytes(v.try_into().expect("8")) {
                    0 => Value::Boolean(false),
                    1 => Value::Boolean(true),
                    other => return self.fail(vstart, DecodeErrorKind::BadBoolean(other)),
                }
            }
            ItemType::TextString => match std::str::from_utf8(v) {
                Ok(s) => Value::TextString(s.to_owned()),
                Err(e) => return self.fail(vstart + e.valid_up_to(), DecodeErrorKind::BadUtf8),
            },
            ItemType::ByteString => Value::ByteString(Zeroizing::new(v.to_vec())),
        };
        if let Some(i) = self.buf[vend..pend].iter().position(|b| *b != 0) {
            return self.fail(vend + i, DecodeErrorKind::NonZeroPadding);
        }
        self.path.pop();
        Ok((Item { tag, value }, pend))
    }
}

/// Decode exactly one item (a whole message) from `bytes`.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Item, DecodeError> {
    if bytes.len() > limits.max_len {
        return Err(DecodeError { offset: 0, path: vec![], kind: DecodeErrorKind::TooLong { len: bytes.len(), max: limits.max_len } });
    }
    let mut d = Decoder { buf: bytes, limits: *limits, path: Vec::new() };
    let (item, end) = d.item(0, bytes.len())?;
    if end != bytes.len() {
        return Err(DecodeError { offset: end, path: vec![], kind: DecodeErrorKind::Trailing(bytes.len() - end) });
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u32) -> Tag {
        Tag(0x420000 | n)
    }

    #[test]
    fn round_trip_every_type() {
        let msg = Item::structure(
            t(0x78),
            vec![
                Item::int(t(1), -5),
                Item::long(t(2), 1 << 40),
                Item::new(t(3), Value::BigInteger(vec![0x80, 1, 2])),
                Item::enumeration(t(4), 7),
                Item::boolean(t(5), true),
                Item::text(t(6), "héllo"),
                Item::bytes(t(7), vec![1, 2, 3]),
                Item::date_time(t(8), 1_700_000_000),
                Item::interval(t(9), 86400),
                Item::new(t(10), Value::DateTimeExtended(1_700_000_000_000_000)),
                Item::structure(t(11), vec![]),
            ],
        );
        let bytes = encode(&msg);
        assert_eq!(bytes.len() % 8, 0);
        let back = decode(&bytes, &Limits::default()).unwrap();
        // BigInteger comes back sign-extended to 8 bytes.
        let Value::Structure(items) = &back.value else { panic!() };
        assert_eq!(items[2].value, Value::BigInteger(vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 1, 2]));
        assert_eq!(items.len(), 11);
        assert_eq!(encode(&back), bytes);
    }

    #[test]
    fn spec_integer_encoding() {
        // KMIP spec example: Integer 8 with tag 0x420020.
        let b = encode(&Item::int(Tag(0x420020), 8));
        assert_eq!(hex::encode(b), "42002002000000040000000800000000");
    }

    #[test]
    fn strictness() {
        let l = Limits::default();
        let ok = hex::decode("42002002000000040000000800000000").unwrap();
        let mut bad_pad = ok.clone();
        bad_pad[15] = 1;
        assert_eq!(decode(&bad_pad, &l).unwrap_err().kind, DecodeErrorKind::NonZeroPadding);
        let mut bad_len = ok.clone();
        bad_len[7] = 8;
        assert!(matches!(decode(&bad_len, &l).unwrap_err().kind, DecodeErrorKind::BadLength { .. }));
        assert_eq!(decode(&ok[..12], &l).unwrap_err().kind, DecodeErrorKind::Truncated);
        let mut trailing = ok.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&trailing, &l).unwrap_err().kind, DecodeErrorKind::Trailing(8));
        let mut bad_type = ok.clone();
        bad_type[3] = 0x0C;
        assert_eq!(decode(&bad_type, &l).unwrap_err().kind, DecodeErrorKind::UnknownType(0x0C));
        // Depth bound.
        let mut item = Item::int(t(1), 1);
        for _ in 0..40 {
            item = Item::structure(t(2), vec![item]);
        }
        assert!(matches!(decode(&encode(&item), &l).unwrap_err().kind, DecodeErrorKind::TooDeep(_)));
        // Error names the path.
        let nested = Item::structure(Tag(0x420078), vec![Item::int(Tag(0x420020), 8)]);
        let mut b = encode(&nested);
        let n = b.len();
        b[n - 1] = 9;
        let e = decode(&b, &l).unwrap_err();
        assert_eq!(e.path, vec![Tag(0x420078), Tag(0x420020)]);
        assert_eq!(e.offset, n - 1);
    }

    #[test]
    fn framing() {
        let b = encode(&Item::structure(t(0x7B), vec![Item::int(t(1), 1)]));
        assert_eq!(message_len(&b[..7], &Limits::default()).unwrap(), None);
        assert_eq!(message_len(&b[..8], &Limits::default()).unwrap(), Some(b.len()));
        let small = Limits { max_len: 8, ..Limits::default() };
        assert!(message_len(&b[..8], &small).is_err());
    }
}
