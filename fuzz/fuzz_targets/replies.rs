//! Replies: every crate reads what its scripts and commands return through a backend that
//! answers anything at all (any shape, any error, in any order), and gets a value or an error,
//! never a panic. This is where a Lua reply of an unexpected shape (a script changed on the
//! server, a proxy in the way, a bug) would surface.

#![no_main]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use redtail_cache::{Cache, CacheConfig, EntryOptions};
use redtail_core::{
    Arg, Backend, Bytes, Cmd, Cursor, Error, Key, Pattern, ScanPage, Script, ServerError, Subscription, Value,
    async_trait,
};
use redtail_fuzz::{UserSession, runtime};
use redtail_queue::{JobState, Queue, QueueConfig};
use redtail_ratelimit::{Policy, RateLimiter};
use redtail_session::{NewSession, SessionConfig, SessionStore};

/// A reply of any shape, nested a few levels at most.
fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let nested = depth < 3;
    Ok(match u.int_in_range(0..=if nested { 8 } else { 6 })? {
        0 => Value::Nil,
        1 => Value::Int(u.arbitrary()?),
        2 => Value::Bytes(Bytes::from(u.arbitrary::<Vec<u8>>()?)),
        3 => Value::Bytes(Bytes::from(u.arbitrary::<i64>()?.to_string())),
        4 => Value::Double(u.arbitrary()?),
        5 => Value::Bool(u.arbitrary()?),
        6 => Value::Error(ServerError::new(u.arbitrary::<String>()?)),
        7 => Value::Array((0..u.int_in_range(0..=6)?).map(|_| value(u, depth + 1)).collect::<Result<_>>()?),
        _ => Value::Map(
            (0..u.int_in_range(0..=4)?)
                .map(|_| Ok((value(u, depth + 1)?, value(u, depth + 1)?)))
                .collect::<Result<_>>()?,
        ),
    })
}

/// A backend answering every command with the next fuzzed reply (or an error reply).
#[derive(Debug)]
struct Fuzzed(Mutex<std::vec::IntoIter<std::result::Result<Value, String>>>);

impl Fuzzed {
    fn next(&self) -> redtail_core::Result<Value> {
        let next = self.0.lock().map(|mut replies| replies.next()).unwrap_or(None);
        match next {
            Some(Ok(value)) => Ok(value),
            Some(Err(message)) => Err(Error::Server(ServerError::new(message))),
            None => Ok(Value::Nil),
        }
    }
}

#[async_trait]
impl Backend for Fuzzed {
    async fn call(&self, _cmd: Cmd) -> redtail_core::Result<Value> {
        self.next()
    }
    async fn pipeline(&self, cmds: Vec<Cmd>) -> redtail_core::Result<Vec<Value>> {
        cmds.iter().map(|_| self.next()).collect()
    }
    async fn transaction(&self, cmds: Vec<Cmd>) -> redtail_core::Result<Vec<Value>> {
        cmds.iter().map(|_| self.next()).collect()
    }
    async fn eval(&self, _script: &Script, _keys: &[Key], _args: Vec<Arg>) -> redtail_core::Result<Value> {
        self.next()
    }
    async fn scan(&self, _cursor: Cursor, _pattern: &Pattern, _count: u32) -> redtail_core::Result<ScanPage> {
        Ok(ScanPage { keys: Vec::new(), next: None })
    }
    async fn publish(&self, _channel: &str, _message: Bytes) -> redtail_core::Result<u64> {
        Ok(0)
    }
    async fn subscribe(&self, _channels: &[&str]) -> redtail_core::Result<Subscription> {
        Err(Error::InvalidInput("no subscriptions while fuzzing".to_owned()))
    }
    async fn blocking(&self, _cmd: Cmd) -> redtail_core::Result<Value> {
        self.next()
    }
    fn is_cluster(&self) -> bool {
        false
    }
}

fn replies(data: &[u8]) -> Result<Vec<std::result::Result<Value, String>>> {
    let mut u = Unstructured::new(data);
    let mut replies = Vec::new();
    while !u.is_empty() && replies.len() < 64 {
        replies.push(if u.ratio(1, 8)? { Err(u.arbitrary()?) } else { Ok(value(&mut u, 0)?) });
    }
    Ok(replies)
}

const API: Policy = Policy::new("api", 100, std::time::Duration::from_secs(60));
const YOUTUBE_DOWNLOAD: Policy = Policy::new("youtube", 5, std::time::Duration::from_secs(3_600))
    .with_algorithm(redtail_ratelimit::Algorithm::SlidingLog);
const MEDIA_REQUEST: Policy = Policy::new("media-request", 20, std::time::Duration::from_secs(3_600));

fuzz_target!(|data: &[u8]| {
    let Ok(replies) = replies(data) else { return };
    let backend: Arc<dyn Backend> = Arc::new(Fuzzed(Mutex::new(replies.into_iter())));
    runtime().block_on(async {
        if let Ok(ns) = redtail_core::Namespace::new("rt:rl") {
            let limiter = RateLimiter::new(Arc::clone(&backend), ns);
            let _ = limiter.check("u", &[API]).await;
            let _ = limiter.check("u", &[API, YOUTUBE_DOWNLOAD]).await;
            let _ = limiter.peek("u", &[MEDIA_REQUEST], 1).await;
        }
        let Ok(sessions) = SessionStore::<UserSession>::new(Arc::clone(&backend), SessionConfig::default()) else {
            panic!("the default session settings are valid");
        };
        if let Ok((token, _)) = sessions.create("u", UserSession::new("u", "user"), NewSession::standard()).await {
            let _ = sessions.get(token.as_str()).await;
            let _ = sessions.extend(token.as_str()).await;
        }
        let _ = sessions.list("u").await;
        let _ = sessions.invalidate_all("u").await;
        if let Ok(queue) = Queue::<serde_json::Value>::new(Arc::clone(&backend), QueueConfig::new("fuzz")) {
            let _ = queue.add(&serde_json::json!({"n": 1})).await;
            let _ = queue.get("1").await;
            let _ = queue.counts().await;
            let _ = queue.metrics(5).await;
            let _ = queue.list(JobState::Dead, 0, 10).await;
            let _ = queue.retry_dead("1").await;
        }
        if let Ok(cache) = Cache::new(Arc::clone(&backend), CacheConfig::default()).await {
            let _ = cache.get::<serde_json::Value>("k").await;
            let options = EntryOptions::ttl(Duration::from_secs(60))
                .tag("t")
                .stale_for(Duration::from_secs(5))
                .lock_wait(Some(Duration::from_millis(2)));
            let _ = cache.set("k", &1u32, &options).await;
            let _ = cache.get_or_compute("k", &options, || async { Ok::<_, std::io::Error>(2u32) }).await;
            let _ = cache.invalidate_tag("t").await;
        }
    });
});
