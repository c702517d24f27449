//! Backup jobs: which DEK encrypted which stream, where the stream went, and
//! whether the client finished it. A job is `running` from the moment its
//! DEK is issued and becomes `complete` only when the client reports the
//! stream the MediaAgent stored; a backup interrupted anywhere never shows
//! as complete.

use rusqlite::{params, Row};

use super::{query_one, SqliteCatalog, NOW};
use keybridge_proto::api::{JobCompletion, JobRecord, JobState};
use keybridge_proto::{Error, Result};

const SELECT: &str = "SELECT j.id, p.name, c.name, j.dek_id, j.media_agent, j.state, j.stream_bytes, j.stream_checksum, \
     j.plain_bytes, j.files, j.created_at, j.completed_at \
     FROM jobs j JOIN pools p ON p.id = j.pool_id JOIN clients c ON c.id = j.client_id";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let state: String = r.get(5)?;
    let state = match state.as_str() {
        "running" => JobState::Running,
        "complete" => JobState::Complete,
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                5,
                rusqlite::types::Type::Text,
                format!("unknown job state '{other}'").into(),
            ))
        }
    };
    let bytes: Option<i64> = r.get(6)?;
    let completion = match bytes {
        Some(b) => Some(JobCompletion {
            stream_bytes: b as u64,
            stream_checksum: r.get(7)?,
            plain_bytes: r.get::<_, i64>(8)? as u64,
            files: r.get::<_, i64>(9)? as u64,
        }),
        None => None,
    };
    Ok(JobRecord {
        id: r.get(0)?,
        pool: r.get(1)?,
        client: r.get(2)?,
        dek_id: r.get(3)?,
        media_agent: r.get(4)?,
        state,
        completion,
        created_at: r.get(10)?,
        completed_at: r.get(11)?,
    })
}

impl SqliteCatalog {
    pub(super) fn insert_job_row(&self, id: &str, pool_id: i64, client_id: i64, dek_id: &str, media_agent: &str) -> Result<JobRecord> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO jobs(id, pool_id, client_id, dek_id, media_agent, state, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'running', {NOW})"
                ),
                params![id, pool_id, client_id, dek_id, media_agent],
            )
            .map_err(Error::catalog(format!("recording job {id}")))?;
        self.job_row(id)
    }

    pub(super) fn job_row(&self, id: &str) -> Result<JobRecord> {
        query_one(&self.conn(), &format!("{SELECT} WHERE j.id = ?1"), &id, job_from_row)
            .map_err(Error::catalog(format!("reading job {id}")))?
            .ok_or_else(|| Error::NotFound { what: "job", name: id.to_owned() })
    }

    pub(super) fn list_job_rows(&self, client: Option<&str>, limit: u32) -> Result<Vec<JobRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("{SELECT} WHERE (?1 IS NULL OR c.name = ?1) ORDER BY j.created_at DESC, j.id DESC LIMIT ?2"))
            .map_err(Error::catalog("listing jobs"))?;
        let rows = stmt
            .query_map(params![client, limit], job_from_row)
            .map_err(Error::catalog("listing jobs"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Error::catalog("listing jobs"))?;
        Ok(rows)
    }

    pub(super) fn complete_job_row(&self, id: &str, done: &JobCompletion) -> Result<JobRecord> {
        let job = self.job_row(id)?;
        if job.state == JobState::Complete {
            let same = job.completion.as_ref().is_some_and(|c| {
                c.stream_bytes == done.stream_bytes && c.stream_checksum == done.stream_checksum
            });
            return if same {
                Ok(job)
            } else {
                Err(Error::Input { what: format!("job {id}"), reason: "it is already complete with another stream".into() })
            };
        }
        let changed = self
            .conn()
            .execute(
                &format!(
                    "UPDATE jobs SET state = ?2, stream_bytes = ?3, stream_checksum = ?4, plain_bytes = ?5, files = ?6, \
                     completed_at = {NOW} WHERE id = ?1 AND state = 'running'"
                ),
                params![
                    id,
                    JobState::Complete.as_str(),
                    done.stream_bytes as i64,
                    done.stream_checksum,
                    done.plain_bytes as i64,
                    done.files as i64
                ],
            )
            .map_err(Error::catalog(format!("completing job {id}")))?;
        if changed != 1 {
            return Err(Error::Internal(format!("job {id} changed state while being completed")));
        }
        self.job_row(id)
    }
}
