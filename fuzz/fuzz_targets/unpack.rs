//! Arbitrary bytes as the plaintext archive of a restore, into the
//! restore's unpacker.
//!
//! Whatever the archive says, the unpacker must not panic, and nothing
//! outside its directory may change. The sandbox has a fixed path so that
//! inputs can name it: `/tmp/keybridge-fuzz-unpack/outside` (a file, a
//! directory, fixed modes and times) beside `staging`, the unpacker's root.
//! After each input the sandbox holds exactly `outside` and `staging`, and
//! `outside` is as it was.
#![no_main]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use keybridge_client::unpack::Unpacker;
use libfuzzer_sys::fuzz_target;

const SANDBOX: &str = "/tmp/keybridge-fuzz-unpack";

/// (relative path, mode, mtime, size, symlink target) of everything below `root`.
fn snapshot(root: &Path) -> Vec<(PathBuf, u32, i64, u64, Option<PathBuf>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let link = m.file_type().is_symlink().then(|| std::fs::read_link(&p).unwrap());
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        out.push((p.strip_prefix(root).unwrap().to_owned(), m.mode(), m.mtime(), m.len(), link));
    }
    out.sort();
    out
}

fn setup() -> Vec<(PathBuf, u32, i64, u64, Option<PathBuf>)> {
    // The sandbox is ours (0700), never something another user planted.
    match std::fs::symlink_metadata(SANDBOX) {
        Ok(m) => assert!(
            m.is_dir() && m.uid() == std::fs::metadata("/proc/self").unwrap().uid() && m.mode() & 0o077 == 0,
            "{SANDBOX} exists and is not a private directory of this user; remove it"
        ),
        Err(_) => {
            std::fs::create_dir(SANDBOX).unwrap();
            std::fs::set_permissions(SANDBOX, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
    }
    let outside = Path::new(SANDBOX).join("outside");
    if !outside.exists() {
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("victim"), "precious").unwrap();
        for p in [outside.join("victim"), outside.join("dir"), outside.clone()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o750)).unwrap();
        }
    }
    snapshot(Path::new(SANDBOX))
}

fuzz_target!(|data: &[u8]| {
    let staging = Path::new(SANDBOX).join("staging");
    if staging.exists() && std::fs::remove_dir_all(&staging).is_err() {
        // Read-only directories the unpacker made (when not run as root).
        let _ = std::process::Command::new("chmod").args(["-R", "u+rwx"]).arg(&staging).status();
        std::fs::remove_dir_all(&staging).unwrap();
    }
    let before = setup();
    std::fs::create_dir(&staging).unwrap();
    let mut unpacker = Unpacker::new(&staging).unwrap();
    if unpacker.unpack(data).is_ok() {
        let _ = unpacker.finish();
    }
    let names: Vec<_> = std::fs::read_dir(SANDBOX).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "the sandbox holds more than outside and staging: {names:?}");
    let outside = Path::new(SANDBOX).join("outside");
    let after: Vec<_> = snapshot(Path::new(SANDBOX)).into_iter().filter(|(p, ..)| p.starts_with("outside")).collect();
    let before: Vec<_> = before.into_iter().filter(|(p, ..)| p.starts_with("outside")).collect();
    assert_eq!(before, after, "something outside the unpacker's directory changed ({})", outside.display());
});
