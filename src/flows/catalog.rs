//! Disaster recovery of the catalog: an online copy (audited in the
//! catalog copied) and a restore from one (audited in the restored
//! catalog). What else must be kept is in docs/operations.md.

use std::path::Path;

use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use keybridge_catalog::{Catalog, CatalogCopy, CatalogRestore, SqliteCatalog};

use crate::config::Config;
use crate::flows::audited;
use crate::{Keybridge, Result};

/// Copy the catalog to `out` while it is in use; the `catalog.backup` row
/// (or its error) is committed before this returns. The copy is the state
/// before that row: its head is the row before.
pub async fn backup(kb: &Keybridge, out: &Path, replace: bool, actor: &Actor) -> Result<CatalogCopy> {
    let result = kb.catalog().backup_to(out, replace).await;
    audited(kb, AuditEvent::new(actor, Action::CatalogBackup), result).await
}

/// Put the configured catalog back from `file`, then append a
/// `catalog.restore` row to the restored chain. A refused restore changes
/// nothing and records nothing: there is no catalog to record it in that
/// is not either the damaged copy or the one left in place.
pub async fn restore(config: &Config, file: &Path, replace: bool, actor: &Actor) -> Result<CatalogRestore> {
    let restored = SqliteCatalog::restore_from(file, &config.catalog.path, replace)?;
    let catalog = SqliteCatalog::open(&config.catalog.path)?;
    catalog.audit(AuditEvent::new(actor, Action::CatalogRestore)).await?;
    drop(catalog);
    Ok(restored)
}
