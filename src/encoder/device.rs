//! Device selection: the one place where the `cuda` feature is looked at.
//!
//! The feature changes which device the encoder runs on, never the API: a CPU build asked
//! for CUDA answers [`crate::Error::CudaNotCompiled`]; a CUDA build without a usable GPU falls back
//! to the CPU with a warning.

use candle_core::Device;
use serde::{Deserialize, Serialize};

#[cfg(not(feature = "cuda"))]
use crate::error::Error;
use crate::error::Result;

/// Where the encoder runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

/// The candle device for `kind`.
pub fn select(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => cuda(),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Ok(device),
        Err(e) => {
            tracing::warn!(error = %e, "no usable CUDA device; the encoder runs on the CPU");
            Ok(Device::Cpu)
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
    Err(Error::CudaNotCompiled)
}

#[cfg(all(test, not(feature = "cuda")))]
mod tests {
    use super::*;

    #[test]
    fn cuda_in_a_cpu_build_is_a_clear_error() {
        let err = select(DeviceKind::Cuda).unwrap_err();
        assert_eq!(err.code(), "cuda_not_compiled");
        assert!(err.to_string().contains("--features cuda"));
    }
}
