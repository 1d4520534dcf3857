//! `redtail-cache` on every backend: tags, patterns, races, local tiers and stampedes.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use media_api::presets;
use redtail_cache::{Cache, CacheConfig, EntryOptions, LocalTier, Namespace};
use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Cmd, Cursor, Key};
use redtail_tests::{Ctx, Deployment, Env, Target, TestRedis, TestResult, for_each_backend, for_each_server};

async fn cache(backend: &Arc<dyn Backend>, prefix: &str, local: bool) -> Cache {
    tiered(backend, prefix, local.then(LocalTier::default)).await
}

async fn tiered(backend: &Arc<dyn Backend>, prefix: &str, tier: Option<LocalTier>) -> Cache {
    let namespace = Namespace::new(prefix).unwrap_or_else(|e| panic!("{e}"));
    let mut config = CacheConfig::default().with_namespace(namespace);
    if let Some(tier) = tier {
        config = config.with_local_tier(tier);
    }
    Cache::new(Arc::clone(backend), config).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Waits up to a second for `b` to read `key` as `want`.
async fn sees(b: &Cache, key: &str, want: Option<u32>, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while b.get::<u32>(key).await != want {
        assert!(Instant::now() < deadline, "{step}: not seen within 1 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits up to a second for `b` to serve `key` from its local tier.
async fn served_locally(b: &Cache, key: &str, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let hits = b.stats().local_hits;
        if b.get::<u32>(key).await.is_some() && b.stats().local_hits > hits {
            return;
        }
        assert!(Instant::now() < deadline, "{step}: never served from the local tier");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

for_each_backend!(
    typed_values_tags_and_patterns,
    invalidation_racing_a_thousand_sets_never_resurrects,
    concurrent_writes_fail_alone_on_a_foreign_tag_record,
    a_loaded_value_keeps_the_version_of_each_of_its_tags,
    a_caller_after_an_invalidation_never_joins_a_load_from_before_it,
    durations_redis_cannot_keep_are_refused_naming_the_setting,
    bulk_reads_and_writes_span_slots_and_keep_their_tags,
    key_tracking_keeps_local_tiers_exact_without_messages,
);

/// With key tracking, B's local tier drops what A (or anything else) changes: writes, deletes,
/// tag invalidations, pattern invalidations, and plain commands that no `Cache` made; and
/// writes of other entries of a tag leave the tag's entries in B's tier.
async fn key_tracking_keeps_local_tiers_exact_without_messages(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let prefix = env.ns.child("tracked");
    let tier = Some(LocalTier::default().with_tracking());
    let a = tiered(&env.backend, prefix.prefix(), tier).await;
    let b = tiered(&env.backend, prefix.prefix(), tier).await;
    let options = EntryOptions::default().tag("t");
    a.set("k", &1u32, &options).await?;
    sees(&b, "k", Some(1), "first write").await;
    // The write's own invalidations (its key, and the tag record it created) may reach B after
    // B read the new value (on a cluster they come from two nodes): let them all arrive first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    served_locally(&b, "k", "first write").await;
    // Other entries of the tag, written many times, do not clear the tag from B's tier.
    for i in 0..50u32 {
        a.set(&format!("other{i}"), &i, &options).await?;
    }
    // Long enough for their invalidations to arrive: the next read is still a local hit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hits = b.stats().local_hits;
    assert_eq!(b.get::<u32>("k").await, Some(1));
    assert_eq!(b.stats().local_hits, hits + 1, "writes of other entries of the tag cleared it from B's tier");
    a.set("k", &2u32, &options).await?;
    sees(&b, "k", Some(2), "update").await;
    served_locally(&b, "k", "update").await;
    // A plain command, as another service or an operator would send.
    env.backend.call(Cmd::new("DEL").key(&prefix.child("e").key(["k"]))).await?;
    sees(&b, "k", None, "a DEL sent by no cache").await;
    a.set("k", &3u32, &options).await?;
    served_locally(&b, "k", "rewrite").await;
    a.invalidate_tag("t").await?;
    sees(&b, "k", None, "tag invalidation").await;
    a.set("k", &4u32, &options).await?;
    served_locally(&b, "k", "rewrite").await;
    a.delete("k").await?;
    sees(&b, "k", None, "delete").await;
    a.set("k", &5u32, &options).await?;
    served_locally(&b, "k", "rewrite").await;
    assert_eq!(a.invalidate_pattern("k").await?, 1);
    sees(&b, "k", None, "pattern invalidation").await;
    // Nothing was published: the cache's channel is unused in this mode.
    let mut subscription = env.backend.subscribe(&[&format!("{}:inv", prefix.prefix())]).await?;
    a.set("k", &6u32, &options).await?;
    sees(&b, "k", Some(6), "last write").await;
    let message = tokio::time::timeout(Duration::from_millis(100), subscription.next_message()).await;
    assert!(message.is_err(), "a message was published: {message:?}");
    Ok(())
}

/// `get_many` and `set_many` over keys of many slots (a cluster splits them by node).
async fn bulk_reads_and_writes_span_slots_and_keep_their_tags(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let cache = cache(&env.backend, env.ns.prefix(), false).await;
    let keys: Vec<String> = (0..50).map(|i| format!("bulk-{i}")).collect();
    let entries: Vec<(&str, u32)> = keys.iter().zip(0u32..).map(|(k, i)| (k.as_str(), i)).collect();
    let options = redtail_cache::EntryOptions::ttl(std::time::Duration::from_secs(60)).tag("bulk");
    for result in cache.set_many(&entries, &options).await {
        result?;
    }
    let mut wanted: Vec<&str> = keys.iter().map(String::as_str).rev().collect();
    wanted.push("never-written");
    let read = cache.get_many::<u32>(&wanted).await;
    let expected: Vec<Option<u32>> = (0..50u32).rev().map(Some).chain([None]).collect();
    assert_eq!(read, expected);
    cache.invalidate_tag("bulk").await?;
    assert!(cache.get_many::<u32>(&wanted).await.iter().all(Option::is_none));
    Ok(())
}

async fn typed_values_tags_and_patterns(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let cache = cache(&env.backend, env.ns.prefix(), false).await;
    let status = serde_json::json!({"service": "plex", "status": "up", "latencyMs": 12});
    presets::set_service_status(&cache, "plex", &status).await?;
    assert_eq!(presets::service_status::<serde_json::Value, _>(&cache, "plex").await, Some(status));
    let params = serde_json::json!({"page": 1, "q": "dune"});
    presets::set_api_response(&cache, "/search", &params, &vec!["Dune", "Dune: Part Two"]).await?;
    let reordered = serde_json::json!({"q": "dune", "page": 1});
    assert_eq!(presets::api_response::<Vec<String>, _>(&cache, "/search", &reordered).await.map(|v| v.len()), Some(2));
    cache.invalidate_tag("/search").await?;
    assert_eq!(presets::api_response::<Vec<String>, _>(&cache, "/search", &params).await, None);
    assert!(presets::service_status::<serde_json::Value, _>(&cache, "plex").await.is_some(), "other tags untouched");
    for i in 0..300 {
        cache.set(&format!("media:{i}:poster"), &i, &EntryOptions::default()).await?;
    }
    assert_eq!(cache.invalidate_pattern("media:*:poster").await?, 300);
    assert_eq!(cache.get::<u32>("media:1:poster").await, None);
    assert!(presets::service_status::<serde_json::Value, _>(&cache, "plex").await.is_some(), "other keys untouched");
    assert!(cache.delete(&presets::service_status_key("plex")).await?);
    assert_eq!(cache.stats().redis_errors, 0);
    Ok(())
}

/// Concurrent writes share their round trips; a tag record holding foreign data fails the
/// writes that use that tag, and only them.
async fn concurrent_writes_fail_alone_on_a_foreign_tag_record(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let cache = cache(&env.backend, env.ns.prefix(), false).await;
    let record = redtail_core::Namespace::new(env.ns.prefix())?.child("t").key(["broken"]);
    env.backend.call(Cmd::new("RPUSH").key(&record).arg("not a version")).await?;
    env.backend.call(Cmd::new("EXPIRE").key(&record).arg(60)).await?;
    let writes = (0..400).map(|i| {
        let tag = if i % 2 == 0 { "fine" } else { "broken" };
        let options = EntryOptions::default().tag(tag).tag("shared");
        let cache = &cache;
        async move { (i, cache.set(&format!("w:{i}"), &i, &options).await) }
    });
    for (i, written) in futures_util::future::join_all(writes).await {
        let read = cache.get_with_tags::<u32>(&format!("w:{i}"), &["fine", "shared"]).await;
        if i % 2 == 0 {
            assert!(written.is_ok(), "write {i}: {written:?}");
            assert_eq!(read, Some(i), "write {i} is readable");
        } else {
            assert!(written.is_err(), "write {i} under the broken tag succeeded");
            assert_eq!(read, None, "write {i} is not readable");
        }
    }
    Ok(())
}

/// A load whose tags are part known, part new carries each tag's own version: the value it
/// stores is readable, and the next call does not load again.
async fn a_loaded_value_keeps_the_version_of_each_of_its_tags(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let cache = cache(&env.backend, env.ns.prefix(), false).await;
    cache.set("other", &1u32, &EntryOptions::default().tag("known")).await?;
    let options = EntryOptions::default().tag("known").tag("new");
    let loads = std::sync::atomic::AtomicU32::new(0);
    let load = || async {
        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok::<u32, std::io::Error>(7)
    };
    assert_eq!(cache.get_or_compute("k", &options, load).await?, 7);
    assert_eq!(cache.get_with_tags::<u32>("k", &["known", "new"]).await, Some(7), "the loaded value is readable");
    assert_eq!(cache.get_or_compute("k", &options, load).await?, 7);
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1, "loaded once");
    Ok(())
}

/// 1,000 concurrent writes of one tag; the tag is invalidated once some have returned, while
/// the rest are under way, and 100 more writes follow it. Every write that had returned before
/// the invalidation began is unreadable after it; writes that began after it ended are readable.
/// A load is running (its loader takes 20 ms) when the tag is invalidated 5 ms into it; a
/// `get_or_compute` that starts after `invalidate_tag` returned gets a value loaded after the
/// invalidation, never the one in flight, and the first caller still gets its own; it does not
/// wait out the load lock (2 s) either. The same after `delete` without the cross-process lock (a
/// deleted key carries no version, so a load elsewhere can still store the old value: a known
/// gap). (The second caller used to join the load in flight, in 200 of 200 rounds.)
async fn a_caller_after_an_invalidation_never_joins_a_load_from_before_it(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let cache = cache(&env.backend, env.ns.prefix(), false).await;
    let loads = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let slow_load = |loads: Arc<std::sync::atomic::AtomicU32>| async move {
        let n = loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(n)
    };
    for round in 0..20 {
        let key = format!("flight:{round}");
        let mut options = EntryOptions::ttl(Duration::from_secs(60)).tag(format!("t{round}"));
        if round % 2 == 1 {
            options = options.lock_wait(None);
        }
        let first = {
            let (cache, key, options, loads) = (cache.clone(), key.clone(), options.clone(), Arc::clone(&loads));
            tokio::spawn(async move { cache.get_or_compute(&key, &options, || slow_load(loads)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = loads.load(std::sync::atomic::Ordering::SeqCst);
        if round % 2 == 0 {
            cache.invalidate_tag(&format!("t{round}")).await?;
        } else {
            cache.delete(&key).await?;
        }
        let started = Instant::now();
        let after = cache.get_or_compute(&key, &options, || slow_load(Arc::clone(&loads))).await?;
        assert!(started.elapsed() < Duration::from_millis(1_500), "round {round}: waited out the 2 s load lock");
        let first = first.await??;
        assert!(after > before, "round {round}: the caller after the invalidation got load {after}, from before it");
        assert_ne!(first, after, "round {round}");
    }
    Ok(())
}

/// `Duration::MAX` as a TTL, stale window, lock wait, lock TTL or local-tier TTL is refused with
/// an error naming the setting, before anything is written (a `Duration::MAX` TTL used to
/// overflow a `Duration` sum and panic); the longest allowed works.
async fn durations_redis_cannot_keep_are_refused_naming_the_setting(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let c = cache(&env.backend, env.ns.prefix(), false).await;
    let max = Duration::MAX;
    let entries = [
        (EntryOptions::ttl(max), "TTL"),
        (EntryOptions::default().stale_for(max), "stale_for"),
        (EntryOptions::default().lock_wait(Some(max)), "lock_wait"),
    ];
    for (options, setting) in entries {
        let error = c.set("k", &1u32, &options).await.err().ok_or(setting)?;
        assert!(error.to_string().contains(setting), "{setting}: {error}");
        let loaded = c.get_or_compute("k", &options, || async { Ok::<_, std::io::Error>(1u32) }).await;
        assert!(loaded.is_err(), "{setting}");
    }
    assert_eq!(c.get::<u32>("k").await, None, "nothing was written");
    let configs = [
        (CacheConfig::default().with_namespace(env.ns.clone()).with_lock_ttl(max), "lock_ttl"),
        (CacheConfig::default().with_namespace(env.ns.clone()).with_local_tier(LocalTier::new(10, max)), "local tier"),
    ];
    for (config, setting) in configs {
        let error = Cache::new(Arc::clone(&env.backend), config).await.err().ok_or(setting)?;
        assert!(error.to_string().contains(setting), "{setting}: {error}");
    }
    let longest = EntryOptions::ttl(redtail_cache::MAX_DURATION).stale_for(redtail_cache::MAX_DURATION);
    c.set("k", &2u32, &longest).await?;
    assert_eq!(c.get::<u32>("k").await, Some(2));
    Ok(())
}

async fn invalidation_racing_a_thousand_sets_never_resurrects(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let cache = cache(&env.backend, env.ns.prefix(), false).await;
    let options = EntryOptions::ttl(Duration::from_secs(300)).tag("race");
    let started = Instant::now();
    let returned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let write = |i: u64, delay: Duration| {
        let (cache, options, returned) = (cache.clone(), options.clone(), Arc::clone(&returned));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let began = started.elapsed();
            cache.set(&format!("k{i}"), &i, &options).await?;
            returned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, redtail_cache::Error>((i, began, started.elapsed()))
        })
    };
    // Spread over about 100 ms.
    let mut writers: Vec<_> = (0..1000).map(|i| write(i, Duration::from_micros(i * 100))).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A loaded machine may not have finished a write by then: wait (bounded) for a few.
    while returned.load(std::sync::atomic::Ordering::SeqCst) < 10 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let invalidation_began = started.elapsed();
    cache.invalidate_tag("race").await?;
    let invalidation_ended = started.elapsed();
    writers.extend((1000..1100).map(|i| write(i, Duration::ZERO)));
    let mut before = 0;
    let mut after = 0;
    for writer in writers {
        let (i, began, ended) = writer.await??;
        let readable = cache.get::<u64>(&format!("k{i}")).await.is_some();
        if ended < invalidation_began {
            assert!(!readable, "k{i} was written before the invalidation and is still readable");
            before += 1;
        } else if began > invalidation_ended {
            assert!(readable, "k{i} was written after the invalidation and is missing");
            after += 1;
        }
    }
    assert!(before > 0 && after > 0, "the race needs writes on both sides ({before} before, {after} after)");
    Ok(())
}

/// Tests that need real servers.
mod servers {
    use super::*;

    for_each_server!(
        two_instances_with_local_tiers_agree_within_100_ms,
        a_burst_of_writes_elsewhere_leaves_other_local_entries,
        a_thousand_callers_in_four_processes_run_the_loader_once,
        eager_refresh_runs_once_across_four_processes_and_no_caller_waits
    );

    /// An entry written with a 4 s TTL is read 2.5 s later (past half its TTL) by 100 callers
    /// in each of four processes: each is answered at once with the value it had, and one
    /// background refresh runs across the four.
    async fn eager_refresh_runs_once_across_four_processes_and_no_caller_waits(kind: Deployment) -> TestResult {
        let servers = TestRedis::shared_or_owned(kind)?;
        let prefix = format!("{}:eager", servers.namespace().prefix());
        let redis = Redis::connect(Config::from_url(servers.url())?).await?;
        let backend: Arc<dyn Backend> = redis.into();
        let cache = Cache::new(backend, CacheConfig::default().with_namespace(Namespace::new(prefix.clone())?)).await?;
        cache.set("k", "old", &EntryOptions::ttl(Duration::from_secs(4))).await?;
        let start_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() + 2500;
        let children: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(env!("CARGO_BIN_EXE_stampede"))
                    .args([servers.url(), &prefix, "k", "100", &start_at.to_string(), "eager"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        let mut total = 0;
        for child in children {
            let out = child.wait_with_output()?;
            assert!(out.status.success(), "eager child failed: {}", String::from_utf8_lossy(&out.stderr));
            total += String::from_utf8_lossy(&out.stdout).trim().parse::<u32>()?;
        }
        assert_eq!(total, 1, "{total} refreshes across four processes");
        assert_eq!(cache.get::<String>("k").await.as_deref(), Some("new"), "the refresh stored its value");
        Ok(())
    }

    /// 2,000 concurrent writes on A leave B's local entry of another key in place, in both
    /// invalidation modes: their messages are applied, not overflowed into a gap that empties
    /// the tier (fred's channel of 32 messages did, before the subscriber's was made larger).
    async fn a_burst_of_writes_elsewhere_leaves_other_local_entries(kind: Deployment) -> TestResult {
        let ctx = Ctx::new(kind).await;
        for (mode, tier) in [("pubsub", LocalTier::default()), ("tracking", LocalTier::default().with_tracking())] {
            let prefix = ctx.ns.child(mode);
            let a = tiered(&ctx.backend, prefix.prefix(), Some(tier)).await;
            let b = tiered(&ctx.backend, prefix.prefix(), Some(tier)).await;
            a.set("kept", &1u32, &EntryOptions::default()).await?;
            // The write's own invalidation may reach B after B read the value: let it arrive.
            sees(&b, "kept", Some(1), mode).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            served_locally(&b, "kept", mode).await;
            let writes: Vec<_> = (0..2000u32)
                .map(|i| {
                    let a = a.clone();
                    tokio::spawn(async move { a.set(&format!("burst{i}"), &i, &EntryOptions::default()).await })
                })
                .collect();
            for write in writes {
                write.await??;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let hits = b.stats().local_hits;
            assert_eq!(b.get::<u32>("kept").await, Some(1));
            assert_eq!(b.stats().local_hits, hits + 1, "{mode}: the burst emptied B's tier");
        }
        Ok(())
    }

    async fn two_instances_with_local_tiers_agree_within_100_ms(kind: Deployment) -> TestResult {
        let ctx = Ctx::new(kind).await;
        // A second client: its own connections, as another process would have.
        let other: Arc<dyn Backend> = Arc::new(Redis::connect(Config::from_url(ctx.servers.url())?).await?);
        let a = cache(&ctx.backend, ctx.ns.prefix(), true).await;
        let b = cache(&other, ctx.ns.prefix(), true).await;
        let options = EntryOptions::default().tag("t");
        a.set("k", &1u32, &options).await?;
        assert_eq!(b.get::<u32>("k").await, Some(1));
        // Kept in B's tier once B's reads no longer overlap the write's message (one that does
        // may have read the value before the write, so it is not kept).
        let deadline = Instant::now() + Duration::from_secs(1);
        while !(b.get::<u32>("k").await == Some(1) && b.stats().local_hits >= 1) {
            assert!(Instant::now() < deadline, "never served from B's tier");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for (step, value) in [("update", Some(2u32)), ("invalidation", None)] {
            let started = Instant::now();
            match value {
                Some(v) => a.set("k", &v, &options).await?,
                None => a.invalidate_tag("t").await?,
            }
            loop {
                if b.get::<u32>("k").await == value {
                    break;
                }
                assert!(started.elapsed() < Duration::from_millis(100), "{step} not seen within 100 ms");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_answer_a_miss_while_redis_is_down_and_writes_say_why() -> TestResult {
        let ctx = Ctx::owned(Deployment::Standalone, |c| c.with_command_timeout(Duration::from_millis(300))).await;
        let c = cache(&ctx.backend, ctx.ns.prefix(), false).await;
        c.set("k", &1u32, &EntryOptions::default()).await?;
        let port = ctx.servers.kill_primary()?;
        assert_eq!(c.get::<u32>("k").await, None);
        assert_eq!(c.get::<u32>("k").await, None);
        assert_eq!(c.stats().redis_errors, 2, "each failed read is counted");
        let write = c.set("k", &2u32, &EntryOptions::default()).await;
        assert!(matches!(&write, Err(redtail_cache::Error::Redis(e)) if e.is_unavailable()), "{write:?}");
        // The loader still answers; its value could not be stored.
        let v: u32 = c.get_or_compute("k", &EntryOptions::default(), || async { Ok::<_, std::io::Error>(3) }).await?;
        assert_eq!(v, 3);
        ctx.servers.restart_killed(port)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.set("k", &4u32, &EntryOptions::default()).await.is_err() {
            assert!(Instant::now() < deadline, "writes did not resume after the restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Each pooled connection reconnects on its own: a read may still meet one that has not.
        while c.get::<u32>("k").await != Some(4) {
            assert!(Instant::now() < deadline, "reads did not resume after the restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    mod owned {
        use super::*;

        redtail_tests::for_each_server!(@mod standalone Standalone a_reconnect_at_any_moment_leaves_no_stale_local_entry);
        redtail_tests::for_each_server!(@mod cluster Cluster a_reconnect_at_any_moment_leaves_no_stale_local_entry);
        redtail_tests::for_each_server!(@mod tracking_standalone Standalone a_tracking_reconnect_at_any_moment_leaves_no_stale_local_entry);
        redtail_tests::for_each_server!(@mod tracking_cluster Cluster a_tracking_reconnect_at_any_moment_leaves_no_stale_local_entry);
        redtail_tests::for_each_server!(@mod tracking_flush Standalone a_flush_empties_tracked_local_tiers);
    }

    async fn a_reconnect_at_any_moment_leaves_no_stale_local_entry(kind: Deployment) -> TestResult {
        reconnect_at_any_moment(kind, LocalTier::default()).await
    }

    /// The same with key tracking: its connections are subscribed, so the kill drops them too.
    async fn a_tracking_reconnect_at_any_moment_leaves_no_stale_local_entry(kind: Deployment) -> TestResult {
        reconnect_at_any_moment(kind, LocalTier::default().with_tracking()).await
    }

    /// A's connections go through a proxy that stalls them all (half-open: bytes stop, nothing
    /// is closed) while B writes: A's tier serves B's value within a few seconds (its listening
    /// connection is pinged every second and replaced), not after the tier's 30 s TTL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_listening_connection_is_replaced_and_the_tier_catches_up() -> TestResult {
        let (servers, proxy, through) = redtail_tests::behind_proxy().await;
        let a_backend: Arc<dyn Backend> =
            Redis::connect(through.with_command_timeout(Duration::from_millis(300))).await?.into();
        let b_backend: Arc<dyn Backend> = Redis::connect(Config::from_url(servers.url())?).await?.into();
        for (mode, tier) in [("pubsub", LocalTier::default()), ("tracking", LocalTier::default().with_tracking())] {
            let prefix = servers.namespace().child(mode);
            let a = tiered(&a_backend, prefix.prefix(), Some(tier)).await;
            let b = tiered(&b_backend, prefix.prefix(), Some(tier)).await;
            b.set("k", &1u32, &EntryOptions::default()).await?;
            served_locally(&a, "k", mode).await;
            proxy.stall();
            b.set("k", &2u32, &EntryOptions::default()).await?;
            let started = Instant::now();
            while a.get::<u32>("k").await != Some(2) {
                assert!(started.elapsed() < Duration::from_secs(10), "{mode}: A served the old value for 10 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!("{mode}: A caught up {:?} after the stall", started.elapsed());
        }
        Ok(())
    }

    /// `FLUSHALL` reaches a tracked tier as a gap: it is emptied.
    async fn a_flush_empties_tracked_local_tiers(kind: Deployment) -> TestResult {
        let ctx = Ctx::owned(kind, |c| c).await;
        let c = tiered(&ctx.backend, ctx.ns.prefix(), Some(LocalTier::default().with_tracking())).await;
        c.set("k", &1u32, &EntryOptions::default()).await?;
        served_locally(&c, "k", "write").await;
        ctx.backend.call(Cmd::new("FLUSHALL")).await?;
        sees(&c, "k", None, "flush").await;
        Ok(())
    }

    /// Instance A reads a key all the time (refilling its local tier whenever it is cleared)
    /// while every pub/sub connection is killed (`CLIENT KILL TYPE pubsub`), and instance B writes
    /// the key at one of many moments around A's reconnect (every 3 ms from 0 to 150 ms after the
    /// kill): A
    /// serves B's value once its subscription is back, every time. (A used to keep the old value
    /// for the local tier's TTL, 30 s, when the write fell between its first gap and its
    /// resubscription: the tier was cleared, refilled with the old value, and the message lost.)
    async fn reconnect_at_any_moment(kind: Deployment, tier: LocalTier) -> TestResult {
        let ctx = Ctx::owned(kind, |c| c).await;
        let other: Arc<dyn Backend> = Redis::connect(Config::from_url(ctx.servers.url())?).await?.into();
        let a = tiered(&ctx.backend, ctx.ns.prefix(), Some(tier)).await;
        let b = tiered(&other, ctx.ns.prefix(), Some(tier)).await;
        let options = EntryOptions::default();
        // Every 3 ms from the kill to 150 ms after it: the reconnect falls somewhere in there.
        for (round, delay_ms) in (0u64..=150).step_by(3).enumerate() {
            let key = format!("k{round}");
            b.set(&key, &0u32, &options).await?;
            assert_eq!(a.get::<u32>(&key).await, Some(0));
            let reader = {
                let (a, key) = (a.clone(), key.clone());
                tokio::spawn(async move {
                    let until = Instant::now() + Duration::from_millis(300);
                    while Instant::now() < until {
                        let _ = a.get::<u32>(&key).await;
                        tokio::task::yield_now().await;
                    }
                })
            };
            for port in ctx.servers.data_ports() {
                ctx.servers.admin(port, &["CLIENT", "KILL", "TYPE", "pubsub"])?;
            }
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            // B's write may fail while its own connection comes back; it is retried.
            let deadline = Instant::now() + Duration::from_secs(10);
            while b.set(&key, &1u32, &options).await.is_err() {
                assert!(Instant::now() < deadline, "round {round}: B could not write");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            reader.await?;
            loop {
                if a.get::<u32>(&key).await == Some(1) {
                    break;
                }
                assert!(Instant::now() < deadline, "round {round} ({delay_ms} ms): A kept the old value");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_connection_empties_the_local_tier() -> TestResult {
        let ctx = Ctx::owned(Deployment::Standalone, |c| c).await;
        let c = cache(&ctx.backend, ctx.ns.prefix(), true).await;
        c.set("k", &1u32, &EntryOptions::default()).await?;
        assert_eq!(c.get::<u32>("k").await, Some(1));
        assert_eq!(c.get::<u32>("k").await, Some(1));
        let local_hits = c.stats().local_hits;
        assert_eq!(local_hits, 1);
        // Changed behind the cache's back, as by an instance whose message is lost with the connection.
        let raw = ctx.backend.call(Cmd::new("GET").key(&Key::from_raw(format!("{}:e:k", ctx.ns.prefix())))).await?;
        assert!(!raw.is_nil());
        ctx.servers.drop_clients()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let hits = c.stats().local_hits;
            if c.get::<u32>("k").await == Some(1) && c.stats().local_hits == hits {
                break; // served from Redis: the local tier was emptied
            }
            assert!(Instant::now() < deadline, "the local tier was not emptied after the connection dropped");
        }
        Ok(())
    }

    async fn a_thousand_callers_in_four_processes_run_the_loader_once(kind: Deployment) -> TestResult {
        let servers = TestRedis::shared_or_owned(kind)?;
        for (lock, most) in [("yes", 1), ("no", 4)] {
            let prefix = format!("{}:{lock}", servers.namespace().prefix());
            let start_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() + 1500;
            let children: Vec<_> = (0..4)
                .map(|_| {
                    std::process::Command::new(env!("CARGO_BIN_EXE_stampede"))
                        .args([servers.url(), &prefix, "cold", "250", &start_at.to_string(), lock])
                        .output()
                })
                .collect::<Result<_, _>>()?;
            let mut total = 0;
            for child in children {
                let stdout = String::from_utf8_lossy(&child.stdout);
                assert!(child.status.success(), "stampede child failed: {}", String::from_utf8_lossy(&child.stderr));
                let runs: u32 = stdout.trim().parse()?;
                assert!(runs <= 1, "a process ran the loader {runs} times");
                total += runs;
            }
            assert!((1..=most).contains(&total), "lock {lock}: {total} loads in all, expected 1..={most}");
            let redis = Redis::connect(Config::from_url(servers.url())?).await?;
            let counted = redis.call(Cmd::new("GET").key(&Key::from_raw(format!("{prefix}:loader-runs")))).await?;
            assert_eq!(counted.as_int()?, i64::from(total));
        }
        Ok(())
    }

    /// Runs `f` on `n` items with 64 at a time.
    async fn in_parallel<F, Fut>(n: usize, f: F) -> TestResult
    where
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = TestResult> + Send,
    {
        let workers: Vec<_> = (0..64)
            .map(|w| {
                let f = f.clone();
                tokio::spawn(async move {
                    for i in (w..n).step_by(64) {
                        f(i).await?;
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .collect();
        for w in workers {
            w.await??;
        }
        Ok(())
    }

    fn info_field(info: &str, name: &str) -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from INFO"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_thousand_tagged_entries_leave_nothing_behind_when_they_expire() -> TestResult {
        let ctx = Ctx::owned(Deployment::Standalone, |c| c).await;
        let c = cache(&ctx.backend, ctx.ns.prefix(), false).await;
        let memory = || async {
            let info = ctx.backend.call(Cmd::new("INFO").arg("memory")).await?.into_string()?;
            let keys = ctx.backend.call(Cmd::new("DBSIZE")).await?.as_int()?;
            Ok::<_, redtail_core::Error>((info_field(&info, "used_memory"), keys))
        };
        let (start_bytes, start_keys) = memory().await?;
        let value = serde_json::json!({"service": "plex", "status": "up", "latencyMs": 12});
        in_parallel(100_000, move |i| {
            let (c, value) = (c.clone(), value.clone());
            async move {
                let options =
                    EntryOptions::ttl(Duration::from_secs(2)).tag("api-response").tag(format!("ep{}", i % 20));
                c.set(&format!("api:ep:{i}"), &value, &options).await?;
                Ok(())
            }
        })
        .await?;
        let (full_bytes, full_keys) = memory().await?;
        // Early entries may have expired already; the rest are there, with their 21 tag records.
        assert!(full_keys - start_keys > 1000, "only {} keys written", full_keys - start_keys);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // Let the server's active expiry finish; SCAN also expires what it visits.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut cursor = Some(Cursor::START);
            while let Some(at) = cursor {
                cursor = ctx.backend.scan(at, &ctx.ns.pattern::<_, &str>([]), 1000).await?.next;
            }
            if memory().await?.1 == start_keys {
                break;
            }
            assert!(Instant::now() < deadline, "keys remain after every entry expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (end_bytes, _) = memory().await?;
        println!("used_memory: start {start_bytes}, with 100,000 entries {full_bytes}, after expiry {end_bytes}");
        assert!(end_bytes - start_bytes < 512 * 1024, "memory did not return: {start_bytes} -> {end_bytes}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pattern_invalidation_on_a_cluster_removes_every_match_without_blocking() -> TestResult {
        let ctx = Ctx::new(Deployment::Cluster).await;
        let c = cache(&ctx.backend, ctx.ns.prefix(), false).await;
        let entries = ctx.ns.child("e");
        let key = |kind: &str, i: usize| entries.key([format!("{kind}:{i}")]);
        // 100,000 keys over every primary: half match the pattern.
        for chunk in (0..50_000).collect::<Vec<_>>().chunks(1000) {
            let cmds = chunk
                .iter()
                .flat_map(|&i| [key("poster", i), key("plot", i)])
                .map(|k| Cmd::new("SET").key(&k).arg("v").arg("EX").arg(600))
                .collect();
            ctx.backend.pipeline(cmds).await?;
        }
        // A probe measures how long the servers leave a PING waiting while the scan runs.
        let probe_backend = Arc::clone(&ctx.backend);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe_stop = Arc::clone(&stop);
        let probe = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !probe_stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                probe_backend.call(Cmd::new("PING")).await?;
                worst = worst.max(sent.elapsed());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<_, redtail_core::Error>(worst)
        });
        let started = Instant::now();
        let removed = c.invalidate_pattern("poster:*").await?;
        let took = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let worst = probe.await??;
        println!("removed {removed} keys in {took:?}; slowest PING meanwhile {worst:?}");
        assert_eq!(removed, 50_000);
        let mut left = HashSet::new();
        let mut cursor = Some(Cursor::START);
        while let Some(at) = cursor {
            let page = ctx.backend.scan(at, &entries.pattern::<_, &str>([]), 1000).await?;
            left.extend(page.keys.into_iter().map(|k: Key| k.to_bytes()));
            cursor = page.next;
        }
        assert_eq!(left.len(), 50_000, "the other keys are untouched");
        assert!(left.iter().all(|k| k.windows(4).any(|w| w == b"plot")));
        assert!(worst < Duration::from_millis(250), "a PING waited {worst:?} during the invalidation");
        Ok(())
    }
}
