//! The instance's workspace: the directory in which approved changes are
//! applied. A change names a file relative to it; [`Workspace::resolve`]
//! refuses anything that could leave it (absolute paths, `..`, a parent
//! directory that is, or passes through, a symlink leading outside, a
//! symlinked file) before a byte is read or written. Writes are atomic
//! (temporary file + rename), and changes to one file are serialised
//! ([`Workspace::lock`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use pgflow_core::protocol::validate::MAX_PATH_COMPONENT_LEN;
use tokio::sync::OwnedMutexGuard;

/// Why a path was refused, or why it could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path is not acceptable (the text says why); no retry changes that.
    #[error("path {file:?} refused: {reason}")]
    Refused {
        /// The path as given.
        file: String,
        /// Why.
        reason: String,
    },
    /// The workspace could not be inspected (I/O trouble; may pass).
    #[error("cannot inspect the workspace for {file:?}: {source}")]
    Io {
        /// The path as given.
        file: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A workspace directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Workspace {
    /// The workspace at `root` (created when first needed).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            locks: Arc::default(),
        }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `file` inside the workspace, or why not.
    ///
    /// Checks, in order: the text (not empty, no control characters, not
    /// absolute, no `..` component, no component longer than a file system
    /// allows, names a file); then, on disk, every
    /// existing parent directory, canonicalised, must lie inside the
    /// canonical workspace (a symlinked directory is followed and checked);
    /// the file itself may not be a symlink or a directory. Missing parent
    /// directories are fine (they are created inside the workspace on write).
    pub fn resolve(&self, file: &str) -> Result<PathBuf, PathError> {
        let refuse = |reason: String| PathError::Refused {
            file: file.to_string(),
            reason,
        };
        let io_err = |source| PathError::Io {
            file: file.to_string(),
            source,
        };
        let parts = lexical_parts(file).map_err(refuse)?;
        std::fs::create_dir_all(&self.root).map_err(io_err)?;
        let root = self.root.canonicalize().map_err(io_err)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(refuse("names no file".into()));
        };
        let mut dir = root.clone();
        let mut missing = false;
        for part in parents {
            let next = dir.join(part);
            if missing {
                dir = next;
                continue;
            }
            match std::fs::symlink_metadata(&next) {
                Ok(meta) => {
                    let real = next.canonicalize().map_err(io_err)?;
                    if !real.starts_with(&root) {
                        return Err(refuse(format!(
                            "{part:?} leads outside the workspace (to {})",
                            real.display()
                        )));
                    }
                    if !real.is_dir() {
                        return Err(refuse(format!("{part:?} is not a directory")));
                    }
                    if meta.is_symlink() {
                        tracing::debug!(file, link = %next.display(), "path follows a symlink inside the workspace");
                    }
                    dir = real;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing = true;
                    dir = next;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        let path = dir.join(name);
        if !missing {
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_symlink() => {
                    let target = std::fs::read_link(&path)
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| "?".into());
                    return Err(refuse(format!(
                        "the file is a symlink (to {target}); symlinked files are never changed"
                    )));
                }
                Ok(meta) if meta.is_dir() => {
                    return Err(refuse("it is a directory, not a file".into()))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        if !path.starts_with(&root) {
            return Err(refuse("it resolves outside the workspace".into()));
        }
        Ok(path)
    }

    /// Serialises changes to one file (apply and rollback): the guard is
    /// held while the file is backed up, written or restored.
    pub async fn lock(&self, path: &Path) -> OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

/// The normal components of `file`, or why the text alone is refused.
fn lexical_parts(file: &str) -> Result<Vec<&OsStr>, String> {
    let parts = lexical_components(file).map_err(str::to_string)?;
    if let Some(long) = parts.iter().find(|p| p.len() > MAX_PATH_COMPONENT_LEN) {
        return Err(format!(
            "a component has {} bytes; a file or directory name may have at most \
             {MAX_PATH_COMPONENT_LEN}",
            long.len()
        ));
    }
    Ok(parts)
}

/// [`lexical_parts`] without the length check.
fn lexical_components(file: &str) -> Result<Vec<&OsStr>, &'static str> {
    if file.trim().is_empty() {
        return Err("the path is empty");
    }
    if file.chars().any(char::is_control) {
        return Err("the path contains control characters");
    }
    if file.starts_with(['/', '\\']) || Path::new(file).is_absolute() {
        return Err("absolute paths are refused; give a path relative to the workspace");
    }
    let bytes = file.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err("drive prefixes are refused; give a path relative to the workspace");
    }
    if file.split(['/', '\\']).any(|p| p == "..") {
        return Err("'..' components could leave the workspace");
    }
    if file.ends_with(['/', '\\']) {
        return Err("the path names a directory, not a file");
    }
    let mut parts = Vec::new();
    for c in Path::new(file).components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("'..' components could leave the workspace"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are refused; give a path relative to the workspace")
            }
        }
    }
    if parts.is_empty() {
        return Err("the path names no file");
    }
    Ok(parts)
}

/// The content of `path`, or `None` when it does not exist.
pub fn read_backup(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `content` atomically: parent directories are
/// created, the content goes to a temporary file beside it, is synced, and
/// renamed over the file. The temporary name does not repeat the file's
/// (`.singularity-tmp.<uuid>`), so it fits wherever the file's name does.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    std::fs::create_dir_all(parent)?;
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ));
    }
    let tmp = parent.join(format!(
        ".singularity-tmp.{}",
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes `path`; a file that is already gone is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ws: &Workspace, file: &str) -> String {
        match ws.resolve(file) {
            Err(PathError::Refused { reason, .. }) => reason,
            other => panic!("{file:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn lexical_checks_refuse_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().join("ws"));
        for (file, why) in [
            ("../x", "'..'"),
            ("a/../../x", "'..'"),
            ("a\\..\\x", "'..'"),
            ("/etc/passwd", "absolute"),
            ("\\x", "absolute"),
            ("C:x", "drive"),
            ("", "empty"),
            ("a/", "directory"),
            (".", "no file"),
            ("a\u{0}b", "control"),
        ] {
            let reason = refused(&ws, file);
            assert!(reason.contains(why), "{file:?}: {reason}");
        }
        let too_long = refused(&ws, &format!("src/{}", "n".repeat(256)));
        assert!(too_long.contains("256 bytes"), "{too_long}");
        let longest = "n".repeat(MAX_PATH_COMPONENT_LEN);
        let p = ws.resolve(&format!("src/{longest}")).unwrap();
        // The longest name a file system allows is written (its temporary
        // file's name is shorter).
        write_atomic(&p, b"x").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        let ok = ws.resolve("./src/lib.rs").unwrap();
        assert!(ok.ends_with("ws/src/lib.rs"), "{ok:?}");
    }

    #[test]
    fn symlinks_leading_outside_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir_all(root.join("inner")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("inner"), root.join("alias")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("file_link")).unwrap();
        let ws = Workspace::new(root.clone());
        assert!(refused(&ws, "out/new.txt").contains("outside the workspace"));
        assert!(refused(&ws, "out/deeper/new.txt").contains("outside the workspace"));
        assert!(refused(&ws, "file_link").contains("symlink"));
        assert!(refused(&ws, "inner").contains("directory"));
        // A symlink that stays inside is followed.
        let p = ws.resolve("alias/a.txt").unwrap();
        assert!(p.starts_with(root.canonicalize().unwrap()), "{p:?}");
    }

    #[test]
    fn writes_are_atomic_and_restorable() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().join("ws"));
        let p = ws.resolve("a/b/c.txt").unwrap();
        assert_eq!(read_backup(&p).unwrap(), None);
        write_atomic(&p, b"one").unwrap();
        assert_eq!(read_backup(&p).unwrap().as_deref(), Some(&b"one"[..]));
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert!(!p.exists());
    }
}
