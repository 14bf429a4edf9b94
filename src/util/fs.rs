//! Durable file writes and OS locks: what the index, the profiles and the experiments
//! use to change files on disk without a reader ever seeing half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Replaces `path` with `bytes` all at once: written and synced beside it, renamed over
/// it, the folder synced. Readers see the old or the new file, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_file(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Creates or truncates `path`, writes `bytes` and syncs the file.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Copies folder `from` to `to` (which must not exist) through `to.tmp` and a rename,
/// skipping lock files: `to` appears whole or not at all.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fn copy(from: &Path, to: &Path) -> Result<()> {
        std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
            let entry = entry.map_err(|e| Error::io(from, e))?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".lock") {
                continue;
            }
            let (src, dst) = (entry.path(), to.join(&name));
            if entry.file_type().map_err(|e| Error::io(&src, e))?.is_dir() {
                copy(&src, &dst)?;
            } else {
                std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
            }
        }
        Ok(())
    }
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    copy(from, &tmp)?;
    std::fs::rename(&tmp, to).map_err(|e| Error::io(to, e))?;
    match to.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Syncs a folder, so a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// An exclusive OS lock on `path` (created if missing); `None` when another process
/// holds it. The lock lasts as long as the returned file and ends with the process.
pub fn try_lock(path: &Path) -> Result<Option<std::fs::File>> {
    let lock = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}
