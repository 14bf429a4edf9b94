//! `shoprank serve`: the HTTP API over the data directory, with the event store and the
//! writes owned by this process.

use std::sync::Arc;

use anyhow::Context;

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
    let mut engine = open_engine(&settings)?;
    attach_events(&mut engine, &settings)?;
    engine.enable_writes(&settings)?;
    let engine = Arc::new(engine);
    engine.start_background();
    actix_web::rt::System::new()
        .block_on(shoprank::server::serve(engine, &settings))
        .with_context(|| format!("serving on {}", settings.addr))
}
