//! Ranking profiles: named TOML files in `DATA_DIR/profiles/` -> validated [`Profile`]s.
//!
//! A profile names feature weights, BM25 field boosts and candidate counts. Two profiles
//! are built in: `default` (used when no `default.toml` exists) and `bm25` (BM25 only,
//! always there for comparison; its name is reserved).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::FEATURES;
use crate::behavior::Personalization;
use crate::error::{Error, Result};
use crate::schema::TEXT_FIELDS;

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
    /// Feature name -> weight; features not named weigh 0.
    pub weights: BTreeMap<String, f32>,
    /// Text field -> BM25 boost; fields not named get 1.0.
    #[serde(default)]
    pub boosts: BTreeMap<String, f32>,
    /// Candidate counts.
    #[serde(default)]
    pub candidates: CandidateCounts,
    /// How user profiles are built (half-lives, event type weights).
    #[serde(default)]
    pub personalization: Personalization,
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
            candidates: CandidateCounts::default(),
            personalization: Personalization::default(),
        }
    }

    /// The built-in `bm25` profile: BM25 alone over BM25 candidates.
    pub fn bm25_profile() -> Profile {
        Profile {
            description: "BM25 only (built in, for comparison)".into(),
            weights: [("bm25".to_string(), 1.0)].into_iter().collect(),
            boosts: Profile::default_profile().boosts,
            candidates: CandidateCounts {
                bm25: 200,
                vector: 0,
            },
            personalization: Personalization::default(),
        }
    }

    /// The weight of a feature.
    pub fn weight(&self, feature: &str) -> f32 {
        self.weights.get(feature).copied().unwrap_or(0.0)
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
            if !TEXT_FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "unknown field `{field}` in boosts (fields: {})",
                    TEXT_FIELDS.join(", ")
                ));
            }
            if !b.is_finite() || *b < 0.0 || *b > 100.0 {
                return Err(format!(
                    "boost of `{field}` must be within 0..=100, got {b}"
                ));
            }
        }
        self.personalization.validate()?;
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
        if dir.is_dir() {
            let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            for entry in entries {
                let path = entry.map_err(|e| Error::io(dir, e))?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                    continue;
                }
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string();
                if name == "bm25" {
                    return Err(Error::InvalidProfile {
                        path,
                        reason: "`bm25` is a built-in profile name; rename the file".into(),
                    });
                }
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                map.insert(name, Arc::new(Profile::parse(&text, &path)?));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
