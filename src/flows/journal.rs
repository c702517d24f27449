//! The journal of multi-step key changes (docs/design.md, "Key lifecycle").
//!
//! A change of a pool's keys (create, rotate, rekey into another KMS, wrap,
//! unwrap, migrate, import, shred) is journalled before it starts:
//!
//! 1. `planned`: the entry names the master keys it will make (KMS and a
//!    label unique to this change), before any exists;
//! 2. `keys_made`: each key, once made, is recorded in the catalog with its
//!    reference in the KMS, in the same transaction as this step;
//! 3. `committed`: the new wrappings, the removed ones and the master-key
//!    states, in one transaction;
//! 4. `done`: the old master keys marked deactivated in their KMS too.
//!
//! A change interrupted before `committed` is rolled back: every key it
//! made is destroyed in its KMS (by reference, or by label if the crash
//! came between making it and recording it) and forgotten. One interrupted
//! after is finished. Whichever process finds an entry whose process is
//! gone does this: the next lifecycle command on the pool, or `keybridge
//! serve` when it starts; one whose process ran on another host is taken
//! over first, on the operator's word (`pool resume --take-over`,
//! `take_over`). At every instant the pool restores under its old
//! wrappings or its new ones, and every key keybridge made is named by the
//! journal or by a catalog row.

use serde::{Deserialize, Serialize};

use crate::context::Keybridge;
use crate::{Error, Result};
use keybridge_catalog::lifecycle::{JournalEntry, JournalState, JournalStep, KeyChange, MasterKeyState};
use keybridge_kms::BackendError;

/// What a journal entry records of its change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// Master keys the change makes, in order.
    #[serde(default)]
    pub new_keys: Vec<PlannedKey>,
    /// Master-key rows the change deactivates (mirrored in the KMS once
    /// committed).
    #[serde(default)]
    pub deactivate: Vec<i64>,
    /// Master-key rows the change destroys (shred).
    #[serde(default)]
    pub destroy: Vec<i64>,
}

/// A master key a change makes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PlannedKey {
    pub kms: String,
    /// Unique to this change, so a key made but not yet recorded is found.
    pub label: String,
    /// The key's reference in its KMS, once made and recorded.
    pub key_ref: Option<String>,
}

/// An interrupted change found and dealt with.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    pub journal_id: i64,
    pub pool: String,
    pub operation: String,
    /// The step it had reached.
    pub step: String,
    /// `finished`, `rolled back`, or `taken over` (a shred taken over by
    /// `pool resume --take-over`, finished only by `pool shred` again).
    pub outcome: &'static str,
}

/// This process, as journal entries name their owner: `host:pid:start`,
/// the start time telling a live process from a later one with its pid.
pub(crate) fn owner() -> String {
    let pid = std::process::id();
    format!("{}:{pid}:{}", hostname(), start_time(pid).unwrap_or_default())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "unknown-host".into())
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks
/// after boot.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// An entry's owner, `host:pid:start` (the host may hold ':').
fn owner_parts(owner: &str) -> Option<(&str, &str, &str)> {
    let mut parts = owner.rsplitn(3, ':');
    let (start, pid, host) = (parts.next()?, parts.next()?, parts.next()?);
    Some((host, pid, start))
}

/// The host of an entry's owner.
fn owner_host(owner: &str) -> Option<&str> {
    owner_parts(owner).map(|(host, _, _)| host)
}

/// Whether the process that owns an entry still runs. An owner on another
/// host is taken to be alive: this process cannot tell (see `take_over`).
fn owner_alive(owner: &str) -> bool {
    let Some((host, pid, start)) = owner_parts(owner) else { return false };
    if host != hostname() {
        return true;
    }
    let Ok(pid) = pid.parse::<u32>() else { return false };
    start_time(pid).is_some_and(|s| s == start)
}

/// A test-only fault point (debug builds): `KEYBRIDGE_TEST_FAULT` holds
/// `OPERATION.POINT:ACTION[@N]` entries separated by commas; ACTION is
/// `fail` (an error, so the change rolls back), `exit` (the process ends
/// at once, as in a crash), `pause` (5 s, for a test to break something
/// meanwhile) or `hang` (it stops here until killed); `@N`
/// acts on the Nth time the point is reached only.
pub(crate) fn fault(operation: &str, point: &str) -> Result<()> {
    #[cfg(debug_assertions)]
    {
        use std::collections::HashMap;
        use std::sync::Mutex;
        static HITS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
        let Ok(spec) = std::env::var("KEYBRIDGE_TEST_FAULT") else { return Ok(()) };
        let here = format!("{operation}.{point}");
        let hit = {
            let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
            let n = hits.get_or_insert_with(HashMap::new).entry(here.clone()).or_insert(0);
            *n += 1;
            *n
        };
        for entry in spec.split(',') {
            let Some((at, action)) = entry.trim().split_once(':') else { continue };
            let (action, nth) = match action.split_once('@') {
                Some((a, n)) => (a, n.parse::<u32>().ok()),
                None => (action, None),
            };
            if at != here || nth.is_some_and(|n| n != hit) {
                continue;
            }
            tracing::warn!(point = %here, action, "test fault point reached");
            match action {
                "fail" => return Err(Error::Internal(format!("test fault injected at {here}"))),
                "exit" => std::process::exit(86),
                "pause" => std::thread::sleep(std::time::Duration::from_secs(5)),
                "hang" => loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
                _ => {}
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (operation, point);
    Ok(())
}

/// Journal entries this process is running now (an entry of this process
/// that is not here was left unfinished, and may be resumed).
static RUNNING: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());

/// Held while deciding which entries are unfinished and opening a new one,
/// so that no entry is taken for unfinished between its opening and its
/// being marked running.
static BEGIN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn running() -> std::sync::MutexGuard<'static, Vec<i64>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// This host's own record of the keys its changes make and retire, kept
/// beside the pin file (`[catalog] kek_pins`, `.changes.json`), where the
/// catalog's writers cannot reach. The journal is catalog data, which
/// whoever writes the catalog can edit: a rollback destroys, and a finished
/// change deactivates or destroys, only keys this record names for the
/// entry. An entry started on another host (or whose record was lost)
/// is left open with an error saying so.
mod local {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use crate::context::Keybridge;
    use crate::{Error, Result};

    /// Entry id -> keys as `KMS/label` (made) and `KMS#key_ref` (retired).
    type Record = BTreeMap<String, Vec<String>>;

    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn path(kb: &Keybridge) -> PathBuf {
        kb.config().catalog.kek_pins.with_extension("changes.json")
    }

    fn load(kb: &Keybridge) -> Result<Record> {
        let path = path(kb);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Input { what: format!("record of key changes {}", path.display()), reason: format!("unreadable ({e}); it names the keys this host's unfinished changes made") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::new()),
            Err(source) => Err(Error::Io { context: "reading the record of key changes", path, source }),
        }
    }

    fn update(kb: &Keybridge, f: impl FnOnce(&mut Record)) -> Result<()> {
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut record = load(kb)?;
        f(&mut record);
        let path = path(kb);
        crate::context::write_atomically(&path, serde_json::to_string_pretty(&record).unwrap_or_default().as_bytes())
            .map_err(|source| Error::Io { context: "writing the record of key changes", path, source })
    }

    pub(super) fn made(kms: &str, label: &str) -> String {
        format!("{kms}/{label}")
    }

    pub(super) fn retired(kms: &str, key_ref: &str) -> String {
        format!("{kms}#{key_ref}")
    }

    /// Note `keys` for entry `id`, before they exist or change.
    pub(super) fn note(kb: &Keybridge, id: i64, keys: impl IntoIterator<Item = String>) -> Result<()> {
        update(kb, |r| {
            let noted = r.entry(id.to_string()).or_default();
            for key in keys {
                if !noted.contains(&key) {
                    noted.push(key);
                }
            }
        })
    }

    /// Whether this host noted `key` for entry `id`.
    pub(super) fn has(kb: &Keybridge, id: i64, key: &str) -> Result<bool> {
        Ok(load(kb)?.get(&id.to_string()).is_some_and(|keys| keys.iter().any(|k| k == key)))
    }

    /// Forget entry `id` once it is closed.
    pub(super) fn forget(kb: &Keybridge, id: i64) {
        if let Err(e) = update(kb, |r| {
            r.remove(&id.to_string());
        }) {
            tracing::warn!(journal = id, error = %e, "could not drop a closed change from this host's record of key changes");
        }
    }
}

fn not_ours(id: i64, pool: &str, key: &str) -> Error {
    Error::Integrity {
        what: format!("journal entry {id} of pool '{pool}'"),
        reason: format!(
            "this host's record of key changes does not name master key {key} for it: the change was started on another host, or the catalog was edited; nothing was destroyed or deactivated (finish it on its host, or, if that host is gone for good, take it over: `pool resume {pool} --take-over OWNER`, the owner as `pool show` names it)"
        ),
    }
}

/// A change in progress: its entry and plan.
pub(crate) struct Change<'a> {
    kb: &'a Keybridge,
    pub pool_id: i64,
    pub id: i64,
    pub operation: String,
    pub plan: Plan,
}

impl<'a> Change<'a> {
    /// Journal a change of pool `pool_id` before it starts, after dealing
    /// with any interrupted change of the same pool.
    pub(crate) async fn begin(kb: &'a Keybridge, pool_id: i64, operation: &str, plan: Plan) -> Result<(Change<'a>, Vec<Resumed>)> {
        let _begin = BEGIN.lock().await;
        let resumed = resume_unfinished(kb, Some(pool_id), operation == "shred").await?;
        let entry = kb.catalog().journal_begin(pool_id, operation, &owner(), &detail(&plan)).await?;
        Ok((Self::started(kb, entry, plan).await?, resumed))
    }

    /// Journal the creation of pool `name` on KMS `kms` before anything is
    /// made: the pool's catalog row is reserved with the entry, and seen by
    /// no pool read until the commit gives it KEK generation 1. Run
    /// [`resume_creation`] first.
    pub(crate) async fn begin_creation(kb: &'a Keybridge, name: &str, kms: &str, kind: &str, identity: &str, plan: Plan) -> Result<Change<'a>> {
        let _begin = BEGIN.lock().await;
        let entry = kb.catalog().journal_begin_pool(name, kms, kind, identity, &owner(), &detail(&plan)).await?;
        Self::started(kb, entry, plan).await
    }

    /// The change of `entry`, just opened by this process: marked running,
    /// and the keys it plans noted in this host's record.
    async fn started(kb: &'a Keybridge, entry: JournalEntry, plan: Plan) -> Result<Change<'a>> {
        running().push(entry.id);
        let change = Change { kb, pool_id: entry.pool_id, id: entry.id, operation: entry.operation, plan };
        if let Err(e) = local::note(kb, change.id, change.plan.new_keys.iter().map(|k| local::made(&k.kms, &k.label))) {
            // Nothing made yet: the entry closes as rolled back.
            if let Err(c) = close(kb, change.pool_id, change.id, &change.plan, "rolled_back", JournalState::RolledBack).await {
                tracing::error!(journal = change.id, error = %c, "could not close a change that never started");
            }
            return Err(e);
        }
        Ok(change)
    }

    fn step(&self, step: &str, close: Option<JournalState>) -> JournalStep {
        JournalStep { id: self.id, step: step.to_owned(), detail: detail(&self.plan), close }
    }

    /// Make the planned master keys not yet made, recording each.
    pub(crate) async fn make_keys(&mut self) -> Result<Vec<keybridge_catalog::lifecycle::MasterKeyRecord>> {
        let mut made = Vec::new();
        for i in 0..self.plan.new_keys.len() {
            if self.plan.new_keys[i].key_ref.is_some() {
                continue;
            }
            fault(&self.operation, "make_key")?;
            let kms = self.plan.new_keys[i].kms.clone();
            let backend = self.kb.backend(&kms).await?;
            let mk = backend.create_master_key(&self.plan.new_keys[i].label).await.map_err(Error::backend(&kms))?;
            fault(&self.operation, "key_made")?;
            self.plan.new_keys[i].key_ref = Some(mk.id.clone());
            let step = self.step("keys_made", None);
            let record = self.kb.catalog().record_master_key(self.pool_id, &kms, backend.kind(), &backend.identity(), &mk, &step).await;
            match record {
                Ok(r) => made.push(r),
                Err(e) => {
                    // Not recorded: the rollback finds it by its label.
                    self.plan.new_keys[i].key_ref = None;
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    /// Record `mk`, a key the change adopted in KMS `kms` instead of making
    /// one (made by someone else: never destroyed, by a rollback either),
    /// with the `keys_made` step.
    pub(crate) async fn record_adopted(&self, kms: &str, mk: &keybridge_kms::MasterKeyRef) -> Result<keybridge_catalog::lifecycle::MasterKeyRecord> {
        let backend = self.kb.backend(kms).await?;
        self.kb.catalog().record_master_key(self.pool_id, kms, backend.kind(), &backend.identity(), mk, &self.step("keys_made", None)).await
    }

    /// Commit `change` with the `committed` step, then mirror the
    /// deactivations in the KMSs and close the entry. An error before the
    /// commit rolls the change back; a KMS that cannot take the mirror now
    /// leaves the entry open (finished later) and a note.
    pub(crate) async fn commit(mut self, mut change: KeyChange) -> Result<Vec<String>> {
        if let Err(e) = fault(&self.operation, "before_commit") {
            return Err(self.abandon(e).await);
        }
        self.plan.deactivate = change.deactivate.clone();
        self.plan.destroy = change.destroyed.clone();
        if let Err(e) = self.note_retired(&change.deactivate).await {
            return Err(self.abandon(e).await);
        }
        change.journal = Some(self.step("committed", None));
        if let Err(e) = self.kb.catalog().apply_key_change(self.pool_id, &change).await {
            // The rollback reads the journal first: a commit that took
            // effect after all is finished, never undone.
            return Err(self.abandon(e).await);
        }
        fault(&self.operation, "committed")?;
        let mut notes = Vec::new();
        if let Err(e) = finish(self.kb, self.pool_id, self.id, &self.plan).await {
            tracing::warn!(journal = self.id, error = %e, "a key change is committed, but its KMS mirror is not finished; the next command on the pool or `keybridge serve` finishes it");
            notes.push(format!("committed; marking the old master keys deactivated in their KMS is not finished ({e}); the next command on the pool or `keybridge serve` finishes it"));
        }
        Ok(notes)
    }

    /// Note in this host's record the keys (catalog rows `rows`) this
    /// change will deactivate or destroy.
    pub(crate) async fn note_retired(&self, rows: &[i64]) -> Result<()> {
        let keys: Vec<_> = self.kb.catalog().pool_master_keys(self.pool_id).await?.into_iter().filter(|k| rows.contains(&k.row)).collect();
        note_retiring(self.kb, self.id, &keys)
    }

    /// Commit what the change built ([`Change::commit`]), or roll it back
    /// if building it failed ([`Change::abandon`]).
    pub(crate) async fn conclude(self, built: Result<KeyChange>) -> Result<Vec<String>> {
        match built {
            Ok(change) => self.commit(change).await,
            Err(e) => Err(self.abandon(e).await),
        }
    }

    /// Undo an uncommitted change after `error`, and return the error.
    pub(crate) async fn abandon(self, error: Error) -> Error {
        if let Err(e) = roll_back(self.kb, self.pool_id, self.id, &self.plan).await {
            tracing::error!(journal = self.id, error = %e, "could not roll back an interrupted key change; the next command on the pool or `keybridge serve` tries again");
        }
        error
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        running().retain(|id| *id != self.id);
    }
}

fn detail(plan: &Plan) -> serde_json::Value {
    serde_json::to_value(plan).expect("a plan serialises")
}

fn parse_plan(entry: &JournalEntry) -> Result<Plan> {
    serde_json::from_value(entry.detail.clone())
        .map_err(|e| Error::Integrity { what: format!("journal entry {} of pool '{}'", entry.id, entry.pool), reason: format!("its detail is not a plan keybridge wrote: {e}") })
}

/// Take entry `entry` over for this process (`me`) if the process that
/// runs it is gone: false while it is alive, or if another took it first.
async fn claim(kb: &Keybridge, entry: &JournalEntry, me: &str) -> Result<bool> {
    let live = if entry.owner == me { running().contains(&entry.id) } else { owner_alive(&entry.owner) };
    Ok(!live && kb.catalog().journal_take_over(entry.id, &entry.owner, me).await?)
}

/// Destroy `mk` in its KMS; one already gone counts as destroyed.
pub(crate) async fn destroy_in_kms(kb: &Keybridge, mk: &keybridge_kms::MasterKeyRef, kms: &str) -> Result<()> {
    match kb.backend(kms).await?.destroy_master_key(mk).await {
        Ok(()) | Err(BackendError::MasterKeyMissing { .. }) => Ok(()),
        Err(e) => Err(Error::backend(kms)(e)),
    }
}

/// Finish or roll back the interrupted changes (of pool `pool_id`, or of
/// all pools) whose process is gone.
pub async fn resume(kb: &Keybridge, pool_id: Option<i64>) -> Result<Vec<Resumed>> {
    let _begin = BEGIN.lock().await;
    resume_unfinished(kb, pool_id, false).await
}

/// Finish or roll back an interrupted creation of pool `name` whose
/// process is gone, before the name is taken again.
pub(crate) async fn resume_creation(kb: &Keybridge, name: &str) -> Result<Vec<Resumed>> {
    let _begin = BEGIN.lock().await;
    let mut done = Vec::new();
    for entry in kb.catalog().open_journal(None).await?.into_iter().filter(|e| e.pool == name && e.operation == "create") {
        done.extend(resume_unfinished(kb, Some(entry.pool_id), false).await?);
    }
    Ok(done)
}

/// [`resume`]; an interrupted shred is finished only when the operator runs
/// `pool shred` again (`shred`), never on its own.
async fn resume_unfinished(kb: &Keybridge, pool_id: Option<i64>, shred: bool) -> Result<Vec<Resumed>> {
    let me = owner();
    let mut done = Vec::new();
    for entry in kb.catalog().open_journal(pool_id).await? {
        if entry.operation == "shred" && !shred {
            tracing::warn!(journal = entry.id, pool = %entry.pool, "an interrupted shred is finished only by running `pool shred` again");
            continue;
        }
        if !claim(kb, &entry, &me).await? {
            continue;
        }
        let outcome = match deal_with(kb, &entry).await {
            Ok(o) => o,
            // The pool's own command reports why; a sweep of every pool
            // (serve at start) goes on with the others.
            Err(e) if pool_id.is_some() => return Err(e),
            Err(e) => {
                tracing::error!(journal = entry.id, pool = %entry.pool, operation = %entry.operation, error = %e, "an interrupted key change could not be dealt with; it stays open");
                continue;
            }
        };
        tracing::warn!(journal = entry.id, pool = %entry.pool, operation = %entry.operation, step = %entry.step, outcome, "an interrupted key change was dealt with");
        done.push(Resumed { journal_id: entry.id, pool: entry.pool, operation: entry.operation, step: entry.step, outcome });
    }
    Ok(done)
}

/// Finish or roll back `entry`, which this process has claimed; returns
/// `finished` or `rolled back`.
async fn deal_with(kb: &Keybridge, entry: &JournalEntry) -> Result<&'static str> {
    let plan = parse_plan(entry)?;
    Ok(if entry.operation == "shred" {
        super::pool_lifecycle::finish_shred(kb, entry.pool_id, entry.id, &plan, entry.step == "committed").await?;
        "finished"
    } else if entry.step == "committed" {
        finish(kb, entry.pool_id, entry.id, &plan).await?;
        "finished"
    } else {
        roll_back(kb, entry.pool_id, entry.id, &plan).await?;
        "rolled back"
    })
}

/// Take the unfinished change of pool `pool` over from `owner`, a process
/// this host cannot see (one on another host: a container recreated under
/// a new host name, a machine gone), on the operator's word, then finish
/// or roll it back as for a process that is gone. `owner` must be the
/// entry's exactly (`host:pid:start`, as `pool show` names it), so a
/// change is never taken from a process by mistake; refused when `owner`
/// is a process of this host that still runs. The operator vouches for
/// the entry: the keys it makes and retires are noted in this host's
/// record of key changes (which holds them already if the record lives
/// on storage the old host shared). The catalog's own guards still hold:
/// a key is destroyed only once no wrapping names it, by label only if no
/// live row carries the label, and never if keybridge did not make it. An
/// interrupted shred is only taken over: `pool shred` again finishes it.
pub(crate) async fn take_over(kb: &Keybridge, pool: &str, owner: &str) -> Result<Resumed> {
    let _begin = BEGIN.lock().await;
    let what = || format!("take-over of the unfinished change of pool '{pool}'");
    let entry = kb.catalog().open_journal(None).await?.into_iter().find(|e| e.pool == pool);
    let Some(entry) = entry else { return Err(Error::Input { what: what(), reason: "the pool has no unfinished change; nothing was taken over".into() }) };
    if entry.owner != owner {
        return Err(Error::Input {
            what: what(),
            reason: format!("its unfinished {} (journal {}, step {}) is owned by {}, not {owner}; nothing was taken over", entry.operation, entry.id, entry.step, entry.owner),
        });
    }
    if owner_host(owner) == Some(hostname().as_str()) && owner_alive(owner) {
        return Err(Error::Input {
            what: what(),
            reason: format!("{owner} is a process on this host and still runs: it finishes its change itself (stop it first if it hangs); nothing was taken over"),
        });
    }
    let plan = parse_plan(&entry)?;
    let retiring: Vec<_> = kb.catalog().pool_master_keys(entry.pool_id).await?.into_iter().filter(|k| plan.deactivate.contains(&k.row) || plan.destroy.contains(&k.row)).collect();
    let made = plan.new_keys.iter().map(|k| local::made(&k.kms, &k.label));
    local::note(kb, entry.id, made.chain(retiring.iter().map(|k| local::retired(&k.kms_name, &k.key.id))))?;
    if !kb.catalog().journal_take_over(entry.id, owner, &self::owner()).await? {
        return Err(Error::Input { what: what(), reason: "another process took the change over first".into() });
    }
    tracing::warn!(journal = entry.id, pool, operation = %entry.operation, step = %entry.step, from = owner, "an unfinished key change was taken over on the operator's word");
    let outcome = if entry.operation == "shred" { "taken over" } else { deal_with(kb, &entry).await? };
    Ok(Resumed { journal_id: entry.id, pool: entry.pool, operation: entry.operation, step: entry.step, outcome })
}

/// Close entry `id` with `step`.
pub(crate) async fn close(kb: &Keybridge, pool_id: i64, id: i64, plan: &Plan, step: &str, state: JournalState) -> Result<()> {
    let change = KeyChange { journal: Some(JournalStep { id, step: step.to_owned(), detail: detail(plan), close: Some(state) }), ..Default::default() };
    kb.catalog().apply_key_change(pool_id, &change).await?;
    local::forget(kb, id);
    Ok(())
}

/// Finish an interrupted shred (`pool shred` run again).
pub(crate) async fn resume_shred(kb: &Keybridge, entry: &JournalEntry) -> Result<Vec<Resumed>> {
    let _begin = BEGIN.lock().await;
    if !claim(kb, entry, &owner()).await? {
        return Err(Error::Input { what: format!("shred of pool '{}'", entry.pool), reason: format!("it is still running ({})", entry.owner) });
    }
    let plan = parse_plan(entry)?;
    super::pool_lifecycle::finish_shred(kb, entry.pool_id, entry.id, &plan, entry.step == "committed").await?;
    Ok(vec![Resumed { journal_id: entry.id, pool: entry.pool.clone(), operation: entry.operation.clone(), step: entry.step.clone(), outcome: "finished" }])
}

/// Drop closed entry `id` from this host's record.
pub(crate) fn forget_record(kb: &Keybridge, id: i64) {
    local::forget(kb, id);
}

/// Whether this host's record lets entry `id` retire key `mk` (deactivate
/// or destroy it).
pub(crate) fn may_retire(kb: &Keybridge, id: i64, pool: &str, mk: &keybridge_catalog::lifecycle::MasterKeyRecord) -> Result<()> {
    if !noted_retiring(kb, id, mk)? {
        return Err(not_ours(id, pool, &mk.key.label));
    }
    Ok(())
}

/// Whether this host's record names `mk` as a key entry `id` retires.
fn noted_retiring(kb: &Keybridge, id: i64, mk: &keybridge_catalog::lifecycle::MasterKeyRecord) -> Result<bool> {
    local::has(kb, id, &local::retired(&mk.kms_name, &mk.key.id))
}

/// Note in this host's record that entry `id` retires `keys`.
pub(crate) fn note_retiring(kb: &Keybridge, id: i64, keys: &[keybridge_catalog::lifecycle::MasterKeyRecord]) -> Result<()> {
    local::note(kb, id, keys.iter().map(|k| local::retired(&k.kms_name, &k.key.id)))
}

/// Mirror a committed change's deactivations in the KMSs, then close it.
async fn finish(kb: &Keybridge, pool_id: i64, id: i64, plan: &Plan) -> Result<()> {
    let keys = kb.catalog().pool_master_keys(pool_id).await?;
    for row in &plan.deactivate {
        let Some(mk) = keys.iter().find(|k| k.row == *row && k.state == MasterKeyState::Deactivated) else { continue };
        // An adopted key serves others too: its state stays the catalog's.
        if !mk.key.owned {
            continue;
        }
        if !noted_retiring(kb, id, mk)? {
            tracing::warn!(journal = id, mk = %mk.key.label, "not deactivated in its KMS: this host's record of key changes does not name it for this change");
            continue;
        }
        match kb.backend(&mk.kms_name).await {
            Ok(backend) => match backend.deactivate_master_key(&mk.key).await {
                Ok(()) | Err(BackendError::MasterKeyMissing { .. }) => {}
                Err(e) => return Err(Error::backend(&mk.kms_name)(e)),
            },
            // A KMS no longer configured: the catalog's state stands.
            Err(Error::Config { .. }) => tracing::warn!(kms = %mk.kms_name, mk = %mk.key.label, "KMS not configured: master key marked deactivated in the catalog only"),
            Err(e) => return Err(e),
        }
    }
    close(kb, pool_id, id, plan, "done", JournalState::Done).await
}

/// Destroy and forget every key an uncommitted change made, then close it.
async fn roll_back(kb: &Keybridge, pool_id: i64, id: i64, plan: &Plan) -> Result<()> {
    // Only what the catalog says is uncommitted is undone.
    let entry = kb.catalog().open_journal(Some(pool_id)).await?.into_iter().find(|e| e.id == id);
    let pool = match entry {
        None => return Ok(()),
        Some(e) if e.step == "committed" => return finish(kb, pool_id, id, &parse_plan(&e)?).await,
        // By the entry: a pool being created has no generation, so no pool
        // read finds it.
        Some(e) => e.pool,
    };
    // The entry is catalog data, which whoever writes the catalog can edit:
    // a key is destroyed only once the catalog agrees nothing uses it.
    let keys = kb.catalog().pool_master_keys(pool_id).await?;
    for key in &plan.new_keys {
        let backend = kb.backend(&key.kms).await?;
        if !local::has(kb, id, &local::made(&key.kms, &key.label))? {
            return Err(not_ours(id, &pool, &key.label));
        }
        let recorded = key.key_ref.as_ref().and_then(|r| keys.iter().find(|k| k.kms_name == key.kms && &k.key.id == r));
        match recorded {
            Some(mk) if !mk.key.owned => {
                return Err(Error::Integrity {
                    what: format!("journal entry {id} of pool '{pool}'"),
                    reason: format!("it names master key '{}', which keybridge did not make (adopted); nothing was destroyed", mk.key.label),
                });
            }
            Some(mk) => {
                // Forgotten first: the catalog refuses while a wrapping names
                // the key. A crash between the two leaves a key the entry
                // still names, found by its label on the next try.
                let step = JournalStep { id, step: "rolling_back".into(), detail: detail(plan), close: None };
                kb.catalog().forget_master_key(mk.row, &step).await?;
                destroy_in_kms(kb, &mk.key, &key.kms).await?;
            }
            None => {
                if !made_by_a_change_of(&key.label, &pool) || keys.iter().any(|k| k.key.label == key.label && k.state != MasterKeyState::Destroyed) {
                    return Err(Error::Integrity {
                        what: format!("journal entry {id} of pool '{pool}'"),
                        reason: format!("it names master key '{}', which is not a key a change of this pool makes, or one the catalog still uses; nothing was destroyed", key.label),
                    });
                }
                let n = backend.destroy_master_keys_labelled(&key.label).await.map_err(Error::backend(&key.kms))?;
                if n > 0 {
                    tracing::warn!(kms = %key.kms, label = %key.label, destroyed = n, "destroyed a master key made by an interrupted change before it was recorded");
                }
            }
        }
    }
    close(kb, pool_id, id, plan, "rolled_back", JournalState::RolledBack).await
}

/// Whether `label` is one a change of pool `pool` gives the keys it makes
/// (`keybridge-mk-POOL-` and 12 hex digits: `pool_lifecycle::new_label`).
fn made_by_a_change_of(label: &str, pool: &str) -> bool {
    label
        .strip_prefix("keybridge-mk-")
        .and_then(|rest| rest.strip_prefix(pool))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|tail| tail.len() == 12 && tail.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_labels_of_the_pools_own_changes_are_destroyed_by_label() {
        assert!(made_by_a_change_of("keybridge-mk-a-0123456789ab", "a"));
        assert!(!made_by_a_change_of("keybridge-mk-a", "a"), "the pool's first key");
        assert!(!made_by_a_change_of("keybridge-mk-a-b-0123456789ab", "a"), "pool a-b's key");
        assert!(!made_by_a_change_of("keybridge-mk-a-b-0123456789ab", "b"));
        assert!(!made_by_a_change_of("keybridge-mk-a-0123456789abc", "a"));
        assert!(!made_by_a_change_of("keybridge-mk-a-0123456789ag", "a"));
        assert!(!made_by_a_change_of("other-0123456789ab", "a"));
    }

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = owner();
        assert!(owner_alive(&me), "{me}");
        let (rest, _start) = me.rsplit_once(':').unwrap();
        assert!(!owner_alive(&format!("{rest}:1")), "another start time is another process");
        assert!(!owner_alive(&format!("{}:4194304:1", hostname())), "no such pid");
        assert!(owner_alive("some-other-host:1:1"), "another host cannot be checked");
        assert!(!owner_alive("garbage"));
        assert_eq!(owner_host("host:with:colons:12:34"), Some("host:with:colons"));
        assert_eq!(owner_host("12:34"), None, "no host part");
        assert_eq!(owner_host(&me), Some(hostname().as_str()));
        assert_eq!(owner_host("old-container:4242:99"), Some("old-container"));
        assert_eq!(owner_host("garbage"), None);
    }
}
