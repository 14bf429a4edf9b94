//! Behavior on the engine: events stored durably, then folded into the shoppers'
//! profiles (with query vectors from the encoder and product vectors from the index);
//! a shopper's profile and erasure. The profiles themselves live in `behavior`.

use super::*;

impl Engine {
    /// Opens behavior tracking on `store`: drops events older than the retention and
    /// rebuilds every user profile from the rest. Returns the number of events replayed.
    pub fn attach_events(
        &mut self,
        store: Box<dyn EventStore>,
        retention_days: u64,
    ) -> Result<usize> {
        let config = self.profiles().get("default")?.personalization.clone();
        let retention_secs = (retention_days > 0).then_some(retention_days as i64 * 86_400);
        if let Some(r) = retention_secs {
            let dropped = store.expire(crate::util::now() - r)?;
            if dropped > 0 {
                tracing::info!(
                    dropped,
                    retention_days,
                    "dropped events past the retention window"
                );
            }
        }
        if !store.pseudonymized()? {
            let n = store.pseudonymize(&|id| self.pseudonyms.of(id))?;
            tracing::info!(events = n, "stored user ids replaced by their pseudonyms");
        }
        let mut events = Vec::new();
        store.scan(&mut |e| events.push(e))?;
        let behavior = Tracker {
            store,
            users: RwLock::new(HashMap::new()),
            writer: Mutex::new(()),
            query_clicks: RwLock::new(HashMap::new()),
            query_brands: RwLock::new(HashMap::new()),
            last_search: Mutex::new(HashMap::new()),
            config,
            retention_secs,
        };
        let vectors = self.event_vectors(&events);
        behavior.apply(&self.generation(), &events, &vectors);
        let users = behavior.users.read().map_or(0, |u| u.len());
        tracing::info!(events = events.len(), users, "user profiles rebuilt");
        self.behavior = Some(behavior);
        Ok(events.len())
    }

    /// Stores events durably, then updates their users' profiles. Returns (stored, dropped
    /// as older than the retention window).
    pub fn record_events(&self, mut events: Vec<Event>) -> Result<(usize, usize)> {
        let b = self.behavior.as_ref().ok_or(Error::NoEventStore)?;
        let now = crate::util::now();
        for (i, e) in events.iter().enumerate() {
            e.validate(now).map_err(|reason| Error::InvalidEvent {
                index: Some(i),
                reason,
            })?;
        }
        // Only pseudonyms go to the store, the profiles and the experiment logs.
        for e in &mut events {
            e.user_id = self.pseudonyms.of(&e.user_id);
        }
        let total = events.len();
        let events: Vec<Event> = match b.retention_secs {
            Some(r) => events
                .into_iter()
                .filter(|e| e.ts >= crate::util::now() - r)
                .collect(),
            None => events,
        };
        let vectors = self.event_vectors(&events);
        let _writer = b.writer.lock().unwrap_or_else(|e| e.into_inner());
        b.store.append(&events)?;
        for e in events.iter().filter(|e| e.kind == EventType::Search) {
            self.suggester
                .record(e.query.as_deref().unwrap_or(""), &e.user_id);
        }
        b.apply(&self.generation(), &events, &vectors);
        if let Err(e) = self.experiments.observe(&events) {
            tracing::error!(error = %e, "could not log experiment outcomes");
        }
        Ok((events.len(), total - events.len()))
    }

    /// What is held about a user.
    pub fn user_profile(&self, user: &str) -> Result<serde_json::Value> {
        let b = self.behavior.as_ref().ok_or(Error::NoEventStore)?;
        let pseudonym = self.pseudonyms.of(user);
        let users = b.users.read().unwrap_or_else(|e| e.into_inner());
        let mut summary = users
            .get(&pseudonym)
            .map(UserProfile::summary)
            .ok_or_else(|| Error::UserNotFound(user.chars().take(128).collect()))?;
        // Shown with the id asked for and the pseudonym it is stored (and listed) under.
        summary["user_id"] = serde_json::json!(user);
        summary["pseudonym"] = serde_json::json!(pseudonym);
        if let Some(recent) = summary["recent_events"].as_array_mut() {
            for e in recent {
                e["user_id"] = serde_json::json!(user);
            }
        }
        Ok(summary)
    }

    /// Everything stored about a user (their events and the profile built from them), for
    /// a data-access request; `UserNotFound` when nothing is stored.
    pub fn export_user(&self, user: &str) -> Result<serde_json::Value> {
        let b = self.behavior.as_ref().ok_or(Error::NoEventStore)?;
        let mut events = b.store.user_events(&self.pseudonyms.of(user))?;
        for e in &mut events {
            e.user_id = user.to_string();
        }
        if events.is_empty() {
            return Err(Error::UserNotFound(user.chars().take(128).collect()));
        }
        let profile = self.user_profile(user).unwrap_or(serde_json::Value::Null);
        Ok(serde_json::json!({"user_id": user, "events": events, "profile": profile}))
    }

    /// Erases everything about a user, durably. Returns the number of events removed.
    pub fn delete_user(&self, user: &str) -> Result<usize> {
        let b = self.behavior.as_ref().ok_or(Error::NoEventStore)?;
        let _writer = b.writer.lock().unwrap_or_else(|e| e.into_inner());
        let pseudonym = self.pseudonyms.of(user);
        let removed = b.store.delete_user(&pseudonym)?;
        b.users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pseudonym);
        Ok(removed)
    }

    /// Query vectors of search events (computed before taking any lock: encoding is slow).
    pub(super) fn event_vectors(&self, events: &[Event]) -> Vec<Option<Vec<f32>>> {
        events
            .iter()
            .map(|e| match (&self.encoder, e.kind, &e.query) {
                (Some(enc), EventType::Search, Some(q)) => enc.encode_query(q).ok(),
                _ => None,
            })
            .collect()
    }
}
