//! Merchandising rules on an [`Engine`]: versioned edits (validated, live at once), hand
//! edits picked up like profiles, and the list the console shows. How a rule acts on a
//! search is in [`crate::rank::rules`]; the search calls it.

use super::*;

impl Engine {
    /// The live rules.
    pub(super) fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn rules_dir(&self) -> PathBuf {
        self.data_dir.join("rules")
    }

    fn load_rules(&self) -> Result<()> {
        let dir = self.rules_dir();
        let fresh = Rules::load(&dir)?;
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        *self.rules_stamp.lock().unwrap_or_else(|e| e.into_inner()) = rules::files(&dir).stamp();
        Ok(())
    }

    /// Re-reads the rules when a file in the rule folder changed (hand edits); a broken
    /// file is logged once and the old rules stay live.
    pub fn reload_rules_if_changed(&self) -> bool {
        let _edit = self.profile_edit.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = rules::files(&self.rules_dir()).stamp();
        let mut seen = self.rules_stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == stamp {
            return false;
        }
        *seen = stamp;
        drop(seen);
        match self.load_rules() {
            Ok(()) => {
                tracing::info!("rule files changed: reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "a rule file is invalid; the old rules stay live");
                false
            }
        }
    }

    /// Saves rule `name` from TOML text (validated first; on error nothing changes), keeps
    /// a version, and makes it live for the next search.
    pub fn put_rule(&self, name: &str, text: &str) -> Result<profile::Version> {
        let _edit = self.profile_edit.lock().unwrap_or_else(|e| e.into_inner());
        let rule = rules::Rule::parse(name, text)?;
        let profiles = self.profiles();
        if let Some(p) = rule.when.profiles.iter().find(|p| profiles.get(p).is_err()) {
            return Err(Error::InvalidRule {
                name: name.into(),
                reason: format!(
                    "unknown profile `{p}` in `profiles`; known: {}",
                    profiles.names().join(", ")
                ),
            });
        }
        let dir = self.rules_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (_, version) = rules::save(&dir, name, text)?;
        self.load_rules()?;
        self.share_file(&format!("rules/{name}.toml"))?;
        Ok(version)
    }

    /// Deletes rule `name` (its history stays).
    pub fn delete_rule(&self, name: &str) -> Result<profile::Version> {
        let _edit = self.profile_edit.lock().unwrap_or_else(|e| e.into_inner());
        let version = rules::files(&self.rules_dir())
            .remove(name)?
            .ok_or_else(|| Error::RuleNotFound(name.chars().take(64).collect()))?;
        self.load_rules()?;
        self.share_file(&format!("rules/{name}.toml"))?;
        Ok(version)
    }

    /// Makes a saved version of rule `name` live again (as a new version).
    pub fn restore_rule(&self, name: &str, version: u64) -> Result<profile::Version> {
        let text = rules::files(&self.rules_dir()).version_text(name, version)?;
        self.put_rule(name, &text)
    }

    /// A rule with its TOML text, whether it is in its time window now, and its versions.
    pub fn rule_info(&self, name: &str) -> Result<serde_json::Value> {
        let (rule, version) = self.rules().get(name)?;
        Ok(serde_json::json!({
            "name": name,
            "version": version,
            "scheduled": schedule(&rule),
            "rule": &*rule,
            "toml": rule.to_toml(),
            "versions": rules::files(&self.rules_dir()).versions(name)?,
        }))
    }

    /// Every rule: name, description, version, whether it is on and in its window now.
    pub fn rule_list(&self) -> serde_json::Value {
        let rules = self.rules();
        let list: Vec<serde_json::Value> = rules
            .iter()
            .map(|(name, rule, version)| {
                serde_json::json!({
                    "name": name,
                    "description": rule.description,
                    "enabled": rule.enabled,
                    "scheduled": schedule(rule),
                    "version": version,
                })
            })
            .collect();
        serde_json::json!({"rules": list})
    }
}

/// `pending`, `live` or `expired` by the rule's time window now.
fn schedule(rule: &rules::Rule) -> &'static str {
    let now = crate::util::now();
    match (&rule.when.starts, &rule.when.ends) {
        (Some(s), _) if now < s.secs => "pending",
        (_, Some(e)) if now >= e.secs => "expired",
        _ => "live",
    }
}
