//! Small helpers every layer may use, and that use nothing of shoprank but errors: the
//! clock, a seeded random generator, durable file writes and OS locks. They live at the
//! bottom so no stage has to reach sideways (into the event store for the time, into an
//! offline tool for randomness) to get them.

mod fs;
mod rng;

pub use fs::{sync_dir, try_lock, write_atomic, write_file};
pub use rng::Rng;

/// Now, Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
