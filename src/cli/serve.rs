//! `shoprank serve`: the HTTP API over the data directory, with the event store and the
//! writes owned by this process.

use std::sync::Arc;

use anyhow::Context;

use shoprank::cluster::{Cluster, RedisEvents};
use shoprank::settings::Settings;

use super::{attach_events, open_engine};

/// Serves until interrupted.
pub fn serve(settings: Settings) -> anyhow::Result<()> {
    settings.validate()?;
    // The document encoder (and candle's matmuls on other devices) read their thread
    // count from RAYON_NUM_THREADS; set it before any thread starts (an explicit
    // environment value wins).
    if settings.encoder_threads > 0 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", settings.encoder_threads.to_string());
    }
    // Replicas: the shared files and the published generation come first, so the engine
    // opens on them.
    let cluster = match &settings.redis_url {
        Some(url) => {
            let c = Cluster::connect(url.expose())
                .with_context(|| "connecting to Redis (setting `redis_url`)")?;
            let shared = shared_dir(&settings);
            shoprank::engine::prepare_replica(&c, &settings.data_dir, &shared)?;
            tracing::info!(redis = %c.url(), replica = %c.replica(), shared = %shared.display(), "serving as a replica");
            Some(Arc::new(c))
        }
        None => None,
    };
    let mut engine = open_engine(&settings)?;
    let events_from = match &cluster {
        Some(c) => {
            let store = RedisEvents::new(c.clone());
            let scanned = store.scanned_handle();
            engine.attach_events(Box::new(store), settings.retention_days)?;
            let from = scanned.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Some(from)
        }
        None => {
            attach_events(&mut engine, &settings)?;
            None
        }
    };
    engine.enable_writes(&settings)?;
    if let (Some(c), Some(from)) = (cluster, events_from) {
        engine.join_cluster(c, &shared_dir(&settings), from)?;
    }
    let engine = Arc::new(engine);
    engine.start_background();
    engine.start_replica();
    actix_web::rt::System::new()
        .block_on(shoprank::server::serve(engine, &settings))
        .with_context(|| format!("serving on {}", settings.addr))
}

/// Where replicas share generations: the setting, else `shared` beside the data directory.
fn shared_dir(settings: &Settings) -> std::path::PathBuf {
    settings.shared_dir.clone().unwrap_or_else(|| {
        let parent = settings
            .data_dir
            .parent()
            .unwrap_or(std::path::Path::new("."));
        parent.join("shared")
    })
}
