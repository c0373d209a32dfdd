//! Submissions while PostgreSQL is unreachable. `POST /proposals` keeps a
//! valid proposal that cannot reach the database in this local spool and
//! answers `202 spooled` with the proposal id and trace id it will keep; a
//! replayer submits the spooled proposals in order once the database
//! answers again, then forgets them.
//!
//! * One JSON file per submission, named by its proposal id (UUID v7, so
//!   names sort in submission order), written to a temporary name, fsynced,
//!   renamed into place and the directory fsynced: a submission that was
//!   answered `202` survives a crash of the process or the machine.
//! * Replaying is idempotent: the proposal row is inserted with its
//!   spooled id only if absent, in the same transaction as its message, so
//!   a crash between the commit and the file's removal changes nothing.
//! * A submission with an idempotency key that is already spooled is
//!   answered with the spooled one (`repeat`), not spooled twice.
//! * Bounded (`SINGULARITY_SPOOL_MAX`): a full spool is refused with a
//!   clear error, never a silent drop.
//! * One bad entry never blocks the others. A spooled proposal refused for
//!   good (it breaks the protocol's rules, or the database refuses its
//!   content: [`refused_for_content`]) is dead-lettered: moved to
//!   `rejected/` with a `.reason` file next to it, and logged; the replay
//!   goes on with the next one. Only a database that cannot be reached (or
//!   fails for a reason that is not the entry's) stops a replay, and the
//!   replayer says which of the two it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::proposals::{self, NewProposal, Submitted};
use pgflow_core::Pgflow;

/// How often the replayer looks for spooled submissions.
pub const REPLAY_EVERY: Duration = Duration::from_secs(1);

/// One spooled submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spooled {
    proposal_id: Uuid,
    trace_id: Uuid,
    spooled_at: DateTime<Utc>,
    proposal: NewProposal,
}

/// The spool of one instance.
#[derive(Debug)]
pub struct SubmissionSpool {
    dir: PathBuf,
    max: usize,
    /// One writer or replayer at a time.
    lock: tokio::sync::Mutex<()>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("submission spool: {what} {}: {e}", path.display()),
    ))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("cannot sync", dir, e))
}

impl SubmissionSpool {
    /// The spool in `dir` (created), holding at most `max` submissions.
    pub fn open(dir: PathBuf, max: usize) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        Ok(Self {
            dir,
            max,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spooled submissions' files, oldest first.
    fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| io_err("cannot list", &self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// How many submissions wait.
    pub fn len(&self) -> usize {
        self.files().map_or(0, |f| f.len())
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The spooled submission with `p`'s idempotency key, as a repeat's
    /// answer (refused when it proposes a different change).
    fn spooled_with_key(&self, p: &NewProposal) -> Result<Option<Submitted>> {
        let Some(key) = p.idempotency_key.as_deref() else {
            return Ok(None);
        };
        for path in self.files()? {
            let Ok(rec) = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_slice::<Spooled>(&t).map_err(|e| e.to_string()))
            else {
                continue;
            };
            if rec.proposal.idempotency_key.as_deref() != Some(key) {
                continue;
            }
            if !rec.proposal.same_change(p) {
                return Err(proposals::key_conflict(key, rec.proposal_id));
            }
            return Ok(Some(Submitted {
                proposal_id: rec.proposal_id,
                trace_id: rec.trace_id,
                status: "spooled".into(),
                repeat: true,
            }));
        }
        Ok(None)
    }

    /// Keeps `p` (already validated) under the ids it will be submitted
    /// with; durable when this returns. A repeat of a spooled submission
    /// (same idempotency key) is answered with it.
    pub async fn put(
        &self,
        proposal_id: Uuid,
        trace_id: Uuid,
        p: NewProposal,
    ) -> Result<Submitted> {
        let _guard = self.lock.lock().await;
        if let Some(first) = self.spooled_with_key(&p)? {
            return Ok(first);
        }
        let rec = Spooled {
            proposal_id,
            trace_id,
            spooled_at: Utc::now(),
            proposal: p,
        };
        let body = serde_json::to_vec(&rec)?;
        let dir = self.dir.clone();
        let max = self.max;
        let waiting = self.files()?.len();
        if waiting >= max {
            return Err(Error::Config(format!(
                "the submission spool is full ({waiting} of {max} waiting for PostgreSQL); \
                 try again once the database is back, or raise SINGULARITY_SPOOL_MAX"
            )));
        }
        tokio::task::spawn_blocking(move || -> Result<()> {
            use std::io::Write;
            let tmp = dir.join(format!("{proposal_id}.tmp"));
            let fin = dir.join(format!("{proposal_id}.json"));
            let mut f = std::fs::File::create(&tmp).map_err(|e| io_err("cannot write", &tmp, e))?;
            f.write_all(&body)
                .and_then(|()| f.sync_all())
                .map_err(|e| io_err("cannot write", &tmp, e))?;
            std::fs::rename(&tmp, &fin).map_err(|e| io_err("cannot rename", &tmp, e))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
        tracing::warn!(%proposal_id, %trace_id, "PostgreSQL unreachable: proposal spooled locally, submitted when it is back");
        Ok(Submitted {
            proposal_id,
            trace_id,
            status: "spooled".into(),
            repeat: false,
        })
    }

    /// Submits the spooled proposals in order; stops at the first
    /// database error (returned). Returns how many were submitted.
    pub async fn replay(&self, pg: &Pgflow, instance: &str) -> Result<usize> {
        let _guard = self.lock.lock().await;
        let mut done = 0;
        for path in self.files()? {
            let text = std::fs::read(&path).map_err(|e| io_err("cannot read", &path, e))?;
            let rec: Spooled = match serde_json::from_slice(&text) {
                Ok(r) => r,
                Err(e) => {
                    self.reject(&path, &format!("unreadable spool file: {e}"))?;
                    continue;
                }
            };
            let sent = proposals::submit_with_ids(
                pg,
                instance,
                rec.proposal,
                rec.proposal_id,
                rec.trace_id,
            )
            .await;
            match sent {
                Ok(_) => {}
                Err(Error::InvalidProposal(why) | Error::IdempotencyConflict(why)) => {
                    self.reject(&path, &why)?;
                    continue;
                }
                Err(e) if refused_for_content(&e) => {
                    let why = format!(
                        "refused by the database: {}",
                        pgflow_core::error::report(&e)
                    );
                    self.reject(&path, &why)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            std::fs::remove_file(&path).map_err(|e| io_err("cannot remove", &path, e))?;
            sync_dir(&self.dir)?;
            done += 1;
        }
        Ok(done)
    }

    fn reject(&self, path: &Path, why: &str) -> Result<()> {
        let rejected = self.dir.join("rejected");
        std::fs::create_dir_all(&rejected).map_err(|e| io_err("cannot create", &rejected, e))?;
        let to = rejected.join(path.file_name().unwrap_or_default());
        std::fs::rename(path, &to).map_err(|e| io_err("cannot move", path, e))?;
        std::fs::write(to.with_extension("reason"), why)
            .map_err(|e| io_err("cannot write", &to, e))?;
        tracing::error!(file = %to.display(), reason = why, "spooled proposal refused; moved aside");
        Ok(())
    }

    /// Replays every [`REPLAY_EVERY`] until `shutdown` is cancelled; a
    /// database still down is logged once per outage, any other error
    /// each time it changes.
    pub fn spawn_replayer(
        self: Arc<Self>,
        pg: Pgflow,
        instance: String,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing: Option<String> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(REPLAY_EVERY) => {}
                }
                if self.is_empty() {
                    continue;
                }
                match self.replay(&pg, &instance).await {
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(
                                submitted = n,
                                "spooled proposals submitted: PostgreSQL is back"
                            );
                        }
                        failing = None;
                    }
                    Err(e) => {
                        let unreachable = is_unreachable(&e);
                        let why = pgflow_core::error::report(&e);
                        let key = if unreachable {
                            "unreachable".to_string()
                        } else {
                            why.clone()
                        };
                        if failing.as_ref() != Some(&key) {
                            if unreachable {
                                tracing::warn!(error = %why, waiting = self.len(), "spooled proposals wait: database still unreachable");
                            } else {
                                tracing::error!(error = %why, waiting = self.len(), "spooled proposals wait: the database refused the replay");
                            }
                        }
                        failing = Some(key);
                    }
                }
            }
        })
    }
}

/// Whether the database refused `e`'s statement for the values the
/// proposal carried, so no retry can store it (see
/// [`pgflow_core::error::is_data_error`]).
pub fn refused_for_content(e: &Error) -> bool {
    match e {
        Error::Queue(pgflow_core::Error::Database(d)) | Error::Database(d) => {
            pgflow_core::error::is_data_error(d)
        }
        _ => false,
    }
}

/// Whether `e` means the database could not be reached (the case for the spool).
pub fn is_unreachable(e: &Error) -> bool {
    match e {
        Error::Queue(q) => q.is_connection(),
        Error::Database(d) => pgflow_core::error::is_connection_error(d),
        _ => false,
    }
}
