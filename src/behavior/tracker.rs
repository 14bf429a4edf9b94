//! The tracker: the durable event store and the shoppers' profiles built from it, kept
//! current event by event, and what shoppers clicked after each query.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use super::profile::PersonalContext;
use super::{Event, EventStore, EventType, Personalization, UserProfile};
use crate::index::Generation;

/// Behavior tracking: the durable store and the in-memory profiles built from it (the
/// engine wires it to the index and the encoder).
pub struct Tracker {
    pub(crate) store: Box<dyn EventStore>,
    pub(crate) users: RwLock<HashMap<String, UserProfile>>,
    /// Serializes store appends with profile updates, so profiles follow store order.
    pub(crate) writer: Mutex<()>,
    pub(crate) config: Personalization,
    pub(crate) retention_secs: Option<i64>,
    /// Normalized query -> category -> weight of products clicked (or carted, ...) within
    /// 30 minutes after a search for it by the same user.
    pub(crate) query_clicks: RwLock<HashMap<String, HashMap<String, f32>>>,
    /// Normalized query -> brand -> weight of products clicked after it, the same way.
    pub(crate) query_brands: RwLock<HashMap<String, HashMap<String, f32>>>,
    /// User -> their last search (normalized query, time).
    pub(crate) last_search: Mutex<HashMap<String, (String, i64)>>,
}

impl Tracker {
    /// Applies stored events to the profiles; `query_vectors[i]` belongs to `events[i]`.
    pub(crate) fn apply(
        &self,
        gen: &Generation,
        events: &[Event],
        query_vectors: &[Option<Vec<f32>>],
    ) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let mut last_search = self.last_search.lock().unwrap_or_else(|e| e.into_inner());
        let mut clicks = self.query_clicks.write().unwrap_or_else(|e| e.into_inner());
        let mut brands = self.query_brands.write().unwrap_or_else(|e| e.into_inner());
        for (e, qv) in events.iter().zip(query_vectors) {
            let ord = e
                .product_id
                .as_ref()
                .and_then(|id| gen.by_id.get(id))
                .map(|&o| o as usize);
            let product = ord.map(|o| &gen.products[o]);
            // A search's own query vector, else the product's stored one.
            let stored = match qv {
                Some(_) => None,
                None => ord.and_then(|o| Some(gen.vectors.as_ref()?.row(o))),
            };
            let vector = qv.as_deref().or(stored.as_deref());
            users
                .entry(e.user_id.clone())
                .or_insert_with(|| UserProfile::new(&e.user_id, &self.config))
                .apply(e, &self.config, vector, product.map(|p| &**p));
            // What was clicked after a search tells what the query's category is.
            match (e.kind, product) {
                (EventType::Search, _) => {
                    let q = crate::analysis::normalize(e.query.as_deref().unwrap_or(""));
                    last_search.insert(e.user_id.clone(), (q, e.ts));
                }
                (EventType::View, _) | (_, None) => {}
                (kind, Some(p)) => {
                    if let Some((q, ts)) = last_search.get(&e.user_id) {
                        if (0..=1800).contains(&(e.ts - ts)) {
                            let w = self
                                .config
                                .type_weights
                                .get(kind.name())
                                .copied()
                                .unwrap_or(1.0);
                            for (map, key) in [(&mut clicks, &p.category), (&mut brands, &p.brand)]
                            {
                                if !key.is_empty() {
                                    *map.entry(q.clone())
                                        .or_default()
                                        .entry(key.clone())
                                        .or_default() += w;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Categories and brands clicked after searching `query` (normalized), with their
    /// weights, heaviest first.
    pub(crate) fn clicked(&self, query: &str) -> crate::intent::Clicked {
        let of = |map: &RwLock<HashMap<String, HashMap<String, f32>>>| {
            let map = map.read().unwrap_or_else(|e| e.into_inner());
            let mut out: Vec<(String, f32)> = map
                .get(query)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            out
        };
        crate::intent::Clicked {
            categories: of(&self.query_clicks),
            brands: of(&self.query_brands),
        }
    }

    pub(crate) fn context(&self, user: &str) -> Option<PersonalContext> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.get(user)?.context(crate::util::now(), &self.config)
    }
}
