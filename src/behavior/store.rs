//! Event store: validated events -> durable storage, behind a small trait so a shared store
//! (Redis, for several replicas) can replace the embedded one later.
//!
//! [`RedbStore`] keeps events in a redb B-tree keyed by `(user_id, sequence)`. `append`
//! commits one transaction per batch with redb's default `Durability::Immediate` (fsync
//! before returning): an acknowledged event survives a crash or `kill -9`, and a batch is
//! stored whole or not at all.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::Event;
use crate::error::{Error, Result};

const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Durable storage of behavior events.
pub trait EventStore: Send + Sync {
    /// Stores a batch atomically; on return the events are durable.
    fn append(&self, events: &[Event]) -> Result<()>;
    /// Visits every stored event, grouped by user, in append order within a user.
    fn scan(&self, visit: &mut dyn FnMut(Event)) -> Result<()>;
    /// Erases every event of a user, durably; returns how many were removed.
    fn delete_user(&self, user: &str) -> Result<usize>;
    /// Drops events with `ts < before`; returns how many were removed.
    fn expire(&self, before: i64) -> Result<usize>;
}

/// The embedded store: one redb file.
pub struct RedbStore {
    db: Database,
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store file.
    pub fn open(path: &Path) -> Result<RedbStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db =
            Database::create(path).map_err(|e| Error::Store(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(store_err)?;
        tx.open_table(EVENTS).map_err(store_err)?;
        tx.open_table(META).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(RedbStore { db })
    }
}

impl EventStore for RedbStore {
    fn append(&self, events: &[Event]) -> Result<()> {
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut meta = tx.open_table(META).map_err(store_err)?;
            let mut seq = meta
                .get("next_seq")
                .map_err(store_err)?
                .map_or(0, |v| v.value());
            let mut table = tx.open_table(EVENTS).map_err(store_err)?;
            for e in events {
                let bytes = serde_json::to_vec(e).map_err(store_err)?;
                table
                    .insert((e.user_id.as_str(), seq), bytes.as_slice())
                    .map_err(store_err)?;
                seq += 1;
            }
            meta.insert("next_seq", seq).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    fn scan(&self, visit: &mut dyn FnMut(Event)) -> Result<()> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let table = tx.open_table(EVENTS).map_err(store_err)?;
        for row in table.iter().map_err(store_err)? {
            let (_, value) = row.map_err(store_err)?;
            visit(serde_json::from_slice(value.value()).map_err(store_err)?);
        }
        Ok(())
    }

    fn delete_user(&self, user: &str) -> Result<usize> {
        let tx = self.db.begin_write().map_err(store_err)?;
        let mut removed = 0;
        {
            let mut table = tx.open_table(EVENTS).map_err(store_err)?;
            table
                .retain_in((user, 0)..=(user, u64::MAX), |_, _| {
                    removed += 1;
                    false
                })
                .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        Ok(removed)
    }

    fn expire(&self, before: i64) -> Result<usize> {
        let tx = self.db.begin_write().map_err(store_err)?;
        let mut removed = 0;
        {
            let mut table = tx.open_table(EVENTS).map_err(store_err)?;
            table
                .retain(|_, value| {
                    let keep = serde_json::from_slice::<Event>(value).is_ok_and(|e| e.ts >= before);
                    removed += usize::from(!keep);
                    keep
                })
                .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behavior::EventType;

    fn event(user: &str, product: &str, ts: i64) -> Event {
        Event {
            user_id: user.into(),
            kind: EventType::Click,
            product_id: Some(product.into()),
            query: None,
            ts,
        }
    }

    fn all(store: &RedbStore) -> Vec<Event> {
        let mut out = Vec::new();
        store.scan(&mut |e| out.push(e)).unwrap();
        out
    }

    #[test]
    fn appends_survive_reopen_and_users_can_be_erased() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store
                .append(&[event("u1", "a", 100), event("u2", "b", 200)])
                .unwrap();
            store.append(&[event("u1", "c", 300)]).unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let events = all(&store);
        assert_eq!(
            events
                .iter()
                .map(|e| e.product_id.clone().unwrap())
                .collect::<Vec<_>>(),
            ["a", "c", "b"]
        );
        assert_eq!(store.delete_user("u1").unwrap(), 2);
        assert_eq!(all(&store), vec![event("u2", "b", 200)]);
        assert_eq!(store.expire(250).unwrap(), 1);
        assert!(all(&store).is_empty());
    }
}
