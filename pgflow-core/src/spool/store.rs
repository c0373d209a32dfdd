//! The spool's storage: one append-only JSON-lines file of numbered records
//! plus a small "delivered through record N" marker, mirrored in memory as
//! a FIFO of records. Every method is blocking (file I/O and fsync); the
//! [`super::Publisher`] calls them from `spawn_blocking`.
//!
//! Files in the spool directory:
//!
//! * `spool.jsonl`: one [`Record`] per line, numbered `n = 1, 2, ...` in
//!   append order. Appends are `write` + `fdatasync` before the caller is told
//!   "spooled".
//! * `delivered`: the highest record number known to be delivered, replaced
//!   atomically (temp file, fsync, rename, fsync of the directory). Records
//!   with `n <=` the marker are skipped when the file is loaded.
//! * `rejected.jsonl`: records the database refused for good (unknown queue,
//!   invalid message), each with the error, kept for an operator.
//!
//! Because records are skipped by number, not by byte offset, the marker and
//! the data file never have to change together: when every record is
//! delivered the data file is truncated to zero, and when more than half of
//! it (and at least [`COMPACT_MIN_BYTES`]) is delivered, the remainder is
//! rewritten to a temp file that atomically replaces it. Record numbers only
//! grow (a reload continues after both the marker and the last record), so
//! a stale marker can only cause a re-delivery, never a skipped message.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use super::record::{now_ms, Record};
use super::SpoolConfig;
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::queue_name::QueueName;

/// The data file.
pub(super) const DATA_FILE: &str = "spool.jsonl";
/// The "delivered through" marker.
const MARKER_FILE: &str = "delivered";
/// Records refused by the database for good.
pub(super) const REJECTED_FILE: &str = "rejected.jsonl";
/// Delivered bytes below which the data file is never rewritten.
const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// Spool directories opened by a live [`Store`] of this process.
static OPEN_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A record waiting in memory, with the size of its line on disk.
#[derive(Debug)]
struct Entry {
    rec: Record,
    bytes: u64,
}

/// Consecutive records of one queue: one INSERT.
#[derive(Debug)]
pub(super) struct Run {
    /// Their queue.
    pub queue: QueueName,
    /// True when any of them asked for a NOTIFY (one extra wake-up is harmless).
    pub notify: bool,
    /// The messages, oldest first.
    pub msgs: Vec<OutgoingMessage>,
}

/// The oldest records, split into runs of one queue: one transaction.
#[derive(Debug)]
pub(super) struct Batch {
    /// The runs, oldest first.
    pub runs: Vec<Run>,
    /// The number of the last record in the batch.
    pub last_n: u64,
    /// How many messages the runs hold.
    pub len: usize,
}

/// What an append changed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Appended {
    /// The spool was empty before: spooling starts.
    pub first: bool,
    /// Messages now waiting.
    pub len: usize,
}

/// Marks a spool directory as open in this process until dropped.
#[derive(Debug)]
struct DirGuard(PathBuf);

impl DirGuard {
    fn acquire(dir: PathBuf) -> Result<Self> {
        let mut open = OPEN_DIRS.lock().unwrap_or_else(PoisonError::into_inner);
        if !open.insert(dir.clone()) {
            return Err(Error::Config(format!(
                "spool directory {} is already open by another Publisher of this process \
                 (clone that Publisher instead; each process needs a directory of its own)",
                dir.display()
            )));
        }
        Ok(Self(dir))
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        OPEN_DIRS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// The spool of one directory.
pub(super) struct Store {
    guard: DirGuard,
    data_path: PathBuf,
    /// The data file opened for appending; `None` after a failed reopen
    /// (the next append retries it).
    file: Option<File>,
    entries: VecDeque<Entry>,
    live_bytes: u64,
    file_len: u64,
    next_n: u64,
    delivered: u64,
    max_messages: usize,
    max_bytes: u64,
}

impl std::fmt::Debug for Store {
    // Not derived: the records (whole payloads) would flood any log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir())
            .field("messages", &self.entries.len())
            .field("bytes", &self.live_bytes)
            .field("file_len", &self.file_len)
            .field("next_n", &self.next_n)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// Maps an I/O error on `path` to [`Error::Spool`].
fn spool_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Spool {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a rename or a file creation in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(spool_err(dir))
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(spool_err(path))
}

/// Replaces `path` atomically and durably with what `write` writes.
fn replace_file(
    dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(spool_err(path))?;
    sync_dir(dir)
}

/// The parsed content of a data file.
struct Parsed {
    entries: VecDeque<Entry>,
    max_n: u64,
    /// Length of the complete lines (a torn last line starts here).
    good_len: u64,
    corrupt: usize,
}

fn parse(bytes: &[u8], delivered: u64, path: &Path) -> Parsed {
    let mut parsed = Parsed {
        entries: VecDeque::new(),
        max_n: 0,
        good_len: 0,
        corrupt: 0,
    };
    let mut pos = 0;
    while let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') {
        let line = &bytes[pos..pos + nl];
        let end = pos + nl + 1;
        match serde_json::from_slice::<Record>(line) {
            Ok(rec) => {
                parsed.max_n = parsed.max_n.max(rec.n);
                if rec.n > delivered {
                    parsed.entries.push_back(Entry {
                        rec,
                        bytes: (end - pos) as u64,
                    });
                }
            }
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(e) => {
                parsed.corrupt += 1;
                tracing::error!(file = %path.display(), offset = pos, error = %e,
                    "skipping an unreadable line in the outage spool");
            }
        }
        pos = end;
    }
    parsed.good_len = pos as u64;
    parsed
}

fn read_marker(path: &Path) -> Result<u64> {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|e| Error::Spool {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a record number ({e}); delete the file to re-deliver the whole spool"),
            ),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(spool_err(path)(e)),
    }
}

impl Store {
    /// Opens (creating it if needed) the spool in `cfg.dir` and loads the
    /// records not yet delivered. A torn last line (a write cut short by a
    /// crash) is skipped with a warning and cut off the file.
    pub(super) fn open(cfg: &SpoolConfig) -> Result<Self> {
        fs::create_dir_all(&cfg.dir).map_err(spool_err(&cfg.dir))?;
        let dir = fs::canonicalize(&cfg.dir).map_err(spool_err(&cfg.dir))?;
        let guard = DirGuard::acquire(dir.clone())?;
        let data_path = dir.join(DATA_FILE);
        let delivered = read_marker(&dir.join(MARKER_FILE))?;
        let existed = data_path.exists();
        let mut file = open_append(&data_path)?;
        if !existed {
            sync_dir(&dir)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(spool_err(&data_path))?;
        let parsed = parse(&bytes, delivered, &data_path);
        if parsed.good_len < bytes.len() as u64 {
            tracing::warn!(file = %data_path.display(), bytes = bytes.len() as u64 - parsed.good_len,
                "skipping a torn last line in the outage spool (a write cut short by a crash; \
                 its publish never returned)");
            file.set_len(parsed.good_len)
                .and_then(|()| file.sync_all())
                .map_err(spool_err(&data_path))?;
        }
        let live_bytes = parsed.entries.iter().map(|e| e.bytes).sum();
        let mut store = Self {
            guard,
            data_path,
            file: Some(file),
            entries: parsed.entries,
            live_bytes,
            file_len: parsed.good_len,
            next_n: parsed.max_n.max(delivered) + 1,
            delivered,
            max_messages: cfg.max_messages,
            max_bytes: cfg.max_bytes,
        };
        if parsed.corrupt > 0 {
            tracing::error!(dir = %dir.display(), lines = parsed.corrupt,
                "the outage spool had unreadable lines; they were skipped");
        }
        store.compact()?;
        Ok(store)
    }

    /// The spool directory.
    pub(super) fn dir(&self) -> &Path {
        &self.guard.0
    }

    /// Messages waiting.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends `msg` (already validated) and syncs it to disk, or refuses
    /// it with [`Error::SpoolFull`] when a limit would be exceeded.
    pub(super) fn append(
        &mut self,
        queue: &QueueName,
        notify: bool,
        msg: &OutgoingMessage,
    ) -> Result<Appended> {
        let rec = Record::new(self.next_n, queue, notify, msg, now_ms());
        let mut line = serde_json::to_vec(&rec)?;
        line.push(b'\n');
        let bytes = line.len() as u64;
        if self.entries.len() >= self.max_messages || self.live_bytes + bytes > self.max_bytes {
            return Err(Error::SpoolFull {
                dir: self.dir().to_path_buf(),
                messages: self.entries.len(),
                bytes: self.live_bytes,
                max_messages: self.max_messages,
                max_bytes: self.max_bytes,
            });
        }
        let file = match self.file.as_mut() {
            Some(f) => f,
            None => self.file.insert(open_append(&self.data_path)?),
        };
        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
            // Cut off a partial line so the next append does not follow garbage.
            if let Err(undo) = file.set_len(self.file_len) {
                tracing::error!(file = %self.data_path.display(), error = %undo,
                    "could not cut a failed append off the outage spool");
            }
            return Err(spool_err(&self.data_path)(e));
        }
        self.file_len += bytes;
        self.live_bytes += bytes;
        self.next_n += 1;
        let first = self.entries.is_empty();
        self.entries.push_back(Entry { rec, bytes });
        Ok(Appended {
            first,
            len: self.entries.len(),
        })
    }

    /// Up to `limit` of the oldest records, in runs of one queue.
    pub(super) fn front_batch(&self, limit: usize) -> Option<Batch> {
        self.entries.front()?;
        let now = now_ms();
        let mut batch = Batch {
            runs: Vec::new(),
            last_n: 0,
            len: 0,
        };
        for e in self.entries.iter().take(limit.max(1)) {
            match batch.runs.last_mut() {
                Some(run) if run.queue == e.rec.queue => {
                    run.notify |= e.rec.notify;
                    run.msgs.push(e.rec.to_message(now));
                }
                _ => batch.runs.push(Run {
                    queue: e.rec.queue.clone(),
                    notify: e.rec.notify,
                    msgs: vec![e.rec.to_message(now)],
                }),
            }
            batch.last_n = e.rec.n;
            batch.len += 1;
        }
        Some(batch)
    }

    /// Removes the records up to number `through` (they are delivered) and
    /// records that on disk. Returns how many were removed.
    pub(super) fn commit(&mut self, through: u64) -> Result<usize> {
        let mut removed = 0;
        while let Some(front) = self.entries.front() {
            if front.rec.n > through {
                break;
            }
            self.live_bytes -= front.bytes;
            self.entries.pop_front();
            removed += 1;
        }
        self.delivered = self.delivered.max(through);
        if !self.entries.is_empty() {
            let marker = self.dir().join(MARKER_FILE);
            let delivered = self.delivered;
            replace_file(self.dir(), &marker, |out| write!(out, "{delivered}"))?;
        }
        self.compact()?;
        Ok(removed)
    }

    /// Moves the records up to number `through` to `rejected.jsonl` with
    /// `error` (the database refused them for good), then removes them.
    pub(super) fn reject(&mut self, through: u64, error: &str) -> Result<usize> {
        #[derive(Serialize)]
        struct Rejected<'a> {
            error: &'a str,
            rejected_at_ms: u64,
            record: &'a Record,
        }
        let path = self.dir().join(REJECTED_FILE);
        let mut out = Vec::new();
        for e in self.entries.iter().take_while(|e| e.rec.n <= through) {
            let line = Rejected {
                error,
                rejected_at_ms: now_ms(),
                record: &e.rec,
            };
            serde_json::to_writer(&mut out, &line)?;
            out.push(b'\n');
        }
        let existed = path.exists();
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&out).and_then(|()| f.sync_data()))
            .map_err(spool_err(&path))?;
        if !existed {
            sync_dir(self.dir())?;
        }
        self.commit(through)
    }

    /// Shrinks the data file: to nothing when every record is delivered, or
    /// to the undelivered remainder when that is less than half of it.
    fn compact(&mut self) -> Result<()> {
        if self.entries.is_empty() {
            if self.file_len > 0 {
                let file = match self.file.as_mut() {
                    Some(f) => f,
                    None => self.file.insert(open_append(&self.data_path)?),
                };
                file.set_len(0)
                    .and_then(|()| file.sync_all())
                    .map_err(spool_err(&self.data_path))?;
                self.file_len = 0;
            }
            return Ok(());
        }
        let dead = self.file_len - self.live_bytes;
        if dead < COMPACT_MIN_BYTES || dead < self.live_bytes {
            return Ok(());
        }
        let mut sizes = Vec::with_capacity(self.entries.len());
        let entries = &self.entries;
        replace_file(self.dir(), &self.data_path, |out| {
            for e in entries {
                let line = serde_json::to_vec(&e.rec)?;
                out.write_all(&line)?;
                out.write_all(b"\n")?;
                sizes.push(line.len() as u64 + 1);
            }
            Ok(())
        })?;
        // The old handle points at the replaced file: reopen before any append.
        self.file = None;
        for (e, size) in self.entries.iter_mut().zip(sizes) {
            e.bytes = size;
        }
        self.live_bytes = self.entries.iter().map(|e| e.bytes).sum();
        self.file_len = self.live_bytes;
        self.file = Some(open_append(&self.data_path)?);
        tracing::debug!(file = %self.data_path.display(), bytes = self.file_len,
            "compacted the outage spool");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn cfg(dir: &Path) -> SpoolConfig {
        SpoolConfig::new(dir)
    }

    fn msg(n: i64) -> OutgoingMessage {
        OutgoingMessage::new("t", serde_json::json!({ "n": n }))
    }

    #[test]
    fn records_survive_reopen_and_commits_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let q = QueueName::new("q").unwrap();
        let ids: Vec<Uuid> = {
            let mut s = Store::open(&cfg(dir.path())).unwrap();
            let ids = (0..5)
                .map(|n| {
                    let m = msg(n);
                    s.append(&q, n % 2 == 0, &m).unwrap();
                    m.id
                })
                .collect();
            let b = s.front_batch(2).unwrap();
            assert_eq!((b.runs.len(), b.len), (1, 2));
            assert!(b.runs[0].notify);
            assert_eq!(s.commit(b.last_n).unwrap(), 2);
            ids
        };
        let s = Store::open(&cfg(dir.path())).unwrap();
        let b = s.front_batch(100).unwrap();
        let got: Vec<Uuid> = b.runs[0].msgs.iter().map(|m| m.id).collect();
        assert_eq!(got, ids[2..].to_vec());
        assert_eq!(b.runs[0].msgs[0].payload["n"], 2);
    }

    #[test]
    fn a_directory_is_opened_once_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&cfg(dir.path())).unwrap();
        assert!(matches!(
            Store::open(&cfg(dir.path())),
            Err(Error::Config(_))
        ));
        drop(s);
        Store::open(&cfg(dir.path())).unwrap();
    }

    #[test]
    fn a_drained_spool_truncates_and_numbers_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let q = QueueName::new("q").unwrap();
        let mut s = Store::open(&cfg(dir.path())).unwrap();
        for n in 0..3 {
            s.append(&q, false, &msg(n)).unwrap();
        }
        s.commit(2).unwrap();
        s.commit(3).unwrap();
        assert_eq!(s.len(), 0);
        assert_eq!(fs::metadata(dir.path().join(DATA_FILE)).unwrap().len(), 0);
        s.append(&q, false, &msg(9)).unwrap();
        drop(s);
        let s = Store::open(&cfg(dir.path())).unwrap();
        assert_eq!(
            s.len(),
            1,
            "a record after the marker is not taken as delivered"
        );
    }

    #[test]
    fn compaction_keeps_the_remainder() {
        let dir = tempfile::tempdir().unwrap();
        let q = QueueName::new("q").unwrap();
        let mut s = Store::open(&cfg(dir.path())).unwrap();
        let big = serde_json::json!({ "pad": "x".repeat(100_000) });
        for _ in 0..60 {
            s.append(&q, false, &OutgoingMessage::new("t", big.clone()))
                .unwrap();
        }
        s.commit(50).unwrap();
        let len = fs::metadata(dir.path().join(DATA_FILE)).unwrap().len();
        assert!(
            len < 2_000_000,
            "compacted to the 10 undelivered records, got {len}"
        );
        s.append(&q, false, &msg(1)).unwrap();
        drop(s);
        let s = Store::open(&cfg(dir.path())).unwrap();
        assert_eq!(s.len(), 11);
    }
}
