//! The `shoprank` command line, one file per command family: `catalog` (index, rollback,
//! events import), `query` (search, analyze, suggest), `serve`, and `offline` (eval,
//! tune, judgments, eval-personal, synth). Each turns its flags into library calls and
//! prints the result; none holds logic of its own beyond formatting.

pub mod catalog;
pub mod offline;
pub mod query;
pub mod serve;

use anyhow::Context;

use shoprank::engine::{load_encoder, Engine, TextSources};
use shoprank::settings::Settings;

/// Opens the live index of the data directory with the encoder (if the model loads)
/// and the reloadable text files of the settings.
pub fn open_engine(settings: &Settings) -> anyhow::Result<Engine> {
    let (encoder, note) = match load_encoder(settings) {
        Ok(e) => (Some(e), None),
        Err(reason) => (None, Some(reason)),
    };
    let models = shoprank::engine::ModelSource::from_settings(settings);
    let mut engine = Engine::open_with_models(&settings.data_dir, encoder, note, models)?;
    if let Some(secret) = &settings.user_id_secret {
        engine.set_user_id_secret(secret.expose());
    }
    engine.set_text_sources(TextSources {
        user_dict: Some(settings.user_dict.clone()),
        synonyms: Some(settings.synonyms.clone()),
        brand_aliases: Some(settings.brand_aliases.clone()),
    })?;
    Ok(engine)
}

/// Opens the data directory's event store (one process at a time) for `engine`.
pub fn attach_events(engine: &mut Engine, settings: &Settings) -> anyhow::Result<()> {
    let path = settings.data_dir.join("events").join("events.redb");
    let store = shoprank::behavior::RedbStore::open(&path)
        .context("opening the event store (is `shoprank serve` running on this data directory?)")?;
    engine.attach_events(Box::new(store), settings.retention_days)?;
    Ok(())
}
