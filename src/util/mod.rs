//! Small helpers every layer may use, and that use nothing of shoprank but errors: the
//! clock, a seeded random generator, durable file writes and OS locks, a secret string.
//! They live at the bottom so no stage has to reach sideways (into the event store for
//! the time, into an offline tool for randomness) to get them.

mod fs;
mod rng;
pub mod versioned;

pub use fs::{copy_dir, sync_dir, try_lock, write_atomic, write_file};
pub use rng::Rng;

/// A string that never shows in `Debug` output, so a logged settings struct cannot leak
/// it (the master key).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
