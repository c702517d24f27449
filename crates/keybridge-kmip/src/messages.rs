//! KMIP requests and responses for the operations keybridge uses, in KMIP
//! 1.0-1.4 and 2.0 form. Sans-IO: requests become [`Item`]s (then bytes via
//! [`super::ttlv::encode`]), response [`Item`]s become typed results.
//!
//! The main difference between the versions is how attributes travel: 1.x
//! wraps each in `Attribute { Attribute Name (text), Attribute Value }`
//! inside a `Template-Attribute`, 2.0 puts the attribute's own tag inside an
//! `Attributes` structure.

use std::fmt;

use zeroize::Zeroizing;

use super::tags::{self as t, self as enums};
use super::ttlv::{Item, Tag, Value};

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Version {
    pub major: i32,
    pub minor: i32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Version {
    pub const fn new(major: i32, minor: i32) -> Version {
        Version { major, minor }
    }
    /// True for KMIP 2.x attribute encoding.
    pub fn is_v2(self) -> bool {
        self.major >= 2
    }
    fn item(self) -> Item {
        Item::structure(t::PROTOCOL_VERSION, vec![Item::int(t::PROTOCOL_VERSION_MAJOR, self.major), Item::int(t::PROTOCOL_VERSION_MINOR, self.minor)])
    }
    fn from_item(item: &Item) -> Option<Version> {
        Some(Version::new(item.child(t::PROTOCOL_VERSION_MAJOR)?.as_int()?, item.child(t::PROTOCOL_VERSION_MINOR)?.as_int()?))
    }
}

/// Versions keybridge speaks, highest first.
pub const SUPPORTED_VERSIONS: &[Version] =
    &[Version::new(2, 0), Version::new(1, 4), Version::new(1, 3), Version::new(1, 2), Version::new(1, 1), Version::new(1, 0)];

/// An attribute keybridge sets or reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    CryptographicAlgorithm(u32),
    CryptographicLength(i32),
    CryptographicUsageMask(i32),
    /// Name with type "uninterpreted text string".
    Name(String),
    ObjectGroup(String),
    State(u32),
    /// Anything else, kept as received (1.x: name and value item).
    Other { name: String, value: Item },
}

/// The attributes keybridge types: KMIP 1.x name and 2.0 tag.
const KNOWN_ATTRIBUTES: &[(&str, Tag)] = &[
    ("Cryptographic Algorithm", t::CRYPTOGRAPHIC_ALGORITHM),
    ("Cryptographic Length", t::CRYPTOGRAPHIC_LENGTH),
    ("Cryptographic Usage Mask", t::CRYPTOGRAPHIC_USAGE_MASK),
    ("Name", t::NAME),
    ("Object Group", t::OBJECT_GROUP),
    ("State", t::STATE),
];

impl Attribute {
    /// The KMIP 1.x attribute name.
    pub fn name(&self) -> &str {
        match self {
            Attribute::CryptographicAlgorithm(_) => "Cryptographic Algorithm",
            Attribute::CryptographicLength(_) => "Cryptographic Length",
            Attribute::CryptographicUsageMask(_) => "Cryptographic Usage Mask",
            Attribute::Name(_) => "Name",
            Attribute::ObjectGroup(_) => "Object Group",
            Attribute::State(_) => "State",
            Attribute::Other { name, .. } => name,
        }
    }

    /// The attribute's own tag (KMIP 2.0 encoding, and 2.0 references).
    pub fn tag_for_name(name: &str) -> Option<Tag> {
        KNOWN_ATTRIBUTES.iter().find(|(n, _)| *n == name).map(|(_, tag)| *tag)
    }

    /// The value encoded under `tag` (1.x: `Attribute Value`; 2.0: the attribute's tag).
    fn value_item(&self, tag: Tag) -> Item {
        match self {
            Attribute::CryptographicAlgorithm(v) | Attribute::State(v) => Item::enumeration(tag, *v),
            Attribute::CryptographicLength(v) | Attribute::CryptographicUsageMask(v) => Item::int(tag, *v),
            Attribute::Name(n) => Item::structure(
                tag,
                vec![Item::text(t::NAME_VALUE, n.clone()), Item::enumeration(t::NAME_TYPE, enums::name_type::UNINTERPRETED_TEXT_STRING)],
            ),
            Attribute::ObjectGroup(g) => Item::text(tag, g.clone()),
            Attribute::Other { value, .. } => Item::new(tag, value.value.clone()),
        }
    }

    /// Encode for `version`.
    pub fn encode(&self, version: Version) -> Item {
        if version.is_v2() {
            let tag = Attribute::tag_for_name(self.name()).unwrap_or(t::ATTRIBUTE_VALUE);
            self.value_item(tag)
        } else {
            Item::structure(t::ATTRIBUTE, vec![Item::text(t::ATTRIBUTE_NAME, self.name().to_owned()), self.value_item(t::ATTRIBUTE_VALUE)])
        }
    }

    fn from_value(name: &str, value: &Item) -> Attribute {
        let typed = match name {
            "Cryptographic Algorithm" => value.as_enum().map(Attribute::CryptographicAlgorithm),
            "Cryptographic Length" => value.as_int().map(Attribute::CryptographicLength),
            "Cryptographic Usage Mask" => value.as_int().map(Attribute::CryptographicUsageMask),
            "Name" => value.child(t::NAME_VALUE).and_then(Item::as_text).map(|s| Attribute::Name(s.to_owned())),
            "Object Group" => value.as_text().map(|s| Attribute::ObjectGroup(s.to_owned())),
            "State" => value.as_enum().map(Attribute::State),
            _ => None,
        };
        typed.unwrap_or_else(|| Attribute::Other { name: name.to_owned(), value: value.clone() })
    }

    /// Decode a 1.x `Attribute` structure or a 2.0 attribute item.
    pub fn decode(item: &Item) -> Option<Attribute> {
        if item.tag == t::ATTRIBUTE {
            let name = item.child(t::ATTRIBUTE_NAME)?.as_text()?;
            let value = item.child(t::ATTRIBUTE_VALUE)?;
            return Some(Attribute::from_value(name, value));
        }
        Some(match KNOWN_ATTRIBUTES.iter().find(|(_, tag)| *tag == item.tag) {
            Some((name, _)) => Attribute::from_value(name, item),
            None => Attribute::Other { name: item.tag.to_string(), value: item.clone() },
        })
    }
}

/// Encryption parameters (KMIP Cryptographic Parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherMode {
    /// AES-GCM with a 16-byte tag; IV, AAD and tag travel separately.
    Gcm,
    /// AES-CBC with PKCS#5 padding, for servers without GCM.
    CbcPkcs5,
}

impl CipherMode {
    /// Cryptographic Parameters, fields in the order the specification
    /// lists them (servers parse them in that order).
    fn parameters(self) -> Item {
        use t::{block_cipher_mode as mode, padding_method as pad};
        let (block_mode, padding, tag_len) = match self {
            CipherMode::Gcm => (mode::GCM, None, Some(16)),
            CipherMode::CbcPkcs5 => (mode::CBC, Some(pad::PKCS5), None),
        };
        let mut items = vec![Item::enumeration(t::BLOCK_CIPHER_MODE, block_mode)];
        items.extend(padding.map(|p| Item::enumeration(t::PADDING_METHOD, p)));
        items.push(Item::enumeration(t::CRYPTOGRAPHIC_ALGORITHM, t::cryptographic_algorithm::AES));
        items.extend(tag_len.map(|l| Item::int(t::TAG_LENGTH, l)));
        Item::structure(t::CRYPTOGRAPHIC_PARAMETERS, items)
    }
}

/// A request keybridge sends.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// Create an AES key of `bits` with the given extra attributes.
    CreateAes { bits: i32, usage_mask: i32, attributes: Vec<Attribute> },
    Activate { uid: String },
    /// `data` is the plaintext (a private KEK): zeroized on drop.
    Encrypt { uid: String, mode: CipherMode, data: Zeroizing<Vec<u8>>, iv: Vec<u8>, aad: Vec<u8> },
    Decrypt { uid: String, mode: CipherMode, data: Vec<u8>, iv: Vec<u8>, aad: Vec<u8>, tag: Vec<u8> },
    Get { uid: String },
    /// Locate by attributes (all must match).
    Locate { attributes: Vec<Attribute>, max_items: Option<i32> },
    GetAttributes { uid: String, names: Vec<String> },
    AddAttribute { uid: String, attribute: Attribute },
    ModifyAttribute { uid: String, attribute: Attribute },
    Revoke { uid: String, reason_code: u32, message: Option<String> },
    Destroy { uid: String },
    Query { functions: Vec<u32> },
    DiscoverVersions { versions: Vec<Version> },
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Data may be key material: print only the operation and the object.
        write!(f, "{}", t::enum_name(t::OPERATION, self.operation()).unwrap_or("?"))?;
        match self {
            Request::Activate { uid }
            | Request::Encrypt { uid, .. }
            | Request::Decrypt { uid, .. }
            | Request::Get { uid }
            | Request::GetAttributes { uid, .. }
            | Request::AddAttribute { uid, .. }
            | Request::ModifyAttribute { uid, .. }
            | Request::Revoke { uid, .. }
            | Request::Destroy { uid } => write!(f, "({uid})"),
            _ => Ok(()),
        }
    }
}

fn uid(u: &str) -> Item {
    Item::text(t::UNIQUE_IDENTIFIER, u.to_owned())
}

fn attributes(version: Version, attrs: &[Attribute]) -> Item {
    if version.is_v2() {
        Item::structure(t::ATTRIBUTES, attrs.iter().map(|a| a.encode(version)).collect())
    } else {
        Item::structure(t::TEMPLATE_ATTRIBUTE, attrs.iter().map(|a| a.encode(version)).collect())
    }
}

impl Request {
    /// The KMIP operation code.
    pub fn operation(&self) -> u32 {
        use enums::operation as op;
        match self {
            Request::CreateAes { .. } => op::CREATE,
            Request::Activate { .. } => op::ACTIVATE,
            Request::Encrypt { .. } => op::ENCRYPT,
            Request::Decrypt { .. } => op::DECRYPT,
            Request::Get { .. } => op::GET,
            Request::Locate { .. } => op::LOCATE,
            Request::GetAttributes { .. } => op::GET_ATTRIBUTES,
            Request::AddAttribute { .. } => op::ADD_ATTRIBUTE,
            Request::ModifyAttribute { .. } => op::MODIFY_ATTRIBUTE,
            Request::Revoke { .. } => op::REVOKE,
            Request::Destroy { .. } => op::DESTROY,
            Request::Query { .. } => op::QUERY,
            Request::DiscoverVersions { .. } => op::DISCOVER_VERSIONS,
        }
    }

    /// The request payload for `version`.
    pub fn payload(&self, version: Version) -> Item {
        let items = match self {
            Request::CreateAes { bits, usage_mask, attributes: extra } => {
                let mut attrs = vec![
                    Attribute::CryptographicAlgorithm(enums::cryptographic_algorithm::AES),
                    Attribute::CryptographicLength(*bits),
                    Attribute::CryptographicUsageMask(*usage_mask),
                ];
                attrs.extend(extra.iter().cloned());
                vec![Item::enumeration(t::OBJECT_TYPE, enums::object_type::SYMMETRIC_KEY), attributes(version, &attrs)]
            }
            // An empty identifier means "the ID placeholder": the object the
            // previous batch item created.
            Request::Activate { uid: u } | Request::Get { uid: u } | Request::Destroy { uid: u } if u.is_empty() => vec![],
            Request::Activate { uid: u } | Request::Get { uid: u } | Request::Destroy { uid: u } => vec![uid(u)],
            // Authenticated-encryption fields exist from KMIP 1.4 on.
            Request::Encrypt { uid: u, mode, data, iv, aad } => {
                let mut v = vec![uid(u), mode.parameters(), Item::new(t::DATA, Value::ByteString(data.clone())), Item::bytes(t::IV_COUNTER_NONCE, iv.clone())];
                if *mode == CipherMode::Gcm && !aad.is_empty() && version >= Version::new(1, 4) {
                    v.push(Item::bytes(t::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, aad.clone()));
                }
                v
            }
            Request::Decrypt { uid: u, mode, data, iv, aad, tag } => {
                let mut v = vec![uid(u), mode.parameters(), Item::bytes(t::DATA, data.clone()), Item::bytes(t::IV_COUNTER_NONCE, iv.clone())];
                if *mode == CipherMode::Gcm && version >= Version::new(1, 4) {
                    if !aad.is_empty() {
                        v.push(Item::bytes(t::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, aad.clone()));
                    }
                    v.push(Item::bytes(t::AUTHENTICATED_ENCRYPTION_TAG, tag.clone()));
                }
                v
            }
            Request::Locate { attributes: attrs, max_items } => {
                let mut v = Vec::new();
                if let Some(m) = max_items {
                    v.push(Item::int(t::MAXIMUM_ITEMS, *m));
                }
                if version.is_v2() {
                    v.push(attributes(version, attrs));
                } else {
                    v.extend(attrs.iter().map(|a| a.encode(version)));
                }
                v
            }
            Request::GetAttributes { uid: u, names } => {
                let mut v = vec![uid(u)];
                for n in names {
                    if version.is_v2() {
                        match Attribute::tag_for_name(n) {
                            Some(tag) => v.push(Item::enumeration(t::ATTRIBUTE_REFERENCE, tag.0)),
                            None => continue,
                        }
                    } else {
                        v.push(Item::text(t::ATTRIBUTE_NAME, n.clone()));
                    }
                }
                v
            }
            Request::AddAttribute { uid: u, attribute } | Request::ModifyAttribute { uid: u, attribute } => {
                if version.is_v2() {
                    vec![uid(u), Item::structure(t::NEW_ATTRIBUTE, vec![attribute.encode(version)])]
                } else {
                    vec![uid(u), attribute.encode(version)]
                }
            }
            Request::Revoke { uid: u, reason_code, message } => {
                let mut reason = vec![Item::enumeration(t::REVOCATION_REASON_CODE, *reason_code)];
                if let Some(m) = message {
                    reason.push(Item::text(t::REVOCATION_MESSAGE, m.clone()));
                }
                vec![uid(u), Item::structure(t::REVOCATION_REASON, reason)]
            }
            Request::Query { functions } => functions.iter().map(|f| Item::enumeration(t::QUERY_FUNCTION, *f)).collect(),
            Request::DiscoverVersions { versions } => versions.iter().map(|v| v.item()).collect(),
        };
        Item::structure(t::REQUEST_PAYLOAD, items)
    }
}

/// A whole request message: header and one batch item per request. Batch
/// items carry ids "0", "1", ... when there is more than one.
pub fn request_message(version: Version, batch: &[Request]) -> Item {
    let header = Item::structure(t::REQUEST_HEADER, vec![version.item(), Item::int(t::BATCH_COUNT, batch.len() as i32)]);
    let mut items = vec![header];
    for (i, r) in batch.iter().enumerate() {
        let mut b = vec![Item::enumeration(t::OPERATION, r.operation())];
        if batch.len() > 1 {
            b.push(Item::bytes(t::UNIQUE_BATCH_ITEM_ID, i.to_string().into_bytes()));
        }
        b.push(r.payload(version));
        items.push(Item::structure(t::BATCH_ITEM, b));
    }
    Item::structure(t::REQUEST_MESSAGE, items)
}

/// A protocol-level problem with a response (not a server refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed KMIP response: {0}")]
pub struct ResponseError(pub String);

fn bad(msg: impl Into<String>) -> ResponseError {
    ResponseError(msg.into())
}

/// The server's verdict on one batch item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    pub operation: Option<u32>,
    pub status: u32,
    pub reason: Option<u32>,
    pub message: Option<String>,
    pub payload: Option<Item>,
}

impl BatchResult {
    pub fn is_success(&self) -> bool {
        self.status == enums::result_status::SUCCESS
    }

    /// `OperationFailed: ItemNotFound: <message>`.
    pub fn describe_failure(&self) -> String {
        let status = t::enum_name(t::RESULT_STATUS, self.status).map(str::to_owned).unwrap_or_else(|| format!("status 0x{:X}", self.status));
        let reason = self.reason.map(|r| t::enum_name(t::RESULT_REASON, r).map(str::to_owned).unwrap_or_else(|| format!("reason 0x{r:X}")));
        let mut s = status;
        if let Some(r) = reason {
            s += &format!(": {r}");
        }
        if let Some(m) = &self.message {
            s += &format!(": {m}");
        }
        s
    }

    fn payload(&self) -> Result<&Item, ResponseError> {
        self.payload.as_ref().ok_or_else(|| bad("successful batch item without a response payload"))
    }
}

/// A parsed response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    pub time_stamp: Option<i64>,
    pub items: Vec<BatchResult>,
}

/// Parse a decoded response message.
pub fn parse_response(msg: &Item) -> Result<Response, ResponseError> {
    if msg.tag != t::RESPONSE_MESSAGE {
        return Err(bad(format!("root tag is {}, expected ResponseMessage", msg.tag)));
    }
    let header = msg.child(t::RESPONSE_HEADER).ok_or_else(|| bad("no ResponseHeader"))?;
    let version = header.child(t::PROTOCOL_VERSION).and_then(Version::from_item).ok_or_else(|| bad("no ProtocolVersion in the header"))?;
    let count = header.child(t::BATCH_COUNT).and_then(Item::as_int).ok_or_else(|| bad("no BatchCount in the header"))?;
    let time_stamp = header.child(t::TIME_STAMP).and_then(|i| match i.value {
        Value::DateTime(v) => Some(v),
        _ => None,
    });
    let mut items = Vec::new();
    for b in msg.children(t::BATCH_ITEM) {
        items.push(BatchResult {
            operation: b.child(t::OPERATION).and_then(Item::as_enum),
            status: b.child(t::RESULT_STATUS).and_then(Item::as_enum).ok_or_else(|| bad("batch item without ResultStatus"))?,
            reason: b.child(t::RESULT_REASON).and_then(Item::as_enum),
            message: b.child(t::RESULT_MESSAGE).and_then(Item::as_text).map(str::to_owned),
            payload: b.child(t::RESPONSE_PAYLOAD).cloned(),
        });
    }
    if items.len() != count as usize {
        return Err(bad(format!("BatchCount says {count} but {} batch items follow", items.len())));
    }
    Ok(Response { version, time_stamp, items })
}

fn uid_of(p: &Item) -> Result<String, ResponseError> {
    p.child(t::UNIQUE_IDENTIFIER).and_then(Item::as_text).map(str::to_owned).ok_or_else(|| bad("no Unique Identifier in the response"))
}

fn bytes_of(p: &Item, tag: Tag, what: &str) -> Result<Vec<u8>, ResponseError> {
    p.child(tag).and_then(Item::as_bytes).map(<[u8]>::to_vec).ok_or_else(|| bad(format!("no {what} in the response")))
}

/// [`bytes_of`] for secrets: zeroized on drop.
fn secret_of(p: &Item, tag: Tag, what: &str) -> Result<Zeroizing<Vec<u8>>, ResponseError> {
    bytes_of(p, tag, what).map(Zeroizing::new)
}

impl BatchResult {
    /// Unique Identifier of a Create/Activate/Revoke/Destroy/Add-/Modify-Attribute result.
    pub fn uid(&self) -> Result<String, ResponseError> {
        uid_of(self.payload()?)
    }

    /// Encrypt result.
    pub fn encrypted(&self) -> Result<Encrypted, ResponseError> {
        let p = self.payload()?;
        Ok(Encrypted {
            data: bytes_of(p, t::DATA, "Data")?,
            iv: p.child(t::IV_COUNTER_NONCE).and_then(Item::as_bytes).map(<[u8]>::to_vec),
            tag: p.child(t::AUTHENTICATED_ENCRYPTION_TAG).and_then(Item::as_bytes).map(<[u8]>::to_vec),
        })
    }

    /// Decrypt result: the plaintext.
    pub fn decrypted(&self) -> Result<Zeroizing<Vec<u8>>, ResponseError> {
        secret_of(self.payload()?, t::DATA, "Data")
    }

    /// Get of a symmetric key: its raw key material.
    pub fn key_material(&self) -> Result<Zeroizing<Vec<u8>>, ResponseError> {
        let p = self.payload()?;
        let block = p
            .items()
            .iter()
            .find_map(|o| o.child(t::KEY_BLOCK))
            .ok_or_else(|| bad("no Key Block in the Get response"))?;
        let value = block.child(t::KEY_VALUE).ok_or_else(|| bad("no Key Value in the Key Block"))?;
        // Key Value is a structure holding Key Material, or (wrapped keys) a byte string.
        let material = match &value.value {
            Value::Structure(_) => value.child(t::KEY_MATERIAL),
            _ => None,
        }
        .ok_or_else(|| bad("no Key Material in the Key Value"))?;
        match &material.value {
            Value::ByteString(b) => Ok(b.clone()),
            _ => Err(bad("Key Material is not a byte string (transparent formats are not supported)")),
        }
    }

    /// Locate result: identifiers found.
    pub fn located(&self) -> Result<Vec<String>, ResponseError> {
        Ok(match &self.payload {
            None => Vec::new(),
            Some(p) => p.children(t::UNIQUE_IDENTIFIER).filter_map(Item::as_text).map(str::to_owned).collect(),
        })
    }

    /// Get Attributes result (1.x Attribute structures or 2.0 Attributes).
    pub fn attributes(&self) -> Result<Vec<Attribute>, ResponseError> {
        let p = self.payload()?;
        let mut out = Vec::new();
        for item in p.items() {
            if item.tag == t::ATTRIBUTE {
                out.extend(Attribute::decode(item));
            } else if item.tag == t::ATTRIBUTES {
                out.extend(item.items().iter().filter_map(Attribute::decode));
            }
        }
        Ok(out)
    }

    /// Query result.
    pub fn query(&self) -> Result<QueryResult, ResponseError> {
        let p = self.payload()?;
        Ok(QueryResult {
            operations: p.children(t::OPERATION).filter_map(Item::as_enum).collect(),
            object_types: p.children(t::OBJECT_TYPE).filter_map(Item::as_enum).collect(),
            vendor: p.child(t::VENDOR_IDENTIFICATION).and_then(Item::as_text).map(str::to_owned),
        })
    }

    /// Discover Versions result, in the server's order of preference.
    pub fn versions(&self) -> Result<Vec<Version>, ResponseError> {
        Ok(match &self.payload {
            None => Vec::new(),
            Some(p) => p.children(t::PROTOCOL_VERSION).filter_map(Version::from_item).collect(),
        })
    }
}

/// What Encrypt returned.
#[derive(Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub data: Vec<u8>,
    /// The IV, if the server chose or echoed one.
    pub iv: Option<Vec<u8>>,
    /// The AEAD tag (KMIP 1.4 and later).
    pub tag: Option<Vec<u8>>,
}

impl fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encrypted({} bytes)", self.data.len())
    }
}

/// What Query reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryResult {
    pub operations: Vec<u32>,
    pub object_types: Vec<u32>,
    pub vendor: Option<String>,
}

impl QueryResult {
    pub fn supports(&self, operation: u32) -> bool {
        self.operations.contains(&operation)
    }
    pub fn operation_names(&self) -> Vec<String> {
        self.operations
            .iter()
            .map(|o| t::enum_name(t::OPERATION, *o).map(str::to_owned).unwrap_or_else(|| format!("0x{o:X}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttlv::{decode, encode, Limits};

    #[test]
    fn create_in_both_versions() {
        let r = Request::CreateAes { bits: 256, usage_mask: 0x0C, attributes: vec![Attribute::Name("mk".into())] };
        for v in [Version::new(1, 4), Version::new(2, 0)] {
            let msg = request_message(v, std::slice::from_ref(&r));
            let back = decode(&encode(&msg), &Limits::default()).unwrap();
            assert_eq!(back, msg);
            let payload = back.child(t::BATCH_ITEM).unwrap().child(t::REQUEST_PAYLOAD).unwrap();
            let container = if v.is_v2() { t::ATTRIBUTES } else { t::TEMPLATE_ATTRIBUTE };
            let attrs: Vec<_> = payload.child(container).unwrap().items().iter().filter_map(Attribute::decode).collect();
            assert!(attrs.contains(&Attribute::Name("mk".into())), "{v}: {attrs:?}");
            assert!(attrs.contains(&Attribute::CryptographicLength(256)));
        }
    }

    #[test]
    fn response_failure_text() {
        let msg = Item::structure(
            t::RESPONSE_MESSAGE,
            vec![
                Item::structure(t::RESPONSE_HEADER, vec![Version::new(1, 4).item(), Item::int(t::BATCH_COUNT, 1)]),
                Item::structure(
                    t::BATCH_ITEM,
                    vec![
                        Item::enumeration(t::OPERATION, enums::operation::GET),
                        Item::enumeration(t::RESULT_STATUS, enums::result_status::OPERATION_FAILED),
                        Item::enumeration(t::RESULT_REASON, enums::result_reason::ITEM_NOT_FOUND),
                        Item::text(t::RESULT_MESSAGE, "no such object"),
                    ],
                ),
            ],
        );
        let r = parse_response(&msg).unwrap();
        assert!(!r.items[0].is_success());
        let d = r.items[0].describe_failure();
        assert!(d.contains("no such object") && d.contains("ItemNotFound"), "{d}");
    }
}
