//! The audit log: every key operation (pool creation, client registration,
//! DEK issue, DEK recover; successes and failures) as one row of a hash
//! chain in the catalog.
//!
//! This module holds what is not SQL: who acted ([`Actor`]), what is
//! recorded ([`AuditEvent`], [`AuditRecord`]), the row hash and the chain
//! check ([`ChainVerifier`]). The catalog's writer thread
//! (`catalog/writer.rs`) is the only code that appends rows: it reads the
//! chain's head and extends it inside the same `BEGIN IMMEDIATE`
//! transaction, so the chain has one writer even when several processes
//! share the catalog file.
//!
//! Row hash: SHA-256 over
//!
//! ```text
//! field("keybridge/v1/audit") || u64be(seq) || field(at) || field(actor)
//!   || field(action) || opt(pool) || opt(client) || opt(dek_id)
//!   || field(result) || prev_hash (32 bytes)
//! field(x) = u32be(len(x)) || x
//! opt(None) = 0x00, opt(Some(x)) = 0x01 || field(x)
//! ```
//!
//! The first row's `prev_hash` is 32 zero bytes. No row ever holds a secret:
//! names, ids, and error texts from [`keybridge_proto::Error`]'s `Display`, which never
//! carries key material, PINs or passwords.
//!
//! What the chain detects and what it cannot: an edited row (its hash no
//! longer matches), a removed or inserted row in the middle (a gap in `seq`,
//! or a `prev_hash` that does not match the row before), reordered rows. It
//! cannot detect rows removed at the END (the shorter chain is still a valid
//! chain), nor a rewrite of the whole chain from some row on by someone who
//! can write the catalog (there is no secret key): record the head hash
//! printed by `keybridge audit verify` outside the catalog and compare.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Domain-separation tag of the row hash.
pub const DOMAIN: &str = "keybridge/v1/audit";

/// `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// `result` of a row written when an operation begins (DEK recover): the
/// operation's outcome is in a later row with the same action and objects.
pub const STARTED: &str = "started";

/// Longest text kept from a caller-supplied name (pool, client, DEK id): an
/// invalid name is recorded as given, but not without bound.
const MAX_FIELD: usize = 128;

/// Who performed an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The OS user running the CLI (from `$USER`, or "unknown").
    Local(String),
    /// An operator authenticated by the service.
    Operator(String),
    /// A backup client (acting for itself).
    Client(String),
}

impl Actor {
    /// The OS user running this process: `$USER`, or "unknown".
    pub fn local_user() -> Actor {
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "unknown".into());
        Actor::Local(user)
    }
}

impl fmt::Display for Actor {
    /// `local:alice`, `operator:NAME`, `client:NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Local(n) => write!(f, "local:{n}"),
            Actor::Operator(n) => write!(f, "operator:{n}"),
            Actor::Client(n) => write!(f, "client:{n}"),
        }
    }
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PoolCreate,
    ClientAdd,
    DekIssue,
    DekRecover,
    /// An online copy of the catalog (`keybridge catalog backup`), recorded
    /// in the catalog that was copied.
    CatalogBackup,
    /// A catalog put back from a copy (`keybridge catalog restore`),
    /// recorded as the first row after the copy's head.
    CatalogRestore,
    /// A new KEK generation for a pool (`keybridge pool rekey`).
    PoolRekey,
    /// New master keys for a pool, its KEKs re-wrapped under them.
    PoolRotate,
    /// A wrapping of a pool's KEKs added in another KMS.
    PoolWrap,
    /// A pool's wrappings in one KMS removed.
    PoolUnwrap,
    /// A pool moved to another KMS (wrap there, unwrap elsewhere).
    PoolMigrate,
    /// A pool's KEKs exported under a passphrase (escrow).
    PoolExport,
    /// A pool's KEKs imported from an escrow export.
    PoolImport,
    /// Every master key of a pool destroyed.
    PoolShred,
    /// Deactivated master keys that nothing uses destroyed.
    KeyRetire,
    /// A pool's rotation period set (`keybridge pool schedule`).
    PoolSchedule,
    /// A pool's interrupted change finished or rolled back on request
    /// (`keybridge pool resume`).
    PoolResume,
    /// An interrupted change of a pool taken over from the process the
    /// operator named (`keybridge pool resume --take-over`), then finished
    /// or rolled back.
    PoolTakeOver,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::PoolCreate => "pool.create",
            Action::ClientAdd => "client.add",
            Action::DekIssue => "dek.issue",
            Action::DekRecover => "dek.recover",
            Action::CatalogBackup => "catalog.backup",
            Action::CatalogRestore => "catalog.restore",
            Action::PoolRekey => "pool.rekey",
            Action::PoolRotate => "pool.rotate",
            Action::PoolWrap => "pool.wrap",
            Action::PoolUnwrap => "pool.unwrap",
            Action::PoolMigrate => "pool.migrate",
            Action::PoolExport => "pool.export",
            Action::PoolImport => "pool.import",
            Action::PoolShred => "pool.shred",
            Action::KeyRetire => "key.retire",
            Action::PoolSchedule => "pool.schedule",
            Action::PoolResume => "pool.resume",
            Action::PoolTakeOver => "pool.take_over",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to append; the writer adds `seq`, `at` and the hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: String,
    pub action: Action,
    pub pool: Option<String>,
    pub client: Option<String>,
    pub dek_id: Option<String>,
    /// `ok`, [`STARTED`], or `error: <message>`.
    pub result: String,
}

fn bounded(s: &str) -> String {
    s.chars().take(MAX_FIELD).collect()
}

impl AuditEvent {
    /// A successful `action` by `actor`; add the objects with the builders.
    pub fn new(actor: &Actor, action: Action) -> AuditEvent {
        AuditEvent { actor: actor.to_string(), action, pool: None, client: None, dek_id: None, result: "ok".into() }
    }

    pub fn pool(mut self, pool: &str) -> Self {
        self.pool = Some(bounded(pool));
        self
    }

    pub fn client(mut self, client: &str) -> Self {
        self.client = Some(bounded(client));
        self
    }

    pub fn dek(mut self, dek_id: &str) -> Self {
        self.dek_id = Some(bounded(dek_id));
        self
    }

    /// The same event, recorded as begun: the durable row a recover
    /// writes while the KMS decrypts, before any key is released; its
    /// outcome follows in a second row.
    pub fn started(mut self) -> Self {
        self.result = STARTED.into();
        self
    }

    /// The same event, failed with `err` (its `Display`, which carries no
    /// secrets).
    pub fn failed(mut self, err: &keybridge_proto::Error) -> Self {
        self.result = format!("error: {err}");
        self
    }
}

/// One row of the audit table, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub pool: Option<String>,
    pub client: Option<String>,
    pub dek_id: Option<String>,
    pub result: String,
    #[serde(serialize_with = "hex_bytes")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "hex_bytes")]
    pub hash: Vec<u8>,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

impl AuditRecord {
    /// The hash this row's fields (and its `prev_hash`) should have.
    pub fn expected_hash(&self) -> Option<[u8; 32]> {
        let prev: [u8; 32] = self.prev_hash.as_slice().try_into().ok()?;
        Some(row_hash(&RowFields {
            seq: self.seq,
            at: &self.at,
            actor: &self.actor,
            action: &self.action,
            pool: self.pool.as_deref(),
            client: self.client.as_deref(),
            dek_id: self.dek_id.as_deref(),
            result: &self.result,
            prev_hash: &prev,
        }))
    }
}

/// The hashed fields of a row.
#[derive(Debug, Clone, Copy)]
pub struct RowFields<'a> {
    pub seq: i64,
    pub at: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub pool: Option<&'a str>,
    pub client: Option<&'a str>,
    pub dek_id: Option<&'a str>,
    pub result: &'a str,
    pub prev_hash: &'a [u8; 32],
}

/// SHA-256 over the unambiguous encoding in the module documentation.
pub fn row_hash(r: &RowFields<'_>) -> [u8; 32] {
    fn field(h: &mut Sha256, s: &str) {
        h.update((s.len() as u32).to_be_bytes());
        h.update(s.as_bytes());
    }
    fn opt(h: &mut Sha256, s: Option<&str>) {
        match s {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                field(h, s);
            }
        }
    }
    let mut h = Sha256::new();
    field(&mut h, DOMAIN);
    h.update((r.seq as u64).to_be_bytes());
    field(&mut h, r.at);
    field(&mut h, r.actor);
    field(&mut h, r.action);
    opt(&mut h, r.pool);
    opt(&mut h, r.client);
    opt(&mut h, r.dek_id);
    field(&mut h, r.result);
    h.update(r.prev_hash);
    h.finalize().into()
}

/// The first row that breaks the chain, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The `seq` of the first bad (or missing) row.
    pub seq: i64,
    /// `edited`, `missing` or `out_of_order`.
    pub kind: &'static str,
    /// For an operator: "row 7 was edited (hash mismatch)".
    pub message: String,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Rows that verified (all rows when the chain is intact).
    pub rows: u64,
    /// `seq` of the last verified row (0 when none).
    pub head_seq: i64,
    /// Hash of the last verified row, hex (None when none).
    pub head_hash: Option<String>,
    /// The first break, if any.
    pub broken: Option<ChainBreak>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Checks rows fed in ascending `seq` order; stops at the first break.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev: [u8; 32],
    rows: u64,
    broken: Option<ChainBreak>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { expected_seq: 1, prev: GENESIS, rows: 0, broken: None }
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// A break if `seq` is not the next expected one.
    fn seq_break(&self, seq: i64) -> Option<ChainBreak> {
        let n = self.expected_seq;
        if seq == n {
            return None;
        }
        Some(if seq > n {
            let missing = if seq == n + 1 { format!("row {n} is missing") } else { format!("rows {n} to {} are missing", seq - 1) };
            ChainBreak { seq: n, kind: "missing", message: format!("{missing} (seq jumps from {} to {seq}): rows removed", n - 1) }
        } else {
            ChainBreak { seq: n, kind: "out_of_order", message: format!("row {seq} appears where row {n} was expected: rows reordered") }
        })
    }

    /// Feed the next row (ascending `seq`); returns false once the chain is
    /// broken (further rows are ignored).
    pub fn push(&mut self, row: &AuditRecord) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let n = self.expected_seq;
        let broken = if let Some(b) = self.seq_break(row.seq) {
            Some(b)
        } else if row.prev_hash.as_slice() != self.prev {
            // Checked before the row's own hash: a row moved here from
            // elsewhere is whole (its hash matches its fields) but does not
            // link to its predecessor.
            let message = if n == 1 {
                "row 1 does not start the chain (prev_hash is not zero: rows removed from the start or reordered)".to_owned()
            } else {
                format!("row {n} does not follow row {} (prev_hash mismatch: rows removed or reordered)", n - 1)
            };
            Some(ChainBreak { seq: n, kind: "out_of_order", message })
        } else {
            match row.expected_hash() {
                Some(h) if h.as_slice() == row.hash.as_slice() => None,
                _ => Some(ChainBreak { seq: n, kind: "edited", message: format!("row {n} was edited (hash mismatch)") }),
            }
        };
        match broken {
            Some(b) => {
                self.broken = Some(b);
                false
            }
            None => {
                self.prev.copy_from_slice(&row.hash);
                self.expected_seq += 1;
                self.rows += 1;
                true
            }
        }
    }

    /// The row `seq` could not be read as an audit row (a field holds a
    /// value of the wrong type): an edit, unless rows before it are missing.
    pub fn finish_with_unreadable(mut self, seq: i64) -> AuditReport {
        if self.broken.is_none() {
            let n = self.expected_seq;
            self.broken = Some(self.seq_break(seq).unwrap_or_else(|| ChainBreak {
                seq: n,
                kind: "edited",
                message: format!("row {n} was edited (a field holds a value of the wrong type)"),
            }));
        }
        self.finish()
    }

    pub fn finish(self) -> AuditReport {
        AuditReport {
            rows: self.rows,
            head_seq: self.expected_seq - 1,
            head_hash: (self.rows > 0).then(|| hex::encode(self.prev)),
            broken: self.broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let mut r = AuditRecord {
                    seq,
                    at: format!("2024-01-01T00:00:{seq:02}.000Z"),
                    actor: "local:alice".into(),
                    action: "dek.issue".into(),
                    pool: Some("p".into()),
                    client: Some("c".into()),
                    dek_id: Some(format!("d{seq}")),
                    result: "ok".into(),
                    prev_hash: prev.to_vec(),
                    hash: vec![],
                };
                let h = r.expected_hash().unwrap();
                r.hash = h.to_vec();
                prev = h;
                r
            })
            .collect()
    }

    fn verify(rows: &[AuditRecord]) -> AuditReport {
        let mut v = ChainVerifier::new();
        for r in rows {
            v.push(r);
        }
        v.finish()
    }

    #[test]
    fn intact_chain_and_breaks() {
        let rows = chain(5);
        let ok = verify(&rows);
        assert!(ok.ok());
        assert_eq!((ok.rows, ok.head_seq), (5, 5));
        assert_eq!(ok.head_hash.as_deref(), Some(hex::encode(&rows[4].hash).as_str()));
        assert_eq!(verify(&[]).head_hash, None);

        let mut edited = rows.clone();
        edited[2].result = "error: x".into();
        let b = verify(&edited).broken.unwrap();
        assert_eq!((b.seq, b.kind), (3, "edited"));
        assert_eq!(b.message, "row 3 was edited (hash mismatch)");

        let mut gap = rows.clone();
        gap.remove(1);
        assert_eq!(verify(&gap).broken.unwrap().message, "row 2 is missing (seq jumps from 1 to 3): rows removed");

        let mut swapped = rows.clone();
        swapped.swap(1, 2);
        (swapped[1].seq, swapped[2].seq) = (2, 3);
        let b = verify(&swapped).broken.unwrap();
        assert_eq!((b.seq, b.kind), (2, "out_of_order"), "{}", b.message);

        let mut first = rows;
        first.remove(0);
        for (i, r) in first.iter_mut().enumerate() {
            r.seq = i as i64 + 1;
        }
        assert!(verify(&first).broken.unwrap().message.starts_with("row 1 does not start the chain"));
    }

    #[test]
    fn encoding_is_unambiguous() {
        let base = RowFields {
            seq: 1,
            at: "t",
            actor: "a",
            action: "x",
            pool: Some("ab"),
            client: None,
            dek_id: None,
            result: "ok",
            prev_hash: &GENESIS,
        };
        // Moving a character from one field to the next, or a value from
        // one optional field to another, changes the hash.
        assert_ne!(row_hash(&base), row_hash(&RowFields { pool: Some("a"), client: Some("b"), ..base }));
        assert_ne!(row_hash(&base), row_hash(&RowFields { pool: None, client: Some("ab"), ..base }));
        assert_ne!(row_hash(&base), row_hash(&RowFields { pool: Some(""), ..base }));
        assert_ne!(row_hash(&RowFields { pool: None, ..base }), row_hash(&RowFields { pool: Some(""), ..base }));
        assert_ne!(row_hash(&base), row_hash(&RowFields { seq: 2, ..base }));
        assert_eq!(Actor::Local("alice".into()).to_string(), "local:alice");
        assert_eq!(Actor::Operator("o".into()).to_string(), "operator:o");
        assert_eq!(Actor::Client("c".into()).to_string(), "client:c");
    }
}
