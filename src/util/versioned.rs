//! Named TOML files with a history: `DIR/NAME.toml` is the live text and every save or
//! delete leaves `DIR/.history/NAME/<unix ms>.toml` (or `.deleted`), so any version can be
//! listed, read and restored. Ranking profiles and merchandising rules are kept this way.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::write_atomic;
use crate::error::{Error, Result};

/// One saved version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    /// Version id: when it was saved, Unix milliseconds.
    pub version: u64,
    /// `put` or `delete`.
    pub action: &'static str,
}

/// A folder of versioned files; `kind` (`profile`, `rule`) names them in errors.
pub struct Versioned<'a> {
    dir: &'a Path,
    kind: &'static str,
}

impl<'a> Versioned<'a> {
    /// The files of `dir`.
    pub fn new(dir: &'a Path, kind: &'static str) -> Self {
        Versioned { dir, kind }
    }

    /// Where the live text of `name` is.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    fn history(&self, name: &str) -> PathBuf {
        self.dir.join(".history").join(name)
    }

    /// Checks a name (a file stem): 1-64 of `[A-Za-z0-9_-]`.
    pub fn check_name(&self, name: &str) -> Result<()> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        match ok {
            true => Ok(()),
            false => Err(Error::param(
                "name",
                format!(
                    "a {} name is 1 to 64 letters, digits, `_` or `-`",
                    self.kind
                ),
            )),
        }
    }

    /// A version id after every saved one: now, or one past the newest.
    fn next_version(&self, name: &str) -> Result<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.versions(name)?.last().map_or(0, |v| v.version);
        Ok(now.max(last + 1))
    }

    /// Saves `text` (validated by the caller) as `name`, keeping a copy in the history.
    pub fn save(&self, name: &str, text: &str) -> Result<Version> {
        self.check_name(name)?;
        let hist = self.history(name);
        std::fs::create_dir_all(&hist).map_err(|e| Error::io(&hist, e))?;
        let version = self.next_version(name)?;
        write_atomic(&hist.join(format!("{version}.toml")), text.as_bytes())?;
        write_atomic(&self.path(name), text.as_bytes())?;
        Ok(Version {
            version,
            action: "put",
        })
    }

    /// Removes `name` (its history stays, so it can be restored); `None` when there is
    /// no such file.
    pub fn remove(&self, name: &str) -> Result<Option<Version>> {
        self.check_name(name)?;
        let path = self.path(name);
        if !path.exists() {
            return Ok(None);
        }
        let hist = self.history(name);
        std::fs::create_dir_all(&hist).map_err(|e| Error::io(&hist, e))?;
        let version = self.next_version(name)?;
        write_atomic(&hist.join(format!("{version}.deleted")), b"")?;
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Some(Version {
            version,
            action: "delete",
        }))
    }

    /// The saved versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.history(name)) {
            for e in entries.flatten() {
                let f = e.file_name().to_string_lossy().to_string();
                let (stem, action) = match f.split_once('.') {
                    Some((s, "toml")) => (s.to_string(), "put"),
                    Some((s, "deleted")) => (s.to_string(), "delete"),
                    _ => continue,
                };
                if let Ok(version) = stem.parse() {
                    out.push(Version { version, action });
                }
            }
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    /// The text of one saved version.
    pub fn version_text(&self, name: &str, version: u64) -> Result<String> {
        let path = self.history(name).join(format!("{version}.toml"));
        std::fs::read_to_string(&path).map_err(|_| {
            Error::param(
                "version",
                format!("{} `{name}` has no saved version {version}", self.kind),
            )
        })
    }

    /// The newest saved version of `name`, if it was saved through [`Versioned::save`].
    pub fn current_version(&self, name: &str) -> Option<u64> {
        self.versions(name)
            .ok()?
            .last()
            .filter(|v| v.action == "put")
            .map(|v| v.version)
    }

    /// The `(name, text)` of every live file, by name.
    pub fn load_all(&self) -> Result<Vec<(String, PathBuf, String)>> {
        let mut out = Vec::new();
        if !self.dir.is_dir() {
            return Ok(out);
        }
        let entries = std::fs::read_dir(self.dir).map_err(|e| Error::io(self.dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(self.dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let name = (path.file_stem().and_then(|s| s.to_str()))
                .unwrap_or_default()
                .to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            out.push((name, path, text));
        }
        out.sort();
        Ok(out)
    }

    /// A stamp of the live files (sizes and modification times), to notice hand edits.
    pub fn stamp(&self) -> u128 {
        let Ok(entries) = std::fs::read_dir(self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("toml"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| {
                let t = (m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                t.wrapping_mul(31).wrapping_add(m.len() as u128)
            })
            .fold(0u128, |a, x| a.wrapping_add(x))
    }
}
