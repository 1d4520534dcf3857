//! Stored values: any bytes decode to a value or an error through the codec, and any bytes
//! under a cache entry's key read as a miss or a value, never a panic.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use redtail_cache::{Cache, CacheConfig};
use redtail_core::{Backend, Cmd, Codec, JsonCodec, Key};
use redtail_fuzz::runtime;
use redtail_testkit::MemoryBackend;

/// Session data as the demo service keeps it (`examples/media-api/src/presets.rs`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserSession {
    user_id: String,
    role: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    plex_id: Option<String>,
    created_at: u64,
    remember_me: bool,
}

fuzz_target!(|bytes: &[u8]| {
    let _ = JsonCodec.decode::<serde_json::Value>(bytes);
    let _ = JsonCodec.decode::<UserSession>(bytes);
    runtime().block_on(async {
        let redis = MemoryBackend::new();
        let backend: Arc<dyn Backend> = redis.clone().into();
        let Ok(cache) = Cache::new(backend, CacheConfig::default()).await else { return };
        let set = Cmd::new("SET").key(&Key::from_raw("rt:c:e:victim")).arg(bytes);
        if redis.call(set).await.is_ok() {
            let _ = cache.get::<serde_json::Value>("victim").await;
        }
    });
});
