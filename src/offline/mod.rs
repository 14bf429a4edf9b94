//! Offline tools: what a search engineer runs beside the service, never on a shopper's
//! request. They sit above the [`Engine`](crate::Engine) and drive it like a client:
//!
//! ```text
//! judged queries -> eval (metrics, significance, reports) -> tune (weights, held-out gate)
//! search log + events -> judgments (click models) -> eval / tune / train (the encoder)
//! shared catalogs -> personal (simulated shoppers) ; synth (large synthetic catalogs)
//! ```
//! Used by the CLI and by the console's eval route (`GET /profiles/{name}/eval`) only;
//! no serving stage imports them.

pub mod eval;
pub mod judgments;
pub mod personal;
pub mod synth;
pub mod train;
pub mod tune;
