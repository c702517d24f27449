//! The `keybridge` binary as an operator uses it: output, `--json`, exit
//! codes and error messages. Each run is a fresh process, so login state is
//! the token's real one (a wrong PIN is tested here, not in-process).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{kms_toml, Kind};
use serde_json::Value;

fn keybridge(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keybridge"))
        .current_dir(dir)
        .args(args)
        .env_remove("KEYBRIDGE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keybridge");
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    json_of(&out)
}

#[track_caller]
fn fails(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    assert!(stderr(out).contains(needle), "stderr '{}' does not mention '{needle}'", stderr(out));
}

/// The README quickstart chain, scripted: init, pool, client, issue, open,
/// recover, open again, same DEK.
#[test]
fn scripted_chain_on_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let init = ok(keybridge(d, &["init", "--json"], None));
    assert_eq!(init["created"].as_array().unwrap().len(), 6, "{init}");
    assert!(d.join("keybridge.toml").exists() && d.join("keybridge.db").exists());
    use std::os::unix::fs::PermissionsExt;
    for secret in ["root.key", "operator.token", "media-agent.key", "keybridge.db"] {
        assert_eq!(std::fs::metadata(d.join(secret)).unwrap().permissions().mode() & 0o777, 0o600, "{secret}");
    }
    // SQLite gives the WAL and shared-memory files the catalog's mode.
    {
        let c = rusqlite::Connection::open(d.join("keybridge.db")).unwrap();
        let _: i64 = c.query_row("SELECT count(*) FROM pools", [], |r| r.get(0)).unwrap();
        for f in ["keybridge.db-wal", "keybridge.db-shm"] {
            assert_eq!(std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777, 0o600, "{f}");
        }
    }
    // Idempotent, and never overwrites the root key.
    let key = std::fs::read(d.join("root.key")).unwrap();
    assert_eq!(ok(keybridge(d, &["init", "--json"], None))["created"].as_array().unwrap().len(), 0);
    assert_eq!(std::fs::read(d.join("root.key")).unwrap(), key);

    let pool = ok(keybridge(d, &["pool", "create", "p1", "--kms", "builtin", "--kek-bits", "2048", "--json"], None));
    assert_eq!(pool["wrap_mechanism"], "RFC5649-AES256-KWP");
    std::fs::write(d.join("pw"), "client-network-password\n").unwrap();
    ok(keybridge(d, &["client", "add", "c1", "--password-file", "pw", "--json"], None));

    let issued = ok(keybridge(d, &["dek", "issue", "--pool", "p1", "--client", "c1", "--json"], None));
    let sealed = issued["sealed_dek"].as_str().unwrap();
    assert!(sealed.starts_with("kbseal1."));
    let opened = ok(keybridge(d, &["dek", "open", "--client", "c1", "--password-file", "pw", "--json"], Some(sealed)));
    let hex = opened["dek"].as_str().unwrap().to_owned();
    assert_eq!(hex.len(), 64);
    assert_eq!(opened["dek_id"], issued["dek_id"]);

    let dek_id = issued["dek_id"].as_str().unwrap();
    let recovered = ok(keybridge(d, &["dek", "recover", dek_id, "--client", "c1", "--json"], None));
    // `dek open` also takes the JSON of `dek recover --json` on stdin.
    let again = keybridge(d, &["dek", "open", "--client", "c1", "--password-file", "pw"], Some(&recovered.to_string()));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), hex);

    let shown = ok(keybridge(d, &["pool", "show", "p1", "--json"], None));
    assert_eq!(shown["deks"], 1);
    assert_eq!(ok(keybridge(d, &["pool", "list", "--json"], None))["pools"].as_array().unwrap().len(), 1);
    let probe = ok(keybridge(d, &["kms", "probe", "--json"], None));
    assert_eq!(probe["kms"][0]["state"], "usable");

    // Errors: exit codes and messages.
    std::fs::write(d.join("bad-pw"), "wrong-password-here\n").unwrap();
    let out = keybridge(d, &["dek", "open", "--client", "c1", "--password-file", "bad-pw"], Some(sealed));
    fails(&out, 7, "wrong network password");
    let out = keybridge(d, &["pool", "show", "nope", "--json"], None);
    fails(&out, 4, "pool 'nope' not found");
    assert_eq!(json_of(&out)["error"]["kind"], "not_found");
    fails(&keybridge(d, &["pool", "create", "p1", "--kms", "builtin"], None), 8, "pool 'p1' already exists");
    fails(&keybridge(d, &["pool", "create", "../x", "--kms", "builtin"], None), 8, "invalid pool name");
    fails(&keybridge(d, &["pool", "create", "p2", "--kms", "hsm"], None), 4, "KMS");
    fails(&keybridge(d, &["dek", "recover", dek_id, "--client", "c2"], None), 4, "client 'c2' not found");

    // A root key readable by others is refused with the fix in the message.
    std::fs::set_permissions(d.join("root.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    fails(&keybridge(d, &["dek", "recover", dek_id, "--client", "c1"], None), 5, "chmod 600");
}

#[test]
fn malformed_config_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("[catalog]\npath = \"k.db\"\nbogus = 1\n", "unknown field `bogus`"),
        ("[catalog]\npath = \"k.db\"\n[[kms]]\nname = \"x\"\nkind = \"tpm\"\nroot_key = \"r\"\n", "unknown variant `tpm`"),
        ("[catalog]\npath = \"k.db\"\n[[kms]]\nname = \"h\"\nkind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken = \"t\"\n", "exactly one of `pin_env` and `pin_file`"),
        ("[catalog]\npath = \"k.db\"\n[[kms]]\nname = \"a\"\nkind = \"builtin\"\nroot_key = \"r\"\n[[kms]]\nname = \"a\"\nkind = \"builtin\"\nroot_key = \"r2\"\n", "appears twice"),
        ("[catalog\n", "keybridge.toml"),
    ];
    for (text, needle) in cases {
        std::fs::write(d.join("keybridge.toml"), text).unwrap();
        let out = keybridge(d, &["pool", "list"], None);
        fails(&out, 3, needle);
    }
    let out = keybridge(d, &["--config", "missing.toml", "pool", "list"], None);
    fails(&out, 3, "missing.toml");
    // A catalog that was never initialised.
    std::fs::write(d.join("keybridge.toml"), "[catalog]\npath = \"never.db\"\n").unwrap();
    fails(&keybridge(d, &["pool", "list"], None), 1, "run `keybridge init` first");
}

fn token_rig(kind: Kind, extra_env: &str) -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let mut kms = kms_toml(kind, dir.path())?;
    kms = kms.replace("pin_env = \"KEYBRIDGE_TEST_PIN\"", extra_env);
    std::fs::write(dir.path().join("keybridge.toml"), format!("[catalog]\npath = \"keybridge.db\"\n\n{kms}")).unwrap();
    ok(keybridge(dir.path(), &["init", "--json"], None));
    Some(dir)
}

fn token_errors(kind: Kind) {
    // Wrong PIN: refused at login, with the CKR code and what it means.
    std::env::set_var("KEYBRIDGE_WRONG_PIN", "0000-not-the-pin");
    let Some(dir) = token_rig(kind, "pin_env = \"KEYBRIDGE_WRONG_PIN\"") else { return };
    let out = keybridge(dir.path(), &["pool", "create", "p", "--kms", "kms", "--json"], None);
    fails(&out, 5, "CKR_PIN_INCORRECT (wrong PIN)");
    assert_eq!(json_of(&out)["error"]["kind"], "kms");
    assert!(!stderr(&out).contains("0000-not-the-pin"), "PIN leaked into the error");
    assert_eq!(ok(keybridge(dir.path(), &["pool", "list", "--json"], None))["pools"].as_array().unwrap().len(), 0);

    // PIN variable not set.
    let Some(dir) = token_rig(kind, "pin_env = \"KEYBRIDGE_UNSET_PIN_VARIABLE\"") else { return };
    fails(&keybridge(dir.path(), &["kms", "probe", "kms"], None), 5, "KEYBRIDGE_UNSET_PIN_VARIABLE is not set");

    // Missing token.
    let Some(dir) = token_rig(kind, "pin_env = \"KEYBRIDGE_TEST_PIN\"") else { return };
    let text = std::fs::read_to_string(dir.path().join("keybridge.toml")).unwrap();
    std::fs::write(dir.path().join("keybridge.toml"), text.replace("token = \"keybridge\"", "token = \"no-such-token\"")).unwrap();
    fails(&keybridge(dir.path(), &["kms", "probe"], None), 5, "no token with label 'no-such-token'");

    // The right PIN: probe reports the mechanisms chosen.
    let Some(dir) = token_rig(kind, "pin_env = \"KEYBRIDGE_TEST_PIN\"") else { return };
    let probe = ok(keybridge(dir.path(), &["kms", "probe", "kms", "--json"], None));
    let details = &probe["kms"][0]["details"];
    let (wrap, hash) = if kind == Kind::SoftHsm { ("CKM_AES_KEY_WRAP_PAD", "sha1") } else { ("CKM_AES_KEY_WRAP_KWP", "sha256") };
    assert_eq!(details["wrap_mechanism"], wrap, "{probe}");
    assert_eq!(details["oaep_hash"], hash, "{probe}");
    assert_eq!(probe["kms"][0]["state"], "usable");
}

#[test]
fn softhsm_token_errors() {
    token_errors(Kind::SoftHsm);
}

#[test]
fn kryoptic_token_errors() {
    token_errors(Kind::Kryoptic);
}

/// `ttlv decode`: a real KMIP message (PyKMIP's test vector) as a named tree
/// and as JSON; a broken one says where it broke.
#[test]
fn ttlv_decode_for_interop_debugging() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("hsm-fixtures/kmip/pykmip-0.11.0-messages.json")).unwrap()).unwrap();
    let create = vectors.as_array().unwrap().iter().find(|v| v["name"] == "TestRequestMessage.setUp.create").expect("create vector");
    let hex = create["hex"].as_str().unwrap();

    let out = keybridge(d, &["ttlv", "decode"], Some(hex));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tree = String::from_utf8_lossy(&out.stdout);
    for needle in ["RequestMessage", "ProtocolVersion", "Operation", "Create", "ObjectType", "SymmetricKey"] {
        assert!(tree.contains(needle), "tree lacks {needle}:\n{tree}");
    }
    // Binary from a file, JSON out.
    std::fs::write(d.join("msg.bin"), hex::decode(hex).unwrap()).unwrap();
    let json = ok(keybridge(d, &["ttlv", "decode", "msg.bin", "--json"], None));
    assert_eq!(json["tag"], "RequestMessage");
    assert_eq!(json["type"], "Structure");

    // Truncated: exit 3, with the byte offset.
    let out = keybridge(d, &["ttlv", "decode"], Some(&hex[..hex.len() - 16]));
    fails(&out, 3, "TTLV decode error at byte");
}

/// SoftHSM2 rewrites its token file at every login, and another process
/// reading the token meanwhile is told CKR_GENERAL_ERROR, or sees no token,
/// for a moment. An operator's `keybridge` run beside a service, or a
/// tool, logging in on the same token must not fail for it. Two threads
/// here log in over and over through `pkcs11-tool` (each run a process of
/// its own) on a token directory of this test's own, while `keybridge kms
/// probe` opens the token 40 times (before the fix 2 to 6 in 30 failed).
#[test]
fn softhsm_open_beside_logins_elsewhere() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(module) = Kind::SoftHsm.module() else { return };
    if Command::new("pkcs11-tool").arg("--version").output().is_err() {
        let msg = "pkcs11-tool (Debian's opensc) is not installed; run scripts/install-deps";
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true: {msg}");
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = common::p11kit::fresh_softhsm_token(d);
    let kms = kms_toml(Kind::SoftHsm, d).unwrap();
    std::fs::write(d.join("keybridge.toml"), format!("[catalog]\npath = \"keybridge.db\"\n\n{kms}")).unwrap();
    ok(keybridge(d, &["init", "--json"], None));
    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicUsize::new(0));
    let loggers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, logins, conf, module) = (stop.clone(), logins.clone(), conf.clone(), module.clone());
            std::thread::spawn(move || {
                let var = |v: &str| std::env::var(v).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let out = Command::new("pkcs11-tool")
                        .arg("--module")
                        .arg(&module)
                        .args(["--token-label", &var("KEYBRIDGE_TEST_TOKEN"), "--login", "--pin", &var("KEYBRIDGE_TEST_PIN"), "-O"])
                        .env("SOFTHSM2_CONF", &conf)
                        .output()
                        .expect("run pkcs11-tool");
                    if out.status.success() {
                        logins.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for _ in 0..40 {
        let out = Command::new(env!("CARGO_BIN_EXE_keybridge"))
            .current_dir(d)
            .args(["kms", "probe", "kms", "--json"])
            .env_remove("KEYBRIDGE_CONFIG")
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("run keybridge");
        if out.status.code() != Some(0) {
            failures.push(stderr(&out));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loggers {
        l.join().unwrap();
    }
    // The logins really ran beside the probes.
    assert!(logins.load(Ordering::Relaxed) >= 10, "only {} logins elsewhere", logins.load(Ordering::Relaxed));
    assert!(failures.is_empty(), "{} of 40 probes failed: {:?}", failures.len(), failures);
}
