//! The media-api demo's library part: the original design's settings (its queues, its rate
//! limits, its cached routes, its session data), shared by the service, the workspace's suites,
//! the soak and the bench, so that the redtail crates themselves carry none of one application's
//! names.

pub mod presets;
mod recorder;

pub use recorder::{prometheus, spawn_upkeep};
