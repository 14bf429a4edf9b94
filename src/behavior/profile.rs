//! User profiles: a user's events -> what ranking knows about them, updated incrementally.
//!
//! Two horizons (session, long-term), each a time-decayed, type-weighted sum: an event of
//! type `t` at time `ts` weighs `type_weight(t) × 2^(-(now - ts) / half_life)`. Each horizon
//! holds the weighted sum of the embeddings of the products touched (and of searched
//! queries), and weighted counts of brands, category paths and log-prices. Adding an event
//! rescales the sums to the event's time and adds it: O(size of the profile), no replay.
//! At query time the two mean vectors are blended by how fresh the session is.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Event, EventType};
use crate::catalog::Product;

/// Personalization settings, part of a ranking profile (`[personalization]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Personalization {
    /// Session horizon half-life, seconds.
    pub session_half_life_secs: f64,
    /// Long-term horizon half-life, seconds.
    pub long_half_life_secs: f64,
    /// Share of the session vector in the user vector when the session is fresh (0..=1).
    pub session_share: f32,
    /// Weight per event type (`view`, `click`, `favorite`, `cart`, `purchase`, `search`).
    pub type_weights: BTreeMap<String, f32>,
    /// Personal features are multiplied by `(relevance / best relevance) ^ relevance_power`
    /// (0 turns the gate off).
    pub relevance_power: f32,
}

impl Default for Personalization {
    fn default() -> Self {
        Personalization {
            session_half_life_secs: 1800.0,
            long_half_life_secs: 30.0 * 86_400.0,
            session_share: 0.5,
            relevance_power: 8.0,
            type_weights: [
                ("view", 1.0),
                ("click", 2.0),
                ("favorite", 3.0),
                ("cart", 4.0),
                ("purchase", 5.0),
                ("search", 1.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        }
    }
}

impl Personalization {
    /// Checks names and values.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("session_half_life_secs", self.session_half_life_secs),
            ("long_half_life_secs", self.long_half_life_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("personalization.{name} must be > 0, got {v}"));
            }
        }
        if !(0.0..=100.0).contains(&self.relevance_power) {
            return Err(format!(
                "personalization.relevance_power must be within 0..=100, got {}",
                self.relevance_power
            ));
        }
        if !(0.0..=1.0).contains(&self.session_share) {
            return Err(format!(
                "personalization.session_share must be within 0..=1, got {}",
                self.session_share
            ));
        }
        for (k, v) in &self.type_weights {
            if !EventType::ALL.iter().any(|t| t.name() == k) {
                return Err(format!(
                    "personalization.type_weights: unknown event type `{k}`"
                ));
            }
            if !(v.is_finite() && *v >= 0.0) {
                return Err(format!(
                    "personalization.type_weights.{k} must be >= 0, got {v}"
                ));
            }
        }
        Ok(())
    }

    fn weight(&self, kind: EventType) -> f64 {
        self.type_weights.get(kind.name()).copied().unwrap_or(0.0) as f64
    }
}

/// One horizon's decayed sums, valid at `t_ref`.
#[derive(Debug, Clone, Default, Serialize)]
struct Horizon {
    #[serde(skip)]
    half_life: f64,
    t_ref: i64,
    weight: f64,
    #[serde(skip)]
    vector: Vec<f32>,
    vector_weight: f64,
    brands: HashMap<String, f64>,
    categories: HashMap<String, f64>,
    price_weight: f64,
    log_price: f64,
    log_price_sq: f64,
}

impl Horizon {
    fn new(half_life: f64) -> Self {
        Horizon {
            half_life,
            ..Default::default()
        }
    }

    fn decay(&self, from: i64, to: i64) -> f64 {
        (-((to - from) as f64) / self.half_life).exp2()
    }

    /// The event's weight at `t_ref`, after moving `t_ref` forward if the event is newer.
    fn advance(&mut self, ts: i64, w: f64) -> f64 {
        if ts <= self.t_ref {
            return w * self.decay(ts, self.t_ref);
        }
        let f = if self.weight == 0.0 {
            1.0
        } else {
            self.decay(self.t_ref, ts)
        };
        self.weight *= f;
        self.vector_weight *= f;
        self.vector.iter_mut().for_each(|x| *x *= f as f32);
        self.brands.values_mut().for_each(|x| *x *= f);
        self.categories.values_mut().for_each(|x| *x *= f);
        self.price_weight *= f;
        self.log_price *= f;
        self.log_price_sq *= f;
        self.t_ref = ts;
        w
    }

    fn add(&mut self, ts: i64, w: f64, vector: Option<&[f32]>, product: Option<&Product>) {
        let w = self.advance(ts, w);
        self.weight += w;
        if let Some(v) = vector {
            if self.vector.is_empty() {
                self.vector = vec![0.0; v.len()];
            }
            if self.vector.len() == v.len() {
                self.vector
                    .iter_mut()
                    .zip(v)
                    .for_each(|(s, x)| *s += w as f32 * x);
                self.vector_weight += w;
            }
        }
        let Some(p) = product else { return };
        if !p.brand.is_empty() {
            *self.brands.entry(p.brand.clone()).or_default() += w;
        }
        let mut path = String::new();
        for seg in p.category.split('/').filter(|s| !s.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(seg);
            *self.categories.entry(path.clone()).or_default() += w;
        }
        if let Some(price) = p.price.filter(|&x| x > 0.0) {
            let lp = price.ln();
            self.price_weight += w;
            self.log_price += w * lp;
            self.log_price_sq += w * lp * lp;
        }
    }

    fn unit_vector(&self) -> Option<Vec<f32>> {
        let norm = self.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        (norm > 0.0).then(|| self.vector.iter().map(|x| x / norm).collect())
    }
}

/// Everything held about one user.
#[derive(Debug, Clone, Serialize)]
pub struct UserProfile {
    /// The user.
    pub user_id: String,
    /// Events applied.
    pub events: usize,
    /// The most recent events, newest last.
    pub recent: VecDeque<Event>,
    session: Horizon,
    long: Horizon,
}

/// Number of recent events kept for display.
const RECENT: usize = 50;

/// What ranking uses from a profile at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonalContext {
    /// Unit user vector (empty when no embedding is known).
    pub vector: Vec<f32>,
    /// Brand -> share of the long-term weight (0..=1).
    pub brands: HashMap<String, f32>,
    /// Category path (each ancestor too) -> share (0..=1).
    pub categories: HashMap<String, f32>,
    /// Mean and spread of the log-price of touched products.
    pub price: Option<(f64, f64)>,
}

impl UserProfile {
    /// An empty profile.
    pub fn new(user_id: &str, config: &Personalization) -> Self {
        UserProfile {
            user_id: user_id.to_string(),
            events: 0,
            recent: VecDeque::new(),
            session: Horizon::new(config.session_half_life_secs),
            long: Horizon::new(config.long_half_life_secs),
        }
    }

    /// Applies one event. `vector` is the product's (or the query's) embedding, `product`
    /// the catalog product, when known.
    pub fn apply(
        &mut self,
        event: &Event,
        config: &Personalization,
        vector: Option<&[f32]>,
        product: Option<&Product>,
    ) {
        let w = config.weight(event.kind);
        if w > 0.0 {
            self.session.add(event.ts, w, vector, product);
            self.long.add(event.ts, w, vector, product);
        }
        self.events += 1;
        self.recent.push_back(event.clone());
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    /// The profile as ranking sees it at time `now`; `None` when nothing is known yet.
    pub fn context(&self, now: i64, config: &Personalization) -> Option<PersonalContext> {
        if self.long.weight <= 0.0 {
            return None;
        }
        let long_vec = self.long.unit_vector();
        let session_vec = self.session.unit_vector();
        // A fresh session (weight >= 1 at `now`) takes its full share; it fades with its half-life.
        let freshness = (self.session.weight
            * self
                .session
                .decay(self.session.t_ref, now.max(self.session.t_ref)))
        .min(1.0);
        let alpha = config.session_share * freshness as f32;
        let vector = match (long_vec, session_vec) {
            (Some(l), Some(s)) => {
                let mixed: Vec<f32> = l
                    .iter()
                    .zip(&s)
                    .map(|(a, b)| (1.0 - alpha) * a + alpha * b)
                    .collect();
                let norm = mixed.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                mixed.into_iter().map(|x| x / norm).collect()
            }
            (Some(l), None) => l,
            _ => Vec::new(),
        };
        let share = |m: &HashMap<String, f64>| -> HashMap<String, f32> {
            m.iter()
                .map(|(k, v)| (k.clone(), (v / self.long.weight) as f32))
                .collect()
        };
        let price = (self.long.price_weight > 0.0).then(|| {
            let mean = self.long.log_price / self.long.price_weight;
            let var = (self.long.log_price_sq / self.long.price_weight - mean * mean).max(0.0);
            (mean, var.sqrt().max(0.25))
        });
        Some(PersonalContext {
            vector,
            brands: share(&self.long.brands),
            categories: share(&self.long.categories),
            price,
        })
    }

    /// A readable summary: top brands and categories with shares, price band.
    pub fn summary(&self) -> serde_json::Value {
        let top = |m: &HashMap<String, f64>| {
            let mut v: Vec<(&String, f64)> = m
                .iter()
                .map(|(k, w)| (k, w / self.long.weight.max(1e-12)))
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            v.into_iter()
                .take(10)
                .map(|(k, s)| serde_json::json!({"value": k, "share": s}))
                .collect::<Vec<_>>()
        };
        let price = (self.long.price_weight > 0.0).then(|| {
            let mean = self.long.log_price / self.long.price_weight;
            let sd = (self.long.log_price_sq / self.long.price_weight - mean * mean).max(0.0).sqrt();
            serde_json::json!({"typical": mean.exp(), "low": (mean - sd).exp(), "high": (mean + sd).exp()})
        });
        serde_json::json!({
            "user_id": self.user_id,
            "events": self.events,
            "recent_events": self.recent,
            "brand_affinity": top(&self.long.brands),
            "category_affinity": top(&self.long.categories),
            "price_band": price,
            "has_vector": !self.long.vector.is_empty(),
            "last_event_ts": self.long.t_ref,
        })
    }
}

impl PersonalContext {
    /// Brand affinity of a product (0..=1).
    pub fn brand_affinity(&self, p: &Product) -> f32 {
        self.brands.get(&p.brand).copied().unwrap_or(0.0)
    }

    /// Mean share of the product's category and its ancestors (0..=1).
    pub fn category_affinity(&self, p: &Product) -> f32 {
        let mut path = String::new();
        let (mut sum, mut n) = (0.0, 0);
        for seg in p.category.split('/').filter(|s| !s.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(seg);
            sum += self.categories.get(&path).copied().unwrap_or(0.0);
            n += 1;
        }
        if n == 0 {
            0.0
        } else {
            sum / n as f32
        }
    }

    /// How well the price fits the user's usual band: a Gaussian on log-price (0..=1).
    pub fn price_fit(&self, p: &Product) -> f32 {
        match (self.price, p.price.filter(|&x| x > 0.0)) {
            (Some((mean, sd)), Some(price)) => {
                let z = (price.ln() - mean) / sd;
                (-0.5 * z * z).exp() as f32
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: &str, brand: &str, category: &str, price: f64) -> Product {
        let mut p: Product =
            serde_json::from_value(serde_json::json!({"id": id, "title": id})).unwrap();
        p.brand = brand.into();
        p.category = category.into();
        p.price = Some(price);
        p
    }

    fn click(ts: i64, id: &str) -> Event {
        Event {
            user_id: "u".into(),
            kind: EventType::Click,
            product_id: Some(id.into()),
            query: None,
            ts,
        }
    }

    #[test]
    fn learns_brand_category_price_and_direction() {
        let config = Personalization::default();
        let mut u = UserProfile::new("u", &config);
        assert!(u.context(1000, &config).is_none());
        let a = product("a", "兰蔻", "美妆/面霜", 500.0);
        let b = product("b", "自然堂", "美妆/口红", 100.0);
        u.apply(&click(1000, "a"), &config, Some(&[1.0, 0.0]), Some(&a));
        u.apply(&click(1010, "a"), &config, Some(&[1.0, 0.0]), Some(&a));
        u.apply(&click(1020, "b"), &config, Some(&[0.0, 1.0]), Some(&b));
        let c = u.context(1030, &config).unwrap();
        assert!(c.brand_affinity(&a) > c.brand_affinity(&b));
        assert!(c.category_affinity(&a) > c.category_affinity(&b));
        assert!(c.category_affinity(&product("x", "", "美妆", 1.0)) > 0.99);
        assert!(
            c.price_fit(&product("x", "", "", 400.0)) > c.price_fit(&product("x", "", "", 20.0))
        );
        assert!(c.vector[0] > c.vector[1]);
    }

    #[test]
    fn old_events_fade_against_new_ones() {
        let config = Personalization::default();
        let mut u = UserProfile::new("u", &config);
        let a = product("a", "A", "", 10.0);
        let b = product("b", "B", "", 10.0);
        u.apply(&click(1_000_000, "a"), &config, None, Some(&a));
        // 60 days later (two long half-lives) one click on B outweighs the old click on A.
        u.apply(
            &click(1_000_000 + 60 * 86_400, "b"),
            &config,
            None,
            Some(&b),
        );
        let c = u.context(1_000_000 + 60 * 86_400, &config).unwrap();
        assert!(
            (c.brand_affinity(&b) - 0.8).abs() < 0.01,
            "{}",
            c.brand_affinity(&b)
        );
        // An event arriving late (out of order) is decayed to the profile's time, not replayed.
        u.apply(&click(1_000_000, "a"), &config, None, Some(&a));
        let c2 = u.context(1_000_000 + 60 * 86_400, &config).unwrap();
        assert!(c2.brand_affinity(&a) > c.brand_affinity(&a));
    }
}
