//! The audit log on the built-in KMS: which rows each key operation leaves,
//! the hash chain and what `audit verify` reports when rows are edited,
//! removed or reordered, through the library and the `keybridge` binary.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::{password, test_kdf, Kind, Rig};
use keybridge_catalog::audit::{Actor, AuditRecord};
use keybridge::flows::{backup, clients, pool_creation, restore};
use keybridge::{Error, Keybridge};
use serde_json::Value;

const OPS: fn() -> Actor = || Actor::Operator("ops".into());

fn client_actor(name: &str) -> Actor {
    Actor::Client(name.into())
}

struct Scenario {
    rig: Rig,
    kb: Keybridge,
    dek_id: String,
    /// The DEK itself, hex: must never appear in the log.
    dek_hex: String,
}

/// Pool create, two clients, a DEK issued to c1 and recovered by it, and a
/// recover of the same DEK by mallory (denied).
async fn scenario() -> Scenario {
    let rig = Rig::new(Kind::Builtin).unwrap();
    let kb = rig.open();
    let opts = pool_creation::PoolOptions { kek_bits: 2048, master_key: None };
    pool_creation::create_pool(&kb, "p1", "kms", &opts, &OPS()).await.unwrap();
    clients::add_client(&kb, "c1", &password("c1-network-password"), test_kdf(), &OPS()).await.unwrap();
    clients::add_client(&kb, "mallory", &password("mallory-network-password"), test_kdf(), &OPS()).await.unwrap();
    let g = backup::issue_dek(&kb, "p1", "c1", &client_actor("c1")).await.unwrap();
    let (dek, _) = restore::recover_inner(&kb, &g.dek_id, "c1", &client_actor("c1")).await.unwrap();
    let err = restore::recover_dek(&kb, &g.dek_id, "mallory", &client_actor("mallory")).await.unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err}");
    Scenario { rig, kb, dek_id: g.dek_id, dek_hex: dek.expose_hex().as_str().to_owned() }
}

async fn rows(kb: &Keybridge) -> Vec<AuditRecord> {
    kb.catalog().audit_rows(1000).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_leave_the_expected_rows() {
    let s = scenario().await;
    let rows = rows(&s.kb).await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.seq, r.actor.as_str(), r.action.as_str(), r.pool.as_deref(), r.client.as_deref(), r.dek_id.as_deref()))
        .collect();
    let d = Some(s.dek_id.as_str());
    assert_eq!(
        got,
        vec![
            (1, "operator:ops", "pool.create", Some("p1"), None, None),
            (2, "operator:ops", "client.add", None, Some("c1"), None),
            (3, "operator:ops", "client.add", None, Some("mallory"), None),
            (4, "client:c1", "dek.issue", Some("p1"), Some("c1"), d),
            (5, "client:c1", "dek.recover", Some("p1"), Some("c1"), d),
            (6, "client:c1", "dek.recover", Some("p1"), Some("c1"), d),
            (7, "client:mallory", "dek.recover", Some("p1"), Some("mallory"), d),
        ]
    );
    // A recover that reaches the KMS leaves "started" (durable before the
    // DEK is released), then its outcome.
    let results: Vec<_> = rows.iter().map(|r| r.result.as_str()).collect();
    assert_eq!(results[..6], ["ok", "ok", "ok", "ok", "started", "ok"]);
    assert_eq!(rows[6].result, format!("error: denied: DEK {} was not issued to client 'mallory'", s.dek_id));

    // The chain: row 1 starts at zero, each row links to the one before.
    assert_eq!(rows[0].prev_hash, vec![0u8; 32]);
    for w in rows.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash, "row {} does not link", w[1].seq);
    }
    for r in &rows {
        assert_eq!(r.expected_hash().unwrap().to_vec(), r.hash, "row {}", r.seq);
        assert!(r.at.ends_with('Z') && r.at.len() == 24, "at is RFC 3339 UTC with ms: {}", r.at);
    }
    // The DEK row and its audit row were committed together, at one time.
    assert_eq!(s.kb.catalog().dek(&s.dek_id).await.unwrap().created_at, rows[3].at);

    // No secret in any row: no DEK, no password.
    let conn = common::sqlite(&s.kb);
    let dump: String = conn
        .query_row(
            "SELECT group_concat(seq || at || actor || action || ifnull(pool,'') || ifnull(client,'') || ifnull(dek_id,'') || result || hex(prev_hash) || hex(hash), '|') FROM audit",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for secret in ["c1-network-password", "mallory-network-password", &s.dek_hex, &s.dek_hex.to_ascii_uppercase()] {
        assert!(!dump.contains(secret), "a secret is in the audit log");
    }

    let report = s.kb.catalog().verify_audit().await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.rows, report.head_seq), (7, 7));
    assert_eq!(report.head_hash.as_deref(), Some(hex::encode(&rows[6].hash).as_str()));
    drop(s.rig);
}

/// A recover's outcome row is queued without waiting; closing the catalog
/// commits it (the writer thread is joined), so a process that recovers and
/// exits leaves both rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_outcome_rows_survive_closing_the_catalog() {
    let Scenario { rig, kb, .. } = scenario().await;
    drop(kb);
    let reopened = rig.open();
    let results: Vec<_> = rows(&reopened).await.into_iter().map(|r| r.result).collect();
    assert_eq!(results.len(), 7, "{results:?}");
    assert_eq!(results[4..6], ["started", "ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_audited_and_the_original_error_returned() {
    let rig = Rig::new(Kind::Builtin).unwrap();
    let kb = rig.open();
    let opts = pool_creation::PoolOptions { kek_bits: 2048, master_key: None };
    let err = pool_creation::create_pool(&kb, "../bad", "kms", &opts, &OPS()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let err = pool_creation::create_pool(&kb, "p", "nokms", &opts, &OPS()).await.unwrap_err();
    assert_eq!(err.exit_code(), 4, "{err}");
    let err = backup::issue_dek(&kb, "nopool", "c", &client_actor("c")).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { what: "pool", .. }), "{err}");
    let err = restore::recover_dek(&kb, "no-such-dek", "c", &client_actor("c")).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { what: "DEK", .. }), "{err}");
    let rows = rows(&kb).await;
    let got: Vec<_> = rows.iter().map(|r| (r.action.as_str(), r.pool.as_deref(), r.result.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("pool.create", Some("../bad"), "error: invalid pool name '../bad': only letters, digits, '.', '_' and '-' are allowed"),
            ("pool.create", Some("p"), "error: KMS (no [[kms]] entry in the configuration) 'nokms' not found"),
            ("dek.issue", Some("nopool"), "error: pool 'nopool' not found"),
            ("dek.recover", None, "error: DEK 'no-such-dek' not found"),
        ]
    );
    assert!(kb.catalog().verify_audit().await.unwrap().ok());
}

/// No key leaves without its audit record: when the audit append fails,
/// issue stores no DEK and recover returns no DEK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_without_a_durable_audit_row() {
    let s = scenario().await;
    let p = s.kb.catalog().pool_by_name("p1").await.unwrap();
    common::execute_raw(&s.kb, "CREATE TRIGGER audit_full BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END")
        .unwrap();
    let err = backup::issue_dek(&s.kb, "p1", "c1", &client_actor("c1")).await.unwrap_err();
    assert!(err.to_string().contains("audit log unavailable"), "{err}");
    assert_eq!(s.kb.catalog().count_deks(p.id).await.unwrap(), 1, "a DEK was stored without its audit row");
    let err = restore::recover_inner(&s.kb, &s.dek_id, "c1", &client_actor("c1")).await.unwrap_err();
    assert!(err.to_string().contains("audit log unavailable"), "{err}");
    // A failed operation whose audit append also fails still reports its own error.
    let err = restore::recover_dek(&s.kb, &s.dek_id, "mallory", &client_actor("mallory")).await.unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err}");
    common::execute_raw(&s.kb, "DROP TRIGGER audit_full").unwrap();
    assert_eq!(rows(&s.kb).await.len(), 7);
    backup::issue_dek(&s.kb, "p1", "c1", &client_actor("c1")).await.unwrap();
    assert_eq!(rows(&s.kb).await.len(), 8);
    assert!(s.kb.catalog().verify_audit().await.unwrap().ok());
}

async fn broken(kb: &Keybridge) -> (i64, String, String) {
    let r = kb.catalog().verify_audit().await.unwrap();
    let b = r.broken.clone().unwrap_or_else(|| panic!("chain reported intact: {r:?}"));
    (b.seq, b.kind.to_owned(), b.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_an_edited_row() {
    let s = scenario().await;
    common::execute_raw(&s.kb, "UPDATE audit SET result = 'ok' WHERE seq = 7").unwrap();
    assert_eq!(broken(&s.kb).await, (7, "edited".into(), "row 7 was edited (hash mismatch)".into()));
    // Put it back: intact again (the check looks at that field).
    common::execute_raw(&s.kb, &format!("UPDATE audit SET result = 'error: denied: DEK {} was not issued to client ''mallory''' WHERE seq = 7", s.dek_id))
        .unwrap();
    assert!(s.kb.catalog().verify_audit().await.unwrap().ok());
    // Other fields: the actor of row 2.
    common::execute_raw(&s.kb, "UPDATE audit SET actor = 'operator:someone-else' WHERE seq = 2").unwrap();
    assert_eq!(broken(&s.kb).await.2, "row 2 was edited (hash mismatch)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_removed_row() {
    let s = scenario().await;
    common::execute_raw(&s.kb, "DELETE FROM audit WHERE seq = 3").unwrap();
    assert_eq!(broken(&s.kb).await, (3, "missing".into(), "row 3 is missing (seq jumps from 2 to 4): rows removed".into()));
    // Renumbered to hide the gap: row 3 no longer follows row 2.
    common::execute_raw(&s.kb, "UPDATE audit SET seq = seq - 1 WHERE seq > 3").unwrap();
    let (seq, kind, message) = broken(&s.kb).await;
    assert_eq!((seq, kind.as_str()), (3, "out_of_order"));
    assert_eq!(message, "row 3 does not follow row 2 (prev_hash mismatch: rows removed or reordered)");
    // New rows still chain on from the (shortened) head; the break stays where it was.
    backup::issue_dek(&s.kb, "p1", "c1", &client_actor("c1")).await.unwrap();
    assert_eq!(broken(&s.kb).await.0, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_reordered_rows() {
    let s = scenario().await;
    for sql in ["UPDATE audit SET seq = -1 WHERE seq = 4", "UPDATE audit SET seq = 4 WHERE seq = 5", "UPDATE audit SET seq = 5 WHERE seq = -1"] {
        common::execute_raw(&s.kb, sql).unwrap();
    }
    let rows = rows(&s.kb).await;
    assert_eq!((rows[3].action.as_str(), rows[4].action.as_str()), ("dek.recover", "dek.issue"), "rows were swapped");
    assert_eq!(broken(&s.kb).await, (4, "out_of_order".into(), "row 4 does not follow row 3 (prev_hash mismatch: rows removed or reordered)".into()));
}

/// 64 concurrent issues share group commits; the chain has exactly one row
/// per DEK, contiguous, and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_issues_extend_one_chain() {
    let rig = Rig::new(Kind::Builtin).unwrap();
    let kb = Arc::new(rig.open());
    let opts = pool_creation::PoolOptions { kek_bits: 2048, master_key: None };
    pool_creation::create_pool(&kb, "p1", "kms", &opts, &OPS()).await.unwrap();
    clients::add_client(&kb, "c1", &password("c1-network-password"), test_kdf(), &OPS()).await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let kb = kb.clone();
            tokio::spawn(async move { backup::issue_dek(&kb, "p1", "c1", &client_actor("c1")).await.unwrap().dek_id })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        assert!(ids.insert(t.await.unwrap()));
    }
    let rows = rows(&kb).await;
    assert_eq!(rows.len(), 66);
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=66).collect::<Vec<_>>());
    let issued: std::collections::HashSet<_> = rows.iter().filter(|r| r.action == "dek.issue" && r.result == "ok").filter_map(|r| r.dek_id.clone()).collect();
    assert_eq!(issued, ids, "one audit row per issued DEK");
    for id in &ids {
        let at = &rows.iter().find(|r| r.dek_id.as_deref() == Some(id)).unwrap().at;
        assert_eq!(&kb.catalog().dek(id).await.unwrap().created_at, at, "DEK {id} and its audit row were committed apart");
    }
    let report = kb.catalog().verify_audit().await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.rows, 66);
}

// ------------------------------------------------------------------ CLI

fn keybridge(dir: &Path, args: &[&str], user: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keybridge"));
    cmd.current_dir(dir).args(args).env_remove("KEYBRIDGE_CONFIG").stdin(Stdio::null());
    match user {
        Some(u) => cmd.env("USER", u),
        None => cmd.env_remove("USER"),
    };
    cmd.output().expect("spawn keybridge")
}

#[track_caller]
fn ok(out: Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn cli_audit_list_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let alice = Some("alice");
    ok(keybridge(d, &["init", "--json"], alice));
    ok(keybridge(d, &["pool", "create", "p1", "--kms", "builtin", "--kek-bits", "2048", "--json"], alice));
    std::fs::write(d.join("pw"), "client-network-password\n").unwrap();
    ok(keybridge(d, &["client", "add", "c1", "--password-file", "pw", "--json"], alice));
    ok(keybridge(d, &["client", "add", "c2", "--password-file", "pw", "--json"], alice));
    let issued = ok(keybridge(d, &["dek", "issue", "--pool", "p1", "--client", "c1", "--json"], alice));
    let dek_id = issued["dek_id"].as_str().unwrap();
    ok(keybridge(d, &["dek", "recover", dek_id, "--client", "c1", "--json"], None));
    let out = keybridge(d, &["dek", "recover", dek_id, "--client", "c2"], alice);
    assert_eq!(out.status.code(), Some(9));

    let list = ok(keybridge(d, &["audit", "list", "--json"], alice));
    let rows = list["rows"].as_array().unwrap();
    let got: Vec<_> = rows.iter().map(|r| (r["seq"].as_i64().unwrap(), r["actor"].as_str().unwrap(), r["action"].as_str().unwrap(), r["result"].as_str().unwrap().split(':').next().unwrap())).collect();
    assert_eq!(
        got,
        vec![
            (1, "local:alice", "pool.create", "ok"),
            (2, "local:alice", "client.add", "ok"),
            (3, "local:alice", "client.add", "ok"),
            (4, "local:alice", "dek.issue", "ok"),
            (5, "local:unknown", "dek.recover", "started"),
            (6, "local:unknown", "dek.recover", "ok"),
            (7, "local:alice", "dek.recover", "error"),
        ]
    );
    let limited = ok(keybridge(d, &["audit", "list", "--limit", "2", "--json"], alice));
    let seqs: Vec<_> = limited["rows"].as_array().unwrap().iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![6, 7]);

    let verified = ok(keybridge(d, &["audit", "verify", "--json"], alice));
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["rows"], 7);
    let head = verified["head_hash"].as_str().unwrap().to_owned();
    assert_eq!(head, rows[6]["hash"].as_str().unwrap());
    let text = keybridge(d, &["audit", "verify"], alice);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("audit log OK: 7 rows") && text.contains(&head), "{text}");
    assert!(text.contains("rows removed at the end of the log cannot be detected"), "{text}");
    ok(keybridge(d, &["audit", "verify", "--expect-head", &head, "--json"], alice));

    // Rows removed at the end: the chain is still valid, the recorded head is gone.
    let conn = rusqlite::Connection::open(d.join("keybridge.db")).unwrap();
    let saved: (String, String) = conn.query_row("SELECT actor, result FROM audit WHERE seq = 7", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let tail_row = "CREATE TABLE saved AS SELECT * FROM audit WHERE seq = 7";
    conn.execute(tail_row, []).unwrap();
    conn.execute("DELETE FROM audit WHERE seq = 7", []).unwrap();
    ok(keybridge(d, &["audit", "verify", "--json"], alice));
    let out = keybridge(d, &["audit", "verify", "--expect-head", &head], alice);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the chain"), "{}", String::from_utf8_lossy(&out.stderr));
    conn.execute("INSERT INTO audit SELECT * FROM saved", []).unwrap();
    ok(keybridge(d, &["audit", "verify", "--expect-head", &head, "--json"], alice));

    // An edited row: exit code 6, the row and why.
    conn.execute("UPDATE audit SET result = 'ok' WHERE seq = 7", []).unwrap();
    let out = keybridge(d, &["audit", "verify"], alice);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("integrity check failed for audit log") && err.contains("row 7 was edited (hash mismatch) (rows 1 to 6 verify)"), "{err}");
    let out = keybridge(d, &["audit", "verify", "--json"], alice);
    assert_eq!(out.status.code(), Some(6));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "integrity");
    assert_eq!(v["error"]["exit_code"], 6);
    conn.execute("UPDATE audit SET result = ?1 WHERE seq = 7", [&saved.1]).unwrap();
    assert_eq!(saved.0, "local:alice");
    ok(keybridge(d, &["audit", "verify", "--json"], alice));

    // A removed middle row.
    conn.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
    let out = keybridge(d, &["audit", "verify"], alice);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("row 2 is missing (seq jumps from 1 to 3)"), "{}", String::from_utf8_lossy(&out.stderr));
}
