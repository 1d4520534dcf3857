//! Property tests of every parser that reads input from users or from Redis: arbitrary, huge,
//! non-UTF-8 and hostile values are refused with an error or handled, never a panic, and what
//! is accepted round-trips.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use media_api::presets::UserSession;
use proptest::prelude::*;
use redtail_cache::{Cache, CacheConfig, EntryOptions};
use redtail_connection::Config;
use redtail_core::{Backend, Cmd, Codec, JsonCodec, Key, Namespace, Value, hash_tag, unescape};
use redtail_queue::{JobOptions, JobState, Queue, QueueConfig};
use redtail_ratelimit::{ClientIp, Policy, RateLimiter};
use redtail_session::{JwtDenylist, NewSession, SessionConfig, SessionStore, Token};
use redtail_testkit::MemoryBackend;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// Strings that look like what an attacker or a broken client sends.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[{}*?\\[\\]:%\\\\ \\r\\n\\t\\x00]{0,40}",
        Just(String::new()),
        Just("x".repeat(100_000)),
        Just("redis://user:hunter2@host:notaport".to_owned()),
        Just("\u{202e}\u{feff}\u{0}".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// URL parsing never panics, and a password never appears in an error.
    #[test]
    fn redis_urls_never_panic_nor_leak_passwords(rest in hostile(), scheme in prop_oneof![
        Just("redis://"), Just("rediss://"), Just("redis-cluster://"), Just("redis-sentinel://"), Just("redis+unix://"), Just("")
    ]) {
        let url = format!("{scheme}user:s3cr3t-pw@{rest}");
        if let Err(e) = Config::from_url(&url) {
            prop_assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
        }
        let _ = Config::from_url(&rest);
    }

    /// Only strings shaped like a token parse, and a parsed token is its own text.
    #[test]
    fn session_tokens_parse_only_their_own_shape(text in hostile()) {
        if let Some(token) = Token::parse(&text) {
            prop_assert_eq!(token.as_str(), text.as_str());
            prop_assert_eq!(text.len(), 54);
        }
    }

    /// Any bytes as a key part stay inside that part: no brace, glob character, colon or
    /// whitespace reaches the key, the slot is the tag's, and escaping reverses exactly.
    #[test]
    fn key_parts_cannot_escape_their_place(tag in any::<Vec<u8>>(), part in any::<Vec<u8>>()) {
        let ns = Namespace::new("rt:test").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let tagged = ns.tagged(&tag);
        let key = tagged.key([&part]);
        let text = key.as_bytes();
        let (prefix, rest) = text.split_at("rt:test:".len());
        prop_assert_eq!(prefix, b"rt:test:");
        // Exactly the braces the module put around the tag.
        prop_assert_eq!(text.iter().filter(|&&b| b == b'{').count(), 1);
        prop_assert_eq!(text.iter().filter(|&&b| b == b'}').count(), 1);
        prop_assert!(!rest.iter().any(|b| b"*?[] \r\n\t".contains(b)));
        prop_assert_eq!(key.slot(), tagged.slot());
        let escaped_tag = hash_tag(text);
        prop_assert_eq!(unescape(escaped_tag), Some(tag));
        let escaped_part = text.rsplit(|&b| b == b':').next().unwrap_or_default();
        prop_assert_eq!(unescape(escaped_part), Some(part));
    }

    /// Decoding arbitrary bytes is an error or a value, never a panic.
    #[test]
    fn codec_decodes_arbitrary_bytes_without_panicking(bytes in any::<Vec<u8>>()) {
        let _ = JsonCodec.decode::<serde_json::Value>(&bytes);
        let _ = JsonCodec.decode::<UserSession>(&bytes);
    }

    /// `X-Forwarded-For` from an untrusted peer is ignored; from a trusted one, the answer is the
    /// peer or an address the header names.
    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies(header in hostile(), last in any::<u32>()) {
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        prop_assert_eq!(ClientIp::new().client(peer, Some(&header)), peer);
        let trusted = ClientIp::new().with_trusted_proxies(["10.0.0.0/8"]).map_err(TestCaseError::fail)?;
        let chain = format!("{header}, {}", Ipv4Addr::from(last));
        let client = trusted.client(peer, Some(&chain));
        prop_assert!(client == peer || chain.contains(&client.to_string()), "{client} from {chain:?}");
    }

    /// Replies of any shape are read into values or errors, never a panic.
    #[test]
    fn replies_of_any_shape_convert_without_panicking(value in reply()) {
        let _ = value.as_int();
        let _ = value.as_opt_int();
        let _ = value.clone().into_opt_bytes();
        let _ = value.clone().into_string();
        let _ = value.clone().into_array();
        let _ = value.describe();
    }

    /// A corrupt job hash (anything written to it by something else) reads as an error or a job.
    #[test]
    fn corrupt_job_records_read_without_panicking(fields in proptest::collection::vec((hostile(), any::<Vec<u8>>()), 1..6)) {
        let redis = MemoryBackend::new();
        let queue = Queue::<serde_json::Value>::new(redis.clone(), QueueConfig::new("hostile"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime().block_on(async {
            let mut cmd = Cmd::new("HSET").key(&Key::from_raw("rt:q:{hostile}:j:victim"));
            for (field, value) in &fields {
                cmd = cmd.arg(field.as_str()).arg(value.as_slice());
            }
            redis.call(cmd).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = queue.get("victim").await;
            Ok::<_, TestCaseError>(())
        })?;
    }

    /// A completed job's record (see `lua/lib.lua`) holding anything, or well-formed numbers
    /// around any token, data and result, reads as a job, nothing or an error, never a panic.
    #[test]
    fn corrupt_completed_records_read_without_panicking(
        junk in any::<Vec<u8>>(),
        numbers in proptest::collection::vec(any::<u64>(), 9),
        token in hostile(),
        tail in any::<Vec<u8>>(),
    ) {
        let redis = MemoryBackend::new();
        let queue = Queue::<serde_json::Value>::new(redis.clone(), QueueConfig::new("hostile"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut shaped: Vec<u8> = Vec::new();
        for (i, n) in numbers.iter().enumerate() {
            shaped.extend_from_slice(if i == 2 { token.clone() } else { n.to_string() }.as_bytes());
            shaped.push(b' ');
        }
        shaped.extend_from_slice(&tail);
        runtime().block_on(async {
            for record in [junk, shaped] {
                let set = Cmd::new("HSET").key(&Key::from_raw("rt:q:{hostile}:cr")).arg("victim").arg(record);
                let push = Cmd::new("RPUSH").key(&Key::from_raw("rt:q:{hostile}:c")).arg("victim");
                redis.pipeline(vec![set, push]).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let _ = queue.get("victim").await;
                let _ = queue.list(JobState::Completed, 0, 10).await;
            }
            Ok::<_, TestCaseError>(())
        })?;
    }

    /// Job ids and payloads from users are checked, never trusted: a bad id is refused, any
    /// string payload is stored and read back as it was.
    #[test]
    fn job_ids_and_payloads_from_users(id in hostile(), payload in hostile()) {
        let redis = MemoryBackend::new();
        let queue = Queue::<String>::new(redis, QueueConfig::new("input"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime().block_on(async {
            match queue.add_with(&payload, JobOptions::default().id(id.as_str())).await {
                Ok(added) => {
                    let job = queue.get(added.id.as_str()).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(job.map(|j| j.data), Some(serde_json::Value::String(payload.clone())));
                }
                Err(redtail_queue::Error::InvalidInput(_) | redtail_queue::Error::TooLarge { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            }
            let _ = queue.get(&id).await;
            Ok(())
        })?;
    }

    /// Any text as a session token is refused without a round trip or read as no session.
    #[test]
    fn sessions_read_with_any_token_are_none_or_refused(token in hostile()) {
        let store = SessionStore::<UserSession>::new(MemoryBackend::new(), SessionConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let found = runtime().block_on(store.get(&token)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(found.is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Every other public entry point that takes a string from users (cache keys, tags and
    /// patterns, rate-limit subjects, session user ids, JWT ids, namespace prefixes, queue
    /// names) accepts it and round-trips it, or refuses it with an error: never a panic, never
    /// a value under another key.
    #[test]
    fn every_user_string_is_accepted_or_refused_cleanly(text in hostile(), other in hostile()) {
        runtime().block_on(async {
            let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
            let backend: Arc<dyn Backend> = MemoryBackend::new().into();

            let cache = Cache::new(Arc::clone(&backend), CacheConfig::default()).await.map_err(|e| fail(&e))?;
            let options = EntryOptions::ttl(Duration::from_secs(60)).tag(text.as_str());
            match cache.set(&text, &other, &options).await {
                Ok(()) => {
                    prop_assert_eq!(cache.get::<String>(&text).await, Some(other.clone()));
                    if other != text {
                        prop_assert_eq!(cache.get::<String>(&other).await, None);
                    }
                    cache.invalidate_tag(&text).await.map_err(|e| fail(&e))?;
                    prop_assert_eq!(cache.get::<String>(&text).await, None);
                }
                Err(redtail_cache::Error::InvalidInput(_) | redtail_cache::Error::TooLarge { .. }) => {}
                Err(e) => return Err(fail(&e)),
            }
            let _ = cache.invalidate_pattern(&other).await;
            let _ = cache.delete(&other).await;

            let limiter = RateLimiter::new(Arc::clone(&backend), Namespace::new("rt:rl").map_err(|e| fail(&e))?);
            let policy = Policy::new("hostile", 1, Duration::from_secs(60));
            match limiter.check(&text, std::slice::from_ref(&policy)).await {
                Ok(first) => {
                    prop_assert!(first.is_allowed());
                    let second = limiter.check(&text, std::slice::from_ref(&policy)).await.map_err(|e| fail(&e))?;
                    prop_assert!(!second.is_allowed(), "the subject's own counter, not another's");
                }
                Err(redtail_ratelimit::Error::InvalidInput(_)) => {}
                Err(e) => return Err(fail(&e)),
            }

            let store = SessionStore::<UserSession>::new(Arc::clone(&backend), SessionConfig::default()).unwrap_or_else(|e| panic!("{e}"));
            match store.create(&text, UserSession::new(text.as_str(), "user"), NewSession::standard()).await {
                Ok((token, _)) => {
                    let found = store.get(token.as_str()).await.map_err(|e| fail(&e))?;
                    prop_assert_eq!(found.map(|s| s.user_id), Some(text.clone()));
                    prop_assert_eq!(store.invalidate_all(&text).await.map_err(|e| fail(&e))?, 1);
                }
                Err(redtail_session::Error::InvalidInput(_) | redtail_session::Error::TooLarge { .. }) => {}
                Err(e) => return Err(fail(&e)),
            }

            let denylist = JwtDenylist::new(Arc::clone(&backend), Namespace::new("rt:jwt").map_err(|e| fail(&e))?);
            let later = SystemTime::now() + Duration::from_secs(60);
            match denylist.revoke(&text, later).await {
                Ok(_) => prop_assert!(denylist.is_revoked(&text).await.map_err(|e| fail(&e))?),
                Err(redtail_session::Error::InvalidInput(_)) => {}
                Err(e) => return Err(fail(&e)),
            }

            let _ = Namespace::new(&text);
            let _ = Queue::<String>::new(Arc::clone(&backend), QueueConfig::new(text.as_str()));
            Ok(())
        })?;
    }
}

fn reply() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<i64>().prop_map(Value::Int),
        any::<Vec<u8>>().prop_map(|b| Value::Bytes(b.into())),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    })
}
