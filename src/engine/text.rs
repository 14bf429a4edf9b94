//! Reloadable query-time text: the synonym file, the user dictionary (query side) and
//! the brand aliases, swapped without a restart; the suggestion index's sources.

use super::*;

impl Engine {
    /// Where the dictionary, synonyms and aliases come from, for [`Engine::reload_text`];
    /// loads the synonyms now.
    pub fn set_text_sources(&mut self, sources: TextSources) -> Result<()> {
        let synonyms = match &sources.synonyms {
            Some(p) if p.is_file() => Synonyms::load(p)?,
            _ => Synonyms::default(),
        };
        self.text
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .synonyms = Arc::new(synonyms);
        self.sources = Some(sources);
        Ok(())
    }

    /// Re-reads the synonyms, the user dictionary (query side) and the brand aliases without
    /// a restart. All or nothing: on any error the old ones stay live.
    pub fn reload_text(&self) -> Result<serde_json::Value> {
        let sources = self
            .sources
            .as_ref()
            .ok_or_else(|| Error::Config("no text sources configured for this engine".into()))?;
        let gen = self.generation();
        let synonyms = match &sources.synonyms {
            Some(p) if p.is_file() => Synonyms::load(p)?,
            _ => Synonyms::default(),
        };
        let brands: Vec<&str> = gen
            .products
            .iter()
            .map(|p| p.brand.as_str())
            .filter(|b| !b.is_empty())
            .collect();
        let user_dict = sources.user_dict.as_deref().filter(|p| p.is_file());
        let analysis = Analysis::load(user_dict, brands.iter().copied())?;
        let aliases = sources.brand_aliases.as_deref().filter(|p| p.is_file());
        // No centroids: understanding takes them from the generation searched.
        let intents = IntentModel::new(&gen.products, None, aliases)?;
        let count = synonyms.len();
        *self.text.write().unwrap_or_else(|e| e.into_inner()) = TextResources {
            synonyms: Arc::new(synonyms),
            analysis: Some(Arc::new(analysis)),
            intents: Some(Arc::new(intents)),
        };
        tracing::info!(
            synonyms = count,
            "reloaded synonyms, user dictionary and brand aliases"
        );
        Ok(
            serde_json::json!({"synonym_phrases": count, "user_dict": user_dict, "brand_aliases": aliases}),
        )
    }
}

/// Where `shoprank suggest --load` keeps the query log.
pub fn suggest_log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("suggest").join("queries.txt")
}

/// Times a query must appear in the loaded log to be suggested.
pub const SUGGEST_MIN_COUNT: usize = 2;

/// Where a shop's own suggestion blocklist goes (beside the shipped one).
pub fn suggest_blocklist_path(data_dir: &Path) -> PathBuf {
    data_dir.join("suggest").join("blocklist.txt")
}

/// The suggestion index: the loaded query log (queries seen at least
/// [`SUGGEST_MIN_COUNT`] times), plus the catalog's brands and category names (each
/// weighted by its product count); nothing holding a blocked word (the shipped list and
/// `DATA_DIR/suggest/blocklist.txt`).
pub(super) fn load_suggester(data_dir: &Path, gen: &Generation) -> Result<Suggester> {
    let log = suggest_log_path(data_dir);
    let mut counts: HashMap<String, usize> = HashMap::new();
    if log.is_file() {
        for (q, _) in Suggester::read_log(&log)? {
            *counts.entry(crate::analysis::normalize(&q)).or_default() += 1;
        }
    }
    let mut texts: Vec<(String, f64)> = counts
        .into_iter()
        .filter(|(_, n)| *n >= SUGGEST_MIN_COUNT)
        .map(|(q, n)| (q, n as f64))
        .collect();
    for p in &gen.products {
        if !p.brand.is_empty() {
            texts.extend(p.brand.split('/').map(|b| (b.to_string(), 1.0)));
        }
        if let Some(leaf) = p.category.rsplit('/').next().filter(|l| !l.is_empty()) {
            texts.push((leaf.to_string(), 1.0));
        }
    }
    let mut blocked = crate::suggest::blocklist_words(crate::suggest::BLOCKLIST);
    let own = suggest_blocklist_path(data_dir);
    if own.is_file() {
        let text = std::fs::read_to_string(&own).map_err(|e| Error::io(&own, e))?;
        blocked.extend(crate::suggest::blocklist_words(&text));
    }
    Ok(Suggester::new(texts, blocked))
}

/// Files behind the query-time text resources.
#[derive(Debug, Clone, Default)]
pub struct TextSources {
    /// jieba user dictionary.
    pub user_dict: Option<PathBuf>,
    /// Synonym file.
    pub synonyms: Option<PathBuf>,
    /// Brand alias file.
    pub brand_aliases: Option<PathBuf>,
}

/// Query-time resources; `None` parts fall back to the generation's own.
#[derive(Default)]
pub(super) struct TextResources {
    pub(super) synonyms: Arc<Synonyms>,
    pub(super) analysis: Option<Arc<Analysis>>,
    pub(super) intents: Option<Arc<IntentModel>>,
}
