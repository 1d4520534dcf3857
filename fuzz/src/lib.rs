//! What the fuzz targets share: one Tokio runtime per process for the targets that drive async
//! APIs, built on first use so each input costs no runtime start-up.

use std::sync::OnceLock;

/// The process's runtime for driving a target's async calls with `block_on`.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"))
}
