//! Rate limits on standalone, cluster, sentinel and the in-memory backend.

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use media_api::presets;
use redtail_core::Cmd;
use redtail_ratelimit::{Algorithm, Decision, OnFailure, Policy, RateLimiter};
use redtail_tests::{Ctx, Deployment, Env, Target, TestResult, for_each_backend};

for_each_backend!(
    a_thousand_concurrent_checks_admit_exactly_the_limit,
    several_policies_are_all_or_nothing_on_one_slot,
    client_clocks_skewed_by_ten_seconds_never_loosen_a_limit,
    a_sliding_log_refund_takes_back_the_newest_entry_within_one_millisecond,
    settings_redis_cannot_keep_with_a_ttl_are_refused_before_anything_is_sent,
    penalties_and_refunds_are_bounded_by_the_policy,
    a_sliding_window_counter_is_exact_in_a_fresh_window_and_within_its_bound_across_an_edge,
    a_block_duration_refuses_from_the_first_refusal_until_it_ends,
    policies_named_at_run_time_count_like_constant_ones
);

fn limiter(env: &Env) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(env.backend.clone(), env.ns.child("rl")))
}

/// Exact on every algorithm, and for the counters on both paths (plain commands, and the script
/// with `with_scripted_counters`), which differ in what a refusal costs.
async fn a_thousand_concurrent_checks_admit_exactly_the_limit(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let plain = limiter(&env);
    let scripted = Arc::new(RateLimiter::new(env.backend.clone(), env.ns.child("rl-s")).with_scripted_counters(true));
    for (path, limiter) in [("plain", plain), ("scripted", scripted)] {
        for algorithm in [Algorithm::Gcra, Algorithm::SlidingLog, Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let policy = Policy::new("api", 100, Duration::from_secs(600)).with_algorithm(algorithm);
            let subject = format!("user-{algorithm:?}");
            let tasks: Vec<_> = (0..1_000)
                .map(|_| {
                    let (limiter, policy, subject) = (Arc::clone(&limiter), policy.clone(), subject.clone());
                    tokio::spawn(async move { limiter.check(&subject, &[policy]).await })
                })
                .collect();
            let mut allowed = 0;
            for task in tasks {
                allowed += usize::from(task.await??.is_allowed());
            }
            assert_eq!(allowed, 100, "{path} {algorithm:?}");
            if algorithm == Algorithm::FixedWindow {
                // One unit refunded: the script charged the 900 refusals nothing, so a check fits
                // again; plain commands counted them, so the window stays full.
                limiter.refund(&subject, &policy, 1).await?;
                let again = limiter.check(&subject, std::slice::from_ref(&policy)).await?.is_allowed();
                assert_eq!(again, path == "scripted", "{path}: a check after one refund");
                // A reset lets the subject in at once, in this process too (whose remembered
                // refusal lasts until the window ends).
                limiter.reset(&subject, Some(&policy)).await?;
                assert!(
                    limiter.check(&subject, std::slice::from_ref(&policy)).await?.is_allowed(),
                    "{path}: after a reset"
                );
            }
        }
    }
    Ok(())
}

/// Limiters on client clocks 10 s ahead and 10 s behind take turns on one subject: together
/// they never admit more than the limit, and stored time never goes backwards. A limiter on the
/// server's clock (the default) reads no client clock at all and admits exactly the limit.
async fn client_clocks_skewed_by_ten_seconds_never_loosen_a_limit(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let skew = Duration::from_secs(10);
    let ahead = RateLimiter::new(env.backend.clone(), env.ns.child("rl"))
        .with_client_clock(redtail_ratelimit::Clock::from_fn(move || SystemTime::now() + skew))
        .with_refusal_cache(false);
    let behind = RateLimiter::new(env.backend.clone(), env.ns.child("rl"))
        .with_client_clock(redtail_ratelimit::Clock::from_fn(move || SystemTime::now() - skew))
        .with_refusal_cache(false);
    let server = RateLimiter::new(env.backend.clone(), env.ns.child("rl")).with_refusal_cache(false);
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingLog] {
        let policy = [Policy::new("skew", 5, Duration::from_secs(60)).with_algorithm(algorithm)];
        let subject = format!("skewed-{algorithm:?}");
        let code = if algorithm == Algorithm::Gcra { "g" } else { "s" };
        let key = env.ns.child("rl").tagged(&subject).key(["skew", code]);
        let mut admitted = 0;
        let mut stored = 0.0;
        for i in 0..20 {
            let limiter = if i % 2 == 0 { &ahead } else { &behind };
            admitted += usize::from(limiter.check(&subject, &policy).await?.is_allowed());
            // GCRA stores its theoretical arrival time; the sliding log its newest entry.
            let now = match algorithm {
                Algorithm::Gcra => env.backend.call(Cmd::new("GET").key(&key)).await?.into_string()?.parse::<f64>()?,
                _ => {
                    let newest =
                        env.backend.call(Cmd::new("ZRANGE").key(&key).arg(-1).arg(-1).arg("WITHSCORES")).await?;
                    match newest.into_array()?.pop() {
                        Some(score) => score.into_string()?.parse::<f64>()?,
                        None => 0.0,
                    }
                }
            };
            assert!(now >= stored, "{algorithm:?}: stored time went back from {stored} to {now}");
            stored = now;
        }
        assert!((1..=5).contains(&admitted), "{algorithm:?}: {admitted} admitted of a limit of 5");
        let fresh = format!("server-{algorithm:?}");
        let mut on_server = 0;
        for _ in 0..20 {
            on_server += usize::from(server.check(&fresh, &policy).await?.is_allowed());
        }
        assert_eq!(on_server, 5, "{algorithm:?} on the server's clock");
    }
    Ok(())
}

/// 10 checks admitted, 1 refunded, then 25 more, all in one millisecond (a client clock that
/// stands still): exactly 21 more are admitted, so the window never holds more than its 30.
/// (The refund used to remove the greatest member, `…:9`, rather than the newest, `…:10`, and the
/// next charge then re-added an entry that was still there, so the count stopped growing.)
async fn a_sliding_log_refund_takes_back_the_newest_entry_within_one_millisecond(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let instant = SystemTime::now();
    let limiter = RateLimiter::new(env.backend.clone(), env.ns.child("rl"))
        .with_client_clock(redtail_ratelimit::Clock::from_fn(move || instant))
        .with_refusal_cache(false);
    let policy = Policy::new("log", 30, Duration::from_secs(60)).with_algorithm(Algorithm::SlidingLog);
    let policies = std::slice::from_ref(&policy);
    let mut first = 0;
    for _ in 0..10 {
        first += usize::from(limiter.check("u", policies).await?.is_allowed());
    }
    assert_eq!(first, 10);
    limiter.refund("u", &policy, 1).await?;
    let mut then = 0;
    for _ in 0..25 {
        then += usize::from(limiter.check("u", policies).await?.is_allowed());
    }
    assert_eq!(then, 21, "9 entries after the refund, so 21 more fit a limit of 30");
    let key = env.ns.child("rl").tagged("u").key(["log", "s"]);
    assert_eq!(env.backend.call(Cmd::new("ZCARD").key(&key)).await?.as_int()?, 30);
    // A penalty and a refund of several at once keep the log exact too.
    limiter.refund("u", &policy, 5).await?;
    limiter.penalize("u", &policy, 2).await?;
    assert_eq!(env.backend.call(Cmd::new("ZCARD").key(&key)).await?.as_int()?, 27);
    Ok(())
}

/// Periods, limits and blocks Redis could not keep with a TTL (`Duration::MAX`, say) fail with an
/// error naming the setting, and nothing is written: no key is left without a TTL.
async fn settings_redis_cannot_keep_with_a_ttl_are_refused_before_anything_is_sent(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = limiter(&env);
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingLog, Algorithm::FixedWindow] {
        let forever = Policy::new("forever", 5, Duration::MAX).with_algorithm(algorithm);
        let error = limiter.check("u", std::slice::from_ref(&forever)).await.err().ok_or("a Duration::MAX period")?;
        assert!(error.to_string().contains("period"), "{algorithm:?}: {error}");
        assert!(limiter.penalize("u", &forever, 1).await.is_err(), "{algorithm:?}");
        let huge = Policy::new("huge", u64::MAX, Duration::from_secs(60)).with_algorithm(algorithm);
        let error = limiter.check("u", std::slice::from_ref(&huge)).await.err().ok_or("a limit of u64::MAX")?;
        assert!(error.to_string().contains("limit"), "{algorithm:?}: {error}");
    }
    // A GCRA burst whose state would outlive ten years.
    let long = Policy::new("long", 1, Duration::from_secs(365 * 24 * 3600)).with_burst(11);
    assert!(limiter.check("u", std::slice::from_ref(&long)).await.is_err());
    // A sliding log keeps one entry per request: its limit is bounded.
    let big_log = Policy::new("biglog", 1_000_000, Duration::from_secs(60)).with_algorithm(Algorithm::SlidingLog);
    let error = limiter.check("u", std::slice::from_ref(&big_log)).await.err().ok_or("a sliding log of 10^6")?;
    assert!(error.to_string().contains("sliding log"), "{error}");
    // Block durations of a policy: Duration::MAX and zero are refused, on the script and the
    // script-free path alike, and so is a sliding window whose counters would outlive ten years.
    for algorithm in [Algorithm::Gcra, Algorithm::FixedWindow] {
        for block in [Duration::MAX, Duration::ZERO] {
            let policy =
                Policy::new("blocked", 5, Duration::from_secs(60)).with_algorithm(algorithm).with_block_for(block);
            let error =
                limiter.check("u", &[policy]).await.err().ok_or_else(|| format!("a block duration of {block:?}"))?;
            assert!(error.to_string().contains("block_for"), "{algorithm:?} {block:?}: {error}");
        }
    }
    let long_window = Policy::new("sw", 5, Policy::MAX_PERIOD).with_algorithm(Algorithm::SlidingWindow);
    let error = limiter.check("u", &[long_window]).await.err().ok_or("a ten-year sliding window")?;
    assert!(error.to_string().contains("sliding window"), "{error}");
    let error = limiter.block("u", Duration::MAX).await.err().ok_or("a block of Duration::MAX")?;
    assert!(error.to_string().contains("block"), "{error}");
    // Nothing at all was written under the limiter's namespace.
    let mut cursor = Some(redtail_core::Cursor::START);
    while let Some(at) = cursor {
        let page = env.backend.scan(at, &env.ns.child("rl").pattern(Vec::<&str>::new()), 1_000).await?;
        assert!(page.keys.is_empty(), "written: {:?}", page.keys);
        cursor = page.next;
    }
    // The longest period allowed works and its key (the only one) has a TTL.
    let decade = Policy::new("decade", 5, Policy::MAX_PERIOD).with_algorithm(Algorithm::FixedWindow);
    assert!(limiter.check("u", std::slice::from_ref(&decade)).await?.is_allowed());
    let mut keys = Vec::new();
    let mut cursor = Some(redtail_core::Cursor::START);
    while let Some(at) = cursor {
        let page = env.backend.scan(at, &env.ns.child("rl").pattern(Vec::<&str>::new()), 1_000).await?;
        keys.extend(page.keys);
        cursor = page.next;
    }
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(env.backend.call(Cmd::new("PTTL").key(&keys[0])).await?.as_int()? > 0);
    Ok(())
}

/// `penalize` and `refund` take at most the policy's capacity: a cost of `u64::MAX` on a sliding
/// log is refused at once (it used to run one `ZADD` per unit inside the script, and the server
/// answered `BUSY` to everyone until it was killed).
async fn penalties_and_refunds_are_bounded_by_the_policy(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = limiter(&env);
    let log = Policy::new("log", 5, Duration::from_secs(60)).with_algorithm(Algorithm::SlidingLog);
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingLog, Algorithm::FixedWindow] {
        let policy = log.clone().with_algorithm(algorithm);
        for result in [limiter.penalize("u", &policy, u64::MAX).await, limiter.refund("u", &policy, u64::MAX).await] {
            let error = result.err().ok_or("a cost of u64::MAX")?;
            assert!(matches!(error, redtail_ratelimit::Error::CannotFit { capacity: 5, .. }), "{algorithm:?}: {error}");
        }
    }
    // The server is still answering, and a penalty of the capacity fills the window.
    limiter.penalize("u", &log, 5).await?;
    assert!(!limiter.check("u", std::slice::from_ref(&log)).await?.is_allowed());
    limiter.refund("u", &log, 0).await?;
    Ok(())
}

async fn several_policies_are_all_or_nothing_on_one_slot(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = limiter(&env);
    let policies = [presets::API, presets::YOUTUBE_DOWNLOAD, presets::MEDIA_REQUEST];
    for _ in 0..5 {
        assert!(limiter.check("u1", &policies).await?.is_allowed());
    }
    let refused = limiter.check("u1", &policies).await?;
    assert!(matches!(&refused, Decision::Limited { violated, .. } if violated == &vec!["youtube"]), "{refused:?}");
    // The refused request was charged to neither of the others.
    let Decision::Allowed { policies: states, .. } =
        limiter.peek("u1", &[presets::API, presets::MEDIA_REQUEST], 1).await?
    else {
        panic!("api and media requests must still allow");
    };
    assert_eq!((states[0].remaining, states[1].remaining), (94, 14));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_neither_fails_nor_counts_twice() -> TestResult {
    let ctx = Ctx::owned(Deployment::Standalone, |c| c).await;
    let limiter = RateLimiter::new(ctx.backend.clone(), ctx.ns.child("rl"));
    let policy = Policy::new("p", 10, Duration::from_secs(600)).with_algorithm(Algorithm::FixedWindow);
    for i in 0..10 {
        if i == 5 {
            ctx.servers.script_flush()?;
        }
        assert!(limiter.check("u", std::slice::from_ref(&policy)).await?.is_allowed(), "request {i}");
    }
    assert!(!limiter.check("u", &[policy]).await?.is_allowed(), "exactly 10 were counted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_mode_does_what_it_says_while_redis_is_down() -> TestResult {
    let ctx = Ctx::owned(Deployment::Standalone, |c| c.with_command_timeout(Duration::from_millis(300))).await;
    let limiter = RateLimiter::new(ctx.backend.clone(), ctx.ns.child("rl"));
    let open = Policy::new("open", 1, Duration::from_secs(60)).with_on_failure(OnFailure::Open);
    let closed = Policy::new("closed", 100, Duration::from_secs(60));
    let local = Policy::new("local", 10, Duration::from_secs(60)).with_on_failure(OnFailure::Local { instances: 2 });
    assert!(limiter.check("u", std::slice::from_ref(&open)).await?.is_allowed());
    let port = ctx.servers.kill_primary()?;

    let decision = limiter.check("u", std::slice::from_ref(&open)).await?;
    assert!(matches!(decision, Decision::Allowed { degraded: true, .. }), "{decision:?}");
    let decision = limiter.check("u", std::slice::from_ref(&closed)).await?;
    assert!(matches!(decision, Decision::Limited { degraded: true, .. }), "{decision:?}");
    // 10 a minute shared by 2 instances: this one admits 5.
    let mut admitted = 0;
    for _ in 0..8 {
        admitted += usize::from(limiter.check("v", std::slice::from_ref(&local)).await?.is_allowed());
    }
    assert_eq!(admitted, 5);
    assert_eq!(limiter.stats().degraded, 10);

    ctx.servers.restart_killed(port)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Decision::Allowed { degraded: false, .. } = limiter.check("w", std::slice::from_ref(&closed)).await? {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "limits did not come back from Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Redis paused (it holds the connection and answers nothing) while 1,000 checks a second
/// arrive for 2 s: every check is decided by its policy's failure mode within its command
/// timeout (300 ms) and a margin, however long the outage lasts; none queues behind the batches
/// that wait out their timeouts. (Checks used to wait up to 2.7 s with a 500 ms timeout, longer
/// as the outage went on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_decide_within_their_timeout_while_redis_is_paused() -> TestResult {
    let timeout = Duration::from_millis(300);
    let ctx = Ctx::owned(Deployment::Standalone, |c| c.with_command_timeout(timeout)).await;
    let limiter = Arc::new(RateLimiter::new(ctx.backend.clone(), ctx.ns.child("rl")).with_refusal_cache(false));
    // A script (GCRA) and the script-free path (a fixed window), every other check.
    let gcra = Policy::new("api", 100, Duration::from_secs(60)).with_on_failure(OnFailure::Open);
    let fixed = gcra.clone().with_algorithm(Algorithm::FixedWindow);
    for policy in [&gcra, &fixed] {
        assert!(limiter.check("warm", std::slice::from_ref(policy)).await?.is_allowed());
    }
    ctx.servers.pause()?;
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..2_000 {
        tick.tick().await;
        let (limiter, policy) = (Arc::clone(&limiter), if i % 2 == 0 { gcra.clone() } else { fixed.clone() });
        tasks.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let decision = limiter.check(&format!("u{}", i % 50), &[policy]).await;
            (started.elapsed(), decision)
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (took, decision) = task.await?;
        assert!(matches!(decision?, Decision::Allowed { degraded: true, .. }), "decided by the failure mode");
        slowest = slowest.max(took);
    }
    ctx.servers.resume()?;
    eprintln!("slowest check while Redis was paused: {slowest:?} (timeout {timeout:?})");
    // The bound is the timeout; the margin is for a loaded test machine, far below the seconds
    // the queue used to add.
    assert!(slowest < timeout * 2, "the slowest check took {slowest:?} with a {timeout:?} timeout");
    Ok(())
}

/// A Redis out of memory with `noeviction` refuses the limiter's writes (`OOM`): each policy
/// then decides by its failure mode, as when Redis is unreachable, and counts it as degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_out_of_memory_degrades_each_policy_by_its_failure_mode() -> TestResult {
    let ctx = Ctx::owned(Deployment::Standalone, |c| c).await;
    let limiter = RateLimiter::new(ctx.backend.clone(), ctx.ns.child("rl"));
    let closed = Policy::new("closed", 100, Duration::from_secs(60));
    let local = Policy::new("local", 4, Duration::from_secs(60)).with_on_failure(OnFailure::Local { instances: 1 });
    assert!(limiter.check("u", std::slice::from_ref(&closed)).await?.is_allowed());
    let port = ctx.servers.data_ports()[0];
    ctx.servers.admin(port, &["CONFIG", "SET", "maxmemory-policy", "noeviction"])?;
    ctx.servers.admin(port, &["CONFIG", "SET", "maxmemory", "1"])?;

    let decision = limiter.check("u", std::slice::from_ref(&closed)).await?;
    assert!(matches!(decision, Decision::Limited { degraded: true, .. }), "{decision:?}");
    // The script-free path too: its INCRBY is refused while queued, and the transaction with it.
    let fixed = closed.clone().with_algorithm(Algorithm::FixedWindow);
    let decision = limiter.check("u", std::slice::from_ref(&fixed)).await?;
    assert!(matches!(decision, Decision::Limited { degraded: true, .. }), "{decision:?}");
    let admitted = admitted_of(&limiter, &local, 6).await?;
    assert_eq!(admitted, 4, "the local fallback admits the limit, no more");
    assert_eq!(limiter.stats().degraded, 8);

    ctx.servers.admin(port, &["CONFIG", "SET", "maxmemory", "0"])?;
    let decision = limiter.check("u", std::slice::from_ref(&closed)).await?;
    assert!(matches!(decision, Decision::Allowed { degraded: false, .. }), "{decision:?}");
    Ok(())
}

async fn admitted_of(limiter: &RateLimiter, policy: &Policy, checks: usize) -> Result<usize, redtail_ratelimit::Error> {
    let mut admitted = 0;
    for _ in 0..checks {
        admitted += usize::from(limiter.check("v", std::slice::from_ref(policy)).await?.is_allowed());
    }
    Ok(admitted)
}

mod processes {
    use super::*;

    /// 1,000 checks against a limit of 100 a minute from 4 client processes at once admit
    /// exactly 100, by GCRA (a script) and by both counters (plain commands, without a script).
    /// The counters' windows are whole minutes of the clock, so a burst that crossed one would
    /// rightly admit up to twice the limit: each burst starts at least 10 s before a minute ends.
    async fn four_processes(kind: Deployment) -> TestResult {
        let ctx = Ctx::new(kind).await;
        for algorithm in ["gcra", "fixed_window", "sliding_window"] {
            let mut start_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() + 1500;
            if start_at % 60_000 > 50_000 {
                start_at = start_at - start_at % 60_000 + 60_500;
            }
            // All four run at once: spawned first, then waited for.
            let children = (0..4)
                .map(|_| {
                    Command::new(env!("CARGO_BIN_EXE_ratelimit_burst"))
                        .args([ctx.servers.url(), ctx.ns.prefix(), algorithm, "250", &start_at.to_string(), algorithm])
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut allowed = 0;
            for child in children {
                let output = child.wait_with_output()?;
                assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
                allowed += String::from_utf8_lossy(&output.stdout).trim().parse::<u32>()?;
            }
            assert_eq!(allowed, 100, "{algorithm}");
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn four_processes_admit_exactly_the_limit_on_standalone() -> TestResult {
        four_processes(Deployment::Standalone).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn four_processes_admit_exactly_the_limit_on_a_cluster() -> TestResult {
        four_processes(Deployment::Cluster).await
    }
}

/// A clock the test moves by hand, for limiters and the in-memory backend alike.
fn manual_clock(start: SystemTime) -> (redtail_ratelimit::Clock, Arc<std::sync::atomic::AtomicU64>) {
    let offset = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let moved = Arc::clone(&offset);
    let clock = redtail_ratelimit::Clock::from_fn(move || {
        start + Duration::from_millis(moved.load(std::sync::atomic::Ordering::SeqCst))
    });
    (clock, offset)
}

/// With the previous window empty, a sliding-window counter admits exactly its limit, alone (no
/// script) and checked with another policy (the script); across an edge, the window ending a
/// fraction f into the next one holds at most limit x (1 + f), and the weighted previous window
/// lets in exactly what the estimate leaves.
async fn a_sliding_window_counter_is_exact_in_a_fresh_window_and_within_its_bound_across_an_edge(
    target: Target,
) -> TestResult {
    let env = Env::new(target).await;
    // Start on a window edge, so the test knows where the windows are.
    let period = Duration::from_secs(60);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let start = UNIX_EPOCH + Duration::from_millis(now_ms - now_ms % 60_000 + 60_000);
    let (clock, offset) = manual_clock(start);
    let limiter =
        RateLimiter::new(env.backend.clone(), env.ns.child("rl")).with_client_clock(clock).with_refusal_cache(false);
    let policy = Policy::new("sw", 10, period).with_algorithm(Algorithm::SlidingWindow);
    let loose = Policy::new("loose", 1_000, period);
    for (subject, policies) in [("alone", vec![policy.clone()]), ("with-another", vec![policy.clone(), loose])] {
        // The first burst at the very end of the first window: the case the bound is about.
        offset.store(59_000, std::sync::atomic::Ordering::SeqCst);
        let mut admitted = 0;
        for _ in 0..25 {
            admitted += usize::from(limiter.check(subject, &policies).await?.is_allowed());
        }
        assert_eq!(admitted, 10, "{subject}: a fresh window admits exactly the limit");
        // A quarter into the next window the previous one weighs 3/4: 10 - 8 (7.5 rounded up)
        // = 2 more; but the script-free path counted its 15 refused requests too (25 in all),
        // which then weigh 19: nothing more fits.
        offset.store(75_000, std::sync::atomic::Ordering::SeqCst);
        let mut later = 0;
        for _ in 0..25 {
            later += usize::from(limiter.check(subject, &policies).await?.is_allowed());
        }
        let expected = if subject == "alone" { 0 } else { 2 };
        assert_eq!(later, expected, "{subject}: a quarter into the next window");
        // The bound: the 60 s ending here (15 s into the window, so holding the first burst) hold
        // at most 10 x 1.25.
        assert!(admitted + later <= 12, "{subject}: {} in one period", admitted + later);
        // Two windows later everything has aged out.
        offset.store(180_000, std::sync::atomic::Ordering::SeqCst);
        assert!(limiter.check(subject, &policies).await?.is_allowed(), "{subject}");
    }
    Ok(())
}

/// A policy with a block duration refuses the subject from its first refusal for that long, on
/// the script-free path (a fixed window alone) and through the script (GCRA); attempts during the
/// block do not extend it, and other subjects are not affected.
async fn a_block_duration_refuses_from_the_first_refusal_until_it_ends(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = RateLimiter::new(env.backend.clone(), env.ns.child("rl")).with_refusal_cache(false);
    for algorithm in [Algorithm::FixedWindow, Algorithm::Gcra, Algorithm::SlidingWindow] {
        // 3 per 500 ms, and a 1.5 s block once exceeded.
        let policy = [Policy::new("blk", 3, Duration::from_millis(500))
            .with_algorithm(algorithm)
            .with_block_for(Duration::from_millis(1_500))];
        let subject = format!("b-{algorithm:?}");
        // Counters' windows are aligned on the clock: start just after an edge, so that the four
        // checks share a window.
        loop {
            let into = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 500;
            if (20..60).contains(&into) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for i in 0..3 {
            let decision = limiter.check(&subject, &policy).await?;
            assert!(decision.is_allowed(), "{algorithm:?} check {i}: {decision:?}");
        }
        let Decision::Limited { retry_after, .. } = limiter.check(&subject, &policy).await? else {
            panic!("{algorithm:?}: the 4th request must be refused");
        };
        assert!(retry_after >= Duration::from_millis(1_000), "{algorithm:?}: retry after {retry_after:?}");
        // The window has passed, but the block has not.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!limiter.check(&subject, &policy).await?.is_allowed(), "{algorithm:?}: still blocked");
        assert!(limiter.check(&format!("other-{algorithm:?}"), &policy).await?.is_allowed());
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(limiter.check(&subject, &policy).await?.is_allowed(), "{algorithm:?}: the block has ended");
    }
    Ok(())
}

/// A policy built from configuration at run time (an owned name) shares its state with a constant
/// policy of the same name, and a name that cannot be a key part is refused.
async fn policies_named_at_run_time_count_like_constant_ones(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = limiter(&env);
    let from_config = Policy::named(format!("tenant-{}", 7), 2, Duration::from_secs(60));
    const CONSTANT: Policy = Policy::new("tenant-7", 2, Duration::from_secs(60));
    assert!(limiter.check("u", std::slice::from_ref(&from_config)).await?.is_allowed());
    assert!(limiter.check("u", &[CONSTANT]).await?.is_allowed());
    let Decision::Limited { violated, .. } = limiter.check("u", std::slice::from_ref(&from_config)).await? else {
        panic!("the third request must be refused");
    };
    assert_eq!(violated, ["tenant-7"]);
    let hostile = Policy::named("a:b{c}", 2, Duration::from_secs(60));
    let error = limiter.check("u", &[hostile]).await.err().ok_or("a name with : and braces")?;
    assert!(error.to_string().contains("letters, digits"), "{error}");
    Ok(())
}

mod commands {
    use super::*;

    /// Checks of a single fixed-window or sliding-window policy send no `EVALSHA` (or `EVAL`):
    /// counted in `INFO commandstats` on every data node.
    async fn no_script(kind: Deployment) -> TestResult {
        let ctx = Ctx::owned(kind, |c| c).await;
        let limiter = RateLimiter::new(ctx.backend.clone(), ctx.ns.child("rl"));
        let calls = |name: &str| -> Result<u64, String> {
            let mut total = 0;
            for port in ctx.servers.data_ports() {
                let info = |section: &str| {
                    ctx.servers
                        .admin(port, &["INFO", section])
                        .map(|r| r.text().unwrap_or_default())
                        .map_err(|e| e.to_string())
                };
                // Replicas count the commands they replay: primaries only.
                if !info("replication")?.contains("role:master") {
                    continue;
                }
                let stats = info("commandstats")?;
                let line = stats.lines().find(|l| l.starts_with(&format!("cmdstat_{name}:")));
                let calls = line.and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok());
                total += calls.unwrap_or(0);
            }
            Ok(total)
        };
        let (evalsha, eval, incrby) = (calls("evalsha")?, calls("eval")?, calls("incrby")?);
        for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let policy = [Policy::new("plain", 50, Duration::from_secs(60)).with_algorithm(algorithm)];
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let (limiter, policy) = (limiter.clone(), policy.clone());
                    tokio::spawn(async move { limiter.check(&format!("s{}", i % 20), &policy).await })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
        }
        assert_eq!((calls("evalsha")?, calls("eval")?), (evalsha, eval), "no script ran");
        assert_eq!(calls("incrby")? - incrby, 400, "one INCRBY per check");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_send_no_script_on_standalone() -> TestResult {
        no_script(Deployment::Standalone).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_send_no_script_on_a_cluster() -> TestResult {
        no_script(Deployment::Cluster).await
    }
}
