//! Cache behaviour over time, on the in-memory backend with a virtual clock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime},
};

use redtail_cache::{Cache, CacheConfig, EntryOptions, Error, LocalTier, Result};
use redtail_core::{Backend, Cmd, Key};
use redtail_testkit::MemoryBackend;

async fn setup(config: CacheConfig) -> (MemoryBackend, Cache) {
    let redis = MemoryBackend::with_clock(redtail_testkit::Clock::manual(SystemTime::now())).auditing_script_keys();
    // One virtual clock for the backend's TTLs and the cache's freshness.
    let config = config.with_clock(redis.clock().clone().into());
    let cache = Cache::new(redis.clone(), config).await.unwrap_or_else(|e| panic!("{e}"));
    (redis, cache)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test]
async fn values_expire_after_their_ttl_and_jitter_only_lengthens_it() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default()).await;
    cache.set("a", &1u32, &EntryOptions::ttl(secs(60))).await?;
    cache.set("b", &2u32, &EntryOptions::ttl(secs(60)).jitter(0.5)).await?;
    redis.clock().advance(secs(59));
    assert_eq!(cache.get::<u32>("a").await, Some(1));
    assert_eq!(cache.get::<u32>("b").await, Some(2));
    redis.clock().advance(secs(2));
    assert_eq!(cache.get::<u32>("a").await, None);
    redis.clock().advance(secs(30));
    assert_eq!(cache.get::<u32>("b").await, None, "jitter is at most half the TTL");
    // Expired entries are gone from Redis too, not just hidden.
    assert_eq!(redis.call(Cmd::new("DBSIZE")).await?.as_int()?, 0);
    Ok(())
}

#[tokio::test]
async fn stale_values_are_served_while_refreshing_and_when_the_loader_fails() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default()).await;
    let options = EntryOptions::ttl(secs(60)).stale_for(secs(600));
    let v: u32 = cache.get_or_compute("k", &options, || async { Ok::<_, Error>(1) }).await?;
    assert_eq!(v, 1);
    redis.clock().advance(secs(61));
    assert_eq!(cache.get::<u32>("k").await, None, "get serves only fresh values");
    // Fail-safe: the loader fails, the stale value is served.
    let v: u32 =
        cache.get_or_compute("k", &options, || async { Err::<u32, _>(std::io::Error::other("db down")) }).await?;
    assert_eq!(v, 1);
    // A working loader refreshes it.
    let v: u32 = cache.get_or_compute("k", &options, || async { Ok::<_, Error>(2) }).await?;
    assert_eq!(v, 2);
    // Past the stale window, a failing loader is an error naming the key.
    redis.clock().advance(secs(700));
    let out: Result<u32> =
        cache.get_or_compute("k", &options, || async { Err(std::io::Error::other("db down")) }).await;
    assert!(matches!(&out, Err(Error::Loader { key, .. }) if key == "k"), "{out:?}");
    let stats = cache.stats();
    assert_eq!((stats.stale_served, stats.loader_errors, stats.loader_runs), (1, 2, 4));
    Ok(())
}

#[tokio::test]
async fn concurrent_callers_share_one_load_and_others_get_stale_while_it_runs() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default()).await;
    let runs = Arc::new(AtomicU32::new(0));
    let options = EntryOptions::ttl(secs(60)).stale_for(secs(60));
    let load = |value: u32| {
        let runs = Arc::clone(&runs);
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, Error>(value)
        }
    };
    let calls = (0..200).map(|_| cache.get_or_compute("hot", &options, load(7)));
    let values: Vec<u32> = futures_join(calls).await?;
    assert!(values.iter().all(|v| *v == 7));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one load for 200 concurrent misses");
    // Stale: one caller refreshes, the others are served the old value at once.
    redis.clock().advance(secs(61));
    let calls = (0..200).map(|_| cache.get_or_compute("hot", &options, load(8)));
    let values: Vec<u32> = futures_join(calls).await?;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(values.iter().filter(|v| **v == 8).count(), 1, "only the refreshing caller waits for the new value");
    assert_eq!(values.iter().filter(|v| **v == 7).count(), 199);
    assert_eq!(cache.get::<u32>("hot").await, Some(8));
    Ok(())
}

async fn futures_join<T>(calls: impl Iterator<Item = impl Future<Output = Result<T>>>) -> Result<Vec<T>> {
    join_all(calls.collect()).await.into_iter().collect()
}

/// Polls every future until all are done, without a runtime-specific join.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test]
async fn early_refresh_reloads_before_expiry_for_slow_loaders() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default()).await;
    let options = EntryOptions::ttl(secs(60)).early_refresh(1.0);
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, Error>(1u32)
    };
    cache.get_or_compute("x", &options, slow).await?;
    // With a 200 ms load, XFetch refreshes with probability e^(-remaining/200ms); at 10 ms
    // before expiry about 95% of reads do. Over 50 reads, at least one refresh is certain in
    // practice, and none would happen without early refresh.
    redis.clock().advance(Duration::from_millis(59_990));
    let runs_before = cache.stats().loader_runs;
    for _ in 0..50 {
        let _: u32 = cache.get_or_compute("x", &options, || async { Ok::<_, Error>(2u32) }).await?;
    }
    assert!(cache.stats().loader_runs > runs_before);
    // Long before expiry, practically never: e^(-59.9 s / 0.2 s).
    let (_, cache2) = setup(CacheConfig::default()).await;
    cache2.get_or_compute("x", &options, slow).await?;
    for _ in 0..50 {
        let _: u32 = cache2.get_or_compute("x", &options, || async { Ok::<_, Error>(2u32) }).await?;
    }
    assert_eq!(cache2.stats().loader_runs, 1);
    Ok(())
}

#[tokio::test]
async fn tag_invalidation_is_one_write_and_a_lost_tag_record_invalidates() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default()).await;
    let tagged = EntryOptions::ttl(secs(300)).tag("plex").tag("ep1");
    cache.set("a", &"A", &tagged).await?;
    cache.set("b", &"B", &EntryOptions::ttl(secs(300)).tag("plex")).await?;
    cache.set("c", &"C", &EntryOptions::ttl(secs(300)).tag("other")).await?;
    let before = redis.call(Cmd::new("DBSIZE")).await?.as_int()?;
    cache.invalidate_tag("plex").await?;
    assert_eq!(redis.call(Cmd::new("DBSIZE")).await?.as_int()?, before, "invalidation adds no keys");
    assert_eq!(cache.get::<String>("a").await, None);
    assert_eq!(cache.get::<String>("b").await, None);
    assert_eq!(cache.get::<String>("c").await.as_deref(), Some("C"));
    // New writes after the invalidation are valid.
    cache.set("a", &"A2", &tagged).await?;
    assert_eq!(cache.get::<String>("a").await.as_deref(), Some("A2"));
    // Losing the tag record (eviction, FLUSH of that key) invalidates its entries.
    redis.call(Cmd::new("DEL").key(&Key::from_raw("rt:c:t:ep1"))).await?;
    assert_eq!(cache.get::<String>("a").await, None);
    // Tag records expire one to two steps of half the entries' life after the last entry that
    // uses them (so that writes within a step leave them unchanged): no orphans.
    redis.clock().advance(secs(301));
    assert_eq!(redis.call(Cmd::new("EXISTS").key(&Key::from_raw("rt:c:e:a"))).await?.as_int()?, 0);
    redis.clock().advance(secs(300));
    assert_eq!(redis.call(Cmd::new("DBSIZE")).await?.as_int()?, 0);
    Ok(())
}

#[tokio::test]
async fn a_load_that_straddles_an_invalidation_is_never_served_after_it() -> Result<()> {
    let (_redis, cache) = setup(CacheConfig::default()).await;
    let options = EntryOptions::ttl(secs(300)).tag("t");
    let (started, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let load = {
        let (started, release) = (Arc::clone(&started), Arc::clone(&release));
        let cache = cache.clone();
        let options = options.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("k", &options, || async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, Error>("old".to_owned())
                })
                .await
        })
    };
    started.notified().await;
    cache.invalidate_tag("t").await?;
    release.notify_one();
    let served = load.await.unwrap_or_else(|e| panic!("{e}"))?;
    assert_eq!(served, "old", "the caller that loaded gets its value");
    assert_eq!(cache.get::<String>("k").await, None, "but it was stored already invalid");
    Ok(())
}

#[tokio::test]
async fn bad_values_and_bad_input_get_clear_answers() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default().with_max_value_bytes(100)).await;
    // Oversized values are refused, naming the limit.
    let out = cache.set("big", &"x".repeat(200), &EntryOptions::default()).await;
    assert!(matches!(out, Err(Error::TooLarge { size: 202, limit: 100, .. })), "{out:?}");
    // A value not written by the cache is a miss, deleted and counted.
    let raw = Key::from_raw("rt:c:e:foreign");
    redis.call(Cmd::new("SET").key(&raw).arg("not an envelope")).await?;
    assert_eq!(cache.get::<String>("foreign").await, None);
    assert_eq!(redis.call(Cmd::new("EXISTS").key(&raw)).await?.as_int()?, 0);
    // A value of the wrong type is a miss, deleted and counted.
    cache.set("n", &"text", &EntryOptions::default()).await?;
    assert_eq!(cache.get::<u32>("n").await, None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(cache.get::<String>("n").await, None, "deleted after failing to decode");
    assert_eq!(cache.stats().decode_errors, 2);
    // Options that cannot be stored.
    for bad in [
        EntryOptions::ttl(Duration::ZERO),
        EntryOptions::default().jitter(2.0),
        EntryOptions::default().early_refresh(f64::NAN),
        EntryOptions::default().tag(""),
        EntryOptions::default().tag("x".repeat(256)),
    ] {
        assert!(matches!(cache.set("k", &1, &bad).await, Err(Error::InvalidInput(_))), "{bad:?}");
    }
    // Keys of any bytes are fine: they are escaped.
    cache.set("a:b*{c}\u{0}é", &1u8, &EntryOptions::default()).await?;
    assert_eq!(cache.get::<u8>("a:b*{c}\u{0}é").await, Some(1));
    Ok(())
}

#[tokio::test]
async fn pattern_invalidation_removes_only_matching_keys() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default()).await;
    for i in 0..1200 {
        cache.set(&format!("user:{i}:profile"), &i, &EntryOptions::default()).await?;
        cache.set(&format!("user:{i}:avatar"), &i, &EntryOptions::default()).await?;
    }
    assert_eq!(cache.invalidate_pattern("user:*:profile").await?, 1200);
    assert_eq!(cache.get::<u32>("user:7:profile").await, None);
    assert_eq!(cache.get::<u32>("user:7:avatar").await, Some(7));
    assert_eq!(redis.call(Cmd::new("DBSIZE")).await?.as_int()?, 1200);
    Ok(())
}

#[tokio::test]
async fn local_tiers_follow_other_instances_and_are_cleared_on_a_gap() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let config = CacheConfig::default().with_local_tier(LocalTier::new(1000, secs(30)));
    let a = Cache::new(redis.clone(), config.clone()).await?;
    let b = Cache::new(redis.clone(), config).await?;
    let options = EntryOptions::default().tag("t");
    a.set("k", &1u32, &options).await?;
    assert_eq!(b.get::<u32>("k").await, Some(1));
    // Kept in B's tier once B's reads no longer overlap the write's message (one that does may
    // have read the value before the write, so it is not kept).
    let hit = eventually(|| async { b.get::<u32>("k").await == Some(1) && b.stats().local_hits >= 1 }).await;
    assert!(hit, "served from B's tier");
    a.set("k", &2u32, &options).await?;
    assert!(eventually(|| async { b.get::<u32>("k").await == Some(2) }).await, "update seen by the other instance");
    a.invalidate_tag("t").await?;
    assert!(eventually(|| async { b.get::<u32>("k").await.is_none() }).await, "tag invalidation seen");
    // A gap (connection lost) empties the local tier, even with no message.
    a.set("k", &3u32, &options).await?;
    assert_eq!(b.get::<u32>("k").await, Some(3));
    let hits = b.stats().local_hits;
    redis.interrupt_subscriptions();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.get::<u32>("k").await, Some(3));
    assert_eq!(b.stats().local_hits, hits, "served from Redis after the gap");
    Ok(())
}

/// Whether `check` holds within 100 ms.
async fn eventually<F: Future<Output = bool>>(check: impl Fn() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn a_soft_timeout_serves_stale_while_the_load_finishes_in_the_background() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default()).await;
    let options =
        EntryOptions::ttl(secs(60)).stale_for(secs(600)).soft_timeout(Duration::from_millis(50)).hard_timeout(secs(10));
    let slow = |value: u32| {
        move || async move {
            tokio::time::sleep(secs(2)).await;
            Ok::<_, Error>(value)
        }
    };
    // Nothing stale yet: the first caller waits for the whole load.
    let started = tokio::time::Instant::now();
    assert_eq!(cache.get_or_spawn("k", &options, slow(1)).await?, 1);
    assert!(started.elapsed() >= secs(2));

    // Stale: served at the soft timeout, while the load goes on.
    redis.clock().advance(secs(61));
    let started = tokio::time::Instant::now();
    assert_eq!(cache.get_or_spawn("k", &options, slow(2)).await?, 1, "the stale value at the soft timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(50) && waited < secs(1), "served after {waited:?}");
    assert_eq!(cache.get::<u32>("k").await, None, "the load has not finished yet");
    // The load finished in the background: the next read sees its value.
    tokio::time::sleep(secs(3)).await;
    assert_eq!(cache.get::<u32>("k").await, Some(2));
    assert_eq!(cache.stats().loader_runs, 2);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_hard_timeout_stops_the_load_with_a_clear_error_or_the_stale_value() -> Result<()> {
    let (redis, cache) = setup(CacheConfig::default()).await;
    let options = EntryOptions::ttl(secs(60)).stale_for(secs(600)).hard_timeout(Duration::from_millis(100));
    let slow = || async {
        tokio::time::sleep(secs(2)).await;
        Ok::<_, Error>(9u32)
    };
    let out: Result<u32> = cache.get_or_compute("k", &options, slow).await;
    assert!(
        matches!(&out, Err(Error::LoadTimeout { key, after }) if key == "k" && *after == Duration::from_millis(100)),
        "{out:?}"
    );
    assert!(out.err().is_some_and(|e| e.to_string().contains("hard timeout")));
    // With a stale value, the timed-out load serves it (fail-safe).
    let v: u32 = cache.get_or_compute("k", &options, || async { Ok::<_, Error>(1) }).await?;
    assert_eq!(v, 1);
    redis.clock().advance(secs(61));
    assert_eq!(cache.get_or_compute("k", &options, slow).await?, 1);
    assert_eq!(cache.get_or_spawn("k", &options, slow).await?, 1);

    // Settings that cannot work are refused, naming the setting.
    let refused = [
        (EntryOptions::default().soft_timeout(Duration::ZERO), "soft_timeout"),
        (EntryOptions::default().hard_timeout(Duration::ZERO), "hard_timeout"),
        (EntryOptions::default().hard_timeout(Duration::MAX), "hard_timeout"),
        (EntryOptions::default().soft_timeout(secs(2)).hard_timeout(secs(1)), "shorter than hard_timeout"),
    ];
    for (options, named) in refused {
        let out: Result<u32> = cache.get_or_spawn("x", &options, || async { Ok::<_, Error>(1) }).await;
        assert!(matches!(&out, Err(Error::InvalidInput(m)) if m.contains(named)), "{options:?}: {out:?}");
    }
    // A borrowed loader cannot outlive its call: a soft timeout there is an error, not ignored.
    let soft = EntryOptions::default().soft_timeout(secs(1));
    let out: Result<u32> = cache.get_or_compute("x", &soft, || async { Ok::<_, Error>(1) }).await;
    assert!(matches!(&out, Err(Error::InvalidInput(m)) if m.contains("get_or_spawn")), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_refresh_runs_once_across_four_instances_and_no_caller_waits() -> Result<()> {
    let (redis, first) = setup(CacheConfig::default()).await;
    // Four instances on one Redis, as four processes would be.
    let config = CacheConfig::default().with_clock(redis.clock().clone().into());
    let mut caches = vec![first];
    for _ in 0..3 {
        caches.push(Cache::new(redis.clone(), config.clone()).await?);
    }
    let runs = Arc::new(AtomicU32::new(0));
    let options = EntryOptions::ttl(secs(60)).eager_refresh(0.5);
    let loader = |value: u32| {
        let runs = Arc::clone(&runs);
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Error>(value)
        }
    };
    assert_eq!(caches[0].get_or_spawn("k", &options, loader(1)).await?, 1);
    // Before half the TTL: nothing to refresh.
    redis.clock().advance(secs(29));
    for cache in &caches {
        assert_eq!(cache.get_or_spawn("k", &options, loader(2)).await?, 1);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Past half the TTL: 100 callers on four instances get the value they had, at once; one
    // refresh runs in the background.
    redis.clock().advance(secs(2));
    let calls = caches.iter().flat_map(|cache| (0..25).map(|_| cache.get_or_spawn("k", &options, loader(2))));
    let values = futures_join(calls).await?;
    assert!(values.iter().all(|v| *v == 1), "a caller waited for the refresh: {values:?}");
    let deadline = std::time::Instant::now() + secs(5);
    while caches[3].get::<u32>("k").await != Some(2) {
        assert!(std::time::Instant::now() < deadline, "the background refresh never stored its value");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one refresh across four instances");

    // A fraction outside (0, 1) is refused, naming the setting.
    for fraction in [0.0, 1.0, f64::NAN, -1.0] {
        let out: Result<u32> = caches[0]
            .get_or_spawn("x", &EntryOptions::default().eager_refresh(fraction), || async { Ok::<_, Error>(1) })
            .await;
        assert!(matches!(&out, Err(Error::InvalidInput(m)) if m.contains("eager_refresh")), "{fraction}: {out:?}");
    }
    Ok(())
}

#[tokio::test]
async fn bulk_reads_and_writes_keep_order_tags_and_per_entry_errors() -> Result<()> {
    let (_redis, cache) = setup(CacheConfig::default()).await;
    let options = EntryOptions::ttl(secs(60)).tag("bulk");
    let results = cache.set_many(&[("a", 1u32), ("b", 2), ("c", 3)], &options).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(cache.get_many::<u32>(&["c", "missing", "a", "b"]).await, vec![Some(3), None, Some(1), Some(2)]);
    // Written with their tags: one invalidation ends them all.
    cache.invalidate_tag("bulk").await?;
    assert_eq!(cache.get_many::<u32>(&["a", "b", "c"]).await, vec![None, None, None]);
    // Bad options fail every entry; nothing is written.
    let bad = EntryOptions::ttl(Duration::ZERO);
    let results = cache.set_many(&[("d", 4u32)], &bad).await;
    assert!(matches!(results.as_slice(), [Err(Error::InvalidInput(_))]), "{results:?}");
    assert_eq!(cache.get::<u32>("d").await, None);
    assert!(cache.get_many::<u32>(&[]).await.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_tier_by_bytes_keeps_what_fits_and_idle_entries_leave() -> Result<()> {
    let tier = LocalTier::by_bytes(2_000, secs(60)).with_time_to_idle(Duration::from_millis(300));
    let (_redis, cache) = setup(CacheConfig::default().with_local_tier(tier)).await;
    let big = "x".repeat(500);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache.set(key, &big, &EntryOptions::ttl(secs(60))).await?;
    }
    // Reads fill the tier; its housekeeping then holds it to 2,000 bytes: three or so entries
    // of about 520 bytes, not twenty.
    let mut kept = u64::MAX;
    for _ in 0..20 {
        let before = cache.stats().local_hits;
        for key in &keys {
            assert_eq!(cache.get::<String>(key).await.as_deref(), Some(big.as_str()));
        }
        kept = cache.stats().local_hits - before;
        if kept <= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(kept <= 4, "{kept} of 20 entries of ~520 B served from a 2,000 B tier");

    // An entry not read for its time to idle leaves the tier.
    cache.set("small", &1u32, &EntryOptions::ttl(secs(60))).await?;
    assert_eq!(cache.get::<u32>("small").await, Some(1));
    let before = cache.stats().local_hits;
    assert_eq!(cache.get::<u32>("small").await, Some(1));
    assert_eq!(cache.stats().local_hits, before + 1, "read again at once: from the tier");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = cache.stats().local_hits;
    assert_eq!(cache.get::<u32>("small").await, Some(1));
    assert_eq!(cache.stats().local_hits, before, "idle past its time: read from Redis");
    // A zero time to idle is refused, naming the setting.
    let zero = CacheConfig::default().with_local_tier(LocalTier::new(10, secs(1)).with_time_to_idle(Duration::ZERO));
    let refused = Cache::new(MemoryBackend::new().auditing_script_keys(), zero).await;
    assert!(matches!(&refused, Err(Error::InvalidInput(m)) if m.contains("time to idle")), "{:?}", refused.err());
    Ok(())
}
