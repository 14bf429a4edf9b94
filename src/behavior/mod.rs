//! Behavior: shopper events -> validated [`Event`]s -> durable store -> user profiles.
//!
//! Events arrive over HTTP (one object, a JSON array or NDJSON) or from a file (JSONL, or
//! the Tianchi UserBehavior CSV). A batch is validated whole before anything is stored:
//! one bad event rejects the batch with an error naming its index, so a batch is never
//! half-stored. Stored events are durable before they are acknowledged (see `store`), and
//! each one updates its user's in-memory profile at once (see `profile`).

pub mod profile;
pub mod pseudonym;
pub mod store;
mod tracker;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use profile::{Personalization, UserProfile};
pub use pseudonym::Pseudonyms;
pub use store::{EventStore, RedbStore};
pub use tracker::Tracker;

use crate::error::{Error, Result};

/// Largest batch accepted in one request or transaction.
pub const MAX_BATCH: usize = 10_000;
/// Earliest plausible timestamp (2000-01-01).
const MIN_TS: i64 = 946_684_800;

/// What the shopper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// Saw a product page.
    View,
    /// Clicked a result.
    Click,
    /// Added to cart.
    Cart,
    /// Saved as favorite.
    Favorite,
    /// Bought.
    Purchase,
    /// Searched (carries `query`).
    Search,
}

impl EventType {
    /// All types, in profile-weight order.
    pub const ALL: [EventType; 6] = [
        EventType::View,
        EventType::Click,
        EventType::Cart,
        EventType::Favorite,
        EventType::Purchase,
        EventType::Search,
    ];

    /// The name used in JSON and profiles.
    pub fn name(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Click => "click",
            EventType::Cart => "cart",
            EventType::Favorite => "favorite",
            EventType::Purchase => "purchase",
            EventType::Search => "search",
        }
    }

    fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The shopper.
    pub user_id: String,
    /// What they did.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The product, for every type but `search`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// The query, for `search`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Unix seconds.
    pub ts: i64,
}

impl Event {
    /// Validates one event given as JSON; `ts` defaults to `now`.
    pub fn from_json(value: Value, now: i64) -> std::result::Result<Event, String> {
        let Value::Object(mut map) = value else {
            return Err("expected a JSON object".into());
        };
        let mut take_str = |key: &str| -> std::result::Result<Option<String>, String> {
            match map.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(Value::Number(n)) if key != "type" => Ok(Some(n.to_string())),
                Some(other) => Err(format!("`{key}` must be a string, got {other}")),
            }
        };
        let user_id = take_str("user_id")?
            .filter(|s| !s.is_empty())
            .ok_or("`user_id` is missing")?;
        let kind_name = take_str("type")?.ok_or("`type` is missing")?;
        let product_id = take_str("product_id")?.filter(|s| !s.is_empty());
        let query = take_str("query")?.filter(|s| !s.is_empty());
        let ts = match map.remove("ts") {
            None | Some(Value::Null) => now,
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| format!("`ts` must be whole Unix seconds, got {n}"))?,
            Some(other) => return Err(format!("`ts` must be Unix seconds, got {other}")),
        };
        if let Some(key) = map.keys().next() {
            return Err(format!(
                "unknown field `{key}` (fields: user_id, type, product_id, query, ts)"
            ));
        }
        let kind = EventType::parse(&kind_name).ok_or_else(|| {
            format!(
                "unknown type `{kind_name}` (types: view, click, cart, favorite, purchase, search)"
            )
        })?;
        let event = Event {
            user_id,
            kind,
            product_id,
            query,
            ts,
        };
        event.validate(now)?;
        Ok(event)
    }

    /// Checks an event's fields (also for events built in code or read from files).
    pub fn validate(&self, now: i64) -> std::result::Result<(), String> {
        if self.user_id.is_empty()
            || self.user_id.len() > 128
            || self.user_id.chars().any(char::is_control)
        {
            return Err("`user_id` must be 1..=128 bytes without control characters".into());
        }
        match self.kind {
            EventType::Search => {
                let q = self.query.as_deref().unwrap_or("");
                if q.is_empty() {
                    return Err("a `search` event needs a non-empty `query`".into());
                }
                if q.chars().count() > crate::analysis::MAX_QUERY_CHARS {
                    return Err(format!(
                        "`query` is longer than {} characters",
                        crate::analysis::MAX_QUERY_CHARS
                    ));
                }
            }
            _ => match &self.product_id {
                None => {
                    return Err(format!(
                        "a `{}` event needs a `product_id`",
                        self.kind.name()
                    ))
                }
                Some(p) if p.len() > 256 => {
                    return Err("`product_id` is longer than 256 bytes".into())
                }
                Some(_) => {}
            },
        }
        if self.ts > 100_000_000_000 {
            return Err(format!(
                "`ts` {} looks like milliseconds; send Unix seconds",
                self.ts
            ));
        }
        if self.ts < MIN_TS || self.ts > now + 86_400 {
            return Err(format!(
                "`ts` {} is not a plausible time (2000-01-01 .. now + 1 day)",
                self.ts
            ));
        }
        Ok(())
    }
}

/// Parses a request body: one object, a JSON array, or NDJSON. All-or-nothing: the first
/// bad event fails the batch with its 0-based index.
pub fn parse_batch(body: &[u8], now: i64) -> Result<Vec<Event>> {
    let values = crate::catalog::json_values(body, "events", MAX_BATCH)
        .map_err(|(index, reason)| Error::InvalidEvent { index, reason })?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            Event::from_json(v, now).map_err(|reason| Error::InvalidEvent {
                index: Some(i),
                reason,
            })
        })
        .collect()
}

/// Reads an events file: JSONL events, or the Tianchi UserBehavior CSV
/// (`user_id,item_id,category_id,type,unix_ts` with types pv/cart/fav/buy).
pub fn read_file(path: &std::path::Path, now: i64) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::InvalidEvent {
        index: None,
        reason: format!("{}: not UTF-8 at byte {}", path.display(), e.valid_up_to()),
    })?;
    if path.extension().and_then(|e| e.to_str()) != Some("csv") {
        return parse_lines(text, now, path);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || (i == 0 && cols.first() == Some(&"user_id")) {
            continue;
        }
        let bad = |reason: String| Error::InvalidEvent {
            index: Some(i),
            reason: format!("{}:{}: {reason}", path.display(), i + 1),
        };
        let [user, item, _category, kind, ts] = cols.as_slice() else {
            return Err(bad(format!(
                "expected 5 columns (user_id,item_id,category_id,type,unix_ts), found {}",
                cols.len()
            )));
        };
        let kind = match *kind {
            "pv" => EventType::View,
            "cart" => EventType::Cart,
            "fav" => EventType::Favorite,
            "buy" => EventType::Purchase,
            other => {
                return Err(bad(format!(
                    "unknown behavior type `{other}` (pv, cart, fav, buy)"
                )))
            }
        };
        let ts = ts
            .parse::<i64>()
            .map_err(|_| bad(format!("timestamp `{ts}` is not a number")))?;
        let e = Event {
            user_id: user.to_string(),
            kind,
            product_id: Some(item.to_string()),
            query: None,
            ts,
        };
        e.validate(now).map_err(bad)?;
        out.push(e);
    }
    Ok(out)
}

fn parse_lines(text: &str, now: i64, path: &std::path::Path) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |reason: String| Error::InvalidEvent {
            index: Some(i),
            reason: format!("{}:{}: {reason}", path.display(), i + 1),
        };
        let v: Value =
            serde_json::from_str(line).map_err(|e| bad(format!("malformed JSON: {e}")))?;
        out.push(Event::from_json(v, now).map_err(bad)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn parses_objects_arrays_and_ndjson() {
        let one =
            parse_batch(br#"{"user_id":"u1","type":"click","product_id":"p1"}"#, NOW).unwrap();
        assert_eq!(one[0].ts, NOW);
        let arr = parse_batch(
            r#"[{"user_id":"u1","type":"search","query":"口红","ts":1799999000}]"#.as_bytes(),
            NOW,
        )
        .unwrap();
        assert_eq!(arr[0].query.as_deref(), Some("口红"));
        let nd = parse_batch(b"{\"user_id\":\"u\",\"type\":\"view\",\"product_id\":\"a\"}\n\n{\"user_id\":\"u\",\"type\":\"cart\",\"product_id\":\"b\"}\n", NOW).unwrap();
        assert_eq!(nd.len(), 2);
    }

    #[test]
    fn a_bad_event_rejects_the_batch_naming_its_index() {
        let cases: [(&[u8], Option<usize>, &str); 7] = [
            (br#"[{"user_id":"u","type":"view","product_id":"a"},{"user_id":"u","type":"hover","product_id":"a"}]"#, Some(1), "hover"),
            (br#"[{"user_id":"u","type":"cart"}]"#, Some(0), "product_id"),
            (br#"[{"user_id":"u","type":"search"}]"#, Some(0), "query"),
            (br#"[{"user_id":"u","type":"view","product_id":"a","ts":1800000000000}]"#, Some(0), "milliseconds"),
            (br#"[{"user_id":"u","type":"view","product_id":"a","ts":5}]"#, Some(0), "plausible"),
            (br#"[{"user_id":"u","type":"view","product_id":"a","colour":"red"}]"#, Some(0), "colour"),
            (b"[{\"user_id\":", None, "malformed"),
        ];
        for (body, index, needle) in cases {
            match parse_batch(body, NOW).unwrap_err() {
                Error::InvalidEvent { index: i, reason } => {
                    assert_eq!(i, index, "{reason}");
                    assert!(reason.contains(needle), "{reason}");
                }
                other => panic!("unexpected {other}"),
            }
        }
        let big: Vec<String> = (0..MAX_BATCH + 1)
            .map(|_| r#"{"user_id":"u","type":"view","product_id":"a"}"#.to_string())
            .collect();
        assert!(parse_batch(format!("[{}]", big.join(",")).as_bytes(), NOW)
            .unwrap_err()
            .to_string()
            .contains("at most"));
    }

    #[test]
    fn reads_tianchi_csv() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.csv");
        std::fs::write(&path, "user_id,item_id,category_id,type,unix_ts\n1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n").unwrap();
        let events = read_file(&path, NOW).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, EventType::Purchase);
        std::fs::write(&path, "1,2,3,like,1511544070\n").unwrap();
        assert!(read_file(&path, NOW)
            .unwrap_err()
            .to_string()
            .contains(":1: unknown behavior type"));
    }
}
