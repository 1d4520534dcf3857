//! Stored values: any bytes decode to a value or an error through the codec, and any bytes
//! under a cache entry's key read as a miss or a value, never a panic.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use redtail_cache::{Cache, CacheConfig};
use redtail_core::{Backend, Cmd, Codec, JsonCodec, Key};
use redtail_fuzz::{UserSession, runtime};
use redtail_testkit::MemoryBackend;

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
