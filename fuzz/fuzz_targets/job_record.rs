//! Job records: a job hash or a completed job's record holding anything (written by something
//! else, or corrupt) reads as a job or an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use redtail_core::{Backend, Cmd, Key};
use redtail_fuzz::runtime;
use redtail_queue::{Queue, QueueConfig};
use redtail_testkit::MemoryBackend;

fuzz_target!(|fields: Vec<(String, Vec<u8>)>| {
    if fields.is_empty() {
        return;
    }
    runtime().block_on(async {
        let redis = MemoryBackend::new();
        let Ok(queue) = Queue::<serde_json::Value>::new(redis.clone(), QueueConfig::new("fuzz")) else {
            return;
        };
        // A first field named "cr" writes its value as the job's completed record instead.
        let mut cmd = if fields[0].0 == "cr" {
            Cmd::new("HSET").key(&Key::from_raw("rt:q:{fuzz}:cr")).arg("victim")
        } else {
            Cmd::new("HSET").key(&Key::from_raw("rt:q:{fuzz}:j:victim"))
        };
        for (i, (field, value)) in fields.iter().enumerate() {
            cmd = if i == 0 && field == "cr" {
                cmd.arg(value.as_slice())
            } else {
                cmd.arg(field.as_str()).arg(value.as_slice())
            };
        }
        if redis.call(cmd).await.is_ok() {
            let _ = queue.get("victim").await;
            let _ = queue.logs("victim").await;
        }
    });
});
