//! Merchandising rules: named TOML files in `DATA_DIR/rules/` (versioned like profiles)
//! that change a search when their condition holds: pin products to positions, boost or
//! bury by brand, shop, category or attribute, hide products, add filters.
//!
//! A rule's condition is all of: the query equals / contains one of a list, the search is
//! in a category (the request's category filter or the category the query names), the
//! time is within `starts..ends` (so a promotion expires by itself), the shopper is new or
//! returning, and the ranking profile is one of a list (so an A/B experiment's arm can
//! have a rule the other has not). Empty parts always hold.
//!
//! Rules act after ranking: boosts add their weight to a matching product's score and the
//! list is re-sorted (a boost reorders matches, it does not make a product match), hidden
//! products are dropped, pinned products are placed at their positions (from the whole
//! catalog, as long as they pass the filters), and every effect is in `explain`. Filters
//! are added before retrieval and only narrow the request's own.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::analysis::normalize;
use crate::catalog::Product;
use crate::error::{Error, Result};
use crate::index::Generation;
use crate::retrieve::Filters;
use crate::util::versioned::{Version, Versioned};

use super::{Explain, Scored};

/// A point in time: RFC 3339 text (`2026-11-11T00:00:00+08:00`, a TOML date-time) or Unix
/// seconds; kept as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Time {
    /// Unix seconds.
    pub secs: i64,
    text: Option<String>,
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.text {
            Some(t) => s.serialize_str(t),
            None => s.serialize_i64(self.secs),
        }
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Time;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "an RFC 3339 time with an offset (2026-11-11T00:00:00+08:00) or Unix seconds",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Time, E> {
                let t: jiff::Timestamp = v.parse().map_err(|e| {
                    E::custom(format!(
                        "`{v}` is not an RFC 3339 time with an offset (2026-11-11T00:00:00+08:00): {e}"
                    ))
                })?;
                Ok(Time {
                    secs: t.as_second(),
                    text: Some(v.to_string()),
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Time, E> {
                Ok(Time {
                    secs: v,
                    text: None,
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Time, E> {
                let secs = i64::try_from(v).map_err(|_| E::custom("time out of range"))?;
                self.visit_i64(secs)
            }
            // A TOML date-time arrives as a one-entry map holding its text.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Time, A::Error> {
                let Some((_, text)) = map.next_entry::<String, String>()? else {
                    return Err(serde::de::Error::custom("empty time"));
                };
                self.visit_str(&text)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Shoppers by history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Segment {
    /// No stored behavior (or no user given).
    New,
    /// At least one stored event.
    Returning,
}

/// When a rule acts: every given part must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Condition {
    /// The query is one of these (compared normalized: case, width, traditional script).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_equals: Vec<String>,
    /// The query contains one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_contains: Vec<String>,
    /// The search is in this category path or below: the request's category filter, or
    /// the category the query names (confidence >= 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// From this time on (inclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts: Option<Time>,
    /// Until this time (exclusive): past it the rule stops by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends: Option<Time>,
    /// New or returning shoppers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
    /// Only searches ranked by one of these profiles (an experiment arm's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}

/// A product placed at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Product id.
    pub id: String,
    /// 1-based position in the results (across pages).
    pub position: usize,
}

/// Products whose field has a value get `weight` added to their score (negative: bury).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boost {
    /// `brand`, `shop`, `category` (the path or below) or `attributes.NAME`.
    pub field: String,
    /// The value (compared normalized).
    pub value: String,
    /// Added to the score; a `default` profile's top hit scores about 1.
    pub weight: f32,
}

/// Filters a rule adds; they narrow the request's, never widen them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleFilters {
    /// Only this brand (unless the request names one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Only this category path and below (unless the request names one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// No price below this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_min: Option<f64>,
    /// No price above this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_max: Option<f64>,
    /// Only products in stock.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_stock: bool,
}

/// What a rule does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Consequence {
    /// Products placed at positions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pin: Vec<Pin>,
    /// Score changes by field value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub boost: Vec<Boost>,
    /// Product ids never shown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hide: Vec<String>,
    /// Filters added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<RuleFilters>,
}

/// A merchandising rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What it is for (`双11 兰蔻`).
    #[serde(default)]
    pub description: String,
    /// Off: kept, never applied.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// When it acts.
    #[serde(default)]
    pub when: Condition,
    /// What it does.
    #[serde(default)]
    pub then: Consequence,
}

fn yes() -> bool {
    true
}

/// Most positions a pin may name.
pub const MAX_PIN_POSITION: usize = 1000;

impl Rule {
    /// Parses and validates rule text (TOML).
    pub fn parse(name: &str, text: &str) -> Result<Rule> {
        let rule: Rule = toml::from_str(text).map_err(|e| invalid(name, e.to_string()))?;
        rule.validate().map_err(|reason| invalid(name, reason))?;
        Ok(rule)
    }

    /// The rule as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks values that could never work.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.then;
        if t.pin.is_empty() && t.boost.is_empty() && t.hide.is_empty() && t.filter.is_none() {
            return Err("a rule needs a consequence: `pin`, `boost`, `hide` or `filter`".into());
        }
        if let (Some(s), Some(e)) = (&self.when.starts, &self.when.ends) {
            if s.secs >= e.secs {
                return Err("`starts` must be before `ends`".into());
            }
        }
        let w = &self.when;
        if (w.query_equals.iter().chain(&w.query_contains)).any(|q| normalize(q).is_empty()) {
            return Err("an empty query in `query_equals` or `query_contains`".into());
        }
        for p in &t.pin {
            if p.id.is_empty() || !(1..=MAX_PIN_POSITION).contains(&p.position) {
                return Err(format!(
                    "pin `{}`: a pin needs a product id and a position within 1..={MAX_PIN_POSITION}",
                    p.id
                ));
            }
        }
        for b in &t.boost {
            let field_ok = matches!(b.field.as_str(), "brand" | "shop" | "category")
                || b.field
                    .strip_prefix("attributes.")
                    .is_some_and(|a| !a.is_empty());
            if !field_ok {
                return Err(format!(
                    "boost field `{}`: use `brand`, `shop`, `category` or `attributes.NAME`",
                    b.field
                ));
            }
            if normalize(&b.value).is_empty() {
                return Err(format!("boost of `{}`: the value is empty", b.field));
            }
            if !b.weight.is_finite() || b.weight == 0.0 || b.weight.abs() > 100.0 {
                return Err(format!(
                    "boost of `{}` = `{}`: the weight must be a number within -100..=100, not 0",
                    b.field, b.value
                ));
            }
        }
        if t.hide.iter().any(|h| h.is_empty()) {
            return Err("an empty product id in `hide`".into());
        }
        if let Some(f) = &t.filter {
            let as_filters = Filters {
                brand: f.brand.clone(),
                category: f.category.clone(),
                price_min: f.price_min,
                price_max: f.price_max,
                in_stock: f.in_stock,
            };
            as_filters.validate().map_err(|e| format!("filter: {e}"))?;
        }
        Ok(())
    }

    /// Whether the condition holds for a search.
    pub fn applies(&self, s: &Situation) -> bool {
        let w = &self.when;
        let query = normalize(s.query);
        self.enabled
            && (w.query_equals.is_empty() || w.query_equals.iter().any(|q| normalize(q) == query))
            && (w.query_contains.is_empty()
                || (w.query_contains.iter()).any(|q| query.contains(&normalize(q))))
            && w.category
                .as_ref()
                .is_none_or(|c| (s.categories.iter()).any(|have| under(have, c)))
            && w.starts.as_ref().is_none_or(|t| s.now >= t.secs)
            && w.ends.as_ref().is_none_or(|t| s.now < t.secs)
            && w.segment.is_none_or(|seg| seg == s.segment)
            && (w.profiles.is_empty() || w.profiles.iter().any(|p| p == s.profile))
    }
}

fn invalid(name: &str, reason: String) -> Error {
    Error::InvalidRule {
        name: name.into(),
        reason,
    }
}

/// Whether category path `have` is `want` or below it (whole segments, normalized).
fn under(have: &str, want: &str) -> bool {
    let seg = |p: &str| -> Vec<String> {
        p.split('/')
            .map(normalize)
            .filter(|s| !s.is_empty())
            .collect()
    };
    let (have, want) = (seg(have), seg(want));
    !want.is_empty() && have.starts_with(&want)
}

/// What a rule's condition reads about one search.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    /// What the shopper typed.
    pub query: &'a str,
    /// The request's category filter and the categories the query names.
    pub categories: Vec<String>,
    /// Unix seconds.
    pub now: i64,
    /// New or returning shopper.
    pub segment: Segment,
    /// The ranking profile.
    pub profile: &'a str,
}

/// Every rule by name, with the version it was saved as.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    map: BTreeMap<String, (Arc<Rule>, Option<u64>)>,
}

/// The rule files of `dir`.
pub fn files(dir: &Path) -> Versioned<'_> {
    Versioned::new(dir, "rule")
}

impl Rules {
    /// Every `*.toml` in `dir` (none when it does not exist).
    pub fn load(dir: &Path) -> Result<Rules> {
        let files = files(dir);
        let mut map = BTreeMap::new();
        for (name, _, text) in files.load_all()? {
            let rule = Rule::parse(&name, &text)?;
            map.insert(name.clone(), (Arc::new(rule), files.current_version(&name)));
        }
        Ok(Rules { map })
    }

    /// Rule `name` and its version.
    pub fn get(&self, name: &str) -> Result<(Arc<Rule>, Option<u64>)> {
        self.map
            .get(name)
            .cloned()
            .ok_or_else(|| Error::RuleNotFound(name.chars().take(64).collect()))
    }

    /// Every rule, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Rule>, Option<u64>)> {
        self.map.iter().map(|(n, (r, v))| (n, r, *v))
    }

    /// The rules acting on a search, by name.
    pub fn active(&self, s: &Situation) -> Active {
        Active(
            self.map
                .iter()
                .filter(|(_, (r, _))| r.applies(s))
                .map(|(n, (r, v))| (n.clone(), r.clone(), *v))
                .collect(),
        )
    }
}

/// Saves rule `name` from TOML text (validated first: nothing is written when invalid).
pub fn save(dir: &Path, name: &str, text: &str) -> Result<(Rule, Version)> {
    let files = files(dir);
    files.check_name(name)?;
    let rule = Rule::parse(name, text)?;
    Ok((rule, files.save(name, text)?))
}

/// One effect of a rule on a product, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleEffect {
    /// The rule.
    pub rule: String,
    /// `pin` or `boost`.
    pub effect: &'static str,
    /// `brand = 兰蔻`, `position 1`.
    pub detail: String,
    /// The boost's weight, or the pinned position.
    pub value: f32,
}

/// A rule that acted on a search, as the response lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applied {
    /// The rule.
    pub name: String,
    /// The version it was saved as.
    pub version: Option<u64>,
    /// Product ids it placed (that passed the filters).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<String>,
    /// Products it took out of these results.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<String>,
    /// Products whose score it changed.
    pub boosted: usize,
    /// Filters it added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<RuleFilters>,
}

/// The rules acting on one search.
#[derive(Debug, Clone, Default)]
pub struct Active(Vec<(String, Arc<Rule>, Option<u64>)>);

impl Active {
    /// Whether no rule acts.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the rules' filters to `f`: a brand or category only where the request names
    /// none, price bounds intersected, in-stock or-ed.
    pub fn narrow(&self, f: &mut Filters) {
        for (_, rule, _) in &self.0 {
            let Some(r) = &rule.then.filter else { continue };
            if f.brand.is_none() {
                f.brand = r.brand.clone();
            }
            if f.category.is_none() {
                f.category = r.category.clone();
            }
            f.price_min = match (f.price_min, r.price_min) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            f.price_max = match (f.price_max, r.price_max) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            f.in_stock |= r.in_stock;
        }
    }

    /// Drops hidden products and adds boosts to scores (re-sorting, best first, equal
    /// scores by `tie`); returns per rule the ids hidden and the number boosted.
    pub fn hide_and_boost(
        &self,
        gen: &Generation,
        ranked: &mut Vec<Scored>,
        tie: super::TieBreak,
    ) -> Vec<Applied> {
        let mut out = Vec::with_capacity(self.0.len());
        for (name, rule, version) in &self.0 {
            let mut applied = Applied {
                name: name.clone(),
                version: *version,
                pinned: Vec::new(),
                hidden: Vec::new(),
                boosted: 0,
                filter: rule.then.filter.clone(),
            };
            let hide = &rule.then.hide;
            ranked.retain(|s| {
                let id = &gen.products[s.ord as usize].id;
                let keep = !hide.contains(id);
                if !keep {
                    applied.hidden.push(id.clone());
                }
                keep
            });
            for s in ranked.iter_mut() {
                let p = &gen.products[s.ord as usize];
                let mut hit = false;
                for b in rule
                    .then
                    .boost
                    .iter()
                    .filter(|b| has(p, &b.field, &b.value))
                {
                    s.score += b.weight;
                    s.explain.rules.push(RuleEffect {
                        rule: name.clone(),
                        effect: "boost",
                        detail: format!("{} = {}", b.field, b.value),
                        value: b.weight,
                    });
                    hit = true;
                }
                applied.boosted += usize::from(hit);
            }
            out.push(applied);
        }
        if out.iter().any(|a| a.boosted > 0) {
            super::sort_best_first(gen, tie, ranked);
        }
        out
    }

    /// Places pinned products (live, not hidden by any acting rule, passing `filters`)
    /// at their positions in `matched`, taking them out of `others`; a pin of an earlier
    /// rule (by name) wins a contested position. Records the ids placed in `applied`.
    pub fn pin(
        &self,
        gen: &Generation,
        filters: &Filters,
        matched: &mut Vec<Scored>,
        others: &mut Vec<Scored>,
        applied: &mut [Applied],
    ) {
        let hidden: Vec<&String> = self.0.iter().flat_map(|(_, r, _)| &r.then.hide).collect();
        let mut placed: Vec<(usize, Scored)> = Vec::new();
        for ((name, rule, _), applied) in self.0.iter().zip(applied.iter_mut()) {
            for pin in &rule.then.pin {
                if hidden.contains(&&pin.id) || placed.iter().any(|(_, s)| id(gen, s) == pin.id) {
                    continue;
                }
                let Some(&ord) = gen.by_id.get(&pin.id) else {
                    continue;
                };
                if !gen.is_live(ord as usize) || !filters.matches(&gen.products[ord as usize]) {
                    continue;
                }
                let taken = (matched.iter().position(|s| s.ord == ord))
                    .map(|i| matched.remove(i))
                    .or_else(|| {
                        let i = others.iter().position(|s| s.ord == ord)?;
                        Some(others.remove(i))
                    });
                let mut s = taken.unwrap_or_else(|| Scored {
                    ord,
                    score: 0.0,
                    explain: Explain {
                        matched_by: vec!["pin"],
                        ..Explain::default()
                    },
                });
                s.explain.rules.push(RuleEffect {
                    rule: name.clone(),
                    effect: "pin",
                    detail: format!("position {}", pin.position),
                    value: pin.position as f32,
                });
                applied.pinned.push(pin.id.clone());
                placed.push((pin.position, s));
            }
        }
        // Lowest positions first, so each lands where it was asked for; a contested
        // position goes to the earlier rule, the later pin right after it.
        placed.sort_by_key(|(pos, _)| *pos);
        let mut free = 0;
        for (pos, s) in placed {
            let at = (pos - 1).max(free).min(matched.len());
            matched.insert(at, s);
            free = at + 1;
        }
    }
}

fn id<'g>(gen: &'g Generation, s: &Scored) -> &'g str {
    &gen.products[s.ord as usize].id
}

/// Whether product `p`'s `field` has `value` (normalized; a brand in any of its
/// `/`-separated spellings; a category by path prefix).
fn has(p: &Product, field: &str, value: &str) -> bool {
    let want = normalize(value);
    match field {
        "brand" => {
            (p.brand.split('/')).any(|b| normalize(b) == want) || normalize(&p.brand) == want
        }
        "shop" => normalize(&p.shop) == want,
        "category" => under(&p.category, value),
        f => f
            .strip_prefix("attributes.")
            .and_then(|a| p.attributes.get(a))
            .is_some_and(|v| normalize(v) == want),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation(query: &str) -> Situation<'_> {
        Situation {
            query,
            categories: vec!["美妆/面部护理/面霜".into()],
            now: 1_800_000_000,
            segment: Segment::New,
            profile: "default",
        }
    }

    #[test]
    fn conditions_all_must_hold() {
        let rule = Rule::parse(
            "r",
            r#"
            [when]
            query_contains = ["面霜"]
            category = "美妆"
            starts = "2027-01-15T00:00:00+08:00"
            ends = 1800000100
            segment = "new"
            [[then.boost]]
            field = "brand"
            value = "兰蔻"
            weight = 0.5
            "#,
        )
        .unwrap();
        assert!(rule.applies(&situation("兰蔻 面霜")));
        assert!(rule.applies(&situation("面霜")));
        assert!(!rule.applies(&situation("口红")), "query");
        let mut s = situation("面霜");
        s.now = 1_800_000_100;
        assert!(!rule.applies(&s), "ended: `ends` is exclusive");
        s.now = 1_784_000_000;
        assert!(!rule.applies(&s), "not started");
        let mut s = situation("面霜");
        s.segment = Segment::Returning;
        assert!(!rule.applies(&s), "segment");
        let mut s = situation("面霜");
        s.categories = vec!["美妆品".into()];
        assert!(!rule.applies(&s), "category by whole segments");
        let round = Rule::parse("r", &rule.to_toml()).unwrap();
        assert_eq!(round, rule, "TOML round trip keeps the times as written");
    }

    #[test]
    fn toml_dates_query_equals_and_profiles() {
        let rule = Rule::parse(
            "r",
            "[when]\nquery_equals = [\"Lancome 面霜\"]\nends = 2030-01-01T00:00:00Z\nprofiles = [\"campaign\"]\n[then]\nhide = [\"P1\"]\n",
        )
        .unwrap();
        assert_eq!(rule.when.ends.as_ref().unwrap().secs, 1_893_456_000);
        let mut s = situation("ＬＡＮＣＯＭＥ 面霜");
        assert!(!rule.applies(&s), "only under profile `campaign`");
        s.profile = "campaign";
        assert!(rule.applies(&s), "normalized equality");
        s.query = "lancome 面霜 50ml";
        assert!(!rule.applies(&s));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for (text, says) in [
            ("[when]\nquery_equals = [\"a\"]\n", "consequence"),
            (
                "[then]\nhide = [\"a\"]\n[when]\nstarts = \"2026-11-11\"\n",
                "RFC 3339",
            ),
            (
                "[then]\nhide = [\"a\"]\n[when]\nstarts = 20\nends = 10\n",
                "before",
            ),
            ("[[then.pin]]\nid = \"a\"\nposition = 0\n", "position"),
            (
                "[[then.boost]]\nfield = \"colour\"\nvalue = \"红\"\nweight = 1\n",
                "colour",
            ),
            (
                "[[then.boost]]\nfield = \"brand\"\nvalue = \"a\"\nweight = 0\n",
                "weight",
            ),
            ("[then]\nhide = [\"a\"]\nbury = [\"b\"]\n", "bury"),
            ("[then.filter]\nprice_min = -1\n", "price_min"),
            ("[then]\nhide = [\"a\"]\n[when]\nsegment = \"vip\"\n", "vip"),
        ] {
            let err = Rule::parse("r", text).unwrap_err();
            assert_eq!(err.code(), "invalid_rule");
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn rule_filters_only_narrow() {
        let rule = Rule::parse(
            "r",
            "[then.filter]\nbrand = \"兰蔻\"\ncategory = \"美妆\"\nprice_min = 100\nprice_max = 500\nin_stock = true\n",
        )
        .unwrap();
        let active = Active(vec![("r".into(), Arc::new(rule), None)]);
        let mut f = Filters {
            brand: Some("雅诗兰黛".into()),
            price_max: Some(300.0),
            price_min: Some(50.0),
            ..Filters::default()
        };
        active.narrow(&mut f);
        assert_eq!(
            f.brand.as_deref(),
            Some("雅诗兰黛"),
            "the request's brand stays"
        );
        assert_eq!(f.category.as_deref(), Some("美妆"));
        assert_eq!((f.price_min, f.price_max), (Some(100.0), Some(300.0)));
        assert!(f.in_stock);
    }
}
