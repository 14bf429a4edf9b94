//! Ranking profiles: named TOML files in `DATA_DIR/profiles/` -> validated [`Profile`]s.
//!
//! A profile names feature weights, BM25 field boosts and parameters (k1, b), candidate
//! counts and how ties are broken. Two profiles
//! are built in: `default` (used when no `default.toml` exists) and `bm25` (BM25 only,
//! always there for comparison; its name is reserved).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::FEATURES;
use crate::behavior::Personalization;
use crate::error::{Error, Result};
use crate::retrieve::{Bm25Settings, TextScoring};
use crate::schema::{is_boostable, TEXT_FIELDS};
use crate::util::versioned::Versioned;

/// How many candidates each retrieval side contributes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateCounts {
    /// BM25 top-k.
    pub bm25: usize,
    /// Nearest product vectors.
    pub vector: usize,
}

impl Default for CandidateCounts {
    fn default() -> Self {
        CandidateCounts {
            bm25: 200,
            vector: 100,
        }
    }
}

/// A ranking profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the profile is for.
    #[serde(default)]
    pub description: String,
    /// How results with equal scores are ordered.
    #[serde(default, skip_serializing_if = "TieBreak::is_row")]
    pub tie_break: TieBreak,
    /// Feature name -> weight; features not named weigh 0.
    pub weights: BTreeMap<String, f32>,
    /// Text field -> BM25 boost; fields not named get 1.0.
    #[serde(default)]
    pub boosts: BTreeMap<String, f32>,
    /// BM25 k1 and b, for all text fields and per field (tantivy's 1.2 and 0.75 when
    /// absent).
    #[serde(default, skip_serializing_if = "Bm25Settings::is_default")]
    pub bm25: Bm25Settings,
    /// Candidate counts.
    #[serde(default)]
    pub candidates: CandidateCounts,
    /// How user profiles are built (half-lives, event type weights).
    #[serde(default)]
    pub personalization: Personalization,
    /// Result diversity.
    #[serde(default)]
    pub diversity: Diversity,
    /// What counts as a match (shown in `hits` and counted in `total`).
    #[serde(default)]
    pub matching: Matching,
    /// A latency budget under load (off by default).
    #[serde(default)]
    pub budget: Budget,
    /// The embedding model this profile searches with (query vectors, product vectors,
    /// the `semantic` feature, category centroids): a folder `DATA_DIR/models/ID` with an
    /// `encoder.toml` (as `shoprank train` writes them) or a model of the manifest. `None`
    /// (or the serving model's id): the serving model. See docs/training.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// How results with equal scores are ordered (then by row, so the order is total).
/// Equal scores are common under BM25 alone: the same title sold by several shops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    /// Catalog order (the row in the generation).
    #[default]
    Row,
    /// More units sold first.
    Popularity,
    /// Higher rating first (unrated last).
    Rating,
    /// Most recently changed first (`updated_at`).
    Newest,
    /// Cheaper first (no price last).
    PriceAsc,
}

impl TieBreak {
    fn is_row(&self) -> bool {
        *self == TieBreak::Row
    }
}

/// A latency budget: when more searches are in flight than there are cores, a search
/// whose predicted time (measured stage times x searches per core) is over `latency_ms`
/// skips the semantic stage (no query encode, no vector candidates), and if that is not
/// enough takes fewer BM25 candidates (down to `min_candidates`); the answer's `budget`
/// says what was dropped. 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Target search time in milliseconds (0: no budget).
    pub latency_ms: f32,
    /// Fewest BM25 candidates a search under load keeps.
    pub min_candidates: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            latency_ms: 0.0,
            min_candidates: 50,
        }
    }
}

/// What counts as a match: a product whose text holds at least `min_share` of the query's
/// terms (its CJK bigrams and Latin/digit words, in the fields with a `.bigram`
/// sub-field), or a vector candidate at least `min_similarity` close to the query; and,
/// once something matches that way, any candidate scoring at least `min_relative` of the
/// best such match (what ranks beside a match is shown with it). Other candidates are not
/// matches: they are shown only as `related` when nothing matches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Matching {
    /// Share of the query's terms a product's text must hold, 0..=1 (0: every candidate
    /// matches).
    pub min_share: f32,
    /// Cosine similarity at which a candidate matches whatever its text, -1..=1 (model
    /// dependent: m3e-small puts unrelated titles near 0.75, see docs/ranking-profiles.md).
    pub min_similarity: f32,
    /// Share of the best match's score at which a candidate matches too, 0..=1 (1: only
    /// the two rules above).
    pub min_relative: f32,
}

impl Default for Matching {
    fn default() -> Self {
        Matching {
            min_share: 0.25,
            min_similarity: 0.76,
            min_relative: 0.8,
        }
    }
}

/// Result diversity: at most `max_per_brand` products of one brand in a row of results
/// before other brands get their turn (0: off). Products held back keep their order and
/// follow, so nothing is dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diversity {
    /// Products of one brand among the first results before another brand's turn.
    #[serde(default)]
    pub max_per_brand: usize,
}

impl Profile {
    /// The built-in default: BM25 and semantic similarity fused, a little popularity.
    ///
    /// Weights were chosen on the shared Multi-CPR dev queries (see BENCHMARKS.md).
    pub fn default_profile() -> Profile {
        Profile {
            description: "hybrid BM25 + semantic similarity, with a little popularity".into(),
            weights: [
                ("bm25", 0.1),
                ("semantic", 1.0),
                ("popularity", 0.01),
                ("rating", 0.0),
                ("brand_match", 0.1),
                ("category_match", 0.05),
                ("attribute_match", 0.05),
                ("price_match", 0.05),
                ("brand_mismatch", -0.1),
                ("category_mismatch", -0.03),
                ("personal", 0.1),
                ("brand_affinity", 0.15),
                ("category_affinity", 0.05),
                ("price_fit", 0.05),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            boosts: [
                ("title", 1.0),
                ("brand", 1.0),
                ("category", 0.5),
                ("attributes", 0.3),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            bm25: Bm25Settings::default(),
            tie_break: TieBreak::Row,
            candidates: CandidateCounts::default(),
            personalization: Personalization::default(),
            diversity: Diversity::default(),
            matching: Matching::default(),
            budget: Budget::default(),
            model: None,
        }
    }

    /// The built-in `bm25` profile: BM25 alone over BM25 candidates.
    pub fn bm25_profile() -> Profile {
        Profile {
            description: "BM25 only (built in, for comparison)".into(),
            weights: [("bm25".to_string(), 1.0)].into_iter().collect(),
            boosts: Profile::default_profile().boosts,
            bm25: Bm25Settings::default(),
            tie_break: TieBreak::Row,
            candidates: CandidateCounts {
                bm25: 200,
                vector: 0,
            },
            personalization: Personalization::default(),
            diversity: Diversity::default(),
            // BM25 scores fall off faster than hybrid ones: a lower relative bar kept
            // dev R@100 at 0.952 (0.8 cut it to 0.920).
            matching: Matching {
                min_relative: 0.2,
                ..Matching::default()
            },
            budget: Budget::default(),
            model: None,
        }
    }

    /// The boosts and BM25 parameters retrieval scores text with.
    pub fn text_scoring(&self) -> TextScoring<'_> {
        TextScoring {
            boosts: &self.boosts,
            bm25: &self.bm25,
        }
    }

    /// The weight of a feature.
    pub fn weight(&self, feature: &str) -> f32 {
        self.weights.get(feature).copied().unwrap_or(0.0)
    }

    /// The profile with single weights replaced (`w.semantic=0.6` on a request), and its
    /// BM25 parameters when `bm25` is given.
    pub fn with_overrides(
        profile: &Profile,
        overrides: &BTreeMap<String, f32>,
        bm25: Option<&Bm25Settings>,
    ) -> Result<Profile> {
        let mut p = profile.clone();
        for (k, v) in overrides {
            p.weights.insert(k.clone(), *v);
        }
        if let Some(b) = bm25 {
            p.bm25 = b.clone();
        }
        p.validate().map_err(|reason| {
            let name = if bm25.is_some() { "w.*/bm25" } else { "w.*" };
            Error::param(name, reason)
        })?;
        Ok(p)
    }

    /// Checks names and values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, w) in &self.weights {
            if !FEATURES.contains(&name.as_str()) {
                return Err(format!(
                    "unknown feature `{name}` (features: {})",
                    FEATURES.join(", ")
                ));
            }
            if !w.is_finite() || w.abs() > 1000.0 {
                return Err(format!(
                    "weight of `{name}` must be a finite number within ±1000, got {w}"
                ));
            }
        }
        for (field, b) in &self.boosts {
            if !is_boostable(field) {
                return Err(format!(
                    "unknown field `{field}` in boosts (fields: {}, each also as `NAME.bigram`)",
                    TEXT_FIELDS.join(", ")
                ));
            }
            if !b.is_finite() || *b < 0.0 || *b > 100.0 {
                return Err(format!(
                    "boost of `{field}` must be within 0..=100, got {b}"
                ));
            }
        }
        self.bm25.validate()?;
        self.personalization.validate()?;
        let m = self.matching;
        if !(0.0..=1.0).contains(&m.min_share)
            || !(-1.0..=1.0).contains(&m.min_similarity)
            || !(0.0..=1.0).contains(&m.min_relative)
        {
            return Err(format!(
                "matching: min_share and min_relative must be within 0..=1 and \
                 min_similarity within -1..=1, got {}, {} and {}",
                m.min_share, m.min_relative, m.min_similarity
            ));
        }
        let b = self.budget;
        if !b.latency_ms.is_finite() || b.latency_ms < 0.0 || b.min_candidates == 0 {
            return Err(format!(
                "budget: latency_ms must be a number >= 0 and min_candidates at least 1, got {} and {}",
                b.latency_ms, b.min_candidates
            ));
        }
        if let Some(model) = &self.model {
            check_model_name(model).map_err(|reason| format!("model: {reason}"))?;
        }
        if self.candidates.bm25 + self.candidates.vector == 0
            || self.candidates.bm25 > 10_000
            || self.candidates.vector > 10_000
        {
            return Err(
                "candidates: bm25 and vector must be within 0..=10000 and not both 0".into(),
            );
        }
        Ok(())
    }

    /// Parses and validates profile text.
    pub fn parse(text: &str, path: &Path) -> Result<Profile> {
        let bad = |reason: String| Error::InvalidProfile {
            path: path.to_path_buf(),
            reason,
        };
        let profile: Profile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        profile.validate().map_err(bad)?;
        Ok(profile)
    }

    /// TOML text of the profile.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// All profiles by name.
#[derive(Debug, Clone)]
pub struct Profiles {
    map: BTreeMap<String, Arc<Profile>>,
}

impl Profiles {
    /// The built-in profiles plus every `*.toml` in `dir` (if it exists).
    pub fn load(dir: &Path) -> Result<Profiles> {
        let mut map = BTreeMap::new();
        map.insert("default".to_string(), Arc::new(Profile::default_profile()));
        for (name, path, text) in files(dir).load_all()? {
            if name == "bm25" {
                return Err(Error::InvalidProfile {
                    path,
                    reason: "`bm25` is a built-in profile name; rename the file".into(),
                });
            }
            map.insert(name, Arc::new(Profile::parse(&text, &path)?));
        }
        map.insert("bm25".to_string(), Arc::new(Profile::bm25_profile()));
        Ok(Profiles { map })
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Profile>> {
        self.map
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownProfile {
                name: name.chars().take(64).collect(),
                known: self.names().join(", "),
            })
    }

    /// Profile names.
    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Every profile with its name, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Profile>)> {
        self.map.iter().map(|(name, p)| (name.as_str(), p))
    }

    /// Writes `default.toml` into `dir` when it does not exist yet, for engineers to edit.
    pub fn write_default(dir: &Path) -> Result<()> {
        let path = dir.join("default.toml");
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let text = format!(
            "# Ranking profile `default`: score = sum of weight x feature.\n# Features: {}\n{}",
            FEATURES.join(", "),
            Profile::default_profile().to_toml()
        );
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }
}

pub use crate::util::versioned::Version;

/// Longest model name a profile may give.
pub const MAX_MODEL_NAME: usize = 128;

/// Checks a model name as a profile gives it: 1-128 of `[A-Za-z0-9._+-]`, not starting
/// with `.`. It names a folder of `DATA_DIR/models` (or a manifest entry), so it can hold
/// no path: no separator, no `..`, not absolute, no hidden folder (`.gate-*` scratch).
pub fn check_model_name(name: &str) -> std::result::Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
    if name.is_empty()
        || name.len() > MAX_MODEL_NAME
        || name.starts_with('.')
        || !name.chars().all(allowed)
    {
        return Err(format!(
            "`{}` is not a model name: 1 to {MAX_MODEL_NAME} letters, digits, `.`, `_`, `+` or `-`, \
             not starting with `.` (a folder name under DATA_DIR/models or a manifest model, never a path)",
            name.chars().take(MAX_MODEL_NAME).collect::<String>()
        ));
    }
    Ok(())
}

/// The profile files of `dir`.
fn files(dir: &Path) -> Versioned<'_> {
    Versioned::new(dir, "profile")
}

/// Checks a profile name (a file stem): 1-64 of `[A-Za-z0-9_-]`, not `bm25`.
pub fn check_name(name: &str) -> Result<()> {
    files(Path::new("")).check_name(name)?;
    if name == "bm25" {
        return Err(Error::param(
            "name",
            "`bm25` is built in and cannot be changed",
        ));
    }
    Ok(())
}

/// Validates `text` and saves it as profile `name` in `dir`, keeping a timestamped copy
/// in `dir/.history/name/`. Nothing is written when the text is invalid.
pub fn save(dir: &Path, name: &str, text: &str) -> Result<(Profile, Version)> {
    check_name(name)?;
    let files = files(dir);
    let profile = Profile::parse(text, &files.path(name))?;
    Ok((profile, files.save(name, text)?))
}

/// Removes profile `name` (its history stays, so it can be restored).
pub fn remove(dir: &Path, name: &str) -> Result<Version> {
    check_name(name)?;
    files(dir)
        .remove(name)?
        .ok_or_else(|| Error::UnknownProfile {
            name: name.into(),
            known: String::new(),
        })
}

/// The saved versions of profile `name`, oldest first.
pub fn versions(dir: &Path, name: &str) -> Result<Vec<Version>> {
    files(dir).versions(name)
}

/// The text of one saved version.
pub fn version_text(dir: &Path, name: &str, version: u64) -> Result<String> {
    files(dir).version_text(name, version)
}

/// The newest saved version of `name`, if it was saved through [`save`].
pub fn current_version(dir: &Path, name: &str) -> Option<u64> {
    files(dir).current_version(name)
}

/// A stamp of the profile files, to notice hand edits.
pub fn stamp(dir: &Path) -> u128 {
    files(dir).stamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_versions_restores_and_refuses_bad_text() {
        let dir = tempfile::tempdir().unwrap();
        let (_, v1) = save(dir.path(), "a", "[weights]\nbm25 = 1.0\n").unwrap();
        let (_, v2) = save(dir.path(), "a", "[weights]\nbm25 = 2.0\n").unwrap();
        assert!(v2.version > v1.version);
        assert!(save(dir.path(), "a", "[weights]\nbm26 = 1.0\n").is_err());
        assert!(save(dir.path(), "../x", "[weights]\nbm25 = 1.0\n").is_err());
        assert!(save(dir.path(), "bm25", "[weights]\nbm25 = 1.0\n").is_err());
        let text = std::fs::read_to_string(dir.path().join("a.toml")).unwrap();
        assert!(
            text.contains("2.0"),
            "a rejected save leaves the file alone"
        );
        assert_eq!(
            version_text(dir.path(), "a", v1.version).unwrap(),
            "[weights]\nbm25 = 1.0\n"
        );
        remove(dir.path(), "a").unwrap();
        assert!(!dir.path().join("a.toml").exists());
        let vs = versions(dir.path(), "a").unwrap();
        assert_eq!(
            vs.iter().map(|v| v.action).collect::<Vec<_>>(),
            ["put", "put", "delete"]
        );
        assert_eq!(current_version(dir.path(), "a"), None);
        assert!(Profiles::load(dir.path()).unwrap().get("a").is_err());
    }

    #[test]
    fn built_ins_are_valid_and_round_trip() {
        for p in [Profile::default_profile(), Profile::bm25_profile()] {
            p.validate().unwrap();
            assert_eq!(
                Profile::parse(&p.to_toml(), Path::new("x.toml")).unwrap(),
                p
            );
        }
    }

    #[test]
    fn rejects_unknown_features_fields_and_keys() {
        let path = Path::new("p.toml");
        let err = Profile::parse("[weights]\nsemantik = 1.0\n", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("semantik"), "{err}");
        let err = Profile::parse("[weights]\nbm25 = 1.0\n[boosts]\ncolour = 2.0\n", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        let err = Profile::parse("wieghts = 1\n", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wieghts"), "{err}");
    }

    #[test]
    fn reads_bm25_parameters_and_tie_break_and_names_what_is_wrong() {
        let path = Path::new("p.toml");
        let text = "tie_break = \"popularity\"\n[weights]\nbm25 = 1.0\n[bm25]\nk1 = 1.0\n\
                    [bm25.fields.title]\nk1 = 0.9\nb = 0.4\n[bm25.fields.\"title.bigram\"]\nb = 0.3\n";
        let p = Profile::parse(text, path).unwrap();
        assert_eq!(p.tie_break, TieBreak::Popularity);
        let at = |f: &str| p.bm25.params(f);
        assert_eq!((at("title").k1, at("title").b), (0.9, 0.4));
        assert_eq!((at("title.bigram").k1, at("title.bigram").b), (1.0, 0.3));
        assert_eq!((at("brand").k1, at("brand").b), (1.0, 0.75));
        assert_eq!(Profile::parse(&p.to_toml(), path).unwrap(), p);
        // Absent: tantivy's parameters, row order, and nothing new in the written text.
        let d = Profile::parse("[weights]\nbm25 = 1.0\n", path).unwrap();
        assert!(d.bm25.is_default() && d.tie_break == TieBreak::Row);
        let toml = Profile::default_profile().to_toml();
        assert!(
            !toml.contains("bm25]") && !toml.contains("tie_break"),
            "{toml}"
        );
        for (bad, needle) in [
            ("[bm25.fields.colour]\nk1 = 1.0\n", "colour"),
            ("[bm25]\nk1 = -0.5\n", "k1 must be a finite number >= 0"),
            ("[bm25]\nb = 1.2\n", "b must be within 0..=1"),
            ("[bm25.fields.\"brand.bigram\"]\nb = 2.0\n", "brand.bigram"),
            ("[bm25]\nk3 = 1.0\n", "k3"),
            ("tie_break = \"cheapest\"\n", "price_asc"),
        ] {
            // Top-level keys go before the first table.
            let err = Profile::parse(&format!("{bad}[weights]\nbm25 = 1.0\n"), path).unwrap_err();
            assert_eq!(err.code(), "invalid_profile");
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn loads_files_and_reserves_bm25() {
        let dir = tempfile::tempdir().unwrap();
        Profiles::write_default(dir.path()).unwrap();
        std::fs::write(dir.path().join("pop.toml"), "[weights]\npopularity = 1.0\n").unwrap();
        let profiles = Profiles::load(dir.path()).unwrap();
        assert_eq!(profiles.names(), vec!["bm25", "default", "pop"]);
        assert_eq!(
            *profiles.get("default").unwrap(),
            Profile::default_profile()
        );
        assert_eq!(profiles.get("nope").unwrap_err().code(), "unknown_profile");
        std::fs::write(dir.path().join("bm25.toml"), "[weights]\nbm25 = 2.0\n").unwrap();
        assert!(Profiles::load(dir.path()).is_err());
    }
}
